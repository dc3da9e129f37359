//! Certificates and trust: `listen.tls` (the listener's pair, mTLS), `outbound` (the CAs
//! every outbound https call trusts) and `upstreams.*.tls` (SNI, the gateway's own client
//! certificate). Every file is read and checked here, so `check` names each problem with its
//! file, and a reload with a broken pair is refused before anything is swapped.

use super::raw::{RawListenTls, RawOutbound, RawUpstreamTls, Text};
use super::secret::Resolver;
use super::{Problem, Problems};
use crate::upstream_pool::UpstreamTls;
use portcullis::outbound::{Trust, provider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ProducesTickets, StoresServerSessions, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A certificate whose expiry is watched (`portcullis_tls_cert_expiry_seconds{cert}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedCert {
    /// What it is: `listen`, `client_ca`, `upstream:<name>`, `outbound_ca:<i>`.
    pub label: String,
    /// Unix time of its `notAfter`.
    pub not_after: i64,
}

/// Warn this long before a certificate expires.
const EXPIRY_WARNING_SECS: i64 = 14 * 24 * 3600;
/// Most certificates read from one PEM file.
const MAX_PEM_CERTS: usize = 64;
/// Largest PEM file read.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// What the files of one compile produced besides the runtime types.
#[derive(Debug, Default)]
pub(super) struct CertFacts {
    /// Files to watch for reload.
    pub files: Vec<PathBuf>,
    /// Certificates to export expiry metrics for.
    pub certs: Vec<WatchedCert>,
    /// Near-expiry and similar warnings.
    pub warnings: Vec<Problem>,
}

impl CertFacts {
    /// Records a certificate's expiry under `label`, and its warning (under `path`), if any.
    fn watch(&mut self, label: String, path: &str, not_after: i64, warning: Option<String>) {
        self.certs.push(WatchedCert { label, not_after });
        if let Some(message) = warning {
            self.warnings.push(Problem {
                path: path.to_string(),
                line: None,
                message,
            });
        }
    }
}

/// How the listener asks for client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientAuth {
    /// No client certificates (no `client_ca`).
    Off,
    /// A certificate is required at the handshake.
    Required,
    /// A certificate may be sent; a bad one is still refused at the handshake.
    Optional,
}

/// State of TLS that outlives configuration generations: session tickets and the session
/// cache, so that resumption works across reloads. A resumed session carries the client
/// certificate it was first made with, unchecked: so the state is kept only while the
/// client-certificate settings (the CAs and `client_auth`) stay the same, and starts afresh
/// when they change (a removed CA must not live on in tickets).
#[derive(Debug, Default)]
pub struct TlsState {
    current: std::sync::Mutex<Option<SessionState>>,
}

#[derive(Debug, Clone)]
struct SessionState {
    verifier: [u8; 32],
    ticketer: Option<Arc<dyn ProducesTickets>>,
    sessions: Arc<dyn StoresServerSessions>,
}

impl TlsState {
    /// The session state for these client-certificate settings (identified by `verifier`).
    fn for_verifier(&self, verifier: [u8; 32]) -> SessionState {
        let fresh = || SessionState {
            verifier,
            ticketer: rustls::crypto::aws_lc_rs::Ticketer::new().ok(),
            sessions: rustls::server::ServerSessionMemoryCache::new(10_000),
        };
        let Ok(mut current) = self.current.lock() else {
            return fresh();
        };
        match current.as_ref() {
            Some(state) if state.verifier == verifier => state.clone(),
            _ => {
                let state = fresh();
                *current = Some(state.clone());
                state
            }
        }
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    if meta.len() > MAX_PEM_BYTES {
        return Err(format!(
            "`{}` is larger than {MAX_PEM_BYTES} bytes",
            path.display()
        ));
    }
    std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))
}

/// Every certificate in a PEM file (at least one).
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read_bounded(path)?;
    let mut certs = Vec::new();
    for item in CertificateDer::pem_slice_iter(&bytes) {
        let cert = item.map_err(|e| format!("`{}` is not valid PEM: {e}", path.display()))?;
        certs.push(cert);
        if certs.len() > MAX_PEM_CERTS {
            return Err(format!(
                "`{}` holds more than {MAX_PEM_CERTS} certificates",
                path.display()
            ));
        }
    }
    if certs.is_empty() {
        return Err(format!("`{}` holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = read_bounded(path)?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| format!("`{}` holds no usable PEM private key: {e}", path.display()))
}

/// The validity window of one certificate, checked against now. Expired and not-yet-valid
/// certificates are errors; one expiring within 14 days is a warning.
fn check_validity(
    cert: &CertificateDer<'_>,
    what: &str,
    path: &Path,
) -> Result<(i64, Option<String>), String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).map_err(|e| {
        format!(
            "{what} in `{}` is not an X.509 certificate: {e}",
            path.display()
        )
    })?;
    let validity = parsed.validity();
    let (not_before, not_after) = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    let now = now();
    if now < not_before {
        return Err(format!(
            "{what} in `{}` is not valid yet (from {})",
            path.display(),
            validity.not_before
        ));
    }
    if now > not_after {
        return Err(format!(
            "{what} in `{}` expired on {}",
            path.display(),
            validity.not_after
        ));
    }
    let warning = (not_after - now < EXPIRY_WARNING_SECS).then(|| {
        format!(
            "{what} in `{}` expires in {} days ({})",
            path.display(),
            (not_after - now) / 86_400,
            validity.not_after
        )
    });
    Ok((not_after, warning))
}

/// Each certificate of a chain must be issued by the next one: a chain out of order, or with
/// a foreign certificate in it, fails at clients that are strict about it.
fn check_chain_order(chain: &[CertificateDer<'_>], path: &Path) -> Result<(), String> {
    let parsed: Vec<_> = chain
        .iter()
        .filter_map(|c| x509_parser::parse_x509_certificate(c).ok().map(|(_, p)| p))
        .collect();
    for (i, pair) in parsed.windows(2).enumerate() {
        if let [cert, issuer] = pair
            && cert.issuer().as_raw() != issuer.subject().as_raw()
        {
            return Err(format!(
                "the chain in `{}` is out of order: certificate {} is not issued by certificate {}",
                path.display(),
                i + 1,
                i + 2
            ));
        }
    }
    Ok(())
}

/// A certificate chain and its private key, checked to belong together and to be valid now.
fn load_pair(
    cert_path: &Path,
    key_path: &Path,
    label: &str,
    facts: &mut CertFacts,
) -> Result<Arc<CertifiedKey>, String> {
    facts.files.push(cert_path.to_path_buf());
    facts.files.push(key_path.to_path_buf());
    let chain = read_certs(cert_path)?;
    let key = read_key(key_path)?;
    let leaf = chain.first().ok_or("empty chain")?;
    let (not_after, warning) = check_validity(leaf, "the certificate", cert_path)?;
    check_chain_order(&chain, cert_path)?;
    let certified = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "the key in `{}` does not belong to the certificate in `{}`",
            key_path.display(),
            cert_path.display()
        ),
        other => format!("`{}`: {other}", key_path.display()),
    })?;
    facts.watch(label.to_string(), label, not_after, warning);
    Ok(Arc::new(certified))
}

/// CA certificates from one file, each valid now and a CA.
fn load_cas(
    path: &Path,
    label: &str,
    facts: &mut CertFacts,
) -> Result<Vec<CertificateDer<'static>>, String> {
    facts.files.push(path.to_path_buf());
    let certs = read_certs(path)?;
    for (i, cert) in certs.iter().enumerate() {
        let what = format!("CA certificate {}", i + 1);
        let (not_after, warning) = check_validity(cert, &what, path)?;
        let is_ca = x509_parser::parse_x509_certificate(cert)
            .map(|(_, c)| c.is_ca())
            .unwrap_or(false);
        if !is_ca {
            return Err(format!(
                "{what} in `{}` is not a CA certificate (no basicConstraints CA:TRUE)",
                path.display()
            ));
        }
        facts.watch(format!("{label}[{i}]"), label, not_after, warning);
    }
    Ok(certs)
}

fn file(
    base_dir: &Path,
    resolver: &Resolver,
    path: &str,
    text: &Text,
    problems: &mut Problems,
) -> Option<PathBuf> {
    resolver
        .text(path, text, problems)
        .map(|t| base_dir.join(t))
}

/// `listen.tls`.
pub(super) fn compile_listener(
    raw: &RawListenTls,
    base_dir: &Path,
    resolver: &Resolver,
    state: &TlsState,
    facts: &mut CertFacts,
    problems: &mut Problems,
) -> Option<Arc<ServerConfig>> {
    let cert = file(base_dir, resolver, "listen.tls.cert", &raw.cert, problems);
    let key = file(base_dir, resolver, "listen.tls.key", &raw.key, problems);
    let pair = match (cert, key) {
        (Some(cert), Some(key)) => load_pair(&cert, &key, "listen", facts)
            .map_err(|m| problems.at("listen.tls.cert", &raw.cert, m))
            .ok(),
        _ => None,
    };
    let versions: &[&rustls::SupportedProtocolVersion] =
        match raw.min_version.as_ref().map(|v| v.value.as_str()) {
            None | Some("1.2") => &[&rustls::version::TLS13, &rustls::version::TLS12],
            Some("1.3") => &[&rustls::version::TLS13],
            Some(other) => {
                if let Some(text) = &raw.min_version {
                    problems.at(
                        "listen.tls.min_version",
                        text,
                        format!("`{other}` is not offered (use \"1.2\" or \"1.3\")"),
                    );
                }
                &[&rustls::version::TLS13]
            }
        };
    let client_auth = match (
        &raw.client_ca,
        raw.client_auth.as_ref().map(|t| t.value.as_str()),
    ) {
        (None, None) => ClientAuth::Off,
        (None, Some(_)) => {
            if let Some(text) = &raw.client_auth {
                problems.at(
                    "listen.tls.client_auth",
                    text,
                    "needs `client_ca` (the CAs client certificates must chain to)",
                );
            }
            ClientAuth::Off
        }
        (Some(_), None | Some("required")) => ClientAuth::Required,
        (Some(_), Some("optional")) => ClientAuth::Optional,
        (Some(_), Some(other)) => {
            if let Some(text) = &raw.client_auth {
                problems.at(
                    "listen.tls.client_auth",
                    text,
                    format!("unknown value `{other}` (use required or optional)"),
                );
            }
            ClientAuth::Required
        }
    };
    let mut verifier = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    verifier.update(format!("{client_auth:?}").as_bytes());
    let client_roots = match &raw.client_ca {
        Some(text) => {
            let path = file(base_dir, resolver, "listen.tls.client_ca", text, problems)?;
            let cas = load_cas(&path, "client_ca", facts)
                .map_err(|m| problems.at("listen.tls.client_ca", text, m))
                .ok()?;
            for ca in &cas {
                verifier.update(&(ca.len() as u64).to_be_bytes());
                verifier.update(ca);
            }
            let mut roots = RootCertStore::empty();
            for ca in cas {
                if let Err(e) = roots.add(ca) {
                    problems.at(
                        "listen.tls.client_ca",
                        text,
                        format!("not usable as a trust anchor: {e}"),
                    );
                    return None;
                }
            }
            Some(Arc::new(roots))
        }
        None => None,
    };
    let pair = pair?;
    let builder =
        match ServerConfig::builder_with_provider(provider()).with_protocol_versions(versions) {
            Ok(builder) => builder,
            Err(e) => {
                problems.at(
                    "listen.tls",
                    &raw.cert,
                    format!("TLS settings refused: {e}"),
                );
                return None;
            }
        };
    let builder = match client_roots {
        Some(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider());
            let verifier = if client_auth == ClientAuth::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            match verifier.build() {
                Ok(verifier) => builder.with_client_cert_verifier(verifier),
                Err(e) => {
                    problems.add(
                        "listen.tls.client_ca",
                        None,
                        format!("client verifier refused: {e}"),
                    );
                    return None;
                }
            }
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(pair)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut fingerprint = [0u8; 32];
    fingerprint.copy_from_slice(verifier.finish().as_ref());
    let sessions = state.for_verifier(fingerprint);
    config.session_storage = sessions.sessions;
    if let Some(ticketer) = sessions.ticketer {
        config.ticketer = ticketer;
    }
    Some(Arc::new(config))
}

/// `outbound`: the platform's roots (unless `system_roots: false`) plus `ca_files`.
pub(super) fn compile_outbound(
    raw: Option<&RawOutbound>,
    base_dir: &Path,
    resolver: &Resolver,
    facts: &mut CertFacts,
    problems: &mut Problems,
) -> Trust {
    let mut extra = Vec::new();
    for (i, text) in raw
        .map(|r| r.ca_files.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let path = format!("outbound.ca_files[{i}]");
        if let Some(file) = file(base_dir, resolver, &path, text, problems) {
            match load_cas(&file, &format!("outbound_ca:{i}"), facts) {
                Ok(cas) => extra.extend(cas),
                Err(m) => problems.at(path, text, m),
            }
        }
    }
    let system_roots = raw.and_then(|r| r.system_roots).unwrap_or(true);
    match Trust::new(system_roots, &extra) {
        Ok(trust) => trust,
        Err(e) => {
            // The configuration is refused for this problem; nothing will use this trust.
            problems.add("outbound.ca_files", None, e.to_string());
            Trust::empty()
        }
    }
}

/// `upstreams.<name>.tls` for an https upstream.
pub(super) fn compile_upstream(
    name: &str,
    raw: &RawUpstreamTls,
    path: &str,
    base_dir: &Path,
    resolver: &Resolver,
    facts: &mut CertFacts,
    problems: &mut Problems,
) -> Option<UpstreamTls> {
    let server_name = match &raw.server_name {
        Some(text) => {
            let value = resolver.text(&format!("{path}.server_name"), text, problems)?;
            match ServerName::try_from(value.clone()) {
                Ok(name) => Some(name),
                Err(_) => {
                    problems.at(
                        format!("{path}.server_name"),
                        text,
                        format!(
                            "`{value}` is not a DNS name or IP address a certificate could carry"
                        ),
                    );
                    return None;
                }
            }
        }
        None => None,
    };
    let client_cert = match (&raw.cert, &raw.key) {
        (Some(cert), Some(key)) => {
            let cert_path = file(base_dir, resolver, &format!("{path}.cert"), cert, problems)?;
            let key_path = file(base_dir, resolver, &format!("{path}.key"), key, problems)?;
            let pair = load_pair(&cert_path, &key_path, &format!("upstream:{name}"), facts)
                .map_err(|m| problems.at(format!("{path}.cert"), cert, m))
                .ok()?;
            Some((pair, cert_path, key_path))
        }
        (None, None) => None,
        (Some(text), None) | (None, Some(text)) => {
            problems.at(path.to_string(), text, "`cert` and `key` go together");
            return None;
        }
    };
    Some(UpstreamTls {
        server_name,
        client_cert,
    })
}
