//! [`Denial`]: every refusal the pipeline can make, and the one place that turns a refusal
//! into an HTTP answer (RFC 9457 problem+json) and into the facts of its security event.

use crate::authn::token::TokenError;
use crate::body::{self, Body};
use crate::event::{EventType, Severity};
pub use crate::reason::{
    AuthFailure, CredentialProblem, ForbiddenReason, HeaderLimit, InvalidReason, MalformedReason,
    MediaTypeReason, RateLimitReason, ResponseReason,
};
use crate::request_id::RequestId;
use http::{HeaderValue, Method, Response, StatusCode, header};

/// Why the gateway refused a request (or could not complete it).
///
/// The client sees only the generic [`title`](Denial::title) and status; the
/// [`reason`](Denial::reason) and [`detail`](Denial::detail) go to the security event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// The request is malformed or ambiguous (bad path encoding, smuggling-prone framing, ...).
    #[error("malformed request ({reason}): {detail}")]
    Malformed {
        /// The exact cause, e.g. `encoded_slash`.
        reason: MalformedReason,
        /// Human-readable detail for the operator.
        detail: String,
        /// Whether the connection must be closed after answering (framing problems).
        close: bool,
    },
    /// No route matches the request path.
    #[error("no route matches")]
    NoRoute,
    /// A route matches the path but not the method.
    #[error("method not allowed")]
    MethodNotAllowed {
        /// The methods the matching routes accept.
        allow: Vec<Method>,
    },
    /// The request body arrived slower than allowed.
    #[error("request body too slow")]
    BodyTimeout,
    /// The request body is larger than allowed.
    #[error("request body over {limit} bytes")]
    BodyTooLarge {
        /// The configured limit in bytes.
        limit: u64,
    },
    /// The request target is longer than allowed.
    #[error("URI of {length} bytes over the limit of {limit}")]
    UriTooLong {
        /// Length of the request target.
        length: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The header section is larger, or has more fields, than allowed.
    #[error("header section too large ({reason})")]
    HeadersTooLarge {
        /// Which limit: bytes or fields.
        reason: HeaderLimit,
    },
    /// The upstream could not be reached or broke the exchange.
    #[error("upstream {upstream} unreachable: {detail}")]
    UpstreamUnreachable {
        /// The upstream's configured name.
        upstream: String,
        /// The transport error, for the operator.
        detail: String,
    },
    /// The upstream did not answer in time.
    #[error("upstream {upstream} timed out")]
    UpstreamTimeout {
        /// The upstream's configured name.
        upstream: String,
    },
    /// The whole exchange took longer than `request_timeout`.
    #[error("request timed out")]
    RequestTimeout,
    /// No valid credential: missing, malformed, expired, wrongly signed, revoked, ...
    #[error("unauthenticated ({reason}): {detail}")]
    Unauthenticated {
        /// The exact check that failed, e.g. `token_expired`, `bad_signature`.
        reason: AuthFailure,
        /// Human-readable detail for the operator.
        detail: String,
    },
    /// The policy refused the request.
    #[error("forbidden ({reason}): {detail}")]
    Forbidden {
        /// The policy's refusal, a missing policy, a client identity or a CORS preflight.
        reason: ForbiddenReason,
        /// The policy's reasons, for the operator.
        detail: String,
        /// The action that was refused, e.g. `delete_items` (sent to the client).
        required_action: String,
        /// The resource type (sent to the client).
        resource_type: String,
    },
    /// The policy engine failed or could not be reached, or the decision could not be
    /// recorded: refused (fail closed).
    #[error("policy engine error: {detail}")]
    PolicyEngineError {
        /// What failed, for the operator.
        detail: String,
        /// The action that was refused.
        required_action: String,
        /// The resource type.
        resource_type: String,
    },
    /// The method needs multi-factor authentication the token does not show (RFC 9470).
    #[error("step-up authentication required")]
    StepUpRequired {
        /// `acr_values` offered in the challenge.
        acr_values: String,
    },
    /// A rate limit, a lockout or a threat score refused the request.
    #[error("rate limited ({reason})")]
    RateLimited {
        /// A spent quota, a threat score, a lockout or an unavailable store.
        reason: RateLimitReason,
        /// The limit's name.
        policy: String,
        /// Requests per window (0 when no limit applied).
        limit: u32,
        /// The window in seconds.
        window_secs: u64,
        /// Seconds until a request may succeed.
        retry_after_secs: u64,
        /// The request's threat score.
        score: u8,
        /// The factors of the score.
        factors: Vec<&'static str>,
    },
    /// The token is valid but lacks a scope the route requires.
    #[error("insufficient scope")]
    InsufficientScope {
        /// The scopes the route requires for this method.
        required: Vec<String>,
    },
    /// The request breaks the API's contract (parameters, JSON, schema).
    #[error("invalid request ({reason})")]
    Invalid {
        /// The first error's class, e.g. `unknown_property`, `duplicate_key`.
        reason: InvalidReason,
        /// Every error found (bounded), sent to the client.
        errors: Vec<crate::problem::FieldError>,
    },
    /// The body's content type is missing, malformed or not declared for the operation.
    #[error("unsupported media type ({reason}): {detail}")]
    UnsupportedMediaType {
        /// E.g. `content_type_undeclared`, `content_type_charset`, `unexpected_body`.
        reason: MediaTypeReason,
        /// Human-readable detail for the operator.
        detail: String,
    },
    /// The API document describes no operation for this method and path.
    #[error("no documented operation matches")]
    UnknownOperation,
    /// The request names a host this listener does not serve (`listen.hosts`).
    #[error("host `{host}` is not served here")]
    MisdirectedRequest {
        /// The host the client named (cut short), for the operator.
        host: String,
    },
    /// The upstream answered with a server error, which is not passed on: the client gets a
    /// generic problem with the same status, the operator the body in the event.
    #[error("upstream {upstream} answered {status}")]
    UpstreamError {
        /// The upstream's configured name.
        upstream: String,
        /// The upstream's status (5xx), kept in the answer.
        status: StatusCode,
        /// The start of the upstream's body, for the event only.
        body: String,
        /// The upstream's `Retry-After`, the one header of its that survives.
        retry_after: Option<HeaderValue>,
    },
    /// The upstream's response broke the API's contract (with response checks blocking).
    #[error("response violates the contract ({reason}): {detail}")]
    ResponseRejected {
        /// E.g. `response_undeclared_status`, `response_schema`.
        reason: ResponseReason,
        /// What was wrong, for the operator.
        detail: String,
    },
}

