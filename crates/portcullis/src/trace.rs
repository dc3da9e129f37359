//! Per-stage timing for traces: [`StageLayer`] wraps one security stage and, for a request
//! that carries [`TraceMarks`] (a sampled request), records when the stage began, when its
//! answer came back, and how it ended (`ok` or the refusal's reason).
//!
//! Whoever exports traces (the gateway, over OTLP) inserts the marks before the pipeline and
//! reads them after the answer. A request without marks (not sampled) is only forwarded; with
//! traces off, the gateway builds its pipeline without these layers at all.

use crate::Denial;
use crate::body::Body;
use http::{Request, Response};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;
use tower::{Layer, Service};

/// A security stage, as a trace names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Canonicalisation, CORS, routing and operation matching.
    Edge,
    /// The pre-authentication screen (threat score, lockout).
    Screen,
    /// Token and certificate checks.
    Authenticate,
    /// Rate limits.
    RateLimit,
    /// The policy decision.
    Authorize,
    /// Contract validation of the request (and of the response on its way back).
    Validate,
    /// The upstream exchange, up to the response head.
    Upstream,
}

impl Stage {
    /// The span name.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Edge => "edge",
            Stage::Screen => "screen",
            Stage::Authenticate => "authenticate",
            Stage::RateLimit => "rate_limit",
            Stage::Authorize => "authorize",
            Stage::Validate => "validate",
            Stage::Upstream => "upstream",
        }
    }
}

/// What one stage did for one request.
#[derive(Debug, Clone)]
pub struct StageRecord {
    /// The stage.
    pub stage: Stage,
    /// When the request reached it.
    pub start: Instant,
    /// When its answer came back (none if the request was dropped on the way).
    pub end: Option<Instant>,
    /// `ok`, or the reason of the refusal it passed back (its own or a later stage's).
    pub outcome: Option<&'static str>,
    /// The `RateLimit-Policy` of an allowed answer (the limit's bucket), for the rate-limit
    /// stage.
    pub bucket: Option<String>,
}

/// Stage records of one sampled request (at most one per stage).
#[derive(Debug, Default)]
pub struct TraceMarks {
    records: Mutex<Vec<StageRecord>>,
}

impl TraceMarks {
    /// The records so far, in the order the stages were reached.
    pub fn records(&self) -> Vec<StageRecord> {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn begin(&self, stage: Stage) -> usize {
        let mut records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        records.push(StageRecord {
            stage,
            start: Instant::now(),
            end: None,
            outcome: None,
            bucket: None,
        });
        records.len() - 1
    }

    fn finish(&self, index: usize, outcome: &'static str, bucket: Option<String>) {
        let mut records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(record) = records.get_mut(index) {
            record.end = Some(Instant::now());
            record.outcome = Some(outcome);
            record.bucket = bucket;
        }
    }
}

/// Builds [`Staged`] services for one stage.
#[derive(Debug, Clone, Copy)]
pub struct StageLayer {
    stage: Stage,
}

impl StageLayer {
    /// A layer timing `stage` for requests that carry [`TraceMarks`].
    pub fn new(stage: Stage) -> Self {
        StageLayer { stage }
    }
}

impl<S> Layer<S> for StageLayer {
    type Service = Staged<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Staged {
            inner,
            stage: self.stage,
        }
    }
}

/// The service produced by [`StageLayer`].
#[derive(Debug, Clone)]
pub struct Staged<S> {
    inner: S,
    stage: Stage,
}

impl<S, B> Service<Request<B>> for Staged<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Denial>,
{
    type Response = Response<Body>;
    type Error = Denial;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let marks = req.extensions().get::<Arc<TraceMarks>>().cloned();
        let watch = marks.map(|marks| {
            let index = marks.begin(self.stage);
            (marks, index)
        });
        ResponseFuture {
            inner: self.inner.call(req),
            watch,
            stage: self.stage,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Staged`]: the inner answer, its arrival recorded when traced.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        watch: Option<(Arc<TraceMarks>, usize)>,
        stage: Stage,
    }
}

impl<F> std::future::Future for ResponseFuture<F>
where
    F: std::future::Future<Output = Result<Response<Body>, Denial>>,
{
    type Output = Result<Response<Body>, Denial>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.inner.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(result) => result,
        };
        if let Some((marks, index)) = this.watch.take() {
            match &result {
                Ok(response) => {
                    let bucket = (*this.stage == Stage::RateLimit)
                        .then(|| response.headers().get("ratelimit-policy"))
                        .flatten()
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    marks.finish(index, "ok", bucket);
                }
                Err(denial) => marks.finish(index, denial.reason(), None),
            }
        }
        Poll::Ready(result)
    }
}
