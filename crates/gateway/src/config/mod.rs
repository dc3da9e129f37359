//! Configuration: the YAML file (SPEC §2) read into [`raw`] types, then compiled into the
//! runtime [`GatewayConfig`], collecting every problem with its key path and line.

mod cors;
pub mod duration;
mod identity;
mod policy;
mod ratelimit;
pub mod raw;
mod secret;
mod tls;
mod validation;

pub use identity::Shared;
pub use tls::WatchedCert;

use http::uri::{Authority, Scheme};
use http::{HeaderName, HeaderValue, Method, Uri};
use portcullis::authn::mtls::IdentityPattern;
use portcullis::authn::{AuthMode, Authenticator, ForwardSettings, RouteAuth, ScopeRule};
use portcullis::authz::{Authorizer, RouteAuthz};
use portcullis::event::EventSink;
use portcullis::headers::SecurityHeaders;
use portcullis::net::{IpNet, TrustedProxies};
use portcullis::normalize::NormalizeSettings;
use portcullis::route::{PathPattern, Route, RoutePolicy, RouteTable};
use raw::{RawConfig, Text, Unsupported};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Largest configuration file read (a bound on untrusted-ish input).
const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key path, e.g. `routes[2].upstream`.
    pub path: String,
    /// The line in the file, where known.
    pub line: Option<u64>,
    /// What is wrong, as one sentence.
    pub message: String,
}

/// Every problem found in one configuration file.
#[derive(Debug, Clone)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// The problems, in file order where known.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match (p.line, p.path.is_empty()) {
                (Some(line), false) => write!(f, "{file}:{line}: {}: {}", p.path, p.message)?,
                (Some(line), true) => write!(f, "{file}:{line}: {}", p.message)?,
                (None, false) => write!(f, "{file}: {}: {}", p.path, p.message)?,
                (None, true) => write!(f, "{file}: {}", p.message)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Collects problems while compiling.
#[derive(Debug, Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, line: Option<u64>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            line,
            message: message.into(),
        });
    }

    fn at(&mut self, path: impl Into<String>, text: &Text, message: impl Into<String>) {
        self.add(path, line_of(&text.referenced), message);
    }

    fn unsupported(&mut self, path: &str, section: &Unsupported, what: &str) {
        if let Some(spanned) = section {
            self.add(
                path,
                line_of(&spanned.referenced),
                format!("{what} is not supported yet; remove this section"),
            );
        }
    }
}

fn line_of(location: &serde_saphyr::Location) -> Option<u64> {
    Some(location.line()).filter(|l| *l > 0)
}

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
    /// Files whose change triggers a reload (policies, data).
    pub watched_files: Vec<PathBuf>,
    /// Things that are allowed but risky, for `check` to show.
    pub warnings: Vec<Problem>,
    /// Rate limiting and threat screening.
    pub rate_limiting: Arc<portcullis::ratelimit::RateLimiting>,
    /// The API contract enforced, when `validation` is configured.
    pub contract: Option<Arc<portcullis::validate::ApiContract>>,
    /// Observed endpoints (shared by every generation).
    pub inventory: Arc<portcullis::discovery::Inventory>,
    /// Counts for the `check` summary.
    pub route_count: usize,
    /// Counts for the `check` summary.
    pub upstream_count: usize,
}

impl GatewayConfig {
    /// Makes this configuration's certificates the ones presented: called when it starts
    /// serving (never for a configuration that was refused).
    pub fn activate(&self) {
        for upstream in self.upstreams.values() {
            if let Some((holder, key)) = &upstream.client_cert {
                holder.replace(key.clone());
            }
        }
    }
}

/// Reads and compiles a configuration file on its own (for `check`).
pub fn load(path: &Path) -> Result<GatewayConfig, ConfigError> {
    let text = read(path)?;
    compile_text(&text, path, &Shared::default())
}

