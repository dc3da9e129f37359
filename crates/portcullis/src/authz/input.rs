//! The policy input document: one shape, written once, built either as JSON (for OPA, Cedar,
//! `portcullis policy eval` and the tests) or straight into the embedded Rego engine's own
//! values, so a Rego decision never builds JSON only to convert it.

use super::RouteAuthz;
use crate::authn::Principal;
use crate::authn::mtls::ClientIdentity;
use http::{HeaderMap, Method};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

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

/// What the input and the decision record both say about a request, derived once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    /// The action asked for: the gRPC method's path, or `<method>_<resource type>`.
    pub action: String,
    /// The resource id: the route's template with the route parameters filled in.
    pub resource_id: Option<String>,
    /// When the decision is made (RFC 3339): the input's `environment.time` and the
    /// record's `timestamp`.
    pub time: String,
}

impl Derived {
    /// The action and resource id of a request on a route.
    pub fn of(route: &RouteAuthz, facts: &RequestFacts<'_>) -> Derived {
        let action = if facts.grpc {
            facts.path.to_string()
        } else {
            let method = facts.method.as_str();
            let mut action = String::with_capacity(method.len() + 1 + route.resource_type.len());
            action.extend(method.chars().map(|c| c.to_ascii_lowercase()));
            action.push('_');
            action.push_str(&route.resource_type);
            action
        };
        let resource_id = route.resource_id.as_ref().map(|template| {
            let mut id = template.clone();
            for (name, value) in facts.params {
                id = id.replace(&format!("{{{name}}}"), value);
            }
            id
        });
        Derived {
            action,
            resource_id,
            time: crate::time::now_rfc3339(),
        }
    }
}

/// A document tree the input can be built as: JSON, or the Rego engine's values.
pub(super) trait Tree: Sized {
    fn null() -> Self;
    fn boolean(value: bool) -> Self;
    fn string(value: &str) -> Self;
    fn array(items: Vec<Self>) -> Self;
    fn object<'a>(members: impl IntoIterator<Item = (&'a str, Self)>) -> Self;
    /// A JSON value as it stands (the token's claims, the client certificate).
    fn json(value: &Value) -> Self;

    fn optional(value: Option<&str>) -> Self {
        value.map_or_else(Self::null, Self::string)
    }
}

impl Tree for Value {
    fn null() -> Self {
        Value::Null
    }
    fn boolean(value: bool) -> Self {
        Value::Bool(value)
    }
    fn string(value: &str) -> Self {
        Value::String(value.to_string())
    }
    fn array(items: Vec<Self>) -> Self {
        Value::Array(items)
    }
    fn object<'a>(members: impl IntoIterator<Item = (&'a str, Self)>) -> Self {
        Value::Object(
            members
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }
    fn json(value: &Value) -> Self {
        value.clone()
    }
}

impl Tree for regorus::Value {
    fn null() -> Self {
        regorus::Value::Null
    }
    fn boolean(value: bool) -> Self {
        regorus::Value::Bool(value)
    }
    fn string(value: &str) -> Self {
        regorus::Value::String(value.into())
    }
    fn array(items: Vec<Self>) -> Self {
        regorus::Value::from(items)
    }
    fn object<'a>(members: impl IntoIterator<Item = (&'a str, Self)>) -> Self {
        let map: BTreeMap<regorus::Value, regorus::Value> = members
            .into_iter()
            .map(|(k, v)| (regorus::Value::String(k.into()), v))
            .collect();
        regorus::Value::from(map)
    }
    fn json(value: &Value) -> Self {
        rego_value(value)
    }
}

