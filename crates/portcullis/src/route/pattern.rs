//! Route path patterns: templates such as `/api/items/{id}` and prefixes such as
//! `/api/public/`, checked to be canonical so that a normalised request path can match.

use std::sync::Arc;

/// How a route matches paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    /// A template such as `/api/items/{id}`: every segment must match.
    Template(Vec<Segment>),
    /// Everything at or below a prefix such as `/api/public/`.
    Prefix(String),
}

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Must equal the text exactly.
    Literal(String),
    /// Matches any one non-empty segment and binds it to the name.
    Param(Arc<str>),
}

/// Why a route pattern is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The pattern does not start with `/`.
    #[error("must start with /")]
    NotAbsolute,
    /// A `{...}` segment is malformed or its name is not an identifier.
    #[error("`{0}` is not a valid {{param}} segment")]
    BadParam(String),
    /// Two parameters have the same name.
    #[error("parameter `{0}` appears twice")]
    DuplicateParam(String),
    /// The pattern is not in canonical form, so no normalised request path could match it.
    #[error("is not in canonical form (dot segments, empty segments or escapes)")]
    NotCanonical,
}

impl PathPattern {
    /// Parses a template like `/api/items/{id}`.
    pub fn template(template: &str) -> Result<Self, PatternError> {
        let rest = template
            .strip_prefix('/')
            .ok_or(PatternError::NotAbsolute)?;
        let mut segments = Vec::new();
        let mut names: Vec<Arc<str>> = Vec::new();
        if rest.is_empty() {
            return Ok(PathPattern::Template(segments));
        }
        for part in rest.split('/') {
            if let Some(inner) = part.strip_prefix('{') {
                let name = inner
                    .strip_suffix('}')
                    .filter(|n| is_identifier(n))
                    .ok_or_else(|| PatternError::BadParam(part.to_string()))?;
                if names.iter().any(|n| &**n == name) {
                    return Err(PatternError::DuplicateParam(name.to_string()));
                }
                let name: Arc<str> = Arc::from(name);
                names.push(name.clone());
                segments.push(Segment::Param(name));
            } else if part.contains(['{', '}']) {
                return Err(PatternError::BadParam(part.to_string()));
            } else {
                segments.push(Segment::Literal(part.to_string()));
            }
        }
        let literal_form = template.replace(['{', '}'], "");
        if !is_canonical(&literal_form) {
            return Err(PatternError::NotCanonical);
        }
        Ok(PathPattern::Template(segments))
    }

    /// Parses a prefix like `/api/public/`.
    pub fn prefix(prefix: &str) -> Result<Self, PatternError> {
        if !prefix.starts_with('/') {
            return Err(PatternError::NotAbsolute);
        }
        if !is_canonical(prefix) {
            return Err(PatternError::NotCanonical);
        }
        Ok(PathPattern::Prefix(prefix.to_string()))
    }

    /// Matches a canonical path, returning the bound parameters.
    pub(crate) fn matches(&self, path: &str) -> Option<Vec<(Arc<str>, String)>> {
        match self {
            PathPattern::Prefix(prefix) => {
                let rest = path.strip_prefix(prefix.as_str())?;
                let boundary = rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/');
                boundary.then(Vec::new)
            }
            PathPattern::Template(segments) => {
                let rest = path.strip_prefix('/')?;
                // The root path has no segments at all, not one empty segment.
                let mut parts = (!rest.is_empty())
                    .then(|| rest.split('/'))
                    .into_iter()
                    .flatten();
                let mut params = Vec::new();
                for segment in segments {
                    let part = parts.next()?;
                    match segment {
                        Segment::Literal(text) if text == part => {}
                        Segment::Param(name) if !part.is_empty() => {
                            params.push((name.clone(), part.to_string()));
                        }
                        _ => return None,
                    }
                }
                parts.next().is_none().then_some(params)
            }
        }
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_canonical(path: &str) -> bool {
    crate::normalize::canonical_path(path).is_ok_and(|c| c == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_patterns_refused() {
        assert_eq!(PathPattern::template("api"), Err(PatternError::NotAbsolute));
        assert!(matches!(
            PathPattern::template("/a/{b"),
            Err(PatternError::BadParam(_))
        ));
        assert!(matches!(
            PathPattern::template("/a/{x}/{x}"),
            Err(PatternError::DuplicateParam(_))
        ));
        assert_eq!(
            PathPattern::template("/a/../b"),
            Err(PatternError::NotCanonical)
        );
    }
}
