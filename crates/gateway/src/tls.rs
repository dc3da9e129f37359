//! The listener's side of TLS: the handshake under a deadline, the client certificate's
//! identity, why a handshake failed (for the metric and the throttled event), and telling
//! HTTP/1 from HTTP/2 on the decrypted stream.

#![deny(clippy::arithmetic_side_effects)]

use crate::flood::H2_PREFACE;
use portcullis::authn::mtls::ClientIdentity;
use portcullis::event::{EventBus, EventType, SecurityEvent, Severity};
use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{CertificateError, Error, ServerConfig};
use tokio_rustls::server::TlsStream;

/// How a handshake ended.
pub enum Handshake {
    /// Established; `identity` is the verified client certificate's, if one was sent.
    Done {
        /// The encrypted stream.
        stream: Box<TlsStream<TcpStream>>,
        /// The client's identity.
        identity: Option<ClientIdentity>,
    },
    /// Refused or broken off.
    Failed {
        /// The metric label and event reason.
        reason: &'static str,
        /// What exactly happened, for the event.
        detail: String,
    },
}

/// Runs the handshake until `deadline`.
pub async fn handshake(
    config: Arc<ServerConfig>,
    stream: TcpStream,
    deadline: tokio::time::Instant,
) -> Handshake {
    let accepted =
        tokio::time::timeout_at(deadline, TlsAcceptor::from(config).accept(stream)).await;
    let stream = match accepted {
        Err(_) => {
            return Handshake::Failed {
                reason: "timeout",
                detail: "no complete handshake within header_read_timeout".into(),
            };
        }
        Ok(Err(error)) => {
            return Handshake::Failed {
                reason: classify(&error),
                detail: portcullis::outbound::error_chain(&error),
            };
        }
        Ok(Ok(stream)) => stream,
    };
    let leaf = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first());
    let identity = match leaf.map(|der| ClientIdentity::from_der(der)) {
        None => None,
        // A resumed session brings its certificate back without a new check: check the
        // validity window here, on every connection.
        Some(Ok(identity)) if !identity.is_valid_at(portcullis::authn::now_secs() as i64) => {
            return Handshake::Failed {
                reason: "cert_expired",
                detail: format!(
                    "client certificate {} is outside its validity",
                    identity.sha256
                ),
            };
        }
        Some(Ok(identity)) => Some(identity),
        // Verified by the TLS stack, yet not an identity we can name (several SPIFFE ids):
        // nothing on this connection could be attributed, so it is closed.
        Some(Err(error)) => {
            return Handshake::Failed {
                reason: "bad_identity",
                detail: error.to_string(),
            };
        }
    };
    Handshake::Done {
        stream: Box::new(stream),
        identity,
    }
}

/// The metric label for a failed handshake.
fn classify(error: &std::io::Error) -> &'static str {
    let Some(tls) = error.get_ref().and_then(|e| e.downcast_ref::<Error>()) else {
        return "connection_closed";
    };
    match tls {
        Error::InvalidCertificate(cert) => match cert {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "cert_expired",
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "cert_not_yet_valid"
            }
            CertificateError::UnknownIssuer => "unknown_ca",
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "wrong_usage"
            }
            CertificateError::Revoked => "cert_revoked",
            _ => "bad_certificate",
        },
        Error::NoCertificatesPresented => "no_client_certificate",
        Error::PeerIncompatible(_) => "incompatible_client",
        Error::AlertReceived(_) => "alert_received",
        _ => "protocol_error",
    }
}

/// Least time between two events about one client's failed handshakes.
const REPORT_INTERVAL: Duration = Duration::from_secs(60);
/// Clients remembered; beyond this the memory is cleared (a flood of new addresses must not
/// grow it without bound).
const MAX_REPORTED_CLIENTS: usize = 10_000;

/// At most one security event per client address per minute about failed handshakes (the
/// metric counts every one): a scanner must not flood the event sink.
#[derive(Debug, Default)]
pub struct FailureReports {
    last: Mutex<HashMap<IpAddr, Instant>>,
}

impl FailureReports {
    /// Raises the event unless this client had one within the last minute.
    pub fn report(&self, events: &EventBus, ip: IpAddr, reason: &'static str, detail: &str) {
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        let now = Instant::now();
        if last
            .get(&ip)
            .is_some_and(|at| now.duration_since(*at) < REPORT_INTERVAL)
        {
            return;
        }
        if last.len() >= MAX_REPORTED_CLIENTS {
            last.retain(|_, at| now.duration_since(*at) < REPORT_INTERVAL);
            if last.len() >= MAX_REPORTED_CLIENTS {
                last.clear();
            }
        }
        last.insert(ip, now);
        drop(last);
        let mut event =
            SecurityEvent::new(EventType::AuthFailure, Severity::Medium, "tls_handshake");
        event.ip = Some(ip.to_string());
        event.details = serde_json::json!({ "tls_reason": reason, "detail": detail });
        events.emit(event);
    }
}

/// Reads the first bytes of the decrypted stream until HTTP/1 can be told from HTTP/2, by
/// `deadline`. Returns the stream (with those bytes still to be read) and whether it is
/// HTTP/2, or `None` if the client was too slow or left.
pub async fn request_started(
    mut stream: Box<TlsStream<TcpStream>>,
    deadline: tokio::time::Instant,
) -> Option<(Prefixed<Box<TlsStream<TcpStream>>>, bool)> {
    let mut seen = Vec::with_capacity(H2_PREFACE.len());
    let wait = async {
        let mut buf = [0u8; 24];
        loop {
            let want = H2_PREFACE.len().saturating_sub(seen.len()).max(1);
            let n = stream.read(buf.get_mut(..want)?).await.ok()?;
            if n == 0 {
                return None;
            }
            seen.extend_from_slice(buf.get(..n)?);
            if !H2_PREFACE.starts_with(&seen) {
                return Some(false);
            }
            if seen.len() >= H2_PREFACE.len() {
                return Some(true);
            }
        }
    };
    let is_h2 = tokio::time::timeout_at(deadline, wait)
        .await
        .ok()
        .flatten()?;
    Some((
        Prefixed {
            prefix: seen,
            read: 0,
            inner: stream,
        },
        is_h2,
    ))
}

/// A stream whose first bytes were already read: they are given out again first.
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    read: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if let Some(rest) = this.prefix.get(this.read..)
            && !rest.is_empty()
        {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(rest.get(..n).unwrap_or_default());
            this.read = this.read.saturating_add(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
