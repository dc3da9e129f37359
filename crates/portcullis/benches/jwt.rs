//! Token verification per algorithm: cold (every request verifies the signature) against
//! warm (the verified-token cache answers), beside the bare parse as a baseline, all in one
//! run so the ratios hold on a noisy machine.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis::authn::jwks::KeyStore;
use portcullis::authn::keys::{Algorithm, KeySet};
use portcullis::authn::sign::SigningKey;
use portcullis::authn::{Authenticator, Issuer, now_secs, token};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;

fn rsa_pem() -> String {
    // Generated once per run with aws-lc-rs; RSA key generation is slow but not measured.
    let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("rsa key");
    let der =
        aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&key).expect("pkcs8");
    use base64::Engine;
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(der.as_ref())
    )
}

fn ed25519_key() -> SigningKey {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let doc = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("ed25519");
    use base64::Engine;
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(doc.as_ref())
    );
    SigningKey::from_text(&pem, Some("ed"), Algorithm::Rs256).expect("ed key")
}

fn authenticator(key: &SigningKey, cache: usize) -> Authenticator {
    let alg = key.algorithm();
    let keys = KeySet::from_jwks(&json!({"keys": [key.public_jwk()]}), &[alg])
        .expect("jwks")
        .keys;
    let issuer = Issuer {
        name: Arc::from("bench"),
        issuer: "https://idp.bench".into(),
        audiences: vec!["api".into()],
        algorithms: vec![alg],
        clock_skew: Duration::from_secs(30),
        max_lifetime: Duration::from_secs(3600),
        required_claims: vec![],
        token_types: None,
        binding_required: false,
        keys: KeyStore::fixed(keys),
    };
    Authenticator::new(vec![issuer], Arc::default(), 8192, cache)
}

fn claims() -> Map<String, Value> {
    let now = now_secs() as u64;
    json!({"iss": "https://idp.bench", "aud": "api", "sub": "alice", "iat": now, "exp": now + 3000,
           "scope": "items:read items:write", "jti": "bench-token"})
    .as_object()
    .cloned()
    .unwrap_or_default()
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let keys = vec![
        SigningKey::generate_es256("es").expect("es256").0,
        SigningKey::from_text(&rsa_pem(), Some("rs"), Algorithm::Rs256).expect("rs256"),
        SigningKey::from_text(&rsa_pem(), Some("ps"), Algorithm::Ps256).expect("ps256"),
        ed25519_key(),
    ];
    let mut group = c.benchmark_group("jwt");
    for key in &keys {
        let token = key.sign(&claims(), "at+jwt", &Map::new()).expect("token");
        let name = key.algorithm().name();
        group.bench_function(format!("{name}/parse_only"), |b| {
            b.iter(|| token::parse(&token, 8192).expect("parse").claims.exp)
        });
        let cold = authenticator(key, 0);
        group.bench_function(format!("{name}/verify_uncached"), |b| {
            b.iter(|| runtime.block_on(cold.authenticate(&token)).expect("valid"))
        });
        let warm = authenticator(key, 1000);
        group.bench_function(format!("{name}/verify_cached"), |b| {
            b.iter(|| runtime.block_on(warm.authenticate(&token)).expect("valid"))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
