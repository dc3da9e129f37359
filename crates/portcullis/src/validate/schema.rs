//! OpenAPI schemas turned into compiled JSON Schema 2020-12 validators.
//!
//! Each schema is rewritten once, at load time, into a self-contained document: references
//! are inlined (recursive ones become `$defs`), the OpenAPI 3.0 dialect (`nullable`,
//! boolean `exclusiveMinimum`) is translated, and two rules the document may have forgotten
//! are made explicit:
//! - *strict objects*: an object schema that lists its properties refuses any other
//!   (`unevaluatedProperties: false`, placed where composition with `allOf` still works);
//! - *direction*: a `readOnly` property may not appear in a request (mass assignment), nor
//!   a `writeOnly` one in a response.

use super::document::{Documents, LoadProblem, Place};
use super::{FieldError, MAX_ERRORS};
use jsonschema::{Draft, PatternOptions, ValidationError, Validator};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};

/// Most nodes a document may expand to once its references are inlined (a bound on
/// documents built to explode).
const MAX_NODES: usize = 200_000;

/// Which way the data flows: decides whether `readOnly` or `writeOnly` properties are
/// forbidden.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Direction {
    /// Client to API.
    Request,
    /// API to client.
    Response,
}

/// The OpenAPI version's schema dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// OpenAPI 3.0: an extended subset of draft 4.
    OpenApi30,
    /// OpenAPI 3.1: JSON Schema 2020-12.
    OpenApi31,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Context {
    direction: Direction,
    strict: bool,
    /// Directly inside a composition (`allOf`, `anyOf`, ...): strictness is placed on the
    /// composing schema instead, which sees every branch's properties.
    branch: bool,
}

/// Rewrites the schemas of one document; shares the node budget across all of them.
pub(crate) struct Converter<'d> {
    docs: &'d mut Documents,
    dialect: Dialect,
    nodes: usize,
}

/// State while rewriting one root schema.
#[derive(Default)]
struct Rewrite {
    defs: Map<String, Value>,
    names: HashMap<(Place, Context), String>,
    active: Vec<(Place, Context)>,
    recursive: HashSet<(Place, Context)>,
}

impl<'d> Converter<'d> {
    /// A converter for documents of the given dialect.
    pub fn new(docs: &'d mut Documents, dialect: Dialect) -> Self {
        Converter {
            docs,
            dialect,
            nodes: 0,
        }
    }

    /// The documents being read.
    pub fn docs(&mut self) -> &mut Documents {
        self.docs
    }

    /// Rewrites the schema at `place` into one self-contained JSON Schema 2020-12 document.
    pub fn convert(
        &mut self,
        place: &Place,
        direction: Direction,
        strict: bool,
    ) -> Result<Value, LoadProblem> {
        let mut rewrite = Rewrite::default();
        let ctx = Context {
            direction,
            strict,
            branch: false,
        };
        let (mut schema, _) = self.node(place, ctx, &mut rewrite)?;
        if !rewrite.defs.is_empty() {
            if let Value::Object(map) = &mut schema {
                map.insert("$defs".into(), Value::Object(rewrite.defs));
            } else {
                schema = serde_json::json!({ "allOf": [schema], "$defs": rewrite.defs });
            }
        }
        Ok(schema)
    }

