//! WebSocket over HTTP/1.1 (RFC 6455): the handshake is recognised before the hop-by-hop
//! headers are removed, checked once the route is known (the route must allow upgrades, the
//! `Origin` must be on its allow-list), and forwarded only after the whole pipeline said yes.
//! After both sides switched protocols, [`relay`] carries the frames within the limits.

pub mod frames;
pub mod relay;

pub use frames::Violation;
pub use relay::{RelayEnd, RelayLimits, relay};

use crate::denial::Denial;
use crate::reason::{ForbiddenReason, MalformedReason};
use http::{HeaderMap, HeaderValue, Method, Version, header};
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

/// A WebSocket handshake, recognised by the normalise layer before it strips the hop-by-hop
/// headers; the request extension the router checks and the proxy forwards.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// Whether the handshake is well-formed, or what is wrong with it.
    pub problem: Option<&'static str>,
    /// The client's `Origin`, if it sent one.
    pub origin: Option<HeaderValue>,
}

/// The `Upgrade` value the gateway forwards.
pub const UPGRADE_WEBSOCKET: HeaderValue = HeaderValue::from_static("websocket");

/// The handshake in `headers`, if the request asks for a WebSocket upgrade (an `Upgrade`
/// naming `websocket`); other upgrades (`h2c`) are not offered and are ignored, as RFC 9110
/// §7.8 lets a server do.
pub fn detect(method: &Method, version: Version, headers: &HeaderMap) -> Option<Handshake> {
    let asks = headers
        .get_all(header::UPGRADE)
        .iter()
        .any(|v| has_token(v, "websocket"));
    if !asks {
        return None;
    }
    Some(Handshake {
        problem: handshake_problem(method, version, headers),
        origin: headers.get(header::ORIGIN).cloned(),
    })
}

/// What RFC 6455 §4.2.1 makes of a handshake: `None` if it is well-formed.
fn handshake_problem(
    method: &Method,
    version: Version,
    headers: &HeaderMap,
) -> Option<&'static str> {
    if method != Method::GET {
        return Some("an upgrade must be a GET");
    }
    if version != Version::HTTP_11 {
        return Some("an upgrade needs HTTP/1.1");
    }
    if !headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| has_token(v, "upgrade"))
    {
        return Some("Connection does not name upgrade");
    }
    if headers.get_all(header::UPGRADE).iter().count() != 1 {
        return Some("several Upgrade fields");
    }
    let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
    match (keys.next(), keys.next()) {
        (Some(key), None) if valid_key(key.as_bytes()) => {}
        _ => return Some("Sec-WebSocket-Key is not one base64 nonce of 16 bytes"),
    }
    let mut versions = headers.get_all(header::SEC_WEBSOCKET_VERSION).iter();
    match (versions.next(), versions.next()) {
        (Some(v), None) if v.as_bytes() == b"13" => {}
        _ => return Some("Sec-WebSocket-Version is not 13"),
    }
    if headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
    {
        return Some("an upgrade request has no body");
    }
    None
}

/// Whether a comma-separated header value lists `token` (ASCII case-insensitive).
fn has_token(value: &HeaderValue, token: &str) -> bool {
    value
        .to_str()
        .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// A `Sec-WebSocket-Key`: 16 random bytes in base64, so 22 characters and `==`.
fn valid_key(key: &[u8]) -> bool {
    use base64::Engine;
    key.len() == 24
        && base64::engine::general_purpose::STANDARD
            .decode(key)
            .is_ok_and(|nonce| nonce.len() == 16)
}

impl Handshake {
    /// The router's check, once the route is known: the route must allow upgrades, the
    /// handshake be well-formed, and its `Origin` allowed (`host`: the request's `Host`).
    pub fn check(&self, route: Option<&WebSocketRoute>, host: Option<&str>) -> Result<(), Denial> {
        let malformed = |reason, detail: &str| Denial::Malformed {
            reason,
            detail: detail.to_string(),
            close: false,
        };
        let Some(route) = route else {
            return Err(malformed(
                MalformedReason::WebSocketNotAllowed,
                "WebSocket upgrade on a route without `websocket: true`",
            ));
        };
        if let Some(problem) = self.problem {
            return Err(malformed(MalformedReason::WebSocketHandshake, problem));
        }
        let Some(origin) = &self.origin else {
            return Ok(());
        };
        let text = origin.to_str().unwrap_or_default();
        let allowed = if route.origins.is_empty() {
            // Same origin: what follows the scheme is the host (and port) the request names.
            let authority = text.split_once("://").map(|(_, rest)| rest);
            authority
                .zip(host)
                .is_some_and(|(a, h)| a.eq_ignore_ascii_case(h))
        } else {
            route
                .origins
                .iter()
                .any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(text))
        };
        if allowed {
            Ok(())
        } else {
            Err(Denial::Forbidden {
                reason: ForbiddenReason::WebSocketOrigin,
                detail: format!(
                    "Origin `{}` is not in the route's websocket_origins",
                    crate::problem::truncated(text, 128)
                ),
                required_action: String::new(),
                resource_type: String::new(),
            })
        }
    }
}

