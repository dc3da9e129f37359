//! Identity on the real binary: the JWT attack matrix, credentials in one place, identity
//! headers, revocation, and JWKS behaviour (rotation, unknown-kid floods, IdP outages).

use crate::util::*;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use portcullis::authn::keys::Algorithm;
use portcullis::authn::sign::SigningKey;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub const ISSUER: &str = "https://idp.test";

/// The JWKS document holding `key`'s public half.
pub fn jwks(key: &SigningKey) -> String {
    json!({"keys": [key.public_jwk()]}).to_string()
}

/// A gateway protecting `/api/` with one issuer whose keys are in a file.
pub async fn protected(upstream: &Upstream, key: &SigningKey, extra_identity: &str) -> Gateway {
    let dir = test_dir(&[("jwks.json", &jwks(key))]);
    let config = config_with(
        &upstream.url(),
        &format!(
            "identity:
  jwt:
    - name: test-idp
      issuer: {ISSUER}
      audiences: [api]
      jwks_file: jwks.json
      algorithms: [ES256, RS256]
      token_types: [at+jwt]
      required_claims: [sub]
{extra_identity}{ALLOW_ALL}routes:
  - match: {{ prefix: /api/ }}
    upstream: main
    scopes: {{ DELETE: [items:admin] }}
  - match: {{ prefix: /public/ }}
    upstream: main
    auth: none
"
        ),
    );
    std::fs::write(dir.path().join("portcullis.yaml"), config).unwrap();
    Gateway::start_in(dir).await
}

pub fn now() -> i64 {
    portcullis::authn::now_secs() as i64
}

pub fn baseline_claims() -> Map<String, Value> {
    let now = now();
    json!({"iss": ISSUER, "aud": "api", "sub": "alice", "iat": now, "exp": now + 300, "scope": "items:read"})
        .as_object()
        .cloned()
        .unwrap()
}

pub fn token(key: &SigningKey, claims: &Map<String, Value>) -> String {
    key.sign(claims, "at+jwt", &Map::new()).unwrap()
}

fn bearer(url: String, token: &str) -> Request<Full<Bytes>> {
    Request::get(url)
        .header("authorization", format!("Bearer {token}"))
        .body(Full::default())
        .unwrap()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    header: Map<String, Value>,
    #[serde(default)]
    claims: Map<String, Value>,
    #[serde(default)]
    remove_header: Vec<String>,
    #[serde(default)]
    remove_claims: Vec<String>,
    payload_raw: Option<String>,
    sign: Option<String>,
    encoding: Option<String>,
    pad_claim: Option<usize>,
    status: Option<u16>,
    reason: Option<String>,
}

fn build(case: &Case, key: &SigningKey, other: &SigningKey) -> String {
    let now = now();
    let mut header = json!({"alg": "ES256", "typ": "at+jwt", "kid": "k1"})
        .as_object()
        .cloned()
        .unwrap();
    for (k, v) in &case.header {
        header.insert(k.clone(), v.clone());
    }
    for k in &case.remove_header {
        header.remove(k);
    }
    let mut claims = baseline_claims();
    for (k, v) in &case.claims {
        let v = match (k.as_str(), v.as_i64()) {
            ("exp" | "nbf" | "iat", Some(offset)) => json!(now + offset),
            _ => v.clone(),
        };
        claims.insert(k.clone(), v);
    }
    for k in &case.remove_claims {
        claims.remove(k);
    }
    if let Some(pad) = case.pad_claim {
        claims.insert("filler".into(), json!("x".repeat(pad)));
    }
    let payload = match &case.payload_raw {
        Some(raw) => raw
            .replace("ISSUER", ISSUER)
            .replace("{now}", &now.to_string())
            .replace("{exp}", &(now + 300).to_string()),
        None => Value::Object(claims).to_string(),
    };
    let header_json = header;
    let mut header_b64 = URL_SAFE_NO_PAD.encode(Value::Object(header_json.clone()).to_string());
    if case.encoding.as_deref() == Some("padded") {
        // The same bytes, written with the padding that base64url in JWS forbids.
        header_b64 = STANDARD
            .encode(Value::Object(header_json.clone()).to_string())
            .replace('+', "-")
            .replace('/', "_");
        if !header_b64.ends_with('=') {
            header_b64.push_str("==");
        }
    }
    let signing_input = format!("{header_b64}.{}", URL_SAFE_NO_PAD.encode(payload));
    let signature = match case.sign.as_deref().unwrap_or("key") {
        "key" => key.sign_bytes(signing_input.as_bytes()).unwrap(),
        "other_key" => other.sign_bytes(signing_input.as_bytes()).unwrap(),
        "none" => Vec::new(),
        "zeros" => vec![0u8; 64],
        "hs256_public" => {
            let secret = key.public_jwk().to_string();
            let hmac = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
            aws_lc_rs::hmac::sign(&hmac, signing_input.as_bytes())
                .as_ref()
                .to_vec()
        }
        other => panic!("unknown sign mode {other}"),
    };
    let mut token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature));
    if case.encoding.as_deref() == Some("five_segments") {
        token.push_str(".AAAA.BBBB");
    }
    token
}

