//! The route table: routes tried in order, the first whose path and method match wins.

use super::pattern::PathPattern;
use crate::authn::settings::RouteAuth;
use crate::authz::settings::RouteAuthz;
use crate::denial::Denial;
use crate::ratelimit::rule::LimitRule;
use http::Method;
use std::sync::Arc;

/// One route: a path pattern, the methods it accepts, what it asks of a caller and
/// where it leads.
#[derive(Debug)]
pub struct Route {
    /// The pattern as written in the configuration, used as the endpoint name.
    pub endpoint: Arc<str>,
    /// How paths are matched.
    pub pattern: PathPattern,
    /// Accepted methods; `None` accepts every method.
    pub methods: Option<Vec<Method>>,
    /// What the route asks of a caller: authentication, authorization, its own limit.
    pub policy: RoutePolicy,
    /// The name of what the route leads to (for the gateway: an upstream).
    pub upstream: Arc<str>,
}

/// What a route asks of every caller; the layers after routing read it from the
/// [`RouteMatch`] extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePolicy {
    /// Who may call it.
    pub auth: RouteAuth,
    /// What the policy is asked (`None` on public routes: no decision).
    pub authz: Option<RouteAuthz>,
    /// The route's own rate limit, on top of the default.
    pub limit: Option<LimitRule>,
    /// Whether WebSocket upgrades are allowed (`websocket: true`), from which origins.
    pub websocket: Option<crate::websocket::WebSocketRoute>,
    /// The route leads to a gRPC service: the policy action is the full method and the API
    /// contract (OpenAPI) does not apply. (Refusals are gRPC statuses for any request that
    /// says it is gRPC, routed or not.)
    pub grpc: bool,
}

/// The route that matched a request, with its path parameters.
#[derive(Debug, Clone)]
pub struct RouteMatch {
    /// The matched route.
    pub route: Arc<Route>,
    /// Values of the template's `{param}` segments, in order.
    pub params: Vec<(Arc<str>, String)>,
}

/// An ordered list of routes.
#[derive(Debug)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    /// A table that tries `routes` in order.
    pub fn new(routes: Vec<Route>) -> Self {
        RouteTable {
            routes: routes.into_iter().map(Arc::new).collect(),
        }
    }

    /// The first route matching the method and canonical path.
    pub fn find(&self, method: &Method, path: &str) -> Result<RouteMatch, RouteMiss> {
        let mut allow: Vec<Method> = Vec::new();
        let mut endpoint = None;
        for route in &self.routes {
            let Some(params) = route.pattern.matches(path) else {
                continue;
            };
            match &route.methods {
                Some(methods) if !methods.contains(method) => {
                    endpoint.get_or_insert_with(|| route.endpoint.clone());
                    for m in methods {
                        if !allow.contains(m) {
                            allow.push(m.clone());
                        }
                    }
                }
                _ => {
                    return Ok(RouteMatch {
                        route: route.clone(),
                        params,
                    });
                }
            }
        }
        Err(match endpoint {
            None => RouteMiss {
                denial: Denial::NoRoute,
                endpoint: None,
            },
            Some(endpoint) => RouteMiss {
                denial: Denial::MethodNotAllowed { allow },
                endpoint: Some(endpoint),
            },
        })
    }
}

/// Why no route took a request.
#[derive(Debug)]
pub struct RouteMiss {
    /// 404, or 405 with the allowed methods.
    pub denial: Denial,
    /// For a 405, the endpoint of the first route whose path matched.
    pub endpoint: Option<Arc<str>>,
}
