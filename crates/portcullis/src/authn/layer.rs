//! [`AuthenticateLayer`]: credentials in exactly one place, verified, scoped, and the
//! identity passed upstream only as the gateway proved it.

use super::dpop::{self, DpopError, ProofAlgorithms, ReplayStore};
use super::mtls::{ClientIdentity, any_matches};
use super::pending::{Check, PendingChecks};
use super::settings::{AuthMode, ForwardSettings};
use super::token::TokenError;
use super::{Authenticator, Principal};
use crate::denial::Denial;
use crate::future::ResponseFuture;
use crate::reason::{AuthFailure, BindingProblem, CredentialProblem, ForbiddenReason};
use crate::route::RouteMatch;
use crate::scope::RequestScope;
use crate::secret::constant_time_eq;
use http::{HeaderValue, Request, header};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// Authenticates requests on routes that ask for it.
#[derive(Clone)]
pub struct AuthenticateLayer {
    authenticator: Arc<Authenticator>,
    forward: Arc<ForwardSettings>,
    defer: bool,
}

impl AuthenticateLayer {
    /// A layer verifying with `authenticator` and forwarding per `forward`.
    pub fn new(authenticator: Arc<Authenticator>, forward: Arc<ForwardSettings>) -> Self {
        AuthenticateLayer {
            authenticator,
            forward,
            defer: false,
        }
    }

    /// Leaves the Redis lookups of authentication (revocation, a DPoP proof's first use)
    /// pending on the request ([`PendingChecks`]) instead of waiting for them here, so the
    /// rate limit layer waits for them together with its own script: one round trip for all. Only for a stack
    /// where a [`RateLimitLayer`](crate::ratelimit::RateLimitLayer) or an
    /// [`AuthorizeLayer`](crate::authz::AuthorizeLayer) sits inside this layer: they settle
    /// pending checks before anything goes on.
    pub fn deferring_store_checks(mut self) -> Self {
        self.defer = true;
        self
    }
}

impl<S> Layer<S> for AuthenticateLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            authenticator: self.authenticator.clone(),
            forward: self.forward.clone(),
            defer: self.defer,
        }
    }
}

/// The service produced by [`AuthenticateLayer`].
#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    authenticator: Arc<Authenticator>,
    forward: Arc<ForwardSettings>,
    defer: bool,
}

fn token_refused(error: TokenError) -> Denial {
    Denial::Unauthenticated {
        detail: error.to_string(),
        reason: AuthFailure::Token(error),
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

/// How the token was presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    /// `Authorization: Bearer`.
    Bearer,
    /// `Authorization: DPoP`, with a proof in the `DPoP` header (RFC 9449).
    Dpop,
}

/// The token, if the request carries one in the one allowed place, and its scheme (`DPoP`
/// only when DPoP is configured).
fn bearer_token<B>(req: &Request<B>, dpop: bool) -> Result<Option<(String, Scheme)>, Denial> {
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
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        Scheme::Bearer
    } else if dpop && scheme.eq_ignore_ascii_case("dpop") {
        Scheme::Dpop
    } else {
        return Err(unauthenticated(
            CredentialProblem::UnsupportedScheme,
            "Authorization scheme is not Bearer (or DPoP, when configured)",
        ));
    };
    let token = token.trim();
    if token.is_empty() {
        return Err(unauthenticated(
            CredentialProblem::MalformedHeader,
            "empty bearer token",
        ));
    }
    Ok(Some((token.to_string(), scheme)))
}

fn binding_refused(
    problem: BindingProblem,
    algs: ProofAlgorithms,
    detail: impl Into<String>,
) -> Denial {
    Denial::Unauthenticated {
        reason: AuthFailure::Binding(problem, algs),
        detail: detail.into(),
    }
}

fn proof_refused(error: DpopError, algs: ProofAlgorithms) -> Denial {
    Denial::Unauthenticated {
        detail: error.to_string(),
        reason: AuthFailure::Dpop(error, algs),
    }
}

/// The request URL a DPoP proof must name (`htu`): the scheme the client used (after
/// trusted-proxy handling), its authority and the path, without query or fragment.
fn request_url<B>(req: &Request<B>) -> String {
    let https = req
        .extensions()
        .get::<crate::scope::Transport>()
        .is_some_and(|t| t.https);
    let authority = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or_default();
    let scheme = if https { "https" } else { "http" };
    format!("{scheme}://{authority}{}", req.uri().path())
}

