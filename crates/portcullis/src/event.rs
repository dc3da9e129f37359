//! Security events: one JSON line per event (SPEC §4), written off the request path.

use serde::Serialize;
use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

/// What kind of thing happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// A credential was missing or invalid.
    AuthFailure,
    /// The policy refused an authenticated caller.
    AuthzDenied,
    /// A rate limit or threat score refused the request.
    RateLimit,
    /// The request broke the API's contract or the gateway's limits.
    ValidationFailure,
    /// The request looks like an attack (smuggling, path tricks, ...).
    SuspiciousActivity,
    /// Traffic deviates from what was seen before.
    Anomaly,
    /// A configuration reload happened or was refused.
    ConfigReload,
    /// The policy engine failed; the request was refused (fail closed).
    PolicyEngineError,
    /// The upstream could not be reached or did not answer in time.
    UpstreamError,
    /// A browser session's life: login, refresh, logout (refusals are `auth_failure`).
    Session,
}

impl EventType {
    /// The name used in JSON and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::AuthFailure => "auth_failure",
            EventType::AuthzDenied => "authz_denied",
            EventType::RateLimit => "rate_limit",
            EventType::ValidationFailure => "validation_failure",
            EventType::SuspiciousActivity => "suspicious_activity",
            EventType::Anomaly => "anomaly",
            EventType::ConfigReload => "config_reload",
            EventType::PolicyEngineError => "policy_engine_error",
            EventType::UpstreamError => "upstream_error",
            EventType::Session => "session",
        }
    }
}

/// How urgent an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Routine refusals.
    Low,
    /// Worth a look.
    Medium,
    /// Needs attention soon.
    High,
    /// Needs attention now.
    Critical,
}

/// One security event (SPEC §4).
#[derive(Debug, Clone, Serialize)]
pub struct SecurityEvent {
    /// RFC 3339 UTC time the event was raised.
    pub timestamp: String,
    /// What happened.
    pub event_type: EventType,
    /// How urgent it is.
    pub severity: Severity,
    /// The request's correlation id, when the event concerns a request.
    pub request_id: Option<String>,
    /// The client's address (after trusted-proxy resolution).
    pub ip: Option<String>,
    /// The authenticated principal, when known.
    pub user_id: Option<String>,
    /// The request method.
    pub method: Option<String>,
    /// The route template (or the normalised path when no route matched).
    pub endpoint: Option<String>,
    /// The exact, machine-readable reason.
    pub reason: String,
    /// Anything else worth knowing.
    pub details: serde_json::Value,
}

impl SecurityEvent {
    /// An event not tied to a request, stamped now.
    pub fn new(event_type: EventType, severity: Severity, reason: impl Into<String>) -> Self {
        SecurityEvent {
            timestamp: crate::time::now_rfc3339(),
            event_type,
            severity,
            request_id: None,
            ip: None,
            user_id: None,
            method: None,
            endpoint: None,
            reason: reason.into(),
            details: serde_json::Value::Object(serde_json::Map::new()),
        }
    }
}

/// Where event lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventSink {
    /// Standard output.
    Stdout,
    /// A file, appended to.
    File(PathBuf),
    /// Nowhere (events are still kept in memory for the admin API).
    Discard,
}

/// How many events may wait for the writer before new ones are dropped (and counted).
const QUEUE_CAPACITY: usize = 8192;
/// How many recent events the admin API can show.
const RECENT_CAPACITY: usize = 1000;

/// A recent event with its position in the stream.
#[derive(Debug, Clone, Serialize)]
pub struct RecentEvent {
    /// Increasing sequence number, for `?since=`.
    pub seq: u64,
    /// The event.
    #[serde(flatten)]
    pub event: SecurityEvent,
}

/// Something that watches every event as it is emitted (alerts, detectors). It is called on
/// the emitting thread, so it must only queue or count, never wait.
pub trait EventObserver: Send + Sync + std::fmt::Debug {
    /// Sees one event.
    fn observe(&self, event: &SecurityEvent);
}

/// Accepts events from any thread and writes them on a background thread, so a slow
/// disk or terminal never delays a response. Keeps the most recent ones in memory.
#[derive(Debug)]
pub struct EventBus {
    queue: Option<SyncSender<String>>,
    recent: Mutex<VecDeque<RecentEvent>>,
    next_seq: AtomicU64,
    dropped: AtomicU64,
    emitted: AtomicU64,
    observer: std::sync::RwLock<Option<Arc<dyn EventObserver>>>,
    /// Woken on every event, for live streams.
    new_event: tokio::sync::Notify,
}

impl EventBus {
    /// Starts the writer for `sink`.
    pub fn start(sink: EventSink) -> std::io::Result<EventBus> {
        let writer: Box<dyn Write + Send> = match &sink {
            EventSink::Stdout => Box::new(std::io::stdout()),
            EventSink::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
            EventSink::Discard => return Ok(EventBus::discard()),
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_CAPACITY);
        std::thread::Builder::new()
            .name("portcullis-events".into())
            .spawn(move || write_lines(rx, writer))?;
        Ok(EventBus::with_queue(Some(tx)))
    }

    /// A bus that only keeps events in memory.
    pub fn discard() -> EventBus {
        EventBus::with_queue(None)
    }

