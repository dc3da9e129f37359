//! Authorization: one policy input document for every engine, a decision on every request
//! (never cached), step-up for MFA-protected methods, and a durable record of each decision.

pub mod cedar;
pub mod decision_log;
pub mod engine;
mod layer;
pub mod settings;

pub use layer::{Authorize, AuthorizeLayer};
pub use settings::RouteAuthz;

use crate::authn::Principal;
use crate::authn::mtls::ClientIdentity;
use crate::event::{EventBus, EventType, SecurityEvent, Severity};
use decision_log::DecisionLog;
use engine::{Decision, EngineError, OpaClient, RegoPolicy};
use http::{HeaderMap, Method};
use serde_json::{Map, Value, json};
use std::net::IpAddr;
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

/// Request facts that go into the policy input.
#[derive(Debug)]
pub struct RequestFacts<'a> {
    /// The method.
    pub method: &'a Method,
    /// The canonical path.
    pub path: &'a str,
    /// Route parameters.
    pub params: &'a [(Arc<str>, String)],
    /// The client address.
    pub client_ip: Option<IpAddr>,
    /// The request headers (a few are copied into the input).
    pub headers: &'a HeaderMap,
    /// The identity of the connection's verified client certificate, if any.
    pub mtls_identity: Option<&'a ClientIdentity>,
    /// The protocol the request asks to switch to (`websocket`), if any.
    pub upgrade: Option<&'a str>,
    /// A gRPC call (its route leads to a gRPC upstream): the action is the full method
    /// (`/pkg.Service/Method`, the path) instead of `<method>_<type>`.
    pub grpc: bool,
}

/// Headers a policy may look at.
const INPUT_HEADERS: [&str; 3] = ["content-type", "user-agent", "accept"];

/// How the principal's token is sender-constrained, as the authenticate layer proved it
/// for this request (a request with a bound token gets here only if its binding held):
/// `{"type": "dpop", "jkt": ...}`, `{"type": "mtls", "x5t": ...}`, or `null`.
fn binding_of(principal: &Principal) -> Value {
    let cnf = principal.claims.all.get("cnf").and_then(Value::as_object);
    let member = |name: &str| cnf.and_then(|c| c.get(name)).and_then(Value::as_str);
    match (member("jkt"), member("x5t#S256")) {
        (Some(jkt), _) => json!({ "type": "dpop", "jkt": jkt }),
        (None, Some(x5t)) => json!({ "type": "mtls", "x5t": x5t }),
        (None, None) => Value::Null,
    }
}

/// The policy input (the same for every engine; documented in the README).
pub fn policy_input(
    route: &RouteAuthz,
    principal: Option<&Principal>,
    mfa: bool,
    facts: &RequestFacts<'_>,
) -> Value {
    let params: Map<String, Value> = facts
        .params
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
        .collect();
    let resource_id = route.resource_id.as_ref().map(|template| {
        let mut id = template.clone();
        for (name, value) in facts.params {
            id = id.replace(&format!("{{{name}}}"), value);
        }
        id
    });
    let action = if facts.grpc {
        facts.path.to_string()
    } else {
        format!(
            "{}_{}",
            facts.method.as_str().to_ascii_lowercase(),
            route.resource_type
        )
    };
    let user = principal.map(|p| {
        let roles = p
            .claims
            .all
            .get("roles")
            .or_else(|| p.claims.all.get("groups"))
            .and_then(Value::as_array)
            .map(|r| {
                r.iter()
                    .filter(|v| v.is_string())
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        json!({
            "id": p.subject,
            "issuer": p.issuer.as_ref(),
            "roles": roles,
            "scopes": p.scopes,
            "claims": Value::Object(p.claims.all.clone()),
            "mfa": mfa,
            "binding": binding_of(p),
        })
    });
    let headers: Map<String, Value> = INPUT_HEADERS
        .iter()
        .filter_map(|name| {
            let value = facts.headers.get(*name)?.to_str().ok()?;
            Some((name.to_string(), Value::String(value.to_string())))
        })
        .collect();
    json!({
        "user": user,
        "resource": { "type": route.resource_type, "id": resource_id, "params": params },
        "action": action,
        "environment": {
            "ip": facts.client_ip.map(|ip| ip.to_string()),
            "time": crate::time::now_rfc3339(),
            "mfa_verified": mfa,
            "mtls_identity": facts.mtls_identity.map_or(Value::Null, ClientIdentity::to_json),
        },
        "request": {
            "method": facts.method.as_str(),
            "path": facts.path,
            "headers": headers,
            "upgrade": facts.upgrade,
        },
    })
}

/// The decision record for the log.
fn record(
    request_id: &str,
    engine: &str,
    input: &Value,
    outcome: &Result<Decision, EngineError>,
) -> Map<String, Value> {
    let (decision, reasons) = match outcome {
        Ok(d) => (if d.allow { "allow" } else { "deny" }, d.reasons.clone()),
        Err(e) => ("deny", vec![format!("engine error: {e}")]),
    };
    let record = json!({
        "request_id": request_id,
        "timestamp": crate::time::now_rfc3339(),
        "principal": input.pointer("/user/id").cloned().unwrap_or(Value::Null),
        "action": input.get("action").cloned().unwrap_or(Value::Null),
        "resource": { "type": input.pointer("/resource/type"), "id": input.pointer("/resource/id") },
        "decision": decision,
        "engine": engine,
        "reasons": reasons,
    });
    match record {
        Value::Object(record) => record,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests;