/// What the binding checks read from the request (taken before any await, so the request
/// body need not be shared across threads).
struct BindingFacts {
    method: http::Method,
    /// For DPoP requests only: the URL and the proofs (at most two: one too many is enough).
    dpop: Option<(String, Vec<HeaderValue>)>,
    identity: Option<Arc<ClientIdentity>>,
}

impl BindingFacts {
    fn of<B>(req: &Request<B>, scheme: Scheme) -> Self {
        BindingFacts {
            method: req.method().clone(),
            dpop: (scheme == Scheme::Dpop).then(|| {
                let proofs = req.headers().get_all("dpop").iter().take(2).cloned();
                (request_url(req), proofs.collect())
            }),
            identity: req.extensions().get::<Arc<ClientIdentity>>().cloned(),
        }
    }
}

/// The token's sender constraint (`cnf`), checked on every request after the verified-token
/// cache, so a cached token never becomes usable on another connection or without its key:
/// `x5t#S256` against this connection's client certificate (RFC 8705), `jkt` against a
/// valid, first-use DPoP proof (RFC 9449), and `binding: required`.
///
/// With `defer`, a proof's first use in a Redis replay store is returned unawaited, to be
/// settled with the request's other store lookups.
async fn check_binding(
    req: BindingFacts,
    principal: &Principal,
    (token, scheme): (&str, Scheme),
    authenticator: &Authenticator,
    defer: bool,
) -> Result<Option<Check>, Denial> {
    let cnf = principal
        .claims
        .all
        .get("cnf")
        .and_then(serde_json::Value::as_object);
    // Proofs use the token issuer's algorithms; the list is only written out for a refusal.
    let algorithms = authenticator.algorithms_of(&principal.issuer);
    let algs = || ProofAlgorithms::new(algorithms);
    let binding_refused = |problem, detail: &str| binding_refused(problem, algs(), detail);
    let proof_refused = |error| proof_refused(error, algs());
    if cnf.is_none() && authenticator.binding_required(&principal.issuer) {
        return Err(binding_refused(
            BindingProblem::Unbound,
            "the issuer requires bound tokens; this one has no cnf",
        ));
    }
    let member = |name: &str| cnf.and_then(|c| c.get(name)).and_then(|v| v.as_str());
    if let Some(x5t) = member("x5t#S256") {
        match &req.identity {
            None => {
                return Err(binding_refused(
                    BindingProblem::NoCertificate,
                    "a certificate-bound token without a client certificate",
                ));
            }
            Some(identity) if !constant_time_eq(identity.sha256.as_bytes(), x5t.as_bytes()) => {
                return Err(binding_refused(
                    BindingProblem::CertificateMismatch,
                    &format!(
                        "bound to {x5t}, the connection's certificate is {}",
                        identity.sha256
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    match (scheme, member("jkt")) {
        (Scheme::Bearer, None) => Ok(None),
        (Scheme::Bearer, Some(_)) => Err(binding_refused(
            BindingProblem::Downgrade,
            "a DPoP-bound token sent as Bearer",
        )),
        (Scheme::Dpop, None) => Err(binding_refused(
            BindingProblem::UnboundDpop,
            "Authorization: DPoP with a token that has no cnf.jkt",
        )),
        (Scheme::Dpop, Some(jkt)) => {
            let dpop = authenticator
                .dpop()
                .ok_or_else(|| proof_refused(DpopError::Missing))?;
            let (url, proofs) = req
                .dpop
                .as_ref()
                .ok_or_else(|| proof_refused(DpopError::Missing))?;
            let mut proofs = proofs.iter();
            let proof = proofs
                .next()
                .ok_or_else(|| proof_refused(DpopError::Missing))?;
            if proofs.next().is_some() {
                return Err(proof_refused(DpopError::Multiple));
            }
            let proof = proof
                .to_str()
                .map_err(|_| proof_refused(DpopError::Malformed("not ASCII".into())))?;
            let now = super::now_secs();
            let target = dpop::ProofTarget {
                method: req.method.as_str(),
                htu: url,
                access_token: token,
            };
            let verified = dpop::verify(proof, target, algorithms, &dpop.settings, now)
                .map_err(proof_refused)?;
            if !constant_time_eq(verified.jkt.as_bytes(), jkt.as_bytes()) {
                return Err(proof_refused(DpopError::KeyMismatch));
            }
            if let Some(nonces) = &dpop.nonces
                && !verified
                    .nonce
                    .as_deref()
                    .is_some_and(|n| nonces.accepts(n, now))
            {
                return Err(proof_refused(DpopError::UseNonce(nonces.issue(now))));
            }
            let deferred = defer && matches!(dpop.replay, ReplayStore::Redis(_));
            let algs = algs();
            let dpop = dpop.clone();
            let first_use = async move {
                match dpop.replay.first_use(&verified, now).await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(self::proof_refused(DpopError::Replayed, algs)),
                    Err(error) => Err(self::proof_refused(error, algs)),
                }
            };
            if deferred {
                return Ok(Some(Box::pin(first_use)));
            }
            first_use.await.map(|()| None)
        }
    }
}

impl<S, B, R> Service<Request<B>> for Authenticate<S>
where
    S: Service<Request<B>, Response = http::Response<R>, Error = Denial> + Clone + Send + 'static,
    S::Future: Send + 'static,
    R: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = Denial;
    type Future = ResponseFuture<S::Future, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        for (name, _) in &self.forward.identity_headers {
            req.headers_mut().remove(name);
        }
        // No route information means something upstream of us is misbuilt: fail closed.
        let (mode, scopes) = match req.extensions().get::<RouteMatch>() {
            Some(m) => {
                let auth = &m.route.policy.auth;
                if !auth.client_identities.is_empty() {
                    let identity = req.extensions().get::<Arc<ClientIdentity>>();
                    if !any_matches(&auth.client_identities, identity.map(|i| &**i)) {
                        return ResponseFuture::denied(identity_refused(identity));
                    }
                }
                (auth.mode, auth.scopes.required(req.method()).to_vec())
            }
            None => (AuthMode::Required, Vec::new()),
        };
        if mode == AuthMode::None {
            return ResponseFuture::inner(self.inner.call(req));
        }
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let authenticator = self.authenticator.clone();
        let forward = self.forward.clone();
        let defer = self.defer;
        ResponseFuture::boxed(Box::pin(async move {
            let token = bearer_token(&req, authenticator.dpop().is_some())?;
            let Some((token, scheme)) = token else {
                if mode == AuthMode::Optional {
                    return inner.call(req).await;
                }
                return Err(unauthenticated(
                    CredentialProblem::MissingToken,
                    "no bearer token",
                ));
            };
            let (principal, revocation) = if defer {
                authenticator.authenticate_deferred(&token).await
            } else {
                authenticator.authenticate(&token).await.map(|p| (p, None))
            }
            .map_err(token_refused)?;
            let first_use = check_binding(
                BindingFacts::of(&req, scheme),
                &principal,
                (&token, scheme),
                &authenticator,
                defer,
            )
            .await?;
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
            if let Some(revocation) = revocation {
                PendingChecks::push(
                    &mut req,
                    Box::pin(async move { revocation.await.map_err(token_refused) }),
                );
            }
            if let Some(first_use) = first_use {
                PendingChecks::push(&mut req, first_use);
            }
            req.extensions_mut().insert(principal);
            let mut response = inner.call(req).await?;
            // RFC 9449 §8: a fresh nonce on answers to DPoP requests, for the next proof.
            if scheme == Scheme::Dpop
                && let Some(nonces) = authenticator.dpop().and_then(|d| d.nonces.as_ref())
                && let Ok(value) = HeaderValue::from_str(&nonces.issue(super::now_secs()))
            {
                response.headers_mut().insert("dpop-nonce", value);
            }
            Ok(response)
        }))
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
    use crate::authn::mtls::IdentityPattern;
    use crate::authn::revocation::Revocations;
    use crate::authn::settings::{RouteAuth, ScopeRule};
    use crate::test_support::{Counting, public_policy, request};
    use tower::{ServiceBuilder, ServiceExt};

    fn routed(
        mode: AuthMode,
        identities: &[&str],
    ) -> http::Request<http_body_util::Empty<bytes::Bytes>> {
        let policy = crate::route::RoutePolicy {
            auth: RouteAuth {
                mode,
                scopes: ScopeRule::Any,
                client_identities: identities
                    .iter()
                    .map(|p| IdentityPattern::parse(p).unwrap())
                    .collect(),
            },
            ..public_policy()
        };
        crate::test_support::routed(request("GET", "/api/x"), "/api/*", policy, &[])
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
            .layer(AuthenticateLayer::new(
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
