//! Security headers added to, and server-identifying headers removed from, every response.

use http::{HeaderMap, HeaderName, HeaderValue};

/// The response headers the gateway sets and removes on every response, errors included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityHeaders {
    set: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl Default for SecurityHeaders {
    /// Strict defaults for a JSON API: no framing, no sniffing, no caching, no referrer.
    fn default() -> Self {
        let set = [
            (
                "strict-transport-security",
                "max-age=63072000; includeSubDomains",
            ),
            (
                "content-security-policy",
                "default-src 'none'; frame-ancestors 'none'",
            ),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "no-referrer"),
            ("cache-control", "no-store"),
        ]
        .into_iter()
        .map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v)))
        .collect();
        let remove = vec![
            HeaderName::from_static("server"),
            HeaderName::from_static("x-powered-by"),
        ];
        SecurityHeaders { set, remove }
    }
}

impl SecurityHeaders {
    /// Headers to set (replacing any upstream value) and header names to remove.
    pub fn new(set: Vec<(HeaderName, HeaderValue)>, remove: Vec<HeaderName>) -> Self {
        SecurityHeaders { set, remove }
    }

    /// Applies the headers to a response's header map. `Strict-Transport-Security` is set
    /// only when the client used `https`: RFC 6797 §7.2 tells browsers to ignore it over
    /// plain HTTP, and an operator reading it there would be misled.
    pub fn apply(&self, headers: &mut HeaderMap, https: bool) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            if name == http::header::STRICT_TRANSPORT_SECURITY && !https {
                headers.remove(name);
                continue;
            }
            headers.insert(name.clone(), value.clone());
        }
    }
}
