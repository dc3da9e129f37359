//! [`OperationLayer`] (operation matching, at routing) and [`ValidateLayer`] (parameters,
//! content type, body and, optionally, responses, after authorization).

use super::contract::{ApiContract, Operation, OperationMatch, best_match};
use super::media::parse_content_type;
use super::params::{self, Sent};
use super::{FieldError, ResponseMode, UnknownOperations};
use crate::body::{self, Body};
use crate::denial::Denial;
use crate::discovery::Inventory;
use crate::event::request_event;
use crate::event::{EventBus, EventType, Severity};
use crate::future::ResponseFuture;
use crate::json::{JsonLimits, parse_strict};
use crate::normalize::BodyTrip;
use crate::reason::{MalformedReason, MediaTypeReason, ResponseReason};
use crate::scope::RequestScope;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, header};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{BodyExt, Limited};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// What both layers share: the compiled document (none: nothing is enforced), the
/// endpoint inventory and the event bus.
#[derive(Debug, Clone)]
pub struct Operations {
    contract: Option<Arc<ApiContract>>,
    inventory: Arc<Inventory>,
    events: Arc<EventBus>,
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
        }
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

impl<S, B> Service<Request<B>> for OperationMatcher<S>
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
        let Some(contract) = &self.operations.contract else {
            return ResponseFuture::inner(self.inner.call(req));
        };
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
                    let first = self
                        .operations
                        .inventory
                        .shadow(req.method(), req.uri().path());
                    if first && let Some(scope) = req.extensions().get::<Arc<RequestScope>>() {
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
                }
            },
        }
        ResponseFuture::inner(self.inner.call(req))
    }
}

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

/// What must happen to the body before forwarding.
enum BodyPlan {
    /// Forward as it streams (no body, or a declared non-JSON type).
    Stream,
    /// Read it whole and check it as JSON, or as a form with a schema (against the schema
    /// of the n-th media type, when it has one).
    Buffered(usize),
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

/// Hands the body on as it streams, or reads and checks it first.
async fn read_body<B>(
    req: Request<B>,
    op: &Operation,
    plan: BodyPlan,
    limits: JsonLimits,
) -> Result<Request<Validated<B>>, Denial>
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<crate::BoxError>,
{
    match plan {
        BodyPlan::Stream => Ok(req.map(Validated::streaming)),
        BodyPlan::Buffered(media) => buffer_and_check(req, op, media, limits).await,
    }
}

/// Decides how the body is handled: refuses a body the operation does not declare, an
/// undeclared or ambiguous content type, and a missing required body.
fn plan_body(op: &Operation, headers: &HeaderMap, empty: bool) -> Result<BodyPlan, Denial> {
    let Some(spec) = &op.body else {
        if empty {
            return Ok(BodyPlan::Stream);
        }
        return Err(Denial::UnsupportedMediaType {
            reason: MediaTypeReason::UnexpectedBody,
            detail: format!("operation {} declares no request body", op.id),
        });
    };
    if empty {
        if spec.required {
            return Err(Denial::invalid(vec![FieldError::new(
                String::new(),
                "required",
                "a request body is required".into(),
            )]));
        }
        return Ok(BodyPlan::Stream);
    }
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(Denial::UnsupportedMediaType {
            reason: MediaTypeReason::MissingOrRepeated,
            detail: "a body needs exactly one Content-Type".into(),
        });
    };
    let media = value
        .to_str()
        .map_err(|_| MediaTypeReason::Syntax)
        .and_then(|text| parse_content_type(text).map_err(|e| e.reason()))
        .map_err(|reason| Denial::UnsupportedMediaType {
            reason,
            detail: "the Content-Type is malformed or names a charset other than UTF-8".into(),
        })?;
    let Some(index) = best_match(&spec.media, &media) else {
        return Err(Denial::UnsupportedMediaType {
            reason: MediaTypeReason::Undeclared,
            detail: format!(
                "{}/{} is not declared for operation {}",
                media.kind, media.subtype, op.id
            ),
        });
    };
    let has_form_schema = spec.media.get(index).is_some_and(|m| m.form.is_some());
    if media.is_json() || (media.is_form() && has_form_schema) {
        return Ok(BodyPlan::Buffered(index));
    }
    Ok(BodyPlan::Stream)
}

/// Reads the whole body (bounded), checks it (strict JSON or form fields, then the schema),
/// and hands it on as bytes.
async fn buffer_and_check<B>(
    req: Request<B>,
    op: &Operation,
    media: usize,
    limits: JsonLimits,
) -> Result<Request<Validated<B>>, Denial>
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<crate::BoxError>,
{
    let (parts, body) = req.into_parts();
    let max = limits_body_bytes(&parts.extensions);
    let bytes = match Limited::new(body, max).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            let tripped = parts
                .extensions
                .get::<BodyTrip>()
                .and_then(BodyTrip::tripped);
            return Err(tripped.unwrap_or_else(|| {
                if error.is::<http_body_util::LengthLimitError>() {
                    Denial::BodyTooLarge { limit: max as u64 }
                } else {
                    Denial::Malformed {
                        reason: MalformedReason::BodyReadError,
                        detail: error.to_string(),
                        close: true,
                    }
                }
            }));
        }
    };
    op.check_buffered_body(media, &bytes, limits)?;
    Ok(Request::from_parts(parts, Validated::buffered(bytes)))
}

