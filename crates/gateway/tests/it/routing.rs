//! Routes: templates, methods, first match, and misses that never reach an upstream.

use crate::util::*;
use http::Request;
use http_body_util::Full;

const ROUTES: &str = "routes:
  - match: { path: /api/items, methods: [GET, POST] }
    upstream: main
    auth: none
  - match: { path: \"/api/items/{id}\", methods: [GET, PUT, DELETE] }
    upstream: main
    auth: none
  - match: { prefix: /api/public/ }
    upstream: other
    auth: none
";

async fn setup() -> (Upstream, Upstream, Gateway) {
    let main = Upstream::start().await;
    let other = Upstream::start().await;
    let config = config_with(&main.url(), ROUTES).replace(
        "upstreams:\n",
        &format!("upstreams:\n  other: {{ url: \"{}/base\" }}\n", other.url()),
    );
    let gw = Gateway::start(&config).await;
    (main, other, gw)
}

#[tokio::test]
async fn templates_methods_and_prefixes_route_to_their_upstreams() {
    let (main, other, gw) = setup().await;
    assert_eq!(get(&gw.url("/api/items")).await.unwrap().0, 200);
    let req = Request::delete(gw.url("/api/items/42"))
        .body(Full::default())
        .unwrap();
    assert_eq!(send(req).await.unwrap().0, 200);
    assert_eq!(main.last().uri, "/api/items/42");
    assert_eq!(get(&gw.url("/api/public/docs/a?b=1")).await.unwrap().0, 200);
    assert_eq!(
        other.last().uri,
        "/base/api/public/docs/a?b=1",
        "upstream base path prepended"
    );
    assert_eq!((main.hits(), other.hits()), (2, 1));
}

#[tokio::test]
async fn unmatched_path_is_404_and_wrong_method_is_405_with_allow() {
    let (main, other, gw) = setup().await;
    for path in [
        "/",
        "/api",
        "/api/items/1/extra",
        "/api/publicity",
        "/admin",
    ] {
        let (status, headers, body) = get(&gw.url(path)).await.unwrap();
        assert_eq!(status, 404, "{path}");
        assert_eq!(headers["content-type"], "application/problem+json");
        assert_eq!(json(&body)["title"], "Not Found");
    }
    let req = Request::patch(gw.url("/api/items/7"))
        .body(Full::default())
        .unwrap();
    let (status, headers, _) = send(req).await.unwrap();
    assert_eq!(status, 405);
    assert_eq!(headers["allow"], "GET, PUT, DELETE");
    assert_eq!(
        main.heads() + other.heads(),
        0,
        "a miss reached an upstream"
    );
    let event = gw
        .event_where("405 event", |e| e["reason"] == "method_not_allowed")
        .await;
    assert_eq!(event["endpoint"], "/api/items/{id}");
}

#[tokio::test]
async fn every_refusal_raises_exactly_one_event() {
    let (_main, _other, gw) = setup().await;
    let mut ids = Vec::new();
    for path in ["/nope", "/api/%2f", "/x/../../y"] {
        let (_, headers, _) = get(&gw.url(path)).await.unwrap();
        ids.push(headers["x-request-id"].to_str().unwrap().to_string());
    }
    let (_, headers, _) = get(&gw.url("/api/items")).await.unwrap();
    let allowed_id = headers["x-request-id"].to_str().unwrap().to_string();
    eventually("three events", || (gw.events().len() >= 3).then_some(())).await;
    let events = gw.events();
    for id in &ids {
        assert_eq!(
            events
                .iter()
                .filter(|e| e["request_id"] == id.as_str())
                .count(),
            1,
            "{id}"
        );
    }
    assert!(
        events
            .iter()
            .all(|e| e["request_id"] != allowed_id.as_str()),
        "an allowed request raised an event"
    );
    for event in &events {
        for field in [
            "timestamp",
            "event_type",
            "severity",
            "request_id",
            "ip",
            "method",
            "reason",
            "details",
        ] {
            assert!(event.get(field).is_some(), "{field} missing in {event}");
        }
    }
}
