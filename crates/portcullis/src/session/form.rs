//! `application/x-www-form-urlencoded` for the login flow: encoding the token endpoint's
//! form and the authorization URL's query, and reading the callback's query.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// Everything but the unreserved characters of RFC 3986 is escaped.
const ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Most query parameters read (a bound on work).
const MAX_PARAMS: usize = 32;

/// One value, escaped.
pub fn encode(value: &str) -> String {
    utf8_percent_encode(value, ESCAPED).to_string()
}

/// `name=value&...`, each escaped.
pub fn encode_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (name, value) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(&encode(name));
        out.push('=');
        out.push_str(&encode(value));
    }
    out
}

/// The decoded value of the one parameter `name` in `query`; `None` when it is absent,
/// repeated (an ambiguous callback is not guessed at), or not UTF-8.
pub fn param(query: Option<&str>, name: &str) -> Option<String> {
    let mut found = None;
    for pair in query?.split('&').take(MAX_PARAMS) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if decode(key)? != name {
            continue;
        }
        if found.is_some() {
            return None;
        }
        found = Some(decode(value)?);
    }
    found
}

fn decode(text: &str) -> Option<String> {
    let spaced = text.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_repeats() {
        let query = encode_pairs([("code", "a b/c+d"), ("state", "x~y")]);
        assert_eq!(query, "code=a%20b%2Fc%2Bd&state=x~y");
        assert_eq!(param(Some(&query), "code").as_deref(), Some("a b/c+d"));
        assert_eq!(param(Some("a=1+2"), "a").as_deref(), Some("1 2"));
        assert_eq!(param(Some("state=1&state=2"), "state"), None);
        assert_eq!(param(Some("x=1"), "state"), None);
        assert_eq!(param(None, "state"), None);
        assert_eq!(param(Some("a=%FF"), "a"), None);
    }
}
