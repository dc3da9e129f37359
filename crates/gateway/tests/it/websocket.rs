//! WebSocket through the real binary: a real tokio-tungstenite client and server, the
//! handshake through the whole pipeline (token, policy with `request.upgrade`, origin), the
//! frames relayed both ways, and the gateway's closes (1009, idle 1001, token expiry 1008).

use crate::identity::{ISSUER, baseline_claims, jwks, now, token};
use crate::util::*;
use futures_util::{SinkExt, StreamExt};
use http::HeaderMap;
use portcullis::authn::sign::SigningKey;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// A real WebSocket echo server that records each handshake's headers and the sizes of the
/// messages it received.
struct EchoServer {
    addr: SocketAddr,
    handshakes: Arc<Mutex<Vec<HeaderMap>>>,
    received: Arc<Mutex<Vec<usize>>>,
    _task: TaskGuard,
}

impl EchoServer {
    async fn start() -> EchoServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
        let received: Arc<Mutex<Vec<usize>>> = Arc::default();
        let (seen, sizes) = (handshakes.clone(), received.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (seen, sizes) = (seen.clone(), sizes.clone());
                tokio::spawn(async move {
                    // The callback's error type is tungstenite's own response.
                    #[allow(clippy::result_large_err)]
                    let record =
                        |req: &tokio_tungstenite::tungstenite::handshake::server::Request, res| {
                            seen.lock().unwrap().push(req.headers().clone());
                            Ok(res)
                        };
                    let config =
                        tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                            .max_message_size(Some(64 << 20))
                            .max_frame_size(Some(64 << 20));
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async_with_config(
                        stream,
                        record,
                        Some(config),
                    )
                    .await
                    else {
                        return;
                    };
                    while let Some(Ok(message)) = ws.next().await {
                        match message {
                            Message::Text(text) => {
                                sizes.lock().unwrap().push(text.len());
                                // `send N`: answers with a binary message of N bytes.
                                let reply = match text.strip_prefix("send ") {
                                    Some(n) => Message::binary(vec![7u8; n.parse().unwrap()]),
                                    None => Message::text(format!("echo: {text}")),
                                };
                                if ws.send(reply).await.is_err() {
                                    return;
                                }
                            }
                            Message::Binary(bytes) => {
                                sizes.lock().unwrap().push(bytes.len());
                                if ws.send(Message::Binary(bytes)).await.is_err() {
                                    return;
                                }
                            }
                            Message::Close(_) => {
                                // Sends the close reply tungstenite queued.
                                let _ = ws.flush().await;
                                return;
                            }
                            _ => {}
                        }
                    }
                });
            }
        });
        EchoServer {
            addr,
            handshakes,
            received,
            _task: TaskGuard(task),
        }
    }

    fn handshakes(&self) -> usize {
        self.handshakes.lock().unwrap().len()
    }

    fn received(&self) -> Vec<usize> {
        self.received.lock().unwrap().clone()
    }
}

/// A policy that allows `/ws` only as an upgrade (so the test proves the policy sees it),
/// and everything else as usual.
const POLICY: &str = "package test\n\ndefault allow := false\n\
allow if {\n  input.action == \"get_ws\"\n  input.request.upgrade == \"websocket\"\n}\n\
allow if input.action != \"get_ws\"\n";

async fn gateway(echo: &EchoServer, key: &SigningKey, limits: &str) -> Gateway {
    let dir = test_dir(&[("jwks.json", &jwks(key)), ("ws.rego", POLICY)]);
    let config = config_with(
        &format!("http://{}", echo.addr),
        &format!(
            "identity:\n  jwt:\n    - name: idp\n      issuer: {ISSUER}\n      audiences: [api]\n      jwks_file: jwks.json\n      algorithms: [ES256]\n\
policy:\n  engine: rego\n  rego:\n    files: [ws.rego]\n    query: data.test.allow\n\
limits:\n  websocket: {{ {limits} }}\n\
routes:\n  - match: {{ path: /ws, methods: [GET] }}\n    upstream: main\n    websocket: true\n    websocket_origins: [\"https://app.example.test\"]\n  - match: {{ path: /plain }}\n    upstream: main\n"
        ),
    );
    std::fs::write(dir.path().join("portcullis.yaml"), config).unwrap();
    Gateway::start_in(dir).await
}

