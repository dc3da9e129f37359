//! Privilege-escalation probing: one principal refused by the policy (or for a missing
//! scope) across many different endpoints or actions in a window. A user who lacks one
//! permission is refused the same thing again; one trying what else it might reach is refused
//! many different things.
//!
//! Per principal: a [`DistinctSketch`] of the refused (endpoint, method, action) triples, in
//! two half-window buckets, as the enumeration detector keeps its ids.

use super::sketch::DistinctSketch;
use crate::generations::Generations;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// When authorization refusals are flagged as probing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EscalationSettings {
    /// Different (endpoint, method, action) refusals of one principal in the window ...
    pub distinct_denials: u32,
    /// ... the window.
    pub window: Duration,
}

impl Default for EscalationSettings {
    fn default() -> Self {
        EscalationSettings {
            distinct_denials: 8,
            window: Duration::from_secs(300),
        }
    }
}

/// Principals per generation: at most twice this many are held.
pub(super) const MAX_KEYS: usize = 20_000;

#[derive(Debug, Clone, Default)]
struct DenialWindows {
    started: Option<Instant>,
    denied: [DistinctSketch; 2],
    /// Refusals in the two buckets (there are never more different ones).
    count: [u32; 2],
    quiet_until: Option<Instant>,
}

/// The escalation detector's state.
#[derive(Debug)]
pub(super) struct Escalation {
    settings: EscalationSettings,
    keys: Mutex<Generations<u64, DenialWindows>>,
    hasher: RandomState,
}

impl Escalation {
    pub(super) fn new(settings: EscalationSettings) -> Self {
        Escalation {
            settings,
            keys: Mutex::new(Generations::new(MAX_KEYS)),
            hasher: RandomState::new(),
        }
    }

    /// Counts one refusal of `principal`; the number of different refusals in the window
    /// once it reaches the threshold (once per window).
    pub(super) fn observe(
        &self,
        principal: &str,
        endpoint: &str,
        method: &str,
        action: &str,
        now: Instant,
    ) -> Option<u64> {
        let key = self.hasher.hash_one(principal);
        let what = self.hasher.hash_one((endpoint, method, action));
        let half = self.settings.window / 2;
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let w = keys.entry(key, DenialWindows::default);
        match w.started.map(|s| now.saturating_duration_since(s)) {
            Some(e) if e < half => {}
            Some(e) if e < self.settings.window => {
                w.denied.swap(0, 1);
                w.denied[0] = DistinctSketch::default();
                w.count = [0, w.count[0]];
                w.started = Some(now);
            }
            _ => {
                w.denied = Default::default();
                w.count = [0, 0];
                w.started = Some(now);
            }
        }
        w.denied[0].insert(what);
        w.count[0] = w.count[0].saturating_add(1);
        if w.quiet_until.is_some_and(|q| now < q) {
            return None;
        }
        if w.count[0].saturating_add(w.count[1]) < self.settings.distinct_denials {
            return None;
        }
        let distinct = w.denied[0].estimate_union(&w.denied[1]).round() as u64;
        if distinct < u64::from(self.settings.distinct_denials) {
            return None;
        }
        w.quiet_until = Some(now + self.settings.window);
        Some(distinct)
    }

    /// Principals held now.
    pub(super) fn keys_held(&self) -> usize {
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detector() -> Escalation {
        Escalation::new(EscalationSettings {
            distinct_denials: 8,
            window: Duration::from_secs(300),
        })
    }

    #[test]
    fn refusals_across_many_actions_are_flagged_once() {
        let d = detector();
        let now = Instant::now();
        let mut flagged = Vec::new();
        for (i, action) in ["read", "write", "delete", "admin"].iter().enumerate() {
            for endpoint in ["/items/{id}", "/users/{id}", "/billing"] {
                if let Some(n) = d.observe("mallory", endpoint, "POST", action, now) {
                    flagged.push((i, n));
                }
            }
        }
        assert_eq!(flagged.len(), 1, "{flagged:?}");
        assert!(flagged[0].1 >= 8);
    }

    #[test]
    fn the_same_refusal_again_and_again_is_not_probing() {
        let d = detector();
        let now = Instant::now();
        for _ in 0..1_000 {
            assert_eq!(
                d.observe("bob", "/items/{id}", "DELETE", "delete", now),
                None
            );
        }
        // Seven different refusals: one short of the threshold.
        for action in ["a", "b", "c", "d", "e", "f"] {
            assert_eq!(d.observe("bob", "/items/{id}", "POST", action, now), None);
        }
    }
}
