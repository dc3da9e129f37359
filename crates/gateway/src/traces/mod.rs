//! OpenTelemetry traces (`monitoring.traces`): one server span per sampled request, a child
//! span per security stage (from the library's [`TraceMarks`]), exported over OTLP/HTTP
//! protobuf through the gateway's outbound client.
//!
//! Trace context is decided here, before the pipeline sees the request:
//! - an incoming `traceparent` is believed only from a trusted proxy, or from anyone with
//!   `trust_incoming: true`; the trace then continues it and keeps its sampled flag;
//! - otherwise a new trace starts (sampled by `sample_ratio`, decided on the trace id), and
//!   a well-formed incoming context is kept as a span link;
//! - the trace id becomes the request's correlation id (`x-request-id`, events), and the
//!   upstream gets a `traceparent` naming the gateway's upstream span, with the sampled flag.
//!
//! Spans go into a bounded queue that a background task exports in batches: a slow or absent
//! collector costs dropped spans (counted), never a slower request.

mod context;

use crate::config::TraceSettings;
use bytes::Bytes;
use context::{parse_traceparent, sampled, write_hex};
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use opentelemetry::trace::{
    Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
use portcullis::respond::Outcome;
use portcullis::trace::{Stage, StageRecord, TraceMarks};
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

/// Spans waiting for export at most; past it new spans are dropped (and counted).
const QUEUE: usize = 8_192;
/// Spans per export call at most.
const BATCH: usize = 512;
/// How long a span waits for its batch to fill.
const LINGER: Duration = Duration::from_secs(1);
/// One export call at most this long.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// The collector's answer read at most (it is only looked at for its status).
const MAX_ANSWER: usize = 64 * 1024;

/// The outbound client, speaking to the OTLP exporter (redirects are never followed; the
/// `outbound` trust applies).
#[derive(Debug)]
struct OtlpClient(portcullis::outbound::HttpClient);

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OtlpClient {
    async fn send_bytes(
        &self,
        request: Request<Bytes>,
    ) -> Result<Response<Bytes>, opentelemetry_http::HttpError> {
        let request = request.map(Full::new);
        let response = tokio::time::timeout(EXPORT_TIMEOUT, self.0.request(request))
            .await
            .map_err(|_| "the collector did not answer in time")??;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_ANSWER).collect().await?.to_bytes();
        Ok(Response::from_parts(parts, body))
    }
}

/// The span exporter of one `monitoring.traces` setting.
pub struct Tracer {
    settings: TraceSettings,
    queue: mpsc::Sender<SpanData>,
    /// Spans dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Spans handed to the exporter.
    pub exported: Arc<AtomicU64>,
    /// Export calls that failed.
    pub failed: Arc<AtomicU64>,
    scope: InstrumentationScope,
    ids: RandomState,
    counter: AtomicU64,
}

/// What [`Tracer::begin`] decided for one request.
pub struct RequestTrace {
    context: SpanContext,
    parent: Option<SpanId>,
    upstream: SpanId,
    link: Option<SpanContext>,
    started: SystemTime,
    started_at: Instant,
    marks: Option<Arc<TraceMarks>>,
}

impl RequestTrace {
    /// Whether this request's spans are recorded.
    pub fn sampled(&self) -> bool {
        self.marks.is_some()
    }
}

