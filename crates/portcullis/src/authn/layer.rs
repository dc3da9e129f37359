//! [`AuthenticateLayer`]: credentials in exactly one place, verified, scoped, and the
//! identity passed upstream only as the gateway proved it.

use super::mtls::{ClientIdentity, IdentityPattern, any_matches};
use super::{Authenticator, Principal};
use crate::denial::Denial;
use crate::reason::{AuthFailure, CredentialProblem, ForbiddenReason};
use crate::route::RouteMatch;
use crate::scope::RequestScope;
use http::{HeaderName, HeaderValue, Method, Request, header};
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// Whether a route needs a caller identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// A valid token is required.
    Required,
    /// A token is verified if present; anonymous callers pass.
    Optional,
    /// Public: no authentication.
    None,
}

/// Which scopes a route requires.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ScopeRule {
    /// No scope is required.
    #[default]
    Any,
    /// Every listed scope is required, for every method.
    All(Vec<String>),
    /// Per method; a method not listed requires no scope.
    PerMethod(Vec<(Method, Vec<String>)>),
}

impl ScopeRule {
    fn required(&self, method: &Method) -> &[String] {
        match self {
            ScopeRule::Any => &[],
            ScopeRule::All(scopes) => scopes,
            ScopeRule::PerMethod(list) => list
                .iter()
                .find(|(m, _)| m == method)
                .map_or(&[], |(_, s)| s),
        }
    }
}

/// A route's authentication settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteAuth {
    /// Whether a token is needed.
    pub mode: AuthMode,
    /// Which scopes it must carry.
    pub scopes: ScopeRule,
    /// When not empty, the connection's client certificate must match one of these
    /// (whatever `mode` says): anything else is refused with 403.
    pub client_identities: Vec<IdentityPattern>,
}

/// Implemented by route targets that carry authentication settings.
pub trait RouteSecurity {
    /// The route's authentication settings.
    fn auth(&self) -> &RouteAuth;
}

/// How the verified identity travels upstream.
#[derive(Debug, Clone, Default)]
pub struct ForwardSettings {
    /// Keep `Authorization` on the forwarded request.
    pub token: bool,
    /// Headers set from claims (`(header, claim)`); the same headers sent by a client are
    /// always removed first.
    pub identity_headers: Vec<(HeaderName, String)>,
}

/// Authenticates requests on routes that ask for it.
pub struct AuthenticateLayer<T> {
    authenticator: Arc<Authenticator>,
    forward: Arc<ForwardSettings>,
    _target: PhantomData<fn() -> T>,
}

impl<T> Clone for AuthenticateLayer<T> {
    fn clone(&self) -> Self {
        AuthenticateLayer {
            authenticator: self.authenticator.clone(),
            forward: self.forward.clone(),
            _target: PhantomData,
        }
    }
}

impl<T> AuthenticateLayer<T> {
    /// A layer verifying with `authenticator` and forwarding per `forward`.
    pub fn new(authenticator: Arc<Authenticator>, forward: Arc<ForwardSettings>) -> Self {
        AuthenticateLayer {
            authenticator,
            forward,
            _target: PhantomData,
        }
    }
}

impl<S, T> Layer<S> for AuthenticateLayer<T> {
    type Service = Authenticate<S, T>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            authenticator: self.authenticator.clone(),
            forward: self.forward.clone(),
            _target: PhantomData,
        }
    }
}

/// The service produced by [`AuthenticateLayer`].
pub struct Authenticate<S, T> {
    inner: S,
    authenticator: Arc<Authenticator>,
    forward: Arc<ForwardSettings>,
    _target: PhantomData<fn() -> T>,
}

impl<S: Clone, T> Clone for Authenticate<S, T> {
    fn clone(&self) -> Self {
        Authenticate {
            inner: self.inner.clone(),
            authenticator: self.authenticator.clone(),
            forward: self.forward.clone(),
            _target: PhantomData,
        }
    }
}

fn unauthenticated(problem: CredentialProblem, detail: impl Into<String>) -> Denial {
    Denial::Unauthenticated {
        reason: AuthFailure::Credential(problem),
        detail: detail.into(),
    }
}

