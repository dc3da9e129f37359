//! Request normalisation: the first layer after the outermost one. It bounds the request
//! head, refuses ambiguous framing and paths, resolves the client address, rewrites the
//! path to its canonical form, strips hop-by-hop headers and guards the body stream.

mod body_guard;
mod host;
mod path;

pub use body_guard::{BodyGuardError, BodyTrip, GuardedBody};
pub use path::canonical_path;

use host::check_host;
use path::with_path;

use crate::denial::Denial;
use crate::framing::FramingViolation;
use crate::future::ResponseFuture;
use crate::net::TrustedProxies;
use crate::reason::{HeaderLimit, MalformedReason};
use crate::scope::{ClientIp, PeerAddr, RequestScope};
use crate::timeout::BodyProgress;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, Request, header};
use http_body::Body as HttpBody;
use std::borrow::Cow;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{Layer, Service};

/// Limits and trust settings for [`NormalizeLayer`].
#[derive(Debug, Clone)]
pub struct NormalizeSettings {
    /// Longest request target (path and query) in bytes → 414.
    pub max_uri_bytes: usize,
    /// Largest header section (names, values and separators) in bytes → 431.
    pub max_header_bytes: usize,
    /// Most header fields → 431.
    pub max_header_count: usize,
    /// Largest request body, counted while streaming → 413.
    pub max_body_bytes: u64,
    /// Longest time the client may take to send the body → 408.
    pub body_read_timeout: Duration,
    /// Peers whose `X-Forwarded-For` (and `X-Forwarded-Host`, `Forwarded`) is believed.
    pub trusted_proxies: TrustedProxies,
    /// The host names this listener serves (`listen.hosts`); empty: any. Another `Host` or
    /// `:authority` → 421.
    pub hosts: Vec<String>,
    /// The header in which a trusted proxy forwards the client's certificate
    /// (`listen.client_cert_header`): read into the request's client identity when a trusted
    /// proxy sends it, removed when anyone else does.
    pub client_cert_header: Option<HeaderName>,
}

impl Default for NormalizeSettings {
    fn default() -> Self {
        NormalizeSettings {
            max_uri_bytes: 8192,
            max_header_bytes: 16384,
            max_header_count: 100,
            max_body_bytes: 1024 * 1024,
            body_read_timeout: Duration::from_secs(30),
            trusted_proxies: TrustedProxies::default(),
            hosts: Vec::new(),
            client_cert_header: None,
        }
    }
}

/// Applies [`NormalizeSettings`] to every request.
#[derive(Debug, Clone)]
pub struct NormalizeLayer {
    settings: Arc<NormalizeSettings>,
}

impl NormalizeLayer {
    /// A layer with these settings.
    pub fn new(settings: Arc<NormalizeSettings>) -> Self {
        NormalizeLayer { settings }
    }
}

impl<S> Layer<S> for NormalizeLayer {
    type Service = Normalize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Normalize {
            inner,
            settings: self.settings.clone(),
        }
    }
}

/// The service produced by [`NormalizeLayer`].
#[derive(Debug, Clone)]
pub struct Normalize<S> {
    inner: S,
    settings: Arc<NormalizeSettings>,
}

impl<S, B, R> Service<Request<B>> for Normalize<S>
where
    S: Service<Request<GuardedBody<B>>, Response = R, Error = Denial>,
    B: HttpBody<Data = Bytes>,
{
    type Response = R;
    type Error = Denial;
    type Future = ResponseFuture<S::Future, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        match prepare(&self.settings, req) {
            Ok(req) => ResponseFuture::inner(self.inner.call(req)),
            Err(denial) => ResponseFuture::denied(denial),
        }
    }
}

fn malformed(reason: MalformedReason, detail: impl Into<String>, close: bool) -> Denial {
    Denial::Malformed {
        reason,
        detail: detail.into(),
        close,
    }
}

