//! The operation index built from an OpenAPI document: every operation with its compiled
//! parameter, body and response checks, found by method and path template.

use super::media::MediaType;
use super::params::{FormFields, Parameter};
use super::schema::Schema;
use super::{ContractSettings, FieldError};
use crate::denial::Denial;
use crate::discovery::EndpointStats;
use crate::json::{JsonError, JsonLimits, parse_strict};
use crate::reason::MediaTypeReason;
use http::Method;
use std::sync::Arc;

pub(super) const METHODS: [(&str, Method); 8] = [
    ("get", Method::GET),
    ("put", Method::PUT),
    ("post", Method::POST),
    ("delete", Method::DELETE),
    ("options", Method::OPTIONS),
    ("head", Method::HEAD),
    ("patch", Method::PATCH),
    ("trace", Method::TRACE),
];

/// A declared media type and, for JSON and forms, the schema its bodies must satisfy.
#[derive(Debug)]
pub(crate) struct MediaSpec {
    pub range: MediaType,
    pub schema: Option<Schema>,
    /// For forms: how each documented field's text becomes a value.
    pub form: Option<FormFields>,
}

/// The index of the most specific declared range matching `actual`.
pub(crate) fn best_match(specs: &[MediaSpec], actual: &MediaType) -> Option<usize> {
    specs
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.range.matches(actual).map(|rank| (rank, i)))
        .max_by_key(|(rank, _)| *rank)
        .map(|(_, i)| i)
}

/// A request body declaration.
#[derive(Debug)]
pub(crate) struct BodySpec {
    pub required: bool,
    pub media: Vec<MediaSpec>,
}

/// Which statuses a response declaration covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusPattern {
    Exact(u16),
    /// `2XX` and the like: the hundreds digit.
    Range(u16),
    Default,
}

impl StatusPattern {
    /// `200`, `2XX` or `default`.
    pub(super) fn parse(key: &str) -> Option<StatusPattern> {
        match key {
            "default" => Some(StatusPattern::Default),
            k if k.len() == 3 && k.ends_with("XX") => match k.get(..1)?.parse().ok()? {
                d @ 1..=5 => Some(StatusPattern::Range(d)),
                _ => None,
            },
            k => match k.parse::<u16>().ok()? {
                code @ 100..=599 => Some(StatusPattern::Exact(code)),
                _ => None,
            },
        }
    }
}

/// A response declaration.
#[derive(Debug)]
pub(crate) struct ResponseSpec {
    pub status: StatusPattern,
    pub media: Vec<MediaSpec>,
}

/// One documented operation, ready to check requests against.
#[derive(Debug)]
pub struct Operation {
    /// `operationId`, or `METHOD /template` when the document gives none.
    pub id: Arc<str>,
    /// The method.
    pub method: Method,
    /// The full path template (with the server's base path).
    pub template: Arc<str>,
    pub(crate) params: Vec<Parameter>,
    pub(crate) body: Option<BodySpec>,
    pub(crate) responses: Vec<ResponseSpec>,
    pub(crate) strict: bool,
    pub(crate) stats: Arc<EndpointStats>,
}

impl Operation {
    /// The response declaration for a status: exact code first, then its range, then
    /// `default`.
    pub(crate) fn response(&self, status: u16) -> Option<&ResponseSpec> {
        let find = |pattern| self.responses.iter().find(|r| r.status == pattern);
        find(StatusPattern::Exact(status))
            .or_else(|| find(StatusPattern::Range(status / 100)))
            .or_else(|| find(StatusPattern::Default))
    }
}