/// The refusal of a connection whose client certificate is missing or not one the route
/// names; the event says which identity it was.
fn identity_refused(identity: Option<&Arc<ClientIdentity>>) -> Denial {
    let (reason, detail) = match identity {
        None => (
            ForbiddenReason::ClientCertificateRequired,
            "no client certificate".to_string(),
        ),
        Some(identity) => (
            ForbiddenReason::ClientIdentityMismatch,
            format!(
                "client certificate {} ({}) matches none of the route's identities",
                identity.spiffe_id.as_deref().unwrap_or(&identity.subject),
                identity.sha256
            ),
        ),
    };
    Denial::Forbidden {
        reason,
        detail,
        required_action: String::new(),
        resource_type: String::new(),
    }
}

/// The bearer token, if the request carries one in the one allowed place.
fn bearer_token<B>(req: &Request<B>) -> Result<Option<String>, Denial> {
    if let Some(query) = req.uri().query()
        && query
            .split('&')
            .any(|kv| kv.split('=').next() == Some("access_token"))
    {
        return Err(unauthenticated(
            CredentialProblem::TokenInQuery,
            "access_token in the query string",
        ));
    }
    let mut values = req.headers().get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(unauthenticated(
            CredentialProblem::MultipleCredentials,
            "several Authorization headers",
        ));
    }
    let value = value.to_str().map_err(|_| {
        unauthenticated(
            CredentialProblem::MalformedHeader,
            "non-ASCII Authorization header",
        )
    })?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(unauthenticated(
            CredentialProblem::UnsupportedScheme,
            "Authorization scheme is not Bearer",
        ));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(unauthenticated(
            CredentialProblem::MalformedHeader,
            "empty bearer token",
        ));
    }
    Ok(Some(token.to_string()))
}

/// A boxed layer future.
pub type Verifying<R> = Pin<Box<dyn Future<Output = Result<R, Denial>> + Send>>;

pin_project_lite::pin_project! {
    /// The future of [`Authenticate`]: public routes go straight to the inner service;
    /// others verify first (boxed, since verification may await a key refresh).
    pub struct AuthFuture<F, R> {
        #[pin]
        direct: Option<F>,
        verifying: Option<Verifying<R>>,
    }
}

impl<F, R> AuthFuture<F, R>
where
    R: Send + 'static,
{
    /// Goes straight to the inner service's future.
    pub fn direct(future: F) -> Self {
        AuthFuture {
            direct: Some(future),
            verifying: None,
        }
    }

    /// Runs a boxed future.
    pub fn boxed(future: Verifying<R>) -> Self {
        AuthFuture {
            direct: None,
            verifying: Some(future),
        }
    }

    /// Resolves at once.
    pub fn ready(result: Result<R, Denial>) -> Self {
        AuthFuture::boxed(Box::pin(std::future::ready(result)))
    }
}

impl<F, R> Future for AuthFuture<F, R>
where
    F: Future<Output = Result<R, Denial>>,
{
    type Output = Result<R, Denial>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(future) = this.direct.as_pin_mut() {
            return future.poll(cx);
        }
        match this.verifying {
            Some(future) => future.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

impl<S, T, B> Service<Request<B>> for Authenticate<S, T>
where
    S: Service<Request<B>, Error = Denial> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    T: RouteSecurity + Send + Sync + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = Denial;
    type Future = AuthFuture<S::Future, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        for (name, _) in &self.forward.identity_headers {
            req.headers_mut().remove(name);
        }
        // No route information means something upstream of us is misbuilt: fail closed.
        let (mode, scopes) = match req.extensions().get::<RouteMatch<T>>() {
            Some(m) => {
                let auth = m.route.target.auth();
                if !auth.client_identities.is_empty() {
                    let identity = req.extensions().get::<Arc<ClientIdentity>>();
                    if !any_matches(&auth.client_identities, identity.map(|i| &**i)) {
                        return AuthFuture::ready(Err(identity_refused(identity)));
                    }
                }
                (auth.mode, auth.scopes.required(req.method()).to_vec())
            }
            None => (AuthMode::Required, Vec::new()),
        };
        if mode == AuthMode::None {
            return AuthFuture {
                direct: Some(self.inner.call(req)),
                verifying: None,
            };
        }
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let authenticator = self.authenticator.clone();
        let forward = self.forward.clone();
        AuthFuture {
            direct: None,
            verifying: Some(Box::pin(async move {
                let token = bearer_token(&req)?;
                let Some(token) = token else {
                    if mode == AuthMode::Optional {
                        return inner.call(req).await;
                    }
                    return Err(unauthenticated(
                        CredentialProblem::MissingToken,
                        "no bearer token",
                    ));
                };
                let principal = authenticator.authenticate(&token).await.map_err(|e| {
                    Denial::Unauthenticated {
                        detail: e.to_string(),
                        reason: AuthFailure::Token(e),
                    }
                })?;
                if let Some(scope) = req.extensions().get::<Arc<RequestScope>>()
                    && let Some(sub) = &principal.subject
                {
                    scope.set_user_id(sub.clone());
                }
                let missing: Vec<String> = scopes
                    .iter()
                    .filter(|s| !principal.scopes.contains(s))
                    .cloned()
                    .collect();
                if !missing.is_empty() {
                    return Err(Denial::InsufficientScope { required: scopes });
                }
                forward_identity(&mut req, &principal, &forward);
                req.extensions_mut().insert(principal);
                inner.call(req).await
            })),
        }
    }
}

