//! RFC 3339 timestamps without a calendar dependency.

use std::time::{SystemTime, UNIX_EPOCH};

/// The current UTC time as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn now_rfc3339() -> String {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format_unix_millis(since_epoch.as_millis())
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Formats milliseconds since the Unix epoch as an RFC 3339 UTC timestamp.
pub fn format_unix_millis(millis: u128) -> String {
    let secs = i64::try_from(millis / 1000).unwrap_or(i64::MAX);
    let ms = (millis % 1000) as u32;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400) as u32;
    let (year, month, day) = civil_from_days(days);
    let Some(year) = u32::try_from(year).ok().filter(|y| *y <= 9999) else {
        // Beyond four-digit years: rare enough for the general formatter.
        return format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            rem / 3600,
            (rem % 3600) / 60,
            rem % 60
        );
    };
    // Every event and decision carries one: digits written directly, not through format!.
    let mut out = String::with_capacity(24);
    let mut digits = |value: u32, width: u32, then: Option<char>| {
        let mut divisor = 10u32.pow(width.saturating_sub(1));
        while divisor > 0 {
            out.push(char::from(b'0' + ((value / divisor) % 10) as u8));
            divisor /= 10;
        }
        out.extend(then);
    };
    digits(year, 4, Some('-'));
    digits(month, 2, Some('-'));
    digits(day, 2, Some('T'));
    digits(rem / 3600, 2, Some(':'));
    digits((rem % 3600) / 60, 2, Some(':'));
    digits(rem % 60, 2, Some('.'));
    digits(ms, 3, Some('Z'));
    out
}

/// Converts days since 1970-01-01 into a proleptic Gregorian (year, month, day).
/// The era-based method works on 400-year cycles, so it needs no tables.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_unix_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_unix_millis(951_782_400_123),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(
            format_unix_millis(1_795_860_000_123),
            "2026-11-28T10:00:00.123Z"
        );
        assert_eq!(
            format_unix_millis(253_402_300_799_999),
            "9999-12-31T23:59:59.999Z"
        );
        assert_eq!(
            format_unix_millis(253_402_300_800_000),
            "10000-01-01T00:00:00.000Z"
        );
    }
}
