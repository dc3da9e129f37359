//! Test PKI, generated per test with rcgen: CAs, server and client leaves (SPIFFE URIs,
//! DNS names), expired, not-yet-valid, wrong-usage and foreign certificates; and TLS
//! clients (hyper over rustls, curl, openssl s_client) that use them.

#![allow(dead_code)]

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// A certificate authority that issues leaves.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub pem: String,
}

/// An issued certificate and its key.
#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

/// A calendar date, `(year, month, day)`.
pub type Date = (i32, u8, u8);

/// What a leaf should say.
pub struct Spec<'a> {
    pub cn: &'a str,
    pub dns: &'a [&'a str],
    pub ips: &'a [&'a str],
    pub uris: &'a [&'a str],
    pub usage: &'a [ExtendedKeyUsagePurpose],
    /// `(year, month, day)` bounds; default: valid from 2020 to 2090.
    pub valid: Option<(Date, Date)>,
}

impl Default for Spec<'_> {
    fn default() -> Self {
        Spec {
            cn: "test",
            dns: &[],
            ips: &[],
            uris: &[],
            usage: &[],
            valid: None,
        }
    }
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    pub fn issue(&self, spec: Spec<'_>) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, spec.cn);
        for dns in spec.dns {
            params
                .subject_alt_names
                .push(SanType::DnsName((*dns).try_into().unwrap()));
        }
        for ip in spec.ips {
            params
                .subject_alt_names
                .push(SanType::IpAddress(ip.parse().unwrap()));
        }
        for uri in spec.uris {
            params
                .subject_alt_names
                .push(SanType::URI((*uri).try_into().unwrap()));
        }
        params.extended_key_usages = spec.usage.to_vec();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let ((fy, fm, fd), (ty, tm, td)) = spec.valid.unwrap_or(((2020, 1, 1), (2090, 1, 1)));
        params.not_before = rcgen::date_time_ymd(fy, fm, fd);
        params.not_after = rcgen::date_time_ymd(ty, tm, td);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// A server certificate for 127.0.0.1 and `localhost`.
    pub fn server(&self) -> Leaf {
        self.issue(Spec {
            cn: "gateway",
            dns: &["localhost"],
            ips: &["127.0.0.1"],
            usage: &[ExtendedKeyUsagePurpose::ServerAuth],
            ..Spec::default()
        })
    }

    /// A client certificate carrying `spiffe` as its URI SAN.
    pub fn client(&self, cn: &str, spiffe: &str) -> Leaf {
        self.issue(Spec {
            cn,
            uris: &[spiffe],
            usage: &[ExtendedKeyUsagePurpose::ClientAuth],
            ..Spec::default()
        })
    }
}

impl Leaf {
    /// Writes `<name>.pem` and `<name>.key` into `dir`.
    pub fn write(&self, dir: &Path, name: &str) {
        std::fs::write(dir.join(format!("{name}.pem")), &self.cert_pem).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), &self.key_pem).unwrap();
    }

    /// The serial number of the certificate, as openssl prints it (upper-case hex).
    pub fn serial(&self) -> String {
        let (_, cert) = x509_parser::parse_x509_certificate(&self.der).unwrap();
        cert.raw_serial()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<String>()
            .trim_start_matches('0')
            .to_string()
    }

    /// base64url SHA-256 of the DER (RFC 8705 `x5t#S256`).
    pub fn thumbprint(&self) -> String {
        portcullis::authn::mtls::thumbprint(&self.der)
    }
}

/// A rustls client configuration trusting `ca`, presenting `client` if given.
pub fn client_config(ca: &str, client: Option<&Leaf>, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(portcullis::outbound::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![leaf.der.clone()],
                PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

pub type HttpsClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// A pooled https client (HTTP/1.1 and, with `h2`, HTTP/2 by ALPN).
pub fn https_client(ca: &str, client: Option<&Leaf>, h2: bool) -> HttpsClient {
    let mut config = client_config(ca, client, &[]);
    config.alpn_protocols.clear();
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only();
    let connector = if h2 {
        builder.enable_all_versions().build()
    } else {
        builder.enable_http1().build()
    };
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector)
}

/// Sends `req`; the status, headers and body text.
pub async fn https_send(
    client: &HttpsClient,
    req: Request<Full<Bytes>>,
) -> Result<(Response<()>, String), String> {
    let response = tokio::time::timeout(crate::util::DEADLINE, client.request(req))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| format!("{e:?}"))?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((
        Response::from_parts(parts, ()),
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

pub fn get_request(url: &str) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::default()).unwrap()
}

/// Runs curl with `args` (off the test's runtime thread, so that the upstream task keeps
/// running); the exit status and output.
pub async fn curl(args: &[&str]) -> (bool, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || curl_blocking(&args))
        .await
        .unwrap()
}

