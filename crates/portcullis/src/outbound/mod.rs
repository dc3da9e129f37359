//! Outbound https: one trust ([`Trust`]: the platform's roots plus configured CA files) for
//! every call the gateway makes, the gateway's own swappable client certificate
//! ([`ClientCertificate`]), and the pooled client ([`HttpClient`]) that key sets, discovery,
//! introspection and remote policy engines share.

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, SignatureScheme};
use std::sync::Arc;
use std::time::Duration;

mod verifier;
use verifier::TrustVerifier;

/// The crypto provider every TLS connection of Portcullis uses: rustls on aws-lc-rs.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Why outbound trust could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    /// A configured CA certificate is not usable as a trust anchor.
    #[error("CA certificate {index} is not usable as a trust anchor: {detail}")]
    BadAnchor {
        /// Its position among the configured certificates.
        index: usize,
        /// What the TLS library said.
        detail: String,
    },
    /// The TLS library refused the configuration.
    #[error("TLS configuration refused: {0}")]
    Tls(String),
}

/// The CAs trusted for every outbound https call.
#[derive(Debug, Clone)]
pub struct Trust {
    verifier: Arc<TrustVerifier>,
    fingerprint: [u8; 32],
}

impl Trust {
    /// The platform's roots (when `system_roots`, read on the first handshake that needs
    /// them) plus `extra` CA certificates (checked now). Unreadable platform roots are
    /// skipped: a machine without a CA bundle still trusts `extra` (and with nothing trusted,
    /// every https call fails closed).
    pub fn new(
        system_roots: bool,
        extra: &[CertificateDer<'static>],
    ) -> Result<Trust, OutboundError> {
        let mut roots = RootCertStore::empty();
        let mut hash = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        hash.update(&[u8::from(system_roots)]);
        for (index, cert) in extra.iter().enumerate() {
            roots
                .add(cert.clone())
                .map_err(|e| OutboundError::BadAnchor {
                    index,
                    detail: e.to_string(),
                })?;
            hash.update(&(cert.len() as u64).to_be_bytes());
            hash.update(cert);
        }
        let mut fingerprint = [0u8; 32];
        fingerprint.copy_from_slice(hash.finish().as_ref());
        Ok(Trust {
            verifier: Arc::new(TrustVerifier::new(system_roots, roots)),
            fingerprint,
        })
    }

    /// Trusts nothing: every https call fails (closed).
    pub fn empty() -> Trust {
        Trust {
            verifier: Arc::new(TrustVerifier::new(false, RootCertStore::empty())),
            fingerprint: [0; 32],
        }
    }

    /// Identifies the trusted set: equal fingerprints mean equal trust, so a client built
    /// for one serves the other (and keeps its pooled connections across reloads).
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// A rustls client configuration: TLS 1.2 and 1.3 verified against this trust,
    /// presenting `client_cert` when a server asks (then without session resumption, so a
    /// replaced certificate is presented from the next connection on). ALPN is set by
    /// [`pooled_client`].
    pub fn client_config(
        &self,
        client_cert: Option<Arc<ClientCertificate>>,
    ) -> Result<ClientConfig, OutboundError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| OutboundError::Tls(e.to_string()))?
            // "dangerous" is rustls's name for any verifier of one's own: this one is its
            // WebPKI verifier, built on first use so the platform's roots are read only
            // when an https call is made.
            .dangerous()
            .with_custom_certificate_verifier(self.verifier.clone());
        Ok(match client_cert {
            Some(cert) => {
                let mut config = builder.with_client_cert_resolver(cert);
                // A resumed session keeps the certificate it was made with, so a rotated
                // certificate would reach the server only once old tickets ran out.
                config.resumption = rustls::client::Resumption::disabled();
                config
            }
            None => builder.with_no_client_auth(),
        })
    }
}

/// The gateway's own certificate for servers that ask for one (upstream mTLS). It can be
/// replaced while connections use it: new handshakes present the new pair.
#[derive(Debug, Default)]
pub struct ClientCertificate {
    current: ArcSwapOption<CertifiedKey>,
}

impl ClientCertificate {
    /// A holder presenting `key`.
    pub fn new(key: Arc<CertifiedKey>) -> Arc<ClientCertificate> {
        Arc::new(ClientCertificate {
            current: ArcSwapOption::from(Some(key)),
        })
    }

    /// Presents `key` from the next handshake on.
    pub fn replace(&self, key: Arc<CertifiedKey>) {
        self.current.store(Some(key));
    }

    /// The pair presented now.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }
}

impl ResolvesClientCert for ClientCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.current()
    }

    fn has_certs(&self) -> bool {
        self.current.load().is_some()
    }
}

