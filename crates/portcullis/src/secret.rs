//! [`Secret`]: a value that must never reach a log line, an event, a panic message or a
//! `Debug` dump (admin tokens, client secrets, Redis URLs that carry a password).

use std::fmt;

/// A secret string. `Debug` and `Display` print `[redacted]`; the value is reached only
/// through [`Secret::expose`], where it is used.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that sends or compares it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Compares secrets (tokens, thumbprints, states) without revealing, through timing, how
/// much of a guess was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("hunter2");
        assert_eq!(
            format!("{secret} {secret:?} {:?}", Some(&secret)),
            "[redacted] Secret([redacted]) Some(Secret([redacted]))"
        );
        assert_eq!(secret.expose(), "hunter2");
    }
}
