//! [`AuthorizeLayer`]: step-up, then a policy decision, recorded, on every request of a
//! protected route.

use super::decision_log::{DecisionEntry, ResourceEntry};
use super::{Authorizer, Derived, OnError, RequestFacts, verdict_of};
use crate::authn::Principal;
use crate::authn::mtls::ClientIdentity;
use crate::authn::pending::PendingChecks;
use crate::denial::Denial;
use crate::future::{BoxedResponse, ResponseFuture};
use crate::reason::ForbiddenReason;
use crate::request_id::RequestId;
use crate::route::RouteMatch;
use crate::scope::ClientIp;
use http::Request;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// Decides every request on routes that have authorization settings.
#[derive(Clone)]
pub struct AuthorizeLayer {
    authorizer: Option<Arc<Authorizer>>,
}

impl AuthorizeLayer {
    /// A layer deciding with `authorizer`; with `None`, protected routes are refused (a
    /// protected route without a policy is a configuration error the gateway never runs).
    pub fn new(authorizer: Option<Arc<Authorizer>>) -> Self {
        AuthorizeLayer { authorizer }
    }
}

impl<S> Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorize {
            inner,
            authorizer: self.authorizer.clone(),
        }
    }
}

/// The service produced by [`AuthorizeLayer`].
#[derive(Clone)]
pub struct Authorize<S> {
    inner: S,
    authorizer: Option<Arc<Authorizer>>,
}

