//! Detectors that watch answers and feed the threat score.
//!
//! - Exfiltration: a per-endpoint baseline of response size (an exponentially weighted
//!   mean); a response many times above it raises an `anomaly` event (`exfiltration`).
//! - Error spikes: error answers per endpoint and per client in a window, against the key's
//!   usual count; a spike raises an `anomaly` event (`error_spike`).
//!
//! A flagged client is marked in the threat tracker, so its next requests score higher and
//! the adaptive limiter slows it down.
//!
//! [`DetectLayer`] sits just inside the respond layer. It never delays an answer: the body
//! is counted as it streams and judged when it ends.

use crate::BoxError;
use crate::body::Body;
use crate::event::{EventBus, EventType, Severity, request_event};
use crate::scope::RequestScope;
use crate::threat::ClientTracker;
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{Layer, Service};

/// Endpoints with a baseline at most (endpoints are configured templates, so this bounds
/// only a misconfiguration).
const MAX_ENDPOINTS: usize = 10_000;
/// Responses an endpoint's baseline needs before it judges.
const WARM_UP: u32 = 20;
/// Weight of a new response in the baseline.
const ALPHA: f64 = 0.1;
/// How long a flag raises the client's threat score.
pub const FLAG_FOR: Duration = Duration::from_secs(600);

/// When a response is large enough to flag.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExfiltrationSettings {
    /// This many times the endpoint's usual size ...
    pub factor: f64,
    /// ... and at least this many bytes.
    pub min_bytes: u64,
}

impl Default for ExfiltrationSettings {
    fn default() -> Self {
        ExfiltrationSettings {
            factor: 10.0,
            min_bytes: 65_536,
        }
    }
}

/// When errors come in a spike: an endpoint's or a client's error answers (4xx/5xx, the
/// gateway's refusals included) in a window, against the same key's usual count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErrorSpikeSettings {
    /// This many times the key's usual count per window ...
    pub factor: f64,
    /// ... and at least this many in the window.
    pub min_count: u32,
    /// The window.
    pub window: Duration,
}

impl Default for ErrorSpikeSettings {
    fn default() -> Self {
        ErrorSpikeSettings {
            factor: 5.0,
            min_count: 20,
            window: Duration::from_secs(60),
        }
    }
}

/// Error counts of one endpoint or client.
#[derive(Debug, Clone, Copy)]
struct ErrorWindow {
    started: std::time::Instant,
    count: u32,
    /// The usual count per window (exponentially weighted over past windows).
    usual: f64,
    flagged: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct Baseline {
    mean: f64,
    samples: u32,
}

/// The detectors' shared state.
#[derive(Debug)]
pub struct Detectors {
    exfiltration: Option<ExfiltrationSettings>,
    baselines: Mutex<HashMap<Arc<str>, Baseline>>,
    error_spike: Option<ErrorSpikeSettings>,
    errors: Mutex<HashMap<String, ErrorWindow>>,
    tracker: Arc<ClientTracker>,
    events: Arc<EventBus>,
}

impl Detectors {
    /// The detectors that have settings, flagging clients in `tracker`.
    pub fn new(
        exfiltration: Option<ExfiltrationSettings>,
        error_spike: Option<ErrorSpikeSettings>,
        tracker: Arc<ClientTracker>,
        events: Arc<EventBus>,
    ) -> Arc<Detectors> {
        Arc::new(Detectors {
            exfiltration,
            baselines: Mutex::new(HashMap::new()),
            error_spike,
            errors: Mutex::new(HashMap::new()),
            tracker,
            events,
        })
    }

    /// Counts one answer's status against its endpoint's and its client's usual error rate.
    fn status(&self, scope: &RequestScope, status: u16) {
        let Some(settings) = self.error_spike else {
            return;
        };
        if status < 400 {
            return;
        }
        let now = std::time::Instant::now();
        let endpoint = scope.endpoint().map(|e| format!("endpoint {e}"));
        let client = scope.client_ip().map(|ip| format!("client {ip}"));
        for key in [endpoint, client].into_iter().flatten() {
            let spike = {
                let mut map = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
                if map.len() >= MAX_ENDPOINTS && !map.contains_key(&key) {
                    // Forget keys idle for a whole window before refusing new ones.
                    map.retain(|_, w| now.saturating_duration_since(w.started) < settings.window);
                    if map.len() >= MAX_ENDPOINTS {
                        continue;
                    }
                }
                let w = map.entry(key.clone()).or_insert(ErrorWindow {
                    started: now,
                    count: 0,
                    usual: 0.0,
                    flagged: false,
                });
                if now.saturating_duration_since(w.started) >= settings.window {
                    w.usual += 0.3 * (f64::from(w.count) - w.usual);
                    w.count = 0;
                    w.started = now;
                    w.flagged = false;
                }
                w.count = w.count.saturating_add(1);
                let over = w.count >= settings.min_count
                    && f64::from(w.count) > settings.factor * w.usual.max(1.0);
                let spike = over && !w.flagged;
                if spike {
                    w.flagged = true;
                }
                spike.then_some((w.count, w.usual))
            };
            let Some((count, usual)) = spike else {
                continue;
            };
            let is_client = key.starts_with("client ");
            if is_client && let Some(ip) = scope.client_ip() {
                self.tracker.flag(ip, FLAG_FOR);
            }
            let mut event = request_event(EventType::Anomaly, Severity::High, "error_spike", scope);
            event.details = serde_json::json!({
                "detail": "error answers far above the usual rate",
                "scope": if is_client { "client" } else { "endpoint" },
                "count": count,
                "usual": usual.round(),
                "window_secs": settings.window.as_secs(),
            });
            self.events.emit(event);
        }
    }

