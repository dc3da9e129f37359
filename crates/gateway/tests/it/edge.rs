//! Edge rules on the real binary, on raw sockets where the bytes matter: `Host` and
//! request-target rules, line syntax, forwarded headers from untrusted peers, masked
//! upstream errors, and malformed introspection answers.

use crate::util::*;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;

/// Sends `first` and then a valid request on the same connection: the answer to `first`
/// must be a 400 after which the connection is closed (the second is never answered).
async fn refused_and_closed(gw: &Gateway, first: &[u8]) -> String {
    let mut bytes = first.to_vec();
    bytes.extend_from_slice(b"GET /second HTTP/1.1\r\nHost: a\r\n\r\n");
    let answer = raw(gw.addr, &bytes).await;
    assert_eq!(raw_status(&answer), 400, "{answer}");
    assert_eq!(
        answer.matches("HTTP/1.1 ").count(),
        1,
        "the connection stayed open: {answer}"
    );
    answer
}

#[tokio::test]
async fn host_rules_refuse_ambiguous_hosts() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config_with(&upstream.url(), CATCH_ALL)).await;
    for (what, request, reason) in [
        (
            "two Host fields",
            &b"GET /a HTTP/1.1\r\nHost: a.test\r\nHost: evil.test\r\n\r\n"[..],
            "duplicate_host",
        ),
        (
            "userinfo",
            b"GET /a HTTP/1.1\r\nHost: user@a.test\r\n\r\n",
            "userinfo_in_host",
        ),
        (
            "absolute-form against another Host",
            b"GET http://a.test/a HTTP/1.1\r\nHost: evil.test\r\n\r\n",
            "host_mismatch",
        ),
    ] {
        refused_and_closed(&gw, request).await;
        gw.event_where(what, |e| e["reason"] == reason).await;
    }
    assert_eq!(
        upstream.heads(),
        0,
        "a refused request reached the upstream"
    );
    // The same absolute-form target with its own Host is fine.
    let answer = raw(
        gw.addr,
        b"GET http://a.test/ok HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
}

