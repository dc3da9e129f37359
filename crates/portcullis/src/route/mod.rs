//! Routing: the first route whose path pattern and method match wins; a path that matches
//! no route is 404 and a path matched only under other methods is 405 with `Allow`. The
//! match, with the route's [`RoutePolicy`], travels on as a request extension.

mod pattern;
mod table;

pub use pattern::{PathPattern, PatternError, Segment};
pub use table::{Route, RouteMatch, RouteMiss, RoutePolicy, RouteTable};

use crate::denial::Denial;
use crate::future::ResponseFuture;
use crate::scope::RequestScope;
use http::Request;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// Routes every request through a [`RouteTable`], inserting the [`RouteMatch`].
#[derive(Debug, Clone)]
pub struct RouteLayer {
    table: Arc<RouteTable>,
}

impl RouteLayer {
    /// A layer routing through `table`.
    pub fn new(table: Arc<RouteTable>) -> Self {
        RouteLayer { table }
    }
}

impl<S> Layer<S> for RouteLayer {
    type Service = Router<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Router {
            inner,
            table: self.table.clone(),
        }
    }
}

/// The service produced by [`RouteLayer`].
#[derive(Debug, Clone)]
pub struct Router<S> {
    inner: S,
    table: Arc<RouteTable>,
}

impl<S, B> Service<Request<B>> for Router<S>
where
    S: Service<Request<B>, Error = Denial>,
{
    type Response = S::Response;
    type Error = Denial;
    type Future = ResponseFuture<S::Future, S::Response>;

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
                // An upgrade is refused here if the route does not take it: never a silent
                // strip that would leave the client waiting for a 101.
                if let Some(handshake) = req.extensions().get::<crate::websocket::Handshake>() {
                    let host = req
                        .headers()
                        .get(http::header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .or_else(|| req.uri().authority().map(|a| a.as_str()));
                    if let Err(denial) =
                        handshake.check(matched.route.policy.websocket.as_ref(), host)
                    {
                        return ResponseFuture::denied(denial);
                    }
                }
                req.extensions_mut().insert(matched);
                ResponseFuture::inner(self.inner.call(req))
            }
            Err(miss) => {
                if let Some(scope) = scope {
                    scope
                        .set_endpoint(miss.endpoint.unwrap_or_else(|| Arc::from(req.uri().path())));
                }
                ResponseFuture::denied(miss.denial)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn table() -> RouteTable {
        let route = |pattern: PathPattern, methods: Option<Vec<Method>>, target: &str| Route {
            endpoint: Arc::from(target),
            pattern,
            methods,
            policy: crate::test_support::public_policy(),
            upstream: Arc::from(target),
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

    fn target(method: Method, path: &str) -> Result<String, &'static str> {
        table()
            .find(&method, path)
            .map(|m| m.route.upstream.to_string())
            .map_err(|miss| miss.denial.reason())
    }

    #[test]
    fn first_match_wins_and_binds_params() {
        assert_eq!(target(Method::GET, "/api/items"), Ok("items".into()));
        assert_eq!(
            target(Method::DELETE, "/api/items/7"),
            Ok("item-delete".into())
        );
        let found = table().find(&Method::GET, "/api/items/42");
        let params = found.map(|m| m.params).unwrap_or_default();
        assert_eq!(
            params.first().map(|(k, v)| (&**k, v.as_str())),
            Some(("id", "42"))
        );
        assert_eq!(
            target(Method::PATCH, "/api/public/a/b"),
            Ok("public".into())
        );
        assert_eq!(target(Method::GET, "/"), Ok("root".into()));
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