/// An echo upstream behind a gateway with `limits.websocket: {limits}`, and a valid token.
struct Protected {
    echo: EchoServer,
    key: SigningKey,
    gw: Gateway,
    token: String,
}

impl Protected {
    async fn start(limits: &str) -> Protected {
        let echo = EchoServer::start().await;
        let (key, _) = SigningKey::generate_es256("k1").unwrap();
        let gw = gateway(&echo, &key, limits).await;
        let token = token(&key, &baseline_claims());
        Protected {
            echo,
            key,
            gw,
            token,
        }
    }
}

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a WebSocket to `path` with these extra handshake headers.
async fn connect(gw: &Gateway, path: &str, headers: &[(&str, String)]) -> Result<Client, WsError> {
    let mut request = format!("ws://{}{path}", gw.addr)
        .into_client_request()
        .unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let connected = tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake hung");
    connected.map(|(ws, _)| ws)
}

fn bearer(token: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {token}"))
}

/// The close code the client gets next (after any data messages), within the deadline.
async fn close_code<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> Option<CloseCode>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let wait = async {
        while let Some(message) = ws.next().await {
            match message {
                Ok(Message::Close(frame)) => return frame.map(|f| f.code),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    };
    tokio::time::timeout(DEADLINE, wait)
        .await
        .expect("no close frame")
}

fn status_of(result: Result<Client, WsError>) -> u16 {
    match result {
        Err(WsError::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("not an HTTP refusal: {other}"),
        Ok(_) => panic!("the handshake was accepted"),
    }
}

#[tokio::test]
async fn messages_are_relayed_both_ways_after_the_whole_pipeline() {
    let Protected {
        echo,
        key: _key,
        gw,
        token,
    } = Protected::start("max_message_bytes: 100000").await;
    let mut ws = connect(
        &gw,
        "/ws",
        &[
            bearer(&token),
            ("origin", "https://app.example.test".into()),
            ("sec-websocket-extensions", "permessage-deflate".into()),
        ],
    )
    .await
    .expect("handshake accepted");
    ws.send(Message::text("hello")).await.unwrap();
    let reply = tokio::time::timeout(DEADLINE, ws.next()).await.unwrap();
    assert_eq!(reply.unwrap().unwrap(), Message::text("echo: hello"));
    ws.send(Message::binary(vec![1u8; 70_000])).await.unwrap();
    let reply = tokio::time::timeout(DEADLINE, ws.next()).await.unwrap();
    assert_eq!(reply.unwrap().unwrap(), Message::binary(vec![1u8; 70_000]));
    // The upstream got the upgrade on its hop, the caller's identity, and no extension offer
    // (compressed messages would get around the size limit).
    let seen = echo.handshakes.lock().unwrap()[0].clone();
    assert_eq!(seen["upgrade"], "websocket");
    assert!(seen.get("sec-websocket-extensions").is_none(), "{seen:?}");
    assert!(seen.get("x-request-id").is_some());
    let metrics = get(&gw.admin_url("/metrics")).await.unwrap().2;
    assert!(
        metrics.contains("portcullis_websocket_connections 1"),
        "{metrics}"
    );
    ws.close(None).await.unwrap();
    // The server's close reply, or the end of the stream.
    let _ = close_code(&mut ws).await;
    drop(ws);
    let metrics_url = gw.admin_url("/metrics");
    eventually_async("the relay to end", || async {
        get(&metrics_url)
            .await
            .is_ok_and(|(_, _, text)| text.contains("portcullis_websocket_connections 0"))
    })
    .await;
    // Plain requests keep working on the same gateway.
    let plain = get(&gw.url("/plain")).await.unwrap();
    assert_eq!(plain.0, 401);
}

#[tokio::test]
async fn refused_handshakes_never_reach_the_upstream() {
    let (other, _) = SigningKey::generate_es256("k1").unwrap();
    let Protected {
        echo,
        key: _key,
        gw,
        token: good,
    } = Protected::start("idle_timeout: 10s").await;
    let forged = token(&other, &baseline_claims());
    let origin = ("origin", "https://app.example.test".to_string());
    // Path, handshake headers, the refusal's status and the event's reason.
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("/ws", vec![origin.clone()], 401, "missing_token"),
        (
            "/ws",
            vec![bearer(&forged), origin.clone()],
            401,
            "bad_signature",
        ),
        (
            "/ws",
            vec![
                bearer(&good),
                ("origin", "https://evil.example.test".into()),
            ],
            403,
            "websocket_origin",
        ),
        ("/plain", vec![bearer(&good)], 400, "websocket_not_allowed"),
        (
            "/ws",
            vec![bearer(&good), ("sec-websocket-version", "8".into())],
            400,
            "websocket_handshake",
        ),
    ];
    for (path, headers, status, reason) in cases {
        assert_eq!(
            status_of(connect(&gw, path, &headers).await),
            status,
            "{reason}"
        );
        gw.event_where(reason, |e| e["reason"] == reason).await;
    }
    assert_eq!(
        echo.handshakes(),
        0,
        "a refused handshake reached the upstream"
    );
}

#[tokio::test]
async fn an_oversized_message_is_closed_with_1009_before_the_upstream_sees_it() {
    let Protected {
        echo,
        key: _key,
        gw,
        token,
    } = Protected::start("max_message_bytes: 1000").await;
    let mut ws = connect(&gw, "/ws", &[bearer(&token)]).await.unwrap();
    ws.send(Message::binary(vec![0u8; 900])).await.unwrap();
    assert!(
        tokio::time::timeout(DEADLINE, ws.next())
            .await
            .unwrap()
            .is_some()
    );
    let _ = ws.send(Message::binary(vec![0u8; 5000])).await;
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Size));
    assert_eq!(
        echo.received(),
        [900],
        "the oversized message went upstream"
    );
    let event = gw
        .event_where("the oversize event", |e| {
            e["reason"] == "websocket_message_too_big"
        })
        .await;
    assert_eq!(event["details"]["from"], "client");
    // A too-large message from the upstream ends the connection too: the client gets 1011.
    let mut ws = connect(&gw, "/ws", &[bearer(&token)]).await.unwrap();
    ws.send(Message::text("send 4000")).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Error));
}

