//! The `rate_limit` section and per-route limits.

use super::raw::{RawLimit, RawRateLimit};
use super::secret::Resolver;
use super::{Problems, Shared, line_of};
use portcullis::net::IpNet;
use portcullis::ratelimit::gcra::Quota;
use portcullis::ratelimit::store::{Limiter, OnStoreError, RedisStore};
use portcullis::ratelimit::{LimitKey, LimitRule, RateLimitSettings, RateLimiting};
use portcullis::secret::Secret;
use portcullis::threat::{ClientTracker, FailurePolicy, ThreatSettings};
use serde_saphyr::Spanned;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const MAX_TRACKED_CLIENTS: usize = 100_000;

/// A limit rule from its raw form.
pub(super) fn rule(
    name: &str,
    path: &str,
    raw: &Spanned<RawLimit>,
    problems: &mut Problems,
) -> Option<LimitRule> {
    let line = line_of(&raw.referenced);
    let limit = &raw.value;
    if limit.limit == 0 || limit.window.0.is_zero() || limit.burst == Some(0) {
        problems.add(
            path,
            line,
            "`limit`, `window` and `burst` must be greater than 0",
        );
        return None;
    }
    let key = match limit.key.as_deref() {
        None | Some("principal_or_ip") => LimitKey::PrincipalOrIp,
        Some("principal") => LimitKey::Principal,
        Some("ip") => LimitKey::Ip,
        Some(other) => {
            problems.add(
                format!("{path}.key"),
                line,
                format!("unknown key `{other}` (use principal, ip or principal_or_ip)"),
            );
            return None;
        }
    };
    Some(LimitRule {
        name: name.to_string(),
        quota: Quota {
            limit: limit.limit,
            window: limit.window.0,
            burst: limit.burst,
        },
        key,
    })
}

/// The limiting state for a configuration; without a `rate_limit` section nothing is
/// limited and no client is ever locked out.
pub(super) fn compile(
    raw: Option<&RawRateLimit>,
    base_dir: &Path,
    resolver: &Resolver,
    shared: &Shared,
    problems: &mut Problems,
) -> (Arc<RateLimiting>, Vec<PathBuf>) {
    let Some(raw) = raw else {
        let never = FailurePolicy {
            limit: u32::MAX,
            window_secs: 60,
            lockout_secs: 0,
        };
        return (
            shared.rate_limiting(
                None,
                RateLimitSettings {
                    screen: false,
                    default: None,
                    adaptive: false,
                    block_score: u8::MAX,
                    threat: ThreatSettings {
                        auth_failures: never,
                        ..ThreatSettings::default()
                    },
                },
                never,
                0,
            ),
            Vec::new(),
        );
    };
    let mut files = Vec::new();
    let default = raw
        .default
        .as_ref()
        .and_then(|d| rule("default", "rate_limit.default", d, problems));
    let auth_failures = raw.auth_failures.as_ref().map_or(
        FailurePolicy {
            limit: 10,
            window_secs: 60,
            lockout_secs: 300,
        },
        |a| FailurePolicy {
            limit: a.limit,
            window_secs: a.window.0.as_secs().max(1),
            lockout_secs: a.lockout.0.as_secs(),
        },
    );
    let adaptive = raw.adaptive.as_ref();
    let mut deny_list = Vec::new();
    let reputation_file = raw
        .ip_reputation
        .as_ref()
        .and_then(|r| r.deny_file.as_ref());
    if let Some(deny_file) = reputation_file
        && let Some(file) = resolver.text("rate_limit.ip_reputation.deny_file", deny_file, problems)
    {
        let full = base_dir.join(file);
        match std::fs::read_to_string(&full) {
            Ok(text) => {
                for (i, line) in text.lines().enumerate() {
                    let entry = line.split('#').next().unwrap_or_default().trim();
                    if entry.is_empty() {
                        continue;
                    }
                    match entry.parse::<IpNet>() {
                        Ok(net) => deny_list.push(net),
                        Err(e) => problems.at(
                            "rate_limit.ip_reputation.deny_file",
                            deny_file,
                            format!("{}:{}: {e}", full.display(), i + 1),
                        ),
                    }
                }
            }
            Err(e) => problems.at(
                "rate_limit.ip_reputation.deny_file",
                deny_file,
                format!("cannot read `{}`: {e}", full.display()),
            ),
        }
        files.push(full);
    }
    let defaults = RateLimitSettings::default();
    let settings = RateLimitSettings {
        screen: true,
        default,
        adaptive: adaptive
            .and_then(|a| a.enabled)
            .unwrap_or(defaults.adaptive),
        block_score: adaptive
            .and_then(|a| a.block_score)
            .unwrap_or(defaults.block_score),
        threat: ThreatSettings {
            deny_list,
            redis_set: raw.ip_reputation.as_ref().and_then(|r| r.redis_set.clone()),
            frequency_per_second: adaptive
                .and_then(|a| a.frequency_per_second)
                .unwrap_or(defaults.threat.frequency_per_second),
            auth_failures,
        },
    };
    let on_error = match raw.on_store_error.as_ref().map(|t| t.value.as_str()) {
        None | Some("local") => {
            let share = raw.local_share.unwrap_or(1.0);
            if !(share > 0.0 && share <= 1.0) {
                problems.add(
                    "rate_limit.local_share",
                    None,
                    "must be greater than 0 and at most 1",
                );
            }
            OnStoreError::Local(share.clamp(0.01, 1.0))
        }
        Some("deny") => OnStoreError::Deny,
        Some("allow") => OnStoreError::Allow,
        Some(other) => {
            if let Some(text) = &raw.on_store_error {
                problems.at(
                    "rate_limit.on_store_error",
                    text,
                    format!("unknown value `{other}` (use local, deny or allow)"),
                );
            }
            OnStoreError::Local(1.0)
        }
    };
    let max_keys = raw.max_keys.unwrap_or(Limiter::DEFAULT_MAX_KEYS);
    let wants_shared_set = raw
        .ip_reputation
        .as_ref()
        .is_some_and(|r| r.redis_set.is_some());
    if wants_shared_set && raw.store.as_ref().map(|t| t.value.as_str()) != Some("redis") {
        problems.add(
            "rate_limit.ip_reputation.redis_set",
            None,
            "a shared reputation set needs `store: redis`",
        );
    }
    let redis = match raw.store.as_ref().map(|t| t.value.as_str()) {
        None | Some("memory") => None,
        Some("redis") => match &raw.redis {
            None => {
                if let Some(store) = &raw.store {
                    problems.at(
                        "rate_limit.redis",
                        store,
                        "store `redis` needs `redis: { url: ${env:REDIS_URL} }`",
                    );
                }
                None
            }
            Some(redis) => resolver
                .secret("rate_limit.redis.url", &redis.url, problems)
                .map(|url| RedisTarget {
                    url,
                    timeout: redis.timeout.map_or(Duration::from_millis(50), |d| d.0),
                    on_error,
                    cluster: redis.cluster.unwrap_or(false),
                }),
        },
        Some(other) => {
            if let Some(store) = &raw.store {
                problems.at(
                    "rate_limit.store",
                    store,
                    format!("unknown store `{other}` (use memory or redis)"),
                );
            }
            None
        }
    };
    if let Some(target) = &redis
        && let Err(e) = target.store()
    {
        problems.add(
            "rate_limit.redis.url",
            None,
            format!("not a Redis URL: {e}"),
        );
    }
    (
        shared.rate_limiting(redis, settings, auth_failures, max_keys),
        files,
    )
}

