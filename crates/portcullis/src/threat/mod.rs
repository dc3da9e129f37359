//! Threat scoring (0–100) per request, and per-client memory of recent behaviour: request
//! frequency, authentication and validation failures, and brute-force lockouts.

mod flags;

pub use flags::{Flagged, FlaggedPrincipal, SharedFlag};

use crate::net::IpNet;
use http::Request;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// The score of one request and the factors that made it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ThreatScore {
    /// 0 (nothing suspicious) to 100.
    pub score: u8,
    /// Names of the factors that contributed.
    pub factors: Vec<&'static str>,
}

/// Points a detector's flag adds to a score.
const DETECTOR_FLAG_POINTS: u8 = 20;

impl ThreatScore {
    /// Adds the `detector_flag` factor (once, however many flags apply: the client's, the
    /// principal's).
    pub fn add_detector_flag(&mut self) {
        if !self.factors.contains(&"detector_flag") {
            self.score = self.score.saturating_add(DETECTOR_FLAG_POINTS).min(100);
            self.factors.push("detector_flag");
        }
    }
}

/// Brute-force protection: more than `limit` authentication failures from one client
/// within `window` locks it out for `lockout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailurePolicy {
    /// Failures allowed per window.
    pub limit: u32,
    /// The window, in seconds.
    pub window_secs: u64,
    /// How long a client is locked out, in seconds.
    pub lockout_secs: u64,
}

/// Scoring settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ThreatSettings {
    /// Addresses and ranges with bad reputation.
    pub deny_list: Vec<IpNet>,
    /// A Redis set of addresses with bad reputation, shared by all instances.
    pub redis_set: Option<String>,
    /// Requests per second from one client above which it counts as high frequency.
    pub frequency_per_second: u32,
    /// Brute-force lockout.
    pub auth_failures: FailurePolicy,
}

