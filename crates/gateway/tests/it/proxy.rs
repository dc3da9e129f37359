//! Forwarding: streaming, headers both ways, ids, upstream failures, HTTP/2.

use crate::util::*;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};

#[tokio::test]
async fn forwards_and_answers_with_security_headers_and_request_id() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config_with(&upstream.url(), CATCH_ALL)).await;
    let (status, headers, body) = get(&gw.url("/api/items?x=1")).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(json(&body)["path"], "/api/items");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["cache-control"], "no-store");
    assert!(headers.get("server").is_none(), "server header leaked");
    assert!(headers.get("x-powered-by").is_none(), "x-powered-by leaked");
    let id = headers["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    let seen = upstream.last();
    assert_eq!(seen.uri, "/api/items?x=1");
    assert_eq!(
        seen.headers["x-request-id"],
        id.as_str(),
        "upstream got another id"
    );
}

#[tokio::test]
async fn reuses_incoming_request_id_and_traceparent() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config_with(&upstream.url(), CATCH_ALL)).await;
    let req = Request::get(gw.url("/a"))
        .header("x-request-id", "client-id-42")
        .body(Full::default())
        .unwrap();
    let (_, headers, _) = send(req).await.unwrap();
    assert_eq!(headers["x-request-id"], "client-id-42");
    assert_eq!(upstream.last().headers["x-request-id"], "client-id-42");
    let req = Request::get(gw.url("/a"))
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(Full::default())
        .unwrap();
    let (_, headers, _) = send(req).await.unwrap();
    assert_eq!(headers["x-request-id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(
        upstream.last().headers["traceparent"],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "traceparent must pass through"
    );
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_both_ways() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config_with(&upstream.url(), CATCH_ALL)).await;
    let request = "GET /hop HTTP/1.1\r\nHost: example.test\r\nConnection: x-client-private, close\r\n\
x-client-private: 1\r\nKeep-Alive: timeout=9\r\nProxy-Authorization: Basic eDp5\r\nx-kept: yes\r\n\r\n";
    let answer = raw(gw.addr, request.as_bytes()).await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(
        !lower.contains("x-upstream-private"),
        "connection-named response header leaked: {answer}"
    );
    assert!(!lower.contains("keep-alive: timeout=5"), "{answer}");
    assert!(lower.contains("x-upstream-public: ok"), "{answer}");
    let seen = upstream.last();
    for name in ["x-client-private", "keep-alive", "proxy-authorization"] {
        assert!(seen.headers.get(name).is_none(), "{name} was forwarded");
    }
    assert_eq!(seen.headers["x-kept"], "yes");
    assert_eq!(
        seen.headers["host"],
        upstream.addr.to_string().as_str(),
        "the upstream sees its own authority by default, not the client's Host"
    );
}

#[tokio::test]
async fn forwarded_for_is_replaced_from_untrusted_peers() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config_with(&upstream.url(), CATCH_ALL)).await;
    let req = Request::get(gw.url("/a"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6")
        .body(Full::default())
        .unwrap();
    send(req).await.unwrap();
    let seen = upstream.last();
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["forwarded"], "for=127.0.0.1;proto=http");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
}

#[tokio::test]
async fn forwarded_for_is_extended_from_trusted_proxies_and_names_the_client() {
    let upstream = Upstream::start().await;
    let config = with_listen(
        &config_with(&upstream.url(), CATCH_ALL),
        "  trusted_proxies: [127.0.0.0/8]\n",
    );
    let gw = Gateway::start(&config).await;
    let req = Request::get(gw.url("/nope/../../x"))
        .header("x-forwarded-for", "203.0.113.9")
        .body(Full::default())
        .unwrap();
    let (status, _, _) = send(req).await.unwrap();
    assert_eq!(status, 400);
    let event = gw
        .event_where("the refusal event", |e| e["reason"] == "escapes_root")
        .await;
    assert_eq!(
        event["ip"], "203.0.113.9",
        "client address from a trusted proxy's chain"
    );
    let req = Request::get(gw.url("/a"))
        .header("x-forwarded-for", "203.0.113.9")
        .body(Full::default())
        .unwrap();
    send(req).await.unwrap();
    assert_eq!(
        upstream.last().headers["x-forwarded-for"],
        "203.0.113.9, 127.0.0.1"
    );
}

