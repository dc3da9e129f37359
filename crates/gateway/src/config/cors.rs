//! The `cors` section: which paths browsers on other origins may call, and how.

use super::raw::RawCors;
use super::{Problems, line_of};
use http::{HeaderName, Method};
use portcullis::cors::CorsRule;
use portcullis::route::PathPattern;
use std::sync::Arc;

/// Compiles every rule, reporting each problem with its path.
pub(super) fn compile(raw: &[RawCors], problems: &mut Problems) -> Arc<[CorsRule]> {
    raw.iter()
        .enumerate()
        .filter_map(|(i, rule)| compile_rule(i, rule, problems))
        .collect::<Vec<_>>()
        .into()
}

fn compile_rule(i: usize, raw: &RawCors, problems: &mut Problems) -> Option<CorsRule> {
    let path = format!("cors[{i}]");
    let line = line_of(&raw.matcher.referenced);
    let m = &raw.matcher.value;
    if m.methods.is_some() {
        problems.add(
            format!("{path}.match.methods"),
            line,
            "a CORS rule covers paths; list methods under `allow_methods`",
        );
    }
    let pattern = match (&m.path, &m.prefix) {
        (Some(p), None) => PathPattern::template(&p.value)
            .map_err(|e| {
                problems.at(
                    format!("{path}.match.path"),
                    p,
                    format!("`{}` {e}", p.value),
                )
            })
            .ok(),
        (None, Some(p)) => PathPattern::prefix(&p.value)
            .map_err(|e| {
                problems.at(
                    format!("{path}.match.prefix"),
                    p,
                    format!("`{}` {e}", p.value),
                )
            })
            .ok(),
        _ => {
            problems.add(
                format!("{path}.match"),
                line,
                "needs exactly one of `path` or `prefix`",
            );
            None
        }
    };
    let credentials = raw.allow_credentials.unwrap_or(false);
    if raw.allow_origins.is_empty() {
        problems.add(
            format!("{path}.allow_origins"),
            line,
            "list the origins that may call",
        );
    }
    let mut origins = Vec::new();
    for (j, text) in raw.allow_origins.iter().enumerate() {
        let at = format!("{path}.allow_origins[{j}]");
        match text.value.as_str() {
            "*" if credentials => problems.at(
                at,
                text,
                "`*` cannot go with `allow_credentials: true`: list the exact origins",
            ),
            "*" => origins.push("*".to_string()),
            "null" => problems.at(
                at,
                text,
                "`null` is the origin of sandboxed and file pages, which anyone can make; it is never allowed",
            ),
            origin if is_origin(origin) => origins.push(origin.to_ascii_lowercase()),
            origin => problems.at(
                at,
                text,
                format!("`{origin}` is not an origin like https://app.example.test (scheme, host, optional port, no path)"),
            ),
        }
    }
    let mut methods = Vec::new();
    for (j, text) in raw.allow_methods.iter().enumerate() {
        match Method::from_bytes(text.value.as_bytes()) {
            Ok(m) if text.value.bytes().all(|b| b.is_ascii_uppercase()) => methods.push(m),
            _ => problems.at(
                format!("{path}.allow_methods[{j}]"),
                text,
                format!("`{}` is not an HTTP method in upper case", text.value),
            ),
        }
    }
    let names = |list: &[super::raw::Text], key: &str, problems: &mut Problems| {
        list.iter()
            .enumerate()
            .filter_map(|(j, text)| {
                HeaderName::from_bytes(text.value.to_ascii_lowercase().as_bytes())
                    .map_err(|_| {
                        problems.at(
                            format!("{path}.{key}[{j}]"),
                            text,
                            format!("`{}` is not a header name", text.value),
                        )
                    })
                    .ok()
            })
            .collect::<Vec<_>>()
    };
    let allow_headers = names(&raw.allow_headers, "allow_headers", problems);
    let expose_headers = names(&raw.expose_headers, "expose_headers", problems);
    Some(CorsRule {
        pattern: pattern?,
        allow_origins: origins,
        allow_methods: methods,
        allow_headers,
        expose_headers,
        allow_credentials: credentials,
        max_age: raw.max_age.map(|d| d.0),
    })
}

/// `scheme://host[:port]`, nothing more (what a browser sends in `Origin`).
fn is_origin(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once("://") else {
        return false;
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || rest.starts_with('[') => (host, Some(port)),
        _ => (rest, None),
    };
    matches!(scheme, "http" | "https")
        && !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b))
        && port.is_none_or(|p| p.parse::<u16>().is_ok())
}
