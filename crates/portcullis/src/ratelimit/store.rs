//! Where GCRA state lives: sharded memory (bounded), or Redis (one atomic Lua script per
//! check, shared by every instance), with a local fallback while Redis is unreachable.

use super::gcra::{self, Quota, Verdict};
use crate::event::{EventBus, EventType, SecurityEvent, Severity};
use crate::redis_backend::{RedisBackend, RedisConnection as Connection};
use crate::threat::SharedFlag;
use arc_swap::ArcSwapOption;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SHARDS: usize = 64;

fn now_micros() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
}

/// GCRA state in this process: sharded maps with a bound on keys, so a flood of unique
/// keys cannot exhaust memory (idle keys go first, then arbitrary ones).
pub struct MemoryStore {
    shards: Vec<Mutex<HashMap<Box<str>, u64>>>,
    per_shard: usize,
    hasher: RandomState,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("max_keys", &(self.per_shard * SHARDS))
            .finish()
    }
}

impl MemoryStore {
    /// A store holding at most about `max_keys` keys.
    pub fn new(max_keys: usize) -> Self {
        MemoryStore {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: max_keys.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
        }
    }

    /// Checks (and, if admitted, counts) one request for `key`.
    pub fn check(&self, key: &str, quota: Quota) -> Verdict {
        let now = now_micros();
        let index = (self.hasher.hash_one(key) as usize) % SHARDS;
        let Some(Ok(mut shard)) = self.shards.get(index).map(Mutex::lock) else {
            // A poisoned shard: refuse rather than admit without counting.
            return gcra::step(Some(u64::MAX / 2), now, quota).0;
        };
        let (verdict, new_tat) = gcra::step(shard.get(key).copied(), now, quota);
        if let Some(new_tat) = new_tat {
            if shard.len() >= self.per_shard && !shard.contains_key(key) {
                shard.retain(|_, tat| *tat > now);
                if shard.len() >= self.per_shard
                    && let Some(victim) = shard.keys().next().cloned()
                {
                    shard.remove(&victim);
                }
            }
            match shard.get_mut(key) {
                Some(tat) => *tat = new_tat,
                None => {
                    shard.insert(Box::from(key), new_tat);
                }
            }
        }
        verdict
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// GCRA state in Redis: one server, or a Redis Cluster (each limit key carries a hash tag,
/// so it lives on one slot; the script is loaded on whichever node a key lands on).
pub struct RedisStore {
    backend: RedisBackend,
    script: redis::Script,
    timeout: Duration,
}

/// Why the Redis store could not answer (the limiter then falls back as configured).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisError {
    /// The URL or the cluster nodes are not usable.
    #[error("cannot use the Redis address: {0}")]
    Address(String),
    /// Connecting, or the command, failed.
    #[error("Redis failed: {0}")]
    Failed(String),
    /// No answer within the store's timeout.
    #[error("timed out")]
    Timeout,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store at `url`, connected on first use; each check must answer within `timeout`.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, RedisError> {
        Ok(RedisStore {
            backend: RedisBackend::single(url, timeout, 0)
                .map_err(|e| RedisError::Address(e.to_string()))?,
            script: redis::Script::new(gcra::LUA),
            timeout,
        })
    }

    /// A store on a Redis Cluster reached through any of `nodes`.
    pub fn cluster(nodes: &[String], timeout: Duration) -> Result<Self, RedisError> {
        Ok(RedisStore {
            backend: RedisBackend::cluster(nodes, timeout, 1)
                .map_err(|e| RedisError::Address(e.to_string()))?,
            script: redis::Script::new(gcra::LUA),
            timeout,
        })
    }

    /// A connection to whichever deployment this store uses (made once, then shared).
    async fn connection(&self) -> Result<Connection, RedisError> {
        self.backend
            .connection()
            .await
            .map_err(|e| RedisError::Failed(e.to_string()))
    }

    /// Whether `member` is in the set `key` (for shared IP reputation).
    pub async fn is_member(&self, key: &str, member: &str) -> Result<bool, RedisError> {
        let mut command = redis::cmd("SISMEMBER");
        command.arg(key).arg(member);
        self.command(command).await
    }

    /// The members of the set `key`, or `None` when it holds more than `max` (one `SCARD`,
    /// then one `SMEMBERS` only if it is small enough).
    pub async fn members_if_at_most(
        &self,
        key: &str,
        max: usize,
    ) -> Result<Option<Vec<String>>, RedisError> {
        let mut count = redis::cmd("SCARD");
        count.arg(key);
        if self.command::<usize>(count).await? > max {
            return Ok(None);
        }
        let mut members = redis::cmd("SMEMBERS");
        members.arg(key);
        let members: Vec<String> = self.command(members).await?;
        // Added to between the two commands: still bounded.
        Ok((members.len() <= max).then_some(members))
    }

    /// Runs one command within the store's timeout: how other shared state (browser
    /// sessions and their refresh locks) is kept in the same Redis.
    pub async fn command<T: redis::FromRedisValue>(
        &self,
        command: redis::Cmd,
    ) -> Result<T, RedisError> {
        let work = async {
            let mut connection = self.connection().await?;
            command
                .query_async::<T>(&mut connection)
                .await
                .map_err(|e| RedisError::Failed(e.to_string()))
        };
        tokio::time::timeout(self.timeout * 2, work)
            .await
            .map_err(|_| RedisError::Timeout)?
    }

    /// `SET key 1 NX PX millis`: whether the key was new (a session's refresh lock, a DPoP
    /// proof's first use).
    pub async fn set_new(&self, key: String, millis: u64) -> Result<bool, RedisError> {
        let mut command = redis::cmd("SET");
        command
            .arg(key)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(millis.max(1));
        self.command::<Option<String>>(command)
            .await
            .map(|answer| answer.is_some())
    }

    /// Publishes `flags` to the shared flag set and reads back every flag in force at `now`
    /// (Unix seconds), at most [`MAX_SHARED_FLAGS`], forgetting expired ones.
    pub async fn exchange_flags(
        &self,
        flags: &[SharedFlag],
        now: u64,
    ) -> Result<Vec<SharedFlag>, RedisError> {
        let work = async {
            let mut connection = self.connection().await?;
            let mut pipe = redis::pipe();
            for flag in flags {
                // GT: a shorter flag never cuts a longer one short.
                pipe.cmd("ZADD")
                    .arg(FLAG_SET)
                    .arg("GT")
                    .arg(flag.until)
                    .arg(flag.member())
                    .ignore();
            }
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(FLAG_SET)
                .arg("-inf")
                .arg(now)
                .ignore();
            // Longest-lasting first (REV): past the cap, the flags left out are the ones
            // about to end, never the newest.
            pipe.cmd("ZRANGE")
                .arg(FLAG_SET)
                .arg("+inf")
                .arg(format!("({now}"))
                .arg("BYSCORE")
                .arg("REV")
                .arg("LIMIT")
                .arg(0)
                .arg(MAX_SHARED_FLAGS)
                .arg("WITHSCORES");
            let (entries,): (Vec<(String, u64)>,) = pipe
                .query_async(&mut connection)
                .await
                .map_err(|e| RedisError::Failed(e.to_string()))?;
            Ok(entries
                .iter()
                .filter_map(|(member, until)| SharedFlag::parse(member, *until))
                .collect())
        };
        tokio::time::timeout(self.timeout * 2, work)
            .await
            .map_err(|_| RedisError::Timeout)?
    }

    /// One call of the script for `checks` (keys already prefixed), in order.
    async fn invoke(&self, checks: &[(String, Quota)]) -> Result<Vec<Verdict>, RedisError> {
        let mut invocation = self.script.prepare_invoke();
        for (key, quota) in checks {
            let (interval, tolerance) = gcra::lua_args(quota);
            invocation.key(key).arg(interval).arg(tolerance);
        }
        let mut connection = self.connection().await?;
        let answers: Vec<(i64, i64, i64, i64)> = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(|e| RedisError::Failed(e.to_string()))?;
        let micros = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
        Ok(answers
            .iter()
            .zip(checks)
            .map(|((allowed, remaining, retry, reset), (_, quota))| Verdict {
                allowed: *allowed == 1,
                quota: *quota,
                remaining: u32::try_from(*remaining).unwrap_or(0),
                reset: micros(*reset),
                retry_after: micros(*retry),
            })
            .collect())
    }

    /// Checks one request against every limit in `checks` (key, quota), in order, in one
    /// round trip: one script call on one server, and on a Cluster one per hash tag (a
    /// request's limits on one client share theirs), sent at once. The answer holds a
    /// verdict per limit up to and including the first refusal. Errors (including a slow
    /// answer) mean the store is unavailable.
    pub async fn check_all(&self, checks: &[(&str, Quota)]) -> Result<Vec<Verdict>, RedisError> {
        let prefixed: Vec<(String, Quota)> = checks
            .iter()
            .map(|(key, quota)| (format!("portcullis:rl:{key}"), *quota))
            .collect();
        let work = async {
            if !self.backend.is_cluster() {
                return self.invoke(&prefixed).await;
            }
            let groups = by_hash_tag(&prefixed);
            let answers =
                crate::join::join_all(groups.iter().map(|group| self.invoke(group))).await;
            let mut verdicts = Vec::with_capacity(prefixed.len());
            for answer in answers {
                let answer = answer?;
                let refused = answer.iter().any(|v| !v.allowed);
                verdicts.extend(answer);
                if refused {
                    break;
                }
            }
            Ok(verdicts)
        };
        match tokio::time::timeout(self.timeout * 2, work).await {
            Ok(result) => result,
            Err(_) => Err(RedisError::Timeout),
        }
    }
}

/// The hash tag of a key, as Redis Cluster reads it: between the first `{` and the first
/// `}` after it, if not empty; else the whole key.
fn hash_tag(key: &str) -> &str {
    key.find('{')
        .and_then(|open| {
            let rest = key.get(open + 1..)?;
            let close = rest.find('}')?;
            rest.get(..close).filter(|tag| !tag.is_empty())
        })
        .unwrap_or(key)
}

/// `checks` split by hash tag (each group on one slot), in the order of each tag's first key.
fn by_hash_tag(checks: &[(String, Quota)]) -> Vec<Vec<(String, Quota)>> {
    let mut groups: Vec<Vec<(String, Quota)>> = Vec::new();
    for check in checks {
        let tag = hash_tag(&check.0);
        match groups
            .iter_mut()
            .find(|g| g.first().is_some_and(|first| hash_tag(&first.0) == tag))
        {
            Some(group) => group.push(check.clone()),
            None => groups.push(vec![check.clone()]),
        }
    }
    groups
}

/// The Redis sorted set of detector flags (member `client:<ip>` or `principal:<sub>`, score
/// the Unix second the flag ends).
const FLAG_SET: &str = "portcullis:flags";
/// Shared flags read back per exchange at most.
pub const MAX_SHARED_FLAGS: usize = 10_000;

/// Members of a shared reputation set this instance copies once a second at most; a
/// larger set is asked per request instead.
pub const MAX_MIRRORED_REPUTATION: usize = 100_000;

/// This instance's copy of the shared reputation set.
#[derive(Debug)]
struct ReputationMirror {
    /// The set's name (a reload may name another).
    set: String,
    members: HashSet<IpAddr>,
}

/// What to do while the shared store is unreachable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OnStoreError {
    /// Per-instance limits at this share of the global limit (0 < share ≤ 1).
    Local(f64),
    /// Refuse every request that needs a limit check.
    Deny,
    /// Admit without counting.
    Allow,
}

