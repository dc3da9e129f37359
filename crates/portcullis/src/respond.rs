//! The outermost layer: gives each request its id and scope, turns every [`Denial`] into
//! its problem response and exactly one security event, and puts the security headers and
//! `x-request-id` on every response.

use crate::body::Body;
use crate::denial::Denial;
use crate::event::{EventBus, SecurityEvent, request_event};
use crate::headers::SecurityHeaders;
use crate::request_id::{self, RequestId};
use crate::scope::RequestScope;
use http::{HeaderName, HeaderValue, Request, Response};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// What became of a request, left in the response extensions for metrics.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The template of the route that matched, if one did (never client-chosen text).
    pub route: Option<Arc<str>>,
    /// The refusal's reason, when the gateway refused.
    pub denial_reason: Option<&'static str>,
    /// The policy action that was refused (`delete_items`), for authorization refusals.
    pub denied_action: Option<String>,
    /// Whether the refusal was a failed authentication (a credential was presented or
    /// required and did not prove an identity).
    pub auth_failure: bool,
}

/// Builds [`Respond`] services.
#[derive(Debug, Clone)]
pub struct RespondLayer {
    headers: Arc<SecurityHeaders>,
    events: Arc<EventBus>,
}

impl RespondLayer {
    /// A layer adding `headers` to every response and sending events to `events`.
    pub fn new(headers: Arc<SecurityHeaders>, events: Arc<EventBus>) -> Self {
        RespondLayer { headers, events }
    }
}

impl<S> Layer<S> for RespondLayer {
    type Service = Respond<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Respond {
            inner,
            headers: self.headers.clone(),
            events: self.events.clone(),
        }
    }
}

/// The service produced by [`RespondLayer`]. It never fails: every refusal is an answer.
#[derive(Debug, Clone)]
pub struct Respond<S> {
    inner: S,
    headers: Arc<SecurityHeaders>,
    events: Arc<EventBus>,
}

static REQUEST_ID: HeaderName = HeaderName::from_static(request_id::HEADER);

impl<S, B> Service<Request<B>> for Respond<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Denial>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness problems of inner layers are answered per request, never as errors.
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let id = RequestId::for_headers(req.headers());
        let id_value = HeaderValue::from_str(id.as_str()).ok();
        if let Some(value) = &id_value {
            req.headers_mut().insert(REQUEST_ID.clone(), value.clone());
        }
        let scope = Arc::new(RequestScope::new(id.clone(), req.method().clone()));
        // Kept for the event of a refusal made before routing (cheap: the URI shares bytes).
        let uri = req.uri().clone();
        let grpc = crate::denial::is_grpc_request(req.headers());
        let https = req
            .extensions()
            .get::<crate::scope::Transport>()
            .is_some_and(|t| t.https);
        req.extensions_mut().insert(id);
        req.extensions_mut().insert(scope.clone());
        let future = self.inner.call(req);
        let headers = self.headers.clone();
        let events = self.events.clone();
        Box::pin(async move {
            let (mut response, denial_reason, denied_action, auth_failure) = match future.await {
                Ok(response) => (response, None, None, false),
                Err(denial) => {
                    events.emit(event_for(&denial, &scope, &uri));
                    let action = match &denial {
                        Denial::Forbidden {
                            required_action, ..
                        } if !required_action.is_empty() => Some(required_action.clone()),
                        _ => None,
                    };
                    let auth_failure = match &denial {
                        Denial::Unauthenticated { .. } | Denial::LoginRefused { .. } => true,
                        Denial::SessionRequired { reason, .. } => {
                            *reason != crate::reason::SessionProblem::NoSession
                        }
                        _ => false,
                    };
                    let answer = if grpc {
                        denial.to_grpc_response(scope.id())
                    } else {
                        denial.to_response(scope.id())
                    };
                    (answer, Some(denial.reason()), action, auth_failure)
                }
            };
            headers.apply(response.headers_mut(), https);
            if let Some(cors) = scope.cors() {
                crate::cors::apply(cors, response.headers_mut());
            }
            if let Some(cookie) = scope.set_cookie() {
                response
                    .headers_mut()
                    .append(http::header::SET_COOKIE, cookie.clone());
            }
            if let Some(value) = id_value {
                response.headers_mut().insert(REQUEST_ID.clone(), value);
            }
            response.extensions_mut().insert(Outcome {
                route: scope.route().cloned(),
                denial_reason,
                denied_action,
                auth_failure,
            });
            Ok(response)
        })
    }
}

/// The one security event a refusal raises.
fn event_for(denial: &Denial, scope: &RequestScope, uri: &http::Uri) -> SecurityEvent {
    let mut event = request_event(
        denial.event_type(),
        denial.severity(),
        denial.reason(),
        scope,
    );
    event.details = serde_json::json!({
        "status": denial.status().as_u16(),
        "detail": denial.detail(),
        "path": crate::problem::truncated(uri.path(), 256),
    });
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::ServiceExt;

    #[tokio::test]
    async fn refusal_becomes_problem_event_and_headers() {
        let events = Arc::new(EventBus::discard());
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let service = RespondLayer::new(Arc::new(SecurityHeaders::default()), events.clone())
            .layer(tower::service_fn(move |_req: Request<Body>| {
                counted.fetch_add(1, Ordering::SeqCst);
                async { Err::<Response<Body>, _>(Denial::NoRoute) }
            }));
        let request = Request::builder()
            .uri("/nope")
            .header("x-request-id", "abc-1")
            .body(body::empty())
            .unwrap_or_default();
        let response = service.oneshot(request).await.unwrap_or_default();
        assert_eq!(response.status(), 404);
        assert_eq!(response.headers()["x-request-id"], "abc-1");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        let recent = events.recent_since(0);
        assert_eq!(recent.len(), 1);
        assert_eq!(
            recent.first().and_then(|e| e.event.request_id.clone()),
            Some("abc-1".into())
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