#[tokio::test]
async fn attack_matrix() {
    let upstream = Upstream::start().await;
    let (key, _) = SigningKey::generate_es256("k1").unwrap();
    let (other, _) = SigningKey::generate_es256("k1").unwrap();
    let gw = protected(&upstream, &key, "").await;
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/cases/jwt/attacks.yaml"
    );
    let cases: Vec<Case> = serde_saphyr::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    assert!(cases.len() >= 30);
    for case in &cases {
        let token = build(case, &key, &other);
        let before = upstream.heads();
        let (status, headers, body) = send(bearer(gw.url("/api/items"), &token)).await.unwrap();
        let expected = case.status.unwrap_or(401);
        assert_eq!(status, expected, "{}: {body}", case.name);
        if expected == 200 {
            assert_eq!(upstream.heads(), before + 1, "{}", case.name);
            continue;
        }
        assert_eq!(
            upstream.heads(),
            before,
            "{} reached the upstream",
            case.name
        );
        assert_eq!(
            headers["www-authenticate"], "Bearer realm=\"portcullis\", error=\"invalid_token\"",
            "{}",
            case.name
        );
        assert_eq!(json(&body)["title"], "Unauthorized", "{}", case.name);
        let id = headers["x-request-id"].to_str().unwrap().to_string();
        let event = gw
            .event_where(&case.name, |e| e["request_id"] == id.as_str())
            .await;
        assert_eq!(event["event_type"], "auth_failure", "{}", case.name);
        assert_eq!(
            event["reason"].as_str(),
            case.reason.as_deref(),
            "{}",
            case.name
        );
        assert!(
            !body.contains(case.reason.as_deref().unwrap_or("-")),
            "{}: reason leaked to the client",
            case.name
        );
    }
}

#[tokio::test]
async fn credentials_are_accepted_in_exactly_one_place() {
    let upstream = Upstream::start().await;
    let (key, _) = SigningKey::generate_es256("k1").unwrap();
    let gw = protected(&upstream, &key, "").await;
    let good = token(&key, &baseline_claims());
    let cases: Vec<(&str, Request<Full<Bytes>>)> = vec![
        (
            "missing_token",
            Request::get(gw.url("/api/x"))
                .body(Full::default())
                .unwrap(),
        ),
        (
            "multiple_credentials",
            Request::get(gw.url("/api/x"))
                .header("authorization", format!("Bearer {good}"))
                .header("authorization", format!("Bearer {good}"))
                .body(Full::default())
                .unwrap(),
        ),
        (
            "token_in_query",
            bearer(gw.url(&format!("/api/x?access_token={good}")), &good),
        ),
        (
            "token_in_query",
            Request::get(gw.url(&format!("/api/x?access_token={good}")))
                .body(Full::default())
                .unwrap(),
        ),
        (
            "unsupported_scheme",
            Request::get(gw.url("/api/x"))
                .header("authorization", "Basic YWxpY2U6cHc=")
                .body(Full::default())
                .unwrap(),
        ),
    ];
    for (reason, request) in cases {
        let (status, headers, _) = send(request).await.unwrap();
        assert_eq!(status, 401, "{reason}");
        let id = headers["x-request-id"].to_str().unwrap().to_string();
        let event = gw
            .event_where(reason, |e| e["request_id"] == id.as_str())
            .await;
        assert_eq!(event["reason"], reason);
    }
    assert_eq!(upstream.heads(), 0);
    // The scheme is case-insensitive.
    let request = Request::get(gw.url("/api/x"))
        .header("authorization", format!("bEaReR {good}"))
        .body(Full::default())
        .unwrap();
    assert_eq!(send(request).await.unwrap().0, 200);
}

