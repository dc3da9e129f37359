//! Configuration: the YAML file (SPEC §2) read into [`raw`] types, then compiled into the
//! runtime [`GatewayConfig`], collecting every problem with its key path and line.

mod alerts;
mod cors;
pub mod duration;
mod headers;
mod identity;
mod login;
mod monitoring;
mod policy;
mod problems;
mod ratelimit;
pub mod raw;
mod routes;
mod runtime;
mod secret;
mod tls;
mod upstream;
mod validation;

pub use identity::Shared;
pub use tls::WatchedCert;

pub use problems::{ConfigError, Problem};
pub use runtime::{
    AdminSettings, GatewayConfig, HostRule, Http2Limits, ServerLimits, TraceSettings, Upstream,
    UpstreamMap,
};

use headers::compile_headers;
use portcullis::authn::AuthMode;
use portcullis::headers::SecurityHeaders;
use portcullis::net::{IpNet, TrustedProxies};
use portcullis::normalize::NormalizeSettings;
use portcullis::route::RouteTable;
use portcullis::timeout::RequestTimeoutLayer;
use problems::{Problems, line_of, one_line, split_location};
use raw::RawConfig;
use routes::{RouteContext, compile_route};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use upstream::{UpstreamContext, compile_upstream, socket_addr};

/// `listen.client_cert_header`: a header name, believed only from `trusted_proxies`.
fn client_cert_header(
    raw: &RawConfig,
    has_trusted: bool,
    resolver: &secret::Resolver,
    problems: &mut Problems,
) -> Option<http::HeaderName> {
    let text = raw.listen.client_cert_header.as_ref()?;
    let path = "listen.client_cert_header";
    let value = resolver.text(path, text, problems)?;
    let Ok(name) = http::HeaderName::from_bytes(value.as_bytes()) else {
        problems.at(path, text, format!("`{value}` is not a header name"));
        return None;
    };
    if !has_trusted {
        problems.at(
            path,
            text,
            "is set but listen.trusted_proxies is empty, so it would never be believed; list the proxies that send it",
        );
    }
    Some(name)
}

/// Largest configuration file read (a bound on untrusted-ish input).
const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

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

