//! Detectors through the real binary: exfiltration (a response far above its endpoint's
//! usual size, a page far deeper), error spikes, enumeration of object ids, privilege
//! escalation probing, and flags shared between instances through Redis. Each flag is a
//! factor on the client's (and principal's) next requests.

use crate::identity::{ISSUER, baseline_claims, jwks, token};
use crate::util::*;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use portcullis::authn::sign::SigningKey;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[tokio::test]
async fn an_oversized_response_is_flagged_and_raises_the_clients_score() {
    let (upstream, _guard) = tiny_server(|req: Request<hyper::body::Incoming>| {
        let size = if req.uri().path() == "/export" {
            200_000
        } else {
            100
        };
        Response::new(Full::new(Bytes::from(vec![b'x'; size])))
    })
    .await;
    let extra = format!("rate_limit:\n  default: {{ limit: 10000, window: 60s }}\n{CATCH_ALL}");
    let config = config_with(&format!("http://{upstream}"), &extra).replace(
        "monitoring:\n  events: { sink: file, path: events.log }\n",
        "monitoring:\n  events: { sink: file, path: events.log }\n  detection:\n    exfiltration: { factor: 10, min_bytes: 65536 }\n",
    );
    let gateway = Gateway::start(&config).await;
    let agent = |path: &str| {
        Request::get(gateway.url(path))
            .header("user-agent", "integration-test/1.0")
            .body(Full::default())
            .unwrap()
    };
    // Twenty usual answers make the baseline; until then nothing is judged.
    for _ in 0..20 {
        let (status, _, body) = send(agent("/items")).await.unwrap();
        assert_eq!((status, body.len()), (StatusCode::OK, 100));
    }
    assert!(
        gateway
            .events()
            .iter()
            .all(|e| e["reason"] != "exfiltration")
    );
    let (status, _, body) = send(agent("/export")).await.unwrap();
    assert_eq!(status, StatusCode::OK, "the answer itself is not held back");
    assert_eq!(body.len(), 200_000);
    let event = gateway
        .event_where("the exfiltration event", |e| e["reason"] == "exfiltration")
        .await;
    assert_eq!(event["event_type"], "anomaly");
    assert_eq!(event["severity"], "high");
    assert_eq!(event["details"]["bytes"], 200_000);
    assert_eq!(event["ip"], "127.0.0.1");
    // The flag is a threat factor on the client's next request.
    let (status, _, _) = send(agent("/items")).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let req = Request::get(gateway.admin_url("/admin/offenders"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(Full::default())
        .unwrap();
    let (_, _, offenders) = send(req).await.unwrap();
    let listed = json(&offenders);
    assert_eq!(listed["clients"][0]["ip"], "127.0.0.1", "{listed}");
    assert_eq!(listed["clients"][0]["score"], 20, "{listed}");
    assert_eq!(
        listed["clients"][0]["factors"],
        serde_json::json!(["detector_flag"])
    );
    assert!(
        listed["clients"][0]["flagged_for"].as_u64() > Some(500),
        "{listed}"
    );
    // Another large answer right after is flagged again, not learned as the new usual.
    let _ = send(agent("/export")).await.unwrap();
    eventually("a second exfiltration event", || {
        (gateway
            .events()
            .iter()
            .filter(|e| e["reason"] == "exfiltration")
            .count()
            == 2)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_error_spike_is_flagged_once_per_window() {
    let upstream = Upstream::start().await;
    let extra = format!("rate_limit:\n  default: {{ limit: 10000, window: 60s }}\n{CATCH_ALL}");
    let config = config_with(&upstream.url(), &extra).replace(
        "monitoring:\n  events: { sink: file, path: events.log }\n",
        "monitoring:\n  events: { sink: file, path: events.log }\n  detection:\n    error_spike: { factor: 3, min_count: 5, window: 1m }\n",
    );
    let gateway = Gateway::start(&config).await;
    let refused = || async {
        let (status, _, _) = get(&gateway.url("/files/a%2Fb")).await.unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST);
    };
    let spikes = || {
        gateway
            .events()
            .into_iter()
            .filter(|e| e["reason"] == "error_spike")
            .collect::<Vec<_>>()
    };
    for _ in 0..4 {
        refused().await;
    }
    assert!(spikes().is_empty(), "flagged below min_count");
    refused().await;
    let client = gateway
        .event_where("the client's error spike", |e| {
            e["reason"] == "error_spike" && e["details"]["scope"] == "client"
        })
        .await;
    assert_eq!(client["ip"], "127.0.0.1");
    assert_eq!(client["details"]["count"], 5);
    for _ in 0..5 {
        refused().await;
    }
    // A last, different refusal fences the log: events are written in order, so once it is
    // there, every spike event the repeats could have raised is there too.
    let (status, _, _) = get(&gateway.url("/files/c%5Cd")).await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    gateway
        .event_where("the fence", |e| e["reason"] == "encoded_backslash")
        .await;
    let by_client = spikes()
        .iter()
        .filter(|e| e["details"]["scope"] == "client")
        .count();
    assert_eq!(by_client, 1, "one flag per key per window: {:?}", spikes());
    assert_eq!(
        upstream.heads(),
        0,
        "a refused request reached the upstream"
    );
}

/// Identity and detection settings for the principal-based detectors' tests: one issuer
/// (keys in a file), `detection` under `monitoring.detection`, and `routes`.
fn principal_config(upstream: &str, detection: &str, extra: &str) -> String {
    config_with(
        upstream,
        &format!(
            "identity:
  jwt:
    - name: test
      issuer: {ISSUER}
      audiences: [api]
      jwks_file: jwks.json
      algorithms: [ES256]
rate_limit:
  default: {{ limit: 10000, window: 60s }}
{extra}"
        ),
    )
    .replace(
        "monitoring:\n  events: { sink: file, path: events.log }\n",
        &format!(
            "monitoring:\n  events: {{ sink: file, path: events.log }}\n  detection:\n{detection}"
        ),
    )
}

fn bearer(gateway: &Gateway, method: &str, path: &str, token: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(gateway.url(path))
        .header("authorization", format!("Bearer {token}"))
        .header("user-agent", "integration-test/1.0")
        .body(Full::default())
        .unwrap()
}

fn user_token(key: &SigningKey, sub: &str, scope: &str) -> String {
    let mut claims = baseline_claims();
    claims.insert("sub".into(), serde_json::json!(sub));
    claims.insert("scope".into(), serde_json::json!(scope));
    token(key, &claims)
}

async fn offenders(gateway: &Gateway) -> serde_json::Value {
    let req = Request::get(gateway.admin_url("/admin/offenders"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(Full::default())
        .unwrap();
    json(&send(req).await.unwrap().2)
}

/// An items API where only ids 1 to 3 exist.
async fn sparse_items() -> (std::net::SocketAddr, TaskGuard, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = hits.clone();
    let (addr, guard) = tiny_server(move |req: Request<hyper::body::Incoming>| {
        seen.fetch_add(1, Ordering::SeqCst);
        let id = req.uri().path().rsplit('/').next().unwrap_or("");
        let status = match id.parse::<u32>() {
            Ok(1..=3) => StatusCode::OK,
            _ if req.uri().path() == "/api/items" => StatusCode::OK,
            _ => StatusCode::NOT_FOUND,
        };
        let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
        *response.status_mut() = status;
        response
    })
    .await;
    (addr, guard, hits)
}

const ITEM_ROUTES: &str = "routes:
  - match: { path: /api/items, methods: [GET] }
    upstream: main
  - match: { path: \"/api/items/{id}\", methods: [GET] }
    upstream: main
";

#[tokio::test]
async fn walking_object_ids_is_flagged_as_enumeration_and_deep_pages_as_bulk_pagination() {
    let (upstream, _guard, _) = sparse_items().await;
    let (key, _) = SigningKey::generate_es256("k1").unwrap();
    let detection = "    enumeration: { distinct_ids: 20, window: 1m, min_refused_ratio: 0.5 }\n    exfiltration: { factor: 10, min_bytes: 65536, min_page: 50 }\n";
    let config = principal_config(
        &format!("http://{upstream}"),
        detection,
        &format!("{ALLOW_ALL}{ITEM_ROUTES}"),
    );
    let dir = test_dir(&[("jwks.json", &jwks(&key)), ("portcullis.yaml", &config)]);
    let gateway = Gateway::start_in(dir).await;
    let alice = user_token(&key, "alice", "items:read");
    let bob = user_token(&key, "bob", "items:read");

    // Near miss: bob asks for his own (existing) items again and again.
    for i in 0..40 {
        let path = format!("/api/items/{}", 1 + i % 3);
        let (status, _, _) = send(bearer(&gateway, "GET", &path, &bob)).await.unwrap();
        assert_eq!(status, StatusCode::OK);
    }
    // Alice walks ids; most do not exist.
    for id in 1..=30 {
        let path = format!("/api/items/{id}");
        let (status, _, _) = send(bearer(&gateway, "GET", &path, &alice)).await.unwrap();
        assert!(status == StatusCode::OK || status == StatusCode::NOT_FOUND);
    }
    let event = gateway
        .event_where("the enumeration event", |e| e["reason"] == "enumeration")
        .await;
    assert_eq!(event["event_type"], "anomaly");
    assert_eq!(event["user_id"], "alice", "{event}");
    assert_eq!(event["details"]["template"], "/api/items/{id}");
    assert_eq!(event["details"]["parameter"], "id");
    let distinct = event["details"]["distinct_ids"].as_u64().unwrap();
    assert!((20..=26).contains(&distinct), "{event}");
    // Bob's requests came first, so his event would be in the log before alice's.
    assert!(
        gateway
            .events()
            .iter()
            .all(|e| !(e["reason"] == "enumeration" && e["user_id"] == "bob")),
        "a principal re-reading its own items was flagged"
    );
    let listed = offenders(&gateway).await;
    assert_eq!(listed["principals"][0]["principal"], "alice", "{listed}");
    assert_eq!(listed["principals"][0]["reason"], "enumeration");
    assert!(listed["principals"][0]["flagged_for"].as_u64() > Some(500));
    assert_eq!(listed["principals"].as_array().map(Vec::len), Some(1));

    // Usual listing depth, then one request far past it.
    for i in 0..20 {
        let path = format!("/api/items?page={}", 1 + i % 3);
        let (status, _, _) = send(bearer(&gateway, "GET", &path, &bob)).await.unwrap();
        assert_eq!(status, StatusCode::OK);
    }
    let (status, _, _) = send(bearer(&gateway, "GET", "/api/items?page=40", &bob))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "under min_page: a near miss");
    let (status, _, _) = send(bearer(&gateway, "GET", "/api/items?page=900", &bob))
        .await
        .unwrap();
    assert_eq!(
        status,
        StatusCode::OK,
        "a detector never holds back the answer"
    );
    let pages = gateway
        .event_where("the bulk pagination event", |e| {
            e["reason"] == "bulk_pagination"
        })
        .await;
    assert_eq!(pages["user_id"], "bob");
    assert_eq!(pages["details"]["depth"], 900);
    let flagged = gateway
        .events()
        .iter()
        .filter(|e| e["reason"] == "bulk_pagination")
        .count();
    assert_eq!(flagged, 1, "page 40 was flagged too");

    let req = Request::get(gateway.admin_url("/metrics"))
        .body(Full::default())
        .unwrap();
    let metrics = send(req).await.unwrap().2;
    assert!(
        metrics.contains("portcullis_detector_findings{reason=\"enumeration\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("portcullis_detector_findings{reason=\"bulk_pagination\"} 1"));
}

#[tokio::test]
async fn refusals_across_many_actions_are_flagged_as_privilege_escalation() {
    let (upstream, _guard, hits) = sparse_items().await;
    let (key, _) = SigningKey::generate_es256("k1").unwrap();
    let detection = "    privilege_escalation: { distinct_denials: 3, window: 5m }\n";
    let routes = "routes:
  - match: { path: /api/items, methods: [GET, POST] }
    upstream: main
  - match: { path: \"/api/items/{id}\", methods: [GET, PUT] }
    upstream: main
    resource: { type: items, id: \"{id}\" }
  - match: { path: \"/api/users/{id}\", methods: [GET, PUT] }
    upstream: main
    resource: { type: users, id: \"{id}\" }
";
    let policy = "policy:\n  engine: rego\n  rego:\n    files: [authz.rego]\n    data: [data.json]\n    query: data.api.authz.allow\n";
    let config = principal_config(
        &format!("http://{upstream}"),
        detection,
        &format!("{policy}{routes}"),
    );
    let policies = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/policies");
    let rego = std::fs::read_to_string(format!("{policies}/authz.rego")).unwrap();
    let data = std::fs::read_to_string(format!("{policies}/data.json")).unwrap();
    let dir = test_dir(&[
        ("jwks.json", &jwks(&key)),
        ("authz.rego", &rego),
        ("data.json", &data),
        ("portcullis.yaml", &config),
    ]);
    let gateway = Gateway::start_in(dir).await;
    let reader = user_token(&key, "bob", "items:read");
    // Near miss: the same refusal again and again (a user lacking one permission).
    for _ in 0..10 {
        let (status, _, _) = send(bearer(&gateway, "PUT", "/api/items/1", &reader))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    // Probing: a different refusal each time.
    let mallory = user_token(&key, "mallory", "items:read");
    for (method, path) in [
        ("POST", "/api/items"),
        ("PUT", "/api/items/2"),
        ("PUT", "/api/users/7"),
    ] {
        let (status, _, _) = send(bearer(&gateway, method, path, &mallory))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}");
    }
    let event = gateway
        .event_where("the privilege escalation event", |e| {
            e["reason"] == "privilege_escalation"
        })
        .await;
    assert_eq!(event["user_id"], "mallory", "{event}");
    assert_eq!(event["details"]["distinct_denials"], 3);
    assert!(
        gateway
            .events()
            .iter()
            .all(|e| !(e["reason"] == "privilege_escalation" && e["user_id"] == "bob")),
        "one repeated refusal was flagged as probing"
    );
    let listed = offenders(&gateway).await;
    assert_eq!(listed["principals"][0]["principal"], "mallory", "{listed}");
    assert_eq!(listed["principals"][0]["reason"], "privilege_escalation");
    // A bad credential counts as an authentication failure by route and reason.
    let (status, _, _) = send(bearer(&gateway, "GET", "/api/items", "not.a.jwt"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let req = Request::get(gateway.admin_url("/metrics"))
        .body(Full::default())
        .unwrap();
    let metrics = send(req).await.unwrap().2;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("portcullis_auth_failures_total{")
                && l.contains("route=\"/api/items\"")),
        "{metrics}"
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "a refused request reached the upstream"
    );
}

#[tokio::test]
async fn a_flag_raised_on_one_instance_holds_on_another_through_redis() {
    let redis = Redis::start().await;
    let (upstream, _guard, _) = sparse_items().await;
    let (key, _) = SigningKey::generate_es256("k1").unwrap();
    let detection = "    enumeration: { distinct_ids: 10, window: 1m, min_refused_ratio: 0.5 }\n";
    let store =
        "rate_limit:\n  store: redis\n  redis: { url: \"${file:redis-url}\", timeout: 500ms }\n";
    let config = principal_config(
        &format!("http://{upstream}"),
        detection,
        &format!("{ALLOW_ALL}{ITEM_ROUTES}"),
    )
    .replace("rate_limit:\n", store);
    let url = redis.url();
    let start = || {
        let dir = test_dir(&[
            ("jwks.json", &jwks(&key)),
            ("redis-url", &url),
            ("portcullis.yaml", &config),
        ]);
        Gateway::start_in(dir)
    };
    let (first, second) = tokio::join!(start(), start());
    let alice = user_token(&key, "alice", "items:read");
    for id in 1..=15 {
        let path = format!("/api/items/{id}");
        let _ = send(bearer(&first, "GET", &path, &alice)).await.unwrap();
    }
    first
        .event_where("the enumeration event", |e| e["reason"] == "enumeration")
        .await;
    // The other instance never saw alice, yet learns the flag within about a second.
    let deadline = std::time::Instant::now() + DEADLINE;
    let listed = loop {
        let listed = offenders(&second).await;
        if listed["principals"][0]["principal"] == "alice" {
            break listed;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never shared: {listed}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(listed["principals"][0]["reason"], "shared", "{listed}");
    assert!(listed["principals"][0]["flagged_for"].as_u64() > Some(500));
    let client = listed["clients"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["ip"] == "127.0.0.1"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(client["flag_reason"], "shared", "{listed}");
}
