//! How many times a request waits on Redis: a proxy in front of a real redis-server holds
//! every reply until a given number of request commands has arrived. A gateway that waited
//! for one lookup before sending the next would never send the second, and time out.

use crate::identity::{ISSUER, baseline_claims, jwks, token};
use crate::util::*;
use http::Request;
use http_body_util::Full;
use portcullis::authn::sign::SigningKey;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// Commands a request sends; the background beat (flag exchange, reputation copy) is left
/// out of the count.
const REQUEST_COMMANDS: [&str; 6] = ["EVALSHA", "EVAL", "MGET", "GET", "SISMEMBER", "SET"];

/// What the proxy has seen and whether it holds replies.
#[derive(Default)]
struct Gate {
    /// Request commands seen since the gate was last armed.
    seen: AtomicUsize,
    /// Replies are held until `seen` reaches this (0: not held).
    until: AtomicUsize,
    held: AtomicBool,
    changed: Notify,
}

impl Gate {
    fn arm(&self, commands: usize) {
        self.seen.store(0, Ordering::SeqCst);
        self.until.store(commands, Ordering::SeqCst);
        self.held.store(true, Ordering::SeqCst);
    }

    fn saw(&self, name: &str) {
        if REQUEST_COMMANDS
            .iter()
            .any(|c| name.eq_ignore_ascii_case(c))
        {
            let seen = self.seen.fetch_add(1, Ordering::SeqCst) + 1;
            if seen >= self.until.load(Ordering::SeqCst) {
                self.held.store(false, Ordering::SeqCst);
            }
            self.changed.notify_waiters();
        }
    }