#[tokio::test]
async fn scopes_identity_headers_and_public_routes() {
    let upstream = Upstream::start().await;
    let (key, _) = SigningKey::generate_es256("k1").unwrap();
    let forward = "  forward:\n    token: false\n    identity_headers:\n      x-user-id: sub\n      x-user-scopes: scope\n";
    let gw = protected(&upstream, &key, forward).await;
    let good = token(&key, &baseline_claims());
    let request = Request::get(gw.url("/api/items"))
        .header("authorization", format!("Bearer {good}"))
        .header("x-user-id", "admin")
        .body(Full::default())
        .unwrap();
    assert_eq!(send(request).await.unwrap().0, 200);
    let seen = upstream.last();
    assert_eq!(
        seen.headers["x-user-id"], "alice",
        "spoofed identity header passed"
    );
    assert_eq!(seen.headers["x-user-scopes"], "items:read");
    assert!(
        seen.headers.get("authorization").is_none(),
        "token forwarded despite forward.token: false"
    );
    // DELETE needs items:admin.
    let request = Request::delete(gw.url("/api/items/1"))
        .header("authorization", format!("Bearer {good}"))
        .body(Full::default())
        .unwrap();
    let (status, headers, _) = send(request).await.unwrap();
    assert_eq!(status, 403);
    assert_eq!(
        headers["www-authenticate"],
        "Bearer realm=\"portcullis\", error=\"insufficient_scope\", scope=\"items:admin\""
    );
    // A client cannot plant identity headers on a public route either.
    let request = Request::get(gw.url("/public/x"))
        .header("x-user-id", "admin")
        .body(Full::default())
        .unwrap();
    assert_eq!(send(request).await.unwrap().0, 200);
    assert!(upstream.last().headers.get("x-user-id").is_none());
    assert_eq!(upstream.hits(), 2);
}

