//! The data-plane listener: accepts connections (bounded by `max_connections`), terminates
//! TLS when configured (mTLS identities read once per connection), serves HTTP/1.1 and
//! HTTP/2 on one port with explicit abuse limits, and shuts down gracefully.

use crate::flood::H2_PREFACE;
use crate::gateway::Gateway;
use crate::tls::{self, Handshake};
use crate::upgrade::{ConnectionHold, ConnectionSlot};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use portcullis::authn::mtls::ClientIdentity;
use portcullis::body::Body;
use portcullis::framing::{FramingScanner, FramingViolation};
use portcullis::respond::Outcome;
use portcullis::scope::{LocalAddr, PeerAddr, Transport};
use portcullis::timeout::BodyProgress;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::rustls::ServerConfig;
use tower::ServiceExt;

/// Binds a listener, failing with a sentence that names the address.
pub async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for {what} on {addr}: {e}"))
}

/// Serves the data plane until `shutdown` changes, then drains in-flight requests for at
/// most `grace`.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let max_connections = gateway.current().config.server.max_connections;
    // Whether the port speaks TLS is fixed at start; its settings follow each reload.
    let started_tls = gateway.current().config.tls.clone();
    let reports = Arc::new(tls::FailureReports::default());
    let permits = Arc::new(Semaphore::new(max_connections));
    let graceful = GracefulShutdown::new();
    loop {
        // Backpressure: at the limit we stop accepting and clients wait in the backlog.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => {
                    // Out of file descriptors and similar: back off briefly, keep serving.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let gateway = gateway.clone();
        let watcher = graceful.watcher();
        let tls_config = started_tls.as_ref().map(|first| {
            gateway
                .current()
                .config
                .tls
                .clone()
                .unwrap_or_else(|| first.clone())
        });
        let reports = reports.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            // Held by the connection, and by a WebSocket relayed from it, which outlives it.
            let hold = ConnectionHold::new(
                ConnectionSlot::new(permit, gateway.metrics.connection_opened()),
                shutdown,
            );
            match tls_config {
                None => serve_plain(&gateway, stream, peer, watcher, hold).await,
                Some(config) => {
                    serve_tls(&gateway, config, stream, peer, &reports, watcher, hold).await;
                }
            }
        });
    }
    drop(listener);
    let deadline = tokio::time::Instant::now() + grace;
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep_until(deadline) => {
            eprintln!("portcullis: shutdown grace period over; closing remaining connections");
        }
    }
    // Relayed WebSockets saw the same signal and are sending their close frames (1001).
    let websockets = gateway.shared.websockets.clone();
    while websockets.open() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn serve_plain(
    gateway: &Arc<Gateway>,
    stream: TcpStream,
    peer: SocketAddr,
    watcher: hyper_util::server::graceful::Watcher,
    hold: ConnectionHold,
) {
    let limit = gateway.current().config.server.header_read_timeout;
    let Some(is_h2) = request_started(&stream, limit).await else {
        return;
    };
    let connection = Connection {
        peer,
        local: stream.local_addr().ok(),
        tls: false,
        identity: None,
        linger: None,
        scanner: None,
        hold,
    };
    serve_http(gateway, stream, is_h2, connection, watcher).await;
}

/// The TLS handshake, then HTTP. The handshake and the first bytes of the request share one
/// deadline, `header_read_timeout`: a slow or silent client is cut off either way.
async fn serve_tls(
    gateway: &Arc<Gateway>,
    config: Arc<ServerConfig>,
    stream: TcpStream,
    peer: SocketAddr,
    reports: &tls::FailureReports,
    watcher: hyper_util::server::graceful::Watcher,
    hold: ConnectionHold,
) {
    let limit = gateway.current().config.server.header_read_timeout;
    let deadline = tokio::time::Instant::now() + limit;
    let local = stream.local_addr().ok();
    let (stream, identity) = match tls::handshake(config, stream, deadline).await {
        Handshake::Done { stream, identity } => (stream, identity),
        Handshake::Failed { reason, detail } => {
            gateway.metrics.tls_handshake_failure(reason);
            reports.report(&gateway.events, peer.ip(), reason, &detail);
            return;
        }
    };
    let Some((stream, is_h2)) = tls::request_started(stream, deadline).await else {
        return;
    };
    let connection = Connection {
        peer,
        local,
        tls: true,
        identity: identity.map(Arc::new),
        linger: None,
        scanner: None,
        hold,
    };
    serve_http(gateway, stream, is_h2, connection, watcher).await;
}

/// What one connection proved, given to each of its requests.
#[derive(Clone)]
struct Connection {
    peer: SocketAddr,
    local: Option<SocketAddr>,
    tls: bool,
    identity: Option<Arc<ClientIdentity>>,
    /// HTTP/1: set when a request was answered before its body was complete, so that the
    /// close lingers (`None` for HTTP/2, which has flow control and RST_STREAM instead).
    linger: Option<Arc<AtomicBool>>,
    /// HTTP/1: the scanner of the connection's bytes, stopped once it switches protocols
    /// (what follows is WebSocket frames, not requests).
    scanner: Option<Arc<Mutex<FramingScanner>>>,
    /// The connection's place under `max_connections` and the shutdown signal, given to
    /// requests that ask for an upgrade.
    hold: ConnectionHold,
}

