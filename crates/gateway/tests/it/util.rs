//! Test support: the real `portcullis` binary on port 0, a counting upstream, clients.

#![allow(dead_code)]

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long anything in a test may take before it counts as hung.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// Polls `check` until it returns `Some`, or fails the test at the deadline.
pub async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls an async `check` until it returns true, or fails the test at the deadline.
pub async fn eventually_async<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One request as the upstream saw it, recorded only once its body was read completely.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A real HTTP/1.1 upstream on an ephemeral port that records every complete request.
///
/// Paths: `/slow?ms=N` answers after N ms; `/hop` answers with hop-by-hop headers;
/// `/fail?status=N` answers N with a stack trace, a secret and debug headers;
/// `/big?bytes=N` streams N bytes; anything else answers 200 with a small JSON body.
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    started: Arc<AtomicUsize>,
    _task: TaskGuard,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let started: Arc<AtomicUsize> = Arc::default();
        let (seen2, started2) = (seen.clone(), started.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let seen = seen2.clone();
                let started = started2.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let seen = seen.clone();
                        started.fetch_add(1, Ordering::SeqCst);
                        async move { Ok::<_, std::convert::Infallible>(answer(req, seen).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            seen,
            started,
            _task: TaskGuard(task),
        }
    }

    /// Complete requests received.
    pub fn hits(&self) -> usize {
        self.seen.lock().expect("seen").len()
    }

    /// Requests whose head arrived, complete or not.
    pub fn heads(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }

    /// Every complete request, in order.
    pub fn all(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .expect("seen")
            .last()
            .cloned()
            .expect("upstream saw no request")
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn answer(req: Request<Incoming>, seen: Arc<Mutex<Vec<Seen>>>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        // The body was cut short: the request never completed, so it is not recorded.
        return Response::builder()
            .status(400)
            .body(Full::default())
            .expect("response");
    };
    let query = parts.uri.query().unwrap_or("").to_string();
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    seen.lock().expect("seen").push(Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        version: parts.version,
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    let mut response = Response::builder()
        .header("content-type", "application/json")
        .header("server", "test-upstream/1.0")
        .header("x-powered-by", "tests");
    match parts.uri.path() {
        "/slow" => tokio::time::sleep(Duration::from_millis(param("ms"))).await,
        "/hop" => {
            response = response
                .header("connection", "x-upstream-private")
                .header("x-upstream-private", "secret")
                .header("keep-alive", "timeout=5")
                .header("x-upstream-public", "ok");
        }
        "/fail" => {
            // A leaky upstream error: a stack trace, a secret and debug headers.
            return response
                .status(u16::try_from(param("status")).unwrap_or(500))
                .header("x-debug-trace", "db=10.0.0.5")
                .header("retry-after", "7")
                .body(Full::new(Bytes::from_static(
                    b"Traceback (most recent call last): File app.py line 3 SECRET=hunter2",
                )))
                .expect("response");
        }
        "/big" => {
            let bytes = vec![b'x'; param("bytes") as usize];
            return response
                .body(Full::new(Bytes::from(bytes)))
                .expect("response");
        }
        _ => {}
    }
    let reply = serde_json::json!({ "path": parts.uri.path(), "body_bytes": body.len() });
    response
        .body(Full::new(Bytes::from(reply.to_string())))
        .expect("response")
}

/// The test peers' directory, once it holds playwright-core and Chromium is installed (the
/// browser tests run their scripts from it).
pub fn browser_peers() -> &'static str {
    let peers = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/peers");
    assert!(
        std::path::Path::new(peers)
            .join("node_modules/playwright-core")
            .exists()
            && std::path::Path::new("/usr/bin/chromium").exists(),
        "the browser peers are not installed: run scripts/install-deps.sh (scripts/test.sh does)"
    );
    peers
}

/// A small HTTP/1.1 server on an ephemeral loopback port that answers every request with
/// `answer` (for peers that must misbehave, or only serve a page). It stops when the
/// returned guard is dropped, so keep the guard for as long as the test needs the server.
pub async fn tiny_server<F>(answer: F) -> (SocketAddr, TaskGuard)
where
    F: Fn(Request<Incoming>) -> Response<Full<Bytes>> + Clone + Send + Sync + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let response = answer(req);
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, TaskGuard(task))
}

/// Aborts its task when dropped.
pub struct TaskGuard(pub tokio::task::JoinHandle<()>);

/// A peer process of a test (the gateway, Redis, OPA, the IdP): killed and reaped when
/// dropped, so no test leaves one behind.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Process {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Process {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The real gateway binary, running a test configuration; killed on drop.
pub struct Gateway {
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
    child: Process,
    stderr: Arc<Mutex<String>>,
}

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A configuration with one catch-all public route to `upstream`, events to a file and
/// an admin listener; `extra` is appended (YAML) and `{upstream}` replaced.
pub fn config_with(upstream: &str, extra: &str) -> String {
    format!(
        "listen:\n  address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\n  token: ${{file:admin-token}}\n\
monitoring:\n  events: {{ sink: file, path: events.log }}\nupstreams:\n  main: {{ url: \"{upstream}\", timeout: 5s }}\n{extra}"
    )
}

