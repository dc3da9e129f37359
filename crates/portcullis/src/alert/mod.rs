//! Alerts: security events at or above a severity, POSTed to a webhook (generic JSON,
//! PagerDuty Events API v2 or Slack), deduplicated, capped per minute, retried with
//! backoff, never on the request path.
//!
//! The [`Alerter`] watches the [`crate::event::EventBus`]: an event that qualifies is
//! offered to a bounded queue and the request goes on; if the queue is full the event is
//! counted as dropped. One background task decides what to send (`dedup`) and sends it
//! through the shared outbound client, which never follows a redirect.

mod dedup;
mod format;

use crate::event::{EventObserver, SecurityEvent, Severity};
use crate::outbound::HttpClient;
use crate::secret::Secret;
use bytes::Bytes;
use dedup::Dedup;
use http::{Method, Request, header};
use http_body_util::Full;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Events waiting for the sender at most; past it, events are dropped and counted.
const QUEUE: usize = 1024;
/// Attempts per alert (the first included).
const ATTEMPTS: u32 = 4;
/// The first retry's delay; each later one doubles, with ±50% jitter.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait for one webhook answer.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for the last summaries to go out.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// The body format the webhook expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertFormat {
    /// `{"alert": <event>, "count", "first_seen", "last_seen", "dedup_key"}`.
    Generic,
    /// PagerDuty Events API v2 (`trigger` with the dedup key).
    PagerDuty,
    /// A Slack incoming webhook (`{"text": …}`).
    Slack,
}

/// Where and what to alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertSettings {
    /// The webhook URL (a secret: it often carries a key).
    pub webhook: Secret,
    /// Its body format.
    pub format: AlertFormat,
    /// PagerDuty's integration key (required for that format).
    pub routing_key: Option<Secret>,
    /// Events at or above this are alerted.
    pub min_severity: Severity,
    /// One alert per key per window; repeats raise its count.
    pub dedup_window: Duration,
    /// Alerts sent per minute at most; past it, one summary says how many were held back.
    pub max_per_minute: u32,
}

impl AlertSettings {
    /// Alerts for `high` and `critical` events, deduplicated over 5 minutes, 60 per minute.
    pub fn new(webhook: Secret, format: AlertFormat) -> AlertSettings {
        AlertSettings {
            webhook,
            format,
            routing_key: None,
            min_severity: Severity::High,
            dedup_window: Duration::from_secs(300),
            max_per_minute: 60,
        }
    }
}

/// What the sender sends: one alert (with the count of its key), or the summary of what the
/// per-minute cap held back.
#[derive(Debug, Clone)]
pub(crate) enum Outgoing {
    Alert {
        event: Box<SecurityEvent>,
        count: u64,
        first_seen: String,
        last_seen: String,
        dedup_key: String,
    },
    Suppressed {
        count: u64,
    },
}

/// Counts of what happened to alerts, for metrics.
#[derive(Debug, Default)]
pub struct AlertCounts {
    /// Webhook calls that succeeded.
    pub sent: AtomicU64,
    /// Alerts given up on after their retries (or refused for good: 4xx, a redirect).
    pub failed: AtomicU64,
    /// Events not queued because the queue was full.
    pub dropped: AtomicU64,
}

/// Watches events and alerts on the ones that qualify (see the module docs).
#[derive(Debug)]
pub struct Alerter {
    settings: AlertSettings,
    queue: Mutex<Option<mpsc::Sender<SecurityEvent>>>,
    worker: Mutex<Option<tokio::task::JoinHandle<()>>>,
    counts: Arc<AlertCounts>,
}