#[tokio::test]
async fn bodies_stream_through_in_both_directions() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config_with(&upstream.url(), CATCH_ALL)).await;
    let payload = Bytes::from(vec![b'a'; 512 * 1024]);
    let req = Request::post(gw.url("/upload"))
        .body(Full::new(payload.clone()))
        .unwrap();
    let (status, _, body) = send(req).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(json(&body)["body_bytes"], 512 * 1024);
    assert_eq!(upstream.last().body, payload);
    let (status, _, body) = get(&gw.url("/big?bytes=3000000")).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body.len(), 3_000_000);
}

#[tokio::test]
async fn http2_prior_knowledge_is_served_and_forwarded_as_http1() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config_with(&upstream.url(), CATCH_ALL)).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let response = client
        .request(Request::get(gw.url("/h2")).body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(json(&String::from_utf8_lossy(&body))["path"], "/h2");
    let seen = upstream.last();
    assert_eq!(seen.version, http::Version::HTTP_11);
    assert_eq!(seen.headers["host"], upstream.addr.to_string().as_str());
}

#[tokio::test]
async fn the_upstream_host_is_its_own_preserved_or_literal() {
    let upstream = Upstream::start().await;
    let routes = "routes:\n  - match: { prefix: /own/ }\n    upstream: main\n    auth: none\n\
\x20\x20- match: { prefix: /kept/ }\n    upstream: kept\n    auth: none\n\
\x20\x20- match: { prefix: /named/ }\n    upstream: named\n    auth: none\n";
    let extra = format!(
        "  kept: {{ url: \"{0}\", host: preserve }}\n  named: {{ url: \"{0}\", host: items.internal }}\n{routes}",
        upstream.url()
    );
    let gw = Gateway::start(&config_with(&upstream.url(), &extra)).await;
    for (path, want) in [
        ("/own/x", upstream.addr.to_string()),
        ("/kept/x", "client.example".to_string()),
        ("/named/x", "items.internal".to_string()),
    ] {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: client.example\r\nConnection: close\r\n\r\n");
        let answer = raw(gw.addr, request.as_bytes()).await;
        assert_eq!(raw_status(&answer), 200, "{answer}");
        assert_eq!(upstream.last().headers["host"], want.as_str(), "{path}");
    }
}

#[tokio::test]
async fn unreachable_upstream_is_502_without_details() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let gw = Gateway::start(&config_with(&url, CATCH_ALL)).await;
    let (status, headers, body) = get(&gw.url("/a")).await.unwrap();
    assert_eq!(status, 502);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(
        !body.contains("127.0.0.1") && !body.contains("refused"),
        "detail leaked: {body}"
    );
    let event = gw
        .event_where("upstream event", |e| e["reason"] == "upstream_unreachable")
        .await;
    assert_eq!(event["event_type"], "upstream_error");
    assert!(
        event["details"]["detail"]
            .as_str()
            .unwrap()
            .contains("onnect"),
        "{event}"
    );
    let (_, _, metrics) = get(&gw.admin_url("/metrics")).await.unwrap();
    assert!(
        metrics.contains(
            "portcullis_upstream_errors_total{reason=\"upstream_unreachable\",route=\"/*\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn slow_upstream_is_504_at_its_timeout() {
    let upstream = Upstream::start().await;
    let config = config_with(&upstream.url(), CATCH_ALL).replace("timeout: 5s", "timeout: 300ms");
    let gw = Gateway::start(&config).await;
    let started = std::time::Instant::now();
    let (status, _, _) = get(&gw.url("/slow?ms=3000")).await.unwrap();
    assert_eq!(status, 504);
    assert!(
        started.elapsed() < std::time::Duration::from_millis(2500),
        "took {:?}",
        started.elapsed()
    );
    gw.event_where("timeout event", |e| e["reason"] == "upstream_timeout")
        .await;
}

#[tokio::test]
async fn whole_exchange_is_bounded_by_request_timeout() {
    let upstream = Upstream::start().await;
    let extra = format!("limits:\n  request_timeout: 300ms\n{CATCH_ALL}");
    let gw = Gateway::start(&config_with(&upstream.url(), &extra)).await;
    let (status, _, _) = get(&gw.url("/slow?ms=3000")).await.unwrap();
    assert_eq!(status, 504);
    gw.event_where("timeout event", |e| e["reason"] == "request_timeout")
        .await;
}