/// `config` (from [`config_with`]) with `lines` (YAML, indented two spaces) added under
/// `listen:`, such as `"  trusted_proxies: [127.0.0.1/32]\n"`.
pub fn with_listen(config: &str, lines: &str) -> String {
    config.replacen(
        "listen:\n  address: 127.0.0.1:0\n",
        &format!("listen:\n  address: 127.0.0.1:0\n{lines}"),
        1,
    )
}

/// A policy that allows every authenticated request (tests of other layers need one,
/// because protected routes always ask a policy). `Gateway::start*` writes `allow.rego`.
pub const ALLOW_ALL: &str =
    "policy:\n  engine: rego\n  rego:\n    files: [allow.rego]\n    query: data.test.allow\n";

pub const CATCH_ALL: &str =
    "routes:\n  - match: { prefix: / }\n    upstream: main\n    auth: none\n";

impl Gateway {
    /// Starts the binary with this configuration text and waits until it is ready.
    pub async fn start(config: &str) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("admin-token"), ADMIN_TOKEN).expect("token");
        std::fs::write(dir.path().join("portcullis.yaml"), config).expect("config");
        Gateway::start_in(dir).await
    }

    pub async fn start_in(dir: tempfile::TempDir) -> Gateway {
        let gateway = Gateway::start_unready(dir).await;
        if gateway.admin.is_some() {
            let url = gateway.admin_url("/readyz");
            eventually_async("the gateway to become ready", || async {
                matches!(get(&url).await, Ok((StatusCode::OK, _, _)))
            })
            .await;
        }
        gateway
    }

    /// Starts the binary and waits until it listens, but not until it is ready.
    pub async fn start_unready(dir: tempfile::TempDir) -> Gateway {
        let allow = dir.path().join("allow.rego");
        if !allow.exists() {
            std::fs::write(&allow, "package test\n\nallow := true\n").expect("allow.rego");
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["run", "--config"])
            .arg(dir.path().join("portcullis.yaml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn portcullis");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("stderr");
        let collected = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut all = collected.lock().expect("stderr");
                all.push_str(&line);
                all.push('\n');
            }
        });
        let mut gateway = Gateway {
            addr: "0.0.0.0:0".parse().expect("addr"),
            admin: None,
            dir,
            child: Process(child),
            stderr,
        };
        let has_admin = std::fs::read_to_string(gateway.dir.path().join("portcullis.yaml"))
            .map(|c| c.contains("\nadmin:"))
            .unwrap_or(false);
        let (addr, admin) = eventually("the gateway to listen", || {
            if let Ok(Some(status)) = gateway.child.try_wait() {
                panic!("portcullis exited with {status}: {}", gateway.stderr());
            }
            let text = gateway.stderr();
            let find = |prefix: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(prefix))
                    .and_then(|a| a.trim().parse::<SocketAddr>().ok())
            };
            let addr = find("portcullis: listening on http://")
                .or_else(|| find("portcullis: listening on https://"))?;
            let admin = find("portcullis: admin on http://");
            if has_admin && admin.is_none() {
                return None;
            }
            Some((addr, admin))
        })
        .await;
        gateway.addr = addr;
        gateway.admin = admin;
        gateway
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin.expect("admin listener"))
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr").clone()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("portcullis.yaml")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Security events written so far (the file sink), parsed.
    pub fn events(&self) -> Vec<serde_json::Value> {
        read_events(&self.dir.path().join("events.log"))
    }

    /// Waits until an event matches `pred`, then returns it.
    pub async fn event_where(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        eventually(what, || self.events().into_iter().find(|e| pred(e))).await
    }

    /// Sends a signal to the gateway process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .status();
        assert!(
            status.map(|s| s.success()).unwrap_or(false),
            "kill -s {signal} failed"
        );
    }

    /// Waits for the process to exit and returns whether it exited successfully.
    pub async fn wait_exit(&mut self) -> bool {
        let child = &mut self.child;
        eventually("the gateway to exit", || child.try_wait().ok().flatten())
            .await
            .success()
    }
}

pub fn read_events(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A fresh directory holding the admin token and `files` (`(name, content)`), ready for
/// `Gateway::start_in` once `portcullis.yaml` is written into it.
pub fn test_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("admin-token"), ADMIN_TOKEN).expect("admin token");
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).expect("test file");
    }
    dir
}

