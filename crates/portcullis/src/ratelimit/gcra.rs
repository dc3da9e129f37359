//! GCRA (the generic cell rate algorithm): smooth limits with no double burst at window
//! edges. One number per key, the theoretical arrival time (TAT). The Redis store runs the
//! same arithmetic in Lua, so both stores admit exactly the same requests.

use std::time::Duration;

/// `limit` requests per `window` on average; up to `burst` of them may arrive at once
/// (by default `burst = limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Requests per window.
    pub limit: u32,
    /// The window.
    pub window: Duration,
    /// Requests admitted at once; `None` means `limit`.
    pub burst: Option<u32>,
}

impl Quota {
    /// `limit` per `window`, burst `limit`.
    pub fn new(limit: u32, window: Duration) -> Quota {
        Quota {
            limit,
            window,
            burst: None,
        }
    }

    /// This quota lowered for a threat score: `floor(limit × (1 − score/200))`, at least 1
    /// (a burst shrinks by the same factor).
    pub fn adapted(self, score: u8) -> Quota {
        let factor = 1.0 - f64::from(score.min(100)) / 200.0;
        let scale = |n: u32| ((f64::from(n) * factor).floor() as u32).max(1);
        Quota {
            limit: scale(self.limit),
            window: self.window,
            burst: self.burst.map(scale),
        }
    }

    fn interval_and_tolerance(&self) -> (u64, u64) {
        let window = u64::try_from(self.window.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let interval = (window / u64::from(self.limit.max(1))).max(1);
        let burst = u64::from(self.burst.unwrap_or(self.limit).max(1));
        (interval, interval.saturating_mul(burst))
    }
}

/// The answer to one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Admitted or not.
    pub allowed: bool,
    /// The quota applied (after adaptation).
    pub quota: Quota,
    /// Requests still admissible right now.
    pub remaining: u32,
    /// Time until the quota is whole again.
    pub reset: Duration,
    /// For a refusal: time until a request would be admitted.
    pub retry_after: Duration,
}

/// One GCRA step in microseconds. Returns the verdict and, if admitted, the new TAT.
pub fn step(tat: Option<u64>, now: u64, quota: Quota) -> (Verdict, Option<u64>) {
    let (interval, tolerance) = quota.interval_and_tolerance();
    let tat = tat.unwrap_or(now).max(now);
    let new_tat = tat.saturating_add(interval);
    let allow_at = new_tat.saturating_sub(tolerance);
    if now < allow_at {
        let verdict = Verdict {
            allowed: false,
            quota,
            remaining: 0,
            reset: Duration::from_micros(tat - now),
            retry_after: Duration::from_micros(allow_at - now),
        };
        return (verdict, None);
    }
    let used = new_tat - now;
    let remaining = u32::try_from(tolerance.saturating_sub(used) / interval).unwrap_or(u32::MAX);
    let verdict = Verdict {
        allowed: true,
        quota,
        remaining,
        reset: Duration::from_micros(used),
        retry_after: Duration::ZERO,
    };
    (verdict, Some(new_tat))
}

/// The arguments of [`LUA`] for a quota: emission interval and tolerance, in µs.
pub fn lua_args(quota: &Quota) -> (u64, u64) {
    quota.interval_and_tolerance()
}

/// The same step for Redis, for every limit of one request in one call: `KEYS[i]` holds
/// the i-th limit's TAT; `ARGV[2i-1]`, `ARGV[2i]` are its interval and tolerance (µs), from
/// [`lua_args`]. The limits are checked in order, each admitted one counted, and the first
/// refusal ends the call (as one check per limit would). The server's clock is used, so
/// every gateway instance shares one time line. Returns one `{allowed, remaining,
/// retry_after_us, reset_us}` per limit checked.
pub const LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local answers = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - tolerance
  if now < allow_at then
    answers[i] = {0, 0, allow_at - now, tat - now}
    return answers
  end
  redis.call('SET', key, new_tat, 'PX', math.floor((new_tat - now) / 1000) + 1)
  answers[i] = {1, math.floor((tolerance - (new_tat - now)) / interval), 0, new_tat - now}
end
return answers
"#;

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000;

    fn quota(limit: u32, secs: u64) -> Quota {
        Quota::new(limit, Duration::from_secs(secs))
    }

    #[test]
    fn a_smaller_burst_spreads_the_quota() {
        let q = Quota {
            burst: Some(2),
            ..quota(10, 1)
        };
        let mut tat = None;
        let mut admitted = 0;
        for _ in 0..10 {
            let (verdict, next) = step(tat, 5 * SECOND, q);
            if verdict.allowed {
                admitted += 1;
                tat = next;
            }
        }
        assert_eq!(admitted, 2);
    }

    #[test]
    fn admits_exactly_the_limit_in_a_burst_then_one_per_interval() {
        let q = quota(10, 1);
        let mut tat = None;
        let mut admitted = 0;
        for _ in 0..25 {
            let (verdict, next) = step(tat, 5 * SECOND, q);
            if verdict.allowed {
                admitted += 1;
                tat = next;
            }
        }
        assert_eq!(admitted, 10);
        let (verdict, _) = step(tat, 5 * SECOND, q);
        assert_eq!(verdict.retry_after, Duration::from_millis(100));
        assert!(
            step(tat, 5 * SECOND + SECOND / 10, q).0.allowed,
            "one more after one interval"
        );
    }

    #[test]
    fn no_double_burst_across_a_window_edge() {
        let q = quota(10, 1);
        let mut tat = None;
        let mut admitted = 0;
        // 10 at the end of one "window", then as many as possible just after its edge.
        for now in [SECOND - 1; 10].into_iter().chain([SECOND + 1; 10]) {
            let (verdict, next) = step(tat, now, q);
            if verdict.allowed {
                admitted += 1;
                tat = next;
            }
        }
        assert_eq!(admitted, 10, "a fixed window would have admitted 20");
    }

    #[test]
    fn adaptation_follows_the_formula() {
        assert_eq!(quota(100, 60).adapted(0).limit, 100);
        assert_eq!(quota(100, 60).adapted(50).limit, 75);
        assert_eq!(quota(100, 60).adapted(100).limit, 50);
        assert_eq!(quota(1, 60).adapted(100).limit, 1);
    }
}
