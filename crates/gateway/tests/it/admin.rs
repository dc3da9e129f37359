//! The admin listener: health, readiness, metrics, events, token.

use crate::util::*;
use http::Request;
use http_body_util::Full;

fn with_token(req: http::request::Builder, token: &str) -> Request<Full<bytes::Bytes>> {
    req.header("authorization", format!("Bearer {token}"))
        .body(Full::default())
        .unwrap()
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config_with(&upstream.url(), CATCH_ALL)).await;
    assert_eq!(get(&gw.admin_url("/healthz")).await.unwrap().0, 200);
    assert_eq!(get(&gw.admin_url("/readyz")).await.unwrap().0, 200);
    get(&gw.url("/ok")).await.unwrap();
    get(&gw.url("/%2f")).await.unwrap();
    let (status, _, text) = get(&gw.admin_url("/metrics")).await.unwrap();
    assert_eq!(status, 200);
    assert!(
        text.contains("portcullis_requests_total{route=\"/*\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("portcullis_denials_total{reason=\"encoded_slash\",route=\"(none)\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("portcullis_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("portcullis_open_connections"), "{text}");
}

#[tokio::test]
async fn admin_endpoints_require_the_token() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config_with(&upstream.url(), CATCH_ALL)).await;
    for (method, path) in [("GET", "/admin/events"), ("POST", "/admin/reload")] {
        let req = Request::builder()
            .method(method)
            .uri(gw.admin_url(path))
            .body(Full::default())
            .unwrap();
        let (status, headers, _) = send(req).await.unwrap();
        assert_eq!(status, 401, "{path} without a token");
        assert!(headers.contains_key("www-authenticate"));
        let req = with_token(
            Request::builder().method(method).uri(gw.admin_url(path)),
            "wrong-token-000000000",
        );
        assert_eq!(send(req).await.unwrap().0, 401, "{path} with a wrong token");
    }
    get(&gw.url("/%00")).await.unwrap();
    let (status, _, body) = send(with_token(
        Request::get(gw.admin_url("/admin/events")),
        ADMIN_TOKEN,
    ))
    .await
    .unwrap();
    assert_eq!(status, 200);
    let events = json(&body);
    let list = events.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["reason"], "nul_byte");
    let seq = list[0]["seq"].as_u64().unwrap();
    let url = gw.admin_url(&format!("/admin/events?since={seq}"));
    let (_, _, body) = send(with_token(Request::get(url), ADMIN_TOKEN))
        .await
        .unwrap();
    assert_eq!(json(&body).as_array().unwrap().len(), 0);
}
