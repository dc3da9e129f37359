//! What a refusal tells the operator: the event type, the severity, the reason name and the
//! detail of its security event. Each is an exhaustive `match`, so a new refusal cannot be
//! left without them.

use super::{
    AuthFailure, CredentialProblem, Denial, LoginProblem, RateLimitReason, SessionProblem,
};
use crate::authn::token::TokenError;
use crate::event::{EventType, Severity};

impl Denial {
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
            Denial::Unauthenticated { .. }
            | Denial::SessionRequired { .. }
            | Denial::LoginRefused { .. } => EventType::AuthFailure,
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
                // A bound token used without its key or certificate looks like a stolen one.
                AuthFailure::Dpop(..) | AuthFailure::Binding(..) => Severity::High,
            },
            Denial::SessionRequired { reason, .. } => match reason {
                SessionProblem::NoSession
                | SessionProblem::Expired
                | SessionProblem::Idle
                | SessionProblem::StepUp => Severity::Low,
                SessionProblem::Invalid
                | SessionProblem::Revoked
                | SessionProblem::RefreshFailed => Severity::Medium,
            },
            Denial::LoginRefused { reason, .. } => match reason {
                LoginProblem::StateExpired | LoginProblem::IdpError | LoginProblem::BadRequest => {
                    Severity::Low
                }
                LoginProblem::UnknownState
                | LoginProblem::CodeExchange
                | LoginProblem::StepUpNotMet
                | LoginProblem::Unavailable => Severity::Medium,
                LoginProblem::IdToken
                | LoginProblem::Nonce
                | LoginProblem::AtHash
                | LoginProblem::TooLarge => Severity::High,
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
            Denial::SessionRequired { reason, .. } => reason.as_str(),
            Denial::LoginRefused { reason, .. } => reason.as_str(),
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
            | Denial::SessionRequired { detail, .. }
            | Denial::LoginRefused { detail, .. }
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
}
