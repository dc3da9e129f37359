//! [`CorsLayer`]: cross-origin requests by browsers (the Fetch standard's CORS protocol).
//!
//! Preflights on a covered path are answered here and never forwarded, before routing,
//! authentication, policies or validation see them: they are not API calls. An allowed origin
//! gets exactly its own origin back; any other origin (`null` included) gets no CORS header
//! at all, so the browser keeps the answer from the page. The headers are put on the final
//! response by the outermost layer, refusals included, through the request's
//! [`RequestScope`].

#![deny(clippy::arithmetic_side_effects)]

use crate::denial::Denial;
use crate::future::ResponseFuture;
use crate::reason::ForbiddenReason;
use crate::route::PathPattern;
use crate::scope::RequestScope;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{Layer, Service};

/// One `cors` rule: which paths it covers and what it allows.
#[derive(Debug, Clone)]
pub struct CorsRule {
    /// The paths covered (canonical, like routes).
    pub pattern: PathPattern,
    /// Exact origins (`https://app.example.test`), compared case-insensitively; `*` alone
    /// allows every origin, without credentials.
    pub allow_origins: Vec<String>,
    /// Methods a cross-origin request may use.
    pub allow_methods: Vec<Method>,
    /// Request headers it may send (lower case).
    pub allow_headers: Vec<HeaderName>,
    /// Response headers the page may read.
    pub expose_headers: Vec<HeaderName>,
    /// Whether cookies and `Authorization` may be sent (never with `*`).
    pub allow_credentials: bool,
    /// How long a browser may cache a preflight answer.
    pub max_age: Option<Duration>,
}

impl CorsRule {
    fn allows_origin(&self, origin: &str) -> bool {
        origin != "null"
            && self
                .allow_origins
                .iter()
                .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
    }

    fn any_origin(&self) -> bool {
        self.allow_origins.iter().any(|o| o == "*")
    }
}

/// Applies `cors` rules, first matching rule wins.
#[derive(Debug, Clone)]
pub struct CorsLayer {
    rules: Arc<[CorsRule]>,
}

impl CorsLayer {
    /// A layer with these rules (none: the layer does nothing).
    pub fn new(rules: Arc<[CorsRule]>) -> Self {
        CorsLayer { rules }
    }
}

impl<S> Layer<S> for CorsLayer {
    type Service = Cors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Cors {
            inner,
            rules: self.rules.clone(),
        }
    }
}

/// The service produced by [`CorsLayer`].
#[derive(Debug, Clone)]
pub struct Cors<S> {
    inner: S,
    rules: Arc<[CorsRule]>,
}

/// The answer to an allowed preflight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreflightAnswered;

impl<S, B> Service<Request<B>> for Cors<S>
where
    S: Service<Request<B>, Response = Response<crate::body::Body>, Error = Denial>,
{
    type Response = Response<crate::body::Body>;
    type Error = Denial;
    type Future = ResponseFuture<S::Future, Response<crate::body::Body>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Some(rule) = self
            .rules
            .iter()
            .find(|r| r.pattern.matches(req.uri().path()).is_some())
        else {
            return ResponseFuture::inner(self.inner.call(req));
        };
        let scope = req.extensions().get::<Arc<RequestScope>>().cloned();
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .map(str::to_string);
        let preflight = req.method() == Method::OPTIONS
            && origin.is_some()
            && req
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        let mut headers = HeaderMap::new();
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        let allowed = origin
            .as_deref()
            .filter(|o| rule.allows_origin(o))
            .and_then(|o| HeaderValue::from_str(o).ok());
        if preflight {
            let decision = preflight_headers(rule, allowed, req.headers(), &mut headers);
            if let Some(scope) = &scope {
                scope.set_cors(headers);
            }
            return match decision {
                Ok(()) => {
                    let mut response = Response::new(crate::body::empty());
                    *response.status_mut() = StatusCode::NO_CONTENT;
                    response.extensions_mut().insert(PreflightAnswered);
                    ResponseFuture::ready(response)
                }
                Err(refusal) => ResponseFuture::denied(Denial::Forbidden {
                    reason: ForbiddenReason::CorsPreflightRefused,
                    detail: refusal.to_string(),
                    required_action: String::new(),
                    resource_type: String::new(),
                }),
            };
        }
        if let Some(origin) = allowed {
            let value = if rule.any_origin() && !rule.allow_credentials {
                HeaderValue::from_static("*")
            } else {
                origin
            };
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
            if rule.allow_credentials {
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
            if let Some(list) = joined(rule.expose_headers.iter().map(HeaderName::as_str)) {
                headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, list);
            }
        }
        if let Some(scope) = &scope {
            scope.set_cors(headers);
        }
        ResponseFuture::inner(self.inner.call(req))
    }
}