/// A limiter over a store, switching to local limits (or as configured) while Redis is
/// down and back when it answers again, with one event for each switch.
pub struct Limiter {
    shared: Option<RedisStore>,
    reputation: ArcSwapOption<ReputationMirror>,
    local: MemoryStore,
    on_error: OnStoreError,
    degraded: AtomicBool,
    switches: AtomicU64,
    events: Arc<EventBus>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("shared", &self.shared.is_some())
            .finish_non_exhaustive()
    }
}

/// The result of a check that could not be made (only with `on_store_error: deny`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreDown;

impl Limiter {
    /// Keys an in-process store keeps unless configured otherwise.
    pub const DEFAULT_MAX_KEYS: usize = 1_000_000;

    /// A limiter with only local (memory) state.
    pub fn memory(max_keys: usize, events: Arc<EventBus>) -> Self {
        Limiter {
            shared: None,
            reputation: ArcSwapOption::empty(),
            local: MemoryStore::new(max_keys),
            on_error: OnStoreError::Local(1.0),
            degraded: AtomicBool::new(false),
            switches: AtomicU64::new(0),
            events,
        }
    }

    /// A limiter over Redis, falling back as `on_error` says.
    pub fn redis(
        store: RedisStore,
        on_error: OnStoreError,
        max_keys: usize,
        events: Arc<EventBus>,
    ) -> Self {
        Limiter {
            shared: Some(store),
            on_error,
            ..Limiter::memory(max_keys, events)
        }
    }

