//! Enumeration (broken object-level authorization probing): one principal touching many
//! different object ids of one path template, many of them refused (403) or missing (404).
//!
//! Per (principal, template, parameter) the detector keeps a [`DistinctSketch`] of the ids
//! and the answers' refused share, in two half-window buckets: a judgement covers at least
//! half a window and at most a whole one. Keys are hashed, so each one costs the same
//! fixed memory whatever the principal or path, and [`Generations`] bounds how many there are.

use super::sketch::DistinctSketch;
use crate::generations::Generations;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// When id probing is flagged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnumerationSettings {
    /// Distinct ids of one template a principal touches in the window ...
    pub distinct_ids: u32,
    /// ... the window ...
    pub window: Duration,
    /// ... with at least this share of its answers 403 or 404 (0 to 1).
    pub min_refused_ratio: f64,
}

impl Default for EnumerationSettings {
    fn default() -> Self {
        EnumerationSettings {
            distinct_ids: 50,
            window: Duration::from_secs(60),
            min_refused_ratio: 0.5,
        }
    }
}

/// Keys (principal, template, parameter) per generation: at most twice this many are held.
pub(super) const MAX_KEYS: usize = 20_000;

/// What one key has seen in the current and the previous half window.
#[derive(Debug, Clone, Default)]
struct IdWindows {
    started: Option<Instant>,
    ids: [DistinctSketch; 2],
    answers: [u32; 2],
    refused: [u32; 2],
    /// Already flagged: quiet until then, so that one probe raises one event.
    quiet_until: Option<Instant>,
}

/// What the detector found for one key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Finding {
    pub distinct: u64,
    pub answers: u32,
    pub refused: u32,
}

/// The enumeration detector's state.
#[derive(Debug)]
pub(super) struct Enumeration {
    settings: EnumerationSettings,
    keys: Mutex<Generations<u64, IdWindows>>,
    hasher: RandomState,
}

impl Enumeration {
    pub(super) fn new(settings: EnumerationSettings) -> Self {
        Enumeration {
            settings,
            keys: Mutex::new(Generations::new(MAX_KEYS)),
            hasher: RandomState::new(),
        }
    }

    /// Counts one answer (`status`) to `principal` for object `id` of `template`'s
    /// `param`; a finding once the key crosses the thresholds.
    pub(super) fn observe(
        &self,
        principal: &str,
        template: &str,
        param: &str,
        id: &str,
        status: u16,
        now: Instant,
    ) -> Option<Finding> {
        let key = self.hasher.hash_one((principal, template, param));
        let id = self.hasher.hash_one(id);
        let refused = matches!(status, 403 | 404);
        let half = self.settings.window / 2;
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let w = keys.entry(key, IdWindows::default);
        let elapsed = w.started.map(|s| now.saturating_duration_since(s));
        match elapsed {
            Some(e) if e < half => {}
            Some(e) if e < self.settings.window => {
                // The current bucket becomes the previous one.
                w.ids.swap(0, 1);
                w.ids[0] = DistinctSketch::default();
                w.answers = [0, w.answers[0]];
                w.refused = [0, w.refused[0]];
                w.started = Some(now);
            }
            _ => {
                *w = IdWindows {
                    started: Some(now),
                    quiet_until: w.quiet_until,
                    ..IdWindows::default()
                };
            }
        }
        w.ids[0].insert(id);
        w.answers[0] = w.answers[0].saturating_add(1);
        if refused {
            w.refused[0] = w.refused[0].saturating_add(1);
        }
        if w.quiet_until.is_some_and(|q| now < q) {
            return None;
        }
        let answers = w.answers[0].saturating_add(w.answers[1]);
        let refused = w.refused[0].saturating_add(w.refused[1]);
        let ratio = f64::from(refused) / f64::from(answers.max(1));
        // There are never more ids than answers: most keys are judged without the sketch.
        if answers < self.settings.distinct_ids || ratio < self.settings.min_refused_ratio {
            return None;
        }
        let distinct = w.ids[0].estimate_union(&w.ids[1]).round() as u64;
        if distinct < u64::from(self.settings.distinct_ids) {
            return None;
        }
        w.quiet_until = Some(now + self.settings.window);
        Some(Finding {
            distinct,
            answers,
            refused,
        })
    }

