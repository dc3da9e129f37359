//! Where sessions live: sealed in the cookie itself, or in Redis behind an opaque sealed id.
//! Either way the browser holds one cookie; ended sealed-cookie sessions are remembered as
//! revoked until they would have expired.

use super::cookie;
use super::seal::Sealer;
use crate::ratelimit::store::Limiter;
use http::HeaderValue;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Largest `Set-Cookie` name plus value (browsers keep at least 4096 bytes per cookie; the
/// attributes count for some of them).
pub const MAX_COOKIE_BYTES: usize = 4000;

/// Most ended sessions remembered in memory (beyond it the oldest-expiring go first).
const MAX_REVOKED: usize = 100_000;

/// One browser session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The session id (new at every login: a session cannot be fixed in advance).
    pub sid: String,
    /// The user (`sub` of the ID token).
    pub sub: String,
    /// The access token sent upstream.
    pub at: String,
    /// When it expires (Unix seconds).
    pub at_exp: u64,
    /// The refresh token, if the provider gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rt: Option<String>,
    /// The ID token, for `id_token_hint` at logout (left out of a cookie it does not fit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idt: Option<String>,
    /// The login showed MFA.
    pub mfa: bool,
    /// When the session began.
    pub created: u64,
    /// When it was last used (rounded to the touch interval).
    pub seen: u64,
    /// When it ends, whatever happens (created + ttl).
    pub exp: u64,
}

/// What a session cookie led to.
#[derive(Debug)]
pub enum Loaded {
    /// A live session.
    Found(SessionRecord),
    /// The cookie does not open (tampered, foreign, or a retired key).
    Invalid,
    /// Ended by a logout (or gone from the store).
    Ended,
    /// The shared store could not be asked.
    Unavailable(String),
}

/// Why a session could not be saved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaveError {
    /// The session does not fit in one cookie.
    #[error(
        "the session needs {0} bytes, over the {MAX_COOKIE_BYTES}-byte cookie limit; use `session.store: redis`"
    )]
    TooLarge(usize),
    /// The shared store could not be written.
    #[error("the session store is unavailable: {0}")]
    Unavailable(String),
}

/// The two stores.
#[derive(Debug)]
enum Backend {
    /// The whole record sealed in the cookie.
    Cookie,
    /// The record in Redis, the cookie a sealed id.
    Redis(Arc<Limiter>),
}

/// Sessions: sealed, stored, ended.
#[derive(Debug)]
pub struct SessionStore {
    backend: Backend,
    sealer: Arc<Sealer>,
    /// Ended sealed-cookie sessions (id → expiry), when no Redis is shared.
    revoked: Mutex<HashMap<String, u64>>,
    /// Redis for ended sealed-cookie sessions, when limits are shared (every instance sees them).
    shared: Option<Arc<Limiter>>,
}

/// What a stored record is sealed for (never opens as a cookie, nor a cookie as a record).
const RECORD_PURPOSE: &str = "portcullis session record";

fn record_key(sid: &str) -> String {
    // The hash tag keeps a session's keys on one Redis Cluster slot.
    format!("portcullis:session:{{{sid}}}")
}

fn revoked_key(sid: &str) -> String {
    format!("portcullis:session:{{{sid}}}:revoked")
}

fn lock_key(sid: &str) -> String {
    format!("portcullis:session:{{{sid}}}:refresh")
}

impl SessionStore {
    /// Sessions sealed in their cookie; ended ones remembered in `shared` Redis if given.
    pub fn cookie(sealer: Arc<Sealer>, shared: Option<Arc<Limiter>>) -> Self {
        SessionStore {
            backend: Backend::Cookie,
            sealer,
            revoked: Mutex::default(),
            shared: shared.filter(|l| l.shared_store().is_some()),
        }
    }

    /// Sessions kept in the Redis of `limiter` (which must share a store).
    pub fn redis(sealer: Arc<Sealer>, limiter: Arc<Limiter>) -> Self {
        SessionStore {
            backend: Backend::Redis(limiter),
            sealer,
            revoked: Mutex::default(),
            shared: None,
        }
    }

