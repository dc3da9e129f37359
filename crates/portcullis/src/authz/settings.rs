//! What a route asks of authorization.

use http::Method;

/// A route's authorization settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteAuthz {
    /// The resource type in the policy input (and in the `<method>_<type>` action).
    pub resource_type: String,
    /// A template for the resource id, such as `{id}`; `None` means no id.
    pub resource_id: Option<String>,
    /// Methods that need proof of multi-factor authentication (step-up, RFC 9470).
    pub require_mfa: Vec<Method>,
}
