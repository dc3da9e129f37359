//! Against a real OpenID provider (`oidc-provider`, run by Node from tests/peers): real
//! RFC 9068 access tokens, key rotation while the gateway serves, and the IdP going down.

use crate::identity::now;
use crate::util::*;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

pub(crate) struct Idp {
    pub(crate) issuer: String,
    _process: Process,
    /// For an https IdP: a client trusting its CA.
    https: Option<crate::pki::HttpsClient>,
}

impl Idp {
    fn start() -> Idp {
        Idp::start_with(&[], None)
    }

    /// Serves https with the pair in `cert`/`key` (PEM files), trusted through `ca` (PEM).
    fn start_https(cert: &std::path::Path, key: &std::path::Path, ca: &str) -> Idp {
        let env = [("TLS_CERT", cert.as_os_str()), ("TLS_KEY", key.as_os_str())];
        Idp::start_with(&env, Some(crate::pki::https_client(ca, None, false)))
    }

    pub(crate) fn start_with(
        env: &[(&str, &std::ffi::OsStr)],
        https: Option<crate::pki::HttpsClient>,
    ) -> Idp {
        let peers = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/peers");
        assert!(
            std::path::Path::new(peers)
                .join("node_modules/oidc-provider")
                .exists(),
            "the test peers are not installed: run scripts/install-deps.sh (scripts/test.sh does)"
        );
        let mut child = Command::new("node")
            .arg("idp.mjs")
            .envs(env.iter().copied())
            .current_dir(peers)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node (install nodejs)");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx.recv_timeout(DEADLINE).expect("the IdP never started");
        let issuer = line
            .strip_prefix("listening on ")
            .expect("IdP banner")
            .to_string();
        Idp {
            issuer,
            _process: Process(child),
            https,
        }
    }

    /// Stops the IdP (and waits until it is gone).
    pub(crate) fn stop(&mut self) {
        let _ = self._process.0.kill();
        let _ = self._process.0.wait();
    }

    async fn token(&self, scope: &str) -> String {
        let request = Request::post(format!("{}/token", self.issuer))
            .header("authorization", "Basic Z2F0ZXdheS10ZXN0OnRlc3Qtc2VjcmV0")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(format!(
                "grant_type=client_credentials&resource=https%3A%2F%2Fapi.test&scope={}",
                scope.replace(' ', "%20")
            ))))
            .unwrap();
        let (status, body) = match &self.https {
            Some(client) => {
                let (response, body) = crate::pki::https_send(client, request).await.unwrap();
                (response.status(), body)
            }
            None => {
                let (status, _, body) = send(request).await.unwrap();
                (status, body)
            }
        };
        assert_eq!(status, 200, "token request failed: {body}");
        json(&body)["access_token"].as_str().unwrap().to_string()
    }

    async fn verifies_independently(&self, token: &str) -> bool {
        let (_, _, body) = get(&format!("{}/jwks", self.issuer)).await.unwrap();
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&body).unwrap();
        let Some(jwk) = set.find(&kid_of(token)) else {
            return false;
        };
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        validation.set_audience(&["https://api.test"]);
        validation.set_issuer(&[&self.issuer]);
        jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).is_ok()
    }

    async fn rotate(&self) -> String {
        let request = Request::post(format!("{}/__rotate", self.issuer))
            .body(Full::default())
            .unwrap();
        let (status, _, body) = send(request).await.unwrap();
        assert_eq!(status, 200);
        json(&body)["kid"].as_str().unwrap().to_string()
    }
}

fn kid_of(token: &str) -> String {
    use base64::Engine;
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.split('.').next().unwrap())
        .unwrap();
    json(&String::from_utf8(header).unwrap())["kid"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn call(gw: &Gateway, method: &str, token: &str) -> u16 {
    let request = Request::builder()
        .method(method)
        .uri(gw.url("/api/items"))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::default())
        .unwrap();
    send(request).await.unwrap().0.as_u16()
}

