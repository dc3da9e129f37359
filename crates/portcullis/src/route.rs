//! Routing: the first route whose path pattern and method match wins; a path that matches
//! no route is 404 and a path matched only under other methods is 405 with `Allow`.

use crate::denial::{Denial, DenialOr};
use crate::scope::RequestScope;
use http::{Method, Request};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// How a route matches paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    /// A template such as `/api/items/{id}`: every segment must match.
    Template(Vec<Segment>),
    /// Everything at or below a prefix such as `/api/public/`.
    Prefix(String),
}

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Must equal the text exactly.
    Literal(String),
    /// Matches any one non-empty segment and binds it to the name.
    Param(Arc<str>),
}

/// Why a route pattern is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The pattern does not start with `/`.
    #[error("must start with /")]
    NotAbsolute,
    /// A `{...}` segment is malformed or its name is not an identifier.
    #[error("`{0}` is not a valid {{param}} segment")]
    BadParam(String),
    /// Two parameters have the same name.
    #[error("parameter `{0}` appears twice")]
    DuplicateParam(String),
    /// The pattern is not in canonical form, so no normalised request path could match it.
    #[error("is not in canonical form (dot segments, empty segments or escapes)")]
    NotCanonical,
}

impl PathPattern {
    /// Parses a template like `/api/items/{id}`.
    pub fn template(template: &str) -> Result<Self, PatternError> {
        let rest = template
            .strip_prefix('/')
            .ok_or(PatternError::NotAbsolute)?;
        let mut segments = Vec::new();
        let mut names: Vec<Arc<str>> = Vec::new();
        if rest.is_empty() {
            return Ok(PathPattern::Template(segments));
        }
        for part in rest.split('/') {
            if let Some(inner) = part.strip_prefix('{') {
                let name = inner
                    .strip_suffix('}')
                    .filter(|n| is_identifier(n))
                    .ok_or_else(|| PatternError::BadParam(part.to_string()))?;
                if names.iter().any(|n| &**n == name) {
                    return Err(PatternError::DuplicateParam(name.to_string()));
                }
                let name: Arc<str> = Arc::from(name);
                names.push(name.clone());
                segments.push(Segment::Param(name));
            } else if part.contains(['{', '}']) {
                return Err(PatternError::BadParam(part.to_string()));
            } else {
                segments.push(Segment::Literal(part.to_string()));
            }
        }
        let literal_form = template.replace(['{', '}'], "");
        if !is_canonical(&literal_form) {
            return Err(PatternError::NotCanonical);
        }
        Ok(PathPattern::Template(segments))
    }

    /// Parses a prefix like `/api/public/`.
    pub fn prefix(prefix: &str) -> Result<Self, PatternError> {
        if !prefix.starts_with('/') {
            return Err(PatternError::NotAbsolute);
        }
        if !is_canonical(prefix) {
            return Err(PatternError::NotCanonical);
        }
        Ok(PathPattern::Prefix(prefix.to_string()))
    }