/// A Redis deployment for rate limits.
struct RedisTarget {
    /// One URL, or with `cluster`, comma-separated node URLs (they may carry a password).
    url: Secret,
    timeout: Duration,
    on_error: OnStoreError,
    cluster: bool,
}

impl RedisTarget {
    fn store(&self) -> Result<RedisStore, portcullis::ratelimit::store::RedisError> {
        if self.cluster {
            let nodes: Vec<String> = self
                .url
                .expose()
                .split(',')
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect();
            RedisStore::cluster(&nodes, self.timeout)
        } else {
            RedisStore::new(self.url.expose(), self.timeout)
        }
    }
}

impl Shared {
    /// Limiting state: the GCRA store and the client tracker live as long as their
    /// settings stay the same, so a reload neither forgets counts nor lifts lockouts.
    fn rate_limiting(
        &self,
        redis: Option<RedisTarget>,
        settings: RateLimitSettings,
        failures: FailurePolicy,
        max_keys: usize,
    ) -> Arc<RateLimiting> {
        let store_key = match &redis {
            Some(t) => format!(
                "redis {} {:?} {:?} {} {max_keys}",
                t.url.expose(),
                t.timeout,
                t.on_error,
                t.cluster
            ),
            None => format!("memory {max_keys}"),
        };
        let limiter = self.keep(&self.limiters, store_key, || match redis {
            Some(target) => match target.store() {
                Ok(store) => Limiter::redis(store, target.on_error, max_keys, self.events()),
                Err(_) => Limiter::memory(max_keys, self.events()),
            },
            None => Limiter::memory(max_keys, self.events()),
        });
        let tracker = self.keep(&self.trackers, format!("{failures:?}"), || {
            ClientTracker::new(MAX_TRACKED_CLIENTS, failures)
        });
        Arc::new(RateLimiting {
            settings,
            limiter,
            tracker,
        })
    }
}
