//! Authorization: one policy input document for every engine, a decision on every request
//! (never cached), step-up for MFA-protected methods, and a durable record of each decision.

pub mod cedar;
pub mod decision_log;
pub mod engine;
mod input;
mod layer;
pub mod settings;

pub use input::{Derived, RequestFacts, policy_input, rego_value};
pub use layer::{Authorize, AuthorizeLayer};
pub use settings::RouteAuthz;

use crate::authn::Principal;
use crate::event::{EventBus, EventType, SecurityEvent, Severity};
use decision_log::DecisionLog;
use engine::{Decision, EngineError, OpaClient, RegoPolicy};
use serde_json::{Value, json};
use std::borrow::Cow;
use std::sync::Arc;

/// Which engine decides.
#[derive(Debug)]
pub enum PolicyEngine {
    /// Embedded Rego.
    Rego(Box<RegoPolicy>),
    /// A remote OPA.
    Opa(Box<OpaClient>),
    /// Embedded Cedar.
    Cedar(Box<cedar::CedarPolicy>),
}

impl PolicyEngine {
    /// The engine's name in decision records.
    pub fn name(&self) -> &'static str {
        match self {
            PolicyEngine::Rego(_) => "rego",
            PolicyEngine::Opa(_) => "opa",
            PolicyEngine::Cedar(_) => "cedar",
        }
    }

    /// Decides on one input.
    pub async fn decide(&self, input: &Value) -> Result<Decision, EngineError> {
        match self {
            PolicyEngine::Rego(policy) => policy.decide(input),
            PolicyEngine::Opa(client) => client.decide(input).await,
            PolicyEngine::Cedar(policy) => policy.decide(input),
        }
    }

    /// Decides on one request: embedded Rego gets the input built as its own values, OPA
    /// and Cedar the JSON input (the same document either way).
    pub async fn decide_request(
        &self,
        route: &RouteAuthz,
        principal: Option<&Principal>,
        mfa: bool,
        facts: &RequestFacts<'_>,
        derived: &Derived,
    ) -> Result<Decision, EngineError> {
        match self {
            PolicyEngine::Rego(policy) => {
                policy.decide_value(input::build(route, principal, mfa, facts, derived))
            }
            other => {
                other
                    .decide(&input::build(route, principal, mfa, facts, derived))
                    .await
            }
        }
    }
}

/// What happens when the engine cannot decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Refuse (fail closed). The default.
    Deny,
    /// Let the request through (fail open): `portcullis check` warns about it.
    Allow,
}

/// Everything the authorization layer needs.
#[derive(Debug)]
pub struct Authorizer {
    /// The engine.
    pub engine: PolicyEngine,
    /// Fail closed or open.
    pub on_error: OnError,
    /// Where decisions are recorded.
    pub log: Option<Arc<DecisionLog>>,
    /// `acr` values that also count as MFA, and are offered in step-up challenges.
    pub mfa_acr_values: Vec<String>,
    /// Events for fail-open decisions (refusals are reported by the outermost layer).
    pub events: Arc<EventBus>,
}

impl Authorizer {
    /// Whether the principal's token shows multi-factor authentication.
    pub fn has_mfa(&self, principal: &Principal) -> bool {
        crate::authn::shows_mfa(&principal.claims, &self.mfa_acr_values)
    }

    fn report_fail_open(&self, error: &EngineError) {
        let mut event = SecurityEvent::new(
            EventType::PolicyEngineError,
            Severity::Critical,
            "fail_open",
        );
        event.details = json!({ "error": error.to_string() });
        self.events.emit(event);
    }
}

/// What a decision record says of an outcome: `allow` or `deny`, and the policy's reasons
/// (or the engine's error).
fn verdict_of(outcome: &Result<Decision, EngineError>) -> (&'static str, Cow<'_, [String]>) {
    match outcome {
        Ok(d) => (
            if d.allow { "allow" } else { "deny" },
            Cow::Borrowed(d.reasons.as_slice()),
        ),
        Err(e) => ("deny", Cow::Owned(vec![format!("engine error: {e}")])),
    }
}

#[cfg(test)]
mod tests;