impl Operation {
    /// Checks a JSON (or form) request body sent with `content_type`, as
    /// [`super::ValidateLayer`] does once it has read the body: the media type, the JSON
    /// guard (or the form's fields), then the schema.
    pub fn check_body(
        &self,
        content_type: &str,
        body: &[u8],
        limits: JsonLimits,
    ) -> Result<(), Denial> {
        let media = super::media::parse_content_type(content_type).map_err(|e| {
            Denial::UnsupportedMediaType {
                reason: e.reason(),
                detail: "the Content-Type is malformed".into(),
            }
        })?;
        let specs = self.body.as_ref().map_or(&[][..], |b| b.media.as_slice());
        let index = best_match(specs, &media).ok_or_else(|| Denial::UnsupportedMediaType {
            reason: MediaTypeReason::Undeclared,
            detail: format!("not declared for operation {}", self.id),
        })?;
        self.check_buffered_body(index, body, limits)
    }

    /// The JSON guard (or, for a form, its fields), then the schema of the `media`-th
    /// declared media type (if any).
    pub(crate) fn check_buffered_body(
        &self,
        media: usize,
        body: &[u8],
        limits: JsonLimits,
    ) -> Result<(), Denial> {
        let spec = self.body.as_ref().and_then(|b| b.media.get(media));
        if let Some(form) = spec.and_then(|m| m.form.as_ref()) {
            let value = form.read(body).map_err(Denial::invalid)?;
            return match spec.and_then(|m| m.schema.as_ref()) {
                Some(schema) if !schema.is_valid(&value) => {
                    Err(Denial::invalid(schema.errors(&value, "")))
                }
                _ => Ok(()),
            };
        }
        let value = parse_strict(body, limits).map_err(|e| {
            let message = match e {
                JsonError::DuplicateKey => "has a duplicate object key",
                JsonError::TooDeep => "is nested too deeply",
                JsonError::StringTooLong => "has a string over the size limit",
                JsonError::Syntax(_) => "is not valid UTF-8 JSON",
            };
            Denial::invalid(vec![FieldError::new(
                String::new(),
                e.code(),
                message.into(),
            )])
        })?;
        let schema = self
            .body
            .as_ref()
            .and_then(|b| b.media.get(media))
            .and_then(|m| m.schema.as_ref());
        match schema {
            Some(schema) if !schema.is_valid(&value) => {
                Err(Denial::invalid(schema.errors(&value, "")))
            }
            _ => Ok(()),
        }
    }
}

/// The operation a request matched, with its path parameters (as sent, still
/// percent-encoded).
#[derive(Debug, Clone)]
pub struct OperationMatch {
    /// The operation.
    pub operation: Arc<Operation>,
    /// Path parameter names and raw values.
    pub path_params: Vec<(String, String)>,
}

/// An OpenAPI document compiled for enforcement.
#[derive(Debug)]
pub struct ApiContract {
    /// Path templates to their index in `paths`.
    pub(super) router: matchit::Router<usize>,
    /// The operations of each path item.
    pub(super) paths: Vec<Vec<Arc<Operation>>>,
    /// Every file the document was read from (watched for reloads).
    pub(super) files: Vec<std::path::PathBuf>,
    /// How strictly it is enforced.
    pub settings: ContractSettings,
}

impl ApiContract {
    /// The operation for a method and canonical path. A `HEAD` request matches the
    /// path's `GET` operation when no `HEAD` is declared.
    pub fn find(&self, method: &Method, path: &str) -> Option<OperationMatch> {
        let matched = self.router.at(path).ok()?;
        let operations = self.paths.get(*matched.value)?;
        let by_method = |m: &Method| operations.iter().find(|op| op.method == *m);
        let operation = by_method(method).or_else(|| {
            (*method == Method::HEAD)
                .then(|| by_method(&Method::GET))
                .flatten()
        })?;
        Some(OperationMatch {
            operation: operation.clone(),
            path_params: matched
                .params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
    }

    /// Every file the document was read from (for reloading on change).
    pub fn files(&self) -> &[std::path::PathBuf] {
        &self.files
    }

    /// Every documented operation.
    pub fn operations(&self) -> impl Iterator<Item = &Arc<Operation>> {
        self.paths.iter().flatten()
    }
}