fn compile(
    raw: RawConfig,
    base_dir: &Path,
    shared: &Shared,
    problems: &mut Problems,
) -> Option<GatewayConfig> {
    let resolver = secret::Resolver::new(base_dir);
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
    // Defaults live with the types they belong to: the library's for what its layers
    // enforce, the gateway's runtime types for its own listener.
    let normalize_defaults = NormalizeSettings::default();
    let server_defaults = ServerLimits::default();
    let max_header_bytes = positive(
        problems,
        "limits.max_header_bytes",
        limits.max_header_bytes.as_ref(),
        normalize_defaults.max_header_bytes,
    );
    let max_header_count = positive(
        problems,
        "limits.max_header_count",
        limits.max_header_count.as_ref(),
        normalize_defaults.max_header_count,
    );
    let max_uri_bytes = positive(
        problems,
        "limits.max_uri_bytes",
        limits.max_uri_bytes.as_ref(),
        normalize_defaults.max_uri_bytes,
    );
    let max_connections = positive(
        problems,
        "limits.max_connections",
        limits.max_connections.as_ref(),
        server_defaults.max_connections,
    );
    let dur = |d: Option<duration::ConfigDuration>, default: Duration| d.map_or(default, |d| d.0);
    let max_body_bytes = limits
        .max_body_bytes
        .as_ref()
        .map_or(normalize_defaults.max_body_bytes, |s| s.value);
    let h2 = server_defaults.http2;
    let websocket =
        routes::websocket_limits(&limits.websocket, server_defaults.websocket, problems);
    let server = ServerLimits {
        websocket,
        lingering_close: dur(limits.lingering_close, server_defaults.lingering_close),
        linger_max_bytes: max_body_bytes,
        header_read_timeout: dur(
            limits.header_read_timeout,
            server_defaults.header_read_timeout,
        ),
        max_connections,
        max_header_bytes,
        max_header_count,
        http2: Http2Limits {
            max_concurrent_streams: limits
                .http2
                .max_concurrent_streams
                .unwrap_or(h2.max_concurrent_streams),
            max_header_list_bytes: limits
                .http2
                .max_header_list_bytes
                .unwrap_or(h2.max_header_list_bytes),
            max_pending_resets: limits
                .http2
                .max_pending_resets
                .unwrap_or(h2.max_pending_resets),
            max_control_frames_per_second: positive(
                problems,
                "limits.http2.max_control_frames_per_second",
                limits.http2.max_control_frames_per_second.as_ref(),
                h2.max_control_frames_per_second,
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
    let client_cert_header = client_cert_header(&raw, !trusted.is_empty(), &resolver, problems);
    let normalize = NormalizeSettings {
        hosts,
        client_cert_header,
        max_uri_bytes,
        max_header_bytes,
        max_header_count,
        max_body_bytes,
        body_read_timeout: dur(
            limits.body_read_timeout,
            normalize_defaults.body_read_timeout,
        ),
        trusted_proxies: TrustedProxies::new(trusted),
    };
    let request_timeout = dur(limits.request_timeout, RequestTimeoutLayer::DEFAULT);
    let max_json_string_bytes = positive(
        problems,
        "limits.max_json_string_bytes",
        limits.max_json_string_bytes.as_ref(),
        portcullis::json::JsonLimits::default().max_string_bytes,
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

    let (rate_limiting, limit_files) = ratelimit::compile(
        raw.rate_limit.as_ref(),
        base_dir,
        &resolver,
        shared,
        problems,
    );
    let identity = identity::compile(
        raw.identity.as_ref(),
        &rate_limiting.limiter,
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
    let sessions = raw
        .identity
        .as_ref()
        .and_then(|i| i.oidc_login.as_ref())
        .and_then(|login| {
            let context = login::LoginContext {
                resolver: &resolver,
                shared,
                client: &client,
                limiter: &rate_limiting.limiter,
                mfa_acr_values: policy
                    .as_ref()
                    .map_or_else(|| vec!["mfa".into()], |p| p.authorizer.mfa_acr_values.clone()),
            };
            let sessions = login::compile(login, &context, problems)?;
            let issuer = sessions.provider.issuer();
            let verified = identity
                .authenticator
                .issuers()
                .iter()
                .any(|i| i.issuer == issuer)
                || raw.identity.as_ref().is_some_and(|i| {
                    i.introspection.is_some() || i.jwt.iter().any(|j| j.issuer.value == issuer)
                });
            if !verified {
                problems.at(
                    "identity.oidc_login.issuer",
                    &login.issuer,
                    "the sessions' access tokens are verified like bearer tokens: add an `identity.jwt` entry for this issuer (or `identity.introspection`)",
                );
            }
            Some(sessions)
        });
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
            sessions: sessions.is_some(),
        };
        if let Some(route) = compile_route(i, route, declared, context, &resolver, problems) {
            let mut warn = |message: String| {
                warnings.push(Problem {
                    path: format!("routes[{i}]"),
                    line: raw
                        .routes
                        .get(i)
                        .and_then(|r| line_of(&r.matcher.referenced)),
                    message,
                });
            };
            if route.policy.auth.mode == AuthMode::None {
                warn(format!(
                    "`{}` is public (auth: none): anyone can call it",
                    route.endpoint
                ));
            }
            if route.policy.grpc && raw.validation.is_some() {
                warn(format!(
                    "`{}` leads to a gRPC upstream: `validation` does not check gRPC calls (protobuf bodies), only the other routes",
                    route.endpoint
                ));
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

    let events = monitoring::events(&raw.monitoring, base_dir, &resolver, problems);
    let detection = monitoring::detection(&raw.monitoring, problems);
    let traces = raw
        .monitoring
        .traces
        .as_ref()
        .and_then(|t| monitoring::traces(t, &resolver, &client, problems));
    let templates = monitoring::templates(&raw.monitoring, problems);
    let detectors = detection.any().then(|| {
        shared.detectors(
            detection,
            templates.clone().unwrap_or_default(),
            rate_limiting.tracker.clone(),
        )
    });
    let alerts = raw
        .monitoring
        .alerts
        .as_ref()
        .and_then(|section| alerts::compile(section, &resolver, problems))
        .map(|settings| (settings, client.clone()));

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
        alerts,
        detectors,
        traces,
        templates,
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
        websockets: shared.websockets.clone(),
        rate_limiting,
        authorizer: policy.map(|p| p.authorizer),
        sessions,
        warnings,
    })
}

#[cfg(test)]
mod tests;