impl<S, B> Service<Request<B>> for Authorize<S>
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

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if PendingChecks::any(&req) {
            // Deferred by authentication and left unsettled (no rate limit layer took
            // them): settled first, then this request is authorized as any other.
            let ready = std::mem::replace(self, self.clone());
            return ResponseFuture::boxed(PendingChecks::settled_then(ready, req));
        }
        let route = req.extensions().get::<RouteMatch>().cloned();
        let Some(route) = route else {
            return ResponseFuture::denied(Denial::NoRoute);
        };
        if route.route.policy.authz.is_none() {
            return ResponseFuture::inner(self.inner.call(req));
        }
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let authorizer = self.authorizer.clone();
        let future: BoxedResponse<S::Response> = Box::pin(async move {
            // Borrowed from the route this future holds, not cloned per request (`call`
            // passed routes without settings straight through; refuse if that ever changes).
            let Some(settings) = route.route.policy.authz.as_ref() else {
                return Err(Denial::Forbidden {
                    reason: ForbiddenReason::NoPolicy,
                    detail: "route without authorization settings".into(),
                    required_action: String::new(),
                    resource_type: String::new(),
                });
            };
            let refuse = |reason: ForbiddenReason, detail: String| Denial::Forbidden {
                reason,
                detail,
                required_action: String::new(),
                resource_type: settings.resource_type.clone(),
            };
            let Some(authorizer) = authorizer else {
                return Err(refuse(
                    ForbiddenReason::NoPolicy,
                    "protected route without a policy".into(),
                ));
            };
            let principal = req.extensions().get::<Arc<Principal>>().cloned();
            let mfa = principal.as_ref().is_some_and(|p| authorizer.has_mfa(p))
                || req.extensions().get::<crate::authn::SessionMfa>().is_some();
            if settings.require_mfa.contains(req.method()) && !mfa {
                return Err(Denial::StepUpRequired {
                    acr_values: authorizer.mfa_acr_values.join(" "),
                });
            }
            let facts = RequestFacts {
                method: req.method(),
                path: req.uri().path(),
                params: &route.params,
                client_ip: req.extensions().get::<ClientIp>().map(|c| c.0),
                headers: req.headers(),
                mtls_identity: req.extensions().get::<Arc<ClientIdentity>>().map(|i| &**i),
                upgrade: req
                    .extensions()
                    .get::<crate::websocket::Handshake>()
                    .map(|_| "websocket"),
                grpc: route.route.policy.grpc,
            };
            let derived = Derived::of(settings, &facts);
            let outcome = authorizer
                .engine
                .decide_request(settings, principal.as_deref(), mfa, &facts, &derived)
                .await;
            if let Some(log) = &authorizer.log {
                let (decision, reasons) = verdict_of(&outcome);
                let entry = DecisionEntry {
                    request_id: req
                        .extensions()
                        .get::<RequestId>()
                        .map_or("", RequestId::as_str),
                    timestamp: &derived.time,
                    principal: principal.as_ref().and_then(|p| p.subject.as_deref()),
                    action: &derived.action,
                    resource: ResourceEntry {
                        kind: &settings.resource_type,
                        id: derived.resource_id.as_deref(),
                    },
                    decision,
                    engine: authorizer.engine.name(),
                    reasons: &reasons,
                };
                // Recorded before anything leaves: with sync durability this awaits the disk.
                log.record_decision(&entry)
                    .await
                    .map_err(|e| Denial::PolicyEngineError {
                        detail: e.to_string(),
                        required_action: derived.action.clone(),
                        resource_type: settings.resource_type.clone(),
                    })?;
            }
            let action = derived.action;
            match outcome {
                Ok(decision) if decision.allow => inner.call(req).await,
                Ok(decision) => Err(Denial::Forbidden {
                    reason: ForbiddenReason::PolicyDenied,
                    detail: if decision.reasons.is_empty() {
                        "denied by policy".into()
                    } else {
                        decision.reasons.join("; ")
                    },
                    required_action: action,
                    resource_type: settings.resource_type.clone(),
                }),
                Err(error) if authorizer.on_error == OnError::Allow => {
                    authorizer.report_fail_open(&error);
                    inner.call(req).await
                }
                Err(error) => Err(Denial::PolicyEngineError {
                    detail: error.to_string(),
                    required_action: action,
                    resource_type: settings.resource_type.clone(),
                }),
            }
        });
        ResponseFuture::boxed(future)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::engine::RegoPolicy;
    use crate::authz::{PolicyEngine, RouteAuthz};
    use crate::event::EventBus;
    use crate::test_support::{Counting, public_policy, request};
    use tower::{ServiceBuilder, ServiceExt};

    fn authorizer(allow: bool) -> Arc<Authorizer> {
        let source = format!("package t\n\nallow := {allow}\n");
        let policy = RegoPolicy::new(&[("t.rego".into(), source)], &[], "data.t.allow").unwrap();
        Arc::new(Authorizer {
            engine: PolicyEngine::Rego(Box::new(policy)),
            on_error: OnError::Deny,
            log: None,
            mfa_acr_values: Vec::new(),
            events: Arc::new(EventBus::discard()),
        })
    }

    fn routed(
        method: &str,
        authz: Option<RouteAuthz>,
    ) -> http::Request<http_body_util::Empty<bytes::Bytes>> {
        let policy = crate::route::RoutePolicy {
            authz,
            ..public_policy()
        };
        crate::test_support::routed(
            request(method, "/api/items/7"),
            "/api/items/{id}",
            policy,
            &[("id", "7")],
        )
    }

    #[tokio::test]
    async fn refusals_never_reach_the_inner_service() {
        let stub = Counting::default();
        let settings = RouteAuthz {
            resource_type: "items".into(),
            resource_id: Some("{id}".into()),
            require_mfa: vec![http::Method::DELETE],
        };
        let layer = |authorizer| {
            ServiceBuilder::new()
                .layer(AuthorizeLayer::new(authorizer))
                .service(stub.clone())
        };
        let reason = |result: Result<_, Denial>| result.err().map(|d| d.reason());
        let denying = layer(Some(authorizer(false)));
        assert_eq!(
            reason(
                denying
                    .clone()
                    .oneshot(routed("GET", Some(settings.clone())))
                    .await
            ),
            Some("policy_denied")
        );
        let allowing = layer(Some(authorizer(true)));
        assert_eq!(
            reason(
                allowing
                    .clone()
                    .oneshot(routed("DELETE", Some(settings.clone())))
                    .await
            ),
            Some("step_up_required")
        );
        assert_eq!(
            reason(
                layer(None)
                    .oneshot(routed("GET", Some(settings.clone())))
                    .await
            ),
            Some("no_policy")
        );
        assert_eq!(stub.calls(), 0, "a refusal reached the inner service");
        assert!(
            allowing
                .clone()
                .oneshot(routed("GET", Some(settings)))
                .await
                .is_ok()
        );
        // A public route asks no policy at all.
        assert!(denying.oneshot(routed("GET", None)).await.is_ok());
        assert_eq!(stub.calls(), 2);
    }
}