    /// Rewrites one schema node; also says whether it describes an object by its properties.
    fn node(
        &mut self,
        place: &Place,
        ctx: Context,
        rewrite: &mut Rewrite,
    ) -> Result<(Value, bool), LoadProblem> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(self.docs.problem(
                place,
                format!("the document's schemas expand to more than {MAX_NODES} nodes"),
            ));
        }
        let map = match self.docs.get(place) {
            None => return Err(self.docs.problem(place, "nothing is at this place")),
            Some(Value::Bool(b)) => return Ok((Value::Bool(*b), false)),
            Some(Value::Object(map)) => shallow(map),
            Some(_) => return Err(self.docs.problem(place, "a schema must be an object")),
        };
        if let Some(reference) = map.get("$ref") {
            let Value::String(reference) = reference else {
                return Err(self.docs.problem(place, "`$ref` must be a string"));
            };
            let siblings = map
                .keys()
                .any(|k| k != "$ref" && !is_annotation(k) && !k.starts_with("x-"));
            if self.dialect == Dialect::OpenApi31 && siblings {
                return Err(self.docs.problem(
                    place,
                    "keywords beside `$ref` are not supported; wrap them in `allOf`",
                ));
            }
            let target = self.docs.target(place, reference)?;
            return self.reference(target, ctx, rewrite);
        }
        self.object(place, map, ctx, rewrite)
    }

    fn reference(
        &mut self,
        target: Place,
        ctx: Context,
        rewrite: &mut Rewrite,
    ) -> Result<(Value, bool), LoadProblem> {
        let key = (target.clone(), ctx);
        if rewrite.active.contains(&key) {
            rewrite.recursive.insert(key.clone());
            let name = def_name(rewrite, &key);
            return Ok((
                serde_json::json!({ "$ref": format!("#/$defs/{name}") }),
                false,
            ));
        }
        rewrite.active.push(key.clone());
        let converted = self.node(&target, ctx, rewrite);
        rewrite.active.pop();
        let (schema, objectish) = converted?;
        if rewrite.recursive.contains(&key) {
            let name = def_name(rewrite, &key);
            rewrite.defs.insert(name.clone(), schema);
            return Ok((
                serde_json::json!({ "$ref": format!("#/$defs/{name}") }),
                objectish,
            ));
        }
        Ok((schema, objectish))
    }

    fn object(
        &mut self,
        place: &Place,
        map: Map<String, Value>,
        ctx: Context,
        rewrite: &mut Rewrite,
    ) -> Result<(Value, bool), LoadProblem> {
        let mut out = Map::new();
        let mut objectish = false;
        let mut forbidden: Vec<String> = Vec::new();
        let inner = Context {
            branch: false,
            ..ctx
        };
        let branch = Context {
            branch: true,
            ..ctx
        };
        for (key, value) in &map {
            let at = place.child(key);
            match key.as_str() {
                k if is_annotation(k) || k.starts_with("x-") => {}
                "$dynamicRef" | "$recursiveRef" => {
                    return Err(self.docs.problem(&at, format!("`{key}` is not supported")));
                }
                "properties" | "patternProperties" => {
                    let Value::Object(props) = value else {
                        return Err(self.docs.problem(&at, "must be an object"));
                    };
                    objectish = true;
                    let mut converted = Map::new();
                    for name in props.keys() {
                        let prop = at.child(name);
                        if key == "properties" && self.forbidden_here(&prop, ctx.direction)? {
                            forbidden.push(name.clone());
                            converted.insert(name.clone(), Value::Bool(false));
                            continue;
                        }
                        converted.insert(name.clone(), self.node(&prop, inner, rewrite)?.0);
                    }
                    out.insert(key.clone(), Value::Object(converted));
                }
                "additionalProperties"
                | "unevaluatedProperties"
                | "items"
                | "additionalItems"
                | "unevaluatedItems"
                | "contains"
                | "propertyNames" => {
                    out.insert(key.clone(), self.node(&at, inner, rewrite)?.0);
                }
                "prefixItems" => {
                    out.insert(key.clone(), self.list(&at, value, inner, rewrite)?.0);
                }
                "allOf" | "anyOf" | "oneOf" => {
                    let (list, any_objectish) = self.list(&at, value, branch, rewrite)?;
                    objectish |= any_objectish;
                    out.insert(key.clone(), list);
                }
                "not" | "if" | "then" | "else" => {
                    let (schema, is_object) = self.node(&at, branch, rewrite)?;
                    if key != "not" {
                        objectish |= is_object;
                    }
                    out.insert(key.clone(), schema);
                }
                "dependentSchemas" => {
                    let Value::Object(entries) = value else {
                        return Err(self.docs.problem(&at, "must be an object"));
                    };
                    let mut converted = Map::new();
                    for name in entries.keys() {
                        converted
                            .insert(name.clone(), self.node(&at.child(name), branch, rewrite)?.0);
                    }
                    out.insert(key.clone(), Value::Object(converted));
                }
                "nullable" if self.dialect == Dialect::OpenApi30 => {}
                _ => {
                    out.insert(key.clone(), value.clone());
                }
            }
        }
        if self.dialect == Dialect::OpenApi30 {
            translate_30(&map, &mut out);
        }
        if !forbidden.is_empty()
            && let Some(Value::Array(required)) = out.get_mut("required")
        {
            // OpenAPI: a required readOnly property is required in responses only.
            required.retain(|r| r.as_str().is_none_or(|r| !forbidden.iter().any(|f| f == r)));
        }
        if ctx.strict
            && !ctx.branch
            && objectish
            && !out.contains_key("additionalProperties")
            && !out.contains_key("unevaluatedProperties")
        {
            out.insert("unevaluatedProperties".into(), Value::Bool(false));
        }
        Ok((Value::Object(out), objectish))
    }

    fn list(
        &mut self,
        place: &Place,
        value: &Value,
        ctx: Context,
        rewrite: &mut Rewrite,
    ) -> Result<(Value, bool), LoadProblem> {
        let Value::Array(items) = value else {
            return Err(self.docs.problem(place, "must be an array of schemas"));
        };
        let mut out = Vec::with_capacity(items.len());
        let mut objectish = false;
        for i in 0..items.len() {
            let (schema, is_object) = self.node(&place.child(&i.to_string()), ctx, rewrite)?;
            objectish |= is_object;
            out.push(schema);
        }
        Ok((Value::Array(out), objectish))
    }

    /// Whether the property schema at `place` may not appear in this direction.
    fn forbidden_here(&mut self, place: &Place, direction: Direction) -> Result<bool, LoadProblem> {
        let flag = match direction {
            Direction::Request => "readOnly",
            Direction::Response => "writeOnly",
        };
        let written_here = self
            .docs
            .get(place)
            .and_then(|v| v.get(flag))
            .and_then(Value::as_bool);
        if let Some(flag) = written_here {
            return Ok(flag);
        }
        let target = self.docs.resolve(place)?;
        Ok(self
            .docs
            .get(&target)
            .and_then(|v| v.get(flag))
            .and_then(Value::as_bool)
            .unwrap_or(false))
    }
}