/// Reads a configuration file, bounded in size.
pub fn read(path: &Path) -> Result<String, ConfigError> {
    let fail = |message: String| ConfigError {
        file: path.to_path_buf(),
        problems: vec![Problem {
            path: String::new(),
            line: None,
            message,
        }],
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(format!("cannot read the file: {e}")))?;
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(fail(format!(
            "the file is larger than {MAX_CONFIG_BYTES} bytes"
        )));
    }
    std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read the file: {e}")))
}

/// Compiles configuration text; `path` names the file in messages and anchors relative paths.
pub fn compile_text(
    text: &str,
    path: &Path,
    shared: &Shared,
) -> Result<GatewayConfig, ConfigError> {
    // The parser knows the line; the path tracker knows the key path. Report both.
    let mut key_path = String::new();
    let parsed = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize::<_, RawConfig>(de).map_err(|e| {
            key_path = e.path().to_string();
            e.into_inner()
        })
    });
    let raw = parsed.map_err(|e| {
        let (line, message) = split_location(&one_line(&e.to_string()));
        // `Spanned` fields appear as a `value` step in the tracked path; users never wrote it.
        let key_path = key_path.replace(".value.", ".");
        ConfigError {
            file: path.to_path_buf(),
            problems: vec![Problem {
                path: if key_path == "." {
                    String::new()
                } else {
                    key_path
                },
                line,
                message,
            }],
        }
    })?;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut problems = Problems::default();
    let config = compile(raw, &base_dir, shared, &mut problems);
    match config {
        Some(config) if problems.0.is_empty() => Ok(config),
        _ => {
            problems.0.sort_by_key(|p| p.line.unwrap_or(u64::MAX));
            Err(ConfigError {
                file: path.to_path_buf(),
                problems: problems.0,
            })
        }
    }
}

/// The parser's message without its multi-line source excerpt.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take_while(|l| !l.starts_with('|') && !l.starts_with("-->"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Splits the parser's `error: line L column C: message` into the line and the message.
fn split_location(message: &str) -> (Option<u64>, String) {
    let rest = message.strip_prefix("error: ").unwrap_or(message);
    let parsed = rest.strip_prefix("line ").and_then(|r| {
        let (line, r) = r.split_once(' ')?;
        let (_, r) = r.strip_prefix("column ")?.split_once(": ")?;
        Some((line.parse().ok()?, r.to_string()))
    });
    match parsed {
        Some((line, message)) => (Some(line), message),
        None => (None, rest.to_string()),
    }
}