impl Tracer {
    /// Starts the exporter for `settings` (its background task runs until the tracer is
    /// dropped, then sends what is queued).
    pub fn start(settings: TraceSettings) -> anyhow::Result<Arc<Tracer>> {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(settings.endpoint.to_string())
            .with_timeout(EXPORT_TIMEOUT)
            .with_http_client(OtlpClient(settings.client.clone()))
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build the OTLP exporter: {e}"))?;
        exporter.set_resource(
            &opentelemetry_sdk::Resource::builder()
                .with_service_name("portcullis")
                .build(),
        );
        let (queue, mut incoming) = mpsc::channel::<SpanData>(QUEUE);
        let exported = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let (sent, lost) = (exported.clone(), failed.clone());
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while let Some(first) = incoming.recv().await {
                batch.push(first);
                let deadline = tokio::time::Instant::now() + LINGER;
                while batch.len() < BATCH {
                    match tokio::time::timeout_at(deadline, incoming.recv()).await {
                        Ok(Some(span)) => batch.push(span),
                        _ => break,
                    }
                }
                let n = batch.len() as u64;
                match exporter.export(std::mem::take(&mut batch)).await {
                    Ok(()) => sent.fetch_add(n, Ordering::Relaxed),
                    Err(_) => lost.fetch_add(1, Ordering::Relaxed),
                };
            }
        });
        Ok(Arc::new(Tracer {
            settings,
            queue,
            dropped: AtomicU64::new(0),
            exported,
            failed,
            scope: InstrumentationScope::builder("portcullis")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            ids: RandomState::new(),
            counter: AtomicU64::new(0),
        }))
    }

    /// Whether this tracer serves `settings` (the client aside: it follows `outbound`).
    pub fn serves(&self, settings: &TraceSettings) -> bool {
        self.settings.endpoint == settings.endpoint
            && self.settings.sample_ratio == settings.sample_ratio
            && self.settings.trust_incoming == settings.trust_incoming
            && self.settings.client.fingerprint() == settings.client.fingerprint()
    }

    /// A new, non-zero trace id (keyed hashes of a counter, as span ids).
    fn trace_id(&self) -> TraceId {
        loop {
            let n = self.counter.fetch_add(2, Ordering::Relaxed);
            let id =
                (u128::from(self.ids.hash_one(n)) << 64) | u128::from(self.ids.hash_one(n + 1));
            if id != 0 {
                return TraceId::from(id);
            }
        }
    }

    fn span_id(&self) -> SpanId {
        loop {
            let n = self.counter.fetch_add(1, Ordering::Relaxed);
            let id = self.ids.hash_one(n);
            if id != 0 {
                return SpanId::from(id);
            }
        }
    }

    /// Decides the request's trace context and rewrites its headers to match (see the
    /// module docs); `trusted_peer` says whether the peer is a trusted proxy.
    pub fn begin<B>(&self, req: &mut Request<B>, trusted_peer: bool) -> RequestTrace {
        let incoming = req
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_traceparent);
        let believed = self.settings.trust_incoming || trusted_peer;
        let (trace, parent, sampled, link) = match incoming {
            Some((trace, span, flag)) if believed => (trace, Some(span), flag, None),
            other => {
                let trace = self.trace_id();
                let link = other.map(|(t, s, f)| {
                    let flags = if f {
                        TraceFlags::SAMPLED
                    } else {
                        TraceFlags::default()
                    };
                    SpanContext::new(t, s, flags, true, TraceState::default())
                });
                (
                    trace,
                    None,
                    sampled(trace, self.settings.sample_ratio),
                    link,
                )
            }
        };
        let root = self.span_id();
        let upstream = self.span_id();
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let headers = req.headers_mut();
        if !believed {
            headers.remove("tracestate");
        }
        // `00-<trace>-<span>-<flags>`, written once; its trace part is the request id.
        let mut traceparent = *b"00-00000000000000000000000000000000-0000000000000000-00";
        write_hex(
            &mut traceparent[3..35],
            u128::from_be_bytes(trace.to_bytes()),
        );
        write_hex(
            &mut traceparent[36..52],
            u128::from(u64::from_be_bytes(upstream.to_bytes())),
        );
        write_hex(&mut traceparent[53..55], u128::from(flags.to_u8()));
        if let Ok(value) = HeaderValue::from_bytes(&traceparent[3..35]) {
            headers.insert(portcullis::request_id::HEADER, value);
        }
        if let Ok(value) = HeaderValue::from_bytes(&traceparent) {
            headers.insert("traceparent", value);
        }
        let marks = sampled.then(|| Arc::new(TraceMarks::default()));
        if let Some(marks) = &marks {
            req.extensions_mut().insert(marks.clone());
        }
        RequestTrace {
            context: SpanContext::new(trace, root, flags, false, TraceState::default()),
            parent,
            upstream,
            link,
            started: SystemTime::now(),
            started_at: Instant::now(),
            marks,
        }
    }

    /// Builds and queues the request's spans once its answer (`status`, `outcome`) is known.
    pub fn end(&self, trace: RequestTrace, request: &RequestFacts<'_>) {
        let Some(marks) = trace.marks else {
            return;
        };
        let now = Instant::now();
        let at =
            |instant: Instant| trace.started + instant.saturating_duration_since(trace.started_at);
        let records = marks.records();
        let mut spans = Vec::with_capacity(records.len() + 1);
        let mut upstream_time = Duration::ZERO;
        let mut results: Vec<(Stage, &'static str)> = Vec::new();
        for (i, record) in records.iter().enumerate() {
            let next = records.get(i + 1);
            // A stage's own span: from its start to the next stage's (siblings that add up
            // to the request side); the last one reached runs until its answer.
            let end = next.map(|n| n.start).or(record.end).unwrap_or(now);
            let result = own_result(record, next);
            results.push((record.stage, result));
            let (id, kind) = if record.stage == Stage::Upstream {
                upstream_time = end.saturating_duration_since(record.start);
                (trace.upstream, SpanKind::Client)
            } else {
                (self.span_id(), SpanKind::Internal)
            };
            let mut attributes = vec![KeyValue::new("portcullis.result", result)];
            if let Some(bucket) = &record.bucket {
                attributes.push(KeyValue::new(
                    "portcullis.rate_limit.bucket",
                    bucket.clone(),
                ));
            }
            spans.push(self.span(
                SpanContext::new(
                    trace.context.trace_id(),
                    id,
                    trace.context.trace_flags(),
                    false,
                    TraceState::default(),
                ),
                trace.context.span_id(),
                false,
                record.stage.name().into(),
                kind,
                (at(record.start), at(end)),
                attributes,
                Vec::new(),
                Status::Unset,
            ));
        }
        let total = now.saturating_duration_since(trace.started_at);
        let result_of = |stage: Stage| {
            results
                .iter()
                .find(|(s, _)| *s == stage)
                .map_or("not_reached", |(_, r)| r)
        };
        let mut attributes = vec![
            KeyValue::new("http.request.method", request.method.to_string()),
            KeyValue::new("url.path", request.path.to_string()),
            KeyValue::new("http.response.status_code", i64::from(request.status)),
            KeyValue::new(
                "portcullis.request_id",
                format!("{}", trace.context.trace_id()),
            ),
            KeyValue::new("portcullis.authn", result_of(Stage::Authenticate)),
            KeyValue::new(
                "portcullis.policy",
                match result_of(Stage::Authorize) {
                    "passed" | "ok" => "allow",
                    other => other,
                },
            ),
            KeyValue::new("portcullis.rate_limit", result_of(Stage::RateLimit)),
            KeyValue::new("portcullis.validation", result_of(Stage::Validate)),
            KeyValue::new(
                "portcullis.gateway_latency_ms",
                total.saturating_sub(upstream_time).as_secs_f64() * 1000.0,
            ),
            KeyValue::new(
                "portcullis.upstream_latency_ms",
                upstream_time.as_secs_f64() * 1000.0,
            ),
        ];
        if let Some(route) = request.outcome.and_then(|o| o.route.as_ref()) {
            attributes.push(KeyValue::new("http.route", route.to_string()));
        }
        if let Some(reason) = request.outcome.and_then(|o| o.denial_reason) {
            attributes.push(KeyValue::new("portcullis.denial", reason));
        }
        if let Some(bucket) = records.iter().find_map(|r| r.bucket.clone()) {
            attributes.push(KeyValue::new("portcullis.rate_limit.bucket", bucket));
        }
        let name = match request.outcome.and_then(|o| o.route.as_ref()) {
            Some(route) => format!("{} {route}", request.method),
            None => request.method.to_string(),
        };
        let status = if request.status >= 500 {
            Status::error(format!("answered {}", request.status))
        } else {
            Status::Unset
        };
        let links = trace.link.map(Link::with_context).into_iter().collect();
        spans.push(self.span(
            trace.context.clone(),
            trace.parent.unwrap_or(SpanId::INVALID),
            trace.parent.is_some(),
            name.into(),
            SpanKind::Server,
            (trace.started, trace.started + total),
            attributes,
            links,
            status,
        ));
        for span in spans {
            if self.queue.try_send(span).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn span(
        &self,
        context: SpanContext,
        parent: SpanId,
        parent_is_remote: bool,
        name: std::borrow::Cow<'static, str>,
        kind: SpanKind,
        (start, end): (SystemTime, SystemTime),
        attributes: Vec<KeyValue>,
        links: Vec<Link>,
        status: Status,
    ) -> SpanData {
        let mut span_links = SpanLinks::default();
        span_links.links = links;
        SpanData {
            span_context: context,
            parent_span_id: parent,
            parent_span_is_remote: parent_is_remote,
            span_kind: kind,
            name,
            start_time: start,
            end_time: end,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: span_links,
            status,
            instrumentation_scope: self.scope.clone(),
        }
    }
}

/// What the server knows of a request once it is answered.
pub struct RequestFacts<'a> {
    /// The method.
    pub method: &'a http::Method,
    /// The path as sent.
    pub path: &'a str,
    /// The answer's status.
    pub status: u16,
    /// What the pipeline left about it.
    pub outcome: Option<&'a Outcome>,
}

/// A stage's own result: `passed` when the request went on to a later stage, else how its
/// answer came back (`ok`, or the reason it refused).
fn own_result(record: &StageRecord, next: Option<&StageRecord>) -> &'static str {
    match (next, record.outcome) {
        (Some(_), _) => "passed",
        (None, Some(outcome)) => outcome,
        (None, None) => "unfinished",
    }
}