pub type Answer = (StatusCode, HeaderMap, String);

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// Sends a request through a pooled HTTP/1.1 client.
pub async fn send(req: Request<Full<Bytes>>) -> Result<Answer, String> {
    let response = tokio::time::timeout(DEADLINE, client().request(req))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

pub async fn get(url: &str) -> Result<Answer, String> {
    send(
        Request::get(url)
            .body(Full::default())
            .map_err(|e| e.to_string())?,
    )
    .await
}

/// Writes raw bytes on a fresh connection and reads until the server closes it (or the
/// deadline). Returns everything the server sent.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of the first response in raw HTTP/1 text.
pub fn raw_status(text: &str) -> u16 {
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Parses the JSON body of a problem answer.
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A real `redis-server` on an ephemeral loopback port, for this test only.
pub struct Redis {
    pub port: u16,
    child: Process,
}

impl Redis {
    pub async fn start() -> Redis {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe port");
            probe.local_addr().expect("addr").port()
        };
        Redis::start_on(port).await
    }

    /// A Redis Cluster node (its cluster state file in `dir`), not yet joined.
    pub async fn start_cluster_node(dir: &Path) -> Redis {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe port");
            probe.local_addr().expect("addr").port()
        };
        let state = format!("nodes-{port}.conf");
        let dir = dir.to_string_lossy().into_owned();
        Redis::spawn(
            port,
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &state,
                "--dir",
                &dir,
            ],
        )
        .await
    }

    /// A server on a given port (to bring one back where another was stopped).
    pub async fn start_on(port: u16) -> Redis {
        Redis::spawn(port, &[]).await
    }

    async fn spawn(port: u16, extra: &[&str]) -> Redis {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            // Tests stall the server with DEBUG SLEEP to play a slow store.
            .args(["--enable-debug-command", "local"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/install-deps.sh installs it)");
        eventually_async("redis-server to listen", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        Redis {
            port,
            child: Process(child),
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Stops the server now.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three masters, started and joined by the test (`redis-cli --cluster create`).
pub struct Cluster {
    pub nodes: Vec<Redis>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub async fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(Redis::start_cluster_node(dir.path()).await);
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let status = std::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("redis-cli");
        assert!(status.success(), "cluster create failed");
        for node in &nodes {
            let port = node.port.to_string();
            eventually("the cluster to be ready", || {
                let out = std::process::Command::new("redis-cli")
                    .args(["-p", &port, "cluster", "info"])
                    .output()
                    .ok()?;
                String::from_utf8_lossy(&out.stdout)
                    .contains("cluster_state:ok")
                    .then_some(())
            })
            .await;
        }
        Cluster { nodes, _dir: dir }
    }

    pub fn redis_cli(&self, node: usize, args: &[&str]) -> String {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &self.nodes[node].port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The node URLs, comma-separated (as `cluster: true` takes them).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.url())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// `portcullis demo` on ephemeral ports, its banner read; killed on drop.
pub struct Demo {
    pub banner: Vec<String>,
    child: Process,
}

impl Demo {
    pub async fn start() -> Demo {
        Demo::start_with(&[]).await
    }

    /// The demo with extra arguments (such as `--tls`).
    pub async fn start_with(args: &[&str]) -> Demo {
        use std::io::{BufRead, BufReader};
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut lines = Vec::new();
        let banner = eventually("the demo banner", || {
            while let Ok(line) = rx.try_recv() {
                lines.push(line);
            }
            lines
                .iter()
                .any(|l| l.contains("Ctrl-C"))
                .then(|| lines.clone())
        })
        .await;
        Demo {
            banner,
            child: Process(child),
        }
    }

    /// The first word after `name` at the start of a banner line (`gateway`, `upstream`...).
    pub fn field(&self, name: &str) -> String {
        self.banner
            .iter()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(|rest| rest.split_whitespace().next().unwrap().to_string())
            .unwrap_or_else(|| panic!("no {name} in banner: {:?}", self.banner))
    }

    /// The admin token the banner prints (`(admin token: ...)`).
    pub fn admin_token(&self) -> String {
        self.banner
            .iter()
            .find_map(|l| l.split_once("(admin token: "))
            .and_then(|(_, rest)| rest.split(')').next())
            .unwrap_or_else(|| panic!("no admin token in banner: {:?}", self.banner))
            .to_string()
    }

    /// The command of the first banner line containing every one of `needles`, without its
    /// trailing `   # comment`.
    pub fn command(&self, needles: &[&str]) -> String {
        self.banner
            .iter()
            .find(|l| needles.iter().all(|n| l.contains(n)))
            .unwrap_or_else(|| panic!("no {needles:?} command in the banner"))
            .trim()
            .split("   # ")
            .next()
            .unwrap()
            .to_string()
    }

    /// Runs a banner command in bash with the token `NAME` from the banner in its environment;
    /// returns the exit code and what it printed.
    pub async fn run(&self, command: String, name: &str) -> (Option<i32>, String) {
        let token = self.token(name);
        let name = name.to_string();
        tokio::task::spawn_blocking(move || {
            let out = Command::new("bash")
                .args(["-c", &command])
                .env(name, token)
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        })
        .await
        .unwrap()
    }

    /// A token the banner prints as `NAME=...`.
    pub fn token(&self, name: &str) -> String {
        self.banner
            .iter()
            .find_map(|l| l.trim().strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} token in banner: {:?}", self.banner))
            .to_string()
    }
}
