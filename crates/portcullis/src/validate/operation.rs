//! [`OperationLayer`]: the documented operation of each routed request, right after
//! routing; an undocumented one is refused or recorded as a shadow endpoint.

use super::UnknownOperations;
use super::contract::ApiContract;
use crate::denial::Denial;
use crate::discovery::{Inventory, ShadowCall, TemplateRules};
use crate::event::request_event;
use crate::event::{EventBus, EventType, Severity};
use crate::future::ResponseFuture;
use crate::scope::RequestScope;
use http::Request;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// What both layers share: the compiled document (none: nothing is enforced), the
/// endpoint inventory and the event bus.
#[derive(Debug, Clone)]
pub struct Operations {
    pub(super) contract: Option<Arc<ApiContract>>,
    inventory: Arc<Inventory>,
    pub(super) events: Arc<EventBus>,
    templates: Option<Arc<TemplateRules>>,
}

impl Operations {
    /// Enforcement of `contract` (or none), counting into `inventory`.
    pub fn new(
        contract: Option<Arc<ApiContract>>,
        inventory: Arc<Inventory>,
        events: Arc<EventBus>,
    ) -> Self {
        Operations {
            contract,
            inventory,
            events,
            templates: Some(Arc::new(TemplateRules::default())),
        }
    }

    /// How undocumented paths are folded into templates (`/users/{id}`) in the inventory
    /// (by default, with no reserved segments), or `None` to keep them as called.
    pub fn with_templates(mut self, rules: Option<TemplateRules>) -> Self {
        self.templates = rules.map(Arc::new);
        self
    }
}

/// Matches each routed request to its documented operation.
#[derive(Debug, Clone)]
pub struct OperationLayer {
    operations: Operations,
}

impl OperationLayer {
    /// A layer matching against `operations`.
    pub fn new(operations: Operations) -> Self {
        OperationLayer { operations }
    }
}

impl<S> Layer<S> for OperationLayer {
    type Service = OperationMatcher<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OperationMatcher {
            inner,
            operations: self.operations.clone(),
        }
    }
}

/// The service produced by [`OperationLayer`].
#[derive(Debug, Clone)]
pub struct OperationMatcher<S> {
    inner: S,
    operations: Operations,
}

impl<S, B, RB> Service<Request<B>> for OperationMatcher<S>
where
    S: Service<Request<B>, Response = http::Response<RB>, Error = Denial>,
    S::Future: Send + 'static,
    RB: 'static,
{
    type Response = S::Response;
    type Error = Denial;
    type Future = ResponseFuture<S::Future, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let Some(contract) = &self.operations.contract else {
            return ResponseFuture::inner(self.inner.call(req));
        };
        // An OpenAPI document cannot describe protobuf calls (`check` says so).
        if req
            .extensions()
            .get::<crate::route::RouteMatch>()
            .is_some_and(|m| m.route.policy.grpc)
        {
            return ResponseFuture::inner(self.inner.call(req));
        }
        match contract.find(req.method(), req.uri().path()) {
            Some(matched) => {
                matched.operation.stats.hit();
                if let Some(scope) = req.extensions().get::<Arc<RequestScope>>() {
                    scope.set_operation(matched.operation.template.clone());
                }
                req.extensions_mut().insert(matched);
            }
            None => match contract.settings.unknown_operations {
                UnknownOperations::Reject => {
                    return ResponseFuture::denied(Denial::UnknownOperation);
                }
                UnknownOperations::Log => {
                    let seen = self.operations.inventory.shadow(ShadowCall {
                        method: req.method(),
                        path: req.uri().path(),
                        query: req.uri().query(),
                        authenticated: req.headers().contains_key(http::header::AUTHORIZATION),
                        content_type: req
                            .headers()
                            .get(http::header::CONTENT_TYPE)
                            .and_then(|v| v.to_str().ok()),
                        templates: self.operations.templates.as_deref(),
                    });
                    if seen.first
                        && let Some(scope) = req.extensions().get::<Arc<RequestScope>>()
                    {
                        let mut event = request_event(
                            EventType::Anomaly,
                            Severity::Medium,
                            "shadow_endpoint",
                            scope,
                        );
                        event.details = serde_json::json!({
                            "detail": "first call to an endpoint the API document does not describe",
                            "path": crate::problem::truncated(req.uri().path(), 256),
                        });
                        self.operations.events.emit(event);
                    }
                    if let Some(recorder) = seen.recorder {
                        // The one path that waits on the answer: shadow calls are rare,
                        // and their statuses are what a reviewer needs to document them.
                        let future = self.inner.call(req);
                        return ResponseFuture::boxed(Box::pin(async move {
                            let result = future.await;
                            recorder.record(match &result {
                                Ok(response) => response.status().as_u16(),
                                Err(denial) => denial.status().as_u16(),
                            });
                            result
                        }));
                    }
                }
            },
        }
        ResponseFuture::inner(self.inner.call(req))
    }
}