/// A copy of a schema object in which subschemas are placeholders (only their keys, or
/// their count, are kept): the rewrite visits them by place, so copying them here would make
/// the work quadratic in the nesting depth.
fn shallow(map: &Map<String, Value>) -> Map<String, Value> {
    map.iter()
        .map(|(key, value)| {
            let copy = match (key.as_str(), value) {
                (
                    "properties" | "patternProperties" | "dependentSchemas",
                    Value::Object(entries),
                ) => Value::Object(entries.keys().map(|k| (k.clone(), Value::Null)).collect()),
                ("allOf" | "anyOf" | "oneOf" | "prefixItems", Value::Array(items)) => {
                    Value::Array(vec![Value::Null; items.len()])
                }
                (
                    "additionalProperties"
                    | "unevaluatedProperties"
                    | "items"
                    | "additionalItems"
                    | "unevaluatedItems"
                    | "contains"
                    | "propertyNames"
                    | "not"
                    | "if"
                    | "then"
                    | "else",
                    _,
                ) => Value::Null,
                (k, _) if is_annotation(k) || k.starts_with("x-") => Value::Null,
                _ => value.clone(),
            };
            (key.clone(), copy)
        })
        .collect()
}

fn def_name(rewrite: &mut Rewrite, key: &(Place, Context)) -> String {
    let next = rewrite.names.len();
    rewrite
        .names
        .entry(key.clone())
        .or_insert_with(|| format!("s{next}"))
        .clone()
}

