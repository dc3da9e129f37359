//! Media types: parsing a `Content-Type` strictly (one value, RFC 9110 syntax, no
//! duplicate parameters, UTF-8 only for JSON) and matching it against the media ranges an
//! operation declares.

use crate::reason::MediaTypeReason;
/// A parsed media type or range, lowercased, without parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MediaType {
    pub kind: String,
    pub subtype: String,
}

impl MediaType {
    /// Whether the body is JSON (`application/json` or any `+json` type).
    pub fn is_json(&self) -> bool {
        self.kind == "application" && (self.subtype == "json" || self.subtype.ends_with("+json"))
    }

    /// Whether the body is an HTML form (`application/x-www-form-urlencoded`).
    pub fn is_form(&self) -> bool {
        self.kind == "application" && self.subtype == "x-www-form-urlencoded"
    }

    /// How specifically `self`, as a declared range, matches `actual`: `None` when it does
    /// not; higher is more specific.
    pub fn matches(&self, actual: &MediaType) -> Option<u8> {
        match (self.kind.as_str(), self.subtype.as_str()) {
            ("*", "*") => Some(0),
            (kind, "*") if kind == actual.kind => Some(1),
            (kind, subtype) if kind == actual.kind && subtype == actual.subtype => Some(2),
            _ => None,
        }
    }

    /// Parses a declared media range such as `application/json` or `image/*`.
    pub fn range(text: &str) -> Option<MediaType> {
        let essence = text.split(';').next()?.trim();
        let (kind, subtype) = essence.split_once('/')?;
        let ok = |s: &str| s == "*" || is_token(s);
        (ok(kind) && ok(subtype) && !(kind == "*" && subtype != "*")).then(|| MediaType {
            kind: kind.to_ascii_lowercase(),
            subtype: subtype.to_ascii_lowercase(),
        })
    }
}

/// Why a `Content-Type` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContentTypeError {
    /// Not `type/subtype` followed by well-formed parameters.
    Syntax,
    /// The same parameter twice (two readers could pick different ones).
    DuplicateParameter,
    /// A charset other than UTF-8 on a JSON body.
    Charset,
}

impl ContentTypeError {
    /// The refusal reason for this error.
    pub(crate) fn reason(self) -> MediaTypeReason {
        match self {
            ContentTypeError::Syntax => MediaTypeReason::Syntax,
            ContentTypeError::DuplicateParameter => MediaTypeReason::DuplicateParameter,
            ContentTypeError::Charset => MediaTypeReason::Charset,
        }
    }
}

/// Parses a request's `Content-Type` value.
pub(crate) fn parse_content_type(text: &str) -> Result<MediaType, ContentTypeError> {
    let split = text.find(';').unwrap_or(text.len());
    let (essence, rest) = text.split_at(split);
    let essence = essence.trim_matches([' ', '\t']);
    let (kind, subtype) = essence.split_once('/').ok_or(ContentTypeError::Syntax)?;
    if !is_token(kind) || !is_token(subtype) {
        return Err(ContentTypeError::Syntax);
    }
    let media = MediaType {
        kind: kind.to_ascii_lowercase(),
        subtype: subtype.to_ascii_lowercase(),
    };
    let mut seen: Vec<String> = Vec::new();
    for (name, value) in parameters(rest)? {
        let name = name.to_ascii_lowercase();
        if seen.contains(&name) {
            return Err(ContentTypeError::DuplicateParameter);
        }
        if name == "charset" && media.is_json() && !value.eq_ignore_ascii_case("utf-8") {
            return Err(ContentTypeError::Charset);
        }
        seen.push(name);
    }
    Ok(media)
}

/// Splits `; name=value; name="quoted"` parameters.
fn parameters(mut rest: &str) -> Result<Vec<(&str, String)>, ContentTypeError> {
    let mut out = Vec::new();
    loop {
        rest = rest.trim_start_matches([' ', '\t']);
        if rest.is_empty() {
            return Ok(out);
        }
        rest = rest
            .strip_prefix(';')
            .ok_or(ContentTypeError::Syntax)?
            .trim_start_matches([' ', '\t']);
        if rest.is_empty() {
            return Ok(out);
        }
        let (name, after) = rest.split_once('=').ok_or(ContentTypeError::Syntax)?;
        if !is_token(name) {
            return Err(ContentTypeError::Syntax);
        }
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    '\\' => value.push(chars.next().ok_or(ContentTypeError::Syntax)?.1),
                    c => value.push(c),
                }
            }
            let end = end.ok_or(ContentTypeError::Syntax)?;
            (value, quoted.get(end..).unwrap_or_default())
        } else {
            let end = after.find([';', ' ', '\t']).unwrap_or(after.len());
            let (token, remaining) = after.split_at(end);
            if !is_token(token) {
                return Err(ContentTypeError::Syntax);
            }
            (token.to_string(), remaining)
        };
        out.push((name, value));
        rest = remaining;
    }
}

/// RFC 9110 `token`.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        let json = parse_content_type("Application/JSON; charset=\"UTF-8\"").unwrap();
        assert!(json.is_json());
        assert_eq!(
            parse_content_type("application/json;charset=utf-7"),
            Err(ContentTypeError::Charset)
        );
        assert_eq!(
            parse_content_type("application/json; charset=utf-16"),
            Err(ContentTypeError::Charset)
        );
        assert_eq!(
            parse_content_type("application/json; charset=utf-8; charset=utf-7"),
            Err(ContentTypeError::DuplicateParameter)
        );
        assert_eq!(
            parse_content_type("application/json, text/plain"),
            Err(ContentTypeError::Syntax)
        );
        assert_eq!(
            parse_content_type("application/json\0"),
            Err(ContentTypeError::Syntax)
        );
        assert_eq!(parse_content_type("json"), Err(ContentTypeError::Syntax));
        assert!(
            parse_content_type("application/merge-patch+json")
                .unwrap()
                .is_json()
        );
        assert!(parse_content_type("text/plain; charset=latin1").is_ok());
        assert!(
            parse_content_type(" application/json ; charset=utf-8")
                .unwrap()
                .is_json()
        );
        let any = MediaType::range("*/*").unwrap();
        let text = MediaType::range("text/*").unwrap();
        let plain = parse_content_type("text/plain").unwrap();
        assert_eq!(any.matches(&plain), Some(0));
        assert_eq!(text.matches(&plain), Some(1));
        assert_eq!(json.matches(&plain), None);
    }
}
