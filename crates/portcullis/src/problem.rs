//! What a refusal tells the client and the operator about a request, beyond its status: the
//! field errors of a 400, their one-line summary for the event, and the bound on any text
//! the client chose that is echoed back. A leaf: it depends on nothing else in the crate.

use serde::Serialize;

/// One way a request breaks the contract, as the client sees it (SPEC §3): where, a short
/// code, and a generic message that never repeats the value sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// A JSON pointer into the body, or `query.name`, `header.name`, `path.name`,
    /// `cookie.name`.
    pub field: String,
    /// What is wrong, e.g. `required`, `type`, `unknown_property`.
    pub message: String,
    /// A machine-readable code.
    pub code: &'static str,
}

/// Most errors reported for one request (the first ones found).
pub(crate) const MAX_ERRORS: usize = 10;

/// Longest `field` sent back: it can hold names the client chose.
pub(crate) const MAX_FIELD_BYTES: usize = 128;

impl FieldError {
    pub(crate) fn new(field: String, code: &'static str, message: String) -> Self {
        let field = match field.len() > MAX_FIELD_BYTES {
            true => truncated(&field, MAX_FIELD_BYTES).to_string(),
            false => field,
        };
        FieldError {
            field,
            message,
            code,
        }
    }
}

/// `field code` pairs, for the operator.
pub fn describe(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                if e.field.is_empty() {
                    "(body)"
                } else {
                    &e.field
                },
                e.code
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// At most `max` bytes of `text`, cut at a character boundary.
pub fn truncated(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}