    /// The shared Redis store, if limits are shared.
    pub fn shared_store(&self) -> Option<&RedisStore> {
        self.shared.as_ref()
    }

    /// Whether `ip` is in the shared reputation set `set`: from this instance's copy of the
    /// set (refreshed once a second with the flag exchange), so a request waits on no
    /// lookup; asked of Redis only until the first copy is read, or when the set is larger
    /// than [`MAX_MIRRORED_REPUTATION`]. False when there is no shared store or it cannot
    /// answer: reputation only adds to a score.
    pub async fn listed_in(&self, set: &str, ip: IpAddr) -> bool {
        let Some(shared) = &self.shared else {
            return false;
        };
        if let Some(mirror) = &*self.reputation.load()
            && mirror.set == set
        {
            return mirror.members.contains(&ip);
        }
        shared
            .is_member(set, &ip.to_string())
            .await
            .unwrap_or(false)
    }

    /// Reads the reputation set `set` into this instance's copy (or drops the copy when the
    /// set is too large to hold, or there is none to read).
    async fn refresh_reputation(&self, shared: &RedisStore, set: Option<&str>) {
        let Some(set) = set else {
            self.reputation.store(None);
            return;
        };
        match shared
            .members_if_at_most(set, MAX_MIRRORED_REPUTATION)
            .await
        {
            Ok(Some(members)) => self.reputation.store(Some(Arc::new(ReputationMirror {
                set: set.to_string(),
                members: members.iter().filter_map(|m| m.parse().ok()).collect(),
            }))),
            // Too large: every request asks Redis.
            Ok(None) => self.reputation.store(None),
            // Kept: the copy from a second ago is a better answer than none.
            Err(_) => {}
        }
    }

