//! A strict JSON reader: refuses duplicate keys (serde_json silently keeps the last one,
//! which lets two readers of one document disagree), nesting over a depth bound and
//! strings over a length bound. Invalid UTF-8 and lone surrogates are refused by the parser.

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::cell::Cell;
use std::fmt;

/// Bounds for [`parse_strict`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonLimits {
    /// Deepest nesting of arrays and objects (the top level counts as 1).
    pub max_depth: usize,
    /// Longest string (keys included), in bytes.
    pub max_string_bytes: usize,
}

impl Default for JsonLimits {
    fn default() -> Self {
        JsonLimits {
            max_depth: 32,
            max_string_bytes: 65536,
        }
    }
}

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// An object has the same key twice.
    #[error("duplicate key")]
    DuplicateKey,
    /// Nesting deeper than allowed.
    #[error("nested too deeply")]
    TooDeep,
    /// A string longer than allowed.
    #[error("string too long")]
    StringTooLong,
    /// Not JSON (syntax, encoding, trailing data).
    #[error("invalid JSON: {0}")]
    Syntax(String),
}

impl JsonError {
    /// A short machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            JsonError::DuplicateKey => "duplicate_key",
            JsonError::TooDeep => "too_deep",
            JsonError::StringTooLong => "string_too_long",
            JsonError::Syntax(_) => "invalid_json",
        }
    }
}

/// Parses `bytes` as one JSON document under `limits`.
pub fn parse_strict(bytes: &[u8], limits: JsonLimits) -> Result<Value, JsonError> {
    let violation = Cell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let seed = Strict {
        depth: 0,
        limits,
        violation: &violation,
    };
    let parsed = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match (parsed, violation.take()) {
        (_, Some(violation)) => Err(violation),
        (Ok(value), None) => Ok(value),
        (Err(e), None) => Err(JsonError::Syntax(e.to_string())),
    }
}

#[derive(Clone, Copy)]
struct Strict<'a> {
    depth: usize,
    limits: JsonLimits,
    violation: &'a Cell<Option<JsonError>>,
}

impl Strict<'_> {
    fn fail<E: serde::de::Error>(&self, violation: JsonError) -> E {
        let message = violation.to_string();
        self.violation.set(Some(violation));
        E::custom(message)
    }

    fn nested<E: serde::de::Error>(self) -> Result<Self, E> {
        if self.depth + 1 > self.limits.max_depth {
            return Err(self.fail(JsonError::TooDeep));
        }
        Ok(Strict {
            depth: self.depth + 1,
            ..self
        })
    }

    fn check_len<E: serde::de::Error>(&self, s: &str) -> Result<(), E> {
        if s.len() > self.limits.max_string_bytes {
            return Err(self.fail(JsonError::StringTooLong));
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

struct Key<'a>(Strict<'a>);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for Key<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        self.0.check_len(v)?;
        Ok(v.to_string())
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        self.check_len(v)?;
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
        self.check_len(&v)?;
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut object = Map::new();
        while let Some(key) = map.next_key_seed(Key(inner))? {
            let value = map.next_value_seed(inner)?;
            // One lookup serves both the duplicate check and the insertion.
            match object.entry(key) {
                serde_json::map::Entry::Vacant(slot) => {
                    slot.insert(value);
                }
                serde_json::map::Entry::Occupied(_) => {
                    return Err(self.fail(JsonError::DuplicateKey));
                }
            }
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Value, JsonError> {
        parse_strict(
            text.as_bytes(),
            JsonLimits {
                max_depth: 3,
                max_string_bytes: 8,
            },
        )
    }

    #[test]
    fn accepts_what_serde_json_accepts_within_bounds() {
        let text = r#"{"a":[1,2.5,-3],"b":{"c":null,"d":true}}"#;
        assert_eq!(parse(text).ok(), serde_json::from_str::<Value>(text).ok());
    }

    #[test]
    fn refuses_duplicates_depth_length_and_bad_text() {
        assert_eq!(parse(r#"{"a":1,"a":2}"#), Err(JsonError::DuplicateKey));
        assert_eq!(
            parse(r#"{"x":{"a":1,"a":2}}"#),
            Err(JsonError::DuplicateKey)
        );
        assert_eq!(parse("[[[[1]]]]"), Err(JsonError::TooDeep));
        assert!(parse("[[[1]]]").is_ok());
        assert_eq!(parse(r#""123456789""#), Err(JsonError::StringTooLong));
        assert_eq!(parse(r#"{"123456789":1}"#), Err(JsonError::StringTooLong));
        assert_eq!(
            parse(r#""\ud800""#).map_err(|e| e.code()),
            Err("invalid_json")
        );
        assert_eq!(
            parse_strict(b"\"\xff\"", JsonLimits::default()).map_err(|e| e.code()),
            Err("invalid_json")
        );
        assert_eq!(parse("{} x").map_err(|e| e.code()), Err("invalid_json"));
    }
}
