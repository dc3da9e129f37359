//! Building an [`super::ApiContract`] from a loaded document: each path item's operations with
//! their parameters, bodies and responses compiled.

use super::ContractSettings;
use super::contract::{
    ApiContract, BodySpec, METHODS, MediaSpec, Operation, ResponseSpec, StatusPattern,
};
use super::convert::{Converter, Dialect, Direction};
use super::document::{Documents, LoadProblem, Place};
use super::media::MediaType;
use super::params::{FormFields, Location, Parameter};
use super::schema::Schema;
use crate::discovery::Inventory;
use http::Method;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;

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
pub(super) fn base_path(docs: &Documents, root: &Place) -> Result<String, LoadProblem> {
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

/// Collects every problem of a document while it compiles its operations.
pub(super) struct Builder<'a> {
    pub(super) problems: Vec<LoadProblem>,
    pub(super) settings: &'a ContractSettings,
    pub(super) inventory: &'a Inventory,
}

impl Builder<'_> {
    /// Records a problem at `place`.
    pub(super) fn problem(&mut self, docs: &Documents, place: &Place, message: impl Into<String>) {
        self.problems.push(docs.problem(place, message));
    }

    fn try_or<T>(&mut self, result: Result<T, LoadProblem>) -> Option<T> {
        result.map_err(|p| self.problems.push(p)).ok()
    }

    /// The operations of the path item at `place`.
    pub(super) fn path_item(
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