#[tokio::test]
async fn idle_connections_and_expiring_tokens_are_closed() {
    let Protected {
        echo: _echo,
        key,
        gw,
        token: token_now,
    } = Protected::start("idle_timeout: 1s, max_lifetime: 1h").await;
    let mut ws = connect(&gw, "/ws", &[bearer(&token_now)]).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Away));

    // A token that expires in 3 s, on a connection kept busy: closed at exp with 1008.
    let mut claims = baseline_claims();
    claims.insert("exp".into(), (now() + 3).into());
    let short = token(&key, &claims);
    let mut ws = connect(&gw, "/ws", &[bearer(&short)]).await.unwrap();
    let started = std::time::Instant::now();
    let code = loop {
        ws.send(Message::text("ping")).await.unwrap();
        match tokio::time::timeout(DEADLINE, ws.next()).await.unwrap() {
            Some(Ok(Message::Text(_))) => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Some(Ok(Message::Close(frame))) => break frame.map(|f| f.code),
            other => panic!("unexpected {other:?}"),
        }
        assert!(started.elapsed() < DEADLINE, "never closed");
    };
    assert_eq!(code, Some(CloseCode::Policy));
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
}

/// A gateway with a public WebSocket route (`extra` YAML before it) and one WebSocket open on
/// it, through which one message has already been echoed.
async fn open_public(extra: &str) -> (EchoServer, Gateway, Client) {
    let echo = EchoServer::start().await;
    let config = config_with(
        &format!("http://{}", echo.addr),
        &format!(
            "{extra}routes:\n  - match: {{ path: /ws }}\n    upstream: main\n    auth: none\n    websocket: true\n"
        ),
    );
    let gw = Gateway::start(&config).await;
    let mut ws = connect(&gw, "/ws", &[]).await.unwrap();
    ws.send(Message::text("hi")).await.unwrap();
    let echoed = tokio::time::timeout(DEADLINE, ws.next()).await.unwrap();
    assert!(echoed.is_some());
    (echo, gw, ws)
}

#[tokio::test]
async fn a_relayed_websocket_keeps_its_place_under_max_connections() {
    let (_echo, gw, ws) = open_public("limits: { max_connections: 1 }\n").await;
    // The HTTP connection that carried the handshake is gone, the WebSocket is not: a new
    // client waits in the backlog.
    let waiting =
        tokio::time::timeout(std::time::Duration::from_secs(1), get(&gw.url("/ws"))).await;
    assert!(
        waiting.is_err(),
        "a second connection was served: {waiting:?}"
    );
    drop(ws);
    let url = gw.url("/ws");
    eventually_async("the slot to be free again", || async {
        // Any answer: the upstream speaks only WebSocket.
        get(&url).await.is_ok()
    })
    .await;
}

