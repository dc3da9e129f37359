//! The pooled upstream clients: one per trust and upstream TLS settings, kept across
//! reloads so that unchanged settings keep their warm connections, and the gateway's own
//! client certificate holder each one presents.

use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use portcullis::normalize::GuardedBody;
use portcullis::outbound::{ClientCertificate, HttpVersions, Trust, pooled_client};
use portcullis::validate::Validated;
use rustls::pki_types::ServerName;
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `upstreams.<name>.tls`, compiled.
#[derive(Debug)]
pub struct UpstreamTls {
    /// SNI and the name the upstream's certificate must carry (default: the URL's host).
    pub server_name: Option<ServerName<'static>>,
    /// The gateway's own certificate and where it was read from.
    pub client_cert: Option<(Arc<CertifiedKey>, PathBuf, PathBuf)>,
}

/// The request body type the proxy forwards.
pub type ProxyBody = Validated<GuardedBody<Incoming>>;

/// A pooled upstream client, shared by every pipeline so reloads keep warm connections.
/// Behind an `Arc` because the client itself is several reference counts to clone.
pub type UpstreamClient = Arc<Client<HttpsConnector<HttpConnector>, ProxyBody>>;

/// A pooled client and the holder of the client certificate it presents.
#[derive(Debug, Clone)]
pub struct PooledUpstream {
    /// The client.
    pub client: UpstreamClient,
    /// The gateway's own certificate for upstream mTLS, replaced on reload.
    pub client_cert: Option<Arc<ClientCertificate>>,
}

/// The pooled client for upstreams with this trust and these TLS settings: created once
/// and kept across reloads, so that unchanged settings keep their warm connections.
/// gRPC upstreams get a client of their own that speaks only HTTP/2.
pub fn pooled_upstream(
    pools: &Mutex<HashMap<String, PooledUpstream>>,
    trust: &Trust,
    tls: Option<&UpstreamTls>,
    grpc: bool,
) -> Result<PooledUpstream, String> {
    let server_name = tls.and_then(|t| t.server_name.clone());
    let cert = tls.and_then(|t| t.client_cert.as_ref());
    let key = format!(
        "{:?} {:?} {:?} {grpc}",
        trust.fingerprint(),
        server_name,
        cert.map(|(_, c, k)| (c, k))
    );
    let mut pool = pools
        .lock()
        .map_err(|_| "upstream client registry poisoned".to_string())?;
    if let Some(existing) = pool.get(&key) {
        return Ok(existing.clone());
    }
    let client_cert = cert.map(|(pair, _, _)| ClientCertificate::new(pair.clone()));
    let config = trust
        .client_config(client_cert.clone())
        .map_err(|e| e.to_string())?;
    let pooled = PooledUpstream {
        client: Arc::new(pooled_client(
            config,
            server_name,
            if grpc {
                HttpVersions::Http2Only
            } else {
                HttpVersions::Any
            },
            Duration::from_secs(5),
        )),
        client_cert,
    };
    pool.insert(key, pooled.clone());
    Ok(pooled)
}
