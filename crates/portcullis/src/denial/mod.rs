//! [`Denial`]: every refusal the pipeline can make, and the one place that turns a refusal
//! into an HTTP answer (RFC 9457 problem+json, in `render`) and into the facts of its
//! security event (in `facts`).

mod facts;
mod grpc;
mod render;

pub use grpc::is_grpc_request;

pub use crate::reason::{
    AuthFailure, CredentialProblem, ForbiddenReason, HeaderLimit, InvalidReason, LoginProblem,
    MalformedReason, MediaTypeReason, RateLimitReason, ResponseReason, SessionProblem,
};
use http::{HeaderValue, Method, StatusCode};

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
    /// A browser-session route without a usable session: a navigation is sent to log in
    /// (302 to `login`), anything else gets 401.
    #[error("no usable session ({reason}): {detail}")]
    SessionRequired {
        /// Why there is no usable session.
        reason: SessionProblem,
        /// Human-readable detail for the operator.
        detail: String,
        /// Where the browser logs in (the login path with the page to come back to).
        login: String,
        /// Whether the request is a navigation (answered with a redirect).
        navigate: bool,
    },
    /// A login callback (or login start) that cannot make a session (400).
    #[error("login refused ({reason}): {detail}")]
    LoginRefused {
        /// The check that failed.
        reason: LoginProblem,
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
            Denial::SessionRequired { navigate: true, .. } => StatusCode::FOUND,
            Denial::SessionRequired { .. } => StatusCode::UNAUTHORIZED,
            Denial::LoginRefused { reason, .. } => match reason {
                LoginProblem::TooLarge => StatusCode::INTERNAL_SERVER_ERROR,
                LoginProblem::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_REQUEST,
            },
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
            Denial::SessionRequired { navigate: true, .. } => "Found",
            Denial::SessionRequired { .. } => "Unauthorized",
            Denial::LoginRefused { reason, .. } => match reason {
                LoginProblem::TooLarge => "Internal Server Error",
                LoginProblem::Unavailable => "Service Unavailable",
                _ => "Bad Request",
            },
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
            Denial::Unauthenticated { .. } | Denial::SessionRequired { .. } => {
                "https://portcullis.dev/problems/unauthorized"
            }
            Denial::LoginRefused { .. } => "https://portcullis.dev/problems/login-failed",
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

    /// Whether the connection must be closed after this answer.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            Denial::Malformed { close: true, .. }
                | Denial::BodyTimeout
                | Denial::BodyTooLarge { .. }
        )
    }
}
