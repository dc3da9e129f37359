//! The cost of a DPoP proof (RFC 9449) per request, against its floor: one ES256
//! verification of the same bytes. The difference is what DPoP adds beyond the signature
//! (parsing, the jwk, the claims, the thumbprint, `ath`); the replay check with the memory
//! store is measured on its own. All in one run, so the ratios hold on a noisy machine.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis::authn::dpop::{self, DpopSettings, ReplayCache};
use portcullis::authn::keys::{Algorithm, VerifyingKey};
use portcullis::authn::sign::SigningKey;
use portcullis::authn::token;
use serde_json::{Map, json};
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let (client, _) = SigningKey::generate_es256("client").unwrap();
    let at = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLW9mLXRoZS1hY2Nlc3MtdG9rZW4";
    let url = "https://api.example.test/api/items";
    let now = portcullis::authn::now_secs();
    let mut header = Map::new();
    header.insert("jwk".into(), client.public_jwk());
    let claims = json!({"htm": "GET", "htu": url, "iat": now, "jti": "j-1", "ath": dpop::ath(at)});
    let proof = client
        .sign(claims.as_object().unwrap(), "dpop+jwt", &header)
        .unwrap();
    let settings = DpopSettings {
        max_age: Duration::from_secs(3600),
        clock_skew: Duration::from_secs(5),
    };
    let target = dpop::ProofTarget {
        method: "GET",
        htu: url,
        access_token: at,
    };
    let key = VerifyingKey::from_jwk(&client.public_jwk(), &[Algorithm::Es256]).unwrap();
    let parsed = token::parse_proof(&proof, 8192).unwrap().0;
    let (input, signature) = (parsed.signing_input.to_vec(), parsed.signature.clone());
    let mut group = c.benchmark_group("dpop");
    group.bench_function("es256_verify_only", |b| {
        b.iter(|| assert!(key.verify(&input, &signature)))
    });
    let jwk = client.public_jwk();
    group.bench_function("jwk_to_key", |b| {
        b.iter(|| VerifyingKey::from_jwk(&jwk, &[Algorithm::Es256]).unwrap())
    });
    group.bench_function("parse_only", |b| {
        b.iter(|| token::parse_proof(&proof, 8192).unwrap())
    });
    group.bench_function("thumbprint", |b| {
        b.iter(|| dpop::thumbprint(jwk.as_object().unwrap()).unwrap())
    });
    group.bench_function("proof_verify", |b| {
        b.iter(|| dpop::verify(&proof, target, &[Algorithm::Es256], &settings, now).unwrap())
    });
    // Ids expire as fast as they come (each `now` is one later), so the cache stays at a
    // steady size instead of filling up over millions of iterations.
    let cache = ReplayCache::new(100_000);
    let mut n = 0u64;
    group.bench_function("replay_first_use_memory", |b| {
        b.iter(|| {
            n += 1;
            let t = n as f64;
            std::hint::black_box(cache.first_use("jkt", &n.to_string(), t + 50_000.0, t))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
