//! DPoP-bound tokens (RFC 9449) through the binary: `binding: required`, replay across two
//! instances sharing Redis and Redis down failing closed, stateless server nonces, the CLI's
//! tokens and proofs sent by curl, and the demo's DPoP call. The refusal matrix is in
//! `binding.rs`.

use crate::identity::{ISSUER, baseline_claims, jwks, now, protected, token};
use crate::util::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use portcullis::authn::dpop::{ath, thumbprint};
use portcullis::authn::sign::SigningKey;
use serde_json::{Map, Value, json};

/// A proof by `key` with `claims`, `extra` header members (which may replace `jwk`).
fn proof_with(key: &SigningKey, claims: Value, extra: Value) -> String {
    let mut header = Map::new();
    header.insert("jwk".into(), key.public_jwk());
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        header.insert(k, v);
    }
    key.sign(claims.as_object().unwrap(), "dpop+jwt", &header)
        .unwrap()
}

fn claims_for(method: &str, url: &str, at: &str) -> Value {
    json!({
        "htm": method, "htu": url, "iat": now(), "ath": ath(at),
        "jti": portcullis::session::seal::random_token(16).unwrap(),
    })
}

fn bound_token(key: &SigningKey, client: &SigningKey) -> String {
    let mut claims = baseline_claims();
    let jkt = thumbprint(client.public_jwk().as_object().unwrap()).unwrap();
    claims.insert("cnf".into(), json!({ "jkt": jkt }));
    token(key, &claims)
}

async fn call(url: &str, scheme: &str, at: &str, proofs: &[String]) -> (u16, String) {
    call_as(url, None, scheme, at, proofs).await
}

/// [`call`] naming `host` in the `Host` header (what `htu` must then name).
async fn call_as(
    url: &str,
    host: Option<&str>,
    scheme: &str,
    at: &str,
    proofs: &[String],
) -> (u16, String) {
    let mut request = Request::get(url).header("authorization", format!("{scheme} {at}"));
    if let Some(host) = host {
        request = request.header("host", host);
    }
    for proof in proofs {
        request = request.header("dpop", proof);
    }
    let (status, headers, _) = send(request.body(Full::<Bytes>::default()).unwrap())
        .await
        .unwrap();
    let challenge = headers
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status.as_u16(), challenge)
}