fn forward_identity<B>(req: &mut Request<B>, principal: &Principal, forward: &ForwardSettings) {
    if !forward.token {
        req.headers_mut().remove(header::AUTHORIZATION);
    }
    for (name, claim) in &forward.identity_headers {
        let value = match claim.as_str() {
            "scope" | "scp" => Some(principal.scopes.join(" ")),
            _ => principal.claims.all.get(claim).and_then(|v| match v {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                serde_json::Value::Bool(b) => Some(b.to_string()),
                serde_json::Value::Array(items) => Some(
                    items
                        .iter()
                        .filter_map(|i| i.as_str())
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
                _ => None,
            }),
        };
        if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            req.headers_mut().insert(name.clone(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authn::revocation::Revocations;
    use crate::route::{PathPattern, Route};
    use crate::test_support::{Counting, request};
    use tower::{ServiceBuilder, ServiceExt};

    struct Target(RouteAuth);

    impl RouteSecurity for Target {
        fn auth(&self) -> &RouteAuth {
            &self.0
        }
    }

    fn routed(
        mode: AuthMode,
        identities: &[&str],
    ) -> http::Request<http_body_util::Empty<bytes::Bytes>> {
        let mut req = request("GET", "/api/x");
        let route = Route {
            endpoint: Arc::from("/api/*"),
            pattern: PathPattern::prefix("/api/").unwrap(),
            methods: None,
            target: Target(RouteAuth {
                mode,
                scopes: ScopeRule::Any,
                client_identities: identities
                    .iter()
                    .map(|p| IdentityPattern::parse(p).unwrap())
                    .collect(),
            }),
        };
        req.extensions_mut().insert(RouteMatch {
            route: Arc::new(route),
            params: Vec::new(),
        });
        req
    }

    fn identity(spiffe: &str) -> Arc<ClientIdentity> {
        Arc::new(ClientIdentity {
            subject: "CN=test".into(),
            spiffe_id: Some(spiffe.into()),
            dns_names: Vec::new(),
            uris: Vec::new(),
            sha256: String::new(),
            valid: (0, i64::MAX),
        })
    }

    #[tokio::test]
    async fn refusals_never_reach_the_inner_service() {
        let stub = Counting::default();
        let authenticator =
            Authenticator::new(Vec::new(), Arc::new(Revocations::default()), 8192, 16);
        let service = ServiceBuilder::new()
            .layer(AuthenticateLayer::<Target>::new(
                Arc::new(authenticator),
                Arc::new(ForwardSettings::default()),
            ))
            .service(stub.clone());
        let reason = |result: Result<_, Denial>| result.err().map(|d| d.reason());
        let payments = ["spiffe://corp.test/ns/payments/**"];
        assert_eq!(
            reason(
                service
                    .clone()
                    .oneshot(routed(AuthMode::Required, &[]))
                    .await
            ),
            Some("missing_token")
        );
        assert_eq!(
            reason(
                service
                    .clone()
                    .oneshot(routed(AuthMode::None, &payments))
                    .await
            ),
            Some("client_certificate_required")
        );
        let mut stranger = routed(AuthMode::None, &payments);
        stranger
            .extensions_mut()
            .insert(identity("spiffe://corp.test/ns/web/sa/frontend"));
        assert_eq!(
            reason(service.clone().oneshot(stranger).await),
            Some("client_identity_mismatch")
        );
        assert_eq!(stub.calls(), 0, "a refusal reached the inner service");
        let mut member = routed(AuthMode::None, &payments);
        member
            .extensions_mut()
            .insert(identity("spiffe://corp.test/ns/payments/sa/api"));
        assert!(service.clone().oneshot(member).await.is_ok());
        assert!(service.oneshot(routed(AuthMode::None, &[])).await.is_ok());
        assert_eq!(stub.calls(), 2);
    }
}