/// Sets the headers that ask the upstream for the upgrade on this hop (the normalise layer
/// removed them with the other hop-by-hop headers). Extensions are never offered: the relay
/// bounds messages by their size on the wire, which a compressed message would get around.
pub fn restore_upgrade_headers(headers: &mut HeaderMap) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, UPGRADE_WEBSOCKET);
    headers.remove(header::SEC_WEBSOCKET_EXTENSIONS);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake(extra: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("upgrade", "websocket"),
            ("connection", "keep-alive, Upgrade"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
        for (name, value) in extra {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.insert(name, value);
            }
        }
        headers
    }

    fn problem(
        method: Method,
        version: Version,
        headers: &HeaderMap,
    ) -> Option<Option<&'static str>> {
        detect(&method, version, headers).map(|h| h.problem)
    }

    #[test]
    fn a_valid_handshake_is_recognised() {
        let headers = handshake(&[]);
        assert_eq!(problem(Method::GET, Version::HTTP_11, &headers), Some(None));
        let mut plain = HeaderMap::new();
        plain.insert("upgrade", HeaderValue::from_static("h2c"));
        assert!(detect(&Method::GET, Version::HTTP_11, &plain).is_none());
    }

    #[test]
    fn malformed_handshakes_are_named() {
        let bad = [
            handshake(&[("sec-websocket-key", "short")]),
            handshake(&[("sec-websocket-key", "AAAAAAAAAAAAAAAAAAAAAAAAAAAA")]),
            handshake(&[("sec-websocket-version", "8")]),
            handshake(&[("connection", "keep-alive")]),
            handshake(&[("content-length", "5")]),
        ];
        for headers in &bad {
            assert!(
                matches!(
                    problem(Method::GET, Version::HTTP_11, headers),
                    Some(Some(_))
                ),
                "{headers:?}"
            );
        }
        let good = handshake(&[]);
        assert!(matches!(
            problem(Method::POST, Version::HTTP_11, &good),
            Some(Some(_))
        ));
        assert!(matches!(
            problem(Method::GET, Version::HTTP_10, &good),
            Some(Some(_))
        ));
    }

    #[test]
    fn routes_and_origins_decide() {
        let headers = handshake(&[("origin", "https://App.example.test")]);
        let Some(shake) = detect(&Method::GET, Version::HTTP_11, &headers) else {
            unreachable!("a handshake")
        };
        let reason = |r: Result<(), Denial>| r.err().map(|d| d.reason());
        let host = Some("gw.example.test:8080");
        assert_eq!(
            reason(shake.check(None, host)),
            Some("websocket_not_allowed")
        );
        let allowed = WebSocketRoute {
            origins: vec!["https://app.example.test".into()],
        };
        assert_eq!(reason(shake.check(Some(&allowed), host)), None);
        let other = WebSocketRoute {
            origins: vec!["https://other.example.test".into()],
        };
        assert_eq!(
            reason(shake.check(Some(&other), host)),
            Some("websocket_origin")
        );
        let any = WebSocketRoute {
            origins: vec!["*".into()],
        };
        assert_eq!(reason(shake.check(Some(&any), host)), None);
        // No list: the gateway's own origin only.
        let same = WebSocketRoute::default();
        assert_eq!(
            reason(shake.check(Some(&same), host)),
            Some("websocket_origin")
        );
        assert_eq!(
            reason(shake.check(Some(&same), Some("app.example.test"))),
            None
        );
        assert_eq!(
            reason(shake.check(Some(&same), None)),
            Some("websocket_origin")
        );
        // Not from a browser: no Origin, no cross-site hijacking to fear.
        let headers = handshake(&[]);
        let Some(shake) = detect(&Method::GET, Version::HTTP_11, &headers) else {
            unreachable!("a handshake")
        };
        assert_eq!(reason(shake.check(Some(&other), host)), None);
    }
}