#[tokio::test]
async fn the_host_allow_list_answers_421() {
    let upstream = Upstream::start().await;
    let config = with_listen(
        &config_with(&upstream.url(), CATCH_ALL),
        "  hosts: [api.example.test, 127.0.0.1]\n",
    );
    let gw = Gateway::start(&config).await;
    let port = gw.addr.port();
    let ask = |host: String| async move {
        let request = format!("GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        raw_status(&raw(gw.addr, request.as_bytes()).await)
    };
    assert_eq!(ask("api.example.test".into()).await, 200);
    assert_eq!(
        ask("API.example.test".into()).await,
        200,
        "case-insensitive"
    );
    assert_eq!(ask(format!("api.example.test:{port}")).await, 200);
    let heads = upstream.heads();
    assert_eq!(ask("evil.test".into()).await, 421);
    assert_eq!(ask("api.example.test:1".into()).await, 421, "another port");
    assert_eq!(ask("api.example.test.evil.test".into()).await, 421);
    assert_eq!(upstream.heads(), heads);
    let event = gw
        .event_where("misdirected", |e| e["reason"] == "host_not_allowed")
        .await;
    assert_eq!(event["event_type"], "suspicious_activity");
    // HTTP/2: the same rule on :authority.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let url = format!("http://localhost:{port}/h2");
    let response = client
        .request(Request::get(url).body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 421);
    let response = client
        .request(Request::get(gw.url("/h2")).body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn forwarded_host_headers_are_believed_only_from_trusted_proxies() {
    let upstream = Upstream::start().await;
    let request = b"GET /x HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-Host: evil.test\r\n\
X-Forwarded-Port: 1\r\nX-Forwarded-Prefix: /evil\r\nForwarded: host=evil.test;proto=https\r\n\
Connection: close\r\n\r\n";
    let untrusted = Gateway::start(&config_with(&upstream.url(), CATCH_ALL)).await;
    assert_eq!(raw_status(&raw(untrusted.addr, request).await), 200);
    let seen = upstream.last();
    for name in ["x-forwarded-host", "x-forwarded-port", "x-forwarded-prefix"] {
        assert!(seen.headers.get(name).is_none(), "{name} was forwarded");
    }
    let forwarded = seen.headers["forwarded"].to_str().unwrap();
    assert!(!forwarded.contains("evil"), "{forwarded}");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");

    let config = with_listen(
        &config_with(&upstream.url(), CATCH_ALL),
        "  trusted_proxies: [127.0.0.1/32]\n",
    );
    let trusted = Gateway::start(&config).await;
    assert_eq!(raw_status(&raw(trusted.addr, request).await), 200);
    let seen = upstream.last();
    assert_eq!(seen.headers["x-forwarded-host"], "evil.test");
    assert!(
        seen.headers["forwarded"]
            .to_str()
            .unwrap()
            .starts_with("host=evil.test;proto=https, for=127.0.0.1")
    );
}

#[tokio::test]
async fn request_target_and_line_syntax_rules() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config_with(&upstream.url(), CATCH_ALL)).await;
    let cases: [(&[u8], &str); 6] = [
        (
            b"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n",
            "fragment_in_target",
        ),
        (
            b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n",
            "invalid_target_byte",
        ),
        (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", "asterisk_target"),
        (b"GET /a HTTP/1.1\nHost: a\n\n", "bare_lf"),
        (b"GET /a HTTP/1.1\r\nHost: a\nX-B: 1\r\n\r\n", "bare_lf"),
        (
            b"GET /a HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n folded\r\n\r\n",
            "",
        ),
    ];
    for (request, reason) in cases {
        let answer = refused_and_closed(&gw, request).await;
        if !reason.is_empty() {
            gw.event_where(reason, |e| e["reason"] == reason).await;
            assert!(answer.contains("application/problem+json"), "{answer}");
        }
    }
    for request in [
        &b"GET /a HTTP/1.1\r\nHost: a\r\nX A: 1\r\n\r\n"[..],
        b"GET /a HTTP/1.1\r\nHost: a\r\nX-A : 1\r\n\r\n",
    ] {
        refused_and_closed(&gw, request).await;
    }
    assert_eq!(
        upstream.heads(),
        0,
        "a refused request reached the upstream"
    );
    // OPTIONS * is the one place an asterisk belongs.
    let answer = raw(
        gw.addr,
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&answer), 404, "{answer}");
}

#[tokio::test]
async fn upstream_server_errors_are_replaced_unless_passed() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config_with(&upstream.url(), CATCH_ALL)).await;
    let (status, headers, body) = get(&gw.url("/fail?status=503")).await.unwrap();
    assert_eq!(status, 503);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(headers["retry-after"], "7", "Retry-After survives");
    assert!(headers.get("x-debug-trace").is_none(), "{headers:?}");
    assert!(!body.contains("SECRET"), "{body}");
    let problem = json(&body);
    assert_eq!(problem["status"], 503);
    assert_eq!(
        problem["request_id"],
        headers["x-request-id"].to_str().unwrap()
    );
    let event = gw
        .event_where("upstream error", |e| e["reason"] == "upstream_5xx")
        .await;
    assert_eq!(event["event_type"], "upstream_error");
    assert!(
        event["details"]["detail"]
            .as_str()
            .unwrap()
            .contains("Traceback"),
        "{event}"
    );
    let (status, _, _) = get(&gw.url("/fail?status=500")).await.unwrap();
    assert_eq!(status, 500);

    let passing = Gateway::start(&config_with(
        &upstream.url(),
        &format!("errors:\n  upstream_5xx: pass\n{CATCH_ALL}"),
    ))
    .await;
    let (status, headers, body) = get(&passing.url("/fail?status=500")).await.unwrap();
    assert_eq!(status, 500);
    assert!(body.contains("SECRET"), "pass delivers the body: {body}");
    assert_eq!(headers["x-debug-trace"], "db=10.0.0.5");
}

/// An introspection endpoint that answers what it is told to, in turn (a misbehaving
/// server, which no real authorization server would be on purpose).
async fn introspection_answering(answers: Vec<&'static str>) -> (String, TaskGuard) {
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (addr, guard) = tiny_server(move |_req| {
        let n = served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(
                answers[n % answers.len()].as_bytes(),
            )))
            .unwrap()
    })
    .await;
    (format!("http://{addr}/introspect"), guard)
}

