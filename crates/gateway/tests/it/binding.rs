//! Bound tokens through the binary: the table-driven refusal matrix of
//! `tests/cases/binding/refusals.yaml` (DPoP proofs and certificate-bound tokens over real TLS,
//! every refusal a 401 naming the exact check in its event and never reaching the upstream),
//! and certificate-bound tokens behind a trusted TLS-terminating proxy that forwards the
//! client certificate.

use crate::identity::{ISSUER, baseline_claims, jwks, now, token};
use crate::pki::{Ca, Leaf, https_client, https_send};
use crate::util::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use portcullis::authn::dpop::{ath, thumbprint};
use portcullis::authn::mtls;
use portcullis::authn::sign::SigningKey;
use serde::Deserialize;
use serde_json::{Map, Value, json};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    status: Option<u16>,
    reason: Option<String>,
    scheme: Option<String>,
    token: Option<String>,
    proofs: Option<usize>,
    cert: Option<String>,
    #[serde(default)]
    header: Map<String, Value>,
    #[serde(default)]
    claims: Map<String, Value>,
    #[serde(default)]
    remove_claims: Vec<String>,
    jwk: Option<String>,
    sign: Option<String>,
    raw_proof: Option<String>,
    #[serde(default)]
    replay: bool,
    challenge: Option<String>,
}

/// The keys and certificates every case draws on.
struct Parties {
    issuer: SigningKey,
    client: SigningKey,
    stranger: SigningKey,
    mine: Leaf,
    other: Leaf,
}

impl Parties {
    fn token(&self, kind: &str) -> String {
        let mut claims = baseline_claims();
        match kind {
            "dpop" => {
                let jkt = thumbprint(self.client.public_jwk().as_object().unwrap()).unwrap();
                claims.insert("cnf".into(), json!({ "jkt": jkt }));
            }
            "x5t" => {
                let x5t = mtls::thumbprint(&self.mine.der);
                claims.insert("cnf".into(), json!({ "x5t#S256": x5t }));
            }
            "unbound" => {}
            other => panic!("unknown token kind {other}"),
        }
        token(&self.issuer, &claims)
    }

