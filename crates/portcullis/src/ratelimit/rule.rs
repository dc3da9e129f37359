//! A named limit and what it is counted per.

use super::gcra::Quota;

/// What a limit is counted per.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKey {
    /// The authenticated principal (anonymous callers: their address).
    PrincipalOrIp,
    /// The authenticated principal only (anonymous callers share one key per route).
    Principal,
    /// The client address.
    Ip,
}

/// A named limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitRule {
    /// The name in `RateLimit-Policy` headers.
    pub name: String,
    /// How many per window.
    pub quota: Quota,
    /// Per what.
    pub key: LimitKey,
}
