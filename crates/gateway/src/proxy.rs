//! Forwarding to upstreams: a pooled keep-alive client, the upstream URI, forwarding
//! headers, per-upstream timeouts, and transport failures turned into [`Denial`]s.

use crate::config::RouteTarget;
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{HeaderMap, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use portcullis::Denial;
use portcullis::body::{self, Body};
use portcullis::net::TrustedProxies;
use portcullis::normalize::{BodyTrip, GuardedBody, strip_hop_by_hop};
use portcullis::route::RouteMatch;
use portcullis::scope::PeerAddr;
use portcullis::validate::Validated;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// The request body type the proxy forwards.
pub type ProxyBody = Validated<GuardedBody<Incoming>>;

/// The pooled upstream client, shared by every pipeline so reloads keep warm connections.
/// Behind an `Arc` because the client itself is several reference counts to clone.
pub type UpstreamClient = Arc<Client<HttpConnector, ProxyBody>>;

/// Builds the upstream client.
pub fn client() -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    connector.enforce_http(true);
    Arc::new(
        Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(1024)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector),
    )
}

/// The innermost service: forwards a routed, normalised request to its upstream.
#[derive(Clone)]
pub struct Proxy {
    client: UpstreamClient,
    trusted: Arc<TrustedProxies>,
}

impl Proxy {
    /// A proxy using `client`, believing forwarding headers only from `trusted` peers.
    pub fn new(client: UpstreamClient, trusted: Arc<TrustedProxies>) -> Self {
        Proxy { client, trusted }
    }
}

type ProxyFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Denial>> + Send>>;

impl tower::Service<Request<ProxyBody>> for Proxy {
    type Response = Response<Body>;
    type Error = Denial;
    type Future = ProxyFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ProxyBody>) -> Self::Future {
        let client = self.client.clone();
        let prepared = prepare(req, &self.trusted);
        Box::pin(async move {
            let (req, upstream, timeout, trip) = prepared?;
            let sent = tokio::time::timeout(timeout, client.request(req)).await;
            let response = match sent {
                Err(_) => return Err(Denial::UpstreamTimeout { upstream }),
                Ok(Err(error)) => {
                    // A body the guard cut short surfaces here as a transport error.
                    return Err(trip
                        .tripped()
                        .unwrap_or_else(|| Denial::UpstreamUnreachable {
                            upstream,
                            detail: error_chain(&error),
                        }));
                }
                Ok(Ok(response)) => response,
            };
            let (mut parts, incoming) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Ok(Response::from_parts(parts, body::boxed(incoming)))
        })
    }
}

type Prepared = (Request<ProxyBody>, String, Duration, BodyTrip);

fn prepare(mut req: Request<ProxyBody>, trusted: &TrustedProxies) -> Result<Prepared, Denial> {
    let Some(matched) = req.extensions_mut().remove::<RouteMatch<RouteTarget>>() else {
        return Err(Denial::NoRoute);
    };
    let upstream = &matched.route.target.upstream;
    let trip = req
        .extensions()
        .get::<BodyTrip>()
        .cloned()
        .ok_or(Denial::NoRoute)?;
    let (path, query) = (req.uri().path(), req.uri().query());
    let mut path_and_query = String::with_capacity(
        upstream.base_path.len() + path.len() + query.map_or(0, |q| q.len() + 1),
    );
    path_and_query.push_str(&upstream.base_path);
    path_and_query.push_str(path);
    if let Some(query) = query {
        path_and_query.push('?');
        path_and_query.push_str(query);
    }
    let original_authority = req.uri().authority().cloned();
    let uri = Uri::builder()
        .scheme(upstream.scheme.clone())
        .authority(upstream.authority.clone())
        .path_and_query(
            PathAndQuery::try_from(path_and_query).map_err(|_| Denial::Malformed {
                reason: "invalid_path",
                detail: "path not representable upstream".into(),
                close: false,
            })?,
        )
        .build()
        .map_err(|e| Denial::UpstreamUnreachable {
            upstream: upstream.name.clone(),
            detail: format!("cannot build upstream URI: {e}"),
        })?;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    let peer = req.extensions().get::<PeerAddr>().map(|p| p.0.ip());
    let headers = req.headers_mut();
    if !headers.contains_key(header::HOST)
        && let Some(authority) = original_authority
        && let Ok(value) = HeaderValue::from_str(authority.as_str())
    {
        headers.insert(header::HOST, value);
    }
    if let Some(peer) = peer {
        set_forwarding_headers(headers, peer, trusted.trusts(peer));
    }
    Ok((req, upstream.name.clone(), upstream.timeout, trip))
}

/// `X-Forwarded-For` / `Forwarded`: a trusted proxy's chain is extended with the peer;
/// anything an untrusted client sent is replaced, so it cannot plant a fake origin.
fn set_forwarding_headers(headers: &mut HeaderMap, peer: std::net::IpAddr, trusted_peer: bool) {
    let peer_text = peer.to_string();
    let forwarded_node = if peer.is_ipv6() {
        format!("for=\"[{peer_text}]\";proto=http")
    } else {
        format!("for={peer_text};proto=http")
    };
    let joined = |headers: &HeaderMap, name: &str, add: &str| -> String {
        let existing: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if existing.is_empty() {
            add.to_string()
        } else {
            format!("{}, {add}", existing.join(", "))
        }
    };
    let (xff, forwarded) = if trusted_peer {
        (
            joined(headers, "x-forwarded-for", &peer_text),
            joined(headers, "forwarded", &forwarded_node),
        )
    } else {
        (peer_text, forwarded_node)
    };
    for (name, value) in [("x-forwarded-for", xff), ("forwarded", forwarded)] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    if !trusted_peer || !headers.contains_key("x-forwarded-proto") {
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    }
}

/// The error and its causes on one line, for the operator's event.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