#[tokio::test]
async fn real_idp_tokens_rotation_and_outage() {
    let idp = Idp::start();
    let upstream = Upstream::start().await;
    let config = config_with(
        &upstream.url(),
        &format!(
            "identity:
  jwt:
    - name: oidc
      issuer: {issuer}
      audiences: [https://api.test]
      jwks_uri: {issuer}/jwks
      algorithms: [ES256]
      token_types: [at+jwt]
  forward:
    identity_headers: {{ x-client-id: client_id }}
{ALLOW_ALL}routes:
  - match: {{ path: /api/items }}
    upstream: main
    scopes: {{ GET: [items:read], POST: [items:write] }}
",
            issuer = idp.issuer
        ),
    );
    let gw = Gateway::start(&config).await;
    let read = idp.token("items:read").await;
    assert_eq!(call(&gw, "GET", &read).await, 200);
    assert_eq!(upstream.last().headers["x-client-id"], "gateway-test");
    assert_eq!(
        call(&gw, "POST", &read).await,
        403,
        "a read token must not write"
    );
    assert_eq!(upstream.hits(), 1, "the refused write reached the upstream");
    let write = idp.token("items:read items:write").await;
    assert_eq!(call(&gw, "POST", &write).await, 200);
    // Differential: an independent JWT library accepts the same IdP token.
    assert!(idp.verifies_independently(&read).await);

    // The IdP rotates while the gateway serves: the first request with the new key passes.
    let new_kid = idp.rotate().await;
    let rotated = idp.token("items:read").await;
    assert_eq!(kid_of(&rotated), new_kid);
    let statuses: Vec<u16> = futures_join(&gw, &rotated).await;
    assert!(
        statuses.iter().all(|s| *s == 200),
        "valid tokens refused after rotation: {statuses:?}"
    );

    // The IdP goes down: keys already known keep working, nothing new is accepted blindly.
    drop(idp);
    assert_eq!(call(&gw, "GET", &rotated).await, 200);
    assert_eq!(call(&gw, "GET", &read).await, 200);
    let expired_claims = {
        let mut c = crate::identity::baseline_claims();
        c.insert("exp".into(), serde_json::json!(now() - 10));
        c
    };
    let (stranger, _) = portcullis::authn::sign::SigningKey::generate_es256(&new_kid).unwrap();
    assert_eq!(
        call(
            &gw,
            "GET",
            &crate::identity::token(&stranger, &expired_claims)
        )
        .await,
        401
    );
    let events = gw.events();
    assert!(
        events
            .iter()
            .all(|e| e["event_type"] != "auth_failure" || e["reason"] != "unknown_kid"),
        "{events:?}"
    );
}

/// Eight concurrent first requests with the new key: none may see a 401.
async fn futures_join(gw: &Gateway, token: &str) -> Vec<u16> {
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let url = gw.url("/api/items");
        let token = token.to_string();
        tasks.push(tokio::spawn(async move {
            let request = Request::get(url)
                .header("authorization", format!("Bearer {token}"))
                .body(Full::default())
                .unwrap();
            send(request).await.unwrap().0.as_u16()
        }));
    }
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

#[tokio::test]
async fn opaque_tokens_through_real_introspection() {
    let idp = Idp::start();
    let upstream = Upstream::start().await;
    let config = config_with(
        &upstream.url(),
        &format!(
            "identity:
  introspection:
    endpoint: {issuer}/token/introspection
    client_id: gateway-test
    client_secret: ${{file:client-secret}}
    audiences: [https://opaque.test]
    cache_ttl: 1s
{ALLOW_ALL}routes:
  - match: {{ path: /api/items }}
    upstream: main
    scopes: [items:read]
",
            issuer = idp.issuer
        ),
    );
    let dir = test_dir(&[]);
    std::fs::write(dir.path().join("client-secret"), "test-secret\n").unwrap();
    std::fs::write(dir.path().join("portcullis.yaml"), config).unwrap();
    let gw = Gateway::start_in(dir).await;
    let request = Request::post(format!("{}/token", idp.issuer))
        .header("authorization", "Basic Z2F0ZXdheS10ZXN0OnRlc3Qtc2VjcmV0")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from_static(
            b"grant_type=client_credentials&resource=https%3A%2F%2Fopaque.test&scope=items%3Aread",
        )))
        .unwrap();
    let (_, _, body) = send(request).await.unwrap();
    let opaque = json(&body)["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        opaque.matches('.').count(),
        0,
        "expected an opaque token: {opaque}"
    );
    assert_eq!(call(&gw, "GET", &opaque).await, 200);
    assert_eq!(
        upstream
            .last()
            .headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string()),
        Some(format!("Bearer {opaque}"))
    );
    assert_eq!(call(&gw, "GET", "made-up-opaque-token").await, 401);
    gw.event_where("inactive", |e| e["reason"] == "inactive_token")
        .await;
    // Revoked at the authorization server: refused once the short cache entry lapses.
    let revoke = Request::post(format!("{}/token/revocation", idp.issuer))
        .header("authorization", "Basic Z2F0ZXdheS10ZXN0OnRlc3Qtc2VjcmV0")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(format!("token={opaque}"))))
        .unwrap();
    assert_eq!(send(revoke).await.unwrap().0, 200);
    eventually_async("the revoked opaque token to be refused", || async {
        call(&gw, "GET", &opaque).await == 401
    })
    .await;
    let hits = upstream.hits();
    assert_eq!(call(&gw, "GET", &opaque).await, 401);
    // The server down: fail closed.
    drop(idp);
    assert_eq!(call(&gw, "GET", "another-unknown-token").await, 401);
    gw.event_where("introspection down", |e| {
        e["reason"] == "introspection_unavailable"
    })
    .await;
    assert_eq!(
        upstream.hits(),
        hits,
        "a refused token reached the upstream"
    );
}

