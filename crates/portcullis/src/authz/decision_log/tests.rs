//! The decision log's tests: the chain across rotation and restart, sealing, recovery.

use super::seal::{Sealable, hash_of};
use super::*;

fn settings(dir: &Path, durability: Durability, max_bytes: u64) -> DecisionLogSettings {
    DecisionLogSettings {
        path: dir.join("decisions.log"),
        durability,
        max_bytes,
        queue: 1024,
    }
}

fn record(i: usize) -> Map<String, Value> {
    serde_json::json!({"request_id": format!("r{i}"), "decision": "allow"})
        .as_object()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn chain_verifies_across_rotation_and_restart_and_detects_edits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = Arc::new(EventBus::discard());
    let s = settings(dir.path(), Durability::Sync, 2000);
    {
        let log = DecisionLog::open(&s, events.clone()).expect("open");
        for i in 0..40 {
            log.record(record(i)).await.expect("record");
        }
    }
    // A restart continues the same chain.
    let log = DecisionLog::open(&s, events).expect("reopen");
    for i in 40..50 {
        log.record(record(i)).await.expect("record");
    }
    let mut files: Vec<PathBuf> = (1..)
        .map(|n| rotated_name(&s.path, n))
        .take_while(|p| p.exists())
        .collect();
    assert!(files.len() >= 2, "expected rotation");
    files.push(s.path.clone());
    assert_eq!(
        verify_files(&files).expect("verify"),
        Verification::Intact { records: 50 }
    );
    // Change one record: verification names it.
    let victim = files.get(1).cloned().expect("file");
    let text = std::fs::read_to_string(&victim).expect("read");
    let edited = text.replacen("\"allow\"", "\"deny\"", 2);
    std::fs::write(&victim, edited).expect("write");
    match verify_files(&files).expect("verify") {
        Verification::Broken { file, line, .. } => {
            assert_eq!(file, victim);
            assert_eq!(line, 1);
        }
        other => panic!("tampering not detected: {other:?}"),
    }
}

#[test]
fn sealed_lines_verify_and_read_back_as_written() {
    let genesis = <[u8; 64]>::try_from(GENESIS.as_bytes()).expect("64 bytes");
    for record in [
        record(7),
        Map::new(),
        serde_json::json!({"zeta": [1, {"b": 2, "a": "\u{1}"}], "alpha": null, "hb": 1, "q": 2})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    ] {
        let mut line = Vec::new();
        let hash = Sealable::of(&record).seal_into(&genesis, &mut line);
        assert_eq!(line.last(), Some(&b'\n'));
        let parsed: Map<String, Value> = serde_json::from_slice(&line).expect("one JSON line");
        assert_eq!(
            parsed.get("prev_hash").and_then(Value::as_str),
            Some(GENESIS)
        );
        let stated = parsed
            .get("hash")
            .and_then(Value::as_str)
            .unwrap_or_default();
        assert_eq!(stated.as_bytes(), hash);
        assert_eq!(hash_of(&parsed, GENESIS), stated);
        // Exactly what `Value` writes for the parsed line: verification hashes that.
        let text = std::str::from_utf8(&line).expect("utf-8").trim_end();
        assert_eq!(text, Value::Object(parsed).to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sync_records_share_fsyncs_and_all_land_in_one_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = settings(
        dir.path(),
        Durability::Sync,
        DecisionLogSettings::DEFAULT_MAX_BYTES,
    );
    let log = Arc::new(DecisionLog::open(&s, Arc::new(EventBus::discard())).expect("open"));
    // Rounds of concurrent records: after the first batch the writer lingers for
    // company (the commit delay), and every record still resolves only once written.
    for round in 0..5 {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..100 {
            let log = log.clone();
            tasks.spawn(async move { log.record(record(round * 100 + i)).await });
        }
        while let Some(result) = tasks.join_next().await {
            result.expect("task").expect("recorded");
        }
        assert_eq!(log.written(), (round as u64 + 1) * 100);
    }
    assert_eq!(
        verify_files(std::slice::from_ref(&s.path)).expect("verify"),
        Verification::Intact { records: 500 }
    );
}

#[tokio::test]
async fn flush_writes_async_records_without_waiting_for_the_linger() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = settings(
        dir.path(),
        Durability::Async,
        DecisionLogSettings::DEFAULT_MAX_BYTES,
    );
    let log = DecisionLog::open(&s, Arc::new(EventBus::discard())).expect("open");
    for i in 0..10 {
        log.record(record(i)).await.expect("queued");
    }
    // Generous bound: flush returns as soon as the records are on disk.
    log.flush(Duration::from_secs(30)).await;
    assert_eq!(log.written(), 10);
    let text = std::fs::read_to_string(&s.path).expect("read");
    assert_eq!(text.lines().count(), 10);
    // With nothing queued, a flush still returns.
    log.flush(Duration::from_secs(30)).await;
}

#[test]
fn torn_last_line_is_dropped_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("d.log");
    let mut line = Vec::new();
    let genesis = <[u8; 64]>::try_from(GENESIS.as_bytes()).expect("64 bytes");
    let hash = Sealable::of(&record(1)).seal_into(&genesis, &mut line);
    line.extend_from_slice(b"{\"request_id\":\"torn");
    std::fs::write(&path, line).expect("write");
    let prev = recover_tail(&path).expect("recover");
    assert_eq!(prev.as_bytes(), hash);
    assert!(
        std::fs::read_to_string(&path)
            .expect("read")
            .ends_with('\n')
    );
}

