//! Token revocation: by `jti` until the token's `exp`, or every token of a subject issued
//! before a point in time.

use super::Principal;
use crate::redis_backend::{RedisBackend, RedisConnection};
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

/// Why a revocation check or update could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("revocation store unavailable: {0}")]
pub struct StoreError(pub String);

/// A revocation list in Redis (one server or a Cluster), shared by every gateway instance
/// that uses the same store: a revocation made through one instance applies on the next
/// request to any of them.
pub struct RedisRevocations {
    backend: RedisBackend,
    timeout: std::time::Duration,
    prefix: String,
    /// How long a subject revocation must be remembered (the longest token lifetime).
    subject_ttl: std::time::Duration,
}

impl std::fmt::Debug for RedisRevocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRevocations")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisRevocations {
    /// A store at `url` (connected on first use), with a per-operation `timeout`.
    pub fn new(
        url: &str,
        timeout: std::time::Duration,
        subject_ttl: std::time::Duration,
    ) -> Result<Self, StoreError> {
        let backend =
            RedisBackend::single(url, timeout, 1).map_err(|e| StoreError(e.to_string()))?;
        Ok(RedisRevocations::on(backend, timeout, subject_ttl))
    }

    /// A store on a Redis Cluster reached through any of `nodes`. A `jti` and a subject live
    /// on their own slots, so a check asks both at once.
    pub fn cluster(
        nodes: &[String],
        timeout: std::time::Duration,
        subject_ttl: std::time::Duration,
    ) -> Result<Self, StoreError> {
        let backend =
            RedisBackend::cluster(nodes, timeout, 1).map_err(|e| StoreError(e.to_string()))?;
        Ok(RedisRevocations::on(backend, timeout, subject_ttl))
    }

    fn on(
        backend: RedisBackend,
        timeout: std::time::Duration,
        subject_ttl: std::time::Duration,
    ) -> Self {
        RedisRevocations {
            backend,
            timeout,
            prefix: "portcullis:revoked:".into(),
            subject_ttl,
        }
    }

    async fn connection(&self) -> Result<RedisConnection, StoreError> {
        match tokio::time::timeout(self.timeout * 4, self.backend.connection()).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(e)) => Err(StoreError(e.to_string())),
            Err(_) => Err(StoreError("connecting timed out".into())),
        }
    }

    async fn run<T: redis::FromRedisValue>(&self, command: redis::Cmd) -> Result<T, StoreError> {
        let mut connection = self.connection().await?;
        match tokio::time::timeout(self.timeout, command.query_async(&mut connection)).await {
            Ok(result) => result.map_err(|e| StoreError(e.to_string())),
            Err(_) => Err(StoreError("timed out".into())),
        }
    }

    /// The values at the `jti` key and the subject key: one MGET on one server; on a Cluster,
    /// where the two keys sit on different slots (and a pipeline goes to one node), one GET
    /// each, sent at once.
    async fn both(
        &self,
        jti: String,
        sub: String,
    ) -> Result<(Option<String>, Option<String>), StoreError> {
        if !self.backend.is_cluster() {
            let mut cmd = redis::cmd("MGET");
            cmd.arg(jti).arg(sub);
            return self.run(cmd).await;
        }
        let get = |key: String| {
            let mut cmd = redis::cmd("GET");
            cmd.arg(key);
            self.run::<Option<String>>(cmd)
        };
        tokio::try_join!(get(jti), get(sub))
    }
}

/// Where revocations live.
// One value per configured store for the life of the process: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Revocations {
    /// In this process only.
    Memory(RevocationList),
    /// In Redis, shared by every instance.
    Redis(RedisRevocations),
}

impl Default for Revocations {
    fn default() -> Self {
        Revocations::Memory(RevocationList::default())
    }
}

impl Revocations {
    /// Revokes the token with this `jti` until `until`.
    pub async fn revoke_jti(&self, jti: &str, until: f64) -> Result<(), StoreError> {
        match self {
            Revocations::Memory(list) => {
                list.revoke_jti(jti, until);
                Ok(())
            }
            Revocations::Redis(redis) => {
                let ttl = ((until - super::now_secs()).ceil() as i64).max(1);
                let mut cmd = redis::cmd("SET");
                cmd.arg(format!("{}jti:{jti}", redis.prefix))
                    .arg(1)
                    .arg("EX")
                    .arg(ttl);
                redis.run::<()>(cmd).await
            }
        }
    }

    /// Revokes every token of `subject` issued at or before `before`.
    pub async fn revoke_subject(&self, subject: &str, before: f64) -> Result<(), StoreError> {
        match self {
            Revocations::Memory(list) => {
                list.revoke_subject(subject, before);
                Ok(())
            }
            Revocations::Redis(redis) => {
                let mut cmd = redis::cmd("SET");
                cmd.arg(format!("{}sub:{subject}", redis.prefix))
                    .arg(before.to_string())
                    .arg("EX")
                    .arg(redis.subject_ttl.as_secs().max(1));
                redis.run::<()>(cmd).await
            }
        }
    }

    /// Whether the principal's token is revoked; a store that cannot answer is an error
    /// (the caller refuses: fail closed).
    pub async fn is_revoked(&self, principal: &Principal) -> Result<bool, StoreError> {
        match self {
            Revocations::Memory(list) => Ok(list.is_revoked(principal)),
            Revocations::Redis(redis) => {
                let claims = &principal.claims;
                if claims.jti.is_none() && claims.sub.is_none() {
                    return Ok(false);
                }
                let (jti, sub) = redis
                    .both(
                        format!(
                            "{}jti:{}",
                            redis.prefix,
                            claims.jti.as_deref().unwrap_or("\u{0}")
                        ),
                        format!(
                            "{}sub:{}",
                            redis.prefix,
                            claims.sub.as_deref().unwrap_or("\u{0}")
                        ),
                    )
                    .await?;
                if jti.is_some() {
                    return Ok(true);
                }
                Ok(sub
                    .and_then(|before| before.parse::<f64>().ok())
                    .is_some_and(|before| claims.iat.is_none_or(|iat| iat <= before)))
            }
        }
    }
}