impl Denial {
    /// A contract violation with these errors (at least one).
    ///
    /// The event's reason classifies the first error: parameter pollution and undeclared
    /// parameters keep their own names, as do the JSON guard's findings, unknown and
    /// read-only properties; other schema findings are `invalid_parameter` or
    /// `schema_violation`.
    pub fn invalid(errors: Vec<crate::problem::FieldError>) -> Denial {
        let reason = InvalidReason::of(errors.first());
        Denial::Invalid { reason, errors }
    }

    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            Denial::Malformed { .. } => StatusCode::BAD_REQUEST,
            Denial::NoRoute => StatusCode::NOT_FOUND,
            Denial::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Denial::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Denial::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Denial::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            Denial::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Denial::UpstreamUnreachable { .. } => StatusCode::BAD_GATEWAY,
            Denial::UpstreamTimeout { .. } | Denial::RequestTimeout => StatusCode::GATEWAY_TIMEOUT,
            Denial::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            Denial::InsufficientScope { .. }
            | Denial::Forbidden { .. }
            | Denial::PolicyEngineError { .. } => StatusCode::FORBIDDEN,
            Denial::StepUpRequired { .. } => StatusCode::UNAUTHORIZED,
            Denial::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Denial::Invalid { .. } => StatusCode::BAD_REQUEST,
            Denial::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Denial::UnknownOperation => StatusCode::NOT_FOUND,
            Denial::ResponseRejected { .. } => StatusCode::BAD_GATEWAY,
            Denial::MisdirectedRequest { .. } => StatusCode::MISDIRECTED_REQUEST,
            Denial::UpstreamError { status, .. } => *status,
        }
    }

    /// The generic, client-facing title: never anything about the check that failed.
    pub fn title(&self) -> &'static str {
        match self {
            Denial::Malformed { .. } => "Bad Request",
            Denial::NoRoute => "Not Found",
            Denial::MethodNotAllowed { .. } => "Method Not Allowed",
            Denial::BodyTimeout => "Request Timeout",
            Denial::BodyTooLarge { .. } => "Content Too Large",
            Denial::UriTooLong { .. } => "URI Too Long",
            Denial::HeadersTooLarge { .. } => "Request Header Fields Too Large",
            Denial::UpstreamUnreachable { .. } => "Bad Gateway",
            Denial::UpstreamTimeout { .. } | Denial::RequestTimeout => "Gateway Timeout",
            Denial::Unauthenticated { .. } => "Unauthorized",
            Denial::InsufficientScope { .. }
            | Denial::Forbidden { .. }
            | Denial::PolicyEngineError { .. } => "Forbidden",
            Denial::StepUpRequired { .. } => "Unauthorized",
            Denial::RateLimited { .. } => "Too Many Requests",
            Denial::Invalid { .. } => "Bad Request",
            Denial::UnsupportedMediaType { .. } => "Unsupported Media Type",
            Denial::UnknownOperation => "Not Found",
            Denial::ResponseRejected { .. } => "Bad Gateway",
            Denial::MisdirectedRequest { .. } => "Misdirected Request",
            Denial::UpstreamError { status, .. } => {
                status.canonical_reason().unwrap_or("Upstream Error")
            }
        }
    }

    /// The RFC 9457 `type` URI of the problem.
    pub fn problem_type(&self) -> &'static str {
        match self {
            Denial::Malformed { .. } => "https://portcullis.dev/problems/bad-request",
            Denial::NoRoute => "https://portcullis.dev/problems/not-found",
            Denial::MethodNotAllowed { .. } => "https://portcullis.dev/problems/method-not-allowed",
            Denial::BodyTimeout => "https://portcullis.dev/problems/request-timeout",
            Denial::BodyTooLarge { .. } => "https://portcullis.dev/problems/content-too-large",
            Denial::UriTooLong { .. } => "https://portcullis.dev/problems/uri-too-long",
            Denial::HeadersTooLarge { .. } => "https://portcullis.dev/problems/headers-too-large",
            Denial::UpstreamUnreachable { .. } => "https://portcullis.dev/problems/bad-gateway",
            Denial::UpstreamTimeout { .. } | Denial::RequestTimeout => {
                "https://portcullis.dev/problems/gateway-timeout"
            }
            Denial::Unauthenticated { .. } => "https://portcullis.dev/problems/unauthorized",
            Denial::InsufficientScope { .. }
            | Denial::Forbidden { .. }
            | Denial::PolicyEngineError { .. } => "https://portcullis.dev/problems/forbidden",
            Denial::StepUpRequired { .. } => "https://portcullis.dev/problems/step-up-required",
            Denial::RateLimited { .. } => "https://portcullis.dev/problems/too-many-requests",
            Denial::Invalid { .. } => "https://portcullis.dev/problems/invalid-request",
            Denial::UnsupportedMediaType { .. } => {
                "https://portcullis.dev/problems/unsupported-media-type"
            }
            Denial::UnknownOperation => "https://portcullis.dev/problems/not-found",
            Denial::ResponseRejected { .. } => "https://portcullis.dev/problems/bad-gateway",
            Denial::MisdirectedRequest { .. } => {
                "https://portcullis.dev/problems/misdirected-request"
            }
            Denial::UpstreamError { .. } => "https://portcullis.dev/problems/upstream-error",
        }
    }

    /// The kind of security event this refusal raises.
    pub fn event_type(&self) -> EventType {
        match self {
            Denial::Malformed { .. } | Denial::MisdirectedRequest { .. } => {
                EventType::SuspiciousActivity
            }
            Denial::NoRoute
            | Denial::MethodNotAllowed { .. }
            | Denial::BodyTimeout
            | Denial::BodyTooLarge { .. }
            | Denial::UriTooLong { .. }
            | Denial::HeadersTooLarge { .. }
            | Denial::Invalid { .. }
            | Denial::UnsupportedMediaType { .. }
            | Denial::UnknownOperation
            | Denial::ResponseRejected { .. } => EventType::ValidationFailure,
            Denial::UpstreamUnreachable { .. }
            | Denial::UpstreamTimeout { .. }
            | Denial::UpstreamError { .. }
            | Denial::RequestTimeout => EventType::UpstreamError,
            Denial::Unauthenticated { .. } => EventType::AuthFailure,
            Denial::InsufficientScope { .. } | Denial::Forbidden { .. } => EventType::AuthzDenied,
            Denial::PolicyEngineError { .. } => EventType::PolicyEngineError,
            Denial::StepUpRequired { .. } => EventType::AuthFailure,
            Denial::RateLimited { score, reason, .. } => {
                if *score > 50
                    || matches!(
                        reason,
                        RateLimitReason::ThreatBlock | RateLimitReason::AuthLockout
                    )
                {
                    EventType::SuspiciousActivity
                } else {
                    EventType::RateLimit
                }
            }
        }
    }

    /// How serious the refusal is for the operator.
    pub fn severity(&self) -> Severity {
        match self {
            Denial::Malformed { .. }
            | Denial::UpstreamUnreachable { .. }
            | Denial::UpstreamError { .. }
            | Denial::MisdirectedRequest { .. } => Severity::Medium,
            Denial::Unauthenticated { reason, .. } => match reason {
                AuthFailure::Credential(CredentialProblem::MissingToken)
                | AuthFailure::Token(TokenError::Expired) => Severity::Low,
                AuthFailure::Credential(_) | AuthFailure::Token(_) => Severity::Medium,
            },
            Denial::InsufficientScope { .. } | Denial::Forbidden { .. } => Severity::Medium,
            Denial::PolicyEngineError { .. } => Severity::High,
            Denial::StepUpRequired { .. } => Severity::Low,
            Denial::RateLimited { score, .. } => {
                if *score >= 50 {
                    Severity::High
                } else {
                    Severity::Medium
                }
            }
            Denial::UpstreamTimeout { .. } | Denial::RequestTimeout => Severity::Medium,
            Denial::NoRoute
            | Denial::MethodNotAllowed { .. }
            | Denial::BodyTimeout
            | Denial::BodyTooLarge { .. }
            | Denial::UriTooLong { .. }
            | Denial::HeadersTooLarge { .. }
            | Denial::UnknownOperation => Severity::Low,
            Denial::Invalid { .. } | Denial::UnsupportedMediaType { .. } => Severity::Medium,
            // A response the contract does not allow may expose data.
            Denial::ResponseRejected { .. } => Severity::High,
        }
    }

    /// The exact, machine-readable reason, recorded in the event and in metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Denial::Malformed { reason, .. } => reason.as_str(),
            Denial::NoRoute => "no_route",
            Denial::MethodNotAllowed { .. } => "method_not_allowed",
            Denial::BodyTimeout => "body_timeout",
            Denial::BodyTooLarge { .. } => "body_too_large",
            Denial::UriTooLong { .. } => "uri_too_long",
            Denial::HeadersTooLarge { reason } => reason.as_str(),
            Denial::UpstreamUnreachable { .. } => "upstream_unreachable",
            Denial::UpstreamTimeout { .. } => "upstream_timeout",
            Denial::RequestTimeout => "request_timeout",
            Denial::Unauthenticated { reason, .. } => reason.as_str(),
            Denial::InsufficientScope { .. } => "insufficient_scope",
            Denial::Forbidden { reason, .. } => reason.as_str(),
            Denial::PolicyEngineError { .. } => "policy_engine_error",
            Denial::StepUpRequired { .. } => "step_up_required",
            Denial::RateLimited { reason, .. } => reason.as_str(),
            Denial::Invalid { reason, .. } => reason.as_str(),
            Denial::UnsupportedMediaType { reason, .. } => reason.as_str(),
            Denial::ResponseRejected { reason, .. } => reason.as_str(),
            Denial::UnknownOperation => "unknown_operation",
            Denial::MisdirectedRequest { .. } => "host_not_allowed",
            Denial::UpstreamError { .. } => "upstream_5xx",
        }
    }

    /// Operator-facing detail for the security event (never sent to the client).
    pub fn detail(&self) -> String {
        match self {
            Denial::Malformed { detail, .. }
            | Denial::UpstreamUnreachable { detail, .. }
            | Denial::Unauthenticated { detail, .. }
            | Denial::Forbidden { detail, .. }
            | Denial::PolicyEngineError { detail, .. }
            | Denial::UnsupportedMediaType { detail, .. }
            | Denial::ResponseRejected { detail, .. } => detail.clone(),
            Denial::Invalid { errors, .. } => crate::problem::describe(errors),
            Denial::UpstreamError {
                upstream,
                status,
                body,
                ..
            } => format!("upstream {upstream} answered {status}: {body}"),
            Denial::InsufficientScope { required } => {
                format!("requires scopes: {}", required.join(" "))
            }
            Denial::RateLimited {
                policy,
                limit,
                window_secs,
                score,
                factors,
                ..
            } => format!(
                "limit `{policy}` ({limit} per {window_secs}s); threat score {score} [{}]",
                factors.join(", ")
            ),
            other => other.to_string(),
        }
    }

    /// Whether the connection must be closed after this answer.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            Denial::Malformed { close: true, .. }
                | Denial::BodyTimeout
                | Denial::BodyTooLarge { .. }
        )
    }

    /// Renders the refusal as an RFC 9457 `application/problem+json` response.
    ///
    /// This is the only place a refusal becomes bytes for the client.
    pub fn to_response(&self, request_id: &RequestId) -> Response<Body> {
        let mut problem = serde_json::json!({
            "type": self.problem_type(),
            "title": self.title(),
            "status": self.status().as_u16(),
            "request_id": request_id.as_str(),
        });
        if let (
            Denial::Forbidden {
                required_action,
                resource_type,
                ..
            }
            | Denial::PolicyEngineError {
                required_action,
                resource_type,
                ..
            },
            Some(fields),
        ) = (self, problem.as_object_mut())
        {
            fields.insert("required_action".into(), required_action.clone().into());
            fields.insert("resource_type".into(), resource_type.clone().into());
        }
        if let (Denial::Invalid { errors, .. }, Some(fields)) = (self, problem.as_object_mut()) {
            fields.insert("errors".into(), serde_json::json!(errors));
        }
        let mut response = Response::new(body::full(problem.to_string()));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Denial::UpstreamError {
            retry_after: Some(value),
            ..
        } = self
        {
            headers.insert(header::RETRY_AFTER, value.clone());
        }
        if let Denial::MethodNotAllowed { allow } = self {
            let list = allow
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            if let Ok(value) = HeaderValue::from_str(&list) {
                headers.insert(header::ALLOW, value);
            }
        }
        match self {
            // RFC 6750 §3: no error code when no credential was sent at all.
            Denial::Unauthenticated {
                reason: AuthFailure::Credential(CredentialProblem::MissingToken),
                ..
            } => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"portcullis\""),
                );
            }
            Denial::Unauthenticated { .. } => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(
                        "Bearer realm=\"portcullis\", error=\"invalid_token\"",
                    ),
                );
            }
            Denial::RateLimited {
                policy,
                limit,
                window_secs,
                retry_after_secs,
                ..
            } => {
                if let Ok(value) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                    headers.insert(header::RETRY_AFTER, value);
                }
                if *limit > 0 {
                    let policy_header = format!("\"{policy}\";q={limit};w={window_secs}");
                    let state = format!("\"{policy}\";r=0;t={retry_after_secs}");
                    for (name, value) in [("ratelimit-policy", policy_header), ("ratelimit", state)]
                    {
                        if let Ok(value) = HeaderValue::from_str(&value) {
                            headers.insert(name, value);
                        }
                    }
                }
            }
            Denial::StepUpRequired { acr_values } => {
                let value = format!(
                    "Bearer realm=\"portcullis\", error=\"insufficient_user_authentication\", error_description=\"a stronger authentication is required\", acr_values=\"{acr_values}\""
                );
                if let Ok(value) = HeaderValue::from_str(&value) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            }
            Denial::InsufficientScope { required } => {
                let value = format!(
                    "Bearer realm=\"portcullis\", error=\"insufficient_scope\", scope=\"{}\"",
                    required.join(" ")
                );
                if let Ok(value) = HeaderValue::from_str(&value) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            }
            _ => {}
        }
        if self.closes_connection() {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn problem_body_is_generic_and_carries_request_id() {
        let denial = Denial::UpstreamUnreachable {
            upstream: "items".into(),
            detail: "connect to 10.1.2.3:80 refused".into(),
        };
        let response = denial.to_response(&RequestId::from_trusted("abc"));
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let bytes = response.into_body().collect().await.map(|b| b.to_bytes());
        let text =
            String::from_utf8(bytes.map(|b| b.to_vec()).unwrap_or_default()).unwrap_or_default();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(value["status"], 502);
        assert_eq!(value["request_id"], "abc");
        assert!(
            !text.contains("10.1.2.3"),
            "upstream address leaked: {text}"
        );
        assert!(!text.contains("items"), "upstream name leaked: {text}");
    }

    #[test]
    fn method_not_allowed_lists_allow() {
        let denial = Denial::MethodNotAllowed {
            allow: vec![Method::GET, Method::POST],
        };
        let response = denial.to_response(&RequestId::from_trusted("x"));
        assert_eq!(response.headers()[header::ALLOW], "GET, POST");
    }
}
