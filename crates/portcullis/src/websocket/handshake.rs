//! The WebSocket handshake as the client sends it: over HTTP/1.1 (RFC 6455 §4, `GET` with
//! `Upgrade: websocket`) or over HTTP/2 (RFC 8441, an extended `CONNECT` with `:protocol
//! websocket`). Recognised by the normalise layer before the hop-by-hop headers go, checked by
//! the router once the route is known, and forwarded by the proxy as an HTTP/1.1 upgrade.

use super::WebSocketRoute;
use crate::denial::Denial;
use crate::reason::{ForbiddenReason, MalformedReason};
use http::{HeaderMap, HeaderValue, Method, Version, header};

/// A WebSocket handshake: the request extension the router checks and the proxy forwards.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// Whether the handshake is well-formed, or what is wrong with it.
    pub problem: Option<&'static str>,
    /// The client's `Origin`, if it sent one.
    pub origin: Option<HeaderValue>,
    /// An RFC 8441 handshake (HTTP/2 extended CONNECT): the client expects a 200, not a 101,
    /// and sent no `Sec-WebSocket-Key` (the proxy makes one for the upstream's hop).
    pub over_http2: bool,
}

/// The `Upgrade` value the gateway forwards.
const UPGRADE_WEBSOCKET: HeaderValue = HeaderValue::from_static("websocket");

/// What a request says about switching protocols.
#[derive(Debug)]
pub enum Asked {
    /// Nothing (or an upgrade the gateway ignores, such as `h2c`, as RFC 9110 §7.8 allows).
    Nothing,
    /// A WebSocket handshake.
    WebSocket(Handshake),
    /// An HTTP/2 extended CONNECT for a protocol other than WebSocket, which is not offered.
    OtherProtocol,
}

/// The handshake in a request head, if it asks for WebSocket.
pub fn detect(parts: &http::request::Parts) -> Asked {
    let headers = &parts.headers;
    if let Some(protocol) = parts.extensions.get::<hyper::ext::Protocol>() {
        if parts.method != Method::CONNECT || !protocol.as_str().eq_ignore_ascii_case("websocket") {
            return Asked::OtherProtocol;
        }
        return Asked::WebSocket(Handshake {
            problem: version_problem(headers),
            origin: headers.get(header::ORIGIN).cloned(),
            over_http2: true,
        });
    }
    let asks = headers
        .get_all(header::UPGRADE)
        .iter()
        .any(|v| has_token(v, "websocket"));
    if !asks {
        return Asked::Nothing;
    }
    Asked::WebSocket(Handshake {
        problem: http1_problem(&parts.method, parts.version, headers),
        origin: headers.get(header::ORIGIN).cloned(),
        over_http2: false,
    })
}

/// What RFC 6455 §4.2.1 makes of an HTTP/1.1 handshake: `None` if it is well-formed.
fn http1_problem(method: &Method, version: Version, headers: &HeaderMap) -> Option<&'static str> {
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
    if headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
    {
        return Some("an upgrade request has no body");
    }
    version_problem(headers)
}

/// `Sec-WebSocket-Version`, in both forms: exactly one, 13.
fn version_problem(headers: &HeaderMap) -> Option<&'static str> {
    let mut versions = headers.get_all(header::SEC_WEBSOCKET_VERSION).iter();
    match (versions.next(), versions.next()) {
        (Some(v), None) if v.as_bytes() == b"13" => None,
        _ => Some("Sec-WebSocket-Version is not 13"),
    }
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
    /// handshake be well-formed, and its `Origin` allowed (`host`: the request's `Host`, or
    /// for HTTP/2 its `:authority`).
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

/// Sets the headers that ask the upstream for the upgrade on its HTTP/1.1 hop (the normalise
/// layer removed them with the other hop-by-hop headers), with a fresh key for a handshake
/// that came over HTTP/2 (which has none). Extensions are never offered: the relay bounds
/// messages by their size on the wire, which a compressed message would get around.
pub fn restore_upgrade_headers(handshake: &Handshake, headers: &mut HeaderMap) {
    set_upgrade_headers(headers);
    if handshake.over_http2 {
        headers.remove(header::SEC_WEBSOCKET_KEY);
        if let Some(key) = fresh_key() {
            headers.insert(header::SEC_WEBSOCKET_KEY, key);
        }
    }
}

/// This hop's `Connection: upgrade` and `Upgrade: websocket`, without any extension (none is
/// ever negotiated through the gateway), on a handshake or on its 101.
pub fn set_upgrade_headers(headers: &mut HeaderMap) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, UPGRADE_WEBSOCKET);
    headers.remove(header::SEC_WEBSOCKET_EXTENSIONS);
}

