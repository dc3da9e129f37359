//! Forwarding to upstreams: a pooled keep-alive client, the upstream URI, forwarding
//! headers, per-upstream timeouts, and transport failures turned into [`Denial`]s.

use crate::config::{HostRule, UpstreamMap};
use crate::upgrade::WebSocketSettings;
use crate::upstream_pool::{ProxyBody, UpstreamClient};
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{HeaderMap, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use portcullis::Denial;
use portcullis::body::{self, Body};
use portcullis::net::TrustedProxies;
use portcullis::normalize::{BodyTrip, strip_hop_by_hop};
use portcullis::outbound::error_chain;
use portcullis::route::RouteMatch;
use portcullis::scope::{PeerAddr, Transport};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// The innermost service: forwards a routed, normalised request to its upstream.
#[derive(Clone)]
pub struct Proxy {
    trusted: Arc<TrustedProxies>,
    upstreams: Arc<UpstreamMap>,
    mask_errors: bool,
    websocket: Arc<WebSocketSettings>,
    request_timeout: Duration,
}

impl Proxy {
    /// A proxy believing forwarding headers only from `trusted` peers; with `mask_errors`,
    /// upstream 5xx answers are replaced by a generic problem. WebSockets are relayed within
    /// `websocket`; a gRPC deadline never goes past `request_timeout`.
    pub fn new(
        trusted: Arc<TrustedProxies>,
        upstreams: Arc<UpstreamMap>,
        mask_errors: bool,
        websocket: Arc<WebSocketSettings>,
        request_timeout: Duration,
    ) -> Self {
        Proxy {
            trusted,
            upstreams,
            mask_errors,
            websocket,
            request_timeout,
        }
    }
}

/// How much of a replaced upstream error body the event keeps.
const ERROR_EXCERPT_BYTES: usize = 4096;
/// How long the proxy waits for that excerpt (the upstream already failed; it must not
/// hold the answer up).
const ERROR_EXCERPT_WAIT: Duration = Duration::from_secs(1);

/// The start of a body, at most [`ERROR_EXCERPT_BYTES`], as text; the rest is dropped.
async fn excerpt(mut body: Incoming) -> String {
    use http_body_util::BodyExt;
    let mut kept = Vec::new();
    let read = async {
        while kept.len() < ERROR_EXCERPT_BYTES {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        let room = ERROR_EXCERPT_BYTES - kept.len();
                        kept.extend_from_slice(
                            data.get(..room.min(data.len())).unwrap_or_default(),
                        );
                    }
                }
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(ERROR_EXCERPT_WAIT, read).await;
    String::from_utf8_lossy(&kept).into_owned()
}

type ProxyFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Denial>> + Send>>;

impl tower::Service<Request<ProxyBody>> for Proxy {
    type Response = Response<Body>;
    type Error = Denial;
    type Future = ProxyFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<ProxyBody>) -> Self::Future {
        let upgrade = crate::upgrade::take(&mut req);
        let prepared = prepare(req, &self.trusted, &self.upstreams, self.request_timeout);
        let mask_errors = self.mask_errors;
        let websocket = self.websocket.clone();
        Box::pin(async move {
            let Prepared {
                req,
                client,
                upstream,
                timeout,
                trip,
            } = prepared?;
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
                Ok(Ok(mut response)) => {
                    if let Some(upgrade) = upgrade
                        && response.status() == StatusCode::SWITCHING_PROTOCOLS
                    {
                        let on_upstream = hyper::upgrade::on(&mut response);
                        let (mut parts, _) = response.into_parts();
                        strip_hop_by_hop(&mut parts.headers);
                        let answer = upgrade.answer(parts);
                        upgrade.start(on_upstream, &websocket);
                        return Ok(answer);
                    }
                    response
                }
            };
            if mask_errors && response.status().is_server_error() {
                let status = response.status();
                let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
                return Err(Denial::UpstreamError {
                    upstream,
                    status,
                    body: excerpt(response.into_body()).await,
                    retry_after,
                });
            }
            let (mut parts, incoming) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Ok(Response::from_parts(parts, body::boxed(incoming)))
        })
    }
}

