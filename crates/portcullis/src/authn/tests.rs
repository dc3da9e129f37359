use super::keys::{Algorithm, KeySet, VerifyingKey};
use super::sign::SigningKey;
use super::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

fn hex(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

fn wycheproof(file: &str) -> Value {
    let path = format!(
        "{}/../../tests/data/wycheproof/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("vector file")).expect("vector JSON")
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn strip_zero(bytes: Vec<u8>) -> Vec<u8> {
    bytes.into_iter().skip_while(|b| *b == 0).collect()
}

/// Runs every vector of a file through the verifier; returns (verified valid, refused invalid).
fn run(file: &str, alg: Algorithm, jwk_of: impl Fn(&Value) -> Option<Value>) -> (usize, usize) {
    run_through(file, jwk_of, |jwk, msg, sig| {
        VerifyingKey::from_jwk(jwk, &[alg])
            .unwrap_or_else(|e| panic!("{file}: key refused: {e}"))
            .verify(msg, sig)
    })
}

/// Runs every vector of a file through `check(jwk, message, signature)`.
fn run_through(
    file: &str,
    jwk_of: impl Fn(&Value) -> Option<Value>,
    check: impl Fn(&Value, &[u8], &[u8]) -> bool,
) -> (usize, usize) {
    let doc = wycheproof(file);
    let (mut valid, mut invalid) = (0, 0);
    for group in doc["testGroups"].as_array().expect("groups") {
        let Some(jwk) = jwk_of(group) else { continue };
        for test in group["tests"].as_array().expect("tests") {
            let ok = check(
                &jwk,
                &hex(test["msg"].as_str().expect("msg")),
                &hex(test["sig"].as_str().expect("sig")),
            );
            match test["result"].as_str() {
                Some("valid") => {
                    assert!(ok, "{file} tcId {} valid but refused", test["tcId"]);
                    valid += 1;
                }
                Some("invalid") => {
                    assert!(
                        !ok,
                        "{file} tcId {} invalid but accepted ({})",
                        test["tcId"], test["comment"]
                    );
                    invalid += 1;
                }
                _ => {}
            }
        }
    }
    (valid, invalid)
}

#[test]
fn wycheproof_ecdsa_p256_raw_signatures() {
    let (valid, invalid) = run(
        "ecdsa_secp256r1_sha256_p1363_test.json",
        Algorithm::Es256,
        |g| {
            g.get("publicKeyJwk").map(|jwk| {
                let mut jwk = jwk.clone();
                jwk.as_object_mut().map(|m| m.remove("kid"));
                jwk
            })
        },
    );
    assert!(
        valid > 100 && invalid > 50,
        "{valid} valid, {invalid} invalid"
    );
}

#[test]
fn wycheproof_ecdsa_der_signatures_never_verify_as_jws() {
    let doc = wycheproof("ecdsa_secp256r1_sha256_test.json");
    let mut checked = 0;
    for group in doc["testGroups"].as_array().expect("groups") {
        let pk = &group["publicKey"];
        let coord = |name: &str| {
            let bytes = strip_zero(hex(pk[name].as_str().expect("coordinate")));
            let mut padded = vec![0u8; 32usize.saturating_sub(bytes.len())];
            padded.extend(bytes);
            b64(&padded)
        };
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": coord("wx"), "y": coord("wy")});
        let Ok(key) = VerifyingKey::from_jwk(&jwk, &[Algorithm::Es256]) else {
            continue;
        };
        for test in group["tests"].as_array().expect("tests") {
            let ok = key.verify(
                &hex(test["msg"].as_str().expect("msg")),
                &hex(test["sig"].as_str().expect("sig")),
            );
            assert!(
                !ok,
                "a DER-encoded signature verified as a JWS signature (tcId {})",
                test["tcId"]
            );
            checked += 1;
        }
    }
    assert!(checked > 400);
}

#[test]
fn wycheproof_ed25519() {
    let (valid, invalid) = run("ed25519_test.json", Algorithm::EdDsa, |g| {
        g.get("publicKeyJwk").cloned()
    });
    assert!(
        valid > 0 && invalid > 50,
        "{valid} valid, {invalid} invalid"
    );
}

#[test]
fn wycheproof_rsa_pkcs1_and_pss() {
    let rsa_jwk = |g: &Value| {
        let pk = &g["publicKey"];
        Some(json!({
            "kty": "RSA",
            "n": b64(&strip_zero(hex(pk["modulus"].as_str()?))),
            "e": b64(&strip_zero(hex(pk["publicExponent"].as_str()?))),
        }))
    };
    let (valid, invalid) = run(
        "rsa_signature_2048_sha256_test.json",
        Algorithm::Rs256,
        rsa_jwk,
    );
    assert!(
        valid > 0 && invalid > 100,
        "{valid} valid, {invalid} invalid"
    );
    let (valid, invalid) = run(
        "rsa_pss_2048_sha256_mgf1_32_test.json",
        Algorithm::Ps256,
        |g| {
            let mut jwk = g.get("publicKeyJwk")?.clone();
            jwk.as_object_mut().map(|m| m.remove("kid"));
            Some(jwk)
        },
    );
    assert!(valid > 0 && invalid > 0, "{valid} valid, {invalid} invalid");
}

fn without_kid(group: &Value) -> Option<Value> {
    let mut jwk = group.get("publicKeyJwk")?.clone();
    jwk.as_object_mut().map(|m| m.remove("kid"));
    Some(jwk)
}

/// The vectors' keys and signatures through the DPoP proof verifier: each key is taken
/// from a proof header the way a client's would be, each signature verifies exactly as
/// Wycheproof says, and a whole proof carrying any of these signatures (made over other
/// bytes) is refused as a bad signature, never accepted and never a panic.
#[test]
fn wycheproof_vectors_through_the_dpop_proof_verifier() {
    let settings = dpop::DpopSettings {
        max_age: Duration::from_secs(60),
        clock_skew: Duration::from_secs(5),
    };
    let (url, at, now) = ("https://api.test/x", "token", now_secs());
    for (file, alg) in [
        ("ecdsa_secp256r1_sha256_p1363_test.json", Algorithm::Es256),
        ("ed25519_test.json", Algorithm::EdDsa),
    ] {
        let (valid, invalid) = run_through(file, without_kid, |jwk, msg, sig| {
            let members = jwk.as_object().expect("jwk object");
            let key = dpop::proof_key(members, alg)
                .unwrap_or_else(|e| panic!("{file}: proof key refused: {e}"));
            let header = json!({"typ": "dpop+jwt", "alg": alg.name(), "jwk": jwk});
            let claims =
                json!({"htm": "GET", "htu": url, "iat": now, "jti": "j", "ath": dpop::ath(at)});
            let proof = format!(
                "{}.{}.{}",
                b64(header.to_string().as_bytes()),
                b64(claims.to_string().as_bytes()),
                b64(sig)
            );
            assert_eq!(
                dpop::verify(
                    &proof,
                    dpop::ProofTarget {
                        method: "GET",
                        htu: url,
                        access_token: at
                    },
                    &[alg],
                    &settings,
                    now
                ),
                Err(dpop::DpopError::BadSignature),
                "{file}: a proof with a vector's signature"
            );
            key.verify(msg, sig)
        });
        assert!(
            valid > 0 && invalid > 50,
            "{file}: {valid} valid, {invalid} invalid"
        );
    }
}

fn issuer_with(key: &SigningKey) -> Issuer {
    let keys = KeySet::from_jwks(&json!({"keys": [key.public_jwk()]}), &[Algorithm::Es256])
        .expect("jwks")
        .keys;
    Issuer {
        name: Arc::from("test"),
        issuer: "https://idp.test".into(),
        audiences: vec!["api".into()],
        algorithms: vec![Algorithm::Es256],
        clock_skew: Duration::from_secs(30),
        max_lifetime: Duration::from_secs(900),
        required_claims: vec!["sub".into()],
        token_types: None,
        binding_required: false,
        keys: jwks::KeyStore::fixed(keys),
    }
}

fn claims(extra: Value) -> Map<String, Value> {
    let now = now_secs() as u64;
    let mut base = json!({"iss": "https://idp.test", "aud": "api", "sub": "alice", "iat": now, "exp": now + 300, "scope": "items:read"});
    if let (Some(base), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            base.insert(k.clone(), v.clone());
        }
    }
    base.as_object().cloned().unwrap_or_default()
}

async fn check(authenticator: &Authenticator, token: &str) -> Result<String, &'static str> {
    authenticator
        .authenticate(token)
        .await
        .map(|p| p.subject.clone().unwrap_or_default())
        .map_err(|e| e.reason())
}

#[tokio::test]
async fn valid_tokens_pass_and_each_claim_rule_refuses() {
    let (key, _) = SigningKey::generate_es256("k1").expect("key");
    let revocations = Arc::new(revocation::Revocations::default());
    let auth = Authenticator::new(vec![issuer_with(&key)], revocations.clone(), 8192, 100);
    let sign = |extra: Value| {
        key.sign(&claims(extra), "at+jwt", &Map::new())
            .expect("sign")
    };
    let now = now_secs() as u64;
    assert_eq!(check(&auth, &sign(json!({}))).await, Ok("alice".into()));
    assert_eq!(
        check(&auth, &sign(json!({"aud": ["x", "api"]}))).await,
        Ok("alice".into())
    );
    assert_eq!(
        check(&auth, &sign(json!({"exp": now - 60}))).await,
        Err("token_expired")
    );
    assert_eq!(
        check(&auth, &sign(json!({"nbf": now + 120}))).await,
        Err("token_not_yet_valid")
    );
    assert_eq!(
        check(&auth, &sign(json!({"iat": now + 120, "exp": now + 400}))).await,
        Err("iat_in_future")
    );
    assert_eq!(
        check(&auth, &sign(json!({"exp": now + 3600}))).await,
        Err("lifetime_too_long")
    );
    assert_eq!(
        check(&auth, &sign(json!({"aud": "other"}))).await,
        Err("wrong_audience")
    );
    assert_eq!(
        check(&auth, &sign(json!({"iss": "https://evil.test"}))).await,
        Err("unknown_issuer")
    );
    assert_eq!(
        check(&auth, &sign(json!({"exp": "tomorrow"}))).await,
        Err("invalid_claim_type")
    );
    let mut no_exp = claims(json!({}));
    no_exp.remove("exp");
    assert_eq!(
        check(&auth, &key.sign(&no_exp, "JWT", &Map::new()).expect("sign")).await,
        Err("missing_claim")
    );
    let mut no_sub = claims(json!({}));
    no_sub.remove("sub");
    assert_eq!(
        check(&auth, &key.sign(&no_sub, "JWT", &Map::new()).expect("sign")).await,
        Err("missing_claim")
    );
    // Revocation applies to cached verifications too.
    let token = sign(json!({"jti": "t-1"}));
    assert_eq!(check(&auth, &token).await, Ok("alice".into()));
    revocations
        .revoke_jti("t-1", now as f64 + 300.0)
        .await
        .expect("revoke");
    assert_eq!(check(&auth, &token).await, Err("revoked"));
    let old = sign(json!({"sub": "bob", "iat": now - 10}));
    revocations
        .revoke_subject("bob", now as f64)
        .await
        .expect("revoke");
    assert_eq!(check(&auth, &old).await, Err("revoked"));
}

#[tokio::test]
async fn tokens_from_another_implementation_verify_identically() {
    // jsonwebtoken is an independent JWS implementation: what it signs, we accept, and
    // what we refuse after tampering, it refuses too.
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &rng,
    )
    .expect("pkcs8");
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref())
    );
    let ours = SigningKey::from_text(&pem, Some("k1"), Algorithm::Rs256).expect("our key");
    let auth = Authenticator::new(vec![issuer_with(&ours)], Arc::default(), 8192, 0);
    let encoding = jsonwebtoken::EncodingKey::from_ec_pem(pem.as_bytes()).expect("their key");
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("k1".into());
    let theirs = jsonwebtoken::encode(&header, &claims(json!({})), &encoding).expect("their token");
    assert_eq!(check(&auth, &theirs).await, Ok("alice".into()));
    let mine = ours
        .sign(&claims(json!({})), "JWT", &Map::new())
        .expect("our token");
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(ours.public_jwk()).expect("jwk");
    let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("decoding key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&["api"]);
    assert!(jsonwebtoken::decode::<Value>(&mine, &decoding, &validation).is_ok());
    let mut tampered = mine.clone();
    tampered.pop();
    tampered.push(if mine.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(
        check(&auth, &tampered).await.is_err(),
        jsonwebtoken::decode::<Value>(&tampered, &decoding, &validation).is_err()
    );
}
