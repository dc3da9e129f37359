//! The tamper-evident decision log: one JSON line per authorization decision, each carrying
//! `prev_hash` and `hash` (SHA-256 over the previous hash and the record), written by one
//! thread with group commit, so `sync` durability costs one fsync per batch, not per record.

use crate::event::{EventBus, EventType, SecurityEvent, Severity};
use aws_lc_rs::digest;
use serde_json::{Map, Value};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use tokio::sync::oneshot;

/// The `prev_hash` of the first record of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// When a decision counts as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// On disk (fsynced) before the response leaves.
    Sync,
    /// Queued; written soon after. Overflow is counted, never silent.
    Async,
}

/// Settings of a decision log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionLogSettings {
    /// The current file; rotated files get a numeric suffix.
    pub path: PathBuf,
    /// Sync or async.
    pub durability: Durability,
    /// Size at which the file is rotated (the chain continues in the next file).
    pub max_bytes: u64,
    /// Records waiting for the writer at most.
    pub queue: usize,
}

impl DecisionLogSettings {
    /// Size at which a file is rotated unless configured otherwise.
    pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
    /// Records that may wait for the writer.
    pub const DEFAULT_QUEUE: usize = 65_536;
}

/// Why a decision could not be recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The writer is too far behind.
    #[error("decision log backlog is full")]
    Backlog,
    /// Writing or syncing failed.
    #[error("decision log write failed: {0}")]
    Io(String),
}

struct Job {
    record: Map<String, Value>,
    done: Option<oneshot::Sender<Result<(), RecordError>>>,
}

/// A running decision log.
pub struct DecisionLog {
    queue: SyncSender<Job>,
    durability: Durability,
    dropped: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
}

impl std::fmt::Debug for DecisionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionLog")
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl DecisionLog {
    /// Opens (or continues) the log and starts its writer thread.
    pub fn open(
        settings: &DecisionLogSettings,
        events: Arc<EventBus>,
    ) -> std::io::Result<DecisionLog> {
        if let Some(dir) = settings.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let prev_hash = recover_tail(&settings.path)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&settings.path)?;
        let size = file.metadata()?.len();
        let (tx, rx) = std::sync::mpsc::sync_channel(settings.queue.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let written = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            path: settings.path.clone(),
            file,
            size,
            max_bytes: settings.max_bytes,
            prev_hash,
            always_sync: settings.durability == Durability::Sync,
            dropped: dropped.clone(),
            reported_dropped: 0,
            written: written.clone(),
            events,
        };
        std::thread::Builder::new()
            .name("portcullis-decisions".into())
            .spawn(move || writer.run(rx))?;
        Ok(DecisionLog {
            queue: tx,
            durability: settings.durability,
            dropped,
            written,
        })
    }

    /// Records one decision. With `sync` durability this resolves once the record is on disk.
    pub async fn record(&self, record: Map<String, Value>) -> Result<(), RecordError> {
        match self.durability {
            Durability::Async => match self.queue.try_send(Job { record, done: None }) {
                Ok(()) => Ok(()),
                Err(_) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
            },
            Durability::Sync => {
                let (tx, rx) = oneshot::channel();
                match self.queue.try_send(Job {
                    record,
                    done: Some(tx),
                }) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => return Err(RecordError::Backlog),
                    Err(TrySendError::Disconnected(_)) => {
                        return Err(RecordError::Io("writer stopped".into()));
                    }
                }
                match rx.await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(RecordError::Io("writer stopped".into())),
                }
            }
        }
    }

    /// Records dropped because the async queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Records written.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}

struct Writer {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    prev_hash: String,
    always_sync: bool,
    dropped: Arc<AtomicU64>,
    reported_dropped: u64,
    written: Arc<AtomicU64>,
    events: Arc<EventBus>,
}

/// Most records written between two fsyncs.
const MAX_BATCH: usize = 4096;

impl Writer {
    fn run(mut self, rx: Receiver<Job>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let result = self.write_batch(&mut batch);
            let count = batch.len() as u64;
            for job in batch {
                if let Some(done) = job.done {
                    let _ = done.send(result.clone());
                }
            }
            if result.is_ok() {
                self.written.fetch_add(count, Ordering::Relaxed);
            }
            self.report_drops();
        }
    }

    fn write_batch(&mut self, batch: &mut [Job]) -> Result<(), RecordError> {
        let mut buffer = Vec::with_capacity(batch.len() * 256);
        let mut prev = self.prev_hash.clone();
        for job in batch.iter_mut() {
            let line = seal(&mut job.record, &prev);
            prev = job
                .record
                .get("hash")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            buffer.extend_from_slice(line.as_bytes());
            buffer.push(b'\n');
        }
        self.file
            .write_all(&buffer)
            .map_err(|e| RecordError::Io(e.to_string()))?;
        let needs_sync = self.always_sync || batch.iter().any(|j| j.done.is_some());
        if needs_sync {
            self.file
                .sync_data()
                .map_err(|e| RecordError::Io(e.to_string()))?;
        }
        self.prev_hash = prev;
        self.size += buffer.len() as u64;
        if self.size >= self.max_bytes {
            self.rotate().map_err(|e| RecordError::Io(e.to_string()))?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.sync_all()?;
        let mut n = 1;
        let rotated = loop {
            let candidate = rotated_name(&self.path, n);
            if !candidate.exists() {
                break candidate;
            }
            n += 1;
        };
        std::fs::rename(&self.path, &rotated)?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }

    fn report_drops(&mut self) {
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > self.reported_dropped {
            let mut event =
                SecurityEvent::new(EventType::Anomaly, Severity::High, "decision_log_overflow");
            event.details = serde_json::json!({ "dropped_total": dropped, "dropped_since_last": dropped - self.reported_dropped });
            self.events.emit(event);
            self.reported_dropped = dropped;
        }
    }
}