/// A JSON value as the Rego engine's value, walked directly (no clone of the JSON, no trip
/// through serde). Numbers keep their kind: unsigned, signed, or a float.
pub fn rego_value(value: &Value) -> regorus::Value {
    match value {
        Value::Null => regorus::Value::Null,
        Value::Bool(b) => regorus::Value::Bool(*b),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                regorus::Value::from(u)
            } else if let Some(i) = n.as_i64() {
                regorus::Value::from(i)
            } else {
                regorus::Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => regorus::Value::String(s.as_str().into()),
        Value::Array(items) => {
            regorus::Value::from(items.iter().map(rego_value).collect::<Vec<_>>())
        }
        Value::Object(map) => Tree::object(map.iter().map(|(k, v)| (k.as_str(), rego_value(v)))),
    }
}

/// How the principal's token is sender-constrained, as the authenticate layer proved it
/// for this request (a request with a bound token gets here only if its binding held):
/// `{"type": "dpop", "jkt": ...}`, `{"type": "mtls", "x5t": ...}`, or `null`.
fn binding_of<T: Tree>(principal: &Principal) -> T {
    let cnf = principal.claims.all.get("cnf").and_then(Value::as_object);
    let member = |name: &str| cnf.and_then(|c| c.get(name)).and_then(Value::as_str);
    match (member("jkt"), member("x5t#S256")) {
        (Some(jkt), _) => T::object([("type", T::string("dpop")), ("jkt", T::string(jkt))]),
        (None, Some(x5t)) => T::object([("type", T::string("mtls")), ("x5t", T::string(x5t))]),
        (None, None) => T::null(),
    }
}

fn user<T: Tree>(principal: &Principal, mfa: bool) -> T {
    let all = &principal.claims.all;
    let roles = all
        .get("roles")
        .or_else(|| all.get("groups"))
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).map(T::string).collect())
        .unwrap_or_default();
    let claims = all
        .iter()
        .map(|(name, value)| (name.as_str(), T::json(value)));
    T::object([
        ("id", T::optional(principal.subject.as_deref())),
        ("issuer", T::string(&principal.issuer)),
        ("roles", T::array(roles)),
        (
            "scopes",
            T::array(principal.scopes.iter().map(|s| T::string(s)).collect()),
        ),
        ("claims", T::object(claims)),
        ("mfa", T::boolean(mfa)),
        ("binding", binding_of(principal)),
    ])
}

/// The whole input, in the shape the README documents, with the action and resource id
/// derived once by the caller.
pub(super) fn build<T: Tree>(
    route: &RouteAuthz,
    principal: Option<&Principal>,
    mfa: bool,
    facts: &RequestFacts<'_>,
    derived: &Derived,
) -> T {
    let params = facts.params.iter().map(|(k, v)| (&**k, T::string(v)));
    let headers = INPUT_HEADERS.iter().filter_map(|name| {
        let value = facts.headers.get(*name)?.to_str().ok()?;
        Some((*name, T::string(value)))
    });
    let ip = facts.client_ip.map(|ip| ip.to_string());
    T::object([
        ("user", principal.map_or_else(T::null, |p| user(p, mfa))),
        (
            "resource",
            T::object([
                ("type", T::string(&route.resource_type)),
                ("id", T::optional(derived.resource_id.as_deref())),
                ("params", T::object(params)),
            ]),
        ),
        ("action", T::string(&derived.action)),
        (
            "environment",
            T::object([
                ("ip", T::optional(ip.as_deref())),
                ("time", T::string(&derived.time)),
                ("mfa_verified", T::boolean(mfa)),
                (
                    "mtls_identity",
                    facts
                        .mtls_identity
                        .map_or_else(T::null, |identity| T::json(&identity.to_json())),
                ),
            ]),
        ),
        (
            "request",
            T::object([
                ("method", T::string(facts.method.as_str())),
                ("path", T::string(facts.path)),
                ("headers", T::object(headers)),
                ("upgrade", T::optional(facts.upgrade)),
            ]),
        ),
    ])
}

/// The policy input as JSON (the same for every engine; documented in the README).
pub fn policy_input(
    route: &RouteAuthz,
    principal: Option<&Principal>,
    mfa: bool,
    facts: &RequestFacts<'_>,
) -> Value {
    build(route, principal, mfa, facts, &Derived::of(route, facts))
}
