//! [`TrustVerifier`]: server certificates checked against a [`Trust`](super::Trust), with the
//! platform's roots read on the first handshake that needs them, not at start: a gateway that
//! never calls an https URL never holds them (about 0.4 MiB resident, and 10 ms of start-up).

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::{Arc, OnceLock};

/// Verifies with WebPKI against the configured CAs plus, when asked for, the platform's roots
/// (loaded once, on first use). With nothing to trust, every certificate is refused.
#[derive(Debug)]
pub(super) struct TrustVerifier {
    system_roots: bool,
    /// The configured CA certificates, already checked as trust anchors.
    extra: RootCertStore,
    provider: Arc<CryptoProvider>,
    built: OnceLock<Result<Arc<WebPkiServerVerifier>, String>>,
}

impl TrustVerifier {
    pub(super) fn new(system_roots: bool, extra: RootCertStore) -> TrustVerifier {
        TrustVerifier {
            system_roots,
            extra,
            provider: super::provider(),
            built: OnceLock::new(),
        }
    }

    /// Whether the roots were read yet (a handshake asked for them).
    #[cfg(test)]
    fn loaded(&self) -> bool {
        self.built.get().is_some()
    }

    fn webpki(&self) -> Result<&Arc<WebPkiServerVerifier>, rustls::Error> {
        self.built
            .get_or_init(|| {
                let mut roots = self.extra.clone();
                if self.system_roots {
                    // Unreadable platform roots are skipped: the configured CAs still count.
                    let found = rustls_native_certs::load_native_certs();
                    let _ = roots.add_parsable_certificates(found.certs);
                }
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                    .build()
                    .map_err(|e| format!("no usable trust anchors: {e}"))
            })
            .as_ref()
            .map_err(|e| rustls::Error::General(e.clone()))
    }
}

impl ServerCertVerifier for TrustVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.webpki()?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_are_read_on_the_first_handshake_and_nothing_trusted_refuses() {
        let trust = super::super::Trust::new(true, &[]).expect("trust");
        trust.client_config(None).expect("config");
        assert!(!trust.verifier.loaded(), "read before any handshake");
        let nothing = TrustVerifier::new(false, RootCertStore::empty());
        let name = ServerName::try_from("api.example.test").expect("name");
        let refused = nothing.verify_server_cert(
            &CertificateDer::from(vec![0x30, 0x00]),
            &[],
            &name,
            &[],
            UnixTime::now(),
        );
        assert!(refused.is_err(), "{refused:?}");
        assert!(nothing.loaded());
    }
}
