//! Token revocation: by `jti` until the token's `exp`, or every token of a subject issued
//! before a point in time.

use super::Principal;
use std::collections::HashMap;
use std::sync::Mutex;

/// Most revoked `jti`s and subjects held; the oldest-expiring are pruned first.
const MAX_ENTRIES: usize = 100_000;

/// An in-memory revocation list, shared by every configuration generation.
#[derive(Debug, Default)]
pub struct RevocationList {
    by_jti: Mutex<HashMap<String, f64>>,
    by_subject: Mutex<HashMap<String, f64>>,
}

impl RevocationList {
    /// Revokes the token with this `jti` until `until` (its `exp`).
    pub fn revoke_jti(&self, jti: &str, until: f64) {
        if let Ok(mut map) = self.by_jti.lock() {
            if map.len() >= MAX_ENTRIES {
                let now = super::now_secs();
                map.retain(|_, until| *until > now);
            }
            if map.len() < MAX_ENTRIES {
                map.insert(jti.to_string(), until);
            }
        }
    }

    /// Revokes every token of `subject` issued at or before `before`.
    pub fn revoke_subject(&self, subject: &str, before: f64) {
        if let Ok(mut map) = self.by_subject.lock()
            && (map.len() < MAX_ENTRIES || map.contains_key(subject))
        {
            map.insert(subject.to_string(), before);
        }
    }

    /// Whether the principal's token is revoked. A token without `iat` cannot prove it was
    /// issued after a subject-wide revocation, so it counts as revoked.
    pub fn is_revoked(&self, principal: &Principal) -> bool {
        let claims = &principal.claims;
        if let Some(jti) = &claims.jti
            && let Ok(map) = self.by_jti.lock()
            && map.contains_key(jti)
        {
            return true;
        }
        if let Some(sub) = &claims.sub
            && let Ok(map) = self.by_subject.lock()
            && let Some(before) = map.get(sub)
        {
            return claims.iat.is_none_or(|iat| iat <= *before);
        }
        false
    }
}