/// Why a preflight is refused (for the event; the browser only sees a 403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum PreflightRefusal {
    #[error("origin not allowed")]
    Origin,
    #[error("unreadable Access-Control-Request-Method")]
    UnreadableMethod,
    #[error("method {0} not allowed")]
    Method(Method),
    #[error("unreadable Access-Control-Request-Headers")]
    UnreadableHeaders,
    #[error("header `{0}` not allowed")]
    Header(String),
    #[error("too many requested headers")]
    TooManyHeaders,
}

/// The headers of an allowed preflight, or why it is refused.
fn preflight_headers(
    rule: &CorsRule,
    origin: Option<HeaderValue>,
    request: &HeaderMap,
    headers: &mut HeaderMap,
) -> Result<(), PreflightRefusal> {
    headers.append(
        header::VARY,
        HeaderValue::from_static("Access-Control-Request-Method, Access-Control-Request-Headers"),
    );
    let origin = origin.ok_or(PreflightRefusal::Origin)?;
    let method = request
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .ok_or(PreflightRefusal::UnreadableMethod)?;
    if !rule.allow_methods.contains(&method) {
        return Err(PreflightRefusal::Method(method));
    }
    let mut asked = Vec::new();
    for value in request.get_all(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        let text = value
            .to_str()
            .map_err(|_| PreflightRefusal::UnreadableHeaders)?;
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let name = name.to_ascii_lowercase();
            if !rule.allow_headers.iter().any(|h| h.as_str() == name) {
                return Err(PreflightRefusal::Header(name));
            }
            asked.push(name);
            if asked.len() > 64 {
                return Err(PreflightRefusal::TooManyHeaders);
            }
        }
    }
    let value = if rule.any_origin() && !rule.allow_credentials {
        HeaderValue::from_static("*")
    } else {
        origin
    };
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    if let Some(list) = joined(rule.allow_methods.iter().map(Method::as_str)) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, list);
    }
    if let Some(list) = joined(rule.allow_headers.iter().map(HeaderName::as_str)) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, list);
    }
    if rule.allow_credentials {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if let Some(age) = rule.max_age
        && let Ok(value) = HeaderValue::from_str(&age.as_secs().to_string())
    {
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, value);
    }
    Ok(())
}

fn joined<'a>(items: impl Iterator<Item = &'a str>) -> Option<HeaderValue> {
    let list = items.collect::<Vec<_>>().join(", ");
    (!list.is_empty())
        .then(|| HeaderValue::from_str(&list).ok())
        .flatten()
}