fn compile(
    raw: RawConfig,
    base_dir: &Path,
    shared: &Shared,
    problems: &mut Problems,
) -> Option<GatewayConfig> {
    let resolver = secret::Resolver::new(base_dir);
    problems.unsupported("monitoring.alerts", &raw.monitoring.alerts, "alerting");
    let mut cert_facts = tls::CertFacts::default();
    let trust = tls::compile_outbound(
        raw.outbound.as_ref(),
        base_dir,
        &resolver,
        &mut cert_facts,
        problems,
    );
    let client = match shared.http_client(&trust) {
        Ok(client) => client,
        Err(e) => {
            problems.add("outbound", None, e);
            return None;
        }
    };
    let listen_tls = raw.listen.tls.as_ref().and_then(|t| {
        tls::compile_listener(
            &t.value,
            base_dir,
            &resolver,
            &shared.tls,
            &mut cert_facts,
            problems,
        )
    });

    let listen = socket_addr("listen.address", &raw.listen.address, &resolver, problems);
    let mut trusted = Vec::new();
    for (i, text) in raw.listen.trusted_proxies.iter().enumerate() {
        let path = format!("listen.trusted_proxies[{i}]");
        if let Some(value) = resolver.text(&path, text, problems) {
            match value.parse::<IpNet>() {
                Ok(net) => trusted.push(net),
                Err(e) => problems.at(path, text, e.to_string()),
            }
        }
    }

    let admin = raw.admin.as_ref().and_then(|admin| {
        let address = socket_addr("admin.address", &admin.address, &resolver, problems)?;
        let token = admin
            .token
            .as_ref()
            .and_then(|t| resolver.secret("admin.token", t, problems));
        if let Some(token) = &token
            && token.expose().len() < 16
        {
            problems.add(
                "admin.token",
                admin.token.as_ref().and_then(|t| line_of(&t.referenced)),
                "the admin token must be at least 16 characters long",
            );
        }
        Some(AdminSettings { address, token })
    });

    let limits = &raw.limits;
    let positive = |problems: &mut Problems,
                    path: &str,
                    v: Option<&serde_saphyr::Spanned<usize>>,
                    default: usize| {
        match v {
            Some(s) if s.value == 0 => {
                problems.add(path, line_of(&s.referenced), "must be greater than 0");
                default
            }
            Some(s) => s.value,
            None => default,
        }
    };
    let max_header_bytes = positive(
        problems,
        "limits.max_header_bytes",
        limits.max_header_bytes.as_ref(),
        16384,
    );
    let max_header_count = positive(
        problems,
        "limits.max_header_count",
        limits.max_header_count.as_ref(),
        100,
    );
    let max_uri_bytes = positive(
        problems,
        "limits.max_uri_bytes",
        limits.max_uri_bytes.as_ref(),
        8192,
    );
    let max_connections = positive(
        problems,
        "limits.max_connections",
        limits.max_connections.as_ref(),
        10000,
    );
    let dur = |d: Option<duration::ConfigDuration>, default: u64| {
        d.map_or(Duration::from_secs(default), |d| d.0)
    };
    let server = ServerLimits {
        lingering_close: dur(limits.lingering_close, 5),
        linger_max_bytes: limits
            .max_body_bytes
            .as_ref()
            .map_or(1_048_576, |s| s.value),
        header_read_timeout: dur(limits.header_read_timeout, 10),
        max_connections,
        max_header_bytes,
        max_header_count,
        http2: Http2Limits {
            max_concurrent_streams: limits.http2.max_concurrent_streams.unwrap_or(100),
            max_header_list_bytes: limits.http2.max_header_list_bytes.unwrap_or(16384),
            max_pending_resets: limits.http2.max_pending_resets.unwrap_or(20),
            max_control_frames_per_second: positive(
                problems,
                "limits.http2.max_control_frames_per_second",
                limits.http2.max_control_frames_per_second.as_ref(),
                100,
            ),
        },
    };
    let mut hosts = Vec::new();
    for (i, text) in raw.listen.hosts.iter().flatten().enumerate() {
        let path = format!("listen.hosts[{i}]");
        let Some(value) = resolver.text(&path, text, problems) else {
            continue;
        };
        let bare = value.trim_start_matches('[').trim_end_matches(']');
        let valid = !bare.is_empty()
            && (bare.parse::<std::net::IpAddr>().is_ok()
                || bare
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
        if valid {
            hosts.push(bare.to_ascii_lowercase());
        } else {
            problems.at(
                path,
                text,
                format!("`{value}` is not a host name (write it without scheme or port)"),
            );
        }
    }
    if raw.listen.hosts.as_ref().is_some_and(|h| h.is_empty()) {
        problems.add(
            "listen.hosts",
            None,
            "is empty, so every request would be refused; list the served host names, or remove it",
        );
    }
    let normalize = NormalizeSettings {
        hosts,
        max_uri_bytes,
        max_header_bytes,
        max_header_count,
        max_body_bytes: limits
            .max_body_bytes
            .as_ref()
            .map_or(1_048_576, |s| s.value),
        body_read_timeout: dur(limits.body_read_timeout, 30),
        trusted_proxies: TrustedProxies::new(trusted),
    };
    let request_timeout = dur(limits.request_timeout, 30);
    let max_json_string_bytes = positive(
        problems,
        "limits.max_json_string_bytes",
        limits.max_json_string_bytes.as_ref(),
        65536,
    );
    let (contract, contract_files) = match &raw.validation {
        Some(section) => validation::compile(
            section,
            max_json_string_bytes,
            base_dir,
            &resolver,
            shared,
            problems,
        ),
        None => (None, Vec::new()),
    };

    let mut upstreams: BTreeMap<&str, Arc<Upstream>> = BTreeMap::new();
    for (name, upstream) in &raw.upstreams {
        let path = format!("upstreams.{name}");
        let context = UpstreamContext {
            base_dir,
            resolver: &resolver,
            trust: &trust,
            shared,
        };
        if let Some(compiled) =
            compile_upstream(name, upstream, &path, &context, &mut cert_facts, problems)
        {
            upstreams.insert(name, Arc::new(compiled));
        }
    }

    let identity = identity::compile(
        raw.identity.as_ref(),
        raw.limits.max_token_bytes.as_ref().map(|s| s.value),
        base_dir,
        &resolver,
        (shared, &client),
        problems,
    );
    let policy = raw
        .policy
        .as_ref()
        .and_then(|p| policy::compile(p, base_dir, &resolver, (shared, &client), problems));
    let (rate_limiting, limit_files) = ratelimit::compile(
        raw.rate_limit.as_ref(),
        base_dir,
        &resolver,
        shared,
        problems,
    );
    let mut warnings = Vec::new();
    if policy.as_ref().is_some_and(|p| p.fail_open) {
        warnings.push(Problem {
            path: "policy.on_error".into(),
            line: raw
                .policy
                .as_ref()
                .and_then(|p| p.on_error.as_ref())
                .and_then(|t| line_of(&t.referenced)),
            message: "`allow` fails open: requests pass when the policy engine is down".into(),
        });
    }
    let mut routes = Vec::new();
    for (i, route) in raw.routes.iter().enumerate() {
        let declared = (&upstreams, &raw.upstreams);
        let context = RouteContext {
            identity: identity.configured,
            policy: raw.policy.is_some(),
            client_certificates: raw
                .listen
                .tls
                .as_ref()
                .is_some_and(|t| t.value.client_ca.is_some()),
        };
        if let Some(route) = compile_route(i, route, declared, context, &resolver, problems) {
            if route.policy.auth.mode == AuthMode::None {
                warnings.push(Problem {
                    path: format!("routes[{i}]"),
                    line: raw
                        .routes
                        .get(i)
                        .and_then(|r| line_of(&r.matcher.referenced)),
                    message: format!(
                        "`{}` is public (auth: none): anyone can call it",
                        route.endpoint
                    ),
                });
            }
            routes.push(route);
        }
    }
    if raw.routes.is_empty() {
        problems.add(
            "routes",
            None,
            "no routes are configured, so every request would be refused",
        );
    }

    let mask_upstream_errors = match raw.errors.as_ref().and_then(|e| e.upstream_5xx.as_ref()) {
        None => true,
        Some(text) => match text.value.as_str() {
            "replace" => true,
            "pass" => false,
            other => {
                problems.at(
                    "errors.upstream_5xx",
                    text,
                    format!("unknown value `{other}` (use replace or pass)"),
                );
                true
            }
        },
    };
    let headers = match &raw.headers {
        None => SecurityHeaders::default(),
        Some(map) => compile_headers(map, problems),
    };

    let events = match (&raw.monitoring.events.sink, &raw.monitoring.events.path) {
        (None, None) => EventSink::Stdout,
        (Some(sink), path) => match (sink.value.as_str(), path) {
            ("stdout", None) => EventSink::Stdout,
            ("file", Some(path)) => match resolver.text("monitoring.events.path", path, problems) {
                Some(p) => EventSink::File(base_dir.join(p)),
                None => EventSink::Stdout,
            },
            ("file", None) => {
                problems.at("monitoring.events.path", sink, "sink `file` needs a `path`");
                EventSink::Stdout
            }
            ("stdout", Some(path)) => {
                problems.at(
                    "monitoring.events.path",
                    path,
                    "`path` is only used with sink `file`",
                );
                EventSink::Stdout
            }
            (other, _) => {
                problems.at(
                    "monitoring.events.sink",
                    sink,
                    format!("unknown sink `{other}` (use stdout or file)"),
                );
                EventSink::Stdout
            }
        },
        (None, Some(path)) => {
            problems.at("monitoring.events.path", path, "`path` needs `sink: file`");
            EventSink::Stdout
        }
    };

    warnings.append(&mut cert_facts.warnings);
    let mut watched_files = policy.as_ref().map(|p| p.files.clone()).unwrap_or_default();
    watched_files.extend(limit_files);
    watched_files.extend(contract_files);
    watched_files.append(&mut cert_facts.files);
    watched_files.extend(resolver.files());
    watched_files.sort();
    watched_files.dedup();
    Some(GatewayConfig {
        listen: listen?,
        tls: listen_tls,
        mask_upstream_errors,
        certificates: cert_facts.certs,
        upstreams: Arc::new(
            upstreams
                .iter()
                .map(|(name, upstream)| (Arc::from(*name), upstream.clone()))
                .collect(),
        ),
        admin,
        server,
        request_timeout,
        normalize: Arc::new(normalize),
        route_count: routes.len(),
        upstream_count: upstreams.len(),
        routes: Arc::new(RouteTable::new(routes)),
        cors: cors::compile(&raw.cors, problems),
        headers: Arc::new(headers),
        events,
        authenticator: identity.authenticator,
        forward: identity.forward,
        max_token_lifetime: identity.max_lifetime,
        revocations: identity.revocations,
        watched_files,
        contract,
        inventory: shared.inventory.clone(),
        rate_limiting,
        authorizer: policy.map(|p| p.authorizer),
        warnings,
    })
}

fn socket_addr(
    path: &str,
    text: &Text,
    resolver: &secret::Resolver,
    problems: &mut Problems,
) -> Option<SocketAddr> {
    let value = resolver.text(path, text, problems)?;
    match value.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            problems.at(
                path,
                text,
                format!("`{value}` is not an address like 127.0.0.1:8080"),
            );
            None
        }
    }
}

