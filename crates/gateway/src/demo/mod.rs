//! `portcullis demo`: the whole gateway with no setup. A built-in "items" API plays the
//! upstream; the demo writes a real configuration file for it and runs the gateway from
//! that file, exactly as `portcullis run` would.

mod dev_idp;
mod items_api;
mod live;

use items_api::start_items_api;
use portcullis::authn::sign::SigningKey;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::sync::oneshot;

/// The example policy and its data, the same files as `examples/policies/`.
const DEMO_POLICY: &str = include_str!("../../../../examples/policies/authz.rego");
const DEMO_DATA: &str = include_str!("../../../../examples/policies/data.json");
/// The demo API's OpenAPI document, the same file as `examples/openapi/items.yaml`.
const DEMO_OPENAPI: &str = include_str!("../../../../examples/openapi/items.yaml");
/// A tiny WebSocket client to try `/api/live`, the same file as `examples/websocket-client.py`.
const DEMO_WEBSOCKET_CLIENT: &str = include_str!("../../../../examples/websocket-client.py");

/// The demo identity provider's issuer and the demo API's audience.
const ISSUER: &str = "https://idp.portcullis.demo";
const AUDIENCE: &str = "https://items.portcullis.demo";

/// The SPIFFE trust domain of the demo's client certificates.
const TRUST_DOMAIN: &str = "portcullis.demo";

/// Runs the demo until Ctrl-C; with `tls`, over https with a fresh local CA; with `login`,
/// with a browser login (a development IdP beside the items API, and its items page).
pub async fn run(
    listen: SocketAddr,
    admin: SocketAddr,
    tls: bool,
    login: bool,
) -> anyhow::Result<()> {
    // A fresh dev signing key; the demo upstream publishes its JWKS like an IdP would.
    let (key, pem) = SigningKey::generate_es256("demo-1")
        .map_err(|e| anyhow::anyhow!("cannot create the dev key: {e}"))?;
    let jwks = serde_json::json!({ "keys": [key.public_jwk()] });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| anyhow::anyhow!("cannot start the demo upstream: {e}"))?;
    let upstream_addr = listener.local_addr()?;
    let dev_idp = if login {
        let (idp_key, _) = SigningKey::generate_es256("demo-login-1")
            .map_err(|e| anyhow::anyhow!("cannot create the dev IdP key: {e}"))?;
        let scheme = if tls { "https" } else { "http" };
        Some(dev_idp::router(
            format!("http://{upstream_addr}/idp"),
            AUDIENCE,
            (scheme.to_string(), listen),
            idp_key,
        ))
    } else {
        None
    };
    let upstream = start_items_api(jwks, listener, dev_idp).await?;
    let dir = write_demo_files(listen, admin, upstream, &pem, (tls, login))?;
    let (bound_tx, bound_rx) = oneshot::channel();
    // A DPoP client key: tokens bound to it are useless without a proof made with it.
    let (dpop_client, dpop_pem) = SigningKey::generate_es256("dpop-client")
        .map_err(|e| anyhow::anyhow!("cannot create the DPoP client key: {e}"))?;
    write_private(&dir.join("dpop-client.pem"), &dpop_pem)?;
    let dpop_jkt = dpop_client
        .public_jwk()
        .as_object()
        .and_then(portcullis::authn::dpop::thumbprint)
        .ok_or_else(|| anyhow::anyhow!("the DPoP client key has no thumbprint"))?;
    let config_path = dir.join("portcullis.yaml");
    let admin_token = std::fs::read_to_string(dir.join("admin-token")).unwrap_or_default();
    let tokens = DemoTokens {
        alice: mint(&key, "alice", "items:read items:write", &[])?,
        alice_mfa: mint(
            &key,
            "alice",
            "items:read items:write",
            &[("amr", serde_json::json!(["pwd", "otp"]))],
        )?,
        bob: mint(&key, "bob", "items:read", &[])?,
        alice_dpop: mint(
            &key,
            "alice",
            "items:read items:write",
            &[("cnf", serde_json::json!({ "jkt": dpop_jkt }))],
        )?,
    };
    tokio::spawn(async move {
        if let Ok(bound) = bound_rx.await {
            print_banner(
                &bound,
                upstream,
                &config_path,
                admin_token.trim(),
                &tokens,
                (tls, login),
            );
        }
    });
    crate::serve::run(dir.join("portcullis.yaml"), Some(bound_tx)).await
}