/// Puts the CORS headers decided for a request on its final response. `Vary` is appended
/// to, never replaced. Whatever `Access-Control-*` headers the upstream sent are removed
/// first: on a covered path the gateway alone decides (an upstream's `*`, or its
/// `Allow-Credentials`, must not widen what the rule allows).
pub fn apply(cors: &HeaderMap, response: &mut HeaderMap) {
    let upstream: Vec<HeaderName> = response
        .keys()
        .filter(|name| name.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for name in upstream {
        response.remove(name);
    }
    for (name, value) in cors.iter() {
        if name == header::VARY {
            response.append(name, value.clone());
        } else {
            response.insert(name, value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> CorsRule {
        CorsRule {
            pattern: PathPattern::prefix("/api/").unwrap(),
            allow_origins: vec!["https://app.example.test".into()],
            allow_methods: vec![Method::GET, Method::POST],
            allow_headers: vec![HeaderName::from_static("authorization")],
            expose_headers: vec![HeaderName::from_static("x-request-id")],
            allow_credentials: true,
            max_age: Some(Duration::from_secs(600)),
        }
    }

    fn preflight(origin: &str, method: &str, headers: &str) -> Result<HeaderMap, PreflightRefusal> {
        let mut request = HeaderMap::new();
        request.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_str(method).unwrap(),
        );
        if !headers.is_empty() {
            request.insert(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                HeaderValue::from_str(headers).unwrap(),
            );
        }
        let rule = rule();
        let allowed = Some(origin)
            .filter(|o| rule.allows_origin(o))
            .map(|o| HeaderValue::from_str(o).unwrap());
        let mut out = HeaderMap::new();
        preflight_headers(&rule, allowed, &request, &mut out).map(|()| out)
    }

    #[test]
    fn preflights_allow_exactly_what_the_rule_says() {
        let ok = preflight("https://app.example.test", "POST", "Authorization").unwrap();
        assert_eq!(
            ok[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.test"
        );
        assert_eq!(ok[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(ok[header::ACCESS_CONTROL_MAX_AGE], "600");
        assert!(preflight("https://evil.test", "POST", "").is_err());
        assert!(preflight("null", "GET", "").is_err());
        assert!(preflight("https://app.example.test", "DELETE", "").is_err());
        assert!(preflight("https://app.example.test", "GET", "x-secret").is_err());
    }

    #[tokio::test]
    async fn preflights_are_answered_here_and_never_reach_the_inner_service() {
        use crate::test_support::{Counting, request};
        use tower::{ServiceBuilder, ServiceExt};
        let stub = Counting::default();
        let service = ServiceBuilder::new()
            .layer(CorsLayer::new(Arc::from(vec![rule()])))
            .service(stub.clone());
        let call = |method: &str, path: &str, origin: &str, preflight: bool| {
            let mut req = request(method, path);
            req.headers_mut()
                .insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
            if preflight {
                req.headers_mut().insert(
                    header::ACCESS_CONTROL_REQUEST_METHOD,
                    HeaderValue::from_static("POST"),
                );
            }
            let scope = Arc::new(RequestScope::new(
                crate::request_id::RequestId::generate(),
                req.method().clone(),
            ));
            req.extensions_mut().insert(scope.clone());
            let service = service.clone();
            async move { (service.oneshot(req).await, scope) }
        };
        let (answer, scope) = call("OPTIONS", "/api/items", "https://app.example.test", true).await;
        assert_eq!(
            answer.map(|r| r.status()).ok(),
            Some(StatusCode::NO_CONTENT)
        );
        assert_eq!(
            scope
                .cors()
                .map(|h| h[header::ACCESS_CONTROL_ALLOW_ORIGIN].clone()),
            Some(HeaderValue::from_static("https://app.example.test"))
        );
        let (answer, _) = call("OPTIONS", "/api/items", "https://evil.test", true).await;
        assert_eq!(
            answer.err().map(|d| d.reason()),
            Some("cors_preflight_refused")
        );
        assert_eq!(stub.calls(), 0, "a preflight reached the inner service");
        let (answer, scope) = call("GET", "/api/items", "https://evil.test", false).await;
        assert!(answer.is_ok());
        assert!(
            scope
                .cors()
                .is_some_and(|h| !h.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN))
        );
        let (answer, scope) = call("OPTIONS", "/other", "https://app.example.test", true).await;
        assert!(
            answer.is_ok() && scope.cors().is_none(),
            "an uncovered path is not CORS's"
        );
        assert_eq!(stub.calls(), 2);
    }
}