/// What compiling an upstream needs besides its own section.
struct UpstreamContext<'a> {
    base_dir: &'a Path,
    resolver: &'a secret::Resolver,
    trust: &'a portcullis::outbound::Trust,
    shared: &'a Shared,
}

fn compile_upstream(
    name: &str,
    raw: &raw::RawUpstream,
    path: &str,
    context: &UpstreamContext<'_>,
    cert_facts: &mut tls::CertFacts,
    problems: &mut Problems,
) -> Option<Upstream> {
    let resolver = context.resolver;
    let url_path = format!("{path}.url");
    let url = resolver.text(&url_path, &raw.url, problems)?;
    let Ok(uri) = url.parse::<Uri>() else {
        problems.at(url_path, &raw.url, format!("`{url}` is not a URL"));
        return None;
    };
    let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
        problems.at(
            url_path,
            &raw.url,
            format!("`{url}` needs a scheme and host, like http://127.0.0.1:8081"),
        );
        return None;
    };
    if scheme != &Scheme::HTTP && scheme != &Scheme::HTTPS {
        problems.at(
            url_path,
            &raw.url,
            format!("unsupported scheme `{scheme}` (use http or https)"),
        );
        return None;
    }
    if uri.query().is_some() || authority.as_str().contains('@') {
        problems.at(
            url_path,
            &raw.url,
            "an upstream URL may not carry a query or credentials",
        );
        return None;
    }
    let host = match &raw.host {
        None => HostRule::Upstream,
        Some(text) => match text.value.as_str() {
            "upstream" => HostRule::Upstream,
            "preserve" => HostRule::Preserve,
            literal => match literal.parse::<Authority>() {
                Ok(a) if !a.as_str().contains('@') => {
                    HostRule::Literal(HeaderValue::from_str(a.as_str()).ok()?)
                }
                _ => {
                    problems.at(
                        format!("{path}.host"),
                        text,
                        format!("`{literal}` is not upstream, preserve, or a host name"),
                    );
                    return None;
                }
            },
        },
    };
    let tls = match &raw.tls {
        Some(section) if scheme != &Scheme::HTTPS => {
            problems.add(
                format!("{path}.tls"),
                line_of(&section.referenced),
                "`tls` applies to https upstreams only",
            );
            return None;
        }
        Some(section) => Some(tls::compile_upstream(
            name,
            &section.value,
            &format!("{path}.tls"),
            context.base_dir,
            resolver,
            cert_facts,
            problems,
        )?),
        None => None,
    };
    let pooled = crate::upstream_pool::pooled_upstream(
        &context.shared.upstream_clients,
        context.trust,
        tls.as_ref(),
    )
    .map_err(|e| problems.add(path.to_string(), line_of(&raw.url.referenced), e))
    .ok()?;
    let client_cert = match (&pooled.client_cert, tls.and_then(|t| t.client_cert)) {
        (Some(holder), Some((key, _, _))) => Some((holder.clone(), key)),
        _ => None,
    };
    Some(Upstream {
        name: name.to_string(),
        scheme: scheme.clone(),
        authority: authority.clone(),
        base_path: uri.path().trim_end_matches('/').to_string(),
        timeout: raw.timeout.map_or(Duration::from_secs(30), |d| d.0),
        host,
        client: pooled.client,
        client_cert,
    })
}