    /// Keys held now.
    pub(super) fn keys_held(&self) -> usize {
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// The object ids of a request: each `{param}` of `template` with the path's segment in
/// its place. `None` when the path does not line up with the template.
pub(super) fn object_ids<'a>(
    template: &'a str,
    path: &'a str,
) -> Option<impl Iterator<Item = (&'a str, &'a str)>> {
    if template.split('/').count() != path.split('/').count() {
        return None;
    }
    Some(
        template
            .split('/')
            .zip(path.split('/'))
            .filter_map(|(t, p)| {
                let name = t.strip_prefix('{')?.strip_suffix('}')?;
                (!p.is_empty()).then_some((name, p))
            }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detector(distinct_ids: u32, min_refused_ratio: f64) -> Enumeration {
        Enumeration::new(EnumerationSettings {
            distinct_ids,
            window: Duration::from_secs(60),
            min_refused_ratio,
        })
    }

    #[test]
    fn many_refused_ids_are_flagged_once() {
        let d = detector(50, 0.5);
        let now = Instant::now();
        let mut findings = Vec::new();
        for id in 0..200 {
            let status = if id % 4 == 0 { 200 } else { 404 };
            if let Some(f) = d.observe("alice", "/items/{id}", "id", &id.to_string(), status, now) {
                findings.push((id, f));
            }
        }
        assert_eq!(findings.len(), 1, "{findings:?}");
        let (at, finding) = findings[0];
        // The sketch's estimate near 50 is within about ±8% (one standard error), and its
        // hash keys are random per process: allow three of them.
        assert!((38..=65).contains(&at), "flagged after {at} ids");
        assert!(finding.refused * 2 >= finding.answers);
    }

    #[test]
    fn near_misses_are_not_flagged() {
        let now = Instant::now();
        // Many ids, but the principal may see them all (no refusals).
        let d = detector(50, 0.5);
        for id in 0..500 {
            assert_eq!(
                d.observe("bob", "/items/{id}", "id", &id.to_string(), 200, now),
                None
            );
        }
        // Refusals, but a handful of ids asked again and again.
        let d = detector(50, 0.5);
        for i in 0..500 {
            let id = (i % 10).to_string();
            assert_eq!(d.observe("eve", "/items/{id}", "id", &id, 404, now), None);
        }
        // Many refused ids, spread over principals.
        let d = detector(50, 0.5);
        for id in 0..500 {
            let who = format!("user{}", id % 20);
            let id = id.to_string();
            assert_eq!(d.observe(&who, "/items/{id}", "id", &id, 404, now), None);
        }
    }

    #[test]
    fn ids_age_out_with_the_window() {
        let d = detector(50, 0.0);
        let start = Instant::now();
        // 40 ids per window, windows apart: never 50 in one.
        for round in 0..5u64 {
            let now = start + Duration::from_secs(61 * round);
            for id in 0..40 {
                let id = format!("{round}-{id}");
                assert_eq!(d.observe("carol", "/items/{id}", "id", &id, 404, now), None);
            }
        }
    }

    #[test]
    fn ids_line_up_with_their_template() {
        let ids: Vec<_> = object_ids("/users/{uid}/orders/{oid}", "/users/7/orders/abc")
            .unwrap()
            .collect();
        assert_eq!(ids, [("uid", "7"), ("oid", "abc")]);
        assert!(object_ids("/users/{uid}", "/users/7/extra").is_none());
        assert_eq!(object_ids("/health", "/health").unwrap().count(), 0);
    }
}