/// A new `Sec-WebSocket-Key`: 16 random bytes in base64.
fn fresh_key() -> Option<HeaderValue> {
    use aws_lc_rs::rand::SecureRandom;
    use base64::Engine;
    let mut nonce = [0u8; 16];
    aws_lc_rs::rand::SystemRandom::new().fill(&mut nonce).ok()?;
    HeaderValue::from_str(&base64::engine::general_purpose::STANDARD.encode(nonce)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The head of an HTTP/1.1 handshake with `extra` headers set (replacing defaults).
    fn head(method: Method, version: Version, extra: &[(&str, &str)]) -> http::request::Parts {
        let mut builder = http::Request::builder()
            .method(method)
            .version(version)
            .uri("/ws");
        let defaults = [
            ("upgrade", "websocket"),
            ("connection", "keep-alive, Upgrade"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
        ];
        for (name, value) in defaults {
            if !extra.iter().any(|(n, _)| *n == name) {
                builder = builder.header(name, value);
            }
        }
        for (name, value) in extra {
            builder = builder.header(*name, *value);
        }
        builder
            .body(())
            .map(|r| r.into_parts().0)
            .unwrap_or_else(|_| http::Request::new(()).into_parts().0)
    }

    fn problem(parts: &http::request::Parts) -> Option<Option<&'static str>> {
        match detect(parts) {
            Asked::WebSocket(h) => Some(h.problem),
            _ => None,
        }
    }

    #[test]
    fn a_valid_handshake_is_recognised() {
        let parts = head(Method::GET, Version::HTTP_11, &[]);
        assert_eq!(problem(&parts), Some(None));
        let plain = head(Method::GET, Version::HTTP_11, &[("upgrade", "h2c")]);
        assert!(matches!(detect(&plain), Asked::Nothing));
    }

    #[test]
    fn malformed_handshakes_are_named() {
        let bad = [
            head(
                Method::GET,
                Version::HTTP_11,
                &[("sec-websocket-key", "short")],
            ),
            head(
                Method::GET,
                Version::HTTP_11,
                &[("sec-websocket-key", "AAAAAAAAAAAAAAAAAAAAAAAAAAAA")],
            ),
            head(
                Method::GET,
                Version::HTTP_11,
                &[("sec-websocket-version", "8")],
            ),
            head(
                Method::GET,
                Version::HTTP_11,
                &[("connection", "keep-alive")],
            ),
            head(Method::GET, Version::HTTP_11, &[("content-length", "5")]),
            head(Method::POST, Version::HTTP_11, &[]),
            head(Method::GET, Version::HTTP_10, &[]),
        ];
        for parts in &bad {
            assert!(matches!(problem(parts), Some(Some(_))), "{parts:?}");
        }
    }

    #[test]
    fn extended_connect_is_the_http2_form() {
        let connect = |protocol: &'static str, version: &str| {
            let mut parts = http::Request::builder()
                .method(Method::CONNECT)
                .version(Version::HTTP_2)
                .uri("https://gw.test/ws")
                .header("sec-websocket-version", version)
                .body(())
                .map(|r| r.into_parts().0)
                .unwrap_or_else(|_| http::Request::new(()).into_parts().0);
            parts
                .extensions
                .insert(hyper::ext::Protocol::from_static(protocol));
            parts
        };
        let parts = connect("websocket", "13");
        let Asked::WebSocket(shake) = detect(&parts) else {
            unreachable!("a handshake")
        };
        assert!(shake.over_http2);
        assert_eq!(shake.problem, None);
        assert!(matches!(problem(&connect("websocket", "8")), Some(Some(_))));
        assert!(matches!(
            detect(&connect("connect-udp", "13")),
            Asked::OtherProtocol
        ));
        // The upstream's hop gets a fresh key.
        let mut headers = HeaderMap::new();
        restore_upgrade_headers(&shake, &mut headers);
        assert!(
            headers
                .get(header::SEC_WEBSOCKET_KEY)
                .is_some_and(|k| valid_key(k.as_bytes()))
        );
        assert_eq!(headers[header::UPGRADE], "websocket");
    }

    #[test]
    fn routes_and_origins_decide() {
        let parts = head(
            Method::GET,
            Version::HTTP_11,
            &[("origin", "https://App.example.test")],
        );
        let Asked::WebSocket(shake) = detect(&parts) else {
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
        let parts = head(Method::GET, Version::HTTP_11, &[]);
        let Asked::WebSocket(shake) = detect(&parts) else {
            unreachable!("a handshake")
        };
        assert_eq!(reason(shake.check(Some(&other), host)), None);
    }
}
