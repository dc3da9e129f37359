//! Path, query, header and cookie parameters: read from the request exactly once each,
//! coerced to their declared types (`form` and `simple` styles, arrays exploded or
//! delimited), then checked against their schemas. A parameter sent twice when the API does
//! not declare an array is refused: two readers could otherwise pick different copies
//! (parameter pollution).

use super::FieldError;
use super::schema::Schema;
use http::HeaderMap;
use serde_json::Value;

/// Where a parameter is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Location {
    Path,
    Query,
    Header,
    Cookie,
}

impl Location {
    pub fn parse(text: &str) -> Option<Location> {
        match text {
            "path" => Some(Location::Path),
            "query" => Some(Location::Query),
            "header" => Some(Location::Header),
            "cookie" => Some(Location::Cookie),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Location::Path => "path",
            Location::Query => "query",
            Location::Header => "header",
            Location::Cookie => "cookie",
        }
    }
}

/// The scalar type text is coerced to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scalar {
    String,
    Integer,
    Number,
    Boolean,
}

impl Scalar {
    /// The scalar named by a schema's `type` (the first non-null one); strings otherwise.
    pub fn of(schema: &Value) -> Scalar {
        let name = match schema.get("type") {
            Some(Value::String(t)) => t.as_str(),
            Some(Value::Array(types)) => types
                .iter()
                .filter_map(Value::as_str)
                .find(|t| *t != "null")
                .unwrap_or("string"),
            _ => "string",
        };
        match name {
            "integer" => Scalar::Integer,
            "number" => Scalar::Number,
            "boolean" => Scalar::Boolean,
            _ => Scalar::String,
        }
    }

    fn coerce(self, text: &str) -> Option<Value> {
        match self {
            Scalar::String => Some(Value::String(text.to_string())),
            Scalar::Integer => {
                let digits = text.strip_prefix('-').unwrap_or(text);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                serde_json::from_str::<serde_json::Number>(text)
                    .ok()
                    .filter(|n| n.is_i64() || n.is_u64())
                    .map(Value::Number)
            }
            Scalar::Number => serde_json::from_str::<serde_json::Number>(text)
                .ok()
                .map(Value::Number),
            Scalar::Boolean => match text {
                "true" => Some(Value::Bool(true)),
                "false" => Some(Value::Bool(false)),
                _ => None,
            },
        }
    }

    fn name(self) -> &'static str {
        match self {
            Scalar::String => "string",
            Scalar::Integer => "integer",
            Scalar::Number => "number",
            Scalar::Boolean => "boolean",
        }
    }
}

/// How a parameter's text becomes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// One value.
    Scalar(Scalar),
    /// An array sent as repeated parameters (`form`, exploded).
    Repeated(Scalar),
    /// An array sent as one value split on a delimiter.
    Delimited(Scalar, char),
}

/// One declared parameter, ready to check.
#[derive(Debug)]
pub(crate) struct Parameter {
    pub name: String,
    pub location: Location,
    pub required: bool,
    pub shape: Shape,
    pub schema: Schema,
    /// `query.name` and the like: the field named in errors.
    pub field: String,
}

/// Why a parameter declaration cannot be enforced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParameterError {
    /// Object-typed parameters need a serialisation rule this gateway does not implement.
    #[error("object-typed parameters are not supported")]
    ObjectType,
    /// A style this location does not have (or that is not implemented).
    #[error("style `{style}` is not supported for {location} parameters")]
    Style {
        /// The style as written.
        style: String,
        /// `query`, `header`, `path` or `cookie`.
        location: &'static str,
    },
}

