//! What a route asks of authentication, and how a proven identity travels upstream.

use super::mtls::IdentityPattern;
use http::{HeaderName, Method};

/// Whether a route needs a caller identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// A valid token is required.
    Required,
    /// A token is verified if present; anonymous callers pass.
    Optional,
    /// Public: no authentication.
    None,
    /// A browser session (`identity.oidc_login`): the session layer puts its access token
    /// on the request, which is then verified like a bearer token.
    Session,
}

/// Which scopes a route requires.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ScopeRule {
    /// No scope is required.
    #[default]
    Any,
    /// Every listed scope is required, for every method.
    All(Vec<String>),
    /// Per method; a method not listed requires no scope.
    PerMethod(Vec<(Method, Vec<String>)>),
}

impl ScopeRule {
    /// The scopes `method` requires.
    pub(crate) fn required(&self, method: &Method) -> &[String] {
        match self {
            ScopeRule::Any => &[],
            ScopeRule::All(scopes) => scopes,
            ScopeRule::PerMethod(list) => list
                .iter()
                .find(|(m, _)| m == method)
                .map_or(&[], |(_, s)| s),
        }
    }
}

/// A route's authentication settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteAuth {
    /// Whether a token is needed.
    pub mode: AuthMode,
    /// Which scopes it must carry.
    pub scopes: ScopeRule,
    /// When not empty, the connection's client certificate must match one of these
    /// (whatever `mode` says): anything else is refused with 403.
    pub client_identities: Vec<IdentityPattern>,
}

/// How the verified identity travels upstream.
#[derive(Debug, Clone, Default)]
pub struct ForwardSettings {
    /// Keep `Authorization` on the forwarded request.
    pub token: bool,
    /// Headers set from claims (`(header, claim)`); the same headers sent by a client are
    /// always removed first.
    pub identity_headers: Vec<(HeaderName, String)>,
}
