//! Size and time limits: each refusal answered generically and never forwarded.

use crate::util::*;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn limited(upstream: &Upstream, limits: &str) -> String {
    config_with(&upstream.url(), &format!("limits:\n{limits}{CATCH_ALL}"))
}

#[tokio::test]
async fn long_uri_is_414() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&limited(&upstream, "  max_uri_bytes: 100\n")).await;
    let (status, _, body) = get(&gw.url(&format!("/{}", "a".repeat(120))))
        .await
        .unwrap();
    assert_eq!(status, 414);
    assert_eq!(json(&body)["status"], 414);
    let (status, _, _) = get(&gw.url(&format!("/{}", "a".repeat(90)))).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn too_many_or_too_large_headers_are_431() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&limited(
        &upstream,
        "  max_header_bytes: 2048\n  max_header_count: 20\n",
    ))
    .await;
    let mut req = Request::get(gw.url("/a"));
    for i in 0..25 {
        req = req.header(format!("x-h{i}"), "v");
    }
    let (status, headers, _) = send(req.body(Full::default()).unwrap()).await.unwrap();
    assert_eq!(status, 431);
    assert_eq!(headers["content-type"], "application/problem+json");
    let req = Request::get(gw.url("/a"))
        .header("x-big", "b".repeat(3000))
        .body(Full::default())
        .unwrap();
    let (status, _, _) = send(req).await.unwrap();
    assert_eq!(status, 431);
    assert_eq!(upstream.heads(), 0);
    gw.event_where("count event", |e| e["reason"] == "header_count")
        .await;
    gw.event_where("bytes event", |e| e["reason"] == "header_bytes")
        .await;
}

#[tokio::test]
async fn declared_body_over_limit_is_413_before_anything_is_forwarded() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&limited(&upstream, "  max_body_bytes: 1000\n")).await;
    let req = Request::post(gw.url("/a"))
        .body(Full::new(Bytes::from(vec![b'x'; 1001])))
        .unwrap();
    let (status, headers, _) = send(req).await.unwrap();
    assert_eq!(status, 413);
    assert_eq!(headers["connection"], "close");
    assert_eq!(upstream.heads(), 0);
    let req = Request::post(gw.url("/a"))
        .body(Full::new(Bytes::from(vec![b'x'; 1000])))
        .unwrap();
    assert_eq!(send(req).await.unwrap().0, 200);
}

#[tokio::test]
async fn chunked_body_over_limit_is_413_while_streaming() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&limited(&upstream, "  max_body_bytes: 1000\n")).await;
    let mut request = b"POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..4 {
        request.extend_from_slice(b"190\r\n");
        request.extend_from_slice(&[b'y'; 400]);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let answer = raw(gw.addr, &request).await;
    assert_eq!(raw_status(&answer), 413, "{answer}");
    assert_eq!(
        upstream.hits(),
        0,
        "the upstream received a complete over-limit body"
    );
    gw.event_where("size event", |e| e["reason"] == "body_too_large")
        .await;
}

#[tokio::test]
async fn slow_body_is_408_and_closed() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&limited(&upstream, "  body_read_timeout: 500ms\n")).await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly-a-little")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let started = Instant::now();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(raw_status(&answer), 408, "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn slow_headers_are_cut_off_while_other_clients_are_served() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&limited(&upstream, "  header_read_timeout: 1s\n")).await;
    // Slowloris: part of a head, then silence. And a client that sends nothing at all.
    let mut slow = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    slow.write_all(b"GET /a HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        .await
        .unwrap();
    let mut silent = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let mut prefix = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    prefix.write_all(b"PRI * HT").await.unwrap();
    for _ in 0..5 {
        assert_eq!(
            get(&gw.url("/a")).await.unwrap().0,
            200,
            "a normal client was not served"
        );
    }
    let started = Instant::now();
    for stream in [&mut slow, &mut silent, &mut prefix] {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "a slow client was never disconnected");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(upstream.heads(), 5);
}

#[tokio::test]
async fn connections_over_the_limit_wait_until_one_closes() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&limited(&upstream, "  max_connections: 1\n")).await;
    let mut first = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    first
        .write_all(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = first.read(&mut buf).await.unwrap();
    assert_eq!(raw_status(&String::from_utf8_lossy(&buf[..n])), 200);
    // The first connection stays open (keep-alive), holding the only slot.
    let second = tokio::spawn({
        let addr = gw.addr;
        async move {
            raw(
                addr,
                b"GET /b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            )
            .await
        }
    });
    let waited = tokio::time::timeout(Duration::from_millis(500), async {
        while upstream.hits() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        waited.is_err(),
        "a connection over max_connections was served"
    );
    drop(first);
    let answer = tokio::time::timeout(DEADLINE, second)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(raw_status(&answer), 200, "{answer}");
}

/// Opens a raw HTTP/2 (prior knowledge) connection with the `h2` client.
async fn h2_connect(
    addr: std::net::SocketAddr,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(connection);
    (client, driver)
}

#[tokio::test]
async fn http2_streams_are_capped_and_a_rapid_reset_flood_closes_the_connection() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&limited(
        &upstream,
        "  http2: { max_concurrent_streams: 7, max_pending_resets: 10 }\n",
    ))
    .await;
    // The advertised stream limit is the configured one.
    let (client, driver) = h2_connect(gw.addr).await;
    let mut client = client.ready().await.unwrap();
    // One full exchange, so the server's SETTINGS have certainly been applied.
    let request = http::Request::get(format!("http://{}/a", gw.addr))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    assert_eq!(client.current_max_send_streams(), 7);
    // Rapid Reset: open streams and cancel them at once, far more than allowed.
    let mut refused = false;
    for _ in 0..500 {
        let request = http::Request::get(format!("http://{}/slow?ms=2000", gw.addr))
            .body(())
            .unwrap();
        match client.send_request(request, true) {
            Ok((response, _)) => drop(response),
            Err(_) => {
                refused = true;
                break;
            }
        }
        match client.clone().ready().await {
            Ok(ready) => client = ready,
            Err(_) => {
                refused = true;
                break;
            }
        }
    }
    let closed = tokio::time::timeout(DEADLINE, driver)
        .await
        .expect("the flooded connection stayed open");
    assert!(
        refused || closed.map(|r| r.is_err()).unwrap_or(true),
        "the flood was not cut off"
    );
    // Other clients are still served.
    assert_eq!(get(&gw.url("/a")).await.unwrap().0, 200);
}