    /// One proof as `case` describes it, for `url` and the access token `at`.
    fn proof(&self, case: &Case, url: &str, at: &str) -> String {
        if let Some(raw) = &case.raw_proof {
            return raw.clone();
        }
        let sign = case.sign.as_deref().unwrap_or("client");
        let holder = if sign == "stranger_key" {
            &self.stranger
        } else {
            &self.client
        };
        let mut jwk = holder.public_jwk();
        if case.jwk.as_deref() == Some("private") {
            jwk["d"] = json!("AAAA");
        }
        let mut header = Map::new();
        header.insert("typ".into(), json!("dpop+jwt"));
        header.insert("alg".into(), json!("ES256"));
        header.insert("jwk".into(), jwk);
        header.extend(case.header.clone());
        let authority = url
            .trim_start_matches("https://")
            .split('/')
            .next()
            .unwrap();
        let mut claims = Map::new();
        claims.insert("htm".into(), json!("GET"));
        claims.insert("htu".into(), json!(url));
        claims.insert("iat".into(), json!(now()));
        claims.insert(
            "jti".into(),
            json!(portcullis::session::seal::random_token(16).unwrap()),
        );
        claims.insert("ath".into(), json!(ath(at)));
        for (k, v) in &case.claims {
            let v = match (k.as_str(), v) {
                ("iat", Value::Number(n)) => json!(now() + n.as_i64().unwrap()),
                ("ath", Value::String(s)) => json!(ath(s)),
                ("htu", Value::String(s)) => json!(
                    s.replace(
                        "{url_upper_host}",
                        &url.replace(authority, &authority.to_uppercase())
                    )
                    .replace("{url_http}", &url.replacen("https://", "http://", 1))
                    .replace("{url}", url)
                ),
                _ => v.clone(),
            };
            claims.insert(k.clone(), v);
        }
        for k in &case.remove_claims {
            claims.remove(k);
        }
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(Value::Object(header).to_string()),
            URL_SAFE_NO_PAD.encode(Value::Object(claims).to_string())
        );
        let signature = match sign {
            "client" | "stranger_key" => holder.sign_bytes(input.as_bytes()).unwrap(),
            "stranger" => self.stranger.sign_bytes(input.as_bytes()).unwrap(),
            "none" => Vec::new(),
            "hs256" => {
                let secret = self.client.public_jwk().to_string();
                let key =
                    aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
                aws_lc_rs::hmac::sign(&key, input.as_bytes())
                    .as_ref()
                    .to_vec()
            }
            other => panic!("unknown sign mode {other}"),
        };
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

#[tokio::test]
async fn bound_token_refusal_matrix() {
    let upstream = Upstream::start().await;
    let ca = Ca::new("Binding CA");
    let parties = Parties {
        issuer: SigningKey::generate_es256("k1").unwrap().0,
        client: SigningKey::generate_es256("client").unwrap().0,
        stranger: SigningKey::generate_es256("stranger").unwrap().0,
        mine: ca.client("mine", "spiffe://corp.test/ns/a/sa/mine"),
        other: ca.client("other", "spiffe://corp.test/ns/a/sa/other"),
    };
    let dir = test_dir(&[("jwks.json", &jwks(&parties.issuer)), ("ca.pem", &ca.pem)]);
    ca.server().write(dir.path(), "server");
    let config = with_listen(
        &config_with(
            &upstream.url(),
            &format!(
                "identity:\n  jwt:\n    - name: idp\n      issuer: {ISSUER}\n      audiences: [api]\n      jwks_file: jwks.json\n      algorithms: [ES256]\n  dpop: {{ max_age: 60s }}\n{ALLOW_ALL}routes:\n  - match: {{ prefix: /api/ }}\n    upstream: main\n"
            ),
        ),
        "  tls: { cert: server.pem, key: server.key, client_ca: ca.pem, client_auth: optional }\n",
    );
    std::fs::write(dir.path().join("portcullis.yaml"), config).unwrap();
    let gw = Gateway::start_in(dir).await;
    let url = format!("https://{}/api/items", gw.addr);
    let clients = [
        ("none", https_client(&ca.pem, None, false)),
        ("mine", https_client(&ca.pem, Some(&parties.mine), false)),
        ("other", https_client(&ca.pem, Some(&parties.other), false)),
    ];
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/cases/binding/refusals.yaml"
    );
    let cases: Vec<Case> = serde_saphyr::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    for case in &cases {
        let at = parties.token(case.token.as_deref().unwrap_or("dpop"));
        let scheme = case.scheme.as_deref().unwrap_or("DPoP");
        let client = &clients
            .iter()
            .find(|(name, _)| *name == case.cert.as_deref().unwrap_or("none"))
            .unwrap_or_else(|| panic!("{}: unknown cert", case.name))
            .1;
        let proofs: Vec<String> = (0..case.proofs.unwrap_or(1))
            .map(|_| parties.proof(case, &url, &at))
            .collect();
        let call = |proofs: &[String]| {
            let mut request = Request::get(&url).header("authorization", format!("{scheme} {at}"));
            for proof in proofs {
                request = request.header("dpop", proof);
            }
            https_send(client, request.body(Full::<Bytes>::default()).unwrap())
        };
        if case.replay {
            let (first, _) = call(&proofs).await.unwrap();
            assert_eq!(first.status(), 200, "{}: the first use", case.name);
        }
        let before = upstream.heads();
        let (response, body) = call(&proofs).await.unwrap();
        let expected = case.status.unwrap_or(401);
        assert_eq!(response.status(), expected, "{}: {body}", case.name);
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
        let challenge = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let wanted = case
            .challenge
            .as_deref()
            .unwrap_or("error=\"invalid_dpop_proof\"");
        assert!(challenge.contains(wanted), "{}: {challenge}", case.name);
        if challenge.starts_with("DPoP ") {
            assert!(
                challenge.contains("algs=\"ES256"),
                "{}: {challenge}",
                case.name
            );
        }
        let reason = case.reason.as_deref().expect("a refusal names its reason");
        assert!(
            !body.contains(reason),
            "{}: reason leaked to the client",
            case.name
        );
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        let event = gw
            .event_where(&case.name, |e| e["request_id"] == id.as_str())
            .await;
        assert_eq!(event["event_type"], "auth_failure", "{}", case.name);
        assert_eq!(event["reason"], reason, "{}", case.name);
    }
}

