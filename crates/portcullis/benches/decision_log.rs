//! The decision record path: CPU per record, amortised, of every thread of the process (the
//! request side and the writer thread together), with 64 requests recording at once as a
//! loaded gateway does, sync (fsynced before the answer) and async. The baseline in the same
//! run is the CPU of building the record alone, which the authorization layer pays anyway.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis::authz::decision_log::{DecisionLog, DecisionLogSettings, Durability};
use portcullis::event::EventBus;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;

/// CPU time every thread of this process has run (the writer thread's work included), from
/// the scheduler's per-thread count. A running thread's count can lag by one scheduler tick,
/// so samples are kept long (ten samples over the measurement time) to keep that small.
fn process_cpu() -> Duration {
    let ns: u64 = std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .filter_map(Result::ok)
                .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
                .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

fn record(i: u64) -> Map<String, Value> {
    let record = json!({
        "request_id": format!("01JD6Q4B7Y8Z9{i:013}"),
        "timestamp": "2026-12-03T09:00:00.123Z",
        "principal": "alice",
        "action": "read_items",
        "resource": { "type": "items", "id": "42" },
        "decision": "allow",
        "engine": "rego",
        "reasons": [],
    });
    match record {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

const CONCURRENT: u64 = 64;

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("decision_record");
    group.sample_size(10);
    // One thread: its wall time is its CPU time.
    let mut i = 0;
    group.bench_function("build_record_baseline", |b| {
        b.iter(|| {
            i += 1;
            record(i)
        })
    });
    let mut logs = Vec::new();
    // Opened inside the runtime, as the gateway opens it, the log tells each batch's callers
    // through one task on the runtime; opened outside any runtime ("sync_writer_wakes"), the
    // writer thread wakes every caller itself: the difference is what the one wake per batch
    // saves.
    for (name, durability, in_runtime) in [
        ("sync", Durability::Sync, true),
        ("sync_writer_wakes", Durability::Sync, false),
        ("async", Durability::Async, true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let entered = in_runtime.then(|| runtime.enter());
        let log = Arc::new(
            DecisionLog::open(
                &DecisionLogSettings {
                    path: dir.path().join("decisions.log"),
                    durability,
                    max_bytes: DecisionLogSettings::DEFAULT_MAX_BYTES,
                    // Async records are queued without waiting: a queue the producers cannot
                    // fill in one writer linger, so what is measured is recording, not drops.
                    queue: DecisionLogSettings::DEFAULT_QUEUE.max(1 << 20),
                },
                Arc::new(EventBus::discard()),
            )
            .unwrap(),
        );
        drop(entered);
        group.bench_function(format!("record_{name}"), |b| {
            b.iter_custom(|iters| {
                let before = log.written() + log.dropped();
                let start = process_cpu();
                runtime.block_on(async {
                    let mut tasks = tokio::task::JoinSet::new();
                    for t in 0..CONCURRENT {
                        let log = log.clone();
                        tasks.spawn(async move {
                            let mut i = t;
                            while i < iters {
                                log.record(record(i)).await.unwrap();
                                i += CONCURRENT;
                            }
                        });
                    }
                    while tasks.join_next().await.is_some() {}
                    // Async records count once they are written (or dropped, which the
                    // run reports: a dropped record was not measured).
                    while log.written() + log.dropped() < before + iters {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                });
                process_cpu().saturating_sub(start)
            })
        });
        logs.push((log, dir));
    }
    group.finish();
    for (log, _dir) in &logs {
        assert_eq!(
            log.dropped(),
            0,
            "records were dropped: the figures are not comparable"
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
