//! The gateway's browser cookies: their names, the exact attributes they are set with, and
//! reading them from (and removing them from) a request's `Cookie` fields.

use http::{HeaderMap, HeaderValue, header};

/// The session cookie. The `__Host-` prefix makes browsers insist on `Secure`, `Path=/` and
/// no `Domain`, so neither a sibling subdomain nor plain http can plant or overwrite it.
pub const SESSION: &str = "__Host-portcullis";

/// The prefix of pending-login cookies (one per login in progress, named by its `state`).
pub const LOGIN_PREFIX: &str = "__Host-portcullis-login-";

/// Most cookie pairs read from one request (a bound on work, far above real use).
const MAX_PAIRS: usize = 128;

/// Whether `name` is one of the gateway's own cookies (never forwarded upstream).
pub fn is_gateway_cookie(name: &str) -> bool {
    name == SESSION || name.starts_with(LOGIN_PREFIX)
}

/// The request's cookie pairs, in order (at most [`MAX_PAIRS`]).
pub fn pairs(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            Some((name.trim(), value.trim().trim_matches('"')))
        })
        .take(MAX_PAIRS)
}

/// The value of the first cookie called `name`.
pub fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    pairs(headers).find(|(n, _)| *n == name).map(|(_, v)| v)
}

/// A `Set-Cookie` value with the attributes every gateway cookie has: `Path=/`, `Secure`,
/// `HttpOnly`, `SameSite=Lax` (sent on top-level navigations from the IdP back to the
/// callback, never on cross-site subrequests). `max_age` `None` is a browser-session cookie.
pub fn set(name: &str, value: &str, max_age: Option<u64>) -> Option<HeaderValue> {
    let mut text = format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Lax");
    if let Some(seconds) = max_age {
        text.push_str(&format!("; Max-Age={seconds}"));
    }
    HeaderValue::from_str(&text).ok()
}

/// A `Set-Cookie` value that deletes the cookie `name`.
pub fn clear(name: &str) -> Option<HeaderValue> {
    set(name, "", Some(0))
}

/// Removes every cookie for which `drop` says so from the request's `Cookie` fields (a
/// field left empty is removed).
pub fn strip(headers: &mut HeaderMap, drop: impl Fn(&str) -> bool) {
    let fields: Vec<HeaderValue> = headers.get_all(header::COOKIE).iter().cloned().collect();
    let touched = fields.iter().any(|v| {
        v.to_str().is_ok_and(|text| {
            text.split(';')
                .any(|pair| drop(pair.trim().split('=').next().unwrap_or_default().trim()))
        })
    });
    if !touched {
        return;
    }
    headers.remove(header::COOKIE);
    for value in fields {
        let Ok(text) = value.to_str() else {
            headers.append(header::COOKIE, value);
            continue;
        };
        let kept: Vec<&str> = text
            .split(';')
            .map(str::trim)
            .filter(|pair| !drop(pair.split('=').next().unwrap_or_default().trim()))
            .filter(|pair| !pair.is_empty())
            .collect();
        if !kept.is_empty()
            && let Ok(value) = HeaderValue::from_str(&kept.join("; "))
        {
            headers.append(header::COOKIE, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_strips_the_gateway_cookies_only() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; __Host-portcullis=sealed; a=1"),
        );
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-portcullis-login-abc=x"),
        );
        assert_eq!(get(&headers, SESSION), Some("sealed"));
        assert_eq!(get(&headers, "__Host-portcullis-login-abc"), Some("x"));
        strip(&mut headers, is_gateway_cookie);
        let left: Vec<_> = headers.get_all(header::COOKIE).iter().collect();
        assert_eq!(left, vec!["theme=dark; a=1"]);
        assert_eq!(get(&headers, SESSION), None);
    }

    #[test]
    fn attributes_are_exactly_the_contract() {
        assert_eq!(
            set(SESSION, "v", None).unwrap(),
            "__Host-portcullis=v; Path=/; Secure; HttpOnly; SameSite=Lax"
        );
        assert_eq!(
            clear(SESSION).unwrap(),
            "__Host-portcullis=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0"
        );
    }
}