type Upstreams<'a> = (
    &'a BTreeMap<&'a str, Arc<Upstream>>,
    &'a BTreeMap<String, raw::RawUpstream>,
);

/// What a route may rely on being configured.
#[derive(Clone, Copy)]
struct RouteContext {
    identity: bool,
    policy: bool,
    /// The listener asks for client certificates.
    client_certificates: bool,
}

fn compile_route(
    i: usize,
    raw: &raw::RawRoute,
    (upstreams, declared): Upstreams<'_>,
    context: RouteContext,
    resolver: &secret::Resolver,
    problems: &mut Problems,
) -> Option<Route> {
    let path = format!("routes[{i}]");
    let route_line = line_of(&raw.matcher.referenced);
    let mode = match raw.auth.as_ref().map(|a| a.value.as_str()) {
        None | Some("required") => AuthMode::Required,
        Some("optional") => AuthMode::Optional,
        Some("none") => AuthMode::None,
        Some(other) => {
            if let Some(auth) = &raw.auth {
                problems.at(
                    format!("{path}.auth"),
                    auth,
                    format!("unknown value `{other}` (use required, optional or none)"),
                );
            }
            AuthMode::Required
        }
    };
    if mode != AuthMode::None && !context.identity {
        problems.add(
            format!("{path}.auth"),
            raw.auth.as_ref().map_or(route_line, |a| line_of(&a.referenced)),
            "the route requires authentication (the default) but no `identity.jwt` issuer is configured; configure one, or write `auth: none` to make the route public",
        );
    }
    if mode != AuthMode::None && context.identity && !context.policy {
        problems.add(
            format!("{path}.auth"),
            raw.auth.as_ref().map_or(route_line, |a| line_of(&a.referenced)),
            "the route requires authentication, so it needs a policy decision too; configure `policy`, or write `auth: none` to make the route public",
        );
    }
    let scopes = compile_scopes(&path, raw.scopes.as_ref(), mode, problems);
    let mut client_identities = Vec::new();
    for (j, text) in raw.client_identities.iter().flatten().enumerate() {
        match IdentityPattern::parse(&text.value) {
            Ok(pattern) => client_identities.push(pattern),
            Err(e) => problems.at(
                format!("{path}.client_identities[{j}]"),
                text,
                format!("`{}` {e}", text.value),
            ),
        }
    }
    if raw.client_identities.as_ref().is_some_and(|l| l.is_empty()) {
        problems.add(
            format!("{path}.client_identities"),
            route_line,
            "is empty; list the identities that may call, or remove it",
        );
    }
    if raw.client_identities.is_some() && !context.client_certificates {
        problems.add(
            format!("{path}.client_identities"),
            route_line,
            "needs client certificates: set `listen.tls.client_ca`",
        );
    }
    let authz = (mode != AuthMode::None).then(|| compile_authz(&path, raw, route_line, problems));
    let limit = raw
        .rate_limit
        .as_ref()
        .and_then(|r| ratelimit::rule("route", &format!("{path}.rate_limit"), r, problems));
    if mode == AuthMode::None && (raw.resource.is_some() || raw.require_mfa.is_some()) {
        problems.add(
            path.to_string(),
            route_line,
            "`resource` and `require_mfa` need authentication, but the route says `auth: none`",
        );
    }
    let m = &raw.matcher.value;
    let pattern = match (&m.path, &m.prefix) {
        (Some(p), None) => {
            let value = resolver.text(&format!("{path}.match.path"), p, problems)?;
            PathPattern::template(&value)
                .map_err(|e| problems.at(format!("{path}.match.path"), p, format!("`{value}` {e}")))
                .ok()
        }
        (None, Some(p)) => {
            let value = resolver.text(&format!("{path}.match.prefix"), p, problems)?;
            PathPattern::prefix(&value)
                .map_err(|e| {
                    problems.at(format!("{path}.match.prefix"), p, format!("`{value}` {e}"))
                })
                .ok()
        }
        _ => {
            problems.add(
                format!("{path}.match"),
                route_line,
                "needs exactly one of `path` or `prefix`",
            );
            None
        }
    };
    let endpoint = match (&m.path, &m.prefix) {
        (Some(p), _) => p.value.clone(),
        (_, Some(p)) => format!("{}*", p.value),
        _ => String::new(),
    };
    let methods = m.methods.as_ref().map(|methods| {
        methods
            .iter()
            .enumerate()
            .filter_map(|(j, text)| {
                let valid =
                    !text.value.is_empty() && text.value.bytes().all(|b| b.is_ascii_uppercase());
                match Method::from_bytes(text.value.as_bytes()) {
                    Ok(method) if valid => Some(method),
                    _ => {
                        problems.at(
                            format!("{path}.match.methods[{j}]"),
                            text,
                            format!("`{}` is not an HTTP method in upper case", text.value),
                        );
                        None
                    }
                }
            })
            .collect::<Vec<_>>()
    });
    let upstream = match upstreams.get(raw.upstream.value.as_str()) {
        Some(upstream) => Some(upstream.clone()),
        None if declared.contains_key(&raw.upstream.value) => None,
        None => {
            problems.at(
                format!("{path}.upstream"),
                &raw.upstream,
                format!(
                    "no upstream named `{}` is defined under `upstreams`",
                    raw.upstream.value
                ),
            );
            None
        }
    };
    Some(Route {
        endpoint: Arc::from(endpoint),
        pattern: pattern?,
        methods,
        policy: RoutePolicy {
            auth: RouteAuth {
                mode,
                scopes,
                client_identities,
            },
            authz,
            limit,
        },
        upstream: Arc::from(upstream?.name.as_str()),
    })
}

