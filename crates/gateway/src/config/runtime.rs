//! The compiled configuration: the runtime types one configuration generation runs on.

use super::Problem;
use super::tls::WatchedCert;
use http::HeaderValue;
use http::uri::{Authority, Scheme};
use portcullis::authn::{Authenticator, ForwardSettings};
use portcullis::authz::Authorizer;
use portcullis::event::EventSink;
use portcullis::headers::SecurityHeaders;
use portcullis::normalize::NormalizeSettings;
use portcullis::route::RouteTable;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The `Host` an upstream sees (`upstreams.*.host`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRule {
    /// The upstream URL's authority (the default).
    Upstream,
    /// The client's own (validated) `Host`.
    Preserve,
    /// This name.
    Literal(HeaderValue),
}

/// An upstream service the gateway forwards to.
#[derive(Debug)]
pub struct Upstream {
    /// Its configured name.
    pub name: String,
    /// `http` or `https`.
    pub scheme: Scheme,
    /// Host and port.
    pub authority: Authority,
    /// Path prefix prepended to every forwarded path (no trailing slash).
    pub base_path: String,
    /// Longest wait for the upstream's response head.
    pub timeout: Duration,
    /// The `Host` it is sent.
    pub host: HostRule,
    /// `protocol: grpc`: HTTP/2 only, gRPC refusals, the full method as the policy action.
    pub grpc: bool,
    /// The pooled client that reaches it (shared by upstreams with the same TLS settings,
    /// and kept across reloads).
    pub client: crate::upstream_pool::UpstreamClient,
    /// The gateway's client certificate to present from activation on, and its holder.
    pub client_cert: Option<(
        Arc<portcullis::outbound::ClientCertificate>,
        Arc<rustls::sign::CertifiedKey>,
    )>,
}

/// Every upstream by name: where the proxy sends what a route names.
pub type UpstreamMap = std::collections::BTreeMap<Arc<str>, Arc<Upstream>>;

/// The admin listener's settings.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// Where it listens.
    pub address: SocketAddr,
    /// The bearer token `/admin/` requires; without one, `/admin/` refuses everything.
    pub token: Option<portcullis::secret::Secret>,
}

/// HTTP/2 abuse limits.
#[derive(Debug, Clone, Copy)]
pub struct Http2Limits {
    /// Concurrent streams per connection.
    pub max_concurrent_streams: u32,
    /// Largest decoded header list.
    pub max_header_list_bytes: u32,
    /// Most pending or error-provoked stream resets before the connection is closed.
    pub max_pending_resets: usize,
    /// Most control frames (PING, SETTINGS, WINDOW_UPDATE, PRIORITY, RST_STREAM, empty
    /// DATA/HEADERS/CONTINUATION) a client may send in any second → GOAWAY, close.
    pub max_control_frames_per_second: usize,
}

/// Connection-level limits applied by the server.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Time allowed to receive a request head.
    pub header_read_timeout: Duration,
    /// Open client connections at most; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Header limits, also given to the HTTP/1 parser as a hard backstop.
    pub max_header_bytes: usize,
    /// Most header fields.
    pub max_header_count: usize,
    /// HTTP/2 limits.
    pub http2: Http2Limits,
    /// After an early answer, how long the unread rest of a request is drained before the
    /// connection closes (so the client reads the answer instead of a reset).
    pub lingering_close: Duration,
    /// And at most how many bytes of it.
    pub linger_max_bytes: u64,
    /// `limits.websocket`: the bounds of relayed WebSocket connections.
    pub websocket: portcullis::websocket::WebSocketLimits,
}

impl Default for Http2Limits {
    fn default() -> Self {
        Http2Limits {
            max_concurrent_streams: 100,
            max_header_list_bytes: 16384,
            max_pending_resets: 20,
            max_control_frames_per_second: 100,
        }
    }
}

impl Default for ServerLimits {
    /// The listener's defaults; the header limits are the library's (`NormalizeSettings`),
    /// which the parser is given as a backstop.
    fn default() -> Self {
        let normalize = portcullis::normalize::NormalizeSettings::default();
        ServerLimits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            max_header_bytes: normalize.max_header_bytes,
            max_header_count: normalize.max_header_count,
            http2: Http2Limits::default(),
            lingering_close: Duration::from_secs(5),
            linger_max_bytes: normalize.max_body_bytes,
            websocket: portcullis::websocket::WebSocketLimits::default(),
        }
    }
}