    /// Judges one complete response of `bytes` on the scope's endpoint.
    fn response(&self, scope: &RequestScope, bytes: u64) {
        let Some(exfiltration) = self.exfiltration else {
            return;
        };
        let Some(endpoint) = scope.endpoint().cloned() else {
            return;
        };
        let size = bytes as f64;
        let baseline = {
            let mut map = self
                .baselines
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if map.len() >= MAX_ENDPOINTS && !map.contains_key(&endpoint) {
                return;
            }
            let entry = map.entry(endpoint).or_default();
            let before = *entry;
            let flagged = before.samples >= WARM_UP
                && bytes >= exfiltration.min_bytes
                && size > before.mean * exfiltration.factor;
            if flagged {
                // A flagged answer is not learned from: one leak must not make the next usual.
                Some(before.mean)
            } else {
                entry.mean = if before.samples == 0 {
                    size
                } else {
                    before.mean + ALPHA * (size - before.mean)
                };
                entry.samples = before.samples.saturating_add(1);
                None
            }
        };
        let Some(mean) = baseline else {
            return;
        };
        if let Some(ip) = scope.client_ip() {
            self.tracker.flag(ip, FLAG_FOR);
        }
        let mut event = request_event(EventType::Anomaly, Severity::High, "exfiltration", scope);
        event.details = serde_json::json!({
            "detail": "a response far larger than the endpoint's usual",
            "bytes": bytes,
            "baseline_bytes": mean.round(),
            "factor": exfiltration.factor,
        });
        self.events.emit(event);
    }
}

/// Counts every response body on its way out (see the module docs).
#[derive(Debug, Clone)]
pub struct DetectLayer {
    detectors: Option<Arc<Detectors>>,
}

impl DetectLayer {
    /// A layer feeding `detectors` (none: it passes everything through untouched).
    pub fn new(detectors: Option<Arc<Detectors>>) -> Self {
        DetectLayer { detectors }
    }
}

impl<S> Layer<S> for DetectLayer {
    type Service = Detect<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Detect {
            inner,
            detectors: self.detectors.clone(),
        }
    }
}

/// The service produced by [`DetectLayer`].
#[derive(Debug, Clone)]
pub struct Detect<S> {
    inner: S,
    detectors: Option<Arc<Detectors>>,
}

impl<S, B> Service<Request<B>> for Detect<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = crate::Denial>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // Disabled detectors cost nothing per request, not even the extension lookup.
        let watch = self.detectors.as_ref().and_then(|detectors| {
            let scope = req.extensions().get::<Arc<RequestScope>>()?;
            Some((detectors.clone(), scope.clone()))
        });
        ResponseFuture {
            inner: self.inner.call(req),
            watch,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Detect`]: the inner answer, its body counted when watched. It never
    /// refuses, so it is not the refusing layers' ready-or-inner future.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        watch: Option<(Arc<Detectors>, Arc<RequestScope>)>,
    }
}

impl<F> std::future::Future for ResponseFuture<F>
where
    F: std::future::Future<Output = Result<Response<Body>, crate::Denial>>,
{
    type Output = Result<Response<Body>, crate::Denial>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.inner.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(result) => result,
        };
        let Some((detectors, scope)) = this.watch.take() else {
            return Poll::Ready(result);
        };
        let response = match result {
            Ok(response) => response,
            Err(denial) => {
                detectors.status(&scope, denial.status().as_u16());
                return Poll::Ready(Err(denial));
            }
        };
        detectors.status(&scope, response.status().as_u16());
        if detectors.exfiltration.is_none() {
            return Poll::Ready(Ok(response));
        }
        Poll::Ready(Ok(response.map(|body| {
            crate::body::boxed(Counted {
                inner: body,
                bytes: 0,
                judge: Some((detectors, scope)),
            })
        })))
    }
}

pin_project_lite::pin_project! {
    /// A body that counts its bytes and has them judged once it ends.
    struct Counted {
        #[pin]
        inner: Body,
        bytes: u64,
        judge: Option<(Arc<Detectors>, Arc<RequestScope>)>,
    }
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        let frame = this.inner.as_mut().poll_frame(cx);
        let ended = match &frame {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes = this.bytes.saturating_add(data.len() as u64);
                }
                // hyper stops polling once a body says it has ended, so this is the last
                // look for a body of known length.
                this.inner.is_end_stream()
            }
            Poll::Ready(None) => true,
            _ => false,
        };
        if ended && let Some((detectors, scope)) = this.judge.take() {
            detectors.response(&scope, *this.bytes);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
