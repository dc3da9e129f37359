//! Request normalisation: the first layer after the outermost one. It bounds the request
//! head, refuses ambiguous framing and paths, resolves the client address, rewrites the
//! path to its canonical form, strips hop-by-hop headers and guards the body stream.

use crate::denial::Denial;
use crate::framing::FramingViolation;
use crate::future::ResponseFuture;
use crate::net::TrustedProxies;
use crate::reason::{HeaderLimit, MalformedReason};
use crate::scope::{ClientIp, LocalAddr, PeerAddr, RequestScope};
use crate::timeout::BodyProgress;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, Request, Uri, header};
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::borrow::Cow;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
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
    if !peer.is_some_and(|p| settings.trusted_proxies.trusts(p.0.ip())) {
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

/// Headers describing the original request that only a trusted proxy may send (`Forwarded`
/// and `X-Forwarded-For`/`-Proto` are rewritten by the proxy for everyone else).
const FORWARDED_BY_PROXIES: [&str; 3] =
    ["x-forwarded-host", "x-forwarded-port", "x-forwarded-prefix"];

/// The `Host` rules (RFC 9112 §3.2, RFC 9113 §8.3.1): one `Host`, no userinfo, the same
/// authority as an absolute-form target (or `:authority`), and one of `listen.hosts` with
/// the listener's own port, when that list is set.
fn check_host(settings: &NormalizeSettings, parts: &http::request::Parts) -> Result<(), Denial> {
    let mut fields = parts.headers.get_all(header::HOST).iter();
    let host = fields.next();
    if fields.next().is_some() {
        return Err(malformed(
            MalformedReason::DuplicateHost,
            "several Host fields",
            true,
        ));
    }
    let host = match host {
        None => None,
        Some(value) => Some(value.to_str().map_err(|_| {
            malformed(
                MalformedReason::InvalidHost,
                "Host is not visible ASCII",
                true,
            )
        })?),
    };
    let authority = parts.uri.authority().map(|a| a.as_str());
    if host.is_some_and(|h| h.contains('@')) || authority.is_some_and(|a| a.contains('@')) {
        return Err(malformed(
            MalformedReason::UserinfoInHost,
            "userinfo in the host",
            true,
        ));
    }
    if let (Some(host), Some(authority)) = (host, authority)
        && !host.eq_ignore_ascii_case(authority)
    {
        return Err(malformed(
            MalformedReason::HostMismatch,
            "Host differs from the request target's authority",
            true,
        ));
    }
    if settings.hosts.is_empty() {
        return Ok(());
    }
    let named = host.or(authority).unwrap_or_default();
    let misdirected = || Denial::MisdirectedRequest {
        host: crate::problem::truncated(named, 128).to_string(),
    };
    let (name, port) = split_host_port(named).ok_or_else(misdirected)?;
    let local_port = parts.extensions.get::<LocalAddr>().map(|a| a.0.port());
    let port_ok = port.is_none() || port == local_port;
    let name_ok = settings
        .hosts
        .iter()
        .any(|h| h.trim_matches(['[', ']']).eq_ignore_ascii_case(name));
    if name_ok && port_ok {
        Ok(())
    } else {
        Err(misdirected())
    }
}

/// `host[:port]` (brackets around IPv6 literals removed); `None` if the port is not a
/// number.
fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let (name, port) = match authority.strip_prefix('[') {
        Some(rest) => {
            let (name, after) = rest.split_once(']')?;
            (name, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (authority, None),
        },
    };
    let port = match port {
        None => None,
        Some(p) => Some(p.parse::<u16>().ok()?),
    };
    (!name.is_empty()).then_some((name, port))
}

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

fn with_path(uri: &Uri, path: &str) -> Result<Uri, Denial> {
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().map_err(|_| {
        malformed(
            MalformedReason::InvalidPath,
            "path not representable",
            false,
        )
    })?);
    Uri::from_parts(parts).map_err(|_| {
        malformed(
            MalformedReason::InvalidPath,
            "path not representable",
            false,
        )
    })
}