async fn serve_http<I>(
    gateway: &Arc<Gateway>,
    stream: I,
    is_h2: bool,
    mut connection: Connection,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let armed = Arc::new(AtomicBool::new(false));
    let scanner = Arc::new(Mutex::new(FramingScanner::default()));
    if !is_h2 {
        connection.linger = Some(armed.clone());
        connection.scanner = Some(scanner.clone());
    }
    let limits = gateway.current().config.server.clone();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // A hard backstop above the configured limits, which the pipeline enforces with a
        // proper problem answer.
        .max_headers(limits.max_header_count.saturating_mul(2).max(100))
        .max_buf_size(limits.max_header_bytes.saturating_mul(2).max(8192) + 16384);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2.max_concurrent_streams)
        .max_header_list_size(limits.http2.max_header_list_bytes)
        .max_pending_accept_reset_streams(limits.http2.max_pending_resets)
        .max_local_error_reset_streams(limits.http2.max_pending_resets)
        // RFC 8441: WebSockets over HTTP/2 (relayed to upstreams as HTTP/1.1 upgrades).
        .enable_connect_protocol()
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    let gateway = gateway.clone();
    let control_limit = is_h2.then_some(limits.http2.max_control_frames_per_second);
    let io = ScannedStream {
        inner: crate::flood::FloodGuard::new(stream, control_limit),
        scanner: (!is_h2).then(|| scanner.clone()),
        linger: (!is_h2).then(|| Linger {
            armed,
            limit: limits.lingering_close,
            remaining: limits.linger_max_bytes,
            state: LingerState::Open,
        }),
    };
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        // HTTP/1 requests arrive in order, so the scanner's verdicts pair up with them.
        if !is_h2
            && let Ok(mut scanner) = scanner.lock()
            && let Some(Some(reason)) = scanner.next_verdict()
        {
            req.extensions_mut().insert(FramingViolation(reason));
        }
        handle(gateway.clone(), connection.clone(), req)
    });
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let _ = watcher.watch(connection.into_owned()).await;
}

pin_project_lite::pin_project! {
    /// A client stream whose incoming HTTP/1 bytes are also fed to a [`FramingScanner`], and
    /// that closes HTTP/1 connections with a lingering close.
    struct ScannedStream<I> {
        #[pin]
        inner: I,
        scanner: Option<Arc<Mutex<FramingScanner>>>,
        linger: Option<Linger>,
    }
}

/// Lingering close (what nginx's `lingering_close` does): when the server closes an HTTP/1
/// connection, perhaps having answered before reading the whole request (413, 401 on an
/// upload...), it half-closes, then reads and discards what the client still sends, for a
/// bounded time and size, and only then closes. A client still sending then reads the
/// answer, instead of losing it to a connection reset. Nothing drained is kept.
struct Linger {
    /// Whether a request was answered before its body was complete; only then is there
    /// anything to drain (an idle client must not hold its connection for the delay).
    armed: Arc<AtomicBool>,
    limit: Duration,
    remaining: u64,
    state: LingerState,
}

enum LingerState {
    Open,
    Draining(Pin<Box<tokio::time::Sleep>>),
    Done,
}

impl Linger {
    /// Discards incoming bytes until the client closes, the budget is spent or time is up.
    fn poll_drain<I: AsyncRead>(
        &mut self,
        mut inner: Pin<&mut I>,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        let LingerState::Draining(deadline) = &mut self.state else {
            return Poll::Ready(());
        };
        let mut scratch = [0u8; 8192];
        loop {
            if self.remaining == 0 || deadline.as_mut().poll(cx).is_ready() {
                break;
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match inner.as_mut().poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    let n = u64::try_from(buf.filled().len()).unwrap_or(u64::MAX);
                    self.remaining = self.remaining.saturating_sub(n);
                }
                Poll::Ready(_) => break,
                Poll::Pending => return Poll::Pending,
            }
        }
        self.state = LingerState::Done;
        Poll::Ready(())
    }
}

impl<I: AsyncRead> AsyncRead for ScannedStream<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let result = this.inner.poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(scanner)) = (&result, this.scanner.as_ref())
            && let Ok(mut scanner) = scanner.lock()
        {
            scanner.feed(buf.filled().get(before..).unwrap_or_default());
        }
        result
    }
}