/// A forwarded-certificate header in both encodings proxies send: Envoy's XFCC element and
/// nginx's escaped PEM.
fn xfcc(leaf: &Leaf) -> String {
    let escaped =
        percent_encoding::utf8_percent_encode(&leaf.cert_pem, percent_encoding::NON_ALPHANUMERIC);
    format!("By=spiffe://corp.test/edge;Cert=\"{escaped}\";Subject=\"CN=x,O=y\"")
}

fn escaped_pem(leaf: &Leaf) -> String {
    percent_encoding::utf8_percent_encode(&leaf.cert_pem, percent_encoding::NON_ALPHANUMERIC)
        .to_string()
}

#[tokio::test]
async fn a_forwarded_client_certificate_is_believed_only_from_trusted_proxies() {
    let upstream = Upstream::start().await;
    let ca = Ca::new("Edge CA");
    let (mine, other) = (
        ca.client("mine", "spiffe://corp.test/ns/a/sa/mine"),
        ca.client("other", "spiffe://corp.test/ns/a/sa/other"),
    );
    let issuer = SigningKey::generate_es256("k1").unwrap().0;
    let start = |trusted: &str| {
        let dir = test_dir(&[("jwks.json", &jwks(&issuer))]);
        let config = with_listen(
            &config_with(
                &upstream.url(),
                &format!(
                    "identity:\n  jwt:\n    - name: idp\n      issuer: {ISSUER}\n      audiences: [api]\n      jwks_file: jwks.json\n      algorithms: [ES256]\n{ALLOW_ALL}routes:\n  - match: {{ prefix: /api/ }}\n    upstream: main\n"
                ),
            ),
            &format!(
                "  trusted_proxies: [{trusted}]\n  client_cert_header: x-forwarded-client-cert\n"
            ),
        );
        std::fs::write(dir.path().join("portcullis.yaml"), config).unwrap();
        dir
    };
    let behind_proxy = Gateway::start_in(start("127.0.0.1/32")).await;
    let exposed = Gateway::start_in(start("10.0.0.0/8")).await;
    let mut claims = baseline_claims();
    claims.insert(
        "cnf".into(),
        json!({ "x5t#S256": mtls::thumbprint(&mine.der) }),
    );
    let at = token(&issuer, &claims);
    let call = |gw: &Gateway, forwarded: Option<String>| {
        let mut request =
            Request::get(gw.url("/api/items")).header("authorization", format!("Bearer {at}"));
        if let Some(value) = forwarded {
            request = request.header("x-forwarded-client-cert", value);
        }
        let request = request.body(Full::<Bytes>::default()).unwrap();
        async move {
            let (status, headers, _) = send(request).await.unwrap();
            (
                status.as_u16(),
                headers["x-request-id"].to_str().unwrap().to_string(),
            )
        }
    };
    // From the trusted proxy: the forwarded certificate is the client's, in either encoding,
    // and the upstream still sees what the proxy said.
    assert_eq!(call(&behind_proxy, Some(xfcc(&mine))).await.0, 200);
    assert!(
        upstream
            .last()
            .headers
            .contains_key("x-forwarded-client-cert")
    );
    assert_eq!(call(&behind_proxy, Some(escaped_pem(&mine))).await.0, 200);
    assert_eq!(upstream.hits(), 2);
    let (status, id) = call(&behind_proxy, Some(xfcc(&other))).await;
    assert_eq!(status, 401);
    behind_proxy
        .event_where("mismatch", |e| {
            e["request_id"] == id.as_str() && e["reason"] == "certificate_binding_mismatch"
        })
        .await;
    let (status, id) = call(&behind_proxy, None).await;
    assert_eq!(status, 401);
    behind_proxy
        .event_where("none", |e| {
            e["request_id"] == id.as_str() && e["reason"] == "certificate_binding_required"
        })
        .await;
    // A header the proxy cannot have meant is refused, not ignored.
    let (status, id) = call(&behind_proxy, Some("Cert=\"%zz\"".into())).await;
    assert_eq!(status, 400);
    behind_proxy
        .event_where("garbage", |e| {
            e["request_id"] == id.as_str() && e["reason"] == "forwarded_client_cert"
        })
        .await;
    assert_eq!(upstream.hits(), 2, "a refused request reached the upstream");
    // From anyone else: removed, so the bound token has no certificate.
    let (status, id) = call(&exposed, Some(xfcc(&mine))).await;
    assert_eq!(status, 401);
    exposed
        .event_where("untrusted", |e| {
            e["request_id"] == id.as_str() && e["reason"] == "certificate_binding_required"
        })
        .await;
    let unbound = token(&issuer, &baseline_claims());
    let request = Request::get(exposed.url("/api/items"))
        .header("authorization", format!("Bearer {unbound}"))
        .header("x-forwarded-client-cert", xfcc(&mine))
        .body(Full::<Bytes>::default())
        .unwrap();
    assert_eq!(send(request).await.unwrap().0, 200);
    assert!(
        !upstream
            .last()
            .headers
            .contains_key("x-forwarded-client-cert"),
        "an untrusted peer's forwarded certificate reached the upstream"
    );
}