    async fn open(&self) {
        loop {
            let notified = self.changed.notified();
            if !self.held.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

/// The names of the complete RESP commands at the front of `buffer`, which loses them.
fn take_commands(buffer: &mut Vec<u8>) -> Vec<String> {
    fn line(buffer: &[u8], at: usize) -> Option<(&[u8], usize)> {
        let end = buffer[at..].windows(2).position(|w| w == b"\r\n")? + at;
        Some((&buffer[at..end], end + 2))
    }
    let mut names = Vec::new();
    loop {
        let parsed = (|| {
            let (head, mut at) = line(buffer, 0)?;
            let count: usize = std::str::from_utf8(head.strip_prefix(b"*")?)
                .ok()?
                .parse()
                .ok()?;
            let mut name = None;
            for _ in 0..count {
                let (len, next) = line(buffer, at)?;
                let len: usize = std::str::from_utf8(len.strip_prefix(b"$")?)
                    .ok()?
                    .parse()
                    .ok()?;
                let end = next + len + 2;
                if buffer.len() < end {
                    return None;
                }
                name.get_or_insert_with(|| {
                    String::from_utf8_lossy(&buffer[next..next + len]).into_owned()
                });
                at = end;
            }
            Some((name.unwrap_or_default(), at))
        })();
        let Some((name, used)) = parsed else {
            return names;
        };
        buffer.drain(..used);
        names.push(name);
    }
}

/// Starts the proxy to the Redis on `port`; returns its port.
async fn gated_proxy(port: u16, gate: Arc<Gate>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(("127.0.0.1", port)).await else {
                continue;
            };
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            let commands = gate.clone();
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut chunk = [0u8; 16384];
                while let Ok(n) = client_read.read(&mut chunk).await {
                    if n == 0 || server_write.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    pending.extend_from_slice(&chunk[..n]);
                    for name in take_commands(&mut pending) {
                        commands.saw(&name);
                    }
                }
            });
            let replies = gate.clone();
            tokio::spawn(async move {
                let mut chunk = [0u8; 16384];
                while let Ok(n) = server_read.read(&mut chunk).await {
                    if n == 0 {
                        return;
                    }
                    replies.open().await;
                    if client_write.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    proxy_port
}

#[test]
fn commands_are_read_whole_and_in_order() {
    let mut buffer = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*3\r\n$4\r\nMGET\r\n$1\r\na\r\n$1".to_vec();
    assert_eq!(take_commands(&mut buffer), ["GET"]);
    buffer.extend_from_slice(b"\r\nb\r\n");
    assert_eq!(take_commands(&mut buffer), ["MGET"]);
    assert!(buffer.is_empty());
}

#[tokio::test]
async fn revocation_and_every_limit_cost_one_round_trip_together() {
    let redis = Redis::start().await;
    let upstream = Upstream::start().await;
    let gate = Arc::new(Gate::default());
    let port = gated_proxy(redis.port, gate.clone()).await;
    let (key, _) = SigningKey::generate_es256("k1").unwrap();
    let url = format!("redis://127.0.0.1:{port}");
    let dir = test_dir(&[("redis-url", &url), ("jwks.json", &jwks(&key))]);
    let config = config_with(
        &upstream.url(),
        &format!(
            "identity:\n  jwt:\n    - {{ name: t, issuer: {ISSUER}, audiences: [api], jwks_file: jwks.json, algorithms: [ES256] }}\n  revocation:\n    store: redis\n    redis: {{ url: \"${{file:redis-url}}\", timeout: 300ms }}\n{ALLOW_ALL}rate_limit:\n  store: redis\n  redis: {{ url: \"${{file:redis-url}}\", timeout: 300ms }}\n  on_store_error: deny\n  adaptive: {{ enabled: false }}\n  default: {{ limit: 1000, window: 60s, key: principal }}\nroutes:\n  - match: {{ prefix: /api/ }}\n    upstream: main\n    rate_limit: {{ limit: 500, window: 60s, key: principal }}\n"
        ),
    );
    std::fs::write(dir.path().join("portcullis.yaml"), config).unwrap();
    let gw = Gateway::start_in(dir).await;
    let token = token(&key, &baseline_claims());
    let call_with = |token: &str| {
        Request::get(gw.url("/api/x"))
            .header("authorization", format!("Bearer {token}"))
            .body(Full::default())
            .unwrap()
    };
    let call = || call_with(&token);
    // Connections made, script loaded.
    assert_eq!(send(call()).await.unwrap().0, 200);
    let hits = upstream.hits();

    // Replies held until two request commands arrived: the revocation lookup and the one
    // script for both limits, sent before either is answered.
    gate.arm(2);
    let (status, headers, _) = send(call()).await.unwrap();
    assert_eq!(status, 200, "{headers:?}");
    assert_eq!(upstream.hits(), hits + 1);
    assert_eq!(
        gate.seen.load(Ordering::SeqCst),
        2,
        "a request sends exactly the revocation lookup and one script"
    );
    assert_eq!(headers["ratelimit-policy"], "\"route\";q=500;w=60");

    // Revoked (through the admin API, into the same Redis): the lookup sent with the
    // limit script refuses the token, and the upstream is not reached.
    let revoke = Request::post(gw.admin_url("/admin/revocations"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(Full::new(bytes::Bytes::from(r#"{"sub":"alice"}"#)))
        .unwrap();
    assert_eq!(send(revoke).await.unwrap().0, 200);
    let (status, _, _) = send(call()).await.unwrap();
    assert_eq!(status, 401);
    assert_eq!(
        upstream.hits(),
        hits + 1,
        "a revoked token reached the upstream"
    );

    // The gate does hold: waiting for a third command that never comes, a request with a
    // token nobody revoked fails closed and never reaches the upstream.
    let mut claims = baseline_claims();
    claims.insert("sub".into(), serde_json::json!("bob"));
    let bob = crate::identity::token(&key, &claims);
    let (status, _, _) = send(call_with(&bob)).await.unwrap();
    assert_eq!(status, 200, "bob's token works while replies flow");
    let hits = upstream.hits();
    gate.arm(3);
    let (status, _, _) = send(call_with(&bob)).await.unwrap();
    assert_ne!(status, 200);
    assert_eq!(
        upstream.hits(),
        hits,
        "a refused request reached the upstream"
    );
}
