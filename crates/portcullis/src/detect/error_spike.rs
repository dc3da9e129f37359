//! Error spikes: error answers (4xx/5xx, the gateway's refusals included) per endpoint and
//! per client in a window, against the same key's usual count per window.

use crate::generations::Generations;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// When errors come in a spike.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErrorSpikeSettings {
    /// This many times the key's usual count per window ...
    pub factor: f64,
    /// ... and at least this many in the window.
    pub min_count: u32,
    /// The window.
    pub window: Duration,
}

impl Default for ErrorSpikeSettings {
    fn default() -> Self {
        ErrorSpikeSettings {
            factor: 5.0,
            min_count: 20,
            window: Duration::from_secs(60),
        }
    }
}

/// Endpoints and clients per generation.
pub(super) const MAX_KEYS: usize = 20_000;
/// Weight of the last window in the usual count.
const ALPHA: f64 = 0.3;

/// What is counted: an endpoint's answers, or a client's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum ErrorKey {
    Endpoint(std::sync::Arc<str>),
    Client(std::net::IpAddr),
}

/// Error counts of one key.
#[derive(Debug, Clone, Copy)]
struct ErrorWindow {
    started: Instant,
    count: u32,
    /// The usual count per window (exponentially weighted over past windows).
    usual: f64,
    flagged: bool,
}

/// A spike found: this window's count and the usual one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Spike {
    pub count: u32,
    pub usual: f64,
}

/// The error-spike detector's state.
#[derive(Debug)]
pub(super) struct ErrorSpikes {
    pub(super) settings: ErrorSpikeSettings,
    keys: Mutex<Generations<ErrorKey, ErrorWindow>>,
}

impl ErrorSpikes {
    pub(super) fn new(settings: ErrorSpikeSettings) -> Self {
        ErrorSpikes {
            settings,
            keys: Mutex::new(Generations::new(MAX_KEYS)),
        }
    }

    /// Counts one error answer for `key`; a spike once per window when it crosses the line.
    pub(super) fn error(&self, key: ErrorKey, now: Instant) -> Option<Spike> {
        let settings = self.settings;
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let w = keys.entry(key, || ErrorWindow {
            started: now,
            count: 0,
            usual: 0.0,
            flagged: false,
        });
        if now.saturating_duration_since(w.started) >= settings.window {
            w.usual += ALPHA * (f64::from(w.count) - w.usual);
            w.count = 0;
            w.started = now;
            w.flagged = false;
        }
        w.count = w.count.saturating_add(1);
        let over = w.count >= settings.min_count
            && f64::from(w.count) > settings.factor * w.usual.max(1.0);
        if !over || w.flagged {
            return None;
        }
        w.flagged = true;
        Some(Spike {
            count: w.count,
            usual: w.usual,
        })
    }

    /// Keys held now.
    pub(super) fn keys_held(&self) -> usize {
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}