    /// Matches a canonical path, returning the bound parameters.
    pub(crate) fn matches(&self, path: &str) -> Option<Vec<(Arc<str>, String)>> {
        match self {
            PathPattern::Prefix(prefix) => {
                let rest = path.strip_prefix(prefix.as_str())?;
                let boundary = rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/');
                boundary.then(Vec::new)
            }
            PathPattern::Template(segments) => {
                let rest = path.strip_prefix('/')?;
                // The root path has no segments at all, not one empty segment.
                let mut parts = (!rest.is_empty())
                    .then(|| rest.split('/'))
                    .into_iter()
                    .flatten();
                let mut params = Vec::new();
                for segment in segments {
                    let part = parts.next()?;
                    match segment {
                        Segment::Literal(text) if text == part => {}
                        Segment::Param(name) if !part.is_empty() => {
                            params.push((name.clone(), part.to_string()));
                        }
                        _ => return None,
                    }
                }
                parts.next().is_none().then_some(params)
            }
        }
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_canonical(path: &str) -> bool {
    crate::normalize::canonical_path(path).is_ok_and(|c| c == path)
}

/// One route: a path pattern, the methods it accepts and what it leads to.
#[derive(Debug)]
pub struct Route<T> {
    /// The pattern as written in the configuration, used as the endpoint name.
    pub endpoint: Arc<str>,
    /// How paths are matched.
    pub pattern: PathPattern,
    /// Accepted methods; `None` accepts every method.
    pub methods: Option<Vec<Method>>,
    /// What the route leads to (for the gateway: the upstream and per-route settings).
    pub target: T,
}

/// The route that matched a request, with its path parameters.
#[derive(Debug)]
pub struct RouteMatch<T> {
    /// The matched route.
    pub route: Arc<Route<T>>,
    /// Values of the template's `{param}` segments, in order.
    pub params: Vec<(Arc<str>, String)>,
}

impl<T> Clone for RouteMatch<T> {
    fn clone(&self) -> Self {
        RouteMatch {
            route: self.route.clone(),
            params: self.params.clone(),
        }
    }
}

/// An ordered list of routes.
#[derive(Debug)]
pub struct RouteTable<T> {
    routes: Vec<Arc<Route<T>>>,
}

impl<T> RouteTable<T> {
    /// A table that tries `routes` in order.
    pub fn new(routes: Vec<Route<T>>) -> Self {
        RouteTable {
            routes: routes.into_iter().map(Arc::new).collect(),
        }
    }

    /// The first route matching the method and canonical path.
    pub fn find(&self, method: &Method, path: &str) -> Result<RouteMatch<T>, RouteMiss> {
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

/// Routes every request through a [`RouteTable`], inserting the [`RouteMatch`].
#[derive(Debug)]
pub struct RouteLayer<T> {
    table: Arc<RouteTable<T>>,
}

impl<T> Clone for RouteLayer<T> {
    fn clone(&self) -> Self {
        RouteLayer {
            table: self.table.clone(),
        }
    }
}

impl<T> RouteLayer<T> {
    /// A layer routing through `table`.
    pub fn new(table: Arc<RouteTable<T>>) -> Self {
        RouteLayer { table }
    }
}

impl<S, T> Layer<S> for RouteLayer<T> {
    type Service = Router<S, T>;

    fn layer(&self, inner: S) -> Self::Service {
        Router {
            inner,
            table: self.table.clone(),
        }
    }
}

/// The service produced by [`RouteLayer`].
#[derive(Debug)]
pub struct Router<S, T> {
    inner: S,
    table: Arc<RouteTable<T>>,
}

impl<S: Clone, T> Clone for Router<S, T> {
    fn clone(&self) -> Self {
        Router {
            inner: self.inner.clone(),
            table: self.table.clone(),
        }
    }
}

impl<S, T, B> Service<Request<B>> for Router<S, T>
where
    S: Service<Request<B>, Error = Denial>,
    T: Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = Denial;
    type Future = DenialOr<S::Future, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let found = self.table.find(req.method(), req.uri().path());
        let scope = req.extensions().get::<Arc<RequestScope>>();
        match found {
            Ok(matched) => {
                if let Some(scope) = scope {
                    scope.set_route(matched.route.endpoint.clone());
                }
                req.extensions_mut().insert(matched);
                DenialOr::inner(self.inner.call(req))
            }
            Err(miss) => {
                if let Some(scope) = scope {
                    scope
                        .set_endpoint(miss.endpoint.unwrap_or_else(|| Arc::from(req.uri().path())));
                }
                DenialOr::denied(miss.denial)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable<&'static str> {
        let route = |pattern: PathPattern, methods: Option<Vec<Method>>, target| Route {
            endpoint: Arc::from(target),
            pattern,
            methods,
            target,
        };
        let template = |t| PathPattern::template(t).unwrap_or(PathPattern::Prefix("/never".into()));
        RouteTable::new(vec![
            route(
                template("/api/items"),
                Some(vec![Method::GET, Method::POST]),
                "items",
            ),
            route(
                template("/api/items/{id}"),
                Some(vec![Method::GET]),
                "item-read",
            ),
            route(
                template("/api/items/{id}"),
                Some(vec![Method::DELETE]),
                "item-delete",
            ),
            route(PathPattern::Prefix("/api/public/".into()), None, "public"),
            route(template("/"), Some(vec![Method::GET]), "root"),
        ])
    }

    fn target(method: Method, path: &str) -> Result<&'static str, &'static str> {
        table()
            .find(&method, path)
            .map(|m| m.route.target)
            .map_err(|miss| miss.denial.reason())
    }

    #[test]
    fn first_match_wins_and_binds_params() {
        assert_eq!(target(Method::GET, "/api/items"), Ok("items"));
        assert_eq!(target(Method::DELETE, "/api/items/7"), Ok("item-delete"));
        let found = table().find(&Method::GET, "/api/items/42");
        let params = found.map(|m| m.params).unwrap_or_default();
        assert_eq!(
            params.first().map(|(k, v)| (&**k, v.as_str())),
            Some(("id", "42"))
        );
        assert_eq!(target(Method::PATCH, "/api/public/a/b"), Ok("public"));
        assert_eq!(target(Method::GET, "/"), Ok("root"));
    }

    #[test]
    fn misses_are_404_or_405() {
        assert_eq!(target(Method::GET, "/api/items/1/extra"), Err("no_route"));
        assert_eq!(target(Method::GET, "/api/publicity"), Err("no_route"));
        assert_eq!(target(Method::GET, "/api/items/"), Err("no_route"));
        let miss = table()
            .find(&Method::PUT, "/api/items/1")
            .expect_err("a miss");
        assert_eq!(miss.endpoint.as_deref(), Some("item-read"));
        match miss.denial {
            Denial::MethodNotAllowed { allow } => {
                assert_eq!(allow, vec![Method::GET, Method::DELETE])
            }
            other => panic!("expected 405, got {other:?}"),
        }
    }

    #[test]
    fn bad_patterns_refused() {
        assert_eq!(PathPattern::template("api"), Err(PatternError::NotAbsolute));
        assert!(matches!(
            PathPattern::template("/a/{b"),
            Err(PatternError::BadParam(_))
        ));
        assert!(matches!(
            PathPattern::template("/a/{x}/{x}"),
            Err(PatternError::DuplicateParam(_))
        ));
        assert_eq!(
            PathPattern::template("/a/../b"),
            Err(PatternError::NotCanonical)
        );
    }

    #[tokio::test]
    async fn unrouted_requests_never_reach_the_inner_service() {
        use crate::test_support::{Counting, request};
        use tower::{ServiceBuilder, ServiceExt};
        let stub = Counting::default();
        let service = ServiceBuilder::new()
            .layer(RouteLayer::new(Arc::new(table())))
            .service(stub.clone());
        let refused = service
            .clone()
            .oneshot(request("GET", "/nowhere"))
            .await
            .err();
        assert_eq!(refused, Some(Denial::NoRoute));
        let refused = service
            .clone()
            .oneshot(request("PUT", "/api/items"))
            .await
            .err();
        assert!(matches!(refused, Some(Denial::MethodNotAllowed { .. })));
        assert_eq!(stub.calls(), 0);
        assert!(
            service
                .oneshot(request("GET", "/api/items/7"))
                .await
                .is_ok()
        );
        assert_eq!(stub.calls(), 1);
    }
}