impl<I: AsyncRead + AsyncWrite> AsyncWrite for ScannedStream<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let Some(linger) = this
            .linger
            .as_mut()
            .filter(|l| l.armed.load(Ordering::Acquire))
        else {
            return this.inner.poll_shutdown(cx);
        };
        let mut inner = this.inner;
        if let LingerState::Open = linger.state {
            // Send our FIN first: the answer is complete, the client can read it all.
            if let Err(e) = std::task::ready!(inner.as_mut().poll_shutdown(cx)) {
                linger.state = LingerState::Done;
                return Poll::Ready(Err(e));
            }
            linger.state = LingerState::Draining(Box::pin(tokio::time::sleep(linger.limit)));
        }
        std::task::ready!(linger.poll_drain(inner, cx));
        Poll::Ready(Ok(()))
    }
}

/// Waits until the client has sent enough to tell HTTP/1 from HTTP/2, for at most
/// `limit`. Returns whether it is HTTP/2, or `None` if the client was too slow or left.
async fn request_started(stream: &TcpStream, limit: Duration) -> Option<bool> {
    let wait = async {
        let mut buf = [0u8; 24];
        loop {
            let n = stream.peek(&mut buf).await.unwrap_or(0);
            let seen = buf.get(..n).unwrap_or_default();
            if n == 0 {
                return None;
            }
            if !H2_PREFACE.starts_with(seen) {
                return Some(false);
            }
            if n >= H2_PREFACE.len() {
                return Some(true);
            }
            // Part of the preface: peek returns at once while data waits, so pause
            // before looking again.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(limit, wait).await.ok().flatten()
}

async fn handle(
    gateway: Arc<Gateway>,
    connection: Connection,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    // The request keeps this generation to the end, whatever reloads happen meanwhile.
    let generation = gateway.current();
    let https = connection.tls
        || (generation
            .config
            .normalize
            .trusted_proxies
            .trusts(connection.peer.ip())
            && proxy_says_https(req.headers()));
    let extensions = req.extensions_mut();
    extensions.insert(PeerAddr(connection.peer));
    if let Some(local) = connection.local {
        extensions.insert(LocalAddr(local));
    }
    extensions.insert(Transport {
        tls: connection.tls,
        https,
    });
    if let Some(identity) = connection.identity {
        extensions.insert(identity);
    }
    // HTTP/1.1 asks with `Upgrade`, HTTP/2 with an extended CONNECT's `:protocol`.
    if req.headers().contains_key(http::header::UPGRADE)
        || req.extensions().get::<hyper::ext::Protocol>().is_some()
    {
        req.extensions_mut().insert(connection.hold.clone());
    }
    let extensions = req.extensions_mut();
    // HTTP/1: watch whether the answer leaves before the body has all arrived.
    let watch_body = connection.linger.map(|armed| {
        let progress = BodyProgress::default();
        extensions.insert(progress.clone());
        (armed, progress)
    });
    let has_body = req.headers().contains_key(http::header::TRANSFER_ENCODING)
        || req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    let traced = gateway.tracer().map(|tracer| {
        let trusted = generation
            .config
            .normalize
            .trusted_proxies
            .trusts(connection.peer.ip());
        let trace = tracer.begin(&mut req, trusted);
        // What the spans name, copied only for a request they record.
        let named = trace
            .sampled()
            .then(|| (req.method().clone(), req.uri().path().to_string()));
        (tracer, trace, named)
    });
    let response = generation.pipeline.clone().oneshot(req).await?;
    if let Some((tracer, trace, Some((method, path)))) = traced {
        tracer.end(
            trace,
            &crate::traces::RequestFacts {
                method: &method,
                path: &path,
                status: response.status().as_u16(),
                outcome: response.extensions().get::<Outcome>(),
            },
        );
    }
    if let Some((armed, progress)) = watch_body
        && has_body
        && !progress.is_complete()
    {
        armed.store(true, Ordering::Release);
    }
    if response.status() == http::StatusCode::SWITCHING_PROTOCOLS
        && let Some(scanner) = &connection.scanner
        && let Ok(mut scanner) = scanner.lock()
    {
        scanner.stop();
    }
    let outcome = response.extensions().get::<Outcome>();
    gateway.metrics.request(
        outcome.and_then(|o| o.route.as_ref()),
        response.status().as_u16(),
        outcome.and_then(|o| o.denial_reason),
        outcome.and_then(|o| o.denied_action.as_deref()),
        outcome.is_some_and(|o| o.auth_failure),
        started.elapsed(),
    );
    Ok(response)
}

/// Whether a (trusted) proxy in front says its client used https: `X-Forwarded-Proto:
/// https`, or `proto=https` in the last `Forwarded` element.
fn proxy_says_https(headers: &http::HeaderMap) -> bool {
    let forwarded_proto = headers
        .get_all("x-forwarded-proto")
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .map(|v| v.trim().eq_ignore_ascii_case("https"));
    let forwarded = headers
        .get_all(http::header::FORWARDED)
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .map(|element| {
            element.split(';').any(|pair| {
                pair.trim().split_once('=').is_some_and(|(k, v)| {
                    k.trim().eq_ignore_ascii_case("proto")
                        && v.trim().trim_matches('"').eq_ignore_ascii_case("https")
                })
            })
        });
    forwarded_proto.or(forwarded).unwrap_or(false)
}