/// Keywords that only describe and never constrain (dropped to keep validators lean).
fn is_annotation(key: &str) -> bool {
    matches!(
        key,
        "description"
            | "title"
            | "example"
            | "examples"
            | "externalDocs"
            | "xml"
            | "discriminator"
            | "deprecated"
            | "readOnly"
            | "writeOnly"
            | "$comment"
            | "$id"
            | "$schema"
            | "$anchor"
            | "$defs"
            | "definitions"
            | "default"
    )
}

/// OpenAPI 3.0 keywords whose meaning differs from 2020-12.
fn translate_30(original: &Map<String, Value>, out: &mut Map<String, Value>) {
    if original.get("nullable") == Some(&Value::Bool(true)) {
        match out.get_mut("type") {
            Some(Value::String(t)) => {
                let t = std::mem::take(t);
                out.insert("type".into(), serde_json::json!([t, "null"]));
            }
            Some(Value::Array(types)) if !types.contains(&Value::from("null")) => {
                types.push(Value::from("null"));
            }
            _ => {}
        }
        if let Some(Value::Array(values)) = out.get_mut("enum")
            && !values.contains(&Value::Null)
        {
            values.push(Value::Null);
        }
    }
    for (exclusive, bound) in [
        ("exclusiveMinimum", "minimum"),
        ("exclusiveMaximum", "maximum"),
    ] {
        match out.get(exclusive) {
            Some(Value::Bool(true)) => {
                if let Some(limit) = out.remove(bound) {
                    out.insert(exclusive.into(), limit);
                } else {
                    out.remove(exclusive);
                }
            }
            Some(Value::Bool(false)) => {
                out.remove(exclusive);
            }
            _ => {}
        }
    }
}

/// A compiled schema.
#[derive(Debug)]
pub(crate) struct Schema {
    validator: Validator,
    direction: Direction,
}

/// A rewritten schema that the JSON Schema compiler refuses (an invalid regex, say).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SchemaError(String);

impl Schema {
    /// Compiles a rewritten schema. `pattern` uses a linear-time regex engine, so no
    /// attacker-chosen string can make a pattern check slow.
    pub fn compile(schema: &Value, direction: Direction) -> Result<Schema, SchemaError> {
        let validator = jsonschema::options()
            .with_draft(Draft::Draft202012)
            .with_pattern_options(PatternOptions::regex())
            .should_validate_formats(true)
            .build(schema)
            .map_err(|e| SchemaError(e.to_string()))?;
        Ok(Schema {
            validator,
            direction,
        })
    }

    /// Whether `value` conforms.
    pub fn is_valid(&self, value: &Value) -> bool {
        self.validator.is_valid(value)
    }

    /// The ways `value` does not conform (at most a few), each under `prefix` (a JSON
    /// pointer for bodies, `query.name` and the like for parameters). Messages never
    /// repeat the value.
    pub fn errors(&self, value: &Value, prefix: &str) -> Vec<FieldError> {
        let mut out = Vec::new();
        for error in self.validator.iter_errors(value) {
            self.describe(&error, prefix, &mut out);
            if out.len() >= MAX_ERRORS {
                out.truncate(MAX_ERRORS);
                break;
            }
        }
        out
    }

