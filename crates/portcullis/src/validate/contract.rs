//! The operation index built from an OpenAPI document: every operation with its compiled
//! parameter, body and response checks, found by method and path template.

use super::document::{Documents, LoadProblem, Place};
use super::media::MediaType;
use super::params::{FormFields, Location, Parameter};
use super::schema::{Converter, Dialect, Direction, Schema};
use super::{ContractSettings, FieldError};
use crate::denial::Denial;
use crate::discovery::{EndpointStats, Inventory};
use crate::json::{JsonError, JsonLimits, parse_strict};
use crate::reason::MediaTypeReason;
use http::Method;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;

const METHODS: [(&str, Method); 8] = [
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
    fn parse(key: &str) -> Option<StatusPattern> {
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
    router: matchit::Router<usize>,
    paths: Vec<Vec<Arc<Operation>>>,
    files: Vec<std::path::PathBuf>,
    /// How strictly it is enforced.
    pub settings: ContractSettings,
}

impl ApiContract {
    /// Loads and compiles the document at `path`. Every problem found is reported, each with
    /// its file and JSON pointer.
    pub fn load(
        path: &Path,
        settings: ContractSettings,
        inventory: &Inventory,
    ) -> Result<ApiContract, Vec<LoadProblem>> {
        let (mut docs, root) = Documents::open(path).map_err(|p| vec![p])?;
        let mut builder = Builder {
            problems: Vec::new(),
            settings: &settings,
            inventory,
        };
        let dialect = match docs.get(&root).and_then(|v| v.get("openapi")) {
            Some(Value::String(v)) if v.starts_with("3.0.") => Dialect::OpenApi30,
            Some(Value::String(v)) if v.starts_with("3.1.") => Dialect::OpenApi31,
            _ => {
                return Err(vec![docs.problem(
                    &root.child("openapi"),
                    "must be an OpenAPI version 3.0.x or 3.1.x",
                )]);
            }
        };
        let base = base_path(&docs, &root).map_err(|p| vec![p])?;
        let mut converter = Converter::new(&mut docs, dialect);
        let mut router = matchit::Router::new();
        let mut paths = Vec::new();
        let paths_place = root.child("paths");
        let templates: Vec<String> = match converter.docs().get(&paths_place) {
            Some(Value::Object(map)) => map.keys().cloned().collect(),
            _ => {
                return Err(vec![
                    converter
                        .docs()
                        .problem(&paths_place, "must be an object of paths"),
                ]);
            }
        };
        for template in templates {
            let item_place = paths_place.child(&template);
            if !template.starts_with('/') {
                builder.problem(converter.docs(), &item_place, "a path must start with `/`");
                continue;
            }
            let full: Arc<str> = Arc::from(format!("{base}{template}"));
            let operations = builder.path_item(&mut converter, &item_place, &full);
            if let Err(e) = router.insert(full.to_string(), paths.len()) {
                builder.problem(
                    converter.docs(),
                    &item_place,
                    format!("cannot be matched: {e}"),
                );
                continue;
            }
            paths.push(operations);
        }
        if builder.problems.is_empty() {
            Ok(ApiContract {
                router,
                paths,
                files: docs.paths(),
                settings,
            })
        } else {
            Err(builder.problems)
        }
    }

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

/// The keys of the object at `place` (none when it is absent or not an object).
fn object_keys(docs: &Documents, place: &Place) -> Vec<String> {
    match docs.get(place) {
        Some(Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// The path of the first `servers` entry (relative, or the path of an absolute URL),
/// without a trailing slash.
fn base_path(docs: &Documents, root: &Place) -> Result<String, LoadProblem> {
    let place = root.child("servers").child("0").child("url");
    let Some(url) = docs.get(&place) else {
        return Ok(String::new());
    };
    let url = url
        .as_str()
        .ok_or_else(|| docs.problem(&place, "must be a string"))?;
    if url.contains('{') {
        return Err(docs.problem(
            &place,
            "server variables are not supported; write the URL out",
        ));
    }
    let path = match url.split_once("://") {
        Some((_, rest)) => rest.find('/').and_then(|i| rest.get(i..)).unwrap_or(""),
        None => url,
    };
    Ok(path.trim_end_matches('/').to_string())
}

struct Builder<'a> {
    problems: Vec<LoadProblem>,
    settings: &'a ContractSettings,
    inventory: &'a Inventory,
}

impl Builder<'_> {
    fn problem(&mut self, docs: &Documents, place: &Place, message: impl Into<String>) {
        self.problems.push(docs.problem(place, message));
    }

    fn try_or<T>(&mut self, result: Result<T, LoadProblem>) -> Option<T> {
        result.map_err(|p| self.problems.push(p)).ok()
    }

    fn path_item(
        &mut self,
        converter: &mut Converter<'_>,
        place: &Place,
        template: &Arc<str>,
    ) -> Vec<Arc<Operation>> {
        let mut out = Vec::new();
        let Some(item) = self.try_or(converter.docs().resolve(place)) else {
            return out;
        };
        for (key, method) in METHODS {
            let op_place = item.child(key);
            if converter.docs().get(&op_place).is_none() {
                continue;
            }
            if let Some(op) = self.operation(converter, &item, &op_place, method, template) {
                out.push(Arc::new(op));
            }
        }
        out
    }

    fn operation(
        &mut self,
        converter: &mut Converter<'_>,
        item: &Place,
        place: &Place,
        method: Method,
        template: &Arc<str>,
    ) -> Option<Operation> {
        let id: Arc<str> = match converter.docs().get(&place.child("operationId")) {
            Some(Value::String(id)) => Arc::from(id.as_str()),
            _ => Arc::from(format!("{method} {template}")),
        };
        let strict = !self
            .settings
            .relaxed
            .iter()
            .any(|r| **r == *id || *r == format!("{method} {template}"));
        let mut params: Vec<Parameter> = Vec::new();
        // Operation-level parameters override path-level ones with the same name and place.
        for level in [place.child("parameters"), item.child("parameters")] {
            let count = match converter.docs().get(&level) {
                Some(Value::Array(list)) => list.len(),
                Some(_) => {
                    self.problem(converter.docs(), &level, "must be an array");
                    0
                }
                None => 0,
            };
            for i in 0..count {
                if let Some(param) = self.parameter(converter, &level.child(&i.to_string())) {
                    let duplicate = params
                        .iter()
                        .any(|p| p.name == param.name && p.location == param.location);
                    if !duplicate {
                        params.push(param);
                    }
                }
            }
        }
        let body = self.request_body(converter, &place.child("requestBody"), strict);
        let responses = self.responses(converter, &place.child("responses"), strict);
        let stats = self.inventory.documented(&method, template);
        Some(Operation {
            id,
            method,
            template: template.clone(),
            params,
            body,
            responses,
            strict,
            stats,
        })
    }

    fn parameter(&mut self, converter: &mut Converter<'_>, place: &Place) -> Option<Parameter> {
        let place = self.try_or(converter.docs().resolve(place))?;
        let doc = converter.docs().get(&place).cloned().unwrap_or_default();
        let Some(name) = doc.get("name").and_then(Value::as_str) else {
            self.problem(converter.docs(), &place, "a parameter needs a `name`");
            return None;
        };
        let Some(location) = doc
            .get("in")
            .and_then(Value::as_str)
            .and_then(Location::parse)
        else {
            self.problem(
                converter.docs(),
                &place.child("in"),
                "must be path, query, header or cookie",
            );
            return None;
        };
        if doc.get("content").is_some() {
            self.problem(
                converter.docs(),
                &place.child("content"),
                "parameters with `content` are not supported; use `schema`",
            );
            return None;
        }
        let schema_place = place.child("schema");
        let schema_json = if doc.get("schema").is_some() {
            self.try_or(converter.convert(&schema_place, Direction::Request, true))?
        } else {
            serde_json::json!({"type": "string"})
        };
        let compiled = self.compile(converter, &schema_place, &schema_json, Direction::Request)?;
        let name = if location == Location::Header {
            name.to_ascii_lowercase()
        } else {
            name.to_string()
        };
        let required = doc
            .get("required")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let style = doc.get("style").and_then(Value::as_str);
        let explode = doc.get("explode").and_then(Value::as_bool);
        match Parameter::new(
            name,
            location,
            required,
            style,
            explode,
            &schema_json,
            compiled,
        ) {
            Ok(param) => Some(param),
            Err(error) => {
                self.problem(converter.docs(), &place, error.to_string());
                None
            }
        }
    }

    fn compile(
        &mut self,
        converter: &mut Converter<'_>,
        place: &Place,
        schema: &Value,
        direction: Direction,
    ) -> Option<Schema> {
        match Schema::compile(schema, direction) {
            Ok(s) => Some(s),
            Err(e) => {
                self.problem(converter.docs(), place, format!("invalid schema: {e}"));
                None
            }
        }
    }

    fn request_body(
        &mut self,
        converter: &mut Converter<'_>,
        place: &Place,
        strict: bool,
    ) -> Option<BodySpec> {
        converter.docs().get(place)?;
        let place = self.try_or(converter.docs().resolve(place))?;
        let required = converter
            .docs()
            .get(&place.child("required"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let media = self.content(
            converter,
            &place.child("content"),
            Direction::Request,
            strict,
        );
        Some(BodySpec { required, media })
    }

    fn responses(
        &mut self,
        converter: &mut Converter<'_>,
        place: &Place,
        strict: bool,
    ) -> Vec<ResponseSpec> {
        let keys = object_keys(converter.docs(), place);
        let mut out = Vec::new();
        for key in keys {
            let at = place.child(&key);
            let Some(status) = StatusPattern::parse(&key) else {
                self.problem(
                    converter.docs(),
                    &at,
                    "is not a status code, range or `default`",
                );
                continue;
            };
            let Some(response) = self.try_or(converter.docs().resolve(&at)) else {
                continue;
            };
            let media = if self.settings.responses == super::ResponseMode::Off {
                Vec::new()
            } else {
                self.content(
                    converter,
                    &response.child("content"),
                    Direction::Response,
                    strict,
                )
            };
            out.push(ResponseSpec { status, media });
        }
        out
    }

    fn content(
        &mut self,
        converter: &mut Converter<'_>,
        place: &Place,
        direction: Direction,
        strict: bool,
    ) -> Vec<MediaSpec> {
        let keys = object_keys(converter.docs(), place);
        let mut out = Vec::new();
        for key in keys {
            let at = place.child(&key);
            let Some(range) = MediaType::range(&key) else {
                self.problem(converter.docs(), &at, "is not a media type");
                continue;
            };
            let schema_place = at.child("schema");
            let has_schema = converter.docs().get(&schema_place).is_some();
            let checked = range.is_json() || (range.is_form() && direction == Direction::Request);
            let (schema, form) = if checked && has_schema {
                let converted = converter.convert(&schema_place, direction, strict);
                let Some(json) = self.try_or(converted) else {
                    continue;
                };
                let Some(compiled) = self.compile(converter, &schema_place, &json, direction)
                else {
                    continue;
                };
                let form = range.is_form().then(|| FormFields::of(&json));
                (Some(compiled), form)
            } else {
                (None, None)
            };
            out.push(MediaSpec {
                range,
                schema,
                form,
            });
        }
        out
    }
}