/// A client_credentials token from the real IdP, asked for by `client` over `https`.
async fn idp_token(
    https: &crate::pki::HttpsClient,
    issuer: &str,
    client: (&str, &str),
    proof: Option<String>,
) -> Value {
    use base64::engine::general_purpose::STANDARD;
    let basic = STANDARD.encode(format!("{}:{}", client.0, client.1));
    let mut request = Request::post(format!("{issuer}/token"))
        .header("authorization", format!("Basic {basic}"))
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some(proof) = proof {
        request = request.header("dpop", proof);
    }
    let body = "grant_type=client_credentials&resource=https%3A%2F%2Fapi.test&scope=items%3Aread";
    let request = request.body(Full::new(Bytes::from(body))).unwrap();
    let (response, body) = https_send(https, request).await.unwrap();
    assert_eq!(response.status(), 200, "token request failed: {body}");
    json(&body)
}

fn claims_of(token: &str) -> Value {
    let payload = URL_SAFE_NO_PAD
        .decode(token.split('.').nth(1).unwrap())
        .unwrap();
    serde_json::from_slice(&payload).unwrap()
}

/// A proof by `key` for `method` `url`, with `ath` for `at` when given.
fn fresh_proof(key: &SigningKey, method: &str, url: &str, at: Option<&str>) -> String {
    let mut claims = json!({
        "htm": method, "htu": url, "iat": now(),
        "jti": portcullis::session::seal::random_token(16).unwrap(),
    });
    if let Some(at) = at {
        claims["ath"] = json!(ath(at));
    }
    let mut header = Map::new();
    header.insert("jwk".into(), key.public_jwk());
    key.sign(claims.as_object().unwrap(), "dpop+jwt", &header)
        .unwrap()
}

