//! WebSocket upgrades through the proxy: the handshake the pipeline let through is sent
//! upstream with its upgrade headers; when the upstream switches protocols, the 101 goes
//! back to the client and both upgraded connections are relayed, frame by frame, within
//! `limits.websocket` and never past the token's `exp`.

use crate::metrics::OpenConnection;
use crate::upstream_pool::ProxyBody;
use http::header;
use http::{Request, Response};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use portcullis::authn::Principal;
use portcullis::event::{EventBus, EventType, Severity, request_event};
use portcullis::scope::RequestScope;
use portcullis::websocket::{Handshake, RelayEnd, RelayLimits, WebSocketCounts, WebSocketLimits};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, watch};

/// A client connection's place under `max_connections`, held by its serving task and by a
/// WebSocket relayed from it (which outlives the HTTP connection); the connection counts as
/// open until the last holder lets go.
pub struct ConnectionSlot {
    _permit: OwnedSemaphorePermit,
    _counted: OpenConnection,
}

impl ConnectionSlot {
    /// Takes the place `permit` stands for, with the connection counted open.
    pub fn new(permit: OwnedSemaphorePermit, counted: OpenConnection) -> Self {
        ConnectionSlot {
            _permit: permit,
            _counted: counted,
        }
    }
}

/// What a request asking for an upgrade carries of its connection (a request extension).
#[derive(Clone)]
pub struct ConnectionHold {
    /// The connection's place under `max_connections`, only held.
    _slot: Arc<ConnectionSlot>,
    /// Flips to `true` when the gateway shuts down.
    shutdown: watch::Receiver<bool>,
}

impl ConnectionHold {
    /// A hold on `slot`, told of shutdown by `shutdown`.
    pub fn new(slot: ConnectionSlot, shutdown: watch::Receiver<bool>) -> Self {
        ConnectionHold {
            _slot: Arc::new(slot),
            shutdown,
        }
    }
}

/// What relays need beyond the request: the limits, the counts and where events go.
#[derive(Clone)]
pub struct WebSocketSettings {
    /// `limits.websocket`.
    pub limits: WebSocketLimits,
    /// Counts for the metrics.
    pub counts: Arc<WebSocketCounts>,
    /// Security events.
    pub events: Arc<EventBus>,
}

/// An upgrade the pipeline allowed, waiting for the upstream's answer.
pub struct PendingUpgrade {
    on_client: OnUpgrade,
    /// The client came over HTTP/2 (RFC 8441): it gets a 200, not a 101.
    over_http2: bool,
    expires: Option<f64>,
    hold: Option<ConnectionHold>,
    scope: Option<Arc<RequestScope>>,
}

/// Takes the client's side of an upgrade from a request the router let through as a
/// WebSocket handshake, and asks the upstream for the upgrade on this hop.
pub fn take(req: &mut Request<ProxyBody>) -> Option<PendingUpgrade> {
    let handshake = req.extensions_mut().remove::<Handshake>()?;
    let on_client = hyper::upgrade::on(&mut *req);
    portcullis::websocket::restore_upgrade_headers(&handshake, req.headers_mut());
    let extensions = req.extensions();
    Some(PendingUpgrade {
        on_client,
        over_http2: handshake.over_http2,
        expires: extensions
            .get::<Arc<Principal>>()
            .and_then(|p| p.claims.exp),
        hold: extensions.get::<ConnectionHold>().cloned(),
        scope: extensions.get::<Arc<RequestScope>>().cloned(),
    })
}

impl PendingUpgrade {
    /// The client's answer to the upstream's 101 (whose hop-by-hop headers are gone): a 101
    /// with this hop's upgrade headers, or for HTTP/2 a 200 without them (RFC 8441 §5). An
    /// extension the upstream claims is dropped (none was offered).
    pub fn answer(&self, mut parts: http::response::Parts) -> Response<portcullis::body::Body> {
        let headers = &mut parts.headers;
        if self.over_http2 {
            parts.status = http::StatusCode::OK;
            headers.remove(header::SEC_WEBSOCKET_ACCEPT);
            headers.remove(header::SEC_WEBSOCKET_EXTENSIONS);
        } else {
            portcullis::websocket::set_upgrade_headers(headers);
        }
        Response::from_parts(parts, portcullis::body::empty())
    }

    /// The upstream switched protocols (`on_upstream` is its side): relays both upgraded
    /// connections in the background once the client has its answer.
    pub fn start(self, on_upstream: OnUpgrade, settings: &WebSocketSettings) {
        let settings = settings.clone();
        let limits = settings.limits;
        let now = tokio::time::Instant::now();
        let mut deadline = now + limits.max_lifetime;
        if let Some(exp) = self.expires {
            let left = (exp - portcullis::authn::now_secs()).max(0.0);
            deadline = deadline.min(now + Duration::from_secs_f64(left.min(1e9)));
        }
        tokio::spawn(async move {
            let both = async { tokio::try_join!(self.on_client, on_upstream) };
            let Ok(Ok((client, upstream))) = tokio::time::timeout(limits.idle_timeout, both).await
            else {
                return;
            };
            settings.counts.opened();
            let shutdown = self.hold.as_ref().map(|h| h.shutdown.clone());
            let shutdown = async move {
                match shutdown {
                    // A closed channel means the process is going away too.
                    Some(mut rx) => {
                        let _ = rx.wait_for(|down| *down).await;
                    }
                    None => std::future::pending().await,
                }
            };
            let relay_limits = RelayLimits {
                max_message_bytes: limits.max_message_bytes,
                idle_timeout: limits.idle_timeout,
                deadline,
            };
            let end = portcullis::websocket::relay(
                TokioIo::new(client),
                TokioIo::new(upstream),
                relay_limits,
                shutdown,
            )
            .await;
            settings.counts.closed(end);
            report(&settings.events, self.scope.as_deref(), end);
            drop(self.hold);
        });
    }
}

/// A connection the gateway closed for breaking the rules raises an event.
fn report(events: &EventBus, scope: Option<&RequestScope>, end: RelayEnd) {
    let (from, violation) = match end {
        RelayEnd::ClientViolation(v) => ("client", v),
        RelayEnd::UpstreamViolation(v) => ("upstream", v),
        _ => return,
    };
    let Some(scope) = scope else {
        return;
    };
    let mut event = request_event(
        EventType::ValidationFailure,
        Severity::Medium,
        violation.reason(),
        scope,
    );
    let detail = match violation {
        portcullis::websocket::Violation::TooBig => {
            "message over limits.websocket.max_message_bytes"
        }
        portcullis::websocket::Violation::Protocol(rule) => rule,
    };
    event.details = serde_json::json!({
        "from": from,
        "close_code": violation.close_code(),
        "detail": detail,
    });
    events.emit(event);
}