#[tokio::test]
async fn binding_required_refuses_unbound_tokens() {
    let upstream = Upstream::start().await;
    let key = SigningKey::generate_es256("k").unwrap().0;
    let dir = test_dir(&[("jwks.json", &jwks(&key))]);
    let config = config_with(
        &upstream.url(),
        &format!(
            "identity:\n  jwt:\n    - name: idp\n      issuer: {ISSUER}\n      audiences: [api]\n      jwks_file: jwks.json\n      algorithms: [ES256]\n      binding: required\n  dpop: {{ max_age: 60s }}\n{ALLOW_ALL}routes:\n  - match: {{ prefix: /api/ }}\n    upstream: main\n"
        ),
    );
    std::fs::write(dir.path().join("portcullis.yaml"), config).unwrap();
    let gw = Gateway::start_in(dir).await;
    let url = gw.url("/api/items");
    let (status, _) = call(&url, "Bearer", &token(&key, &baseline_claims()), &[]).await;
    assert_eq!(status, 401);
    gw.event_where("unbound", |e| e["reason"] == "unbound_token")
        .await;
    let client = SigningKey::generate_es256("client").unwrap().0;
    let at = bound_token(&key, &client);
    let proof = proof_with(&client, claims_for("GET", &url, &at), json!({}));
    assert_eq!(call(&url, "DPoP", &at, &[proof]).await.0, 200);
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn a_proof_replayed_on_another_instance_is_refused_and_redis_down_fails_closed() {
    let upstream = Upstream::start().await;
    let mut redis = Redis::start().await;
    let key = SigningKey::generate_es256("k").unwrap().0;
    let client = SigningKey::generate_es256("client").unwrap().0;
    let start = || {
        let dir = test_dir(&[("jwks.json", &jwks(&key)), ("redis-url", &redis.url())]);
        let config = config_with(
            &upstream.url(),
            &format!(
                "identity:\n  jwt:\n    - name: idp\n      issuer: {ISSUER}\n      audiences: [api]\n      jwks_file: jwks.json\n      algorithms: [ES256]\n  dpop: {{ max_age: 60s, replay_store: redis }}\nrate_limit:\n  store: redis\n  redis: {{ url: \"${{file:redis-url}}\", timeout: 1s }}\n{ALLOW_ALL}routes:\n  - match: {{ prefix: /api/ }}\n    upstream: main\n"
            ),
        );
        std::fs::write(dir.path().join("portcullis.yaml"), config).unwrap();
        dir
    };
    let (a, b) = (
        Gateway::start_in(start()).await,
        Gateway::start_in(start()).await,
    );
    let at = bound_token(&key, &client);
    // Both instances behind one name (as behind a load balancer): a proof for that URL
    // accepted by one is refused by the other.
    let (host, shared_url) = ("api.shared.test", "http://api.shared.test/api/items");
    let proof = proof_with(&client, claims_for("GET", shared_url, &at), json!({}));
    let status = |gw: &Gateway, proof: &str| {
        let (url, proof, at) = (gw.url("/api/items"), proof.to_string(), at.clone());
        async move { call_as(&url, Some(host), "DPoP", &at, &[proof]).await.0 }
    };
    assert_eq!(status(&a, &proof).await, 200);
    assert_eq!(status(&b, &proof).await, 401);
    b.event_where("replay", |e| e["reason"] == "dpop_replayed")
        .await;
    let other = proof_with(&client, claims_for("GET", shared_url, &at), json!({}));
    assert_eq!(status(&b, &other).await, 200);
    assert_eq!(status(&a, &other).await, 401);
    assert_eq!(upstream.hits(), 2);
    // Redis down: no proof can be checked for replay, so none is accepted (and no 5xx).
    redis.stop();
    let fresh = proof_with(
        &client,
        claims_for("GET", &a.url("/api/items"), &at),
        json!({}),
    );
    assert_eq!(
        call(&a.url("/api/items"), "DPoP", &at, &[fresh]).await.0,
        401
    );
    a.event_where("store down", |e| {
        e["reason"] == "dpop_replay_store_unavailable"
    })
    .await;
    assert_eq!(upstream.hits(), 2, "a refused request reached the upstream");
}

fn portcullis(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn the_cli_mints_a_bound_token_and_proofs_that_curl_can_send() {
    let upstream = Upstream::start().await;
    let (key, key_pem) = SigningKey::generate_es256("k").unwrap();
    let (_, client_pem) = SigningKey::generate_es256("client").unwrap();
    let gw = protected(&upstream, &key, "  dpop: { max_age: 60s }\n").await;
    let dir = tempfile::tempdir().unwrap();
    let (issuer_key, client_key) = (dir.path().join("issuer.pem"), dir.path().join("client.pem"));
    std::fs::write(&issuer_key, key_pem).unwrap();
    std::fs::write(&client_key, client_pem).unwrap();
    let (issuer_key, client_key) = (issuer_key.to_str().unwrap(), client_key.to_str().unwrap());
    let at = portcullis(&[
        "token",
        "--key",
        issuer_key,
        "--kid",
        "k",
        "--alg",
        "RS256",
        "--iss",
        ISSUER,
        "--aud",
        "api",
        "--sub",
        "alice",
        "--cnf-jkt",
        client_key,
    ]);
    let jkt = portcullis(&["dpop", "thumbprint", "--key", client_key]);
    let payload = URL_SAFE_NO_PAD
        .decode(at.split('.').nth(1).unwrap())
        .unwrap();
    let claims: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(claims["cnf"]["jkt"], jkt);
    let url = gw.url("/api/items?page=2");
    let proof = portcullis(&[
        "dpop", "proof", "--key", client_key, "--url", &url, "--token", &at,
    ]);
    // curl runs on a blocking thread: the upstream shares this test's runtime.
    let curl = |proof: String| {
        let (url, at) = (url.clone(), at.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                let out = std::process::Command::new("curl")
                    .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &url])
                    .args(["-H", &format!("authorization: DPoP {at}")])
                    .args(["-H", &format!("dpop: {proof}")])
                    .output()
                    .unwrap();
                String::from_utf8(out.stdout).unwrap()
            })
            .await
            .unwrap()
        }
    };
    assert_eq!(curl(proof.clone()).await, "200");
    assert_eq!(curl(proof).await, "401", "a replayed proof was accepted");
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn server_nonces_are_stateless_and_shared_by_instances_with_the_key() {
    let upstream = Upstream::start().await;
    let key = SigningKey::generate_es256("k").unwrap().0;
    let client = SigningKey::generate_es256("client").unwrap().0;
    let start = |nonce_key: &str| {
        let dir = test_dir(&[("jwks.json", &jwks(&key)), ("nonce-key", nonce_key)]);
        let config = config_with(
            &upstream.url(),
            &format!(
                "identity:\n  jwt:\n    - name: idp\n      issuer: {ISSUER}\n      audiences: [api]\n      jwks_file: jwks.json\n      algorithms: [ES256]\n  dpop: {{ max_age: 60s, nonce_key: \"${{file:nonce-key}}\" }}\n{ALLOW_ALL}routes:\n  - match: {{ prefix: /api/ }}\n    upstream: main\n"
            ),
        );
        std::fs::write(dir.path().join("portcullis.yaml"), config).unwrap();
        dir
    };
    let shared_key = "shared-nonce-key-0123456789abcdef0123";
    let a = Gateway::start_in(start(shared_key)).await;
    let b = Gateway::start_in(start(shared_key)).await;
    let stranger = Gateway::start_in(start("another-nonce-key-0123456789abcdef99")).await;
    let at = bound_token(&key, &client);
    let host = "api.shared.test";
    let url = "http://api.shared.test/api/items";
    let send_proof = |gw: &Gateway, nonce: Option<String>| {
        let mut claims = claims_for("GET", url, &at);
        if let Some(nonce) = nonce {
            claims["nonce"] = json!(nonce);
        }
        let proof = proof_with(&client, claims, json!({}));
        let request = Request::get(gw.url("/api/items"))
            .header("host", host)
            .header("authorization", format!("DPoP {at}"))
            .header("dpop", proof)
            .body(Full::<Bytes>::default())
            .unwrap();
        async move {
            let (status, headers, _) = send(request).await.unwrap();
            let header = |name: &str| {
                headers
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default()
            };
            (
                status.as_u16(),
                header("www-authenticate"),
                header("dpop-nonce"),
            )
        }
    };
    // No nonce: 401 use_dpop_nonce, with one to use.
    let (status, challenge, nonce) = send_proof(&a, None).await;
    assert_eq!(status, 401);
    assert!(
        challenge.contains("error=\"use_dpop_nonce\""),
        "{challenge}"
    );
    assert!(!nonce.is_empty());
    a.event_where("nonce", |e| e["reason"] == "dpop_nonce_required")
        .await;
    // With it: accepted here and at the other instance holding the key; each answer brings
    // a nonce for the next proof.
    let (status, _, next) = send_proof(&a, Some(nonce.clone())).await;
    assert_eq!((status, next.is_empty()), (200, false));
    assert_eq!(send_proof(&b, Some(nonce.clone())).await.0, 200);
    // An instance with another key does not accept it.
    assert_eq!(send_proof(&stranger, Some(nonce)).await.0, 401);
    assert_eq!(upstream.hits(), 2);
}

#[tokio::test]
async fn the_demo_prints_a_dpop_call_that_works_once_per_proof() {
    let demo = Demo::start().await;
    let line = |needle: &str| demo.command(&[needle]);
    let run = |command: String| async { demo.run(command, "ALICE_DPOP").await.1 };
    let dpop_call = line("authorization: DPoP $ALICE_DPOP");
    assert!(
        run(dpop_call.clone()).await.starts_with("HTTP/1.1 200"),
        "{dpop_call}"
    );
    // Each run makes a new proof, so it works again.
    assert!(run(dpop_call).await.starts_with("HTTP/1.1 200"));
    let downgrade = line("authorization: Bearer $ALICE_DPOP");
    assert!(run(downgrade).await.starts_with("HTTP/1.1 401"));
}
