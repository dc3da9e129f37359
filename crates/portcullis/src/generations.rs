//! [`Generations`]: a map with a hard bound on its size that never refuses a key and never
//! scans itself.
//!
//! Keys live in a young and an old generation. New keys go into the young one; when it is
//! full, the old generation is dropped whole and the young one becomes old. A key used again
//! while old moves back to young. So a key active within the last `capacity` new keys is
//! kept, memory is at most twice `capacity` entries, and every operation is O(1): a flood of
//! fresh keys (one per request, say) costs nothing more than ordinary traffic, and what it
//! pushes out is only state that has gone idle in the meantime.

use std::collections::HashMap;
use std::hash::Hash;

/// A two-generation bounded map (see the module docs).
#[derive(Debug)]
pub struct Generations<K, V> {
    young: HashMap<K, V>,
    old: HashMap<K, V>,
    capacity: usize,
}

impl<K: Hash + Eq, V> Generations<K, V> {
    /// A map holding at most `2 × capacity` entries (`capacity` at least 1).
    pub fn new(capacity: usize) -> Self {
        Generations {
            young: HashMap::new(),
            old: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// The entry for `key`, made with `make` when the map does not hold it.
    pub fn entry(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        if !self.young.contains_key(&key) {
            let kept = self.old.remove(&key);
            if self.young.len() >= self.capacity {
                self.old = std::mem::take(&mut self.young);
            }
            return self
                .young
                .entry(key)
                .or_insert_with(|| kept.unwrap_or_else(make));
        }
        self.young.entry(key).or_insert_with(make)
    }

    /// The entry for `key`, if held (a lookup only: it neither inserts nor moves it).
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.young.get(key).or_else(|| self.old.get(key))
    }

    /// Entries held now (both generations).
    pub fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    /// Whether the map holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry, young and old.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.young.iter().chain(self.old.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_fresh_keys_stays_within_twice_the_capacity() {
        let mut map = Generations::new(1_000);
        for i in 0..100_000u32 {
            *map.entry(i, || 0u32) += 1;
            assert!(map.len() <= 2_000);
        }
    }

    #[test]
    fn a_key_in_use_survives_a_flood() {
        let mut map = Generations::new(100);
        for i in 0..10_000u32 {
            *map.entry(u32::MAX, || 0u32) += 1;
            map.entry(i, || 0);
        }
        assert_eq!(*map.entry(u32::MAX, || 0), 10_000);
    }
}