/// The body bound: the guard's limit when the gateway set one, otherwise 1 MiB.
fn limits_body_bytes(extensions: &http::Extensions) -> usize {
    extensions.get::<BodyTrip>().map_or(1024 * 1024, |t| {
        usize::try_from(t.limit()).unwrap_or(usize::MAX)
    })
}

/// Checks a response against the operation: a declared status, a declared content type
/// and, for JSON with a schema, the body. Returns the response (intact) and the violation,
/// if any.
async fn check_response(
    op: &Operation,
    response: Response<Body>,
    max: usize,
) -> Result<(Response<Body>, Option<Denial>), Denial> {
    let status = response.status().as_u16();
    let violation = |reason, detail: String| Some(Denial::ResponseRejected { reason, detail });
    let Some(spec) = op.response(status) else {
        let detail = format!("status {status} is not documented for operation {}", op.id);
        return Ok((
            response,
            violation(ResponseReason::UndeclaredStatus, detail),
        ));
    };
    if spec.media.is_empty() || response.body().is_end_stream() {
        return Ok((response, None));
    }
    let media = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|t| parse_content_type(t).ok());
    let declared = media
        .as_ref()
        .and_then(|m| best_match(&spec.media, m))
        .and_then(|i| spec.media.get(i));
    let Some(declared) = declared else {
        let detail = format!(
            "the content type is not documented for operation {} status {status}",
            op.id
        );
        return Ok((
            response,
            violation(ResponseReason::UndeclaredContentType, detail),
        ));
    };
    let Some(schema) = &declared.schema else {
        return Ok((response, None));
    };
    let (parts, mut body) = response.into_parts();
    let mut chunks: VecDeque<Bytes> = VecDeque::new();
    let mut total = 0usize;
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Denial::UpstreamUnreachable {
            upstream: op.id.to_string(),
            detail: format!("response body: {e}"),
        })?;
        match frame.into_data() {
            Ok(data) => {
                total = total.saturating_add(data.len());
                chunks.push_back(data);
                if total > max {
                    let replay = body::boxed(Replay {
                        chunks,
                        trailers: None,
                        rest: Some(body),
                    });
                    let detail = format!("response over {max} bytes could not be checked");
                    return Ok((
                        Response::from_parts(parts, replay),
                        violation(ResponseReason::TooLarge, detail),
                    ));
                }
            }
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    let mut bytes = Vec::with_capacity(total);
    for chunk in &chunks {
        bytes.extend_from_slice(chunk);
    }
    let limits = JsonLimits {
        max_depth: 256,
        max_string_bytes: max,
    };
    let found = match parse_strict(&bytes, limits) {
        Err(e) => violation(ResponseReason::InvalidJson, format!("response body: {e}")),
        Ok(value) if !schema.is_valid(&value) => {
            let errors = schema.errors(&value, "");
            violation(ResponseReason::Schema, crate::problem::describe(&errors))
        }
        Ok(_) => None,
    };
    let replay = body::boxed(Replay {
        chunks: VecDeque::from([Bytes::from(bytes)]),
        trailers,
        rest: None,
    });
    Ok((Response::from_parts(parts, replay), found))
}

/// A body already partly (or wholly) read: the read chunks, then the rest.
struct Replay {
    chunks: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    rest: Option<Body>,
}

impl HttpBody for Replay {
    type Data = Bytes;
    type Error = crate::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(chunk) = self.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(trailers) = self.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        match &mut self.rest {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
            && self.trailers.is_none()
            && self.rest.as_ref().is_none_or(HttpBody::is_end_stream)
    }
}

pin_project_lite::pin_project! {
    /// The request body after validation: the original stream, or the bytes that were read
    /// and checked.
    #[project = ValidatedProj]
    #[allow(missing_docs)] // the variants' fields are private in all but name
    pub enum Validated<B> {
        /// Not read by the gateway.
        Streaming {
            #[pin]
            body: B,
        },
        /// Read whole and checked.
        Buffered {
            bytes: Option<Bytes>,
        },
    }
}

impl<B> Validated<B> {
    /// A body passed on as it streams.
    pub fn streaming(body: B) -> Self {
        Validated::Streaming { body }
    }

    /// A body that was read whole.
    pub fn buffered(bytes: Bytes) -> Self {
        Validated::Buffered {
            bytes: (!bytes.is_empty()).then_some(bytes),
        }
    }
}

impl<B> HttpBody for Validated<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<crate::BoxError>,
{
    type Data = Bytes;
    type Error = crate::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project() {
            ValidatedProj::Streaming { body } => body.poll_frame(cx).map_err(Into::into),
            ValidatedProj::Buffered { bytes } => {
                Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Validated::Streaming { body } => body.is_end_stream(),
            Validated::Buffered { bytes } => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Validated::Streaming { body } => body.size_hint(),
            Validated::Buffered { bytes } => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{Counting, request};
    use crate::validate::ContractSettings;
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