impl Alerter {
    /// Starts the sender (on the current tokio runtime) with `client`.
    pub fn start(settings: AlertSettings, client: HttpClient) -> Arc<Alerter> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let counts = Arc::new(AlertCounts::default());
        let worker = tokio::spawn(run(settings.clone(), client, rx, counts.clone()));
        Arc::new(Alerter {
            settings,
            queue: Mutex::new(Some(tx)),
            worker: Mutex::new(Some(worker)),
            counts,
        })
    }

    /// Its settings.
    pub fn settings(&self) -> &AlertSettings {
        &self.settings
    }

    /// What happened to alerts so far.
    pub fn counts(&self) -> &AlertCounts {
        &self.counts
    }

    /// Stops taking events, sends every pending count and waits (bounded) for the sender.
    pub async fn shutdown(&self) {
        let queue = self.queue.lock().ok().and_then(|mut q| q.take());
        drop(queue);
        let worker = self.worker.lock().ok().and_then(|mut w| w.take());
        if let Some(worker) = worker {
            let _ = tokio::time::timeout(FLUSH_TIMEOUT, worker).await;
        }
    }
}

impl EventObserver for Alerter {
    fn observe(&self, event: &SecurityEvent) {
        if event.severity < self.settings.min_severity {
            return;
        }
        let Ok(queue) = self.queue.lock() else {
            return;
        };
        let queued = queue
            .as_ref()
            .is_some_and(|q| q.try_send(event.clone()).is_ok());
        if !queued {
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Alerter {
    fn drop(&mut self) {
        // Without a shutdown, the worker still flushes once the queue closes.
        if let Ok(mut queue) = self.queue.lock() {
            queue.take();
        }
    }
}

async fn run(
    settings: AlertSettings,
    client: HttpClient,
    mut rx: mpsc::Receiver<SecurityEvent>,
    counts: Arc<AlertCounts>,
) {
    let sender = Sender {
        settings: &settings,
        client: &client,
        counts: &counts,
    };
    let mut dedup = Dedup::new(&settings, Instant::now().into_std());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let due = tokio::select! {
            received = rx.recv() => match received {
                Some(event) => dedup.on_event(event, Instant::now().into_std()),
                None => break,
            },
            _ = tick.tick() => dedup.on_tick(Instant::now().into_std()),
        };
        for alert in due {
            sender.send(&alert).await;
        }
    }
    for alert in dedup.flush() {
        sender.send(&alert).await;
    }
}

struct Sender<'a> {
    settings: &'a AlertSettings,
    client: &'a HttpClient,
    counts: &'a AlertCounts,
}

impl Sender<'_> {
    async fn send(&self, alert: &Outgoing) {
        let body = format::body(
            self.settings.format,
            self.settings.routing_key.as_ref().map(Secret::expose),
            alert,
        )
        .to_string();
        let mut delay = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            match self.attempt(&body).await {
                Attempt::Sent => {
                    self.counts.sent.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Attempt::Refused => break,
                Attempt::Retry if attempt < ATTEMPTS => {
                    tokio::time::sleep(jittered(delay)).await;
                    delay = delay.saturating_mul(2);
                }
                Attempt::Retry => {}
            }
        }
        self.counts.failed.fetch_add(1, Ordering::Relaxed);
    }

    async fn attempt(&self, body: &str) -> Attempt {
        let Ok(request) = Request::builder()
            .method(Method::POST)
            .uri(self.settings.webhook.expose())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, "portcullis-alerts")
            .body(Full::new(Bytes::from(body.to_owned())))
        else {
            return Attempt::Refused;
        };
        match tokio::time::timeout(SEND_TIMEOUT, self.client.request(request)).await {
            Ok(Ok(response)) => {
                let status = response.status();
                if status.is_success() {
                    Attempt::Sent
                } else if status.is_server_error() || status.as_u16() == 429 {
                    Attempt::Retry
                } else {
                    // 4xx is the webhook saying no for good; 3xx is never followed.
                    Attempt::Refused
                }
            }
            Ok(Err(_)) | Err(_) => Attempt::Retry,
        }
    }
}

enum Attempt {
    Sent,
    Retry,
    Refused,
}

/// `delay` with ±50% jitter, so that many gateways retrying the same webhook spread out.
fn jittered(delay: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    // A factor in [0.5, 1.5).
    let factor = 0.5 + f64::from(nanos % 1000) / 1000.0;
    delay.mul_f64(factor)
}
