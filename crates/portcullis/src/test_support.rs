//! Test support for the layers' unit tests: a stub inner service that counts its calls, so
//! that every refusal test can prove the service behind the layer was never reached.

use crate::authn::settings::{AuthMode, RouteAuth, ScopeRule};
use crate::body::{self, Body};
use crate::denial::Denial;
use crate::route::{PathPattern, Route, RouteMatch, RoutePolicy};
use http::{Request, Response};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

/// Answers 200 with an empty body and counts the requests it saw.
#[derive(Debug, Clone, Default)]
pub struct Counting {
    calls: Arc<AtomicUsize>,
}

impl Counting {
    /// Requests that reached the stub.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl<B> tower::Service<Request<B>> for Counting {
    type Response = Response<Body>;
    type Error = Denial;
    type Future = std::future::Ready<Result<Response<Body>, Denial>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<B>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(Response::new(body::empty())))
    }
}

/// A request with an empty body.
pub fn request(method: &str, uri: &str) -> Request<http_body_util::Empty<bytes::Bytes>> {
    Request::builder()
        .method(method)
        .uri(uri)
        .body(http_body_util::Empty::new())
        .unwrap_or_default()
}

/// The policy of a public route: no authentication, no decision, no own limit.
pub fn public_policy() -> RoutePolicy {
    RoutePolicy {
        auth: RouteAuth {
            mode: AuthMode::None,
            scopes: ScopeRule::Any,
            client_identities: Vec::new(),
        },
        authz: None,
        limit: None,
        websocket: None,
        grpc: false,
    }
}

/// `req` as the route layer leaves it: matched to a route with this policy and these path
/// parameters.
pub fn routed<B>(
    mut req: Request<B>,
    template: &str,
    policy: RoutePolicy,
    params: &[(&str, &str)],
) -> Request<B> {
    let route = Route {
        endpoint: Arc::from(template),
        // The match is inserted as the route layer would; the pattern is never consulted.
        pattern: PathPattern::Prefix("/".into()),
        methods: None,
        policy,
        upstream: Arc::from("test"),
    };
    req.extensions_mut().insert(RouteMatch {
        route: Arc::new(route),
        params: params
            .iter()
            .map(|(k, v)| (Arc::from(*k), v.to_string()))
            .collect(),
    });
    req
}