fn compile_authz(
    path: &str,
    raw: &raw::RawRoute,
    line: Option<u64>,
    problems: &mut Problems,
) -> RouteAuthz {
    let pattern = raw
        .matcher
        .value
        .path
        .as_ref()
        .or(raw.matcher.value.prefix.as_ref());
    // By default the resource type is the last literal segment: /api/items/{id} -> items.
    let default_type = pattern
        .map(|p| {
            p.value
                .split('/')
                .rev()
                .find(|s| !s.is_empty() && !s.starts_with('{'))
                .unwrap_or("root")
                .to_string()
        })
        .unwrap_or_default();
    let resource_type = raw
        .resource
        .as_ref()
        .and_then(|r| r.kind.clone())
        .unwrap_or(default_type);
    let resource_id = raw.resource.as_ref().and_then(|r| r.id.clone());
    if let (Some(id), Some(p)) = (&resource_id, pattern) {
        let mut rest = id.as_str();
        while let Some(start) = rest.find('{') {
            let end = rest[start..].find('}').map_or(rest.len(), |e| start + e);
            let name = rest.get(start + 1..end).unwrap_or_default();
            if !p.value.contains(&format!("{{{name}}}")) {
                problems.add(
                    format!("{path}.resource.id"),
                    line,
                    format!("`{{{name}}}` is not a parameter of the route's path"),
                );
            }
            rest = rest.get(end + 1..).unwrap_or_default();
        }
    }
    let mut require_mfa = Vec::new();
    for (j, text) in raw.require_mfa.iter().flatten().enumerate() {
        match Method::from_bytes(text.value.as_bytes()) {
            Ok(m) if text.value.bytes().all(|b| b.is_ascii_uppercase()) => require_mfa.push(m),
            _ => problems.at(
                format!("{path}.require_mfa[{j}]"),
                text,
                "is not an HTTP method in upper case",
            ),
        }
    }
    RouteAuthz {
        resource_type,
        resource_id,
        require_mfa,
    }
}