#[tokio::test]
async fn real_idp_dpop_and_certificate_bound_tokens() {
    let ca = Ca::new("Bound tokens CA");
    let upstream = Upstream::start().await;
    let (mine, other) = (
        ca.client("mine", "spiffe://corp.test/ns/a/sa/mine"),
        ca.client("other", "spiffe://corp.test/ns/a/sa/other"),
    );
    let dir = test_dir(&[("ca.pem", &ca.pem)]);
    ca.server().write(dir.path(), "server");
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    let env = [("TLS_CERT", cert.as_os_str()), ("TLS_KEY", key.as_os_str())];
    let idp = crate::oidc::Idp::start_with(&env, None);
    let config = with_listen(
        &config_with(
            &upstream.url(),
            &format!(
                "outbound:\n  ca_files: [ca.pem]\n  system_roots: false\n\
identity:\n  jwt:\n    - name: oidc\n      issuer: {issuer}\n      audiences: [https://api.test]\n      algorithms: [ES256]\n      token_types: [at+jwt]\n  dpop: {{ max_age: 60s }}\n\
{ALLOW_ALL}routes:\n  - match: {{ path: /api/items }}\n    upstream: main\n",
                issuer = idp.issuer
            ),
        ),
        "  tls: { cert: server.pem, key: server.key, client_ca: ca.pem, client_auth: optional }\n",
    );
    std::fs::write(dir.path().join("portcullis.yaml"), config).unwrap();
    let gw = Gateway::start_in(dir).await;
    let url = format!("https://{}/api/items", gw.addr);
    let to_idp = https_client(&ca.pem, Some(&mine), false);
    let (no_cert, with_mine, with_other) = (
        https_client(&ca.pem, None, false),
        https_client(&ca.pem, Some(&mine), false),
        https_client(&ca.pem, Some(&other), false),
    );
    let call = |client: &crate::pki::HttpsClient, scheme: &str, at: &str, proof: Option<String>| {
        let mut request = Request::get(&url).header("authorization", format!("{scheme} {at}"));
        if let Some(proof) = proof {
            request = request.header("dpop", proof);
        }
        let request = request.body(Full::<Bytes>::default()).unwrap();
        let client = client.clone();
        async move {
            let (response, _) = https_send(&client, request).await.unwrap();
            let id = response.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .to_string();
            (response.status().as_u16(), id)
        }
    };
    let reason = |id: String, reason: &'static str| {
        let gw = &gw;
        async move {
            gw.event_where(reason, |e| {
                e["request_id"] == id.as_str() && e["reason"] == reason
            })
            .await;
        }
    };

    // DPoP: the IdP binds the token to the key that signed the token request's proof.
    let holder = SigningKey::generate_es256("holder").unwrap().0;
    let stranger = SigningKey::generate_es256("stranger").unwrap().0;
    let token_url = format!("{}/token", idp.issuer);
    let answer = idp_token(
        &to_idp,
        &idp.issuer,
        ("dpop-client", "dpop-secret"),
        Some(fresh_proof(&holder, "POST", &token_url, None)),
    )
    .await;
    assert_eq!(answer["token_type"], "DPoP", "{answer}");
    let at = answer["access_token"].as_str().unwrap().to_string();
    let jkt = thumbprint(holder.public_jwk().as_object().unwrap()).unwrap();
    assert_eq!(claims_of(&at)["cnf"]["jkt"], jkt.as_str());
    let proof = || Some(fresh_proof(&holder, "GET", &url, Some(&at)));
    assert_eq!(call(&no_cert, "DPoP", &at, proof()).await.0, 200);
    assert_eq!(call(&no_cert, "DPoP", &at, proof()).await.0, 200);
    let (status, id) = call(&no_cert, "Bearer", &at, None).await;
    assert_eq!(status, 401);
    reason(id, "dpop_downgrade").await;
    let foreign = Some(fresh_proof(&stranger, "GET", &url, Some(&at)));
    let (status, id) = call(&no_cert, "DPoP", &at, foreign).await;
    assert_eq!(status, 401);
    reason(id, "dpop_key_mismatch").await;
    assert_eq!(upstream.hits(), 2, "a refused request reached the upstream");

    // RFC 8705: the IdP binds the token to the certificate of its TLS connection.
    let answer = idp_token(&to_idp, &idp.issuer, ("mtls-client", "mtls-secret"), None).await;
    let at = answer["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        claims_of(&at)["cnf"]["x5t#S256"],
        mtls::thumbprint(&mine.der).as_str(),
        "{answer}"
    );
    assert_eq!(call(&with_mine, "Bearer", &at, None).await.0, 200);
    let (status, id) = call(&with_other, "Bearer", &at, None).await;
    assert_eq!(status, 401);
    reason(id, "certificate_binding_mismatch").await;
    let (status, id) = call(&no_cert, "Bearer", &at, None).await;
    assert_eq!(status, 401);
    reason(id, "certificate_binding_required").await;
    assert_eq!(upstream.hits(), 3, "a refused request reached the upstream");
}
