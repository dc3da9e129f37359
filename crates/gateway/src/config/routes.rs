//! Routes compiled from `routes:`: the match, the upstream, and the route's policy
//! (authentication, scopes, client identities, authorization, its own limit, WebSocket
//! upgrades), and `limits.websocket` beside the routes' WebSocket rules.

use super::{Problems, Upstream, line_of};
use super::{ratelimit, raw, secret};
use http::Method;
use portcullis::authn::mtls::IdentityPattern;
use portcullis::authn::{AuthMode, RouteAuth, ScopeRule};
use portcullis::authz::RouteAuthz;
use portcullis::route::{PathPattern, Route, RoutePolicy};
use portcullis::websocket::WebSocketRoute;
use std::collections::BTreeMap;
use std::sync::Arc;

pub(super) type Upstreams<'a> = (
    &'a BTreeMap<&'a str, Arc<Upstream>>,
    &'a BTreeMap<String, raw::RawUpstream>,
);

/// What a route may rely on being configured.
#[derive(Clone, Copy)]
pub(super) struct RouteContext {
    pub(super) identity: bool,
    pub(super) policy: bool,
    /// The listener asks for client certificates.
    pub(super) client_certificates: bool,
    /// `identity.oidc_login` is configured (browser sessions).
    pub(super) sessions: bool,
}

pub(super) fn compile_route(
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
        Some("session") => AuthMode::Session,
        Some(other) => {
            if let Some(auth) = &raw.auth {
                problems.at(
                    format!("{path}.auth"),
                    auth,
                    format!("unknown value `{other}` (use required, optional, none or session)"),
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
    if mode == AuthMode::Session && !context.sessions {
        problems.add(
            format!("{path}.auth"),
            raw.auth.as_ref().map_or(route_line, |a| line_of(&a.referenced)),
            "`auth: session` needs `identity.oidc_login` (the browser login the sessions come from)",
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
    let websocket = compile_websocket(&path, raw, route_line, methods.as_deref(), problems);
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
    let grpc = upstream.as_ref().is_some_and(|u| u.grpc);
    if grpc && websocket.is_some() {
        problems.add(
            format!("{path}.websocket"),
            route_line,
            "a gRPC upstream takes no WebSocket upgrades",
        );
    }
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
            websocket,
            grpc,
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

/// `websocket` and `websocket_origins`: the origins must be origins (`scheme://host[:port]`)
/// or `*`, and a route taking upgrades must take GET.
fn compile_websocket(
    path: &str,
    raw: &raw::RawRoute,
    line: Option<u64>,
    methods: Option<&[Method]>,
    problems: &mut Problems,
) -> Option<WebSocketRoute> {
    let enabled = raw.websocket.unwrap_or(false);
    if !enabled {
        if raw.websocket_origins.is_some() {
            problems.add(
                format!("{path}.websocket_origins"),
                line,
                "needs `websocket: true` (the route takes no upgrades)",
            );
        }
        return None;
    }
    if methods.is_some_and(|m| !m.contains(&Method::GET)) {
        problems.add(
            format!("{path}.websocket"),
            line,
            "a WebSocket handshake is a GET, which the route's methods leave out",
        );
    }
    let mut origins = Vec::new();
    for (j, text) in raw.websocket_origins.iter().flatten().enumerate() {
        let value = text.value.trim_end_matches('/');
        let is_origin = value == "*"
            || value.parse::<http::Uri>().is_ok_and(|uri| {
                uri.scheme().is_some()
                    && uri.authority().is_some()
                    && uri
                        .path_and_query()
                        .is_none_or(|p| p.as_str().is_empty() || p == "/")
            });
        if is_origin {
            origins.push(value.to_string());
        } else {
            problems.at(
                format!("{path}.websocket_origins[{j}]"),
                text,
                format!(
                    "`{}` is not an origin (scheme://host[:port], without a path) or `*`",
                    text.value
                ),
            );
        }
    }
    Some(WebSocketRoute { origins })
}

/// `limits.websocket`, each bound above zero.
pub(super) fn websocket_limits(
    raw: &raw::RawWebSocketLimits,
    defaults: portcullis::websocket::WebSocketLimits,
    problems: &mut Problems,
) -> portcullis::websocket::WebSocketLimits {
    let mut limits = defaults;
    match &raw.max_message_bytes {
        Some(n) if n.value == 0 => problems.add(
            "limits.websocket.max_message_bytes",
            line_of(&n.referenced),
            "must be greater than 0",
        ),
        Some(n) => limits.max_message_bytes = n.value,
        None => {}
    }
    for (name, value, slot) in [
        ("idle_timeout", raw.idle_timeout, &mut limits.idle_timeout),
        ("max_lifetime", raw.max_lifetime, &mut limits.max_lifetime),
    ] {
        match value {
            Some(d) if d.0.is_zero() => problems.add(
                format!("limits.websocket.{name}"),
                None,
                "must be longer than 0s",
            ),
            Some(d) => *slot = d.0,
            None => {}
        }
    }
    limits
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
