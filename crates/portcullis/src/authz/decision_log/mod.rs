//! The tamper-evident decision log: one JSON line per authorization decision, each carrying
//! `prev_hash` and `hash` (SHA-256 over the previous hash and the record), written by one
//! thread with group commit, so `sync` durability costs one fsync per batch, not per record.
//!
//! Why it is shaped this way (the record path costs a few µs, not the 16 it did):
//! - the request task serializes its record's members once; the writer hashes them with
//!   `prev_hash` and closes the line, with no `Value` clone or second serialization;
//! - records wait in one mutex-guarded queue; the writer is woken only when it sleeps and a
//!   sync record waits, the queue was empty, or an async batch is full. Async records are
//!   otherwise collected for [`ASYNC_LINGER`], so a busy gateway writes a few dozen times a
//!   second, not once per record;
//! - under load, sync records wait up to [`SYNC_LINGER`] for company before the fsync (a
//!   commit delay), since the fsync, not the record, is what costs.

mod completer;
mod seal;

use crate::event::{EventBus, EventType, SecurityEvent, Severity};
use completer::Completer;
use seal::{Sealable, hash_of};
use serde_json::{Map, Value};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
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

/// One policy decision as the log records it, members in this order.
#[derive(Debug, serde::Serialize)]
pub struct DecisionEntry<'a> {
    /// The request's correlation id.
    pub request_id: &'a str,
    /// When the decision was made (RFC 3339).
    pub timestamp: &'a str,
    /// The principal's subject, if any.
    pub principal: Option<&'a str>,
    /// The action decided on.
    pub action: &'a str,
    /// The resource decided on.
    pub resource: ResourceEntry<'a>,
    /// `allow` or `deny`.
    pub decision: &'a str,
    /// The engine's name.
    pub engine: &'a str,
    /// The policy's reasons, or the engine's error.
    pub reasons: &'a [String],
}

/// The resource of a [`DecisionEntry`].
#[derive(Debug, serde::Serialize)]
pub struct ResourceEntry<'a> {
    /// The resource type.
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// The resource id, if the route names one.
    pub id: Option<&'a str>,
}

/// How long async records wait for company before the writer takes them.
pub const ASYNC_LINGER: Duration = Duration::from_millis(20);
/// Async records that wake the writer before the linger is over.
const ASYNC_BATCH: usize = 1024;
/// Most records written between two fsyncs.
const MAX_BATCH: usize = 4096;
/// Under load, how long the writer waits for more sync records before one fsync (a commit
/// delay): an fsync costs the same for one record as for sixty, and on a busy gateway records
/// arrive every few microseconds while each fsync takes hundreds.
pub const SYNC_LINGER: Duration = Duration::from_millis(1);
/// Sync records that end the commit delay early.
const SYNC_BATCH: usize = 64;

/// Where a sync record's caller hears that its record is on disk.
type Done = oneshot::Sender<Result<(), RecordError>>;

struct Job {
    record: Sealable,
    done: Option<Done>,
}

/// Records waiting for the writer.
#[derive(Default)]
struct Pending {
    jobs: Vec<Job>,
    /// The writer is waiting on the condition variable.
    sleeping: bool,
    /// The writer is in its commit delay: only a full sync batch wakes it.
    lingering: bool,
    /// The log was dropped: write what is left and stop.
    closed: bool,
    /// Callers of [`DecisionLog::flush`], told once everything queued before them is on disk.
    flushes: Vec<oneshot::Sender<()>>,
}

struct Queue {
    pending: Mutex<Pending>,
    wake: Condvar,
    capacity: usize,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running decision log.
pub struct DecisionLog {
    queue: Arc<Queue>,
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
    /// Opens (or continues) the log and starts its writer thread. Opened within a Tokio
    /// runtime, sync callers are told their records are on disk through one task on that
    /// runtime per batch (it must keep running while the log is used; once it is shut down
    /// the writer tells them itself).
    pub fn open(
        settings: &DecisionLogSettings,
        events: Arc<EventBus>,
    ) -> std::io::Result<DecisionLog> {
        if let Some(dir) = settings.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let prev_hash =
            <[u8; 64]>::try_from(recover_tail(&settings.path)?.as_bytes()).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the last decision record's hash is not a SHA-256 hex digest",
                )
            })?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&settings.path)?;
        let size = file.metadata()?.len();
        let queue = Arc::new(Queue {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            capacity: settings.queue.max(1),
        });
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
            buffer: Vec::new(),
            completer: Completer::start(),
        };
        let writer_queue = queue.clone();
        std::thread::Builder::new()
            .name("portcullis-decisions".into())
            .spawn(move || writer.run(&writer_queue))?;
        Ok(DecisionLog {
            queue,
            durability: settings.durability,
            dropped,
            written,
        })
    }

    /// Records one decision. With `sync` durability this resolves once the record is on disk.
    pub async fn record_decision(&self, entry: &DecisionEntry<'_>) -> Result<(), RecordError> {
        self.enqueue(Sealable::of_entry(entry)).await
    }

    /// Records one record of any members (except `hash` and `prev_hash`, which the log
    /// adds), as [`DecisionLog::record_decision`] does.
    pub async fn record(&self, record: Map<String, Value>) -> Result<(), RecordError> {
        self.enqueue(Sealable::of(&record)).await
    }

    async fn enqueue(&self, record: Sealable) -> Result<(), RecordError> {
        let (done, rx) = match self.durability {
            Durability::Async => (None, None),
            Durability::Sync => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
        };
        {
            let mut pending = self.queue.lock();
            if pending.closed {
                return Err(RecordError::Io("writer stopped".into()));
            }
            if pending.jobs.len() >= self.queue.capacity {
                drop(pending);
                return match self.durability {
                    Durability::Async => {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    }
                    Durability::Sync => Err(RecordError::Backlog),
                };
            }
            let sync = done.is_some();
            pending.jobs.push(Job { record, done });
            // The first record of an empty queue wakes the writer too: it sleeps without a
            // deadline until there is something to linger over.
            let queued = pending.jobs.len();
            let wake = (pending.sleeping && (sync || queued == 1 || queued >= ASYNC_BATCH))
                || (pending.lingering && queued >= SYNC_BATCH);
            drop(pending);
            if wake {
                self.queue.wake.notify_one();
            }
        }
        match rx {
            None => Ok(()),
            Some(rx) => rx
                .await
                .unwrap_or_else(|_| Err(RecordError::Io("writer stopped".into()))),
        }
    }

    /// Waits (at most `timeout`) until every record queued so far is written and synced,
    /// async ones included: at shutdown, so the last records are not lost with the process.
    pub async fn flush(&self, timeout: Duration) {
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.queue.lock();
            if pending.closed {
                return;
            }
            pending.flushes.push(tx);
            let wake = pending.sleeping || pending.lingering;
            drop(pending);
            if wake {
                self.queue.wake.notify_one();
            }
        }
        let _ = tokio::time::timeout(timeout, rx).await;
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