struct DemoTokens {
    alice: String,
    alice_mfa: String,
    bob: String,
    /// Bound to the demo's DPoP client key (`dpop-client.pem`).
    alice_dpop: String,
}

fn mint(
    key: &SigningKey,
    sub: &str,
    scope: &str,
    extra: &[(&str, serde_json::Value)],
) -> anyhow::Result<String> {
    let now = portcullis::authn::now_secs() as u64;
    let claims = serde_json::json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": sub,
        "scope": scope,
        "iat": now,
        "exp": now + 3600,
        "jti": portcullis::request_id::RequestId::generate().as_str(),
    });
    let mut claims = claims.as_object().cloned().unwrap_or_default();
    for (name, value) in extra {
        claims.insert(name.to_string(), value.clone());
    }
    key.sign(&claims, "at+jwt", &serde_json::Map::new())
        .map_err(|e| anyhow::anyhow!("cannot mint a demo token: {e}"))
}

fn write_demo_files(
    listen: SocketAddr,
    admin: SocketAddr,
    upstream: SocketAddr,
    pem: &str,
    (tls, login): (bool, bool),
) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("portcullis-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| anyhow::anyhow!("cannot create the demo directory {}: {e}", dir.display()))?;
    let token = format!("demo-{}", portcullis::request_id::RequestId::generate());
    write_private(&dir.join("admin-token"), &token)?;
    write_private(&dir.join("dev-key.pem"), pem)?;
    // The example policy: owners change their own items, admins anything.
    for (name, text) in [
        ("authz.rego", DEMO_POLICY),
        ("data.json", DEMO_DATA),
        ("openapi.yaml", DEMO_OPENAPI),
        ("websocket-client.py", DEMO_WEBSOCKET_CLIENT),
    ] {
        std::fs::write(dir.join(name), text)
            .map_err(|e| anyhow::anyhow!("cannot write the demo {name}: {e}"))?;
    }
    let (listen_tls, partner_route) = if tls {
        write_demo_pki(&dir, listen)?;
        (
            "  tls:\n    cert: server.pem\n    key: server.key\n    client_ca: ca.pem\n    client_auth: optional\n",
            format!(
                "  - match: {{ path: /api/partner/status, methods: [GET] }}\n    upstream: items\n    auth: none\n    client_identities: [\"spiffe://{TRUST_DOMAIN}/ns/payments/sa/*\"]\n"
            ),
        )
    } else {
        ("", String::new())
    };
    let (login_identity, login_route) = if login {
        let keys = portcullis::session::seal::random_token(48)
            .ok_or_else(|| anyhow::anyhow!("no randomness for the session key"))?;
        write_private(&dir.join("session-keys"), &keys)?;
        let issuer = format!("http://{upstream}/idp");
        (
            format!(
                "    - name: demo-login
      issuer: {issuer}
      audiences: [{AUDIENCE}]
      jwks_uri: {issuer}/jwks
      algorithms: [ES256]
      max_lifetime: 1h
      token_types: [at+jwt]
  oidc_login:                         # DEVELOPMENT IdP: signs in anyone who picks a name
    issuer: {issuer}
    client_id: {client}
    scopes: [openid, items:read, items:write]
    session: {{ store: cookie, keys: \"${{file:session-keys}}\", ttl: 8h, idle_timeout: 1h }}
    refresh_before: 30s
",
                client = dev_idp::CLIENT_ID
            ),
            "  - match: { path: /api/app, methods: [GET, POST] }
    upstream: items
    auth: session
    resource: { type: items }
"
            .to_string(),
        )
    } else {
        (String::new(), String::new())
    };
    let config = format!(
        r#"# Written by `portcullis demo`. Run it yourself with: portcullis run --config {config}
listen:
  address: {listen}
{listen_tls}admin:
  address: {admin}
  token: ${{file:admin-token}}
limits:
  max_body_bytes: 65536
  request_timeout: 10s
upstreams:
  items:
    url: http://{upstream}
    timeout: 5s
identity:
  jwt:
    - name: demo-idp
      issuer: {ISSUER}
      audiences: [{AUDIENCE}]
      jwks_uri: http://{upstream}/.well-known/jwks.json
      algorithms: [ES256]
      max_lifetime: 1h
      token_types: [at+jwt]
{login_identity}  dpop: {{ max_age: 60s, replay_store: memory }}
  forward:
    token: false
    identity_headers:
      x-user-id: sub
      x-user-scopes: scope
rate_limit:
  store: memory
  default: {{ limit: 100, window: 60s, key: principal_or_ip }}
  auth_failures: {{ limit: 10, window: 60s, lockout: 1m }}
  adaptive: {{ enabled: true, block_score: 90 }}
policy:
  engine: rego
  rego:
    files: [authz.rego]
    data: [data.json]
    query: data.api.authz.allow
  decision_log:
    path: decisions.log
    durability: sync
monitoring:
  detection:
    enumeration: {{ distinct_ids: 20, window: 1m, min_refused_ratio: 0.5 }}
    privilege_escalation: {{ distinct_denials: 5, window: 5m }}
    error_spike: {{ factor: 5, min_count: 20, window: 1m }}
    exfiltration: {{ factor: 10, min_bytes: 65536, min_page: 50 }}
validation:
  openapi: openapi.yaml
  unknown_operations: reject
  max_json_depth: 16
  responses: log
routes:
  - match: {{ path: /api/items, methods: [GET, POST] }}
    upstream: items
    scopes: {{ GET: [items:read], POST: [items:write] }}
  - match: {{ path: "/api/items/{{id}}", methods: [GET, PUT, DELETE] }}
    upstream: items
    scopes: {{ GET: [items:read], PUT: [items:write], DELETE: [items:write] }}
    resource: {{ type: items, id: "{{id}}" }}
    require_mfa: [DELETE]
  - match: {{ prefix: /api/public/ }}
    upstream: items
    auth: none
    rate_limit: {{ limit: 5, window: 10s, key: ip }}
  - match: {{ path: /api/live, methods: [GET] }}    # WebSocket echo, after the whole pipeline
    upstream: items
    scopes: [items:read]
    websocket: true                    # from pages of the gateway's own origin (no websocket_origins)
{partner_route}{login_route}"#,
        config = dir.join("portcullis.yaml").display(),
    );
    std::fs::write(dir.join("portcullis.yaml"), config)
        .map_err(|e| anyhow::anyhow!("cannot write the demo configuration: {e}"))?;
    Ok(dir)
}

/// A fresh local CA (`ca.pem`), the gateway's certificate for the listen address and
/// `localhost` (`server.pem`/`.key`), and two client certificates with SPIFFE ids: a payments
/// service that the partner route admits (`client-payments`) and a web frontend that it
/// refuses (`client-web`). Private keys are written readable by the owner only.
fn write_demo_pki(dir: &std::path::Path, listen: SocketAddr) -> anyhow::Result<()> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, SanType,
    };
    let fail = |e: rcgen::Error| anyhow::anyhow!("cannot create the demo certificates: {e}");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Portcullis demo CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().map_err(fail)?;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(fail)?;
    std::fs::write(dir.join("ca.pem"), ca_cert.pem())
        .map_err(|e| anyhow::anyhow!("cannot write the demo CA: {e}"))?;
    let issuer = Issuer::new(ca_params, ca_key);
    let mut names = vec![
        SanType::DnsName("localhost".try_into().map_err(fail)?),
        SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])),
    ];
    if !listen.ip().is_unspecified() && listen.ip() != std::net::IpAddr::from([127, 0, 0, 1]) {
        names.push(SanType::IpAddress(listen.ip()));
    }
    let leaves: [(&str, &str, Vec<SanType>, ExtendedKeyUsagePurpose); 3] = [
        (
            "server",
            "portcullis demo gateway",
            names,
            ExtendedKeyUsagePurpose::ServerAuth,
        ),
        (
            "client-payments",
            "payments-api",
            vec![SanType::URI(
                format!("spiffe://{TRUST_DOMAIN}/ns/payments/sa/api")
                    .try_into()
                    .map_err(fail)?,
            )],
            ExtendedKeyUsagePurpose::ClientAuth,
        ),
        (
            "client-web",
            "web-frontend",
            vec![SanType::URI(
                format!("spiffe://{TRUST_DOMAIN}/ns/web/sa/frontend")
                    .try_into()
                    .map_err(fail)?,
            )],
            ExtendedKeyUsagePurpose::ClientAuth,
        ),
    ];
    for (file, name, sans, usage) in leaves {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().map_err(fail)?;
        let cert = params.signed_by(&key, &issuer).map_err(fail)?;
        std::fs::write(dir.join(format!("{file}.pem")), cert.pem())
            .map_err(|e| anyhow::anyhow!("cannot write the demo {file}.pem: {e}"))?;
        write_private(&dir.join(format!("{file}.key")), &key.serialize_pem())?;
    }
    Ok(())
}

