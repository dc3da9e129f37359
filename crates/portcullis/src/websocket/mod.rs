//! WebSocket (RFC 6455 over HTTP/1.1, RFC 8441 over HTTP/2): the handshake is recognised
//! before the hop-by-hop headers are removed, checked once the route is known (the route must
//! allow upgrades, the `Origin` must be on its allow-list), and forwarded only after the whole
//! pipeline said yes. After both sides switched protocols, [`relay`] carries the frames within
//! the limits.

pub mod frames;
pub mod handshake;
pub mod relay;

pub use frames::Violation;
pub use handshake::{Asked, Handshake, detect, restore_upgrade_headers, set_upgrade_headers};
pub use relay::{RelayEnd, RelayLimits, relay};

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// `limits.websocket`: the bounds of every relayed WebSocket connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebSocketLimits {
    /// Largest message (all fragments together) either side may send; past it, close 1009.
    pub max_message_bytes: u64,
    /// Longest time without a byte either way; then close 1001.
    pub idle_timeout: Duration,
    /// Longest life of a connection; never past the token's `exp` (close 1008).
    pub max_lifetime: Duration,
}

impl Default for WebSocketLimits {
    fn default() -> Self {
        WebSocketLimits {
            max_message_bytes: 1024 * 1024,
            idle_timeout: Duration::from_secs(60),
            max_lifetime: Duration::from_secs(3600),
        }
    }
}

/// What a route allows of WebSocket upgrades (`routes[].websocket: true`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WebSocketRoute {
    /// Allowed `Origin` values, compared without regard to ASCII case; `*` allows any;
    /// empty: only the gateway's own origin (an `Origin` whose host and port are the
    /// request's `Host`). A handshake without `Origin` (not from a browser) is allowed.
    pub origins: Vec<String>,
}

/// Counts of relayed WebSocket connections, read by the metrics exposition.
#[derive(Debug, Default)]
pub struct WebSocketCounts {
    opened: AtomicU64,
    closed: AtomicU64,
    message_too_big: AtomicU64,
    protocol_errors: AtomicU64,
    idle: AtomicU64,
    expired: AtomicU64,
}

impl WebSocketCounts {
    /// A connection switched protocols and is being relayed.
    pub fn opened(&self) {
        self.opened.fetch_add(1, Ordering::Relaxed);
    }

    /// A relayed connection ended so.
    pub fn closed(&self, end: RelayEnd) {
        self.closed.fetch_add(1, Ordering::Relaxed);
        let counter = match end {
            RelayEnd::ClientViolation(Violation::TooBig)
            | RelayEnd::UpstreamViolation(Violation::TooBig) => &self.message_too_big,
            RelayEnd::ClientViolation(_) | RelayEnd::UpstreamViolation(_) => &self.protocol_errors,
            RelayEnd::Idle => &self.idle,
            RelayEnd::Expired => &self.expired,
            RelayEnd::Closed | RelayEnd::Shutdown | RelayEnd::Broken => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Connections being relayed now.
    pub fn open(&self) -> u64 {
        self.opened
            .load(Ordering::Relaxed)
            .saturating_sub(self.closed.load(Ordering::Relaxed))
    }

    /// Connections relayed since start.
    pub fn total(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Connections the gateway closed, by cause: message too big, protocol error, idle,
    /// expired.
    pub fn closed_by_gateway(&self) -> [(&'static str, u64); 4] {
        [
            (
                "websocket_message_too_big",
                self.message_too_big.load(Ordering::Relaxed),
            ),
            (
                "websocket_protocol_error",
                self.protocol_errors.load(Ordering::Relaxed),
            ),
            ("idle_timeout", self.idle.load(Ordering::Relaxed)),
            ("expired", self.expired.load(Ordering::Relaxed)),
        ]
    }
}