/// The whole check-and-rewrite step, cheapest checks first.
fn prepare<B>(
    settings: &NormalizeSettings,
    req: Request<B>,
) -> Result<Request<GuardedBody<B>>, Denial>
where
    B: HttpBody<Data = Bytes>,
{
    let (mut parts, body) = req.into_parts();
    let target_len = parts.uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if target_len > settings.max_uri_bytes {
        return Err(Denial::UriTooLong {
            length: target_len,
            limit: settings.max_uri_bytes,
        });
    }
    check_header_size(settings, &parts.headers)?;
    if let Some(FramingViolation(reason)) = parts.extensions.get::<FramingViolation>() {
        return Err(malformed(
            *reason,
            "ambiguous message framing on the wire",
            true,
        ));
    }
    let declared_length = check_framing(&parts.headers)?;
    check_host(settings, &parts)?;
    let peer = parts.extensions.get::<PeerAddr>().copied();
    if let Some(scope) = parts.extensions.get::<Arc<RequestScope>>().cloned()
        && let Some(PeerAddr(peer)) = peer
    {
        let ip = settings
            .trusted_proxies
            .client_ip(peer.ip(), &parts.headers);
        scope.set_client_ip(ip);
        parts.extensions.insert(ClientIp(ip));
    }
    let from_proxy = peer.is_some_and(|p| settings.trusted_proxies.trusts(p.0.ip()));
    if let Some(name) = &settings.client_cert_header {
        forwarded_identity(name, from_proxy, &mut parts)?;
    }
    if !from_proxy {
        // What only a proxy in front may say about the original request (its host, port
        // and prefix) is not taken from anyone else: it could forge password-reset links.
        for name in FORWARDED_BY_PROXIES {
            parts.headers.remove(name);
        }
    }
    if parts.uri.path() == "*" && parts.method == http::Method::OPTIONS {
        // `OPTIONS *` asks about the server as a whole: there is no resource to route to.
        return Err(Denial::NoRoute);
    }
    let canonical = canonical_path(parts.uri.path())?;
    if let Cow::Owned(path) = canonical {
        parts.uri = with_path(&parts.uri, &path)?;
    }
    // Recognised before the hop-by-hop headers go: the router decides whether the route
    // takes it, the proxy asks the upstream for it again.
    match crate::websocket::detect(&parts) {
        crate::websocket::Asked::Nothing => {}
        crate::websocket::Asked::WebSocket(handshake) => {
            if handshake.over_http2 {
                // RFC 8441's CONNECT is the HTTP/1.1 handshake's GET: routes, policies and
                // the API contract see one method for both.
                parts.method = http::Method::GET;
            }
            parts.extensions.insert(handshake);
        }
        crate::websocket::Asked::OtherProtocol => {
            return Err(malformed(
                MalformedReason::UnsupportedProtocol,
                "extended CONNECT for a protocol other than websocket",
                false,
            ));
        }
    }
    strip_hop_by_hop(&mut parts.headers);
    if let Some(length) = declared_length
        && length > settings.max_body_bytes
    {
        return Err(Denial::BodyTooLarge {
            limit: settings.max_body_bytes,
        });
    }
    let trip = BodyTrip::new(settings.max_body_bytes);
    parts.extensions.insert(trip.clone());
    let progress = parts.extensions.get::<BodyProgress>().cloned();
    let body = GuardedBody::new(body, settings.body_read_timeout, trip).with_progress(progress);
    Ok(Request::from_parts(parts, body))
}

/// The client certificate a trusted proxy forwards replaces the connection's identity (which,
/// if any, is the proxy's own); one it cannot have sent is refused loudly rather than
/// ignored, since bound tokens and identity rules would silently stop matching.
fn forwarded_identity(
    name: &HeaderName,
    from_proxy: bool,
    parts: &mut http::request::Parts,
) -> Result<(), Denial> {
    if !from_proxy {
        parts.headers.remove(name);
        return Ok(());
    }
    if !parts.headers.contains_key(name) {
        return Ok(());
    }
    let values = parts.headers.get_all(name).iter().map(|v| v.as_bytes());
    let now = i64::try_from(crate::authn::now_secs() as u64).unwrap_or(i64::MAX);
    match crate::authn::forwarded_cert::read(values, now) {
        Ok(identity) => {
            parts.extensions.insert(Arc::new(identity));
            Ok(())
        }
        Err(e) => Err(malformed(
            MalformedReason::ForwardedClientCert,
            format!("{name}: {e}"),
            false,
        )),
    }
}

