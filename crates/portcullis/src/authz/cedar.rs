//! Cedar as a policy engine: the same policy input mapped to a Cedar request. The caller
//! becomes `User::"<user.id>"` with `roles`, `scopes` and `mfa` attributes, built directly
//! per request; the action is `Action::"<action>"`; the resource is `<type>::"<id>"`, whose
//! attributes (an `owner`, say) come from the configured entities file.

use super::engine::{Decision, EngineError, PolicyLoadError};
use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicySet, Request,
    RestrictedExpression,
};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::str::FromStr;

/// A compiled Cedar policy set with its static entities.
pub struct CedarPolicy {
    policies: PolicySet,
    entities: Entities,
    authorizer: Authorizer,
}

impl std::fmt::Debug for CedarPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CedarPolicy").finish_non_exhaustive()
    }
}

fn uid(type_name: &str, id: &str) -> Result<EntityUid, EngineError> {
    let name = EntityTypeName::from_str(type_name)
        .map_err(|e| EngineError::Failed(format!("`{type_name}` is not a Cedar type name: {e}")))?;
    Ok(EntityUid::from_type_name_and_id(name, EntityId::new(id)))
}

fn string_set(value: Option<&Value>) -> RestrictedExpression {
    let items = value
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str())
                .map(|s| RestrictedExpression::new_string(s.to_string()))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    RestrictedExpression::new_set(items)
}

/// `context.mtls_identity` as a record (Cedar has no null: a request without a client
/// certificate has no such attribute, which policies test with `context has mtls_identity`).
/// `spiffe_id` is likewise present only when the certificate carries one.
fn mtls_identity(input: &Value) -> Result<Option<RestrictedExpression>, EngineError> {
    let Some(identity) = input
        .pointer("/environment/mtls_identity")
        .filter(|v| v.is_object())
    else {
        return Ok(None);
    };
    let text = |key: &str| {
        identity
            .get(key)
            .and_then(Value::as_str)
            .map(|s| RestrictedExpression::new_string(s.to_string()))
    };
    let mut fields = vec![
        (
            "dns_names".to_string(),
            string_set(identity.get("dns_names")),
        ),
        ("uris".to_string(), string_set(identity.get("uris"))),
    ];
    for key in ["subject", "sha256", "spiffe_id"] {
        if let Some(value) = text(key) {
            fields.push((key.to_string(), value));
        }
    }
    RestrictedExpression::new_record(fields)
        .map(Some)
        .map_err(|e| EngineError::Failed(e.to_string()))
}

impl CedarPolicy {
    /// Compiles `sources` (Cedar policy text) with an optional entities document (Cedar's
    /// JSON entity format).
    pub fn new(
        sources: &[(String, String)],
        entities: Option<&Value>,
    ) -> Result<CedarPolicy, PolicyLoadError> {
        let mut text = String::new();
        for (name, source) in sources {
            PolicySet::from_str(source).map_err(|e| PolicyLoadError::Source {
                file: name.clone(),
                detail: e.to_string(),
            })?;
            text.push_str(source);
            text.push('\n');
        }
        let policies =
            PolicySet::from_str(&text).map_err(|e| PolicyLoadError::Combined(e.to_string()))?;
        let entities = match entities {
            Some(document) => Entities::from_json_value(document.clone(), None)
                .map_err(|e| PolicyLoadError::Entities(e.to_string()))?,
            None => Entities::empty(),
        };
        Ok(CedarPolicy {
            policies,
            entities,
            authorizer: Authorizer::new(),
        })
    }

    /// Decides on one policy input document.
    pub fn decide(&self, input: &Value) -> Result<Decision, EngineError> {
        let user = input.get("user").filter(|u| u.is_object());
        let user_id = user
            .and_then(|u| u.get("id"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let principal = uid("User", user_id)?;
        let mut attrs = HashMap::new();
        attrs.insert(
            "roles".to_string(),
            string_set(user.and_then(|u| u.get("roles"))),
        );
        attrs.insert(
            "scopes".to_string(),
            string_set(user.and_then(|u| u.get("scopes"))),
        );
        attrs.insert(
            "mfa".to_string(),
            RestrictedExpression::new_bool(
                user.and_then(|u| u.get("mfa"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            ),
        );
        // "dpop", "mtls" or "none": how the token is sender-constrained.
        attrs.insert(
            "binding".to_string(),
            RestrictedExpression::new_string(
                user.and_then(|u| u.pointer("/binding/type"))
                    .and_then(Value::as_str)
                    .unwrap_or("none")
                    .to_string(),
            ),
        );
        let caller = Entity::new(principal.clone(), attrs, HashSet::new())
            .map_err(|e| EngineError::Failed(e.to_string()))?;
        let action = uid(
            "Action",
            input
                .get("action")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        )?;
        let resource_type = input
            .pointer("/resource/type")
            .and_then(Value::as_str)
            .unwrap_or("Resource");
        let resource_id = input
            .pointer("/resource/id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let resource = uid(resource_type, resource_id)?;
        let text = |pointer: &str| {
            RestrictedExpression::new_string(
                input
                    .pointer(pointer)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            )
        };
        let mut pairs = vec![
            ("method".to_string(), text("/request/method")),
            ("path".to_string(), text("/request/path")),
            ("ip".to_string(), text("/environment/ip")),
            (
                "mfa_verified".to_string(),
                RestrictedExpression::new_bool(
                    input
                        .pointer("/environment/mfa_verified")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                ),
            ),
        ];
        if let Some(identity) = mtls_identity(input)? {
            pairs.push(("mtls_identity".to_string(), identity));
        }
        let context = Context::from_pairs(pairs).map_err(|e| EngineError::Failed(e.to_string()))?;
        let request = Request::new(principal, action, resource, context, None)
            .map_err(|e| EngineError::Failed(e.to_string()))?;
        let entities = self
            .entities
            .clone()
            .add_entities([caller], None)
            .map_err(|e| EngineError::Failed(e.to_string()))?;
        let response = self
            .authorizer
            .is_authorized(&request, &self.policies, &entities);
        let reasons = response
            .diagnostics()
            .reason()
            .map(|id| id.to_string())
            .collect();
        Ok(Decision {
            allow: response.decision() == cedar_policy::Decision::Allow,
            reasons,
        })
    }
}
