//! TLS on the real binary: the listener (versions, ALPN, HSTS), mTLS refusals at the
//! handshake, identities in routes and policies, certificate rotation under load, https
//! upstreams with the gateway's own certificate, and `check` on certificate problems.

use crate::identity::{baseline_claims, jwks, token};
use crate::pki::*;
use crate::util::*;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use portcullis::authn::sign::SigningKey;
use rcgen::ExtendedKeyUsagePurpose;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A configuration like [`config_with`], with `tls` (YAML lines under `listen.tls`).
fn tls_config(upstream: &str, tls: &str, extra: &str) -> String {
    with_listen(&config_with(upstream, extra), &format!("  tls:\n{tls}"))
}

const SERVER_TLS: &str = "    cert: server.pem\n    key: server.key\n";
const MTLS_REQUIRED: &str =
    "    cert: server.pem\n    key: server.key\n    client_ca: ca.pem\n    client_auth: required\n";

/// A test directory with the CA (`ca.pem`) and the gateway's server pair written.
fn pki_dir(ca: &Ca) -> tempfile::TempDir {
    let dir = test_dir(&[("ca.pem", &ca.pem)]);
    ca.server().write(dir.path(), "server");
    dir
}

async fn start(dir: tempfile::TempDir, config: &str) -> Gateway {
    std::fs::write(dir.path().join("portcullis.yaml"), config).unwrap();
    Gateway::start_in(dir).await
}

fn https(gw: &Gateway, path: &str) -> String {
    format!("https://{}{path}", gw.addr)
}

async fn metrics(gw: &Gateway) -> String {
    get(&gw.admin_url("/metrics")).await.unwrap().2
}

#[tokio::test]
async fn tls_listener_serves_h1_and_h2_and_refuses_old_versions() {
    let upstream = Upstream::start().await;
    let ca = Ca::new("Test CA");
    let dir = pki_dir(&ca);
    let ca_file = dir.path().join("ca.pem");
    let gw = start(dir, &tls_config(&upstream.url(), SERVER_TLS, CATCH_ALL)).await;
    let ca_arg = ca_file.to_str().unwrap();

    // curl over HTTP/1.1 and HTTP/2 (ALPN on one port).
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let (ok, out) = curl(&[
            "--cacert",
            ca_arg,
            flag,
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-w",
            "version=%{http_version}",
            &https(&gw, "/hello"),
        ])
        .await;
        assert!(ok, "{out}");
        assert!(out.contains(&format!("version={version}")), "{out}");
        assert!(
            out.starts_with(&format!("HTTP/{version} 200")),
            "{out} {:?}",
            gw.events()
        );
        let lower = out.to_ascii_lowercase();
        assert!(
            lower.contains("strict-transport-security: max-age="),
            "{out}"
        );
    }
    assert_eq!(upstream.hits(), 2);
    assert_eq!(upstream.last().headers["x-forwarded-proto"], "https");

    // A rustls client, HTTP/2 by ALPN.
    let client = https_client(&ca.pem, None, true);
    let (response, body) = https_send(&client, get_request(&https(&gw, "/rustls")))
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{body}");
    assert_eq!(response.version(), http::Version::HTTP_2);

    // TLS 1.1 is never offered: the server refuses it (the client is told to try it).
    let heads = upstream.heads();
    let (ok, out) = curl(&[
        "--cacert",
        ca_arg,
        "--tlsv1.1",
        "--tls-max",
        "1.1",
        "--ciphers",
        "DEFAULT@SECLEVEL=0",
        &https(&gw, "/old"),
    ])
    .await;
    assert!(!ok, "TLS 1.1 was accepted: {out}");
    assert!(
        out.contains("alert"),
        "refused by the server, not the client: {out}"
    );
    assert_eq!(upstream.heads(), heads);
    eventually_async("the refused version to be counted", || async {
        metrics(&gw)
            .await
            .contains("portcullis_tls_handshake_failures_total{reason=\"incompatible_client\"} 1")
    })
    .await;

    assert!(
        metrics(&gw)
            .await
            .contains("portcullis_tls_cert_expiry_seconds{cert=\"listen\"} "),
        "no expiry metric"
    );

    // Plain HTTP on the TLS port gets no HTTP answer.
    let answer = raw(gw.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(upstream.heads(), heads);

    // Session tickets: a second connection resumes the first one's session.
    assert!(resumes(gw.addr, &ca_file).await, "no TLS 1.3 resumption");

    // TLS 1.2 works by default; `min_version: "1.3"` refuses it after a reload.
    assert!(
        served_serial(gw.addr, &ca_file, &["-tls1_2"])
            .await
            .is_some()
    );
    let config = std::fs::read_to_string(gw.config_path()).unwrap().replace(
        "    key: server.key\n",
        "    key: server.key\n    min_version: \"1.3\"\n",
    );
    std::fs::write(gw.config_path(), config).unwrap();
    gw.event_where("reload", |e| {
        e["event_type"] == "config_reload" && e["reason"] == "applied"
    })
    .await;
    eventually_async("TLS 1.2 to be refused", || async {
        served_serial(gw.addr, &ca_file, &["-tls1_2"])
            .await
            .is_none()
    })
    .await;
    assert!(
        served_serial(gw.addr, &ca_file, &["-tls1_3"])
            .await
            .is_some()
    );
}

