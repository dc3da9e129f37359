//! gRPC calls on their way upstream: HTTP/2 with `te: trailers`, and the client's deadline
//! (`grpc-timeout`) honoured but never past the gateway's own bound.

use http::HeaderMap;
use http::header::{HeaderValue, TE};
use std::time::Duration;

const GRPC_TIMEOUT: &str = "grpc-timeout";

/// Prepares a call's headers and returns how long the gateway waits for the upstream's
/// answer: the client's deadline, at most `bound`. The upstream is told the same deadline.
pub fn prepare(headers: &mut HeaderMap, bound: Duration) -> Duration {
    // gRPC servers require it (the normalise layer removed it as hop-by-hop).
    headers.insert(TE, HeaderValue::from_static("trailers"));
    let asked = headers
        .get(GRPC_TIMEOUT)
        .and_then(|v| parse_timeout(v.as_bytes()));
    let timeout = asked.map_or(bound, |asked| asked.min(bound));
    // Milliseconds, rounded up so that the upstream never gets less than the gateway waits;
    // at most 8 digits, as the protocol allows.
    let millis = timeout
        .as_millis()
        .saturating_add(u128::from(timeout.subsec_nanos() % 1_000_000 != 0))
        .min(99_999_999);
    if let Ok(value) = HeaderValue::from_str(&format!("{millis}m")) {
        headers.insert(GRPC_TIMEOUT, value);
    }
    timeout
}

/// `grpc-timeout`: 1 to 8 digits and a unit (H, M, S, m, u, n); anything else is ignored,
/// as if no deadline had been sent.
fn parse_timeout(value: &[u8]) -> Option<Duration> {
    let (unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(amount.checked_mul(3600)?),
        b'M' => Duration::from_secs(amount.checked_mul(60)?),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_by_the_grammar() {
        assert_eq!(parse_timeout(b"5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_timeout(b"250m"), Some(Duration::from_millis(250)));
        assert_eq!(
            parse_timeout(b"99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
        assert_eq!(parse_timeout(b"1n"), Some(Duration::from_nanos(1)));
        for bad in [&b""[..], b"S", b"123456789S", b"5s", b"-5S", b"5 S", b"5"] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_deadline_is_bounded_and_passed_on() {
        let bound = Duration::from_secs(30);
        let mut headers = HeaderMap::new();
        headers.insert(GRPC_TIMEOUT, HeaderValue::from_static("100m"));
        assert_eq!(prepare(&mut headers, bound), Duration::from_millis(100));
        assert_eq!(headers[GRPC_TIMEOUT], "100m");
        assert_eq!(headers[TE], "trailers");
        headers.insert(GRPC_TIMEOUT, HeaderValue::from_static("2H"));
        assert_eq!(prepare(&mut headers, bound), bound);
        assert_eq!(headers[GRPC_TIMEOUT], "30000m");
        let mut none = HeaderMap::new();
        assert_eq!(prepare(&mut none, bound), bound);
        headers.insert(GRPC_TIMEOUT, HeaderValue::from_static("1500u"));
        assert_eq!(prepare(&mut headers, bound), Duration::from_micros(1500));
        assert_eq!(headers[GRPC_TIMEOUT], "2m");
    }
}