/// A request ready to go upstream, with what its forwarding needs.
struct Prepared {
    req: Request<ProxyBody>,
    client: UpstreamClient,
    upstream: String,
    timeout: Duration,
    trip: BodyTrip,
}

fn prepare(
    mut req: Request<ProxyBody>,
    trusted: &TrustedProxies,
    upstreams: &UpstreamMap,
    request_timeout: Duration,
) -> Result<Prepared, Denial> {
    // Compiled together: a route names only upstreams of its own configuration.
    let Some(upstream) = req
        .extensions_mut()
        .remove::<RouteMatch>()
        .and_then(|matched| upstreams.get(&matched.route.upstream))
    else {
        return Err(Denial::NoRoute);
    };
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
    // The client's Host: its header, or for HTTP/2 the `:authority` it sent.
    let client_host = req.headers().get(header::HOST).cloned().or_else(|| {
        req.uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let uri = Uri::builder()
        .scheme(upstream.scheme.clone())
        .authority(upstream.authority.clone())
        .path_and_query(
            PathAndQuery::try_from(path_and_query).map_err(|_| Denial::Malformed {
                reason: portcullis::reason::MalformedReason::InvalidPath,
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
    let mut timeout = upstream.timeout;
    if upstream.grpc {
        *req.version_mut() = Version::HTTP_2;
        timeout = crate::grpc::prepare(req.headers_mut(), timeout.min(request_timeout));
    } else {
        *req.version_mut() = Version::HTTP_11;
    }
    let peer = req.extensions().get::<PeerAddr>().map(|p| p.0.ip());
    let tls = req.extensions().get::<Transport>().is_some_and(|t| t.tls);
    let host = match &upstream.host {
        HostRule::Upstream => HeaderValue::from_str(upstream.authority.as_str()).ok(),
        HostRule::Preserve => client_host,
        HostRule::Literal(name) => Some(name.clone()),
    };
    let headers = req.headers_mut();
    match host {
        Some(host) => headers.insert(header::HOST, host),
        None => headers.remove(header::HOST),
    };
    if let Some(peer) = peer {
        set_forwarding_headers(headers, peer, trusted.trusts(peer), tls);
    }
    strip_gateway_cookies(headers);
    Ok(Prepared {
        req,
        client: upstream.client.clone(),
        upstream: upstream.name.clone(),
        timeout,
        trip,
    })
}

/// Removes the gateway's own cookies from what goes upstream: the dashboard's session and
/// the browser-session and pending-login cookies. Browsers send cookies to every path (and
/// every port) of a host, so on any route an upstream would otherwise receive (and could
/// replay) them.
fn strip_gateway_cookies(headers: &mut HeaderMap) {
    portcullis::session::cookie::strip(headers, |name| {
        name == crate::admin_session::COOKIE || portcullis::session::cookie::is_gateway_cookie(name)
    });
}

/// `X-Forwarded-For` / `Forwarded`: a trusted proxy's chain is extended with the peer;
/// anything an untrusted client sent is replaced, so it cannot plant a fake origin.
fn set_forwarding_headers(
    headers: &mut HeaderMap,
    peer: std::net::IpAddr,
    trusted_peer: bool,
    tls: bool,
) {
    let peer_text = peer.to_string();
    let proto = if tls { "https" } else { "http" };
    let forwarded_node = if peer.is_ipv6() {
        format!("for=\"[{peer_text}]\";proto={proto}")
    } else {
        format!("for={peer_text};proto={proto}")
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
        headers.insert("x-forwarded-proto", HeaderValue::from_static(proto));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_cookies_never_go_upstream() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; portcullis_admin=secret; b=2"),
        );
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("portcullis_admin=other; __Host-portcullis=s"),
        );
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-portcullis-login-abc=p"),
        );
        strip_gateway_cookies(&mut headers);
        let left: Vec<_> = headers.get_all(header::COOKIE).iter().collect();
        assert_eq!(left, ["a=1; b=2"]);
        let mut plain = HeaderMap::new();
        plain.insert(header::COOKIE, HeaderValue::from_static("a=1"));
        strip_gateway_cookies(&mut plain);
        assert_eq!(plain[header::COOKIE], "a=1");
    }
}