#[tokio::test]
async fn malformed_introspection_numbers_fail_closed_without_a_panic() {
    let upstream = Upstream::start().await;
    let (endpoint, _server) = introspection_answering(vec![
        r#"{"active":true,"sub":"a","exp":1e20}"#,
        r#"{"active":true,"sub":"a","exp":1700000000.5}"#,
        r#"{"active":true,"sub":"a","exp":-5}"#,
        r#"{"active":true,"sub":"a","iat":1e300}"#,
    ])
    .await;
    let dir = test_dir(&[("client-secret", "s3cret\n")]);
    let config = config_with(
        &upstream.url(),
        &format!(
            "identity:\n  introspection:\n    endpoint: {endpoint}\n    client_id: gw\n    client_secret: ${{file:client-secret}}\n\
{ALLOW_ALL}routes:\n  - match: {{ prefix: /api/ }}\n    upstream: main\n"
        ),
    );
    std::fs::write(dir.path().join("portcullis.yaml"), config).unwrap();
    let gw = Gateway::start_in(dir).await;
    for i in 0..4 {
        let request = Request::get(gw.url("/api/x"))
            .header("authorization", format!("Bearer opaque-{i}"))
            .body(Full::default())
            .unwrap();
        let (status, _, body) = send(request)
            .await
            .expect("an answer, not a dropped connection");
        assert_eq!(status, 401, "{body}");
    }
    gw.event_where("malformed answer", |e| {
        e["reason"] == "introspection_unavailable"
    })
    .await;
    assert_eq!(upstream.heads(), 0);
    assert!(!gw.stderr().contains("internal error"), "{}", gw.stderr());
}

/// Reads one HTTP/1 response (head and a `Content-Length` body) from `stream`.
async fn read_response<R: tokio::io::AsyncRead + Unpin>(
    stream: &mut R,
) -> Result<(u16, String), String> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into_owned();
                return Ok((raw_status(&text), body));
            }
        }
        match tokio::time::timeout(DEADLINE, stream.read(&mut chunk)).await {
            Ok(Ok(0)) => return Err(format!("closed after {} bytes", buf.len())),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return Err(format!("{e} after {} bytes", buf.len())),
            Err(_) => return Err("timed out".into()),
        }
    }
}

#[tokio::test]
async fn an_early_413_is_read_whole_while_the_client_still_uploads() {
    use tokio::io::AsyncWriteExt;
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config_with(&upstream.url(), CATCH_ALL)).await;
    for round in 0..5 {
        let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        // 2 MiB declared against the 1 MiB limit: answered at once, before any body byte.
        let head =
            format!("POST /upload/{round} HTTP/1.1\r\nHost: a\r\nContent-Length: 2097152\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let path = format!("/upload/{round}");
        gw.event_where("the 413", |e| {
            e["reason"] == "body_too_large" && e["details"]["path"] == path.as_str()
        })
        .await;
        // The client goes on uploading, as curl does, and only then reads. Without lingering
        // close the gateway's socket is gone: these bytes draw a reset, the next write fails,
        // and a client like curl gives up with "connection reset" and never shows the 413.
        let chunk = vec![b'x'; 64 * 1024];
        for i in 0..8 {
            stream
                .write_all(&chunk)
                .await
                .unwrap_or_else(|e| panic!("round {round}: upload write {i} failed: {e}"));
        }
        let (status, body) = read_response(&mut stream)
            .await
            .unwrap_or_else(|e| panic!("round {round}: the 413 was lost: {e}"));
        assert_eq!(status, 413, "round {round}");
        assert_eq!(json(&body)["status"], 413, "round {round}");
    }
    assert_eq!(upstream.heads(), 0);
}

#[tokio::test]
async fn a_request_timeout_while_the_body_arrives_is_408() {
    use tokio::io::AsyncWriteExt;
    let upstream = Upstream::start().await;
    let config = config_with(
        &upstream.url(),
        &format!("limits:\n  request_timeout: 500ms\n{CATCH_ALL}"),
    );
    let gw = Gateway::start(&config).await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    // Promises 100 bytes, sends 10, then waits.
    stream
        .write_all(
            b"POST /slow-client HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789",
        )
        .await
        .unwrap();
    let (status, body) = read_response(&mut stream).await.unwrap();
    assert_eq!(status, 408, "{body}");
    assert_eq!(
        upstream.hits(),
        0,
        "no complete request reached the upstream"
    );
    // A slow upstream is still the upstream's fault.
    let (status, _, _) = get(&gw.url("/slow?ms=2000")).await.unwrap();
    assert_eq!(status, 504);
}

