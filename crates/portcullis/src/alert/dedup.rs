//! Deciding what to send, apart from sending it: deduplication by key within a window, and a
//! hard cap per minute with a summary past it. Pure state over an injected clock, so that
//! every rule is tested without a network or a wait.

use super::{AlertSettings, Outgoing};
use crate::event::SecurityEvent;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Keys remembered at most; past it, the oldest window is closed early (its repeats are
/// summarised), so memory stays bounded whatever the traffic.
pub(crate) const MAX_KEYS: usize = 10_000;

/// What identifies "the same alert": event type, reason, client and endpoint.
pub(crate) fn dedup_key(event: &SecurityEvent) -> String {
    format!(
        "{}|{}|{}|{}",
        event.event_type.as_str(),
        event.reason,
        event.ip.as_deref().unwrap_or("-"),
        event.endpoint.as_deref().unwrap_or("-")
    )
}

#[derive(Debug)]
struct Window {
    opened: Instant,
    /// The latest event of the key, sent with the summary.
    latest: SecurityEvent,
    first_seen: String,
    /// Repeats since the last alert of this key.
    repeats: u64,
}

/// The dedup windows and the per-minute cap.
#[derive(Debug)]
pub(crate) struct Dedup {
    window: Duration,
    max_per_minute: u32,
    windows: HashMap<String, Window>,
    /// Keys in the order their windows opened (entries of closed windows are skipped when
    /// met), so the oldest window is found without a scan.
    order: VecDeque<(Instant, String)>,
    minute_start: Instant,
    sent_this_minute: u32,
    /// Alerts not sent this minute because of the cap.
    suppressed: u64,
}

impl Dedup {
    /// Empty state, its first minute starting at `now`.
    pub(crate) fn new(settings: &AlertSettings, now: Instant) -> Dedup {
        Dedup {
            window: settings.dedup_window,
            max_per_minute: settings.max_per_minute,
            windows: HashMap::new(),
            order: VecDeque::new(),
            minute_start: now,
            sent_this_minute: 0,
            suppressed: 0,
        }
    }

    /// An event arrived: the first of its key in a window is sent now (under the cap); a
    /// repeat only raises the count.
    pub(crate) fn on_event(&mut self, event: SecurityEvent, now: Instant) -> Vec<Outgoing> {
        let mut out = self.roll_minute(now);
        let key = dedup_key(&event);
        if let Some(open) = self.windows.get_mut(&key)
            && now.saturating_duration_since(open.opened) < self.window
        {
            open.repeats = open.repeats.saturating_add(1);
            open.latest = event;
            return out;
        }
        // A window that closed with repeats owes a summary: it goes with this alert.
        let carried = self.windows.remove(&key);
        if self.windows.len() >= MAX_KEYS {
            out.extend(self.close_oldest());
        }
        let first_seen = carried
            .as_ref()
            .map_or_else(|| event.timestamp.clone(), |w| w.first_seen.clone());
        let count = 1 + carried.as_ref().map_or(0, |w| w.repeats);
        self.order.push_back((now, key.clone()));
        if self.order.len() > MAX_KEYS.saturating_mul(2) {
            let windows = &self.windows;
            self.order
                .retain(|(opened, k)| windows.get(k).is_some_and(|w| w.opened == *opened));
        }
        self.windows.insert(
            key.clone(),
            Window {
                opened: now,
                latest: event.clone(),
                first_seen: event.timestamp.clone(),
                repeats: 0,
            },
        );
        out.extend(self.capped(Outgoing::Alert {
            last_seen: event.timestamp.clone(),
            event: Box::new(event),
            count,
            first_seen,
            dedup_key: key,
        }));
        out
    }

    /// Time passed: windows that closed with repeats send their summary; a new minute
    /// reports what the cap held back.
    pub(crate) fn on_tick(&mut self, now: Instant) -> Vec<Outgoing> {
        let mut out = self.roll_minute(now);
        let window = self.window;
        let closed: Vec<String> = self
            .windows
            .iter()
            .filter(|(_, w)| now.saturating_duration_since(w.opened) >= window)
            .map(|(k, _)| k.clone())
            .collect();
        for key in closed {
            if let Some(w) = self.windows.remove(&key)
                && w.repeats > 0
            {
                out.extend(self.capped(summary(key, w)));
            }
        }
        out
    }

    /// Shutting down: every pending count is sent, cap or not (nothing is lost silently).
    pub(crate) fn flush(&mut self) -> Vec<Outgoing> {
        let mut out: Vec<Outgoing> = self
            .windows
            .drain()
            .filter(|(_, w)| w.repeats > 0)
            .map(|(k, w)| summary(k, w))
            .collect();
        if self.suppressed > 0 {
            out.push(Outgoing::Suppressed {
                count: std::mem::take(&mut self.suppressed),
            });
        }
        out
    }

    fn roll_minute(&mut self, now: Instant) -> Vec<Outgoing> {
        if now.saturating_duration_since(self.minute_start) < Duration::from_secs(60) {
            return Vec::new();
        }
        self.minute_start = now;
        self.sent_this_minute = 0;
        if self.suppressed == 0 {
            return Vec::new();
        }
        // The summary of what was held back counts against the new minute's cap too.
        self.sent_this_minute = 1;
        vec![Outgoing::Suppressed {
            count: std::mem::take(&mut self.suppressed),
        }]
    }

    fn capped(&mut self, alert: Outgoing) -> Option<Outgoing> {
        if self.sent_this_minute >= self.max_per_minute {
            self.suppressed = self.suppressed.saturating_add(1);
            return None;
        }
        self.sent_this_minute = self.sent_this_minute.saturating_add(1);
        Some(alert)
    }

    fn close_oldest(&mut self) -> Option<Outgoing> {
        let oldest = loop {
            let (opened, key) = self.order.pop_front()?;
            if self.windows.get(&key).is_some_and(|w| w.opened == opened) {
                break key;
            }
        };
        let w = self.windows.remove(&oldest)?;
        if w.repeats == 0 {
            return None;
        }
        self.capped(summary(oldest, w))
    }

    /// Keys currently remembered.
    #[cfg(test)]
    pub(crate) fn keys(&self) -> usize {
        self.windows.len()
    }
}

fn summary(key: String, w: Window) -> Outgoing {
    Outgoing::Alert {
        last_seen: w.latest.timestamp.clone(),
        event: Box::new(w.latest),
        count: w.repeats,
        first_seen: w.first_seen,
        dedup_key: key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::AlertFormat;
    use crate::event::{EventType, Severity};
    use crate::secret::Secret;

    fn settings(window_secs: u64, max_per_minute: u32) -> AlertSettings {
        AlertSettings {
            webhook: Secret::new("http://127.0.0.1:9/hook"),
            format: AlertFormat::Generic,
            routing_key: None,
            min_severity: Severity::High,
            dedup_window: Duration::from_secs(window_secs),
            max_per_minute,
        }
    }

    fn event(ip: &str) -> SecurityEvent {
        let mut e = SecurityEvent::new(EventType::AuthFailure, Severity::High, "bad_signature");
        e.ip = Some(ip.into());
        e.endpoint = Some("/api/items".into());
        e
    }

    fn count(out: &[Outgoing]) -> Vec<u64> {
        out.iter()
            .map(|o| match o {
                Outgoing::Alert { count, .. } => *count,
                Outgoing::Suppressed { count } => 1000 + count,
            })
            .collect()
    }

    #[test]
    fn repeats_in_the_window_are_counted_and_summarised_when_it_closes() {
        let t0 = Instant::now();
        let mut dedup = Dedup::new(&settings(300, 60), t0);
        assert_eq!(count(&dedup.on_event(event("a"), t0)), vec![1]);
        for i in 1..=4 {
            let out = dedup.on_event(event("a"), t0 + Duration::from_secs(i));
            assert!(out.is_empty(), "a repeat was sent at once");
        }
        // Another client is another key.
        assert_eq!(
            count(&dedup.on_event(event("b"), t0 + Duration::from_secs(5))),
            vec![1]
        );
        assert!(dedup.on_tick(t0 + Duration::from_secs(299)).is_empty());
        assert_eq!(
            count(&dedup.on_tick(t0 + Duration::from_secs(300))),
            vec![4]
        );
        assert_eq!(dedup.keys(), 1, "the closed window was forgotten");
    }

    #[test]
    fn a_repeat_after_the_window_carries_the_pending_count() {
        let t0 = Instant::now();
        let mut dedup = Dedup::new(&settings(10, 60), t0);
        dedup.on_event(event("a"), t0);
        dedup.on_event(event("a"), t0 + Duration::from_secs(1));
        dedup.on_event(event("a"), t0 + Duration::from_secs(2));
        // No tick in between: the next alert of the key carries the two repeats.
        assert_eq!(
            count(&dedup.on_event(event("a"), t0 + Duration::from_secs(11))),
            vec![3]
        );
    }

    #[test]
    fn the_cap_holds_and_a_summary_follows_in_the_next_minute() {
        let t0 = Instant::now();
        let mut dedup = Dedup::new(&settings(300, 2), t0);
        let mut sent = 0;
        for i in 0..10 {
            sent += dedup.on_event(event(&format!("10.0.0.{i}")), t0).len();
        }
        assert_eq!(sent, 2, "more than max_per_minute were sent");
        assert_eq!(
            count(&dedup.on_tick(t0 + Duration::from_secs(60))),
            vec![1008]
        );
    }

    #[test]
    fn flush_sends_every_pending_count() {
        let t0 = Instant::now();
        let mut dedup = Dedup::new(&settings(300, 1), t0);
        dedup.on_event(event("a"), t0);
        dedup.on_event(event("a"), t0);
        dedup.on_event(event("b"), t0);
        let mut counts = count(&dedup.flush());
        counts.sort_unstable();
        assert_eq!(counts, vec![1, 1001]);
    }

    #[test]
    fn memory_stays_bounded_with_a_million_distinct_keys() {
        let t0 = Instant::now();
        let mut dedup = Dedup::new(&settings(300, 60), t0);
        for i in 0..1_000_000u32 {
            dedup.on_event(event(&i.to_string()), t0);
            assert!(dedup.keys() <= MAX_KEYS);
        }
        assert_eq!(dedup.keys(), MAX_KEYS);
    }
}
