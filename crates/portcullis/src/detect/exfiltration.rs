//! Exfiltration indicators: a response far larger than its endpoint's usual, and bulk
//! pagination (a page far deeper than the endpoint's usual).
//!
//! Both keep a per-endpoint baseline, an exponentially weighted mean that judges only after
//! a warm-up. A flagged value is not learned from: one leak must not make the next usual.

use crate::generations::Generations;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{Mutex, PoisonError};

/// When a response or a page is large enough to flag.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExfiltrationSettings {
    /// This many times the endpoint's usual size (or page depth) ...
    pub factor: f64,
    /// ... and at least this many bytes (for a response) ...
    pub min_bytes: u64,
    /// ... or at least this deep (for a page: `page=N`, or `offset` ÷ `limit`).
    pub min_page: u64,
}

impl Default for ExfiltrationSettings {
    fn default() -> Self {
        ExfiltrationSettings {
            factor: 10.0,
            min_bytes: 65_536,
            min_page: 50,
        }
    }
}

/// Endpoints (and endpoint × page parameter) per generation.
pub(super) const MAX_KEYS: usize = 10_000;
/// Values a baseline needs before it judges.
const WARM_UP: u32 = 20;
/// Weight of a new value in the baseline.
const ALPHA: f64 = 0.1;
/// Items per page assumed for an `offset` without a `limit`.
const DEFAULT_PAGE_SIZE: u64 = 20;

#[derive(Debug, Clone, Copy, Default)]
struct Baseline {
    mean: f64,
    samples: u32,
}

impl Baseline {
    /// Judges `value`: the usual value when it is `factor` times above it and at least
    /// `floor`; otherwise it is learned.
    fn judge(&mut self, value: f64, factor: f64, floor: f64) -> Option<f64> {
        if self.samples >= WARM_UP && value >= floor && value > self.mean * factor {
            return Some(self.mean);
        }
        self.mean = if self.samples == 0 {
            value
        } else {
            self.mean + ALPHA * (value - self.mean)
        };
        self.samples = self.samples.saturating_add(1);
        None
    }
}

/// The exfiltration detector's state.
#[derive(Debug)]
pub(super) struct Exfiltration {
    pub(super) settings: ExfiltrationSettings,
    sizes: Mutex<Generations<u64, Baseline>>,
    pages: Mutex<Generations<u64, Baseline>>,
    hasher: RandomState,
}

impl Exfiltration {
    pub(super) fn new(settings: ExfiltrationSettings) -> Self {
        Exfiltration {
            settings,
            sizes: Mutex::new(Generations::new(MAX_KEYS)),
            pages: Mutex::new(Generations::new(MAX_KEYS)),
            hasher: RandomState::new(),
        }
    }

    /// Judges a complete response of `bytes` to `method` on `endpoint`: its usual size when
    /// flagged.
    pub(super) fn response(&self, method: &str, endpoint: &str, bytes: u64) -> Option<f64> {
        let key = self.hasher.hash_one((method, endpoint));
        let mut sizes = self.sizes.lock().unwrap_or_else(PoisonError::into_inner);
        sizes.entry(key, Baseline::default).judge(
            bytes as f64,
            self.settings.factor,
            self.settings.min_bytes as f64,
        )
    }

    /// Judges a request for page `depth` (by parameter `param`) of `endpoint`: the usual
    /// depth when flagged.
    pub(super) fn page(&self, endpoint: &str, param: &str, depth: u64) -> Option<f64> {
        let key = self.hasher.hash_one((endpoint, param));
        let mut pages = self.pages.lock().unwrap_or_else(PoisonError::into_inner);
        pages.entry(key, Baseline::default).judge(
            depth as f64,
            self.settings.factor,
            self.settings.min_page as f64,
        )
    }

    /// Keys held now (sizes and pages).
    pub(super) fn keys_held(&self) -> usize {
        let sizes = self
            .sizes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        let pages = self
            .pages
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        sizes + pages
    }
}

/// How deep into a listing a query asks: `page=N`, or `offset=N` divided by its
/// `limit` (`per_page`, `page_size`, `size`; 20 when absent). The parameter name with it.
pub(super) fn page_depth(query: &str) -> Option<(&'static str, u64)> {
    let mut page = None;
    let mut offset = None;
    let mut limit = None;
    // Bounded: a query is at most the URI limit, and only the first pairs are looked at.
    for pair in query.split('&').take(64) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let Ok(value) = value.parse::<u64>() else {
            continue;
        };
        match name {
            "page" => page = Some(value),
            "offset" => offset = Some(value),
            "limit" | "per_page" | "page_size" | "size" => limit = Some(value),
            _ => {}
        }
    }
    if let Some(page) = page {
        return Some(("page", page));
    }
    let size = limit.unwrap_or(DEFAULT_PAGE_SIZE).max(1);
    offset.map(|offset| ("offset", offset / size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_far_above_the_usual_is_flagged_and_not_learned() {
        let d = Exfiltration::new(ExfiltrationSettings::default());
        for _ in 0..30 {
            assert_eq!(d.response("GET", "/items", 1_000), None);
        }
        assert_eq!(
            d.response("GET", "/items", 500_000).map(f64::round),
            Some(1_000.0)
        );
        // Not learned: the same size again is flagged again.
        assert!(d.response("GET", "/items", 500_000).is_some());
        // Large relative to the usual but under min_bytes: not flagged.
        assert_eq!(d.response("GET", "/items", 60_000), None);
    }

    #[test]
    fn a_page_far_deeper_than_usual_is_flagged() {
        let d = Exfiltration::new(ExfiltrationSettings::default());
        for i in 0..30 {
            assert_eq!(d.page("/items", "page", 1 + i % 3), None);
        }
        assert_eq!(d.page("/items", "page", 40), None, "under min_page");
        assert!(d.page("/items", "page", 500).is_some());
        // Another endpoint has its own (still warming) baseline.
        assert_eq!(d.page("/orders", "page", 500), None);
    }

    #[test]
    fn depth_reads_page_or_offset_over_limit() {
        assert_eq!(page_depth("page=7&q=x"), Some(("page", 7)));
        assert_eq!(page_depth("offset=1000&limit=50"), Some(("offset", 20)));
        assert_eq!(page_depth("offset=1000"), Some(("offset", 50)));
        assert_eq!(page_depth("offset=10&limit=0"), Some(("offset", 10)));
        assert_eq!(page_depth("q=1"), None);
        assert_eq!(page_depth("page=-1"), None);
    }
}