    /// Shares `tracker`'s detector flags with the other instances: publishes the flags it
    /// raised since the last call and applies theirs. Without a shared store, the flags are
    /// only dropped from the outbox (each instance enforces its own anyway). When the store
    /// cannot answer, the flags wait for the next exchange; no request ever waits.
    ///
    /// The shared reputation set `reputation` is read into this instance's copy in the same
    /// beat, so requests consult the copy.
    pub async fn exchange_flags(
        &self,
        tracker: &crate::threat::ClientTracker,
        reputation: Option<&str>,
    ) {
        let Some(shared) = &self.shared else {
            let _ = tracker.take_shared();
            return;
        };
        self.refresh_reputation(shared, reputation).await;
        tracker.share_flags();
        let outgoing = tracker.take_shared();
        match shared.exchange_flags(&outgoing, unix_now()).await {
            Ok(incoming) => tracker.apply_shared(incoming),
            // Not lost: published with the next exchange.
            Err(_) => tracker.requeue_shared(outgoing),
        }
    }

    /// Whether limits are shared through a store (Redis).
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Whether the shared store is currently unreachable.
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// How often the limiter switched between shared and fallback mode.
    pub fn switches(&self) -> u64 {
        self.switches.load(Ordering::Relaxed)
    }

    /// Checks one request against every limit in `checks` (key, quota), in order: each
    /// admitted limit is counted, and the first refusal ends the check, so the answer holds
    /// one verdict per limit up to and including it. Shared limits cost one Redis round trip
    /// per request, however many there are.
    pub async fn check_all(&self, checks: &[(&str, Quota)]) -> Result<Vec<Verdict>, StoreDown> {
        let Some(shared) = &self.shared else {
            return Ok(self.check_locally(checks, 1.0));
        };
        match shared.check_all(checks).await {
            Ok(verdicts) => {
                self.switch(false, None);
                Ok(verdicts)
            }
            Err(error) => {
                self.switch(true, Some(error.to_string()));
                match self.on_error {
                    OnStoreError::Local(share) => Ok(self.check_locally(checks, share)),
                    OnStoreError::Deny => Err(StoreDown),
                    OnStoreError::Allow => Ok(checks
                        .iter()
                        .map(|(_, quota)| Verdict {
                            allowed: true,
                            quota: *quota,
                            remaining: quota.limit,
                            reset: Duration::ZERO,
                            retry_after: Duration::ZERO,
                        })
                        .collect()),
                }
            }
        }
    }