/// Which HTTP versions a pooled client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersions {
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/1.1, or HTTP/2 when the server picks `h2` in ALPN (https only).
    Any,
    /// HTTP/2 only: `h2` over TLS, prior knowledge (h2c) over plain TCP (gRPC).
    Http2Only,
}

/// Builds a pooled client for `http://` and `https://` URLs with this TLS configuration.
/// `server_name`, when given, replaces the URL's host as SNI and as the name the server's
/// certificate must carry.
pub fn pooled_client<B>(
    config: ClientConfig,
    server_name: Option<ServerName<'static>>,
    versions: HttpVersions,
    connect_timeout: Duration,
) -> Client<HttpsConnector<HttpConnector>, B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.enforce_http(false);
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http();
    let builder = match server_name {
        Some(name) => {
            builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
        }
        None => builder,
    };
    let connector = match versions {
        HttpVersions::Http1 => builder.enable_http1().wrap_connector(http),
        HttpVersions::Any => builder.enable_all_versions().wrap_connector(http),
        HttpVersions::Http2Only => builder.enable_http2().wrap_connector(http),
    };
    Client::builder(TokioExecutor::new())
        .http2_only(versions == HttpVersions::Http2Only)
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(1024)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector)
}

/// Why a JSON call to another service (key set, discovery, introspection, OPA) gave no
/// document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The request failed (connect, TLS, protocol).
    #[error("request failed: {0}")]
    Transport(String),
    /// A status other than 2xx.
    #[error("status {0}")]
    Status(u16),
    /// The body could not be read, or was larger than allowed.
    #[error("reading the answer failed: {0}")]
    Read(String),
    /// The body is not strict JSON.
    #[error("not valid JSON: {0}")]
    Json(crate::json::JsonError),
}

/// The client for the gateway's own calls (key sets, discovery, introspection, OPA):
/// pooled, never following redirects, trusting [`Trust`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    fingerprint: [u8; 32],
}

impl HttpClient {
    /// A client trusting `trust`.
    pub fn new(trust: &Trust) -> Result<HttpClient, OutboundError> {
        let config = trust.client_config(None)?;
        Ok(HttpClient {
            client: pooled_client(config, None, HttpVersions::Http1, Duration::from_secs(5)),
            fingerprint: trust.fingerprint(),
        })
    }

    /// The fingerprint of the trust it was built with.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// Sends `request` and reads its answer as strict JSON of at most `max_bytes`, with the
    /// answer's headers. Any status but 2xx is an error (redirects included: nothing is read
    /// from anywhere but the URL asked). Callers bound the exchange with their own timeout.
    pub async fn json(
        &self,
        request: Request<Full<Bytes>>,
        max_bytes: usize,
    ) -> Result<(serde_json::Value, http::HeaderMap), CallError> {
        use http_body_util::{BodyExt, Limited};
        let response = self.request(request).await.map_err(CallError::Transport)?;
        if !response.status().is_success() {
            return Err(CallError::Status(response.status().as_u16()));
        }
        let (parts, body) = response.into_parts();
        let bytes = Limited::new(body, max_bytes)
            .collect()
            .await
            .map_err(|e| CallError::Read(e.to_string()))?
            .to_bytes();
        let document = crate::json::parse_strict(&bytes, crate::json::JsonLimits::default())
            .map_err(CallError::Json)?;
        Ok((document, parts.headers))
    }

    /// Sends one request. Callers bound the whole exchange with their own timeout.
    pub async fn request(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, String> {
        self.client
            .request(request)
            .await
            .map_err(|e| error_chain(&e))
    }
}

/// An error and its causes on one line (the TLS reason is usually a cause several levels
/// down), for the operator's event.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Why a URL may not be called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// No host to call.
    #[error("`{0}` has no host")]
    NoHost(String),
    /// Plain http to a host that is not this machine.
    #[error("http is only allowed for loopback hosts; use https")]
    CleartextRemote,
    /// Neither http nor https.
    #[error("`{0}` needs an http(s) scheme")]
    Scheme(String),
}

/// Whether a URL may be called: `https`, or `http` to a loopback host only (what travels
/// in clear text could be read or swapped on the way).
pub fn check_url(uri: &http::Uri) -> Result<(), UrlError> {
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match uri.scheme_str() {
        _ if host.is_empty() => Err(UrlError::NoHost(uri.to_string())),
        Some("https") => Ok(()),
        Some("http") if loopback => Ok(()),
        Some("http") => Err(UrlError::CleartextRemote),
        _ => Err(UrlError::Scheme(uri.to_string())),
    }
}
