//! [`ValidateLayer`]: parameters, content type, body and, optionally, responses, checked
//! after authorization against the operation [`super::OperationLayer`] matched.

use super::ResponseMode;
use super::contract::OperationMatch;
use super::operation::Operations;
use super::params::{self, Sent};
use super::request_body::{BodyPlan, plan_body, read_body};
use super::response::check_response;
use super::validated::Validated;
use crate::body::Body;
use crate::denial::Denial;
use crate::event::request_event;
use crate::future::ResponseFuture;
use crate::scope::RequestScope;
use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::Body as HttpBody;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// Checks requests (and optionally responses) against their matched operation.
#[derive(Debug, Clone)]
pub struct ValidateLayer {
    operations: Operations,
}

impl ValidateLayer {
    /// A layer enforcing `operations`.
    pub fn new(operations: Operations) -> Self {
        ValidateLayer { operations }
    }
}

impl<S> Layer<S> for ValidateLayer {
    type Service = Validate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Validate {
            inner,
            operations: self.operations.clone(),
        }
    }
}

/// The service produced by [`ValidateLayer`].
#[derive(Debug, Clone)]
pub struct Validate<S> {
    inner: S,
    operations: Operations,
}

impl<S, B> Service<Request<B>> for Validate<S>
where
    S: Service<Request<Validated<B>>, Response = Response<Body>, Error = Denial>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<crate::BoxError>,
{
    type Response = Response<Body>;
    type Error = Denial;
    type Future = ResponseFuture<S::Future, Response<Body>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // Taken, not cloned: nothing after this layer needs the match.
        let (Some(contract), Some(matched)) = (
            &self.operations.contract,
            req.extensions_mut().remove::<OperationMatch>(),
        ) else {
            let future = self.inner.call(req.map(Validated::streaming));
            return ResponseFuture::inner(future);
        };
        let denied = |denial| ResponseFuture::denied(denial);
        let op = matched.operation;
        let mut errors = Vec::new();
        let sent = Sent {
            query: req.uri().query(),
            headers: req.headers(),
            path: &matched.path_params,
        };
        params::check(&op.params, op.strict, &sent, &mut errors);
        if !errors.is_empty() {
            return denied(Denial::invalid(errors));
        }
        let plan = match plan_body(&op, req.headers(), req.body().is_end_stream()) {
            Ok(plan) => plan,
            Err(denial) => return denied(denial),
        };
        let check_responses = contract.settings.responses != ResponseMode::Off;
        if matches!(plan, BodyPlan::Stream) && !check_responses {
            let future = self.inner.call(req.map(Validated::streaming));
            return ResponseFuture::inner(future);
        }
        // The clone that was made ready serves this request (tower's readiness contract).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limits = contract.settings.json;
        if !check_responses {
            // Kept apart from the response checks so that this future stays small: it is
            // built and moved to the heap on every checked request.
            return ResponseFuture::boxed(Box::pin(async move {
                let req = read_body(req, &op, plan, limits).await?;
                inner.call(req).await
            }));
        }
        let contract = contract.clone();
        let events = self.operations.events.clone();
        ResponseFuture::boxed(Box::pin(async move {
            let scope = req.extensions().get::<Arc<RequestScope>>().cloned();
            let is_head = req.method() == Method::HEAD;
            let req = read_body(req, &op, plan, limits).await?;
            let response = inner.call(req).await?;
            if is_head {
                return Ok(response);
            }
            let max = contract.settings.max_response_bytes;
            let (response, violation) = check_response(&op, response, max).await?;
            let Some(violation) = violation else {
                return Ok(response);
            };
            if contract.settings.responses == ResponseMode::Block {
                return Err(violation);
            }
            if let Some(scope) = &scope {
                let mut event = request_event(
                    violation.event_type(),
                    violation.severity(),
                    violation.reason(),
                    scope,
                );
                event.details = serde_json::json!({
                    "status": response.status().as_u16(),
                    "detail": violation.detail(),
                    "action": "logged",
                });
                events.emit(event);
            }
            Ok(response)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::Inventory;
    use crate::event::EventBus;
    use crate::test_support::{Counting, request};
    use crate::validate::ContractSettings;
    use crate::validate::{ApiContract, OperationLayer};
    use tower::{ServiceBuilder, ServiceExt};

    fn operations() -> Operations {
        let document = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/cases/validation/api.yaml"
        );
        let inventory = Arc::new(Inventory::default());
        let contract = ApiContract::load(
            std::path::Path::new(document),
            ContractSettings::default(),
            &inventory,
        )
        .unwrap();
        Operations::new(
            Some(Arc::new(contract)),
            inventory,
            Arc::new(EventBus::discard()),
        )
    }

    #[tokio::test]
    async fn refusals_never_reach_the_inner_service() {
        let stub = Counting::default();
        let operations = operations();
        let service = ServiceBuilder::new()
            .layer(OperationLayer::new(operations.clone()))
            .layer(ValidateLayer::new(operations))
            .service(stub.clone());
        let with_tenant = |uri: &str| {
            let mut req = request("GET", uri);
            req.headers_mut()
                .insert("x-tenant", http::HeaderValue::from_static("acme"));
            req
        };
        let reason = |result: Result<_, Denial>| result.err().map(|d| d.reason());
        assert_eq!(
            reason(service.clone().oneshot(with_tenant("/v1/nowhere")).await),
            Some("unknown_operation")
        );
        assert_eq!(
            reason(
                service
                    .clone()
                    .oneshot(with_tenant("/v1/orders?limit=500"))
                    .await
            ),
            Some("invalid_parameter")
        );
        assert_eq!(
            reason(
                service
                    .clone()
                    .oneshot(with_tenant("/v1/orders?limit=1&limit=2"))
                    .await
            ),
            Some("duplicate_parameter")
        );
        assert!(reason(service.clone().oneshot(request("GET", "/v1/orders")).await).is_some());
        assert_eq!(stub.calls(), 0, "a refusal reached the inner service");
        assert!(
            service
                .oneshot(with_tenant("/v1/orders?limit=5"))
                .await
                .is_ok()
        );
        assert_eq!(stub.calls(), 1);
    }
}
