//! The memory rate-limit store: one check against a bare hash-map lookup of the same key
//! (the baseline, measured in the same run), and the memory held by 1,000,000 keys.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis::ratelimit::gcra::Quota;
use portcullis::ratelimit::store::MemoryStore;
use std::collections::HashMap;
use std::time::Duration;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn bench(c: &mut Criterion) {
    let quota = Quota::new(u32::MAX / 2, Duration::from_secs(1));
    let store = MemoryStore::new(1_000_000);
    let mut baseline: HashMap<String, u64> = HashMap::new();
    baseline.insert("default:/api/items:sub:alice".into(), 0);
    let mut group = c.benchmark_group("ratelimit");
    group.bench_function("hashmap_lookup_baseline", |b| {
        b.iter(|| baseline.get("default:/api/items:sub:alice").copied())
    });
    group.bench_function("memory_store_check", |b| {
        b.iter(|| store.check("default:/api/items:sub:alice", quota).allowed)
    });
    group.finish();

    let before = rss_kib();
    let big = MemoryStore::new(1_000_000);
    let quota = Quota::new(100, Duration::from_secs(3600));
    for i in 0..1_000_000u32 {
        big.check(
            &format!(
                "default:/api/items:ip:10.{}.{}.{}",
                i >> 16,
                (i >> 8) & 255,
                i & 255
            ),
            quota,
        );
    }
    let after = rss_kib();
    println!(
        "memory store with {} keys: {:.1} MiB more resident memory (target < 200 MiB)",
        big.len(),
        (after.saturating_sub(before)) as f64 / 1024.0
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
