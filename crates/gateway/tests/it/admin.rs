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

/// Opens `/admin/events/stream` on a raw connection (with `extra` header lines).
async fn open_stream(gateway: &Gateway, extra: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let admin = gateway.admin.expect("admin listener");
    let mut stream = tokio::net::TcpStream::connect(admin)
        .await
        .expect("connect");
    let head = format!(
        "GET /admin/events/stream HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n{extra}\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream
}

/// Reads the stream until `needle` appears (bounded by the suite's deadline).
async fn read_until(stream: &mut tokio::net::TcpStream, needle: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut seen = String::new();
    let read = async {
        let mut buf = [0u8; 4096];
        while !seen.contains(needle) {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "the stream ended before `{needle}`: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .unwrap_or_else(|_| panic!("no `{needle}` in the stream: {seen}"));
    seen
}

/// The `id:` of the SSE message whose data contains `needle`.
fn id_of(text: &str, needle: &str) -> u64 {
    text.split("\n\n")
        .find(|message| message.contains(needle))
        .and_then(|message| message.lines().find_map(|l| l.strip_prefix("id: ")))
        .and_then(|id| id.trim().parse().ok())
        .unwrap_or_else(|| panic!("no id for `{needle}` in {text}"))
}

#[tokio::test]
async fn the_event_stream_is_live_and_resumes_after_last_event_id() {
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(&config_with(&upstream.url(), CATCH_ALL)).await;
    let mut live = open_stream(&gateway, "").await;
    let head = read_until(&mut live, "\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    let (status, _, _) = get(&gateway.url("/files/a%2Fb")).await.expect("answer");
    assert_eq!(status, http::StatusCode::BAD_REQUEST);
    let seen = read_until(&mut live, "encoded_slash").await;
    let id = id_of(&seen, "encoded_slash");
    // A client that saw the event before it resumes from there and gets it again...
    let mut resumed = open_stream(&gateway, &format!("Last-Event-ID: {}\r\n", id - 1)).await;
    let again = read_until(&mut resumed, "encoded_slash").await;
    assert_eq!(id_of(&again, "encoded_slash"), id);
    // ... one that saw it does not, and gets the next event instead.
    let mut after = open_stream(&gateway, &format!("Last-Event-ID: {id}\r\n")).await;
    let _ = get(&gateway.url("/files/c%5Cd")).await.expect("answer");
    let next = read_until(&mut after, "encoded_backslash").await;
    assert!(
        !next.contains("encoded_slash\""),
        "a seen event was sent again: {next}"
    );
    assert!(id_of(&next, "encoded_backslash") > id);
    // An id from an earlier process (numbering restarted) resumes from now, not never.
    let mut stale = open_stream(&gateway, "Last-Event-ID: 999999\r\n").await;
    // The answer's head says the stream has taken its starting point; only then the event.
    read_until(&mut stale, "\r\n\r\n").await;
    let _ = get(&gateway.url("/files/e%2Ff")).await.expect("answer");
    read_until(&mut stale, "encoded_slash").await;
    assert_eq!(upstream.heads(), 0);
    // Without the admin token there is no stream.
    let (status, _, _) = get(&gateway.admin_url("/admin/events/stream"))
        .await
        .expect("answer");
    assert_eq!(status, http::StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn offenders_lists_clients_by_threat_score_with_their_factors() {
    let upstream = Upstream::start().await;
    // Screening (and so scoring) runs with a `rate_limit` section.
    let extra = format!("rate_limit:\n  default: {{ limit: 1000, window: 60s }}\n{CATCH_ALL}");
    let gateway = Gateway::start(&config_with(&upstream.url(), &extra)).await;
    let offenders = || async {
        let req = Request::get(gateway.admin_url("/admin/offenders"))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .body(Full::default())
            .unwrap();
        let (status, _, body) = send(req).await.expect("offenders");
        assert_eq!(status, http::StatusCode::OK);
        json(&body)
    };
    assert_eq!(offenders().await["clients"], serde_json::json!([]));
    // No User-Agent (the test client sends none) and an injection marker in the query.
    let (status, _, _) = get(&gateway.url("/search?q=union%20select"))
        .await
        .expect("answer");
    assert_eq!(
        status,
        http::StatusCode::OK,
        "a scored request is still served"
    );
    let listed = offenders().await;
    let first = &listed["clients"][0];
    assert_eq!(first["ip"], "127.0.0.1", "{listed}");
    assert_eq!(first["score"], 60, "{listed}");
    let factors = first["factors"].to_string();
    assert!(
        factors.contains("user_agent") && factors.contains("suspicious_parameters"),
        "{listed}"
    );
}