impl Parameter {
    /// Builds a parameter; `style` and `explode` as the document gives them (or defaults).
    pub fn new(
        name: String,
        location: Location,
        required: bool,
        style: Option<&str>,
        explode: Option<bool>,
        schema_json: &Value,
        schema: Schema,
    ) -> Result<Parameter, ParameterError> {
        let default_style = match location {
            Location::Query | Location::Cookie => "form",
            Location::Path | Location::Header => "simple",
        };
        let style = style.unwrap_or(default_style);
        let explode = explode.unwrap_or(style == "form");
        let is_array = match schema_json.get("type") {
            Some(Value::String(t)) => t == "array",
            Some(Value::Array(types)) => types.iter().any(|t| t == "array"),
            _ => false,
        };
        let is_object = match schema_json.get("type") {
            Some(Value::String(t)) => t == "object",
            Some(Value::Array(types)) => types.iter().any(|t| t == "object"),
            _ => false,
        };
        if is_object {
            return Err(ParameterError::ObjectType);
        }
        let item = schema_json
            .get("items")
            .map(Scalar::of)
            .unwrap_or(Scalar::String);
        let shape = match (style, is_array) {
            ("form" | "simple", false) => Shape::Scalar(Scalar::of(schema_json)),
            ("form", true) if explode && location == Location::Query => Shape::Repeated(item),
            ("form" | "simple", true) => Shape::Delimited(item, ','),
            ("spaceDelimited", true) if location == Location::Query => Shape::Delimited(item, ' '),
            ("pipeDelimited", true) if location == Location::Query => Shape::Delimited(item, '|'),
            (other, _) => {
                return Err(ParameterError::Style {
                    style: other.to_string(),
                    location: location.as_str(),
                });
            }
        };
        let field = format!("{}.{name}", location.as_str());
        Ok(Parameter {
            name,
            location,
            required: required || location == Location::Path,
            shape,
            schema,
            field,
        })
    }

    /// Checks the values sent for this parameter (none, one or several).
    fn check(&self, values: &[&str], errors: &mut Vec<FieldError>) {
        let value = match (self.shape, values) {
            (_, []) => {
                if self.required {
                    errors.push(FieldError::new(
                        self.field.clone(),
                        "required",
                        "is required".into(),
                    ));
                }
                return;
            }
            (Shape::Repeated(item), values) => self.coerce_all(item, values.iter().copied()),
            (_, [_, _, ..]) => {
                errors.push(FieldError::new(
                    self.field.clone(),
                    "duplicate_parameter",
                    "must be sent once".into(),
                ));
                return;
            }
            (Shape::Scalar(scalar), [one]) => scalar.coerce(one).ok_or(scalar),
            (Shape::Delimited(item, separator), [one]) => {
                self.coerce_all(item, one.split(separator))
            }
        };
        match value {
            Ok(value) => {
                if !self.schema.is_valid(&value) {
                    errors.extend(self.schema.errors(&value, &self.field));
                }
            }
            Err(scalar) => errors.push(FieldError::new(
                self.field.clone(),
                "type",
                format!("must be of type {}", scalar.name()),
            )),
        }
    }

    fn coerce_all<'a>(
        &self,
        item: Scalar,
        texts: impl Iterator<Item = &'a str>,
    ) -> Result<Value, Scalar> {
        texts
            .map(|t| item.coerce(t).ok_or(item))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array)
    }
}

/// The request facts parameters are read from.
pub(crate) struct Sent<'a> {
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// Path parameters as matched (still percent-encoded).
    pub path: &'a [(String, String)],
}

