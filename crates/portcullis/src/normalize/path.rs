//! Path canonicalisation: one spelling per path, or a refusal for what two servers could
//! read differently (encoded slashes, dot segments above the root, bad escapes).

use super::malformed;
use crate::denial::Denial;
use crate::reason::MalformedReason;
use http::Uri;
use std::borrow::Cow;

pub(super) fn with_path(uri: &Uri, path: &str) -> Result<Uri, Denial> {
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