impl Drop for DecisionLog {
    fn drop(&mut self) {
        self.queue.lock().closed = true;
        self.queue.wake.notify_one();
    }
}

struct Writer {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    prev_hash: [u8; 64],
    always_sync: bool,
    dropped: Arc<AtomicU64>,
    reported_dropped: u64,
    written: Arc<AtomicU64>,
    events: Arc<EventBus>,
    /// The lines of the batch being written (kept to reuse its allocation).
    buffer: Vec<u8>,
    completer: Completer,
}

impl Writer {
    fn run(mut self, queue: &Queue) {
        let mut batch = Vec::new();
        let mut flushing = Vec::new();
        let mut last_batch = 0;
        loop {
            let closed = self.next_batch(queue, last_batch, &mut batch, &mut flushing);
            if !batch.is_empty() || !flushing.is_empty() {
                let result = self.write_batch(&batch, !flushing.is_empty());
                // Counted before anyone hears back, so a caller sees its own record counted.
                if result.is_ok() {
                    self.written
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                }
                last_batch = batch.len();
                let told: Vec<_> = batch
                    .drain(..)
                    .filter_map(|job| job.done.map(|done| (done, result.clone())))
                    .collect();
                self.completer.complete(told);
                for flush in flushing.drain(..) {
                    let _ = flush.send(());
                }
            }
            self.report_drops();
            if closed {
                return;
            }
        }
    }

    /// Waits until there is something to write and moves it into `batch` (and, once the
    /// queue is empty, the waiting flushes into `flushing`); true once the log is closed and
    /// nothing is left.
    fn next_batch(
        &self,
        queue: &Queue,
        last_batch: usize,
        batch: &mut Vec<Job>,
        flushing: &mut Vec<oneshot::Sender<()>>,
    ) -> bool {
        let mut pending = queue.lock();
        // Async records linger (a few writes a second under load); a sync record, a flush or
        // a full batch ends the wait at once.
        while !pending.closed
            && pending.flushes.is_empty()
            && (!self.always_sync || pending.jobs.is_empty())
            && pending.jobs.len() < ASYNC_BATCH
        {
            pending.sleeping = true;
            let timeout = if pending.jobs.is_empty() {
                Duration::from_secs(3600)
            } else {
                ASYNC_LINGER
            };
            let (guard, waited) = queue
                .wake
                .wait_timeout(pending, timeout)
                .unwrap_or_else(PoisonError::into_inner);
            pending = guard;
            pending.sleeping = false;
            if waited.timed_out() && !pending.jobs.is_empty() {
                break;
            }
        }
        // Under load (the last batch held more than one record), sync records wait up to
        // SYNC_LINGER for company; a lone request never waits.
        if self.always_sync && !pending.jobs.is_empty() && last_batch > 1 {
            let deadline = Instant::now() + SYNC_LINGER;
            pending.lingering = true;
            while !pending.closed && pending.flushes.is_empty() && pending.jobs.len() < SYNC_BATCH {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                pending = queue
                    .wake
                    .wait_timeout(pending, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            pending.lingering = false;
        }
        let take = pending.jobs.len().min(MAX_BATCH);
        batch.extend(pending.jobs.drain(..take));
        // Flushes are answered with the batch that empties the queue.
        if pending.jobs.is_empty() {
            flushing.append(&mut pending.flushes);
        }
        pending.closed && pending.jobs.is_empty()
    }

    fn write_batch(&mut self, batch: &[Job], force_sync: bool) -> Result<(), RecordError> {
        self.buffer.clear();
        let mut prev = self.prev_hash;
        for job in batch {
            prev = job.record.seal_into(&prev, &mut self.buffer);
        }
        self.file
            .write_all(&self.buffer)
            .map_err(|e| RecordError::Io(e.to_string()))?;
        if force_sync || self.always_sync {
            self.file
                .sync_data()
                .map_err(|e| RecordError::Io(e.to_string()))?;
        }
        self.prev_hash = prev;
        self.size += self.buffer.len() as u64;
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
mod tests;