#[tokio::test]
async fn revocation_by_jti_and_subject_takes_effect_on_the_next_request() {
    let upstream = Upstream::start().await;
    let (key, _) = SigningKey::generate_es256("k1").unwrap();
    let gw = protected(&upstream, &key, "").await;
    let mut claims = baseline_claims();
    claims.insert("jti".into(), json!("token-42"));
    let first = token(&key, &claims);
    claims.insert("jti".into(), json!("token-43"));
    let second = token(&key, &claims);
    for t in [&first, &second] {
        assert_eq!(send(bearer(gw.url("/api/a"), t)).await.unwrap().0, 200);
    }
    let revoke = |body: &str| {
        Request::post(gw.admin_url("/admin/revocations"))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap()
    };
    assert_eq!(send(revoke(r#"{"jti":"token-42"}"#)).await.unwrap().0, 200);
    assert_eq!(send(bearer(gw.url("/api/a"), &first)).await.unwrap().0, 401);
    gw.event_where("revoked event", |e| e["reason"] == "revoked")
        .await;
    assert_eq!(
        send(bearer(gw.url("/api/a"), &second)).await.unwrap().0,
        200
    );
    assert_eq!(send(revoke(r#"{"sub":"alice"}"#)).await.unwrap().0, 200);
    assert_eq!(
        send(bearer(gw.url("/api/a"), &second)).await.unwrap().0,
        401
    );
    assert_eq!(
        send(revoke(r#"{"jti":"a","sub":"b"}"#)).await.unwrap().0,
        400
    );
    let unauthorized = Request::post(gw.admin_url("/admin/revocations"))
        .body(Full::new(Bytes::from("{\"sub\":\"x\"}")))
        .unwrap();
    assert_eq!(send(unauthorized).await.unwrap().0, 401);
    assert_eq!(upstream.hits(), 3);
}

/// A key server we control, to make it rotate, flood-test it and take it down: the one
/// peer a user could not provide (an IdP that misbehaves on purpose).
struct FakeJwks {
    addr: std::net::SocketAddr,
    fetches: Arc<AtomicUsize>,
    document: Arc<std::sync::Mutex<Value>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeJwks {
    async fn start(keys: Vec<Value>) -> FakeJwks {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fetches = Arc::new(AtomicUsize::new(0));
        let document = Arc::new(std::sync::Mutex::new(json!({ "keys": keys })));
        let (f, d) = (fetches.clone(), document.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (f, d) = (f.clone(), d.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req| {
                        f.fetch_add(1, Ordering::SeqCst);
                        let body = d.lock().unwrap().to_string();
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder()
                                    .header("content-type", "application/json")
                                    .header("cache-control", "max-age=300")
                                    .body(Full::new(Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeJwks {
            addr,
            fetches,
            document,
            task,
        }
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

async fn with_remote_keys(upstream: &Upstream, jwks: &FakeJwks) -> Gateway {
    let config = config_with(
        &upstream.url(),
        &format!(
            "identity:\n  jwt:\n    - name: remote\n      issuer: {ISSUER}\n      audiences: [api]\n      jwks_uri: http://{}/jwks\n      algorithms: [ES256]\n{ALLOW_ALL}{}",
            jwks.addr, "routes:\n  - match: { prefix: /api/ }\n    upstream: main\n"
        ),
    );
    Gateway::start(&config).await
}

#[tokio::test]
async fn rotation_is_picked_up_on_the_first_request_and_floods_do_not_hammer_the_idp() {
    let upstream = Upstream::start().await;
    let (old, _) = SigningKey::generate_es256("old").unwrap();
    let jwks = FakeJwks::start(vec![old.public_jwk()]).await;
    let gw = with_remote_keys(&upstream, &jwks).await;
    assert_eq!(
        send(bearer(gw.url("/api/a"), &token(&old, &baseline_claims())))
            .await
            .unwrap()
            .0,
        200
    );
    let fetched_at_start = jwks.fetches();
    assert_eq!(fetched_at_start, 1);
    // Rotate: the IdP publishes a new key and signs with it at once.
    let (new, _) = SigningKey::generate_es256("new").unwrap();
    *jwks.document.lock().unwrap() = json!({"keys": [new.public_jwk(), old.public_jwk()]});
    let fresh = token(&new, &baseline_claims());
    assert_eq!(
        send(bearer(gw.url("/api/a"), &fresh)).await.unwrap().0,
        200,
        "first request with the new kid"
    );
    assert_eq!(jwks.fetches(), 2);
    // A flood of random kids: every one refused, the IdP sees at most the rate-limited refresh.
    for i in 0..60 {
        let (random, _) = SigningKey::generate_es256(&format!("random-{i}")).unwrap();
        let (status, _, _) = send(bearer(
            gw.url("/api/a"),
            &token(&random, &baseline_claims()),
        ))
        .await
        .unwrap();
        assert_eq!(status, 401);
    }
    assert!(
        jwks.fetches() <= 3,
        "the flood caused {} fetches",
        jwks.fetches()
    );
    // The IdP goes away: known keys keep working.
    jwks.task.abort();
    assert_eq!(
        send(bearer(gw.url("/api/a"), &token(&new, &baseline_claims())))
            .await
            .unwrap()
            .0,
        200
    );
    assert_eq!(
        send(bearer(gw.url("/api/a"), &token(&old, &baseline_claims())))
            .await
            .unwrap()
            .0,
        200
    );
    let (_, _, metrics) = get(&gw.admin_url("/metrics")).await.unwrap();
    assert!(
        metrics.contains("portcullis_jwks_refreshes{issuer=\"remote\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn readiness_waits_for_the_first_key_set() {
    let upstream = Upstream::start().await;
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let config = config_with(
        &upstream.url(),
        &format!(
            "identity:\n  jwt:\n    - name: down\n      issuer: {ISSUER}\n      audiences: [api]\n      jwks_uri: http://{addr}/jwks\n      algorithms: [ES256]\n{ALLOW_ALL}routes:\n  - match: {{ prefix: /api/ }}\n    upstream: main\n"
        ),
    );
    let dir = test_dir(&[]);
    std::fs::write(dir.path().join("portcullis.yaml"), config).unwrap();
    // Start without waiting for readiness, which never comes.
    let gw = Gateway::start_unready(dir).await;
    assert_eq!(get(&gw.admin_url("/readyz")).await.unwrap().0, 503);
    assert_eq!(get(&gw.admin_url("/healthz")).await.unwrap().0, 200);
    let (key, _) = SigningKey::generate_es256("k").unwrap();
    let (status, _, _) = send(bearer(gw.url("/api/a"), &token(&key, &baseline_claims())))
        .await
        .unwrap();
    assert_eq!(status, 401, "no keys must mean no entry");
    gw.event_where("keys unavailable", |e| e["reason"] == "jwks_unavailable")
        .await;
    assert_eq!(upstream.heads(), 0);
}

#[test]
fn token_command_mints_tokens_the_gateway_accepts() {
    let (key, pem) = SigningKey::generate_es256("cli").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("key.pem");
    std::fs::write(&key_path, pem).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "token",
            "--key",
            key_path.to_str().unwrap(),
            "--iss",
            ISSUER,
            "--aud",
            "api",
            "--sub",
            "carol",
        ])
        .args([
            "--scope",
            "items:read items:write",
            "--claim",
            "tenant=acme",
            "--claim",
            "level=3",
            "--kid",
            "k1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let payload: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(payload["sub"], "carol");
    assert_eq!(payload["tenant"], "acme");
    assert_eq!(payload["level"], 3);
    assert_eq!(
        payload["exp"].as_i64().unwrap() - payload["iat"].as_i64().unwrap(),
        900
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let upstream = Upstream::start().await;
        let mut jwk = key.public_jwk();
        jwk["kid"] = json!("k1");
        let public_only = SigningKey::from_text(&jwk.to_string(), Some("k1"), Algorithm::Rs256);
        assert!(public_only.is_err(), "a public JWK must not load as a signing key");
        let dir = test_dir(&[]);
        std::fs::write(dir.path().join("jwks.json"), json!({"keys": [jwk]}).to_string()).unwrap();
        let config = config_with(
            &upstream.url(),
            &format!("identity:\n  jwt:\n    - name: cli\n      issuer: {ISSUER}\n      audiences: [api]\n      jwks_file: jwks.json\n      algorithms: [ES256]\n{ALLOW_ALL}routes:\n  - match: {{ prefix: / }}\n    upstream: main\n"),
        );
        std::fs::write(dir.path().join("portcullis.yaml"), config).unwrap();
        let gw = Gateway::start_in(dir).await;
        assert_eq!(send(bearer(gw.url("/x"), &token)).await.unwrap().0, 200);
    });
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "token",
            "--key",
            "/nonexistent",
            "--iss",
            "a",
            "--aud",
            "b",
            "--sub",
            "c",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert_eq!(
        String::from_utf8_lossy(&bad.stderr).trim().lines().count(),
        1
    );
}

#[tokio::test]
async fn redis_revocations_apply_on_every_instance_and_fail_closed() {
    let mut redis = Redis::start().await;
    let upstream = Upstream::start().await;
    let (key, _) = SigningKey::generate_es256("k1").unwrap();
    let start = |key: &SigningKey| {
        let dir = test_dir(&[("redis-url", &redis.url()), ("jwks.json", &jwks(key))]);
        let config = config_with(
            &upstream.url(),
            &format!(
                "identity:\n  jwt:\n    - {{ name: t, issuer: {ISSUER}, audiences: [api], jwks_file: jwks.json, algorithms: [ES256] }}\n  revocation:\n    store: redis\n    redis: {{ url: \"${{file:redis-url}}\", timeout: 200ms }}\n{ALLOW_ALL}routes:\n  - match: {{ prefix: /api/ }}\n    upstream: main\n"
            ),
        );
        std::fs::write(dir.path().join("portcullis.yaml"), config).unwrap();
        dir
    };
    let (a, b) = (
        Gateway::start_in(start(&key)).await,
        Gateway::start_in(start(&key)).await,
    );
    let mut claims = baseline_claims();
    claims.insert("jti".into(), json!("shared-1"));
    let first = token(&key, &claims);
    claims.insert("jti".into(), json!("shared-2"));
    let second = token(&key, &claims);
    for gw in [&a, &b] {
        assert_eq!(send(bearer(gw.url("/api/x"), &first)).await.unwrap().0, 200);
    }
    let revoke = |gw: &Gateway, body: &str| {
        Request::post(gw.admin_url("/admin/revocations"))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap()
    };
    // Revoked through A, refused by B on its very next request.
    assert_eq!(
        send(revoke(&a, r#"{"jti":"shared-1"}"#)).await.unwrap().0,
        200
    );
    assert_eq!(send(bearer(b.url("/api/x"), &first)).await.unwrap().0, 401);
    assert_eq!(send(bearer(b.url("/api/x"), &second)).await.unwrap().0, 200);
    // A subject revoked through B is refused by A.
    assert_eq!(send(revoke(&b, r#"{"sub":"alice"}"#)).await.unwrap().0, 200);
    assert_eq!(send(bearer(a.url("/api/x"), &second)).await.unwrap().0, 401);
    let hits = upstream.hits();
    // The store down: fail closed, and revocations cannot be lost silently.
    redis.stop();
    let (status, headers, _) = send(bearer(a.url("/api/x"), &second)).await.unwrap();
    assert_eq!(status, 401);
    let id = headers["x-request-id"].to_str().unwrap().to_string();
    let event = a
        .event_where("store down", |e| e["request_id"] == id.as_str())
        .await;
    assert!(
        matches!(
            event["reason"].as_str(),
            Some("revocation_unavailable" | "revoked")
        ),
        "{event}"
    );
    if event["reason"] == "revocation_unavailable" {
        // The store's own error, for the operator (the client got a generic 401).
        let detail = event["details"]["detail"].as_str().unwrap();
        assert!(
            detail.starts_with("revocation store unavailable: "),
            "{detail}"
        );
    }
    let mut claims = baseline_claims();
    claims.insert("sub".into(), json!("dave"));
    let (status, _, _) = send(bearer(b.url("/api/x"), &token(&key, &claims)))
        .await
        .unwrap();
    assert_eq!(
        status, 401,
        "an unrevoked token must still be refused while the store is down"
    );
    assert_eq!(send(revoke(&a, r#"{"jti":"x"}"#)).await.unwrap().0, 503);
    assert_eq!(upstream.hits(), hits);
}

#[tokio::test]
async fn revocations_on_a_redis_cluster_apply_on_every_instance() {
    let cluster = Cluster::start().await;
    let upstream = Upstream::start().await;
    let (key, _) = SigningKey::generate_es256("k1").unwrap();
    let start = || {
        let dir = test_dir(&[("redis-url", &cluster.urls()), ("jwks.json", &jwks(&key))]);
        let config = config_with(
            &upstream.url(),
            &format!(
                "identity:\n  jwt:\n    - {{ name: t, issuer: {ISSUER}, audiences: [api], jwks_file: jwks.json, algorithms: [ES256] }}\n  revocation:\n    store: redis\n    redis: {{ url: \"${{file:redis-url}}\", timeout: 500ms, cluster: true }}\n{ALLOW_ALL}routes:\n  - match: {{ prefix: /api/ }}\n    upstream: main\n"
            ),
        );
        std::fs::write(dir.path().join("portcullis.yaml"), config).unwrap();
        dir
    };
    let (a, b) = (
        Gateway::start_in(start()).await,
        Gateway::start_in(start()).await,
    );
    let revoke = |gw: &Gateway, body: &str| {
        Request::post(gw.admin_url("/admin/revocations"))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap()
    };
    // Many jtis, so that their keys land on every node's slots.
    let mut tokens = Vec::new();
    for i in 0..12 {
        let mut claims = baseline_claims();
        claims.insert("jti".into(), json!(format!("c-{i}")));
        claims.insert("sub".into(), json!(format!("user-{i}")));
        tokens.push(token(&key, &claims));
    }
    for (i, t) in tokens.iter().enumerate() {
        assert_eq!(
            send(bearer(b.url("/api/x"), t)).await.unwrap().0,
            200,
            "{i}: {:?}",
            b.events().last()
        );
        if i % 2 == 0 {
            let body = format!("{{\"jti\":\"c-{i}\"}}");
            assert_eq!(send(revoke(&a, &body)).await.unwrap().0, 200);
        }
    }
    // Revoked through A, refused by B on its next request; the others still pass.
    for (i, t) in tokens.iter().enumerate() {
        let expected = if i % 2 == 0 { 401 } else { 200 };
        assert_eq!(
            send(bearer(b.url("/api/x"), t)).await.unwrap().0,
            expected,
            "{i}"
        );
    }
    // A subject revoked through B is refused by A.
    assert_eq!(
        send(revoke(&b, r#"{"sub":"user-1"}"#)).await.unwrap().0,
        200
    );
    assert_eq!(
        send(bearer(a.url("/api/x"), &tokens[1])).await.unwrap().0,
        401
    );
    assert_eq!(
        send(bearer(a.url("/api/x"), &tokens[3])).await.unwrap().0,
        200
    );
    let holding = (0..3)
        .filter(|n| cluster.redis_cli(*n, &["dbsize"]) != "0")
        .count();
    assert!(
        holding >= 2,
        "the revocation keys did not spread over the slots"
    );
    assert_eq!(upstream.hits(), 12 + 6 + 1);
}