    /// Whether records live in Redis (refreshes then coordinate across instances).
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Redis(_))
    }

    /// The sealer (for pending-login cookies too).
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// The session a cookie value leads to.
    pub async fn load(&self, value: &str, now: u64) -> Loaded {
        match &self.backend {
            Backend::Cookie => {
                let Some(record) = self
                    .sealer
                    .open(cookie::SESSION, value)
                    .and_then(|plain| serde_json::from_slice::<SessionRecord>(&plain).ok())
                else {
                    return Loaded::Invalid;
                };
                match self.is_revoked(&record.sid, now).await {
                    Ok(false) => Loaded::Found(record),
                    Ok(true) => Loaded::Ended,
                    Err(e) => Loaded::Unavailable(e),
                }
            }
            Backend::Redis(_) => {
                let Some(sid) = self
                    .sealer
                    .open(cookie::SESSION, value)
                    .and_then(|plain| String::from_utf8(plain).ok())
                else {
                    return Loaded::Invalid;
                };
                self.read(&sid).await
            }
        }
    }

    /// The stored record of `sid` (Redis store), as it is now.
    pub async fn read(&self, sid: &str) -> Loaded {
        let Backend::Redis(limiter) = &self.backend else {
            return Loaded::Invalid;
        };
        let Some(redis) = limiter.shared_store() else {
            return Loaded::Unavailable("no shared store".into());
        };
        let mut command = redis::cmd("GET");
        command.arg(record_key(sid));
        match redis.command::<Option<String>>(command).await {
            Err(e) => Loaded::Unavailable(e.to_string()),
            Ok(None) => Loaded::Ended,
            Ok(Some(sealed)) => match self
                .sealer
                .open(RECORD_PURPOSE, &sealed)
                .and_then(|plain| serde_json::from_slice::<SessionRecord>(&plain).ok())
            {
                Some(record) if record.sid == sid => Loaded::Found(record),
                _ => Loaded::Invalid,
            },
        }
    }

    /// Saves `record`; the `Set-Cookie` value the browser needs, if its cookie changes
    /// (always for sealed cookies; for Redis only for a new session).
    pub async fn save(
        &self,
        record: &SessionRecord,
        new: bool,
        idle_timeout: u64,
        now: u64,
    ) -> Result<Option<HeaderValue>, SaveError> {
        match &self.backend {
            Backend::Cookie => {
                let sealed = self.seal_fitting(record)?;
                Ok(cookie::set(cookie::SESSION, &sealed, None))
            }
            Backend::Redis(limiter) => {
                let redis = limiter
                    .shared_store()
                    .ok_or_else(|| SaveError::Unavailable("no shared store".into()))?;
                let json = serde_json::to_vec(record)
                    .map_err(|e| SaveError::Unavailable(e.to_string()))?;
                let sealed = self
                    .sealer
                    .seal(RECORD_PURPOSE, &json)
                    .ok_or_else(|| SaveError::Unavailable("sealing failed".into()))?;
                // Kept no longer than the session could be used: its end, or idle expiry.
                let left = record.exp.saturating_sub(now).min(idle_timeout).max(1);
                let mut command = redis::cmd("SET");
                command
                    .arg(record_key(&record.sid))
                    .arg(sealed)
                    .arg("PX")
                    .arg(left.saturating_mul(1000));
                redis
                    .command::<()>(command)
                    .await
                    .map_err(|e| SaveError::Unavailable(e.to_string()))?;
                if !new {
                    return Ok(None);
                }
                let id = self
                    .sealer
                    .seal(cookie::SESSION, record.sid.as_bytes())
                    .ok_or_else(|| SaveError::Unavailable("sealing failed".into()))?;
                Ok(cookie::set(cookie::SESSION, &id, None))
            }
        }
    }

    /// The record sealed for the cookie, without the ID token if only that makes it too large.
    fn seal_fitting(&self, record: &SessionRecord) -> Result<String, SaveError> {
        let seal = |record: &SessionRecord| {
            serde_json::to_vec(record)
                .ok()
                .and_then(|json| self.sealer.seal(cookie::SESSION, &json))
                .ok_or_else(|| SaveError::Unavailable("sealing failed".into()))
        };
        let sealed = seal(record)?;
        if cookie::SESSION.len() + 1 + sealed.len() <= MAX_COOKIE_BYTES {
            return Ok(sealed);
        }
        let slim = SessionRecord {
            idt: None,
            ..record.clone()
        };
        let sealed = seal(&slim)?;
        let size = cookie::SESSION.len() + 1 + sealed.len();
        if size <= MAX_COOKIE_BYTES {
            Ok(sealed)
        } else {
            Err(SaveError::TooLarge(size))
        }
    }

    /// Ends a session: deleted from Redis, or remembered as revoked until it would expire.
    pub async fn end(&self, record: &SessionRecord, now: u64) -> Result<(), String> {
        match &self.backend {
            Backend::Redis(limiter) => {
                let redis = limiter.shared_store().ok_or("no shared store")?;
                let mut command = redis::cmd("DEL");
                command.arg(record_key(&record.sid));
                redis
                    .command::<()>(command)
                    .await
                    .map_err(|e| e.to_string())
            }
            Backend::Cookie => {
                if let Some(redis) = self.shared.as_ref().and_then(|l| l.shared_store()) {
                    let mut command = redis::cmd("SET");
                    command
                        .arg(revoked_key(&record.sid))
                        .arg(1)
                        .arg("PX")
                        .arg(record.exp.saturating_sub(now).max(1).saturating_mul(1000));
                    return redis
                        .command::<()>(command)
                        .await
                        .map_err(|e| e.to_string());
                }
                let mut revoked = self.revoked.lock().map_err(|_| "poisoned")?;
                if revoked.len() >= MAX_REVOKED {
                    revoked.retain(|_, until| *until > now);
                }
                if revoked.len() >= MAX_REVOKED
                    && let Some(soonest) = revoked
                        .iter()
                        .min_by_key(|(_, until)| **until)
                        .map(|(sid, _)| sid.clone())
                {
                    revoked.remove(&soonest);
                }
                revoked.insert(record.sid.clone(), record.exp);
                Ok(())
            }
        }
    }

    async fn is_revoked(&self, sid: &str, now: u64) -> Result<bool, String> {
        if let Some(redis) = self.shared.as_ref().and_then(|l| l.shared_store()) {
            let mut command = redis::cmd("EXISTS");
            command.arg(revoked_key(sid));
            return redis
                .command::<bool>(command)
                .await
                .map_err(|e| e.to_string());
        }
        let revoked = self.revoked.lock().map_err(|_| "poisoned")?;
        Ok(revoked.get(sid).is_some_and(|until| *until > now))
    }

    /// Takes the cross-instance refresh lock of `sid` for `millis` (Redis store; the memory
    /// store has only this process, which single-flights in memory).
    pub async fn lock(&self, sid: &str, millis: u64) -> Result<bool, String> {
        let Backend::Redis(limiter) = &self.backend else {
            return Ok(true);
        };
        let redis = limiter.shared_store().ok_or("no shared store")?;
        redis
            .set_new(lock_key(sid), millis)
            .await
            .map_err(|e| e.to_string())
    }

    /// Releases the refresh lock of `sid`.
    pub async fn unlock(&self, sid: &str) {
        if let Backend::Redis(limiter) = &self.backend
            && let Some(redis) = limiter.shared_store()
        {
            let mut command = redis::cmd("DEL");
            command.arg(lock_key(sid));
            let _ = redis.command::<()>(command).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(idt: Option<String>) -> SessionRecord {
        SessionRecord {
            sid: "sid".into(),
            sub: "alice".into(),
            at: "a".repeat(1200),
            at_exp: 100,
            rt: Some("r".repeat(100)),
            idt,
            mfa: false,
            created: 1,
            seen: 1,
            exp: 1000,
        }
    }

    fn store() -> SessionStore {
        let sealer = Sealer::new(&[b"0123456789abcdef0123456789abcdef"]).unwrap();
        SessionStore::cookie(Arc::new(sealer), None)
    }

    #[tokio::test]
    async fn cookie_sessions_open_end_and_never_split() {
        let store = store();
        let cookie = store
            .save(&record(None), true, 60, 10)
            .await
            .unwrap()
            .unwrap();
        let text = cookie.to_str().unwrap();
        let value = text
            .strip_prefix("__Host-portcullis=")
            .and_then(|t| t.split(';').next())
            .unwrap();
        let Loaded::Found(found) = store.load(value, 10).await else {
            panic!("the session does not open");
        };
        assert_eq!(found, record(None));
        store.end(&found, 10).await.unwrap();
        assert!(matches!(store.load(value, 10).await, Loaded::Ended));
        // Past its expiry the revocation may be forgotten: the session is over anyway.
        assert!(matches!(store.load(value, 2000).await, Loaded::Found(_)));
        // An ID token that does not fit is left out; tokens that do not fit are refused.
        let big = store
            .save(&record(Some("i".repeat(3000))), true, 60, 10)
            .await
            .unwrap();
        assert!(big.unwrap().len() <= MAX_COOKIE_BYTES + 64);
        let huge = SessionRecord {
            at: "a".repeat(4000),
            ..record(None)
        };
        assert!(matches!(
            store.save(&huge, true, 60, 10).await,
            Err(SaveError::TooLarge(_))
        ));
        assert!(matches!(store.load("garbage", 10).await, Loaded::Invalid));
    }
}