/// Checks every declared parameter; in strict mode, also refuses undeclared query
/// parameters.
pub(crate) fn check(
    params: &[Parameter],
    strict: bool,
    sent: &Sent<'_>,
    errors: &mut Vec<FieldError>,
) {
    let wants = |location| params.iter().any(|p| p.location == location);
    // Read only what some parameter (or strictness) needs: most operations declare few.
    let query = sent.query.filter(|_| strict || wants(Location::Query));
    let query = match query.map(parse_query).transpose() {
        Ok(query) => query.unwrap_or_default(),
        Err(()) => {
            errors.push(FieldError::new(
                "query".into(),
                "encoding",
                "is not valid percent-encoded UTF-8".into(),
            ));
            return;
        }
    };
    let cookies = if wants(Location::Cookie) {
        cookies(sent.headers)
    } else {
        Vec::new()
    };
    let mut decoded_path = Vec::with_capacity(sent.path.len());
    for (name, raw) in sent.path {
        match percent_encoding::percent_decode_str(raw).decode_utf8() {
            Ok(text) => decoded_path.push((name.as_str(), text.into_owned())),
            Err(_) => errors.push(FieldError::new(
                format!("path.{name}"),
                "encoding",
                "is not valid UTF-8".into(),
            )),
        }
    }
    for param in params {
        let values: Vec<&str> = match param.location {
            Location::Query => query
                .iter()
                .filter(|(n, _)| *n == param.name)
                .map(|(_, v)| v.as_str())
                .collect(),
            Location::Path => decoded_path
                .iter()
                .filter(|(n, _)| *n == param.name)
                .map(|(_, v)| v.as_str())
                .collect(),
            Location::Header => {
                let mut values = Vec::new();
                for value in sent.headers.get_all(param.name.as_str()) {
                    match value.to_str() {
                        Ok(text) => values.push(text.trim()),
                        Err(_) => {
                            errors.push(FieldError::new(
                                param.field.clone(),
                                "encoding",
                                "is not visible ASCII".into(),
                            ));
                        }
                    }
                }
                values
            }
            Location::Cookie => cookies
                .iter()
                .filter(|(n, _)| *n == param.name)
                .map(|(_, v)| *v)
                .collect(),
        };
        param.check(&values, errors);
    }
    if strict {
        let mut reported: Vec<&str> = Vec::new();
        for (name, _) in &query {
            let declared = params
                .iter()
                .any(|p| p.location == Location::Query && p.name == *name);
            if !declared && !reported.contains(&name.as_str()) && reported.len() < super::MAX_ERRORS
            {
                reported.push(name);
                errors.push(FieldError::new(
                    format!("query.{}", name),
                    "unknown_parameter",
                    "is not a documented parameter".into(),
                ));
            }
        }
    }
}

/// How the fields of an `application/x-www-form-urlencoded` body become a JSON object for
/// its schema: each documented property's text is coerced to its type; an undocumented field
/// stays a string (and the schema's strictness decides).
#[derive(Debug, Default)]
pub(crate) struct FormFields {
    fields: Vec<(String, Shape)>,
}

impl FormFields {
    /// The fields a (rewritten) object schema documents.
    pub fn of(schema: &Value) -> FormFields {
        let fields = schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|props| {
                props
                    .iter()
                    .map(|(name, prop)| {
                        let is_array = prop.get("type").is_some_and(|t| {
                            t == "array"
                                || t.as_array()
                                    .is_some_and(|ts| ts.iter().any(|t| t == "array"))
                        });
                        let shape = if is_array {
                            Shape::Repeated(prop.get("items").map_or(Scalar::String, Scalar::of))
                        } else {
                            Shape::Scalar(Scalar::of(prop))
                        };
                        (name.clone(), shape)
                    })
                    .collect()
            })
            .unwrap_or_default();
        FormFields { fields }
    }

    /// The body as an object, or the fields that cannot be one (bad encoding, a field sent
    /// twice that is not an array, text that is not of the field's type).
    pub fn read(&self, body: &[u8]) -> Result<Value, Vec<FieldError>> {
        let text = std::str::from_utf8(body).map_err(|_| {
            vec![FieldError::new(
                String::new(),
                "encoding",
                "is not valid UTF-8".into(),
            )]
        })?;
        let pairs = parse_query(text).map_err(|()| {
            vec![FieldError::new(
                String::new(),
                "encoding",
                "is not valid percent-encoded UTF-8".into(),
            )]
        })?;
        let mut object = serde_json::Map::new();
        let mut errors = Vec::new();
        for (name, value) in &pairs {
            if errors.len() >= super::MAX_ERRORS {
                break;
            }
            let field = format!("/{}", super::document::escape_token(name));
            let shape = self
                .fields
                .iter()
                .find(|(n, _)| n == name)
                .map_or(Shape::Scalar(Scalar::String), |(_, s)| *s);
            let (scalar, repeated) = match shape {
                Shape::Repeated(item) | Shape::Delimited(item, _) => (item, true),
                Shape::Scalar(scalar) => (scalar, false),
            };
            let Some(coerced) = scalar.coerce(value) else {
                errors.push(FieldError::new(
                    field,
                    "type",
                    format!("must be of type {}", scalar.name()),
                ));
                continue;
            };
            match (object.get_mut(name.as_str()), repeated) {
                (Some(Value::Array(items)), true) => items.push(coerced),
                (Some(_), _) => errors.push(FieldError::new(
                    field,
                    "duplicate_parameter",
                    "must be sent once".into(),
                )),
                (None, true) => {
                    object.insert(name.clone(), Value::Array(vec![coerced]));
                }
                (None, false) => {
                    object.insert(name.clone(), coerced);
                }
            }
        }
        if errors.is_empty() {
            Ok(Value::Object(object))
        } else {
            Err(errors)
        }
    }
}

