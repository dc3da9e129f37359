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

use super::convert::Direction;
use super::{FieldError, MAX_ERRORS};
use jsonschema::{Draft, PatternOptions, ValidationError, Validator};
use serde_json::Value;
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
    use crate::validate::convert::{Converter, Dialect};
    use crate::validate::document::{Documents, Place};
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