fn curl_blocking(args: &[String]) -> (bool, String) {
    let output = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl (install curl)");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr),
    )
}

/// The serial number of the certificate `openssl s_client` is served at `addr`, with extra
/// `args` (such as `-tls1_2`); `None` if the handshake failed. Runs off the test's runtime
/// thread.
pub async fn served_serial(
    addr: std::net::SocketAddr,
    ca_file: &Path,
    args: &[&str],
) -> Option<String> {
    let ca_file = ca_file.to_path_buf();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || served_serial_blocking(addr, &ca_file, &args))
        .await
        .unwrap()
}

fn served_serial_blocking(
    addr: std::net::SocketAddr,
    ca_file: &Path,
    args: &[String],
) -> Option<String> {
    let mut child = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), "-CAfile"])
        .arg(ca_file)
        .args(["-verify_return_error", "-showcerts"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl");
    // Closing stdin ends the session once the handshake is done.
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let pem_start = text.find("-----BEGIN CERTIFICATE-----")?;
    let der = CertificateDer::pem_slice_iter(text.get(pem_start..)?.as_bytes())
        .next()?
        .ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some(
        cert.raw_serial()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<String>()
            .trim_start_matches('0')
            .to_string(),
    )
}

/// Whether a rustls client handshake with `config` succeeds against `addr`.
pub async fn handshake_ok(addr: std::net::SocketAddr, config: rustls::ClientConfig) -> bool {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    match tokio::time::timeout(crate::util::DEADLINE, connector.connect(name, stream)).await {
        Ok(Ok(mut tls)) => {
            // TLS 1.3 clients learn of a refused certificate only on their first read.
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            if tls
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .is_err()
            {
                return false;
            }
            let mut buf = [0u8; 16];
            matches!(tls.read(&mut buf).await, Ok(n) if n > 0)
        }
        _ => false,
    }
}

/// Runs `openssl s_client` against `addr` (TLS 1.3, reading until the server closes) with
/// extra `args`, writing `input`; its output. Off the test's runtime thread.
pub async fn s_client(
    addr: std::net::SocketAddr,
    ca_file: &Path,
    args: &[&std::ffi::OsStr],
    input: &'static [u8],
) -> String {
    let ca_file = ca_file.to_path_buf();
    let args: Vec<std::ffi::OsString> = args.iter().map(|a| a.to_os_string()).collect();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = std::process::Command::new("openssl")
            .args(["s_client", "-connect", &addr.to_string(), "-CAfile"])
            .arg(&ca_file)
            // -ign_eof: read until the server closes, so a session ticket is read too.
            .args(["-tls1_3", "-ign_eof"])
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl");
        let _ = child.stdin.take().unwrap().write_all(input);
        String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).into_owned()
    })
    .await
    .unwrap()
}

/// A request whose answer arrives after the session ticket.
pub const CLOSE_REQUEST: &[u8] = b"GET /resume HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

/// Whether a second `openssl s_client` connection resumes the first one's TLS session
/// (a TLS 1.3 ticket).
pub async fn resumes(addr: std::net::SocketAddr, ca_file: &Path) -> bool {
    let session = tempfile::NamedTempFile::new().unwrap();
    let out = |flag: &'static str| {
        let path = session.path().as_os_str().to_os_string();
        async move { s_client(addr, ca_file, &[flag.as_ref(), &path], CLOSE_REQUEST).await }
    };
    out("-sess_out").await.contains("New, TLSv1.3")
        && out("-sess_in").await.contains("Reused, TLSv1.3")
}