#[test]
fn a_decision_entry_seals_as_its_json_object_does() {
    let reasons = vec!["owner".to_string(), "quote \" and \\ escaped".to_string()];
    let entry = DecisionEntry {
        request_id: "r-1",
        timestamp: "2026-12-04T10:00:00.000Z",
        principal: None,
        action: "get_items",
        resource: ResourceEntry {
            kind: "items",
            id: Some("7"),
        },
        decision: "allow",
        engine: "rego",
        reasons: &reasons,
    };
    let Value::Object(map) = serde_json::json!({
        "request_id": "r-1",
        "timestamp": "2026-12-04T10:00:00.000Z",
        "principal": null,
        "action": "get_items",
        "resource": {"type": "items", "id": "7"},
        "decision": "allow",
        "engine": "rego",
        "reasons": reasons,
    }) else {
        unreachable!()
    };
    let genesis = <[u8; 64]>::try_from(GENESIS.as_bytes()).expect("64 bytes");
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let hash = Sealable::of_entry(&entry).seal_into(&genesis, &mut ours);
    Sealable::of(&map).seal_into(&genesis, &mut theirs);
    assert_eq!(
        String::from_utf8_lossy(&ours),
        String::from_utf8_lossy(&theirs)
    );
    // And the line verifies as the writer's lines do.
    let line: Map<String, Value> = serde_json::from_slice(&ours).expect("a JSON line");
    assert_eq!(hash_of(&line, GENESIS).as_bytes(), hash);
}

#[test]
fn sync_callers_hear_back_after_the_runtime_that_opened_the_log_is_gone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = settings(dir.path(), Durability::Sync, 1_000_000);
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    };
    let first = runtime();
    let log = {
        let _entered = first.enter();
        DecisionLog::open(&s, Arc::new(EventBus::discard())).expect("open")
    };
    // Told through the completer task on the runtime that opened the log.
    first.block_on(async { log.record(record(0)).await.expect("record") });
    drop(first);
    // That task is gone with its runtime: the writer tells the caller itself.
    runtime().block_on(async {
        tokio::time::timeout(Duration::from_secs(10), log.record(record(1)))
            .await
            .expect("a sync caller was never answered")
            .expect("record")
    });
    assert_eq!(log.written(), 2);
}
