//! The verified-token cache: caches the cryptographic verification only, never a decision.

use super::Principal;
use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

const SHARDS: usize = 16;

struct Entry {
    principal: Arc<Principal>,
    expires_at: f64,
    issuer: usize,
    generation: u64,
}

/// A bounded map from token text to its verified principal. Entries die at the token's
/// `exp` and whenever their issuer's key set changes.
pub struct TokenCache {
    shards: Vec<Mutex<HashMap<Box<str>, Entry>>>,
    per_shard: usize,
    hasher: RandomState,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("capacity", &(self.per_shard * SHARDS))
            .finish()
    }
}

impl TokenCache {
    /// A cache of about `capacity` tokens (0 disables it).
    pub fn new(capacity: usize) -> Self {
        TokenCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, token: &str) -> Option<&Mutex<HashMap<Box<str>, Entry>>> {
        let index = (self.hasher.hash_one(token) as usize) % SHARDS;
        self.shards.get(index)
    }

    /// The cached principal, if the entry is still valid at `now` for this key generation.
    pub fn get(
        &self,
        token: &str,
        now: f64,
        generation_of: impl Fn(usize) -> u64,
    ) -> Option<Arc<Principal>> {
        let mut shard = self.shard(token)?.lock().ok()?;
        let entry = shard.get(token)?;
        if entry.expires_at > now && entry.generation == generation_of(entry.issuer) {
            return Some(entry.principal.clone());
        }
        shard.remove(token);
        None
    }

    /// Remembers a verification.
    pub fn insert(
        &self,
        token: &str,
        principal: Arc<Principal>,
        expires_at: f64,
        issuer: usize,
        generation: u64,
    ) {
        if self.per_shard == 0 {
            return;
        }
        let Some(Ok(mut shard)) = self.shard(token).map(Mutex::lock) else {
            return;
        };
        if shard.len() >= self.per_shard {
            // Evict one arbitrary entry (hash order is effectively random): memory stays
            // bounded under a flood of distinct tokens, and a working set that barely
            // overflows still mostly hits. Expired entries go when they are next looked up.
            if let Some(victim) = shard.keys().next().cloned() {
                shard.remove(&victim);
            }
        }
        shard.insert(
            Box::from(token),
            Entry {
                principal,
                expires_at,
                issuer,
                generation,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal() -> Arc<Principal> {
        Arc::new(Principal {
            issuer: Arc::from("t"),
            subject: None,
            scopes: Vec::new(),
            claims: Default::default(),
        })
    }

    #[test]
    fn bounded_and_generation_aware() {
        let cache = TokenCache::new(32);
        for i in 0..1000 {
            cache.insert(&format!("token-{i}"), principal(), f64::MAX, 0, 1);
        }
        let held: usize = cache
            .shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum();
        assert!(held <= 32, "{held} entries held");
        cache.insert("t", principal(), f64::MAX, 0, 1);
        assert!(cache.get("t", 0.0, |_| 1).is_some());
        assert!(
            cache.get("t", 0.0, |_| 2).is_none(),
            "a new key set generation must invalidate"
        );
        cache.insert("old", principal(), 10.0, 0, 1);
        assert!(
            cache.get("old", 11.0, |_| 1).is_none(),
            "expired entries must not be served"
        );
    }
}
