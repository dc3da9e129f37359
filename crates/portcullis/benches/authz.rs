//! One authorization decision with the demo policy: embedded Rego and Cedar, next to the
//! bare construction of the policy input they both read (measured in the same run).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, Method};
use portcullis::authn::Principal;
use portcullis::authn::token::Claims;
use portcullis::authz::cedar::CedarPolicy;
use portcullis::authz::engine::RegoPolicy;
use portcullis::authz::{RequestFacts, RouteAuthz, policy_input};
use serde_json::{Map, Value, json};
use std::sync::Arc;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/policies");

fn read(name: &str) -> String {
    std::fs::read_to_string(format!("{DIR}/{name}")).expect("example policy file")
}

fn bench(c: &mut Criterion) {
    let data: Value = serde_json::from_str(&read("data.json")).unwrap();
    let entities: Value = serde_json::from_str(&read("entities.json")).unwrap();
    let rego = RegoPolicy::new(
        &[("authz.rego".into(), read("authz.rego"))],
        &[data],
        "data.api.authz.allow",
    )
    .unwrap();
    let cedar = CedarPolicy::new(
        &[("authz.cedar".into(), read("authz.cedar"))],
        Some(&entities),
    )
    .unwrap();
    let mut all = Map::new();
    all.insert("roles".into(), json!(["user"]));
    let alice = Principal {
        issuer: Arc::from("bench"),
        subject: Some("alice".into()),
        scopes: vec!["items:read".into(), "items:write".into()],
        claims: Claims {
            sub: Some("alice".into()),
            all,
            ..Claims::default()
        },
    };
    let route = RouteAuthz {
        resource_type: "items".into(),
        resource_id: Some("{id}".into()),
        require_mfa: vec![],
    };
    let params = vec![(Arc::from("id"), "2".to_string())];
    let headers = HeaderMap::new();
    let method = Method::PUT;
    let facts = || RequestFacts {
        method: &method,
        path: "/api/items/2",
        params: &params,
        client_ip: None,
        headers: &headers,
        mtls_identity: None,
        upgrade: None,
        grpc: false,
    };
    let input = policy_input(&route, Some(&alice), false, &facts());
    assert!(rego.decide(&input).unwrap().allow && cedar.decide(&input).unwrap().allow);
    let mut group = c.benchmark_group("authz");
    group.bench_function("input_construction", |b| {
        b.iter(|| policy_input(&route, Some(&alice), false, &facts()))
    });
    group.bench_function("rego_decision", |b| {
        b.iter(|| rego.decide(&input).unwrap().allow)
    });
    group.bench_function("cedar_decision", |b| {
        b.iter(|| cedar.decide(&input).unwrap().allow)
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