/// Headers describing the original request that only a trusted proxy may send (`Forwarded`
/// and `X-Forwarded-For`/`-Proto` are rewritten by the proxy for everyone else).
const FORWARDED_BY_PROXIES: [&str; 3] =
    ["x-forwarded-host", "x-forwarded-port", "x-forwarded-prefix"];

fn check_header_size(settings: &NormalizeSettings, headers: &HeaderMap) -> Result<(), Denial> {
    if headers.len() > settings.max_header_count {
        return Err(Denial::HeadersTooLarge {
            reason: HeaderLimit::Count,
        });
    }
    // name + ": " + value + CRLF, as on the wire in HTTP/1.1.
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if bytes > settings.max_header_bytes {
        return Err(Denial::HeadersTooLarge {
            reason: HeaderLimit::Bytes,
        });
    }
    Ok(())
}

/// Refuses framing that two HTTP parsers could read differently (request smuggling) and
/// returns the declared body length, if any.
fn check_framing(headers: &HeaderMap) -> Result<Option<u64>, Denial> {
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    let first = lengths.next();
    if lengths.next().is_some() {
        return Err(malformed(
            MalformedReason::DuplicateContentLength,
            "several Content-Length fields",
            true,
        ));
    }
    if first.is_some() && headers.contains_key(header::TRANSFER_ENCODING) {
        return Err(malformed(
            MalformedReason::ContentLengthAndTransferEncoding,
            "both Content-Length and Transfer-Encoding",
            true,
        ));
    }
    match first {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| {
                malformed(
                    MalformedReason::InvalidContentLength,
                    "unparsable Content-Length",
                    true,
                )
            }),
    }
}

/// Headers that describe one connection, never the message: never forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers and every header that `Connection` names (both ways).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}
/// Set by [`GuardedBody`] when it cuts a body short, so that the layer that sees the
#[cfg(test)]
mod tests {
    use super::*;

