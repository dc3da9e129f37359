//! [`RequestId`]: the correlation id every response, upstream request and event carries.

use http::HeaderMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The header that carries the request id both ways.
pub const HEADER: &str = "x-request-id";

/// Longest incoming `x-request-id` that is reused rather than replaced.
const MAX_INCOMING_LEN: usize = 128;

/// A request's correlation id: reused from a well-formed incoming `x-request-id` or
/// `traceparent`, otherwise freshly generated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(Arc<str>);

impl RequestId {
    /// Picks the id for a request with these headers.
    pub fn for_headers(headers: &HeaderMap) -> RequestId {
        if let Some(id) = headers
            .get(HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| is_well_formed(v))
        {
            return RequestId(Arc::from(id));
        }
        if let Some(trace_id) = headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(trace_id_of)
        {
            return RequestId(Arc::from(trace_id));
        }
        RequestId::generate()
    }

    /// A new, unique id (32 lowercase hex digits).
    pub fn generate() -> RequestId {
        static SEED: OnceLock<RandomState> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let seed = SEED.get_or_init(RandomState::new);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        // Two independently keyed hashes of a process-wide counter: unique within the
        // process, and not guessable across processes (the keys come from the OS).
        let high = seed.hash_one((n, 0x5eed_u16));
        let low = seed.hash_one((n, 0xface_u16));
        let mut hex = [0u8; 32];
        for (i, digit) in hex.iter_mut().enumerate() {
            let word = if i < 16 { high } else { low };
            let nibble = (word >> (60 - 4 * (i % 16))) & 0xf;
            *digit = b"0123456789abcdef"
                .get(nibble as usize)
                .copied()
                .unwrap_or(b'0');
        }
        RequestId(Arc::from(std::str::from_utf8(&hex).unwrap_or_default()))
    }

    /// Wraps an id the caller already knows to be well formed.
    pub fn from_trusted(id: &str) -> RequestId {
        RequestId(Arc::from(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An incoming id is reused only if it cannot inject anything into logs or headers.
fn is_well_formed(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_INCOMING_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The fields of a W3C `traceparent` (`<version>-<32 hex trace id>-<16 hex parent id>-<2 hex
/// flags>`), as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent<'a> {
    /// The trace id (32 lowercase hex digits, not all zero).
    pub trace_id: &'a str,
    /// The parent span id (16 lowercase hex digits, not all zero).
    pub parent_id: &'a str,
    /// The sampled flag.
    pub sampled: bool,
}

/// Parses a `traceparent` strictly: lowercase hex, non-zero ids, version `ff` refused, and
/// version `00` with exactly four fields (later versions may append fields).
pub fn parse_traceparent(value: &str) -> Option<TraceParent<'_>> {
    let mut parts = value.trim().split('-');
    let (version, trace_id, parent_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let is_hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    let valid = is_hex(version, 2)
        && version != "ff"
        && !(version == "00" && parts.next().is_some())
        && is_hex(trace_id, 32)
        && nonzero(trace_id)
        && is_hex(parent_id, 16)
        && nonzero(parent_id)
        && is_hex(flags, 2);
    let flags = u8::from_str_radix(flags, 16).ok().filter(|_| valid)?;
    Some(TraceParent {
        trace_id,
        parent_id,
        sampled: flags & 1 == 1,
    })
}

fn trace_id_of(traceparent: &str) -> Option<&str> {
    parse_traceparent(traceparent).map(|t| t.trace_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(name: &'static str, value: &'static str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(name, HeaderValue::from_static(value));
        map
    }

    #[test]
    fn reuses_well_formed_incoming_id() {
        let id = RequestId::for_headers(&headers(HEADER, "req-123.abc"));
        assert_eq!(id.as_str(), "req-123.abc");
    }

    #[test]
    fn replaces_id_that_could_inject() {
        let id = RequestId::for_headers(&headers(HEADER, "a b\"c"));
        assert_eq!(id.as_str().len(), 32);
        assert_ne!(id.as_str(), "a b\"c");
    }

    #[test]
    fn takes_trace_id_from_traceparent() {
        let id = RequestId::for_headers(&headers(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ));
        assert_eq!(id.as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let zero = RequestId::for_headers(&headers(
            "traceparent",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ));
        assert_ne!(zero.as_str(), "00000000000000000000000000000000");
    }

    #[test]
    fn generated_ids_are_unique() {
        let a = RequestId::generate();
        let b = RequestId::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 32);
    }
}