#[tokio::test]
async fn the_demo_prints_websocket_commands_that_work() {
    // Plain, and over TLS (wss, the upgraded connection inside rustls).
    for args in [&[][..], &["--tls"][..]] {
        demo_websocket_commands(args).await;
    }
}

async fn demo_websocket_commands(args: &[&str]) {
    let demo = Demo::start_with(args).await;
    let line = |needle: &str| demo.command(&["websocket-client.py", needle]);
    let run = |command: String| demo.run(command, "ALICE");
    let (code, out) = run(line("hello again")).await;
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "echo: hello\necho: again\n")
    );
    let (code, out) = run(line("evil")).await;
    assert_eq!(code, Some(1));
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
}

#[tokio::test]
async fn shutdown_closes_open_websockets_with_going_away() {
    let (_echo, mut gw, mut ws) = open_public("").await;
    // And one over HTTP/2, whose request carries no `Upgrade` header.
    let (status, h2) = connect_h2(&gw, "/ws", &[]).await;
    assert_eq!(status, 200);
    let mut h2 = h2.unwrap();
    gw.signal("TERM");
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Away));
    assert_eq!(close_code(&mut h2).await, Some(CloseCode::Away));
    assert!(gw.wait_exit().await, "{}", gw.stderr());
}

/// An RFC 8441 WebSocket: an HTTP/2 extended CONNECT to `path` on a new h2c connection,
/// returning the status and, on 200, the WebSocket on the stream.
async fn connect_h2(
    gw: &Gateway,
    path: &str,
    headers: &[(&str, String)],
) -> (u16, Option<H2Client>) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    let build = || {
        let mut request = http::Request::connect(format!("http://{}{path}", gw.addr))
            .header("sec-websocket-version", "13");
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        let mut request = request
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        request
            .extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        request
    };
    // The first request may leave before the server's SETTINGS (which allow it) arrived.
    let started = std::time::Instant::now();
    let mut response = loop {
        sender.ready().await.unwrap();
        match sender.send_request(build()).await {
            Ok(response) => break response,
            Err(e) => {
                assert!(
                    started.elapsed() < DEADLINE,
                    "extended CONNECT refused: {e}"
                );
                tokio::task::yield_now().await;
            }
        }
    };
    let status = response.status().as_u16();
    if status != 200 {
        return (status, None);
    }
    let upgraded = hyper::upgrade::on(&mut response).await.unwrap();
    let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    (status, Some(ws))
}

type H2Client =
    tokio_tungstenite::WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

#[tokio::test]
async fn websockets_over_http2_go_through_the_same_pipeline() {
    let Protected {
        echo,
        key: _key,
        gw,
        token,
    } = Protected::start("max_message_bytes: 1000").await;
    // Refused like the HTTP/1.1 form: no token, a foreign origin; never upstream.
    assert_eq!(connect_h2(&gw, "/ws", &[]).await.0, 401);
    let evil = ("origin", "https://evil.example.test".to_string());
    assert_eq!(connect_h2(&gw, "/ws", &[bearer(&token), evil]).await.0, 403);
    assert_eq!(echo.handshakes(), 0);
    // Allowed: the policy saw `get_ws` with `request.upgrade` (it allows nothing else on /ws).
    let (status, ws) = connect_h2(&gw, "/ws", &[bearer(&token)]).await;
    assert_eq!(status, 200);
    let mut ws = ws.unwrap();
    ws.send(Message::text("over h2")).await.unwrap();
    let reply = tokio::time::timeout(DEADLINE, ws.next()).await.unwrap();
    assert_eq!(reply.unwrap().unwrap(), Message::text("echo: over h2"));
    // The upstream's hop is an HTTP/1.1 upgrade with a key of the gateway's making.
    let seen = echo.handshakes.lock().unwrap()[0].clone();
    assert_eq!(seen["upgrade"], "websocket");
    assert_eq!(seen["sec-websocket-key"].len(), 24);
    // The same limits: an oversized message is closed with 1009.
    let _ = ws.send(Message::binary(vec![0u8; 5000])).await;
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Size));
}