#[tokio::test]
async fn plain_http_responses_carry_no_hsts_unless_a_trusted_proxy_saw_https() {
    let upstream = Upstream::start().await;
    let config = with_listen(
        &config_with(&upstream.url(), CATCH_ALL),
        "  trusted_proxies: [127.0.0.1/32]\n",
    );
    let gw = Gateway::start(&config).await;
    let (status, headers, _) = get(&gw.url("/plain")).await.unwrap();
    assert_eq!(status, 200);
    assert!(headers.get("strict-transport-security").is_none());
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let request = Request::get(gw.url("/behind-proxy"))
        .header("x-forwarded-proto", "https")
        .body(Full::default())
        .unwrap();
    let (status, headers, _) = send(request).await.unwrap();
    assert_eq!(status, 200);
    assert!(headers.get("strict-transport-security").is_some());
}

#[tokio::test]
async fn mtls_refuses_bad_client_certificates_at_the_handshake() {
    let upstream = Upstream::start().await;
    let ca = Ca::new("Test CA");
    let foreign = Ca::new("Foreign CA");
    let dir = pki_dir(&ca);
    let gw = start(dir, &tls_config(&upstream.url(), MTLS_REQUIRED, CATCH_ALL)).await;

    let good = ca.client("api", "spiffe://corp.test/ns/payments/sa/api");
    let client = |leaf: Option<&Leaf>| client_config(&ca.pem, leaf, &[b"http/1.1"]);
    assert!(handshake_ok(gw.addr, client(Some(&good))).await);
    let before = upstream.heads();

    let expired = ca.issue(Spec {
        cn: "expired",
        usage: &[ExtendedKeyUsagePurpose::ClientAuth],
        valid: Some(((2020, 1, 1), (2021, 1, 1))),
        ..Spec::default()
    });
    let not_yet = ca.issue(Spec {
        cn: "future",
        usage: &[ExtendedKeyUsagePurpose::ClientAuth],
        valid: Some(((2080, 1, 1), (2090, 1, 1))),
        ..Spec::default()
    });
    let wrong_usage = ca.issue(Spec {
        cn: "server-only",
        usage: &[ExtendedKeyUsagePurpose::ServerAuth],
        ..Spec::default()
    });
    let stranger = foreign.client("stranger", "spiffe://corp.test/ns/payments/sa/api");
    for (what, leaf, reason) in [
        ("no certificate", None, "no_client_certificate"),
        ("expired", Some(&expired), "cert_expired"),
        ("not yet valid", Some(&not_yet), "cert_not_yet_valid"),
        ("serverAuth only", Some(&wrong_usage), "wrong_usage"),
        ("foreign CA", Some(&stranger), "unknown_ca"),
    ] {
        assert!(
            !handshake_ok(gw.addr, client(leaf)).await,
            "{what} was accepted"
        );
        let counted = format!("portcullis_tls_handshake_failures_total{{reason=\"{reason}\"}} 1");
        eventually_async(what, || async { metrics(&gw).await.contains(&counted) }).await;
    }
    assert_eq!(
        upstream.heads(),
        before,
        "a refused client reached the upstream"
    );

    // curl with a good certificate, and without one.
    let dir = gw.dir.path();
    good.write(dir, "client");
    let ca_file = dir.join("ca.pem");
    let heads = upstream.heads();
    let (ok, out) = curl(&[
        "--cacert",
        ca_file.to_str().unwrap(),
        "--cert",
        dir.join("client.pem").to_str().unwrap(),
        "--key",
        dir.join("client.key").to_str().unwrap(),
        &https(&gw, "/with-cert"),
    ])
    .await;
    assert!(ok, "{out}");
    assert_eq!(upstream.heads(), heads + 1);
    let (ok, _) = curl(&[
        "--cacert",
        ca_file.to_str().unwrap(),
        &https(&gw, "/without"),
    ])
    .await;
    assert!(!ok);
    assert_eq!(upstream.heads(), heads + 1);

    // Every failure is counted, but one client raises one event a minute.
    let events: Vec<_> = gw
        .events()
        .into_iter()
        .filter(|e| e["reason"] == "tls_handshake")
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["event_type"], "auth_failure");
    assert_eq!(events[0]["ip"], "127.0.0.1");
    assert_eq!(events[0]["details"]["tls_reason"], "no_client_certificate");
}