fn write_private(path: &std::path::Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    file.write_all(contents.as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

fn print_banner(
    bound: &crate::serve::Bound,
    upstream: SocketAddr,
    config: &std::path::Path,
    token: &str,
    tokens: &DemoTokens,
    (tls, login): (bool, bool),
) {
    let scheme = if tls { "https" } else { "http" };
    let gw = format!("{scheme}://{}", bound.listen);
    let ws = format!("{}://{}", if tls { "wss" } else { "ws" }, bound.listen);
    let (alice, alice_mfa, bob) = (&tokens.alice, &tokens.alice_mfa, &tokens.bob);
    let alice_dpop = &tokens.alice_dpop;
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "portcullis".into());
    let dir = config
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let admin = bound
        .admin
        .map(|a| format!("http://{a}"))
        .unwrap_or_default();
    let banner = format!(
        r#"
Portcullis demo is running.
  gateway   {gw}
  admin     {admin}   (admin token: {token})
  dashboard {admin}/   (open it in a browser; sign in with the admin token)
  upstream  http://{upstream}   (built-in items API)
  config    {}

Tokens (ES256, signed by the demo's dev key; its JWKS is served by the demo upstream):
  ALICE={alice}
  ALICE_MFA={alice_mfa}
  BOB={bob}
  ALICE_DPOP={alice_dpop}
  (ALICE_DPOP is bound to {dir}/dpop-client.pem: useless without a DPoP proof made with that key)
  (mint more: portcullis token --key {dir}/dev-key.pem --iss {ISSUER} --aud {AUDIENCE} --sub carol --scope items:read)

Try these (each answer carries x-request-id and the security headers):
  curl -i {gw}/api/items -H "authorization: Bearer $ALICE"
  curl -i -X POST {gw}/api/items -H "authorization: Bearer $ALICE" -H 'content-type: application/json' -d '{{"name":"widget"}}'
  curl -i -X POST {gw}/api/items -H "authorization: Bearer $BOB" -H 'content-type: application/json' -d '{{"name":"x"}}'   # 403: bob lacks items:write
  curl -i {gw}/api/items                                   # 401: no token
  curl -i {gw}/api/items -H "authorization: Bearer ${{ALICE}}x"   # 401: bad signature (the event says which check failed)
  curl -i -X PUT {gw}/api/items/3 -H "authorization: Bearer $ALICE" -H 'content-type: application/json' -d '{{"name":"x"}}'   # 403: item 3 is bob's (policy)
  curl -i -X DELETE {gw}/api/items/1 -H "authorization: Bearer $ALICE"       # 401: step-up, MFA required
  curl -i -X DELETE {gw}/api/items/1 -H "authorization: Bearer $ALICE_MFA"   # 204: owner, with MFA
  curl -i {gw}/api/items -H "authorization: DPoP $ALICE_DPOP" -H "dpop: $({exe} dpop proof --key {dir}/dpop-client.pem --url {gw}/api/items --token $ALICE_DPOP)"   # 200: a DPoP-bound call (one proof per request)
  curl -i {gw}/api/items -H "authorization: Bearer $ALICE_DPOP"   # 401: a bound token without its proof (no downgrade)
  python3 {dir}/websocket-client.py {ws}/api/live -H "authorization: Bearer $ALICE" -H 'origin: {gw}' hello again   # WebSocket echo, after the whole pipeline
  python3 {dir}/websocket-client.py {ws}/api/live -H "authorization: Bearer $ALICE" -H 'origin: https://evil.example'   # 403: foreign origin
  portcullis audit verify {dir}/decisions.log                # the tamper-evident decision log
  curl -i {gw}/api/public/status                           # public route, 5 per 10s: see RateLimit headers
  for i in 1 2 3 4 5 6; do curl -s -o /dev/null -w '%{{http_code}} ' {gw}/api/public/status; done; echo   # the 6th is 429
  curl -i --path-as-is '{gw}/api/../../etc/passwd'        # 400: climbs above the root, never forwarded
  curl -i '{gw}/api/items/..%2f..%2fadmin'                 # 400: encoded slash
  curl -i -X POST {gw}/api/items -H "authorization: Bearer $ALICE" -H 'content-type: application/json' -d '{{"name":"x","owner":"bob"}}'   # 400: owner is read-only (mass assignment)
  curl -i -X POST {gw}/api/items -H "authorization: Bearer $ALICE" -H 'content-type: application/json' -d '{{"name":"x","admin":true}}'   # 400: undocumented property
  curl -i -X POST {gw}/api/items -H "authorization: Bearer $ALICE" -H 'content-type: text/plain' -d 'name=x'   # 415: content type not declared
  curl -i '{gw}/api/items?limit=5&limit=500' -H "authorization: Bearer $ALICE"   # 400: parameter pollution
  curl -i '{gw}/api/items?debug=1' -H "authorization: Bearer $ALICE"   # 400: undocumented query parameter
  curl -i {gw}/api/items/abc -H "authorization: Bearer $ALICE"    # 400: id must be an integer
  curl -i {gw}/internal/debug                              # 404: no route, never forwarded
  curl -i -X PATCH {gw}/api/items/1                        # 405 with Allow
  curl -s {admin}/metrics | grep portcullis_requests
  curl -s -H 'authorization: Bearer {token}' {admin}/admin/events
  curl -s -H 'authorization: Bearer {token}' {admin}/admin/inventory   # calls per documented operation
  curl -sN -H 'authorization: Bearer {token}' {admin}/admin/events/stream   # live (SSE); Ctrl-C to stop
  for i in $(seq 1 30); do curl -s -o /dev/null {gw}/api/items/$i -H "authorization: Bearer $BOB"; done   # enumeration: bob walks ids, most missing; an anomaly event flags him
  curl -s -H 'authorization: Bearer {token}' {admin}/admin/offenders   # clients and principals by threat score, detector flags
  curl -s -X POST -H 'authorization: Bearer {token}' {admin}/admin/reload

{tls_part}{login_part}Security events follow below as JSON lines. Ctrl-C stops.
"#,
        config.display(),
        tls_part = if tls {
            tls_banner(&gw, &dir)
        } else {
            String::new()
        },
        login_part = if login {
            format!(
                "Browser login (--login): open {gw}/api/app in a browser. The gateway sends you to the
demo's DEVELOPMENT IdP (sign in as alice or bob; no password), keeps the tokens in one sealed
__Host-portcullis cookie, refreshes the 2-minute access token before it expires, and the page
only ever sees identity headers. Without a browser:
  curl -i {gw}/api/app -H 'accept: application/json'     # 401: no session (a page load gets 302 to /auth/login)
  curl -i {gw}/api/app -H 'accept: text/html'            # 302 to /auth/login?return_to=%2Fapi%2Fapp

"
            )
        } else {
            String::new()
        },
    );
    // Over https every client trusts the demo's CA.
    let banner = if tls {
        banner
            .replace("  curl ", &format!("  curl --cacert {dir}/ca.pem "))
            .replace(
                "websocket-client.py ",
                &format!("websocket-client.py --cacert {dir}/ca.pem "),
            )
    } else {
        banner
    };
    println!("{banner}");
}

/// The https part of the banner: client certificates and the SPIFFE-restricted route.
fn tls_banner(gw: &str, dir: &str) -> String {
    let payments = format!("--cert {dir}/client-payments.pem --key {dir}/client-payments.key");
    let web = format!("--cert {dir}/client-web.pem --key {dir}/client-web.key");
    format!(
        r#"TLS (a fresh local CA in {dir}/ca.pem; client certificates are asked for, not required):
  curl {gw}/api/partner/status {payments}   # 200: spiffe://{TRUST_DOMAIN}/ns/payments/sa/api matches the route
  curl {gw}/api/partner/status {web}   # 403: spiffe://{TRUST_DOMAIN}/ns/web/sa/frontend does not
  curl {gw}/api/partner/status   # 403: no client certificate
  curl --http2 -w '%{{http_version}}\n' -o /dev/null -s {gw}/api/public/status   # HTTP/2 by ALPN
  openssl s_client -connect {listen} -CAfile {dir}/ca.pem -tls1_3 </dev/null | grep -E 'Protocol|Verify'

"#,
        listen = gw.trim_start_matches("https://"),
    )
}
