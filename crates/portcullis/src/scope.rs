//! [`RequestScope`]: what the layers learn about one request, shared with the outermost
//! layer so that it can describe the request in the security event and in metrics.
//!
//! What a layer proves for the layers *after* it travels as a typed request extension (the
//! `RouteMatch`, the `Principal`, the client address). The scope is the one other channel,
//! and it runs the other way: the outermost `Respond` layer gave the request away and gets
//! back only a response or a `Denial`, so the facts it must put in the event (route, operation, user,
//! client address) are written here, once each, by the layer that established them.

use crate::request_id::RequestId;
use http::Method;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

/// Facts about one request, each written once by the layer that proves it.
#[derive(Debug)]
pub struct RequestScope {
    id: RequestId,
    method: Method,
    client_ip: OnceLock<IpAddr>,
    endpoint: OnceLock<Arc<str>>,
    route: OnceLock<Arc<str>>,
    operation: OnceLock<Arc<str>>,
    user_id: OnceLock<String>,
    cors: OnceLock<http::HeaderMap>,
    set_cookie: OnceLock<http::HeaderValue>,
}

impl RequestScope {
    /// A scope for a request with this id and method.
    pub fn new(id: RequestId, method: Method) -> Self {
        RequestScope {
            id,
            method,
            client_ip: OnceLock::new(),
            endpoint: OnceLock::new(),
            route: OnceLock::new(),
            operation: OnceLock::new(),
            user_id: OnceLock::new(),
            cors: OnceLock::new(),
            set_cookie: OnceLock::new(),
        }
    }

    /// The request's correlation id.
    pub fn id(&self) -> &RequestId {
        &self.id
    }

    /// The request method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The client address, once resolved.
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.client_ip.get().copied()
    }

    /// Records the client address (first write wins).
    pub fn set_client_ip(&self, ip: IpAddr) {
        let _ = self.client_ip.set(ip);
    }

    /// The documented operation's path template when the API document describes the
    /// request, else the route template, or the normalised path when no route matched.
    pub fn endpoint(&self) -> Option<&Arc<str>> {
        self.operation.get().or_else(|| self.endpoint.get())
    }

    /// Records the documented operation's path template (first write wins); it names the
    /// endpoint from then on, being more precise than a prefix route.
    pub fn set_operation(&self, template: Arc<str>) {
        let _ = self.operation.set(template);
    }

    /// Records the endpoint (first write wins).
    pub fn set_endpoint(&self, endpoint: Arc<str>) {
        let _ = self.endpoint.set(endpoint);
    }

    /// The template of the route that matched, if one did.
    pub fn route(&self) -> Option<&Arc<str>> {
        self.route.get()
    }

    /// Records the matched route; it becomes the endpoint as well.
    pub fn set_route(&self, route: Arc<str>) {
        let _ = self.endpoint.set(route.clone());
        let _ = self.route.set(route);
    }

    /// The authenticated principal, once known.
    pub fn user_id(&self) -> Option<&str> {
        self.user_id.get().map(String::as_str)
    }

    /// The CORS headers the answer carries, whatever it is (refusals included).
    pub fn cors(&self) -> Option<&http::HeaderMap> {
        self.cors.get()
    }

    /// Records the CORS headers for the answer (first write wins).
    pub fn set_cors(&self, headers: http::HeaderMap) {
        let _ = self.cors.set(headers);
    }

    /// The `Set-Cookie` the answer carries, whatever it is: a browser session that was
    /// refreshed or ended while the request went on (refusals included).
    pub fn set_cookie(&self) -> Option<&http::HeaderValue> {
        self.set_cookie.get()
    }

    /// Records the session cookie for the answer (first write wins).
    pub fn put_cookie(&self, value: http::HeaderValue) {
        let _ = self.set_cookie.set(value);
    }

    /// Records the authenticated principal (first write wins).
    pub fn set_user_id(&self, user_id: String) {
        let _ = self.user_id.set(user_id);
    }
}

/// The peer's socket address, put in the request extensions by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// The listener's own address for the connection, put in the request extensions by the
/// server (the `Host` port rule compares with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalAddr(pub std::net::SocketAddr);

/// The client's address after trusted-proxy resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// How the client reached the gateway, put in the request extensions by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Transport {
    /// This connection is TLS.
    pub tls: bool,
    /// The client used https: over this connection, or (as a trusted proxy in front says)
    /// over the connection to that proxy. HSTS is sent only then.
    pub https: bool,
}