    fn canon(path: &str) -> Result<String, &'static str> {
        canonical_path(path)
            .map(|c| c.into_owned())
            .map_err(|d| d.reason())
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(canon("/api/items"), Ok("/api/items".into()));
        assert_eq!(canon("/api/./items"), Ok("/api/items".into()));
        assert_eq!(canon("/api/x/../items"), Ok("/api/items".into()));
        assert_eq!(canon("/api//items"), Ok("/api/items".into()));
        assert_eq!(canon("/api/%69tems"), Ok("/api/items".into()));
        assert_eq!(canon("/api/%2e%2E/api/items"), Ok("/api/items".into()));
        assert_eq!(canon("/api/items/"), Ok("/api/items/".into()));
        assert_eq!(canon("/api/items/a/.."), Ok("/api/items/".into()));
        assert_eq!(canon("/a%20b"), Ok("/a%20b".into()));
        assert_eq!(canon("/a%c3%a9"), Ok("/a%C3%A9".into()));
        assert_eq!(canon("/"), Ok("/".into()));
    }

    #[test]
    fn raw_utf8_is_percent_encoded_once() {
        // Found by the normalize_path fuzz target: raw UTF-8 was pushed byte by byte as
        // characters, so the path changed, and changed again on a second pass.
        let input = "/pai//.c/./i/it\u{41e}d/pn";
        let once = canon(input).unwrap();
        assert_eq!(once, "/pai/.c/i/it%D0%9Ed/pn");
        assert_eq!(canon(&once), Ok(once.clone()));
        assert_eq!(canon("/caf\u{e9}"), Ok("/caf%C3%A9".into()));
    }

    #[test]
    fn refusals() {
        assert_eq!(canon("/api/..%2f..%2fetc"), Err("encoded_slash"));
        assert_eq!(canon("/api/%5cx"), Err("encoded_backslash"));
        assert_eq!(canon("/api\\x"), Err("backslash"));
        assert_eq!(canon("/api/%00"), Err("nul_byte"));
        assert_eq!(canon("/api/%0a"), Err("control_character"));
        assert_eq!(canon("/api;jsessionid=1/x"), Err("path_parameter"));
        assert_eq!(canon("/%c0%af"), Err("invalid_utf8"));
        assert_eq!(canon("/%e0%80%af"), Err("invalid_utf8"));
        assert_eq!(canon("/%ff"), Err("invalid_utf8"));
        assert_eq!(canon("/../etc/passwd"), Err("escapes_root"));
        assert_eq!(canon("/a/../../b"), Err("escapes_root"));
        assert_eq!(canon("/%2e%2e/x"), Err("escapes_root"));
        assert_eq!(canon("/%2"), Err("bad_percent_encoding"));
        assert_eq!(canon("*"), Err("not_origin_form"));
    }

    #[test]
    fn canonicalisation_is_idempotent_on_samples() {
        for path in ["/a/./b/../c//d/", "/%7euser/%41", "/x/%2e/y", "/a%25b"] {
            let once = canon(path).unwrap_or_default();
            assert_eq!(canon(&once), Ok(once.clone()), "{path}");
        }
    }

    #[test]
    fn framing_ambiguities_refused() {
        let mut headers = HeaderMap::new();
        headers.append(header::CONTENT_LENGTH, http::HeaderValue::from_static("5"));
        headers.append(header::CONTENT_LENGTH, http::HeaderValue::from_static("5"));
        assert_eq!(
            check_framing(&headers).map_err(|d| d.reason()),
            Err("duplicate_content_length")
        );
        let mut headers = HeaderMap::new();
        headers.append(header::CONTENT_LENGTH, http::HeaderValue::from_static("5"));
        headers.append(
            header::TRANSFER_ENCODING,
            http::HeaderValue::from_static("chunked"),
        );
        assert_eq!(
            check_framing(&headers).map_err(|d| d.reason()),
            Err("content_length_and_transfer_encoding")
        );
    }

    #[test]
    fn connection_named_headers_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            http::HeaderValue::from_static("close, x-secret"),
        );
        headers.insert("x-secret", http::HeaderValue::from_static("1"));
        headers.insert("keep-alive", http::HeaderValue::from_static("timeout=5"));
        headers.insert("x-kept", http::HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-kept"));
    }

    #[tokio::test]
    async fn refusals_never_reach_the_inner_service() {
        use crate::test_support::{Counting, request};
        use tower::{ServiceBuilder, ServiceExt};
        let stub = Counting::default();
        let settings = NormalizeSettings {
            hosts: vec!["api.test".into()],
            ..NormalizeSettings::default()
        };
        let service = ServiceBuilder::new()
            .layer(NormalizeLayer::new(Arc::new(settings)))
            .service(stub.clone());
        let with_host = |uri: &str, hosts: &[&str]| {
            let mut req = request("GET", uri);
            for host in hosts {
                req.headers_mut()
                    .append(header::HOST, http::HeaderValue::from_str(host).unwrap());
            }
            req
        };
        for (req, reason) in [
            (with_host("/../etc/passwd", &["api.test"]), "escapes_root"),
            (with_host("/a%2fb", &["api.test"]), "encoded_slash"),
            (
                with_host("/ok", &["api.test", "evil.test"]),
                "duplicate_host",
            ),
            (with_host("/ok", &["user@api.test"]), "userinfo_in_host"),
            (with_host("/ok", &["evil.test"]), "host_not_allowed"),
        ] {
            let refused = service.clone().oneshot(req).await.err().map(|d| d.reason());
            assert_eq!(refused, Some(reason));
        }
        assert_eq!(stub.calls(), 0, "a refusal reached the inner service");
        let mut allowed = with_host("/a/./b", &["API.test"]);
        allowed.headers_mut().insert(
            "x-forwarded-host",
            http::HeaderValue::from_static("evil.test"),
        );
        assert!(service.clone().oneshot(allowed).await.is_ok());
        assert_eq!(stub.calls(), 1);
    }
}