#[tokio::test]
async fn sessions_made_under_another_client_ca_do_not_resume() {
    let upstream = Upstream::start().await;
    let (first, second) = (Ca::new("First CA"), Ca::new("Second CA"));
    let dir = pki_dir(&first);
    let client = first.client("api", "spiffe://corp.test/ns/payments/sa/api");
    client.write(dir.path(), "client");
    // The server certificate stays trusted by the client through ca.pem's first copy.
    std::fs::copy(dir.path().join("ca.pem"), dir.path().join("server-ca.pem")).unwrap();
    let gw = start(dir, &tls_config(&upstream.url(), MTLS_REQUIRED, CATCH_ALL)).await;
    let path = gw.dir.path().to_path_buf();
    let ca_file = path.join("server-ca.pem");
    let session = path.join("session");
    let (cert, key) = (path.join("client.pem"), path.join("client.key"));
    let args = |flag: &'static str| {
        vec![
            std::ffi::OsString::from("-cert"),
            cert.clone().into(),
            "-key".into(),
            key.clone().into(),
            flag.into(),
            session.clone().into(),
        ]
    };
    let run = |args: Vec<std::ffi::OsString>| {
        let ca_file = ca_file.clone();
        async move {
            let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
            s_client(gw.addr, &ca_file, &refs, CLOSE_REQUEST).await
        }
    };
    let out = run(args("-sess_out")).await;
    assert!(
        out.contains("New, TLSv1.3") && out.contains("HTTP/1.1 200"),
        "{out}"
    );
    assert_eq!(upstream.heads(), 1);
    // The operator drops the first CA.
    std::fs::write(path.join("ca.pem"), &second.pem).unwrap();
    gw.event_where("reload", |e| {
        e["event_type"] == "config_reload" && e["reason"] == "applied"
    })
    .await;
    let out = run(args("-sess_in")).await;
    assert!(!out.contains("Reused"), "an old session resumed: {out}");
    assert!(!out.contains("HTTP/1.1 200"), "{out}");
    assert_eq!(
        upstream.heads(),
        1,
        "the dropped CA's client reached the upstream"
    );
}

