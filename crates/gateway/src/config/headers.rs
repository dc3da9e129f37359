//! The security headers every response gets, compiled from `headers:`.

use super::raw;
use super::{Problems, line_of};
use http::{HeaderName, HeaderValue};
use portcullis::headers::SecurityHeaders;
use std::collections::BTreeMap;

pub(super) fn compile_headers(
    map: &BTreeMap<String, serde_saphyr::Spanned<raw::HeaderSetting>>,
    problems: &mut Problems,
) -> SecurityHeaders {
    let mut set = Vec::new();
    let mut remove = Vec::new();
    for (name, setting) in map {
        let path = format!("headers.{name}");
        let line = line_of(&setting.referenced);
        match (name.as_str(), &setting.value) {
            ("remove", raw::HeaderSetting::List(names)) => {
                for n in names {
                    match HeaderName::from_bytes(n.as_bytes()) {
                        Ok(h) => remove.push(h),
                        Err(_) => problems.add(&path, line, format!("`{n}` is not a header name")),
                    }
                }
            }
            ("remove", _) => problems.add(&path, line, "must be a list of header names"),
            (_, raw::HeaderSetting::Value(value)) => {
                match (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(value),
                ) {
                    (Ok(n), Ok(v)) => set.push((n, v)),
                    (Err(_), _) => {
                        problems.add(&path, line, format!("`{name}` is not a header name"))
                    }
                    (_, Err(_)) => problems.add(&path, line, "is not a valid header value"),
                }
            }
            (_, raw::HeaderSetting::List(_)) => problems.add(&path, line, "must be a single value"),
        }
    }
    SecurityHeaders::new(set, remove)
}
