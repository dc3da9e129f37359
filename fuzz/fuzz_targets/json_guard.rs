//! The strict JSON guard agrees with serde_json on everything it accepts, and when it
//! refuses JSON that serde_json reads, the reason is one of its own rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::json::{JsonError, JsonLimits, parse_strict};

fuzz_target!(|data: &[u8]| {
    let limits = JsonLimits {
        max_depth: 16,
        max_string_bytes: 64,
    };
    let strict = parse_strict(data, limits);
    let plain = serde_json::from_slice::<serde_json::Value>(data);
    match (strict, plain) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "the guard changed the value"),
        (Ok(a), Err(e)) => panic!("the guard accepted what serde_json refuses ({e}): {a}"),
        (Err(JsonError::Syntax(_)), Ok(v)) => panic!("syntax error for valid JSON {v}"),
        (Err(JsonError::DuplicateKey | JsonError::TooDeep | JsonError::StringTooLong), Ok(_)) => {}
        (Err(_), Err(_)) => {}
    }
    // A duplicate key is always refused: repeat the first key of an accepted object.
    if let Ok(serde_json::Value::Object(map)) = parse_strict(data, limits)
        && let Some((key, value)) = map.iter().next()
    {
        let twice = format!(
            "{{{k}:{v},{k}:{v}}}",
            k = serde_json::to_string(key).unwrap_or_default(),
            v = value
        );
        assert!(matches!(
            parse_strict(twice.as_bytes(), JsonLimits::default()),
            Err(JsonError::DuplicateKey)
        ));
    }
});