#[tokio::test]
async fn slow_tls_clients_are_cut_off_by_the_header_timeout() {
    let upstream = Upstream::start().await;
    let ca = Ca::new("Test CA");
    let dir = pki_dir(&ca);
    let config = tls_config(
        &upstream.url(),
        SERVER_TLS,
        &format!("limits:\n  header_read_timeout: 300ms\n{CATCH_ALL}"),
    );
    let gw = start(dir, &config).await;
    // Silent after connecting: no ClientHello at all.
    let mut silent = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    // Handshake done, then no request.
    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(client_config(&ca.pem, None, &[b"http/1.1"])));
    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut idle = connector.connect(name, stream).await.unwrap();
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(DEADLINE, silent.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "silent client kept"
    );
    let closed = tokio::time::timeout(DEADLINE, idle.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "idle TLS client kept"
    );
    // The connection closes before the failure is counted: poll for it.
    eventually_async("the timeout to be counted", || async {
        metrics(&gw)
            .await
            .contains("portcullis_tls_handshake_failures_total{reason=\"timeout\"} 1")
    })
    .await;
    assert_eq!(upstream.heads(), 0);
}

/// A Rego policy allowing `/api/` only to callers whose certificate's SPIFFE id is in the
/// payments namespace.
const MTLS_REGO: &str = r#"package test

default allow := false

allow if startswith(input.environment.mtls_identity.spiffe_id, "spiffe://corp.test/ns/payments/")
"#;

const MTLS_CEDAR: &str = r#"permit(principal, action, resource)
when { context has mtls_identity && context.mtls_identity has spiffe_id &&
       context.mtls_identity.spiffe_id like "spiffe://corp.test/ns/payments/*" };
"#;

#[tokio::test]
async fn identities_reach_routes_and_policies() {
    for engine in ["rego", "cedar"] {
        let upstream = Upstream::start().await;
        let ca = Ca::new("Test CA");
        let (key, _) = SigningKey::generate_es256("k1").unwrap();
        let dir = pki_dir(&ca);
        std::fs::write(dir.path().join("jwks.json"), jwks(&key)).unwrap();
        std::fs::write(dir.path().join("mtls.rego"), MTLS_REGO).unwrap();
        std::fs::write(dir.path().join("mtls.cedar"), MTLS_CEDAR).unwrap();
        std::fs::write(dir.path().join("entities.json"), "[]").unwrap();
        let policy = match engine {
            "rego" => {
                "policy:\n  engine: rego\n  rego:\n    files: [mtls.rego]\n    query: data.test.allow\n"
            }
            _ => {
                "policy:\n  engine: cedar\n  cedar:\n    files: [mtls.cedar]\n    entities: entities.json\n"
            }
        };
        let extra = format!(
            "identity:\n  jwt:\n    - name: t\n      issuer: https://idp.test\n      audiences: [api]\n      jwks_file: jwks.json\n      algorithms: [ES256]\n\
{policy}routes:\n  - match: {{ prefix: /pay/ }}\n    upstream: main\n    auth: none\n    client_identities: [\"spiffe://corp.test/ns/payments/sa/*\", \"*.payments.corp.test\"]\n\
\x20\x20- match: {{ prefix: /api/ }}\n    upstream: main\n"
        );
        let mtls = "    cert: server.pem\n    key: server.key\n    client_ca: ca.pem\n    client_auth: optional\n";
        let gw = start(dir, &tls_config(&upstream.url(), mtls, &extra)).await;

        let payments = ca.client("api", "spiffe://corp.test/ns/payments/sa/api");
        let web = ca.client("frontend", "spiffe://corp.test/ns/web/sa/frontend");
        let by_dns = ca.issue(Spec {
            cn: "batch",
            dns: &["batch.payments.corp.test"],
            usage: &[ExtendedKeyUsagePurpose::ClientAuth],
            ..Spec::default()
        });
        let bearer = format!("Bearer {}", token(&key, &baseline_claims()));
        let call = |leaf: Option<&Leaf>, path: &str| {
            let client = https_client(&ca.pem, leaf, false);
            let request = Request::get(https(&gw, path))
                .header("authorization", bearer.as_str())
                .body(Full::default())
                .unwrap();
            async move { https_send(&client, request).await.unwrap() }
        };
        for (who, leaf, route_status, policy_status) in [
            ("payments", Some(&payments), 200, 200),
            ("payments by DNS name", Some(&by_dns), 200, 403),
            ("web", Some(&web), 403, 403),
            ("no certificate", None, 403, 403),
        ] {
            let heads = upstream.heads();
            let (response, body) = call(leaf, "/pay/x").await;
            assert_eq!(
                response.status(),
                route_status,
                "{engine} {who} route: {body}"
            );
            let (response, body) = call(leaf, "/api/x").await;
            assert_eq!(
                response.status(),
                policy_status,
                "{engine} {who} policy: {body}"
            );
            let passed = usize::from(route_status == 200) + usize::from(policy_status == 200);
            assert_eq!(upstream.heads(), heads + passed, "{engine} {who}");
        }
        let refused = gw
            .event_where("identity refusal", |e| {
                e["reason"] == "client_identity_mismatch"
            })
            .await;
        assert_eq!(refused["event_type"], "authz_denied");
        assert!(
            refused["details"]
                .to_string()
                .contains("spiffe://corp.test/ns/web/sa/frontend"),
            "{refused}"
        );
        gw.event_where("no certificate", |e| {
            e["reason"] == "client_certificate_required"
        })
        .await;
    }
}