fn compile_scopes(
    path: &str,
    raw: Option<&serde_saphyr::Spanned<raw::RawScopes>>,
    mode: AuthMode,
    problems: &mut Problems,
) -> ScopeRule {
    let Some(raw) = raw else {
        return ScopeRule::Any;
    };
    let line = line_of(&raw.referenced);
    if mode == AuthMode::None {
        problems.add(
            format!("{path}.scopes"),
            line,
            "scopes need authentication, but the route says `auth: none`",
        );
    }
    match &raw.value {
        raw::RawScopes::All(list) => ScopeRule::All(list.clone()),
        raw::RawScopes::PerMethod(map) => ScopeRule::PerMethod(
            map.iter()
                .filter_map(
                    |(method, list)| match Method::from_bytes(method.as_bytes()) {
                        Ok(m) if method.bytes().all(|b| b.is_ascii_uppercase()) => {
                            Some((m, list.clone()))
                        }
                        _ => {
                            problems.add(
                                format!("{path}.scopes.{method}"),
                                line,
                                "is not an HTTP method in upper case",
                            );
                            None
                        }
                    },
                )
                .collect(),
        ),
    }
}

fn compile_headers(
    map: &BTreeMap<String, serde_saphyr::Spanned<raw::HeaderSetting>>,
    problems: &mut Problems,
) -> SecurityHeaders {
    let mut set = Vec::new();
    let mut remove = Vec::new();
    for (name, setting) in map {
        let path = format!("headers.{name}");
        let line = line_of(&setting.referenced);
        match (name.as_str(), &setting.value) {
            ("remove", raw::HeaderSetting::List(names)) => {
                for n in names {
                    match HeaderName::from_bytes(n.as_bytes()) {
                        Ok(h) => remove.push(h),
                        Err(_) => problems.add(&path, line, format!("`{n}` is not a header name")),
                    }
                }
            }
            ("remove", _) => problems.add(&path, line, "must be a list of header names"),
            (_, raw::HeaderSetting::Value(value)) => {
                match (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(value),
                ) {
                    (Ok(n), Ok(v)) => set.push((n, v)),
                    (Err(_), _) => {
                        problems.add(&path, line, format!("`{name}` is not a header name"))
                    }
                    (_, Err(_)) => problems.add(&path, line, "is not a valid header value"),
                }
            }
            (_, raw::HeaderSetting::List(_)) => problems.add(&path, line, "must be a single value"),
        }
    }
    SecurityHeaders::new(set, remove)
}

#[cfg(test)]
mod tests;