/// A compiled, validated configuration: everything the gateway runs on.
#[derive(Debug)]
pub struct GatewayConfig {
    /// The main listener.
    pub listen: SocketAddr,
    /// TLS on the main listener (what new handshakes use), when configured.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Certificates whose expiry is exported as a metric.
    pub certificates: Vec<WatchedCert>,
    /// `errors.upstream_5xx: replace`: upstream server errors reach the client as a generic
    /// problem, their body only the event.
    pub mask_upstream_errors: bool,
    /// Every upstream, by name.
    pub upstreams: Arc<UpstreamMap>,
    /// The admin listener, when configured.
    pub admin: Option<AdminSettings>,
    /// Connection-level limits.
    pub server: ServerLimits,
    /// Bound on the whole exchange.
    pub request_timeout: Duration,
    /// Request normalisation settings.
    pub normalize: Arc<NormalizeSettings>,
    /// The routes, first match wins.
    pub routes: Arc<RouteTable>,
    /// The `cors` rules, first match wins.
    pub cors: Arc<[portcullis::cors::CorsRule]>,
    /// Response security headers.
    pub headers: Arc<SecurityHeaders>,
    /// Where security events go.
    pub events: EventSink,
    /// Verifies bearer tokens.
    pub authenticator: Arc<Authenticator>,
    /// What the upstream learns of the caller.
    pub forward: Arc<ForwardSettings>,
    /// The longest lifetime any issuer accepts (a revoked `jti` is remembered this long).
    pub max_token_lifetime: Duration,
    /// Where revocations are kept.
    pub revocations: Arc<portcullis::authn::revocation::Revocations>,
    /// Decides protected requests (absent when every route is public).
    pub authorizer: Option<Arc<Authorizer>>,
    /// Browser sessions (`identity.oidc_login`), if configured.
    pub sessions: Option<Arc<portcullis::session::Sessions>>,
    /// Files whose change triggers a reload (policies, data).
    pub watched_files: Vec<PathBuf>,
    /// The detectors `monitoring.detection` enables (kept across reloads that leave their
    /// settings alone, so baselines and windows survive), if any.
    pub detectors: Option<Arc<portcullis::detect::Detectors>>,
    /// How shadow paths are folded into templates (`monitoring.discovery`; none: kept as
    /// called).
    pub templates: Option<portcullis::discovery::TemplateRules>,
    /// Where traces go (`monitoring.traces`), if anywhere.
    pub traces: Option<TraceSettings>,
    /// Where alerts go (`monitoring.alerts`), with the outbound client that sends them.
    pub alerts: Option<(
        portcullis::alert::AlertSettings,
        portcullis::outbound::HttpClient,
    )>,
    /// Things that are allowed but risky, for `check` to show.
    pub warnings: Vec<Problem>,
    /// Rate limiting and threat screening.
    pub rate_limiting: Arc<portcullis::ratelimit::RateLimiting>,
    /// The API contract enforced, when `validation` is configured.
    pub contract: Option<Arc<portcullis::validate::ApiContract>>,
    /// Observed endpoints (shared by every generation).
    pub inventory: Arc<portcullis::discovery::Inventory>,
    /// Relayed WebSocket connections (shared by every generation).
    pub websockets: Arc<portcullis::websocket::WebSocketCounts>,
    /// Counts for the `check` summary.
    pub route_count: usize,
    /// Counts for the `check` summary.
    pub upstream_count: usize,
}

impl GatewayConfig {
    /// Makes this configuration's certificates the ones presented: called when it starts
    /// serving (never for a configuration that was refused).
    pub fn activate(&self) {
        if let Some(sessions) = &self.sessions {
            sessions.start();
        }
        for upstream in self.upstreams.values() {
            if let Some((holder, key)) = &upstream.client_cert {
                holder.replace(key.clone());
            }
        }
    }
}

/// `monitoring.traces`: OpenTelemetry spans over OTLP/HTTP protobuf.
#[derive(Debug, Clone)]
pub struct TraceSettings {
    /// The collector's traces URL (`.../v1/traces`).
    pub endpoint: http::Uri,
    /// The share of new traces recorded (0 to 1); an incoming trace that is believed keeps
    /// its own sampled flag.
    pub sample_ratio: f64,
    /// Whether an incoming `traceparent` is believed from anyone (false: only from trusted
    /// proxies; from others a new trace starts, linked to the incoming one).
    pub trust_incoming: bool,
    /// The outbound client that sends the spans (the `outbound` trust applies).
    pub client: portcullis::outbound::HttpClient,
}
