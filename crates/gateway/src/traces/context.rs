//! W3C trace context: parsing an incoming `traceparent`, writing ids as hex, and the
//! sampling decision on a trace id.

use opentelemetry::trace::{SpanId, TraceId};

/// Writes `value`'s low `out.len()` hex digits (lowercase) into `out`.
pub(super) fn write_hex(out: &mut [u8], value: u128) {
    let digits = out.len();
    for (i, digit) in out.iter_mut().enumerate() {
        let shift = 4 * (digits - 1 - i);
        let nibble = ((value >> shift) & 0xf) as usize;
        *digit = b"0123456789abcdef".get(nibble).copied().unwrap_or(b'0');
    }
}

/// An incoming `traceparent` (parsed by the library's one strict parser) as ids.
pub(super) fn parse_traceparent(value: &str) -> Option<(TraceId, SpanId, bool)> {
    let parent = portcullis::request_id::parse_traceparent(value)?;
    let trace = TraceId::from_hex(parent.trace_id).ok()?;
    let span = SpanId::from_hex(parent.parent_id).ok()?;
    Some((trace, span, parent.sampled))
}

/// Whether a new trace is sampled: the trace id's low 63 bits against the ratio (the same
/// decision on every instance for the same id).
pub(super) fn sampled(trace: TraceId, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let low = (u128::from_be_bytes(trace.to_bytes()) as u64) >> 1;
    (low as f64) < ratio * (1u64 << 63) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_parsed_strictly() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (trace, span, sampled) = parse_traceparent(good).unwrap();
        assert_eq!(format!("{trace}"), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(format!("{span}"), "00f067aa0ba902b7");
        assert!(sampled);
        for bad in [
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn hex_is_written_in_place() {
        let mut out = [0u8; 4];
        write_hex(&mut out, 0xbeef);
        assert_eq!(&out, b"beef");
        let mut out = [0u8; 2];
        write_hex(&mut out, 1);
        assert_eq!(&out, b"01");
    }

    #[test]
    fn sampling_follows_the_ratio() {
        let ids = (0..10_000u128)
            .map(|i| TraceId::from(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)));
        let kept = ids.filter(|t| sampled(*t, 0.1)).count();
        assert!((800..1200).contains(&kept), "{kept}");
        assert!(sampled(TraceId::from(12345u128), 1.0));
        assert!(!sampled(TraceId::from(u128::MAX), 0.0));
    }
}
