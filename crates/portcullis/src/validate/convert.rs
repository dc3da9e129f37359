//! OpenAPI schemas rewritten into self-contained JSON Schema 2020-12 documents: references
//! inlined (recursive ones as `$defs`), the 3.0 dialect translated, strict objects and the
//! data's direction made explicit.

use super::document::{Documents, LoadProblem, Place};
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
