//! Prometheus metrics for the admin listener's `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

// Label values are shared (`Arc<str>`) or static, so recording allocates nothing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Arc<str>,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DenialLabels {
    reason: &'static str,
    route: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    route: Arc<str>,
    action: Arc<str>,
}

/// Distinct policy actions given their own label at most; others count as `other`, so a
/// client sending odd methods cannot grow the metric set.
const MAX_ACTIONS: usize = 256;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuerLabel {
    issuer: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertLabel {
    cert: String,
}

/// State other parts keep that the exposition mirrors, read at each scrape.
pub struct Readings<'a> {
    /// Event lines dropped.
    pub events_dropped: u64,
    /// The alert sender's counts, if alerts are configured.
    pub alerts: Option<&'a portcullis::alert::AlertCounts>,
    /// Detector findings.
    pub findings: &'a portcullis::detect::DetectorCounts,
    /// The issuers (key set ages, refreshes).
    pub issuers: &'a [portcullis::authn::Issuer],
    /// The decision logs.
    pub logs: &'a [Arc<portcullis::authz::decision_log::DecisionLog>],
    /// The rate-limit stores.
    pub limiters: &'a [Arc<portcullis::ratelimit::store::Limiter>],
    /// The configured certificates.
    pub certificates: &'a [crate::config::WatchedCert],
    /// The span exporter, if traces are configured.
    pub tracer: Option<&'a crate::traces::Tracer>,
    /// Relayed WebSocket connections.
    pub websockets: &'a portcullis::websocket::WebSocketCounts,
}