/// A real https upstream (rustls, HTTP/1.1 and HTTP/2 by ALPN) that requires a client
/// certificate from `ca` and records what each request saw.
struct TlsUpstream {
    addr: std::net::SocketAddr,
    /// (HTTP version, Host or :authority, client certificate thumbprint).
    seen: Arc<Mutex<Vec<(http::Version, String, String)>>>,
    _task: TaskGuard,
}

impl TlsUpstream {
    async fn start(server: &Leaf, client_ca: &str) -> TlsUpstream {
        TlsUpstream::start_with(server, client_ca, false).await
    }

    /// With `one_request`: HTTP/1.1 only, and every connection closed after one request, so
    /// each request is a new handshake.
    async fn start_with(server: &Leaf, client_ca: &str, one_request: bool) -> TlsUpstream {
        use rustls::pki_types::PrivateKeyDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(client_ca.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            portcullis::outbound::provider(),
        )
        .build()
        .unwrap();
        let mut config =
            rustls::ServerConfig::builder_with_provider(portcullis::outbound::provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_client_cert_verifier(verifier)
                .with_single_cert(
                    vec![server.der.clone()],
                    PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes()).unwrap(),
                )
                .unwrap();
        config.alpn_protocols = if one_request {
            vec![b"http/1.1".to_vec()]
        } else {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<(http::Version, String, String)>>> = Arc::default();
        let record = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let record = record.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let thumbprint = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| portcullis::authn::mtls::thumbprint(c))
                        .unwrap_or_default();
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let host = req
                            .headers()
                            .get("host")
                            .and_then(|h| h.to_str().ok())
                            .map(str::to_string)
                            .or_else(|| req.uri().authority().map(|a| a.to_string()))
                            .unwrap_or_default();
                        record
                            .lock()
                            .unwrap()
                            .push((req.version(), host, thumbprint.clone()));
                        async move {
                            let _ = req.into_body().collect().await;
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                Bytes::from_static(b"{\"upstream\":\"tls\"}"),
                            )))
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(tls);
                    if one_request {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .keep_alive(false)
                            .serve_connection(io, service)
                            .await;
                    } else {
                        let _ = hyper_util::server::conn::auto::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(io, service)
                        .await;
                    }
                });
            }
        });
        TlsUpstream {
            addr,
            seen,
            _task: TaskGuard(task),
        }
    }
}

