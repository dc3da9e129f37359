//! Path canonicalisation: idempotent, and nothing it accepts climbs above the root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::normalize::canonical_path;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(canonical) = canonical_path(path) else {
        return;
    };
    assert!(canonical.starts_with('/'), "{path:?} -> {canonical:?}");
    assert!(
        canonical.split('/').all(|s| s != ".." && s != "."),
        "{path:?} -> {canonical:?} keeps a dot segment"
    );
    assert!(!canonical.contains("//"), "{path:?} -> {canonical:?}");
    let again = canonical_path(&canonical).expect("a canonical path is accepted again");
    assert_eq!(again, canonical, "not idempotent for {path:?}");
});