/// One open client connection, counted in `portcullis_open_connections` until dropped.
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabel, Histogram>,
    denials: Family<DenialLabels, Counter>,
    upstream_errors: Family<DenialLabels, Counter>,
    auth_failures: Family<DenialLabels, Counter>,
    spans_exported: Gauge,
    spans_dropped: Gauge,
    span_export_failures: Gauge,
    detector_findings: Family<ReasonLabel, Gauge>,
    authz_denials: Family<ActionLabels, Counter>,
    actions: std::sync::Mutex<std::collections::HashSet<Arc<str>>>,
    open_connections: Gauge,
    reloads: Family<ResultLabel, Counter>,
    events_dropped: Gauge,
    alerts_sent: Gauge,
    alerts_failed: Gauge,
    alerts_dropped: Gauge,
    jwks_age: Family<IssuerLabel, Gauge>,
    jwks_refreshes: Family<IssuerLabel, Gauge>,
    jwks_failures: Family<IssuerLabel, Gauge>,
    decisions_written: Gauge,
    decisions_dropped: Gauge,
    store_degraded: Gauge,
    store_switches: Gauge,
    tls_failures: Family<ReasonLabel, Counter>,
    websockets_open: Gauge,
    websockets_total: Gauge,
    websockets_closed: Family<ReasonLabel, Gauge>,
    cert_expiry: Family<CertLabel, Gauge>,
    no_route: Arc<str>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers all metrics.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("portcullis");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.000_1, 2.0, 18))) as fn() -> Histogram,
        );
        let denials = Family::<DenialLabels, Counter>::default();
        let upstream_errors = Family::<DenialLabels, Counter>::default();
        let auth_failures = Family::<DenialLabels, Counter>::default();
        registry.register(
            "auth_failures",
            "Requests whose credentials failed authentication, by reason and route",
            auth_failures.clone(),
        );
        let spans_exported = Gauge::default();
        registry.register(
            "trace_spans_exported",
            "Spans the collector accepted (since the trace settings last changed)",
            spans_exported.clone(),
        );
        let spans_dropped = Gauge::default();
        registry.register(
            "trace_spans_dropped",
            "Spans not queued because the export queue was full",
            spans_dropped.clone(),
        );
        let span_export_failures = Gauge::default();
        registry.register(
            "trace_export_failures",
            "Span export calls the collector refused or that failed",
            span_export_failures.clone(),
        );
        let detector_findings = Family::<ReasonLabel, Gauge>::default();
        registry.register(
            "detector_findings",
            "Anomalies the detectors raised (each flags its client and principal), by reason",
            detector_findings.clone(),
        );
        let authz_denials = Family::<ActionLabels, Counter>::default();
        registry.register(
            "authz_denials",
            "Requests the policy refused, by route and action",
            authz_denials.clone(),
        );
        let open_connections = Gauge::default();
        let reloads = Family::<ResultLabel, Counter>::default();
        let events_dropped = Gauge::default();
        registry.register(
            "requests",
            "Requests answered, by route and status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request head to response head, by route",
            latency.clone(),
        );
        registry.register(
            "denials",
            "Requests refused by the gateway, by reason and route",
            denials.clone(),
        );
        registry.register(
            "upstream_errors",
            "Upstream failures (unreachable, timeout), by reason and route",
            upstream_errors.clone(),
        );
        registry.register(
            "open_connections",
            "Client connections currently open",
            open_connections.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration reloads, by result",
            reloads.clone(),
        );
        registry.register(
            "events_dropped",
            "Security event lines dropped because the writer fell behind",
            events_dropped.clone(),
        );
        let alerts_sent = Gauge::default();
        let alerts_failed = Gauge::default();
        let alerts_dropped = Gauge::default();
        registry.register(
            "alerts_sent",
            "Alert webhook calls that succeeded (since the alert settings last changed)",
            alerts_sent.clone(),
        );
        registry.register(
            "alerts_failed",
            "Alerts given up on after their retries, or refused by the webhook",
            alerts_failed.clone(),
        );
        registry.register(
            "alerts_dropped",
            "Alert-worthy events not queued because the alert queue was full",
            alerts_dropped.clone(),
        );
        let tls_failures = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed on the listener, by reason",
            tls_failures.clone(),
        );
        let cert_expiry = Family::<CertLabel, Gauge>::default();
        registry.register(
            "tls_cert_expiry_seconds",
            "Seconds until each configured certificate expires (negative: expired)",
            cert_expiry.clone(),
        );
        let jwks_age = Family::<IssuerLabel, Gauge>::default();
        let jwks_refreshes = Family::<IssuerLabel, Gauge>::default();
        let jwks_failures = Family::<IssuerLabel, Gauge>::default();
        registry.register(
            "jwks_age_seconds",
            "Age of each remote issuer key set (-1: never fetched)",
            jwks_age.clone(),
        );
        registry.register(
            "jwks_refreshes",
            "Successful key set fetches, by issuer",
            jwks_refreshes.clone(),
        );
        registry.register(
            "jwks_refresh_failures",
            "Failed key set fetches, by issuer",
            jwks_failures.clone(),
        );
        let decisions_written = Gauge::default();
        let decisions_dropped = Gauge::default();
        registry.register(
            "decision_log_records",
            "Decision records written",
            decisions_written.clone(),
        );
        registry.register(
            "decision_log_dropped",
            "Decision records dropped because the async queue overflowed",
            decisions_dropped.clone(),
        );
        let store_degraded = Gauge::default();
        let store_switches = Gauge::default();
        registry.register(
            "rate_limit_store_degraded",
            "1 while the shared rate-limit store is unreachable and fallback limits apply",
            store_degraded.clone(),
        );
        registry.register(
            "rate_limit_store_switches",
            "Switches between the shared rate-limit store and the fallback",
            store_switches.clone(),
        );
        let websockets_open = Gauge::default();
        let websockets_total = Gauge::default();
        let websockets_closed = Family::<ReasonLabel, Gauge>::default();
        registry.register(
            "websocket_connections",
            "WebSocket connections being relayed now (they count under max_connections too)",
            websockets_open.clone(),
        );
        registry.register(
            "websocket_connections_opened",
            "WebSocket connections relayed since start",
            websockets_total.clone(),
        );
        registry.register(
            "websocket_closed_by_gateway",
            "WebSocket connections the gateway closed, by reason",
            websockets_closed.clone(),
        );
        Metrics {
            registry,
            websockets_open,
            websockets_total,
            websockets_closed,
            store_degraded,
            store_switches,
            tls_failures,
            cert_expiry,
            decisions_written,
            decisions_dropped,
            jwks_age,
            jwks_refreshes,
            jwks_failures,
            requests,
            latency,
            denials,
            upstream_errors,
            auth_failures,
            spans_exported,
            spans_dropped,
            span_export_failures,
            detector_findings,
            authz_denials,
            actions: std::sync::Mutex::default(),
            open_connections,
            reloads,
            events_dropped,
            alerts_sent,
            alerts_failed,
            alerts_dropped,
            no_route: Arc::from("(none)"),
        }
    }

    /// Records one answered request; `route` is `None` when no route matched.
    pub fn request(
        &self,
        route: Option<&Arc<str>>,
        status: u16,
        denial: Option<&'static str>,
        denied_action: Option<&str>,
        auth_failure: bool,
        elapsed: Duration,
    ) {
        let route = route.unwrap_or(&self.no_route).clone();
        self.requests
            .get_or_create(&RequestLabels {
                route: route.clone(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabel {
                route: route.clone(),
            })
            .observe(elapsed.as_secs_f64());
        if let Some(action) = denied_action {
            let action = self.action_label(action);
            self.authz_denials
                .get_or_create(&ActionLabels {
                    route: route.clone(),
                    action,
                })
                .inc();
        }
        if let Some(reason) = denial {
            let labels = DenialLabels { reason, route };
            if auth_failure {
                self.auth_failures.get_or_create(&labels).inc();
            }
            if reason.starts_with("upstream_") {
                self.upstream_errors.get_or_create(&labels).inc();
            }
            self.denials.get_or_create(&labels).inc();
        }
    }

    /// The label for a policy action: itself while the set of actions stays small and the
    /// text is a plain identifier (or a gRPC method, `/pkg.Service/Method`), else `other`.
    fn action_label(&self, action: &str) -> Arc<str> {
        let plain = action.len() <= 128
            && action
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'/' | b'.'));
        let Ok(mut actions) = self.actions.lock() else {
            return Arc::from("other");
        };
        if let Some(known) = actions.get(action) {
            return known.clone();
        }
        if !plain || actions.len() >= MAX_ACTIONS {
            return Arc::from("other");
        }
        let label: Arc<str> = Arc::from(action);
        actions.insert(label.clone());
        label
    }

    /// A client connection opened; it counts until the returned guard is dropped.
    pub fn connection_opened(&self) -> OpenConnection {
        self.open_connections.inc();
        OpenConnection(self.open_connections.clone())
    }

    /// A TLS handshake on the listener failed.
    pub fn tls_handshake_failure(&self, reason: &'static str) {
        self.tls_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Records a reload attempt.
    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "refused" };
        self.reloads.get_or_create(&ResultLabel { result }).inc();
    }

    /// The exposition text; gauges that mirror other state are read now.
    pub fn encode(&self, readings: &Readings<'_>) -> String {
        let Readings {
            events_dropped,
            alerts,
            findings,
            issuers,
            logs,
            limiters,
            certificates,
            tracer,
            websockets,
        } = *readings;
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.websockets_open.set(gauge(websockets.open()));
        self.websockets_total.set(gauge(websockets.total()));
        for (reason, count) in websockets.closed_by_gateway() {
            self.websockets_closed
                .get_or_create(&ReasonLabel { reason })
                .set(gauge(count));
        }
        let load = |c: &std::sync::atomic::AtomicU64| {
            i64::try_from(c.load(Ordering::Relaxed)).unwrap_or(i64::MAX)
        };
        self.spans_exported
            .set(tracer.map_or(0, |t| load(&t.exported)));
        self.spans_dropped
            .set(tracer.map_or(0, |t| load(&t.dropped)));
        self.span_export_failures
            .set(tracer.map_or(0, |t| load(&t.failed)));
        let degraded = limiters.iter().any(|l| l.is_degraded());
        self.store_degraded.set(i64::from(degraded));
        let switches: u64 = limiters.iter().map(|l| l.switches()).sum();
        self.store_switches
            .set(i64::try_from(switches).unwrap_or(i64::MAX));
        let written: u64 = logs.iter().map(|l| l.written()).sum();
        let dropped: u64 = logs.iter().map(|l| l.dropped()).sum();
        self.decisions_written
            .set(i64::try_from(written).unwrap_or(i64::MAX));
        self.decisions_dropped
            .set(i64::try_from(dropped).unwrap_or(i64::MAX));
        self.events_dropped
            .set(i64::try_from(events_dropped).unwrap_or(i64::MAX));
        let count = |c: Option<&std::sync::atomic::AtomicU64>| {
            c.map_or(0, |c| {
                i64::try_from(c.load(std::sync::atomic::Ordering::Relaxed)).unwrap_or(i64::MAX)
            })
        };
        self.alerts_sent.set(count(alerts.map(|a| &a.sent)));
        self.alerts_failed.set(count(alerts.map(|a| &a.failed)));
        self.alerts_dropped.set(count(alerts.map(|a| &a.dropped)));
        for (reason, count) in findings.snapshot() {
            self.detector_findings
                .get_or_create(&ReasonLabel { reason })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        let now = portcullis::authn::now_secs() as i64;
        // Only the current configuration's certificates: a replaced one must not linger.
        self.cert_expiry.clear();
        for cert in certificates {
            self.cert_expiry
                .get_or_create(&CertLabel {
                    cert: cert.label.clone(),
                })
                .set(cert.not_after.saturating_sub(now));
        }
        for issuer in issuers.iter().filter(|i| i.keys.source().is_some()) {
            let label = IssuerLabel {
                issuer: issuer.name.clone(),
            };
            let stats = &issuer.keys.stats;
            let fetched = stats.fetched_at.load(Ordering::Relaxed) as i64;
            self.jwks_age
                .get_or_create(&label)
                .set(if fetched == 0 { -1 } else { now - fetched });
            self.jwks_refreshes
                .get_or_create(&label)
                .set(stats.refreshes.load(Ordering::Relaxed) as i64);
            self.jwks_failures
                .get_or_create(&label)
                .set(stats.failures.load(Ordering::Relaxed) as i64);
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
