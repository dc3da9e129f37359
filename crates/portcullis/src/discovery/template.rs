//! Folding undocumented paths into templates: `/users/123/orders/7f3a…` becomes
//! `/users/{id}/orders/{hex}`, so that a scan of ids is one shadow endpoint, not thousands.
//! Words (`api`, `v2`, `users`) are kept as they are.

/// How undocumented paths are folded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRules {
    /// Segments kept as they are even when they look like identifiers (`2fa`, `me`).
    pub reserved: Vec<String>,
    /// Templates remembered per prefix (the first two segments) at most; later ones are
    /// only counted, so one noisy prefix cannot fill the inventory.
    pub max_per_prefix: usize,
}

impl Default for TemplateRules {
    fn default() -> Self {
        TemplateRules {
            reserved: Vec::new(),
            max_per_prefix: 100,
        }
    }
}

/// The template of a canonical path, and the names of the parameters it introduced.
pub fn infer(path: &str, rules: &TemplateRules) -> (String, Vec<String>) {
    let mut template = String::with_capacity(path.len());
    let mut names: Vec<String> = Vec::new();
    for segment in path.split('/').skip(1) {
        template.push('/');
        let reserved = rules.reserved.iter().any(|r| r == segment);
        match kind(segment).filter(|_| !reserved) {
            None => template.push_str(segment),
            Some(kind) => {
                // Names must be unique within a template (OpenAPI path parameters).
                let taken = names.iter().filter(|n| n.starts_with(kind)).count();
                let name = if taken == 0 {
                    kind.to_string()
                } else {
                    format!("{kind}_{}", taken.saturating_add(1))
                };
                template.push('{');
                template.push_str(&name);
                template.push('}');
                names.push(name);
            }
        }
    }
    if template.is_empty() {
        template.push('/');
    }
    (template, names)
}

/// What kind of identifier a segment is, if it is one.
fn kind(segment: &str) -> Option<&'static str> {
    let bytes = segment.as_bytes();
    if bytes.is_empty() {
        return None;
    }
    if bytes.iter().all(u8::is_ascii_digit) {
        return Some("id");
    }
    if is_uuid(bytes) {
        return Some("uuid");
    }
    if is_date(bytes) {
        return Some("date");
    }
    if segment.contains('@') && segment.contains('.') {
        return Some("email");
    }
    let digits = bytes.iter().filter(|b| b.is_ascii_digit()).count();
    if bytes.len() >= 16 && digits > 0 && bytes.iter().all(u8::is_ascii_hexdigit) {
        return Some("hex");
    }
    // Long opaque tokens: base64url alphabet, letters and digits mixed, no word shape.
    let base64 = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'='));
    if bytes.len() >= 20 && base64 && digits >= 2 && bytes.iter().any(u8::is_ascii_alphabetic) {
        return Some("token");
    }
    None
}

fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn is_date(b: &[u8]) -> bool {
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_fold_and_words_stay() {
        let cases = [
            ("/users/123", "/users/{id}"),
            (
                "/api/v2/users/42/orders/7",
                "/api/v2/users/{id}/orders/{id_2}",
            ),
            (
                "/items/550e8400-e29b-41d4-a716-446655440000",
                "/items/{uuid}",
            ),
            ("/reports/2026-12-01", "/reports/{date}"),
            ("/people/alice@example.test", "/people/{email}"),
            ("/blobs/9f86d081884c7d659a2feaa0c55ad015", "/blobs/{hex}"),
            ("/s/eyJhbGciOiJFUzI1NiJ9x9Q2", "/s/{token}"),
            ("/api/health", "/api/health"),
            ("/v1/deadbeef", "/v1/deadbeef"),
            ("/", "/"),
        ];
        let rules = TemplateRules::default();
        for (path, template) in cases {
            assert_eq!(infer(path, &rules).0, template, "{path}");
        }
        assert_eq!(infer("/a/1/b/2", &rules).1, vec!["id", "id_2"]);
        let reserved = TemplateRules {
            reserved: vec!["2026-12-01".into()],
            ..TemplateRules::default()
        };
        assert_eq!(infer("/r/2026-12-01/7", &reserved).0, "/r/2026-12-01/{id}");
    }
}