#[tokio::test]
async fn an_https_idp_found_by_discovery_and_a_wrong_ca_fails_closed() {
    let ca = crate::pki::Ca::new("IdP CA");
    let other = crate::pki::Ca::new("Some other CA");
    let upstream = Upstream::start().await;
    let dir = test_dir(&[("idp-ca.pem", &ca.pem), ("other-ca.pem", &other.pem)]);
    ca.server().write(dir.path(), "idp");
    let idp = Idp::start_https(
        &dir.path().join("idp.pem"),
        &dir.path().join("idp.key"),
        &ca.pem,
    );
    assert!(idp.issuer.starts_with("https://"), "{}", idp.issuer);
    // No jwks_uri: the keys are found through {issuer}/.well-known/openid-configuration.
    let config = |ca_file: &str| {
        config_with(
            &upstream.url(),
            &format!(
                "outbound:\n  ca_files: [{ca_file}]\n  system_roots: false\n\
identity:\n  jwt:\n    - name: oidc\n      issuer: {issuer}\n      audiences: [https://api.test]\n      algorithms: [ES256]\n      token_types: [at+jwt]\n\
{ALLOW_ALL}routes:\n  - match: {{ path: /api/items }}\n    upstream: main\n",
                issuer = idp.issuer
            ),
        )
    };
    let trusted = test_dir(&[
        ("idp-ca.pem", &ca.pem),
        ("portcullis.yaml", &config("idp-ca.pem")),
    ]);
    std::fs::write(trusted.path().join("admin-token"), ADMIN_TOKEN).unwrap();
    let gw = Gateway::start_in(trusted).await;
    let token = idp.token("items:read").await;
    assert_eq!(call(&gw, "GET", &token).await, 200);
    assert_eq!(upstream.hits(), 1);

    // Trusting the wrong CA: no keys, so no entry (never open).
    let wrong = test_dir(&[
        ("other-ca.pem", &other.pem),
        ("portcullis.yaml", &config("other-ca.pem")),
    ]);
    std::fs::write(wrong.path().join("admin-token"), ADMIN_TOKEN).unwrap();
    let gw = Gateway::start_unready(wrong).await;
    assert_eq!(call(&gw, "GET", &token).await, 401);
    gw.event_where("keys unavailable", |e| e["reason"] == "jwks_unavailable")
        .await;
    assert_eq!(get(&gw.admin_url("/readyz")).await.unwrap().0, 503);
    assert_eq!(upstream.hits(), 1, "a refused request reached the upstream");
}