/// The canonical form of a request path, or the reason it is refused.
///
/// Percent-encoded unreserved characters are decoded (other escapes are kept, in upper
/// case), `.` and `..` segments are resolved and repeated slashes merged. Refused: encoded
/// slashes or backslashes, raw backslashes, NUL and other control characters, `;` path
/// parameters, escapes that do not decode to valid UTF-8 (overlong forms included), and any
/// path that would climb above the root.
pub fn canonical_path(path: &str) -> Result<Cow<'_, str>, Denial> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(malformed(
            MalformedReason::NotOriginForm,
            "path does not start with /",
            false,
        ));
    }
    let needs_work = path.contains("//")
        || path.contains("/.")
        || bytes
            .iter()
            .any(|b| matches!(b, b'%' | b'\\' | b';') || b.is_ascii_control() || !b.is_ascii());
    if !needs_work {
        return Ok(Cow::Borrowed(path));
    }
    let mut out = String::with_capacity(path.len());
    let mut decoded = Vec::with_capacity(path.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'\\' => {
                return Err(malformed(
                    MalformedReason::Backslash,
                    "backslash in path",
                    false,
                ));
            }
            b';' => {
                return Err(malformed(
                    MalformedReason::PathParameter,
                    "; path parameter",
                    false,
                ));
            }
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|h| (*h as char).to_digit(16));
                let lo = bytes.get(i + 2).and_then(|h| (*h as char).to_digit(16));
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(malformed(
                        MalformedReason::BadPercentEncoding,
                        "truncated % escape",
                        false,
                    ));
                };
                let v = (hi * 16 + lo) as u8;
                match v {
                    b'/' => {
                        return Err(malformed(
                            MalformedReason::EncodedSlash,
                            "%2F in path",
                            false,
                        ));
                    }
                    b'\\' => {
                        return Err(malformed(
                            MalformedReason::EncodedBackslash,
                            "%5C in path",
                            false,
                        ));
                    }
                    0 => return Err(malformed(MalformedReason::NulByte, "NUL in path", false)),
                    v if v.is_ascii_control() => {
                        return Err(malformed(
                            MalformedReason::ControlCharacter,
                            "control character in path",
                            false,
                        ));
                    }
                    v if is_unreserved(v) => out.push(v as char),
                    v => {
                        out.push('%');
                        out.push(hex_upper(v >> 4));
                        out.push(hex_upper(v & 0x0f));
                    }
                }
                decoded.push(v);
                i += 3;
            }
            b if b.is_ascii_control() => {
                return Err(malformed(
                    MalformedReason::ControlCharacter,
                    "control character in path",
                    false,
                ));
            }
            // A raw byte outside ASCII (part of a UTF-8 character) is percent-encoded, as
            // RFC 3986 writes it: pushing it as a char would turn it into another character.
            b if !b.is_ascii() => {
                out.push('%');
                out.push(hex_upper(b >> 4));
                out.push(hex_upper(b & 0x0f));
                decoded.push(b);
                i += 1;
            }
            b => {
                out.push(b as char);
                decoded.push(b);
                i += 1;
            }
        }
    }
    if std::str::from_utf8(&decoded).is_err() {
        return Err(malformed(
            MalformedReason::InvalidUtf8,
            "escapes are not valid UTF-8",
            false,
        ));
    }
    resolve_dot_segments(&out).map(Cow::Owned)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_upper(nibble: u8) -> char {
    char::from_digit(u32::from(nibble), 16).map_or('0', |c| c.to_ascii_uppercase())
}