const CORS: &str = "cors:\n  - match: { prefix: /api/ }\n    allow_origins: [\"{origin}\"]\n    allow_methods: [GET, POST]\n    allow_headers: [authorization, content-type]\n    expose_headers: [x-request-id]\n    allow_credentials: true\n    max_age: 10m\n";

fn cors_config(upstream: &Upstream, origin: &str) -> String {
    config_with(
        &upstream.url(),
        &format!(
            "{}routes:\n  - match: {{ prefix: /api/items }}\n    upstream: main\n    auth: none\n\
\x20\x20- match: {{ prefix: /other }}\n    upstream: main\n    auth: none\n",
            CORS.replace("{origin}", origin)
        ),
    )
}

fn preflight(
    gw: &Gateway,
    path: &str,
    origin: &str,
    method: &str,
    headers: &str,
) -> Request<Full<Bytes>> {
    let mut request = Request::builder()
        .method("OPTIONS")
        .uri(gw.url(path))
        .header("origin", origin)
        .header("access-control-request-method", method);
    if !headers.is_empty() {
        request = request.header("access-control-request-headers", headers);
    }
    request.body(Full::default()).unwrap()
}

#[tokio::test]
async fn cors_preflights_are_answered_here_and_origins_are_exact() {
    let upstream = Upstream::start().await;
    let app = "https://app.example.test";
    let gw = Gateway::start(&cors_config(&upstream, app)).await;

    let (status, headers, _) = send(preflight(
        &gw,
        "/api/items",
        app,
        "POST",
        "Authorization, Content-Type",
    ))
    .await
    .unwrap();
    assert_eq!(status, 204);
    assert_eq!(headers["access-control-allow-origin"], app);
    assert_eq!(headers["access-control-allow-credentials"], "true");
    assert_eq!(headers["access-control-max-age"], "600");
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert!(headers.get_all("vary").iter().any(|v| v == "Origin"));
    for (origin, method, asked) in [
        ("https://evil.test", "POST", ""),
        ("null", "GET", ""),
        ("https://app.example.test.evil.test", "GET", ""),
        (app, "DELETE", ""),
        (app, "GET", "x-secret"),
    ] {
        let (status, headers, body) = send(preflight(&gw, "/api/items", origin, method, asked))
            .await
            .unwrap();
        assert_eq!(status, 403, "{origin} {method} {asked}: {body}");
        assert!(
            headers.get("access-control-allow-origin").is_none(),
            "{origin}: {headers:?}"
        );
    }
    assert_eq!(upstream.heads(), 0, "a preflight was forwarded");

    // Actual requests: the allowed origin gets its own origin back; others get nothing.
    let with_origin = |origin: &str| {
        Request::get(gw.url("/api/items"))
            .header("origin", origin)
            .body(Full::default())
            .unwrap()
    };
    let (status, headers, _) = send(with_origin(app)).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(headers["access-control-allow-origin"], app);
    assert_eq!(headers["access-control-expose-headers"], "x-request-id");
    let (_, headers, _) = send(with_origin("https://evil.test")).await.unwrap();
    assert!(headers.get("access-control-allow-origin").is_none());
    assert!(headers.get_all("vary").iter().any(|v| v == "Origin"));
    // Outside the covered paths nothing changes.
    let (_, headers, _) = get(&gw.url("/other")).await.unwrap();
    assert!(headers.get("vary").is_none() && headers.get("access-control-allow-origin").is_none());
    // A refusal on a covered path is readable by the allowed page (it learns why it failed).
    let refused = Request::get(gw.url("/api/missing"))
        .header("origin", app)
        .body(Full::default())
        .unwrap();
    let (status, headers, _) = send(refused).await.unwrap();
    assert_eq!(status, 404);
    assert_eq!(headers["access-control-allow-origin"], app);
}

