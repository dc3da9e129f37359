//! [`AuthenticateLayer`]: credentials in exactly one place, verified, scoped, and the
//! identity passed upstream only as the gateway proved it.

use super::mtls::{ClientIdentity, any_matches};
use super::settings::{AuthMode, ForwardSettings};
use super::{Authenticator, Principal};
use crate::denial::Denial;
use crate::future::ResponseFuture;
use crate::reason::{AuthFailure, CredentialProblem, ForbiddenReason};
use crate::route::RouteMatch;
use crate::scope::RequestScope;
use http::{HeaderValue, Request, header};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// Authenticates requests on routes that ask for it.
#[derive(Clone)]
pub struct AuthenticateLayer {
    authenticator: Arc<Authenticator>,
    forward: Arc<ForwardSettings>,
}

impl AuthenticateLayer {
    /// A layer verifying with `authenticator` and forwarding per `forward`.
    pub fn new(authenticator: Arc<Authenticator>, forward: Arc<ForwardSettings>) -> Self {
        AuthenticateLayer {
            authenticator,
            forward,
        }
    }
}

impl<S> Layer<S> for AuthenticateLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            authenticator: self.authenticator.clone(),
            forward: self.forward.clone(),
        }
    }
}

/// The service produced by [`AuthenticateLayer`].
#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    authenticator: Arc<Authenticator>,
    forward: Arc<ForwardSettings>,
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

impl<S, B> Service<Request<B>> for Authenticate<S>
where
    S: Service<Request<B>, Error = Denial> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
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
        ResponseFuture::boxed(Box::pin(async move {
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
            let principal =
                authenticator
                    .authenticate(&token)
                    .await
                    .map_err(|e| Denial::Unauthenticated {
                        detail: e.to_string(),
                        reason: AuthFailure::Token(e),
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