/// `path.N`: the N-th rotated file (older files have smaller N).
pub fn rotated_name(path: &Path, n: u64) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Adds `prev_hash` and `hash` to a record and returns its line.
fn seal(record: &mut Map<String, Value>, prev_hash: &str) -> String {
    record.remove("hash");
    record.insert("prev_hash".into(), Value::String(prev_hash.to_string()));
    let hash = hash_of(record, prev_hash);
    record.insert("hash".into(), Value::String(hash));
    Value::Object(record.clone()).to_string()
}

/// SHA-256 over the previous hash and the record's canonical JSON (sorted keys, no `hash`).
fn hash_of(record: &Map<String, Value>, prev_hash: &str) -> String {
    let mut without = record.clone();
    without.remove("hash");
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(prev_hash.as_bytes());
    context.update(Value::Object(without).to_string().as_bytes());
    context
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reads the hash the chain continues from, dropping a torn last line (a record whose
/// write a crash interrupted was never acknowledged, so no response depended on it).
fn recover_tail(path: &Path) -> std::io::Result<String> {
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(last_hash_of_rotated(path));
        }
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(last_hash_of_rotated(path));
    }
    let start = len.saturating_sub(1 << 20);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    let complete = tail.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
    if complete < tail.len() {
        file.set_len(start + complete as u64)?;
        file.sync_all()?;
    }
    let text = String::from_utf8_lossy(tail.get(..complete).unwrap_or_default()).into_owned();
    Ok(text
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .and_then(|l| serde_json::from_str::<Value>(l).ok())
        .and_then(|v| v.get("hash").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| last_hash_of_rotated(path)))
}

fn last_hash_of_rotated(path: &Path) -> String {
    let mut n = 1;
    let mut last = None;
    while rotated_name(path, n).exists() {
        last = Some(rotated_name(path, n));
        n += 1;
    }
    last.and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|text| {
            text.lines()
                .next_back()
                .and_then(|l| serde_json::from_str::<Value>(l).ok())
                .and_then(|v| v.get("hash").and_then(Value::as_str).map(str::to_string))
        })
        .unwrap_or_else(|| GENESIS.to_string())
}

/// The outcome of [`verify_files`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// Every record links to the one before it.
    Intact {
        /// Records checked.
        records: u64,
    },
    /// The first record that does not.
    Broken {
        /// The file it is in.
        file: PathBuf,
        /// Its line number (1-based).
        line: u64,
        /// What is wrong.
        reason: String,
    },
}

/// Verifies the hash chain across `files`, in order (oldest first).
pub fn verify_files(files: &[PathBuf]) -> std::io::Result<Verification> {
    let mut prev: Option<String> = None;
    let mut records = 0;
    for file in files {
        let reader = BufReader::new(File::open(file)?);
        for (i, line) in reader.lines().enumerate() {
            let line = line?;
            let broken = |reason: &str| Verification::Broken {
                file: file.clone(),
                line: i as u64 + 1,
                reason: reason.to_string(),
            };
            let Ok(Value::Object(record)) = serde_json::from_str::<Value>(&line) else {
                return Ok(broken("not a JSON record"));
            };
            let (Some(stated_prev), Some(hash)) = (
                record.get("prev_hash").and_then(Value::as_str),
                record.get("hash").and_then(Value::as_str),
            ) else {
                return Ok(broken("missing prev_hash or hash"));
            };
            if let Some(expected) = &prev
                && stated_prev != expected
            {
                return Ok(broken(
                    "prev_hash does not match the previous record's hash",
                ));
            }
            if hash_of(&record, stated_prev) != hash {
                return Ok(broken("hash does not match the record (it was changed)"));
            }
            prev = Some(hash.to_string());
            records += 1;
        }
    }
    Ok(Verification::Intact { records })
}

#[cfg(test)]
mod tests {
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
    fn torn_last_line_is_dropped_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("d.log");
        let mut first = record(1);
        let line = seal(&mut first, GENESIS);
        std::fs::write(&path, format!("{line}\n{{\"request_id\":\"torn")).expect("write");
        let prev = recover_tail(&path).expect("recover");
        assert_eq!(
            Some(prev.as_str()),
            first.get("hash").and_then(Value::as_str)
        );
        assert!(
            std::fs::read_to_string(&path)
                .expect("read")
                .ends_with('\n')
        );
    }
}
