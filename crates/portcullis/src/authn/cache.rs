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
            // Drop what has expired; if that frees nothing, start the shard afresh. Bounded
            // memory matters more than the hit rate under a flood of distinct tokens.
            shard.retain(|_, e| e.expires_at > super::now_secs());
            if shard.len() >= self.per_shard {
                shard.clear();
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
