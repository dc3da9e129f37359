//! Request-body validation: a 1 KB JSON body against a 20-property schema (`benches/data/`),
//! next to plain `serde_json` parsing of the same bytes (the baseline, measured in the same
//! run) and the strict JSON guard alone.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis::discovery::Inventory;
use portcullis::json::{JsonLimits, parse_strict};
use portcullis::validate::{ApiContract, ContractSettings};
use std::hint::black_box;

// The gateway binary's allocator: parsing builds many small values, so the figure depends on
// it, and this is the figure the gateway sees.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DOCUMENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/benches/data/twenty-properties.json"
);
const BODY: &[u8] = include_bytes!("data/twenty-properties-body.json");

fn bench(c: &mut Criterion) {
    let contract = ApiContract::load(
        std::path::Path::new(DOCUMENT),
        ContractSettings::default(),
        &Inventory::default(),
    )
    .unwrap();
    let create = contract
        .find(&http::Method::POST, "/items")
        .unwrap()
        .operation;
    let limits = JsonLimits::default();
    assert!(create.check_body("application/json", BODY, limits).is_ok());
    let mut tampered = String::from_utf8(BODY.to_vec()).unwrap();
    tampered.insert_str(1, "\"is_admin\":true,");
    assert!(
        create
            .check_body("application/json", tampered.as_bytes(), limits)
            .is_err()
    );

    let mut group = c.benchmark_group(format!("validate_{}_byte_body", BODY.len()));
    group.bench_function("serde_json_parse_baseline", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(BODY)).unwrap())
    });
    group.bench_function("strict_json_guard", |b| {
        b.iter(|| parse_strict(black_box(BODY), limits).unwrap())
    });
    group.bench_function("guard_and_20_property_schema", |b| {
        b.iter(|| create.check_body("application/json", black_box(BODY), limits))
    });
    group.bench_function("refused_unknown_property", |b| {
        b.iter(|| create.check_body("application/json", black_box(tampered.as_bytes()), limits))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