/// Splits and decodes an `application/x-www-form-urlencoded` query.
fn parse_query(query: &str) -> Result<Vec<(String, String)>, ()> {
    let decode = |text: &str| -> Result<String, ()> {
        let spaced = text.replace('+', " ");
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| ())
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(name)?, decode(value)?))
        })
        .collect()
}

/// `name=value` pairs of every `Cookie` header.
fn cookies(headers: &HeaderMap) -> Vec<(&str, &str)> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            Some((name.trim(), value.trim().trim_matches('"')))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::convert::Direction;

    fn param(name: &str, location: Location, schema: Value, style: Option<&str>) -> Parameter {
        let compiled = Schema::compile(&schema, Direction::Request).unwrap();
        Parameter::new(name.into(), location, false, style, None, &schema, compiled).unwrap()
    }

    fn run(params: &[Parameter], query: &str) -> Vec<(String, &'static str)> {
        let headers = HeaderMap::new();
        let sent = Sent {
            query: Some(query),
            headers: &headers,
            path: &[],
        };
        let mut errors = Vec::new();
        check(params, true, &sent, &mut errors);
        errors.into_iter().map(|e| (e.field, e.code)).collect()
    }

    #[test]
    fn coercion_arrays_pollution_and_strictness() {
        let params = [
            param(
                "limit",
                Location::Query,
                serde_json::json!({"type": "integer", "maximum": 100}),
                None,
            ),
            param(
                "tags",
                Location::Query,
                serde_json::json!({"type": "array", "items": {"type": "string"}}),
                None,
            ),
            param(
                "ids",
                Location::Query,
                serde_json::json!({"type": "array", "items": {"type": "integer"}}),
                Some("pipeDelimited"),
            ),
            param(
                "flag",
                Location::Query,
                serde_json::json!({"type": "boolean"}),
                None,
            ),
        ];
        assert!(run(&params, "limit=5&tags=a&tags=b&ids=1|2&flag=true").is_empty());
        assert_eq!(
            run(&params, "limit=5&limit=6"),
            [("query.limit".to_string(), "duplicate_parameter")]
        );
        assert_eq!(
            run(&params, "limit=five"),
            [("query.limit".to_string(), "type")]
        );
        assert_eq!(
            run(&params, "limit=1e3"),
            [("query.limit".to_string(), "type")]
        );
        assert_eq!(
            run(&params, "limit=500"),
            [("query.limit".to_string(), "maximum")]
        );
        assert_eq!(run(&params, "ids=1|x"), [("query.ids".to_string(), "type")]);
        assert_eq!(
            run(&params, "flag=yes"),
            [("query.flag".to_string(), "type")]
        );
        assert_eq!(
            run(&params, "debug=1"),
            [("query.debug".to_string(), "unknown_parameter")]
        );
        assert_eq!(
            run(&params, "limit=%ff"),
            [("query".to_string(), "encoding")]
        );
    }
}
