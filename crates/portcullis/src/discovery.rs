//! The endpoint inventory: how often each documented operation is called, and which
//! undocumented ("shadow") endpoints receive traffic. It outlives configuration reloads, so
//! counts are not lost when the API document changes.

use http::Method;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Most distinct shadow endpoints remembered; further ones are only counted in total, so a
/// scan of random paths cannot grow memory without bound.
const MAX_SHADOW: usize = 1000;
/// Longest path kept for a shadow endpoint.
const MAX_SHADOW_PATH: usize = 256;

/// Call counts of one endpoint.
#[derive(Debug, Default)]
pub struct EndpointStats {
    count: AtomicU64,
    last_seen: AtomicU64,
}

impl EndpointStats {
    /// Counts one call, now.
    pub fn hit(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.last_seen
            .store(crate::time::unix_now(), Ordering::Relaxed);
    }
}

/// One row of the inventory.
#[derive(Debug, Clone, Serialize)]
pub struct InventoryEntry {
    /// The request method.
    pub method: String,
    /// The documented path template, or the observed path of a shadow endpoint.
    pub path: String,
    /// Whether the API document describes it.
    pub documented: bool,
    /// Calls seen.
    pub count: u64,
    /// Unix time of the last call (0 when never called).
    pub last_seen: u64,
}

type Key = (Method, Arc<str>);

/// Observed endpoints, documented and shadow.
#[derive(Debug, Default)]
pub struct Inventory {
    documented: Mutex<HashMap<Key, Arc<EndpointStats>>>,
    shadow: Mutex<HashMap<Key, Arc<EndpointStats>>>,
    shadow_overflow: AtomicU64,
}

impl Inventory {
    /// The counters of a documented operation (created on first use, then shared).
    pub fn documented(&self, method: &Method, template: &Arc<str>) -> Arc<EndpointStats> {
        let mut map = self
            .documented
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.entry((method.clone(), template.clone()))
            .or_default()
            .clone()
    }

    /// Records a call to an undocumented endpoint; true the first time it is seen.
    pub fn shadow(&self, method: &Method, path: &str) -> bool {
        let path = crate::problem::truncated(path, MAX_SHADOW_PATH);
        let mut map = self.shadow.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(stats) = map.get(&(method.clone(), Arc::from(path))) {
            stats.hit();
            return false;
        }
        if map.len() >= MAX_SHADOW {
            self.shadow_overflow.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let stats = Arc::new(EndpointStats::default());
        stats.hit();
        map.insert((method.clone(), Arc::from(path)), stats);
        true
    }

    /// Calls to shadow endpoints beyond the remembered ones.
    pub fn shadow_overflow(&self) -> u64 {
        self.shadow_overflow.load(Ordering::Relaxed)
    }

    /// Every endpoint, documented first, each group sorted by path then method.
    pub fn entries(&self) -> Vec<InventoryEntry> {
        let mut out = Vec::new();
        for (map, documented) in [(&self.documented, true), (&self.shadow, false)] {
            let map = map.lock().unwrap_or_else(PoisonError::into_inner);
            let mut rows: Vec<InventoryEntry> = map
                .iter()
                .map(|((method, path), stats)| InventoryEntry {
                    method: method.to_string(),
                    path: path.to_string(),
                    documented,
                    count: stats.count.load(Ordering::Relaxed),
                    last_seen: stats.last_seen.load(Ordering::Relaxed),
                })
                .collect();
            rows.sort_by(|a, b| (&a.path, &a.method).cmp(&(&b.path, &b.method)));
            out.extend(rows);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_endpoints_are_bounded() {
        let inventory = Inventory::default();
        assert!(inventory.shadow(&Method::GET, "/a"));
        assert!(!inventory.shadow(&Method::GET, "/a"));
        for i in 0..MAX_SHADOW + 10 {
            inventory.shadow(&Method::GET, &format!("/scan/{i}"));
        }
        assert_eq!(inventory.entries().len(), MAX_SHADOW);
        assert_eq!(inventory.shadow_overflow(), 11);
        let first = inventory.entries().into_iter().find(|e| e.path == "/a");
        assert_eq!(first.map(|e| e.count), Some(2));
    }
}