/// RFC 3986 §5.2.4 dot-segment removal, refusing (rather than clamping) a climb above the
/// root, and merging empty segments.
fn resolve_dot_segments(path: &str) -> Result<String, Denial> {
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in path.split('/').skip(1) {
        trailing_slash = false;
        match segment {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                if segments.pop().is_none() {
                    return Err(malformed(
                        MalformedReason::EscapesRoot,
                        "path climbs above the root",
                        false,
                    ));
                }
                trailing_slash = true;
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

/// Set by [`GuardedBody`] when it cuts a body short, so that the layer that sees the
/// resulting transport error can answer with the right refusal.
#[derive(Debug, Clone)]
pub struct BodyTrip {
    state: Arc<AtomicU8>,
    limit: u64,
}

const TRIP_NONE: u8 = 0;
const TRIP_TOO_LARGE: u8 = 1;
const TRIP_TIMEOUT: u8 = 2;

impl BodyTrip {
    fn new(limit: u64) -> Self {
        BodyTrip {
            state: Arc::default(),
            limit,
        }
    }

    /// The byte limit the guard enforces.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The refusal the body guard made, if it made one.
    pub fn tripped(&self) -> Option<Denial> {
        match self.state.load(Ordering::Acquire) {
            TRIP_TOO_LARGE => Some(Denial::BodyTooLarge { limit: self.limit }),
            TRIP_TIMEOUT => Some(Denial::BodyTimeout),
            _ => None,
        }
    }

    fn set(&self, kind: u8) {
        let _ = self
            .state
            .compare_exchange(TRIP_NONE, kind, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// Why [`GuardedBody`] stopped a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyGuardError {
    /// More bytes than allowed.
    #[error("request body over the size limit")]
    TooLarge,
    /// Slower than allowed.
    #[error("request body too slow")]
    Timeout,
}

pin_project_lite::pin_project! {
    /// A request body that stops with an error once it exceeds a byte limit or a deadline,
    /// while streaming: nothing is buffered.
    pub struct GuardedBody<B> {
        #[pin]
        inner: B,
        remaining: u64,
        timeout: Duration,
        deadline: Option<Pin<Box<tokio::time::Sleep>>>,
        trip: BodyTrip,
        progress: Option<BodyProgress>,
    }
}

impl<B> GuardedBody<B> {
    /// Guards `inner` with the trip's byte limit and a total read time.
    pub fn new(inner: B, timeout: Duration, trip: BodyTrip) -> Self {
        GuardedBody {
            inner,
            remaining: trip.limit,
            timeout,
            deadline: None,
            trip,
            progress: None,
        }
    }
}

impl<B: HttpBody> GuardedBody<B> {
    /// Reports to `progress` whether the body is awaited from the client, and when it is
    /// complete.
    pub fn with_progress(mut self, progress: Option<BodyProgress>) -> Self {
        if let Some(progress) = &progress
            && self.inner.is_end_stream()
        {
            progress.complete();
        }
        self.progress = progress;
        self
    }
}

impl<B> HttpBody for GuardedBody<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<crate::BoxError>,
{
    type Data = Bytes;
    type Error = crate::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        // The clock starts when the body is first read, not when the head arrived.
        let timeout = *this.timeout;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > *this.remaining {
                        this.trip.set(TRIP_TOO_LARGE);
                        return Poll::Ready(Some(Err(Box::new(BodyGuardError::TooLarge))));
                    }
                    *this.remaining -= len;
                }
                if let Some(progress) = this.progress.as_ref() {
                    if this.inner.is_end_stream() {
                        progress.complete();
                    } else {
                        progress.received();
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => {
                if let Some(progress) = this.progress.as_ref() {
                    progress.complete();
                }
                Poll::Ready(None)
            }
            Poll::Pending => {
                if let Some(progress) = this.progress.as_ref() {
                    progress.waiting();
                }
                if deadline.as_mut().poll(cx).is_ready() {
                    this.trip.set(TRIP_TIMEOUT);
                    return Poll::Ready(Some(Err(Box::new(BodyGuardError::Timeout))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

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