    fn with_queue(queue: Option<SyncSender<String>>) -> EventBus {
        EventBus {
            queue,
            recent: Mutex::new(VecDeque::with_capacity(RECENT_CAPACITY)),
            next_seq: AtomicU64::new(1),
            dropped: AtomicU64::new(0),
            emitted: AtomicU64::new(0),
            observer: std::sync::RwLock::new(None),
            new_event: tokio::sync::Notify::new(),
        }
    }

    /// Records an event. Never blocks on I/O; if the writer is too far behind, the line is
    /// dropped and counted (see [`EventBus::dropped`]) but the event stays in memory.
    pub fn emit(&self, event: SecurityEvent) {
        self.emitted.fetch_add(1, Ordering::Relaxed);
        if let Ok(observer) = self.observer.read()
            && let Some(observer) = observer.as_ref()
        {
            observer.observe(&event);
        }
        if let Some(queue) = &self.queue
            && let Ok(line) = serde_json::to_string(&event)
        {
            match queue.try_send(line) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if let Ok(mut recent) = self.recent.lock() {
            // Numbered under the lock, so the buffer is always in sequence order and a
            // reader that resumes after `seq` misses nothing.
            let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
            if recent.len() == RECENT_CAPACITY {
                recent.pop_front();
            }
            recent.push_back(RecentEvent { seq, event });
        }
        self.new_event.notify_waiters();
    }

    /// Sets (or, with `None`, removes) the observer that sees every event; returns the one
    /// it replaces.
    pub fn set_observer(
        &self,
        observer: Option<Arc<dyn EventObserver>>,
    ) -> Option<Arc<dyn EventObserver>> {
        match self.observer.write() {
            Ok(mut current) => std::mem::replace(&mut *current, observer),
            Err(_) => None,
        }
    }

    /// Resolves at the next event. Enable it (`Notified::enable`) before reading
    /// [`EventBus::recent_since`], so that an event in between is not missed.
    pub fn next_event(&self) -> tokio::sync::futures::Notified<'_> {
        self.new_event.notified()
    }

    /// The sequence number of the latest event (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.next_seq.load(Ordering::Relaxed).saturating_sub(1)
    }

    /// The sequence number of the oldest event still kept, if any.
    pub fn oldest_seq(&self) -> Option<u64> {
        self.recent
            .lock()
            .ok()
            .and_then(|recent| recent.front().map(|e| e.seq))
    }

    /// Recent events with a sequence number above `since`, oldest first.
    pub fn recent_since(&self, since: u64) -> Vec<RecentEvent> {
        match self.recent.lock() {
            Ok(recent) => recent.iter().filter(|e| e.seq > since).cloned().collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Events whose line could not be queued for the writer.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Events emitted since start.
    pub fn emitted(&self) -> u64 {
        self.emitted.load(Ordering::Relaxed)
    }
}

/// The writer thread: writes lines as they come and flushes whenever the queue is empty,
/// so a burst costs one flush while a single event is still visible at once.
fn write_lines(rx: Receiver<String>, mut writer: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::new(&mut writer);
    while let Ok(line) = rx.recv() {
        let mut next = Some(line);
        while let Some(line) = next {
            let _ = out.write_all(line.as_bytes());
            let _ = out.write_all(b"\n");
            next = rx.try_recv().ok();
        }
        let _ = out.flush();
    }
}

/// A handle to the event bus that many owners can share.
pub type SharedEventBus = Arc<EventBus>;

/// An event about a request, filled from what the layers proved about it.
pub fn request_event(
    event_type: EventType,
    severity: Severity,
    reason: &str,
    scope: &crate::scope::RequestScope,
) -> SecurityEvent {
    let mut event = SecurityEvent::new(event_type, severity, reason);
    event.request_id = Some(scope.id().to_string());
    event.ip = scope.client_ip().map(|ip| ip.to_string());
    event.user_id = scope.user_id().map(str::to_string);
    event.method = Some(scope.method().to_string());
    event.endpoint = scope.endpoint().map(|e| e.to_string());
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_serialises_in_spec_shape() {
        let mut event = SecurityEvent::new(EventType::AuthFailure, Severity::Medium, "expired");
        event.request_id = Some("r1".into());
        let value = serde_json::to_value(&event).unwrap_or_default();
        assert_eq!(value["event_type"], "auth_failure");
        assert_eq!(value["severity"], "medium");
        assert_eq!(value["reason"], "expired");
        assert_eq!(value["user_id"], serde_json::Value::Null);
        assert!(value["details"].is_object());
    }

    #[test]
    fn recent_events_are_bounded_and_ordered() {
        let bus = EventBus::discard();
        for i in 0..(RECENT_CAPACITY + 5) {
            bus.emit(SecurityEvent::new(
                EventType::Anomaly,
                Severity::Low,
                format!("e{i}"),
            ));
        }
        let all = bus.recent_since(0);
        assert_eq!(all.len(), RECENT_CAPACITY);
        assert_eq!(all.first().map(|e| e.event.reason.as_str()), Some("e5"));
        let tail = bus.recent_since(all.last().map(|e| e.seq - 2).unwrap_or(0));
        assert_eq!(tail.len(), 2);
    }
}