    fn describe(&self, error: &ValidationError<'_>, prefix: &str, out: &mut Vec<FieldError>) {
        use jsonschema::error::ValidationErrorKind as Kind;
        let at = format!("{prefix}{}", error.instance_path().as_str());
        let one = |code: &'static str, message: String| FieldError::new(at.clone(), code, message);
        let field = |name: &str| format!("{at}/{}", super::document::escape_token(name));
        match error.kind() {
            Kind::Required { property } => {
                let name = property.as_str().unwrap_or_default();
                out.push(FieldError::new(
                    field(name),
                    "required",
                    "is required".into(),
                ));
            }
            Kind::AdditionalProperties { unexpected }
            | Kind::UnevaluatedProperties { unexpected } => {
                for name in unexpected.iter().take(MAX_ERRORS) {
                    out.push(FieldError::new(
                        field(name),
                        "unknown_property",
                        "is not a documented property".into(),
                    ));
                }
            }
            Kind::FalseSchema => out.push(match self.direction {
                Direction::Request => one("read_only", "is read-only".into()),
                Direction::Response => one("write_only", "is write-only".into()),
            }),
            Kind::Type { kind } => {
                out.push(one("type", format!("must be of type {}", type_name(kind))))
            }
            Kind::Enum { .. } => out.push(one("enum", "must be one of the allowed values".into())),
            Kind::Constant { .. } => out.push(one("const", "must be the allowed value".into())),
            Kind::Minimum { limit } => {
                out.push(one("minimum", format!("must be at least {limit}")))
            }
            Kind::Maximum { limit } => out.push(one("maximum", format!("must be at most {limit}"))),
            Kind::ExclusiveMinimum { limit } => {
                out.push(one("minimum", format!("must be greater than {limit}")))
            }
            Kind::ExclusiveMaximum { limit } => {
                out.push(one("maximum", format!("must be less than {limit}")))
            }
            Kind::MinLength { limit } => out.push(one(
                "min_length",
                format!("must be at least {limit} characters long"),
            )),
            Kind::MaxLength { limit } => out.push(one(
                "max_length",
                format!("must be at most {limit} characters long"),
            )),
            Kind::MinItems { limit } => out.push(one(
                "min_items",
                format!("must have at least {limit} items"),
            )),
            Kind::MaxItems { limit } => {
                out.push(one("max_items", format!("must have at most {limit} items")))
            }
            Kind::MinProperties { limit } => out.push(one(
                "min_properties",
                format!("must have at least {limit} properties"),
            )),
            Kind::MaxProperties { limit } => out.push(one(
                "max_properties",
                format!("must have at most {limit} properties"),
            )),
            Kind::UniqueItems => out.push(one("unique_items", "must not repeat items".into())),
            Kind::Pattern { .. } => {
                out.push(one("pattern", "must match the documented pattern".into()))
            }
            Kind::Format { format } => out.push(one("format", format!("must be a valid {format}"))),
            Kind::MultipleOf { .. } => out.push(one(
                "multiple_of",
                "must be a multiple of the documented step".into(),
            )),
            Kind::AnyOf { .. } | Kind::OneOfNotValid { .. } => out.push(one(
                "one_of",
                "must match one of the documented shapes".into(),
            )),
            Kind::OneOfMultipleValid { .. } => out.push(one(
                "one_of",
                "must match exactly one of the documented shapes".into(),
            )),
            _ => out.push(one(
                "invalid",
                "does not match the documented schema".into(),
            )),
        }
    }
}