#[tokio::test]
async fn https_upstreams_verify_the_server_and_see_the_gateways_certificate() {
    let ca = Ca::new("Internal CA");
    let upstream_cert = ca.issue(Spec {
        cn: "items",
        dns: &["items.internal"],
        usage: &[ExtendedKeyUsagePurpose::ServerAuth],
        ..Spec::default()
    });
    let upstream = TlsUpstream::start(&upstream_cert, &ca.pem).await;
    let gateway_cert = ca.client("gateway", "spiffe://corp.test/ns/edge/sa/gateway");
    let dir = test_dir(&[("internal-ca.pem", &ca.pem)]);
    gateway_cert.write(dir.path(), "gateway-client");
    let url = format!("https://127.0.0.1:{}", upstream.addr.port());
    let extra = format!(
        "  secure:\n    url: {url}\n    tls:\n      server_name: items.internal\n      cert: gateway-client.pem\n      key: gateway-client.key\n\
\x20\x20unnamed:\n    url: {url}\n    tls:\n      cert: gateway-client.pem\n      key: gateway-client.key\n\
outbound:\n  ca_files: [internal-ca.pem]\n\
routes:\n  - match: {{ prefix: /secure/ }}\n    upstream: secure\n    auth: none\n\
\x20\x20- match: {{ prefix: /unnamed/ }}\n    upstream: unnamed\n    auth: none\n"
    );
    let config = config_with("http://127.0.0.1:9", &extra);
    let gw = start(dir, &config).await;
    let (status, _, body) = get(&gw.url("/secure/a")).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["upstream"], "tls");
    let seen = upstream.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let (version, host, thumbprint) = &seen[0];
    assert_eq!(*version, http::Version::HTTP_2, "h2 by ALPN");
    assert_eq!(host, &format!("127.0.0.1:{}", upstream.addr.port()));
    assert_eq!(thumbprint, &gateway_cert.thumbprint());

    // Without `server_name` the certificate must carry 127.0.0.1, which it does not.
    let (status, _, body) = get(&gw.url("/unnamed/a")).await.unwrap();
    assert_eq!(status, 502, "{body}");
    assert!(
        !body.contains("certificate"),
        "the client learns nothing: {body}"
    );
    let event = gw
        .event_where("upstream failure", |e| {
            e["reason"] == "upstream_unreachable"
        })
        .await;
    assert!(event.to_string().contains("certificate"), "{event}");
    assert_eq!(upstream.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn the_gateways_own_client_certificate_is_rotated_without_a_restart() {
    let ca = Ca::new("Internal CA");
    let upstream_cert = ca.issue(Spec {
        cn: "items",
        ips: &["127.0.0.1"],
        usage: &[ExtendedKeyUsagePurpose::ServerAuth],
        ..Spec::default()
    });
    let upstream = TlsUpstream::start_with(&upstream_cert, &ca.pem, true).await;
    let (first, second) = (
        ca.client("gateway", "spiffe://corp.test/ns/edge/sa/gateway"),
        ca.client("gateway", "spiffe://corp.test/ns/edge/sa/gateway"),
    );
    let dir = test_dir(&[("internal-ca.pem", &ca.pem)]);
    first.write(dir.path(), "gateway-client");
    let extra = format!("outbound:\n  ca_files: [internal-ca.pem]\n{CATCH_ALL}");
    let url = format!("https://127.0.0.1:{}", upstream.addr.port());
    let config = config_with(&url, &extra).replacen(
        "timeout: 5s }",
        "timeout: 5s, tls: { cert: gateway-client.pem, key: gateway-client.key } }",
        1,
    );
    let gw = start(dir, &config).await;
    let pid = gw.pid();
    assert_eq!(get(&gw.url("/one")).await.unwrap().0, 200);
    // Rotated as a secret manager does it: new files renamed into place.
    let path = gw.dir.path();
    second.write(path, "next");
    std::fs::rename(path.join("next.key"), path.join("gateway-client.key")).unwrap();
    std::fs::rename(path.join("next.pem"), path.join("gateway-client.pem")).unwrap();
    eventually_async("the upstream to see the new certificate", || async {
        get(&gw.url("/again")).await.is_ok_and(|a| a.0 == 200)
            && upstream.seen.lock().unwrap().last().map(|s| s.2.clone())
                == Some(second.thumbprint())
    })
    .await;
    let seen = upstream.seen.lock().unwrap().clone();
    assert_eq!(seen[0].2, first.thumbprint());
    assert_eq!(gw.pid(), pid);
}

#[tokio::test]
async fn an_untrusted_upstream_certificate_fails_closed() {
    let ca = Ca::new("Internal CA");
    let other = Ca::new("Other CA");
    let upstream_cert = ca.issue(Spec {
        cn: "items",
        ips: &["127.0.0.1"],
        usage: &[ExtendedKeyUsagePurpose::ServerAuth],
        ..Spec::default()
    });
    let upstream = TlsUpstream::start(&upstream_cert, &ca.pem).await;
    let dir = test_dir(&[("other-ca.pem", &other.pem)]);
    let extra =
        format!("outbound:\n  ca_files: [other-ca.pem]\n  system_roots: false\n{CATCH_ALL}");
    let config = config_with(
        &format!("https://127.0.0.1:{}", upstream.addr.port()),
        &extra,
    );
    let gw = start(dir, &config).await;
    let (status, _, _) = get(&gw.url("/a")).await.unwrap();
    assert_eq!(status, 502);
    assert!(upstream.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn certificate_rotation_under_load_loses_no_request() {
    let upstream = Upstream::start().await;
    let ca = Ca::new("Test CA");
    let dir = pki_dir(&ca);
    let first = {
        let text = std::fs::read_to_string(dir.path().join("server.pem")).unwrap();
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(text.as_bytes()).unwrap();
        Leaf {
            cert_pem: text,
            key_pem: String::new(),
            der,
        }
    };
    let ca_file = dir.path().join("ca.pem");
    let gw = start(dir, &tls_config(&upstream.url(), SERVER_TLS, CATCH_ALL)).await;
    let pid = gw.pid();
    assert_eq!(
        served_serial(gw.addr, &ca_file, &[]).await.as_deref(),
        Some(first.serial().as_str())
    );

    // Keep-alive load from four clients while the pair is swapped.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let client = https_client(&ca.pem, None, false);
        let url = https(&gw, "/load");
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            for _ in 0..5_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match https_send(&client, get_request(&url)).await {
                    Ok((r, _)) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    eventually("load to start", || {
        (ok.load(Ordering::Relaxed) > 50).then_some(())
    })
    .await;

    // Atomic renames, as a secret manager does them.
    let second = ca.server();
    let path = gw.dir.path();
    second.write(path, "next");
    std::fs::rename(path.join("next.key"), path.join("server.key")).unwrap();
    std::fs::rename(path.join("next.pem"), path.join("server.pem")).unwrap();
    eventually_async("new handshakes to see the new certificate", || async {
        served_serial(gw.addr, &ca_file, &[]).await.as_deref() == Some(second.serial().as_str())
    })
    .await;

    // A broken pair is refused; the new pair keeps serving.
    std::fs::write(path.join("server.pem"), "not a certificate\n").unwrap();
    gw.event_where("refused reload", |e| {
        e["event_type"] == "config_reload" && e["reason"] == "refused"
    })
    .await;
    assert_eq!(
        served_serial(gw.addr, &ca_file, &[]).await.as_deref(),
        Some(second.serial().as_str())
    );
    let at_refusal = ok.load(Ordering::Relaxed);
    eventually("more load after the refusal", || {
        (ok.load(Ordering::Relaxed) > at_refusal + 50).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during rotation"
    );
    assert_eq!(gw.pid(), pid);
    assert!(gw.stderr().contains("refused"));
}

#[tokio::test]
async fn rotated_secret_files_take_effect_without_a_restart() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config_with(&upstream.url(), CATCH_ALL)).await;
    let admin = |token: &str| {
        let request = Request::get(gw.admin_url("/admin/events"))
            .header("authorization", format!("Bearer {token}"))
            .body(Full::default())
            .unwrap();
        async move { send(request).await.unwrap().0 }
    };
    assert_eq!(admin(ADMIN_TOKEN).await, 200);
    let rotated = "rotated-admin-token-9876543210";
    let temp = gw.dir.path().join("admin-token.new");
    std::fs::write(&temp, rotated).unwrap();
    std::fs::rename(&temp, gw.dir.path().join("admin-token")).unwrap();
    eventually_async("the rotated token to be accepted", || async {
        admin(rotated).await == 200
    })
    .await;
    assert_eq!(admin(ADMIN_TOKEN).await, 401);
}

fn check(dir: &Path) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config"])
        .arg(dir.join("portcullis.yaml"))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn check_names_certificate_problems_with_their_files() {
    let ca = Ca::new("Test CA");
    let other = ca.server();
    let expiring = {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        // Five days from now, as a calendar date (from the library's RFC 3339 formatter).
        let date = portcullis::time::format_unix_millis(u128::from(now + 5 * 86_400) * 1000);
        let part = |range: std::ops::Range<usize>| date[range].parse::<i64>().unwrap();
        let (y, m, d) = (part(0..4) as i32, part(5..7) as u8, part(8..10) as u8);
        ca.issue(Spec {
            cn: "soon",
            ips: &["127.0.0.1"],
            usage: &[ExtendedKeyUsagePurpose::ServerAuth],
            valid: Some(((2020, 1, 1), (y, m, d))),
            ..Spec::default()
        })
    };
    let expired = ca.issue(Spec {
        cn: "old",
        usage: &[ExtendedKeyUsagePurpose::ClientAuth],
        valid: Some(((2020, 1, 1), (2021, 1, 1))),
        ..Spec::default()
    });
    let dir = pki_dir(&ca);
    std::fs::write(dir.path().join("admin-token"), ADMIN_TOKEN).unwrap();
    // The listener's key belongs to another certificate.
    std::fs::write(dir.path().join("mismatch.key"), &other.key_pem).unwrap();
    std::fs::write(dir.path().join("garbage.pem"), "hello\n").unwrap();
    expired.write(dir.path(), "expired");
    let config = tls_config(
        "http://127.0.0.1:9",
        "    cert: server.pem\n    key: mismatch.key\n",
        "  a: { url: \"https://127.0.0.1:9\", tls: { server_name: \"not a name\" } }\n\
\x20\x20b: { url: \"https://127.0.0.1:9\", tls: { cert: expired.pem, key: expired.key } }\n\
\x20\x20c: { url: \"http://127.0.0.1:9\", tls: { server_name: items.internal } }\n\
outbound:\n  ca_files: [garbage.pem, missing.pem]\n\
routes:\n  - match: { prefix: / }\n    upstream: main\n    auth: none\n    client_identities: [\"spiffe://corp.test/**\"]\n",
    );
    std::fs::write(dir.path().join("portcullis.yaml"), config).unwrap();
    let (ok, out) = check(dir.path());
    assert!(!ok, "{out}");
    for expected in [
        "listen.tls.cert: the key in",
        "mismatch.key` does not belong to the certificate in",
        "upstreams.a.tls.server_name: `not a name` is not a DNS name or IP address",
        "upstreams.b.tls.cert: the certificate in",
        "expired on",
        "upstreams.c.tls: `tls` applies to https upstreams only",
        "outbound.ca_files[0]:",
        "garbage.pem` holds no PEM certificate",
        "outbound.ca_files[1]: cannot read",
        "routes[0].client_identities: needs client certificates",
    ] {
        assert!(out.contains(expected), "missing `{expected}` in:\n{out}");
    }
    assert!(!out.contains("panicked"), "{out}");

    // A valid configuration with a certificate expiring soon passes with a warning.
    expiring.write(dir.path(), "server");
    let config = tls_config("http://127.0.0.1:9", SERVER_TLS, CATCH_ALL);
    std::fs::write(dir.path().join("portcullis.yaml"), config).unwrap();
    let (ok, out) = check(dir.path());
    assert!(ok, "{out}");
    assert!(out.contains("warning: listen: the certificate in"), "{out}");
    assert!(
        out.contains("expires in 4 days") || out.contains("expires in 5 days"),
        "{out}"
    );
}