#[test]
fn check_refuses_a_wildcard_origin_with_credentials() {
    let dir = test_dir(&[]);
    let config = config_with(
        "http://127.0.0.1:9",
        &format!(
            "{}{}{CATCH_ALL}",
            CORS.replace("[\"{origin}\"]", "[\"*\"]"),
            "  - match: { prefix: /b/ }\n    allow_origins: [\"null\", \"ftp://x\", \"https://a.test/path\"]\n"
        ),
    );
    std::fs::write(dir.path().join("portcullis.yaml"), config).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config"])
        .arg(dir.path().join("portcullis.yaml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for expected in [
        "cors[0].allow_origins[0]: `*` cannot go with `allow_credentials: true`",
        "cors[1].allow_origins[0]: `null`",
        "cors[1].allow_origins[1]: `ftp://x` is not an origin",
        "cors[1].allow_origins[2]: `https://a.test/path` is not an origin",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
}

/// A page server: answers every request with a small HTML page.
async fn page_server() -> (String, TaskGuard) {
    let (addr, guard) = tiny_server(|_req| {
        Response::builder()
            .header("content-type", "text/html")
            .body(Full::new(Bytes::from_static(
                b"<!doctype html><title>page</title>",
            )))
            .unwrap()
    })
    .await;
    (format!("http://{addr}"), guard)
}

#[tokio::test]
async fn a_real_browser_can_call_from_the_allowed_origin_only() {
    let peers = browser_peers();
    let upstream = Upstream::start().await;
    let (allowed, _a) = page_server().await;
    let (other, _b) = page_server().await;
    let gw = Gateway::start(&cors_config(&upstream, &allowed)).await;
    let api = gw.url("/api/items");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg("cors_browser.mjs")
            .arg(&api)
            .arg(format!("{allowed}/app"))
            .arg(format!("{other}/app"))
            .current_dir(peers)
            .output()
            .expect("node")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results: Vec<serde_json::Value> = stdout.lines().map(json).collect();
    assert_eq!(results.len(), 2, "{stdout}");
    assert_eq!(
        results[0]["status"], 200,
        "the allowed page could not read: {stdout}"
    );
    assert_eq!(
        json(results[0]["body"].as_str().unwrap())["path"],
        "/api/items"
    );
    assert!(
        results[0]["requestId"].is_string(),
        "x-request-id is exposed: {stdout}"
    );
    assert!(
        results[1]["error"].is_string(),
        "another origin read the answer: {stdout}"
    );
    // The allowed page's POST arrived, after a preflight the upstream never saw.
    let seen = upstream.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(
        upstream.heads(),
        1,
        "only the allowed page's request was forwarded"
    );
}

/// Opens a raw HTTP/2 connection, sends the preface, SETTINGS and `pings` PING frames, and
/// reads frames until the server closes or `until` says enough. Returns (PING ACKs seen,
/// the GOAWAY error code if one came).
async fn ping_flood(
    addr: std::net::SocketAddr,
    pings: usize,
    until: impl Fn(usize) -> bool,
) -> (usize, Option<u32>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let writer = tokio::spawn(async move {
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        out.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
        for i in 0..pings {
            out.extend_from_slice(&[0, 0, 8, 0x6, 0, 0, 0, 0, 0]);
            out.extend_from_slice(&(i as u64).to_be_bytes());
        }
        let _ = writer.write_all(&out).await;
        writer
    });
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let (mut acks, mut goaway) = (0, None);
    let read = async {
        loop {
            let n = match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            while buf.len() >= 9 {
                let length =
                    usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
                if buf.len() < 9 + length {
                    break;
                }
                let (kind, flags) = (buf[3], buf[4]);
                if kind == 0x6 && flags & 1 == 1 {
                    acks += 1;
                }
                if kind == 0x7 && length >= 8 {
                    goaway = Some(u32::from_be_bytes([buf[13], buf[14], buf[15], buf[16]]));
                }
                buf.drain(..9 + length);
            }
            if until(acks) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DEADLINE, read).await;
    drop(writer.await);
    (acks, goaway)
}

#[tokio::test]
async fn http2_control_frame_floods_get_goaway_and_others_are_served() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config_with(&upstream.url(), CATCH_ALL)).await;
    let flood = ping_flood(gw.addr, 10_000, |_| false);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let served = async {
        let response = client
            .request(
                Request::get(gw.url("/meanwhile"))
                    .body(Full::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        response.status()
    };
    let ((acks, goaway), status) = tokio::join!(flood, served);
    assert_eq!(
        goaway,
        Some(0xb),
        "no GOAWAY ENHANCE_YOUR_CALM after {acks} PING ACKs"
    );
    assert!(acks <= 200, "the flood was answered {acks} times");
    assert_eq!(status, 200, "another connection was not served");
    // After the flood, new connections are served as before.
    let response = client
        .request(
            Request::get(gw.url("/after"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // With a limit the same traffic stays under, every PING is answered and nothing closes.
    let config = config_with(
        &upstream.url(),
        &format!("limits:\n  http2:\n    max_control_frames_per_second: 100000\n{CATCH_ALL}"),
    );
    let relaxed = Gateway::start(&config).await;
    let (acks, goaway) = ping_flood(relaxed.addr, 10_000, |acks| acks >= 10_000).await;
    assert_eq!((acks, goaway), (10_000, None));
}

#[tokio::test]
async fn an_upstreams_own_cors_headers_never_widen_the_rule() {
    // An upstream that allows everyone, with credentials.
    let (addr, _server) = tiny_server(|_req| {
        Response::builder()
            .header("access-control-allow-origin", "*")
            .header("access-control-allow-credentials", "true")
            .header("access-control-expose-headers", "x-secret")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap()
    })
    .await;
    let app = "https://app.example.test";
    let config = config_with(
        &format!("http://{addr}"),
        &format!(
            "{}routes:\n  - match: {{ prefix: / }}\n    upstream: main\n    auth: none\n",
            CORS.replace("{origin}", app)
                .replace("allow_credentials: true", "allow_credentials: false")
        ),
    );
    let gw = Gateway::start(&config).await;
    let ask = |origin: &str| {
        Request::get(gw.url("/api/items"))
            .header("origin", origin)
            .body(Full::default())
            .unwrap()
    };
    let (_, headers, _) = send(ask("https://evil.test")).await.unwrap();
    assert!(
        headers.get("access-control-allow-origin").is_none(),
        "{headers:?}"
    );
    assert!(headers.get("access-control-allow-credentials").is_none());
    let (_, headers, _) = send(ask(app)).await.unwrap();
    assert_eq!(headers["access-control-allow-origin"], app);
    assert!(
        headers.get("access-control-allow-credentials").is_none(),
        "{headers:?}"
    );
    assert_eq!(headers["access-control-expose-headers"], "x-request-id");
    // Outside the covered paths the upstream's headers are its own business.
    let (_, headers, _) = get(&gw.url("/elsewhere")).await.unwrap();
    assert_eq!(headers["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn padding_only_data_frames_count_as_empty_frames() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config_with(&upstream.url(), CATCH_ALL)).await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    // HEADERS for a POST on stream 1 (HPACK: :method POST, :scheme http, :path /, :authority a).
    let block = [0x83, 0x86, 0x84, 0x41, 0x01, b'a'];
    out.extend_from_slice(&[0, 0, block.len() as u8, 0x1, 0x4, 0, 0, 0, 1]);
    out.extend_from_slice(&block);
    // 1,000 DATA frames that carry only padding (pad length 0: one byte, no data).
    for _ in 0..1000 {
        out.extend_from_slice(&[0, 0, 1, 0x0, 0x8, 0, 0, 0, 1, 0]);
    }
    let _ = stream.write_all(&out).await;
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        while let Ok(n) = stream.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&chunk[..n]);
        }
    };
    let _ = tokio::time::timeout(DEADLINE, read).await;
    // Walk the frames for a GOAWAY with ENHANCE_YOUR_CALM.
    let mut at = 0;
    let mut goaway = None;
    while at + 9 <= seen.len() {
        let length = usize::from(seen[at]) << 16
            | usize::from(seen[at + 1]) << 8
            | usize::from(seen[at + 2]);
        if seen[at + 3] == 0x7 && at + 17 <= seen.len() {
            goaway = Some(u32::from_be_bytes([
                seen[at + 13],
                seen[at + 14],
                seen[at + 15],
                seen[at + 16],
            ]));
        }
        at += 9 + length;
    }
    assert_eq!(
        goaway,
        Some(0xb),
        "padding-only DATA frames were not counted"
    );
}