fn type_name(kind: &jsonschema::error::TypeKind) -> String {
    match kind {
        jsonschema::error::TypeKind::Single(t) => t.to_string(),
        jsonschema::error::TypeKind::Multiple(set) => {
            let names: Vec<String> = set.iter().map(|t| t.to_string()).collect();
            names.join(" or ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn convert(doc: Value, pointer: &str, direction: Direction, dialect: Dialect) -> Value {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("doc.json");
        std::fs::write(&path, doc.to_string()).unwrap();
        let (mut docs, root) = Documents::open(&path).unwrap();
        let place = Place {
            pointer: pointer.into(),
            ..root
        };
        Converter::new(&mut docs, dialect)
            .convert(&place, direction, true)
            .unwrap()
    }

    fn valid(schema: &Value, direction: Direction, value: Value) -> bool {
        Schema::compile(schema, direction).unwrap().is_valid(&value)
    }

    #[test]
    fn strictness_sits_where_composition_still_works() {
        let doc = json!({"s": {
            "Base": {"type": "object", "properties": {"a": {"type": "string"}}},
            "Both": {"allOf": [{"$ref": "#/s/Base"}, {"properties": {"b": {"type": "integer"}}}]},
            "Free": {"type": "object"},
            "Open": {"type": "object", "properties": {"a": {}}, "additionalProperties": true}
        }});
        let both = convert(
            doc.clone(),
            "/s/Both",
            Direction::Request,
            Dialect::OpenApi30,
        );
        assert!(valid(&both, Direction::Request, json!({"a": "x", "b": 1})));
        assert!(!valid(&both, Direction::Request, json!({"a": "x", "c": 1})));
        let free = convert(
            doc.clone(),
            "/s/Free",
            Direction::Request,
            Dialect::OpenApi30,
        );
        assert!(
            valid(&free, Direction::Request, json!({"anything": 1})),
            "a free-form object stays free"
        );
        let open = convert(doc, "/s/Open", Direction::Request, Dialect::OpenApi30);
        assert!(
            valid(&open, Direction::Request, json!({"a": 1, "z": 2})),
            "an explicit choice is kept"
        );
    }

    #[test]
    fn read_only_and_write_only_follow_the_direction_through_references() {
        let doc = json!({"s": {
            "Id": {"type": "integer", "readOnly": true},
            "User": {"type": "object", "required": ["id", "name"], "properties": {
                "id": {"$ref": "#/s/Id"},
                "name": {"type": "string"},
                "password": {"type": "string", "writeOnly": true}}}
        }});
        let request = convert(
            doc.clone(),
            "/s/User",
            Direction::Request,
            Dialect::OpenApi30,
        );
        assert!(
            valid(
                &request,
                Direction::Request,
                json!({"name": "a", "password": "p"})
            ),
            "required readOnly is for responses"
        );
        assert!(!valid(
            &request,
            Direction::Request,
            json!({"name": "a", "id": 1})
        ));
        let response = convert(doc, "/s/User", Direction::Response, Dialect::OpenApi30);
        assert!(valid(
            &response,
            Direction::Response,
            json!({"id": 1, "name": "a"})
        ));
        assert!(!valid(
            &response,
            Direction::Response,
            json!({"id": 1, "name": "a", "password": "p"})
        ));
    }

    #[test]
    fn dialect_30_translations_recursion_and_unknown_formats() {
        let doc = json!({"s": {
            "N": {"type": "object", "properties": {
                "v": {"type": "integer", "format": "int32", "nullable": true, "minimum": 0, "exclusiveMinimum": true},
                "kids": {"type": "array", "items": {"$ref": "#/s/N"}}}}
        }});
        let schema = convert(doc, "/s/N", Direction::Request, Dialect::OpenApi30);
        assert!(valid(
            &schema,
            Direction::Request,
            json!({"v": null, "kids": [{"v": 1, "kids": [{}]}]})
        ));
        assert!(!valid(&schema, Direction::Request, json!({"v": 0})));
        assert!(!valid(
            &schema,
            Direction::Request,
            json!({"kids": [{"kids": [{"x": 1}]}]})
        ));
    }

    #[test]
    fn documents_that_expand_without_bound_are_refused() {
        // Each level references the previous one twice: 2^40 nodes if inlined naively.
        let mut defs = serde_json::Map::new();
        defs.insert("L0".into(), json!({"type": "string"}));
        for i in 1..40 {
            let prev = format!("#/s/L{}", i - 1);
            defs.insert(
                format!("L{i}"),
                json!({"type": "object", "properties": {"a": {"$ref": prev}, "b": {"$ref": prev}}}),
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("doc.json");
        std::fs::write(&path, json!({"s": defs}).to_string()).unwrap();
        let (mut docs, root) = Documents::open(&path).unwrap();
        let place = Place {
            pointer: "/s/L39".into(),
            ..root
        };
        let result =
            Converter::new(&mut docs, Dialect::OpenApi31).convert(&place, Direction::Request, true);
        assert!(result.unwrap_err().message.contains("expand to more than"));
    }
}