impl Default for ThreatSettings {
    fn default() -> Self {
        ThreatSettings {
            deny_list: Vec::new(),
            redis_set: None,
            frequency_per_second: 50,
            auth_failures: FailurePolicy {
                limit: 10,
                window_secs: 60,
                lockout_secs: 300,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct ClientState {
    second: u64,
    in_second: u32,
    failure_window: u64,
    auth_failures: u32,
    validation_failures: u32,
    locked_until: u64,
    last_seen: u64,
    /// Until when a detector's flag raises the score (Unix seconds).
    flagged_until: u64,
    /// The detector that flagged it.
    flag_reason: Option<&'static str>,
    /// The latest request's score and (up to [`MAX_FACTORS`]) factors.
    score: u8,
    factors: [Option<&'static str>; MAX_FACTORS],
}

/// Factors remembered per client (the scorer never names more).
const MAX_FACTORS: usize = 8;

/// A client the tracker remembers, as `/admin/offenders` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Offender {
    /// The client address.
    pub ip: IpAddr,
    /// The threat score of its latest request.
    pub score: u8,
    /// The factors of that score.
    pub factors: Vec<&'static str>,
    /// Authentication failures in the current window.
    pub auth_failures: u32,
    /// Validation failures in the current window.
    pub validation_failures: u32,
    /// Seconds left of a lockout (0: not locked).
    pub locked_for: u64,
    /// Seconds left of a detector's flag (0: not flagged).
    pub flagged_for: u64,
    /// The detector that flagged it (`shared`: another instance did).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flag_reason: Option<&'static str>,
    /// Unix seconds of its latest request.
    pub last_seen: u64,
}

/// What the tracker knows about a client when a request arrives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientView {
    /// Requests in the current second, this one included.
    pub in_second: u32,
    /// Authentication failures in the current failure window.
    pub auth_failures: u32,
    /// Validation failures in the current failure window.
    pub validation_failures: u32,
    /// Seconds left of a lockout (0: not locked).
    pub locked_for: u64,
    /// Whether a detector flagged the client (exfiltration, error spikes).
    pub flagged: bool,
    /// The score of the client's previous request (0 for a new client).
    pub last_score: u8,
}

/// Per-client memory, bounded in the number of clients.
#[derive(Debug)]
pub struct ClientTracker {
    clients: Mutex<HashMap<IpAddr, ClientState>>,
    max_clients: usize,
    policy: FailurePolicy,
    flags: flags::FlagBoard,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl ClientTracker {
    /// A tracker for at most `max_clients` clients.
    pub fn new(max_clients: usize, policy: FailurePolicy) -> Self {
        ClientTracker {
            clients: Mutex::new(HashMap::new()),
            max_clients,
            policy,
            flags: flags::FlagBoard::default(),
        }
    }

    fn with<T>(&self, ip: IpAddr, f: impl FnOnce(&mut ClientState, u64) -> T) -> Option<T> {
        let now = now_secs();
        let mut clients = self.clients.lock().ok()?;
        if clients.len() >= self.max_clients && !clients.contains_key(&ip) {
            // Forget clients idle for a while first; under a flood, forget arbitrary ones.
            clients.retain(|_, c| {
                now.saturating_sub(c.last_seen) < 60
                    || c.locked_until > now
                    || c.flagged_until > now
            });
            if clients.len() >= self.max_clients
                && let Some(victim) = clients.keys().next().copied()
            {
                clients.remove(&victim);
            }
        }
        let state = clients.entry(ip).or_default();
        if now.saturating_sub(state.failure_window) >= self.policy.window_secs {
            state.failure_window = now;
            state.auth_failures = 0;
            state.validation_failures = 0;
        }
        state.last_seen = now;
        Some(f(state, now))
    }

    /// Counts a request and returns what is known about its client.
    pub fn observe(&self, ip: IpAddr) -> ClientView {
        self.with(ip, |state, now| {
            if state.second != now {
                state.second = now;
                state.in_second = 0;
            }
            state.in_second = state.in_second.saturating_add(1);
            ClientView {
                in_second: state.in_second,
                auth_failures: state.auth_failures,
                validation_failures: state.validation_failures,
                locked_for: state.locked_until.saturating_sub(now),
                flagged: state.flagged_until > now,
                last_score: state.score,
            }
        })
        .unwrap_or_default()
    }

    /// Records an authentication failure; past the limit, the client is locked out.
    pub fn auth_failure(&self, ip: IpAddr) {
        let policy = self.policy;
        self.with(ip, |state, now| {
            state.auth_failures = state.auth_failures.saturating_add(1);
            if state.auth_failures > policy.limit {
                state.locked_until = now + policy.lockout_secs;
            }
        });
    }

    /// A detector (`reason`) flagged the client: its requests score higher for `duration`.
    pub fn flag(&self, ip: IpAddr, duration: std::time::Duration, reason: &'static str) {
        let until = self.with(ip, |state, now| {
            let until = now.saturating_add(duration.as_secs());
            state.flagged_until = state.flagged_until.max(until);
            state.flag_reason = Some(reason);
            until
        });
        if let Some(until) = until {
            self.flags.queue(Flagged::Client(ip), until);
        }
    }

    /// A detector (`reason`) flagged a principal: its requests score higher for `duration`
    /// wherever the principal is known (see [`ClientTracker::principal_flagged`]).
    pub fn flag_principal(
        &self,
        principal: &str,
        duration: std::time::Duration,
        reason: &'static str,
    ) {
        let until = now_secs().saturating_add(duration.as_secs());
        self.flags.flag_principal(principal, until, reason);
    }

    /// Whether a detector flagged `principal` (here or, when shared, on another instance).
    pub fn principal_flagged(&self, principal: &str) -> bool {
        self.flags.principal_flagged(principal, now_secs())
    }

    /// The principals flagged now, longest flag first, at most `n`.
    pub fn flagged_principals(&self, n: usize) -> Vec<FlaggedPrincipal> {
        self.flags.flagged(now_secs(), n)
    }

    /// Queues this tracker's flags for sharing from now on (a shared store is configured).
    pub fn share_flags(&self) {
        self.flags
            .sharing
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The flags raised here since the last call, to publish to the other instances.
    pub fn take_shared(&self) -> Vec<SharedFlag> {
        self.flags.take_outbox()
    }

    /// Puts flags whose publication failed back in the outbox (bounded like it).
    pub fn requeue_shared(&self, flags: Vec<SharedFlag>) {
        for flag in flags {
            self.flags.queue(flag.who, flag.until);
        }
    }

    /// Applies flags another instance raised (they are not published again).
    pub fn apply_shared(&self, flags: impl IntoIterator<Item = SharedFlag>) {
        let now = now_secs();
        for flag in flags.into_iter().filter(|f| f.until > now) {
            match flag.who {
                Flagged::Client(ip) => {
                    self.with(ip, |state, _| {
                        if flag.until > state.flagged_until {
                            state.flagged_until = flag.until;
                            state.flag_reason.get_or_insert(flags::SHARED);
                        }
                    });
                }
                Flagged::Principal(p) => self.flags.flag_principal(&p, flag.until, flags::SHARED),
            }
        }
    }

    /// Remembers the score of a client's latest request.
    pub fn record_score(&self, ip: IpAddr, threat: &ThreatScore) {
        self.with(ip, |state, _| {
            state.score = threat.score;
            state.factors = [None; MAX_FACTORS];
            for (slot, factor) in state.factors.iter_mut().zip(&threat.factors) {
                *slot = Some(*factor);
            }
        });
    }

    /// The `n` clients with the highest scores now (locked-out clients first), ties broken
    /// by their failures. Clients with nothing against them are left out.
    pub fn top(&self, n: usize) -> Vec<Offender> {
        let now = now_secs();
        let Ok(clients) = self.clients.lock() else {
            return Vec::new();
        };
        let mut offenders: Vec<Offender> = clients
            .iter()
            .map(|(ip, c)| {
                let current = now.saturating_sub(c.failure_window) < self.policy.window_secs;
                Offender {
                    ip: *ip,
                    score: c.score,
                    factors: c.factors.iter().flatten().copied().collect(),
                    auth_failures: if current { c.auth_failures } else { 0 },
                    validation_failures: if current { c.validation_failures } else { 0 },
                    locked_for: c.locked_until.saturating_sub(now),
                    flagged_for: c.flagged_until.saturating_sub(now),
                    flag_reason: c.flag_reason.filter(|_| c.flagged_until > now),
                    last_seen: c.last_seen,
                }
            })
            .filter(|o| {
                o.score > 0
                    || o.auth_failures > 0
                    || o.validation_failures > 0
                    || o.locked_for > 0
                    || o.flagged_for > 0
            })
            .collect();
        offenders.sort_by(|a, b| {
            let failures = |o: &Offender| o.auth_failures.saturating_add(o.validation_failures);
            (b.locked_for > 0, b.score, failures(b)).cmp(&(a.locked_for > 0, a.score, failures(a)))
        });
        offenders.truncate(n);
        offenders
    }

    /// Records a validation failure (a malformed or invalid request).
    pub fn validation_failure(&self, ip: IpAddr) {
        self.with(ip, |state, _| {
            state.validation_failures = state.validation_failures.saturating_add(1)
        });
    }
}

/// Case-insensitive markers of path traversal and injection in a request target (written in
/// lower case, none empty).
const SUSPICIOUS: [&str; 14] = [
    "../",
    "..%2f",
    "%2e%2e",
    "..\\",
    "<script",
    "%3cscript",
    "javascript:",
    "' or '",
    "%27%20or",
    "union select",
    "union%20select",
    ";--",
    "/etc/passwd",
    "${jndi:",
];

/// Whether a byte can start one of the [`SUSPICIOUS`] markers (either case; a test keeps
/// the two in step).
fn may_start_marker(byte: u8) -> bool {
    matches!(
        byte.to_ascii_lowercase(),
        b'.' | b'%' | b'<' | b'j' | b'\'' | b'u' | b';' | b'/' | b'$'
    )
}

/// Whether `target` holds a [`SUSPICIOUS`] marker, ignoring ASCII case: one pass over the
/// bytes, comparing markers only where one could start (no lower-cased copy, no searcher
/// per marker).
fn is_suspicious(target: &[u8]) -> bool {
    target.iter().enumerate().any(|(at, byte)| {
        may_start_marker(*byte) && {
            let rest = target.get(at..).unwrap_or_default();
            SUSPICIOUS.iter().any(|marker| {
                rest.get(..marker.len())
                    .is_some_and(|prefix| prefix.eq_ignore_ascii_case(marker.as_bytes()))
            })
        }
    })
}

/// Scores one request; `listed_elsewhere` says whether a shared reputation list names it.
pub fn score<B>(
    req: &Request<B>,
    ip: IpAddr,
    view: ClientView,
    settings: &ThreatSettings,
    listed_elsewhere: bool,
) -> ThreatScore {
    let mut score = 0u32;
    let mut factors = Vec::new();
    let user_agent = req
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if user_agent.trim().len() < 8 {
        score += 20;
        factors.push("user_agent");
    }
    if view.in_second > settings.frequency_per_second {
        score += 30;
        factors.push("high_frequency");
    }
    let target = req.uri().path_and_query().map_or("", |pq| pq.as_str());
    if is_suspicious(target.as_bytes()) {
        score += 40;
        factors.push("suspicious_parameters");
    }
    if listed_elsewhere || settings.deny_list.iter().any(|net| net.contains(ip)) {
        score += 50;
        factors.push("ip_reputation");
    }
    if view.auth_failures > 0 {
        score += view.auth_failures.saturating_mul(10).min(30);
        factors.push("auth_failures");
    }
    if view.validation_failures > 0 {
        score += view.validation_failures.saturating_mul(10).min(20);
        factors.push("validation_failures");
    }
    let mut threat = ThreatScore {
        score: score.min(100) as u8,
        factors,
    };
    if view.flagged {
        threat.add_detector_flag();
    }
    threat
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, ua: Option<&str>) -> Request<()> {
        let mut builder = Request::get(path);
        if let Some(ua) = ua {
            builder = builder.header("user-agent", ua);
        }
        builder.body(()).unwrap_or_default()
    }

    #[test]
    fn markers_are_found_in_either_case_anywhere() {
        for marker in SUSPICIOUS {
            assert!(
                marker.bytes().next().is_some_and(may_start_marker),
                "{marker}"
            );
            assert_eq!(marker, marker.to_ascii_lowercase());
            let upper = marker.to_ascii_uppercase();
            for target in [
                format!("/api/x?q={marker}"),
                format!("{upper}/tail"),
                marker.to_string(),
            ] {
                assert!(is_suspicious(target.as_bytes()), "{target}");
            }
        }
        assert!(!is_suspicious(b"/api/items/7?limit=10&sort=name.asc"));
        assert!(!is_suspicious(b""));
    }

    #[test]
    fn each_factor_scores_as_specified() {
        let ip = IpAddr::from([203, 0, 113, 9]);
        let settings = ThreatSettings {
            deny_list: vec!["203.0.113.0/24".parse().expect("net")],
            ..ThreatSettings::default()
        };
        let calm = ClientView::default();
        assert_eq!(
            score(
                &request("/a", Some("Mozilla/5.0 test")),
                IpAddr::from([1, 1, 1, 1]),
                calm,
                &settings,
                false
            )
            .score,
            0
        );
        assert_eq!(
            score(
                &request("/a", None),
                IpAddr::from([1, 1, 1, 1]),
                calm,
                &settings,
                false
            )
            .score,
            20
        );
        let busy = ClientView {
            in_second: 51,
            ..calm
        };
        assert_eq!(
            score(
                &request("/a", Some("Mozilla/5.0 test")),
                IpAddr::from([1, 1, 1, 1]),
                busy,
                &settings,
                false
            )
            .score,
            30
        );
        assert_eq!(
            score(
                &request("/a?q=..%2F..%2Fetc", Some("Mozilla/5.0 test")),
                IpAddr::from([1, 1, 1, 1]),
                calm,
                &settings,
                false
            )
            .score,
            40
        );
        assert_eq!(
            score(
                &request("/a", Some("Mozilla/5.0 test")),
                ip,
                calm,
                &settings,
                false
            )
            .score,
            50
        );
        let all = ClientView {
            in_second: 99,
            auth_failures: 5,
            ..calm
        };
        assert_eq!(
            score(&request("/a?x=<script>", None), ip, all, &settings, false).score,
            100
        );
    }

    #[test]
    fn repeated_auth_failures_lock_out() {
        let tracker = ClientTracker::new(
            100,
            FailurePolicy {
                limit: 3,
                window_secs: 60,
                lockout_secs: 300,
            },
        );
        let ip = IpAddr::from([10, 0, 0, 1]);
        for _ in 0..3 {
            tracker.auth_failure(ip);
        }
        assert_eq!(tracker.observe(ip).locked_for, 0);
        tracker.auth_failure(ip);
        assert!(tracker.observe(ip).locked_for > 290);
        assert_eq!(tracker.observe(IpAddr::from([10, 0, 0, 2])).locked_for, 0);
    }
}
