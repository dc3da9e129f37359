//! The JWS parser never panics, and refuses what the strict rules refuse: an `alg` of
//! `none` or `HS*`, `crit`, token-supplied keys, and anything not three canonical segments.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::authn::token::parse;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(parsed) = parse(token, 8192) else {
        return;
    };
    assert_eq!(token.split('.').count(), 3);
    let header = token.split('.').next().unwrap_or_default();
    let decoded = base64_url(header).expect("an accepted header is canonical base64url");
    let json: serde_json::Value =
        serde_json::from_slice(&decoded).expect("an accepted header is JSON");
    let alg = json.get("alg").and_then(|a| a.as_str()).unwrap_or_default();
    assert!(!alg.eq_ignore_ascii_case("none") && !alg.to_ascii_uppercase().starts_with("HS"));
    for forbidden in ["crit", "jwk", "jku", "x5u", "x5c"] {
        assert!(
            json.get(forbidden).is_none(),
            "accepted a header with {forbidden}"
        );
    }
    assert_eq!(parsed.header.alg.name(), alg);
});

fn base64_url(text: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in text.bytes() {
        let v = ALPHABET.iter().position(|c| *c == b)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}