    /// The same checks in this process, each limit scaled to `share` of itself (below 1:
    /// the per-instance fallback while Redis is down).
    fn check_locally(&self, checks: &[(&str, Quota)], share: f64) -> Vec<Verdict> {
        let mut verdicts = Vec::with_capacity(checks.len());
        for (key, quota) in checks {
            let quota = if share < 1.0 {
                let limit = ((f64::from(quota.limit) * share).floor() as u32).max(1);
                Quota { limit, ..*quota }
            } else {
                *quota
            };
            let verdict = self.local.check(key, quota);
            verdicts.push(verdict);
            if !verdict.allowed {
                break;
            }
        }
        verdicts
    }

    fn switch(&self, down: bool, error: Option<String>) {
        if self.degraded.swap(down, Ordering::AcqRel) == down {
            return;
        }
        self.switches.fetch_add(1, Ordering::Relaxed);
        let (severity, reason) = if down {
            (Severity::High, "rate_limit_store_down")
        } else {
            (Severity::Medium, "rate_limit_store_recovered")
        };
        let mut event = SecurityEvent::new(EventType::Anomaly, severity, reason);
        event.details =
            serde_json::json!({ "error": error, "fallback": format!("{:?}", self.on_error) });
        self.events.emit(event);
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_group_by_the_hash_tag_redis_cluster_reads() {
        assert_eq!(
            hash_tag("portcullis:rl:{sub:alice}:default:/a"),
            "sub:alice"
        );
        assert_eq!(
            hash_tag("a{}b{c}"),
            "a{}b{c}",
            "an empty tag means the whole key"
        );
        assert_eq!(hash_tag("no tag"), "no tag");
        assert_eq!(
            hash_tag("{sub:a}b}:x"),
            "sub:a",
            "the first closing brace ends it"
        );
        let quota = Quota::new(1, Duration::from_secs(1));
        let checks: Vec<(String, Quota)> = [
            "p:{ip:1.2.3.4}:default:/a",
            "p:{sub:alice}:route:/a",
            "p:{ip:1.2.3.4}:route:/a",
        ]
        .iter()
        .map(|k| (k.to_string(), quota))
        .collect();
        let grouped = by_hash_tag(&checks);
        let groups: Vec<Vec<&str>> = grouped
            .iter()
            .map(|g| g.iter().map(|(k, _)| k.as_str()).collect())
            .collect();
        assert_eq!(
            groups,
            [
                vec!["p:{ip:1.2.3.4}:default:/a", "p:{ip:1.2.3.4}:route:/a"],
                vec!["p:{sub:alice}:route:/a"],
            ]
        );
    }

    #[test]
    fn memory_stays_bounded_under_unique_keys() {
        let store = MemoryStore::new(1000);
        let quota = Quota::new(5, Duration::from_secs(60));
        for i in 0..20_000 {
            assert!(store.check(&format!("k{i}"), quota).allowed);
        }
        assert!(store.len() <= 1000 + SHARDS, "{} keys held", store.len());
        for _ in 0..5 {
            assert!(store.check("steady", quota).allowed);
        }
        assert!(!store.check("steady", quota).allowed);
    }
}
