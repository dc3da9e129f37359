//! [`SessionEndpointsLayer`] answers the login flow's paths before routing;
//! [`SessionLayer`] turns a browser session into a bearer token on `auth: session` routes,
//! refusing cross-site unsafe requests (CSRF) and refreshing tokens before they expire.

use super::flow::{own_origin, safe_return};
use super::store::Loaded;
use super::{Sessions, cookie, form, now};
use crate::authn::{AuthMode, SessionMfa};
use crate::body::Body;
use crate::denial::{Denial, ForbiddenReason, LoginProblem, SessionProblem};
use crate::future::ResponseFuture;
use crate::route::RouteMatch;
use crate::scope::{RequestScope, Transport};
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri, header};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// Answers `paths.login`, `paths.callback` and `paths.logout` (when sessions are configured).
#[derive(Debug, Clone)]
pub struct SessionEndpointsLayer {
    sessions: Option<Arc<Sessions>>,
}

impl SessionEndpointsLayer {
    /// A layer for `sessions` (`None`: every request passes).
    pub fn new(sessions: Option<Arc<Sessions>>) -> Self {
        SessionEndpointsLayer { sessions }
    }
}

impl<S> Layer<S> for SessionEndpointsLayer {
    type Service = SessionEndpoints<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionEndpoints {
            inner,
            sessions: self.sessions.clone(),
        }
    }
}

/// The service produced by [`SessionEndpointsLayer`].
#[derive(Debug, Clone)]
pub struct SessionEndpoints<S> {
    inner: S,
    sessions: Option<Arc<Sessions>>,
}

fn https_of<B>(req: &Request<B>) -> bool {
    req.extensions().get::<Transport>().is_some_and(|t| t.https)
}

/// Whether an unsafe request comes from the gateway's own pages: `Sec-Fetch-Site:
/// same-origin`, or an `Origin` equal to the gateway's. Neither header: refused.
fn same_origin(sessions: &Sessions, headers: &HeaderMap, uri: &Uri, https: bool) -> bool {
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v == "same-origin")
    {
        return true;
    }
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    match (origin, own_origin(sessions, headers, uri, https)) {
        (Some(origin), Some(own)) => origin.eq_ignore_ascii_case(&own),
        _ => false,
    }
}

fn cross_site() -> Denial {
    Denial::Forbidden {
        reason: ForbiddenReason::CrossSiteRequest,
        detail: "unsafe method without Sec-Fetch-Site: same-origin or the gateway's own Origin"
            .into(),
        required_action: String::new(),
        resource_type: String::new(),
    }
}

impl<S, B> Service<Request<B>> for SessionEndpoints<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Denial>,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Denial;
    type Future = ResponseFuture<S::Future, Response<Body>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Some(sessions) = &self.sessions else {
            return ResponseFuture::inner(self.inner.call(req));
        };
        let paths = &sessions.settings.paths;
        let path = req.uri().path();
        let which = if path == paths.login {
            0
        } else if path == paths.callback {
            1
        } else if path == paths.logout {
            2
        } else {
            return ResponseFuture::inner(self.inner.call(req));
        };
        let get = matches!(*req.method(), Method::GET | Method::HEAD);
        let https = https_of(&req);
        match (which, get) {
            (0, true) => {
                return match sessions.start_login(req.headers(), req.uri(), https) {
                    Ok(response) => ResponseFuture::ready(response),
                    Err(denial) => ResponseFuture::denied(denial),
                };
            }
            (2, true) => return ResponseFuture::ready(sessions.confirm_logout()),
            (2, false) if *req.method() == Method::POST => {
                if !same_origin(sessions, req.headers(), req.uri(), https) {
                    return ResponseFuture::denied(cross_site());
                }
            }
            (1, true) => {}
            _ => {
                let allow = if which == 2 {
                    vec![Method::GET, Method::POST]
                } else {
                    vec![Method::GET]
                };
                return ResponseFuture::denied(Denial::MethodNotAllowed { allow });
            }
        }
        let sessions = sessions.clone();
        ResponseFuture::boxed(Box::pin(async move {
            let scope = req.extensions().get::<Arc<RequestScope>>().cloned();
            if which == 1 {
                sessions
                    .finish_login(req.headers(), req.uri(), scope.as_deref())
                    .await
            } else {
                sessions
                    .logout(req.headers(), req.uri(), https, scope.as_deref())
                    .await
            }
        }))
    }
}

/// Puts the session's access token on `auth: session` routes.
#[derive(Debug, Clone)]
pub struct SessionLayer {
    sessions: Option<Arc<Sessions>>,
}

impl SessionLayer {
    /// A layer for `sessions` (`None`: session routes are refused, fail closed).
    pub fn new(sessions: Option<Arc<Sessions>>) -> Self {
        SessionLayer { sessions }
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionGuard {
            inner,
            sessions: self.sessions.clone(),
        }
    }
}

/// The service produced by [`SessionLayer`].
#[derive(Debug, Clone)]
pub struct SessionGuard<S> {
    inner: S,
    sessions: Option<Arc<Sessions>>,
}

/// Whether the browser is navigating (a page load) rather than fetching: `Sec-Fetch-Mode:
/// navigate`, or, from browsers that do not send it, a GET accepting HTML.
fn is_navigation(method: &Method, headers: &HeaderMap) -> bool {
    if let Some(mode) = headers.get("sec-fetch-mode") {
        return mode == "navigate";
    }
    matches!(*method, Method::GET | Method::HEAD)
        && headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("text/html"))
}

fn unsafe_method(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

impl<S, B> Service<Request<B>> for SessionGuard<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Denial> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Denial;
    type Future = ResponseFuture<S::Future, Response<Body>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let Some(route) = req.extensions().get::<RouteMatch>() else {
            return ResponseFuture::inner(self.inner.call(req));
        };
        if route.route.policy.auth.mode != AuthMode::Session {
            return ResponseFuture::inner(self.inner.call(req));
        }
        let step_up = route
            .route
            .policy
            .authz
            .as_ref()
            .is_some_and(|a| a.require_mfa.contains(req.method()));
        // A session route takes sessions only: a bearer token of the client's own is dropped.
        req.headers_mut().remove(header::AUTHORIZATION);
        let Some(sessions) = self.sessions.clone() else {
            return ResponseFuture::denied(Denial::LoginRefused {
                reason: LoginProblem::Unavailable,
                detail: "a session route without `identity.oidc_login`".into(),
            });
        };
        if unsafe_method(req.method())
            && !same_origin(&sessions, req.headers(), req.uri(), https_of(&req))
        {
            return ResponseFuture::denied(cross_site());
        }
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::boxed(Box::pin(async move {
            let scope = req.extensions().get::<Arc<RequestScope>>().cloned();
            let navigate = is_navigation(req.method(), req.headers());
            let here = safe_return(
                req.uri()
                    .path_and_query()
                    .map(|p| p.as_str())
                    .filter(|_| navigate),
            );
            let login = format!(
                "{}?{}",
                sessions.settings.paths.login,
                form::encode_pairs([("return_to", here.as_str())])
            );
            let clear = |scope: &Option<Arc<RequestScope>>| {
                if let (Some(scope), Some(value)) = (scope, cookie::clear(cookie::SESSION)) {
                    scope.put_cookie(value);
                }
            };
            let refuse = |reason: SessionProblem, detail: String| Denial::SessionRequired {
                reason,
                detail,
                login: login.clone(),
                navigate,
            };
            let Some(value) = cookie::get(req.headers(), cookie::SESSION) else {
                return Err(refuse(
                    SessionProblem::NoSession,
                    "no session cookie".into(),
                ));
            };
            let now = now();
            let mut record = match sessions.store.load(value, now).await {
                Loaded::Found(record) => record,
                Loaded::Invalid => {
                    clear(&scope);
                    return Err(refuse(
                        SessionProblem::Invalid,
                        "the session cookie does not open".into(),
                    ));
                }
                Loaded::Ended => {
                    clear(&scope);
                    return Err(refuse(
                        SessionProblem::Revoked,
                        "the session was ended".into(),
                    ));
                }
                // Fail closed, as a 503: sending the browser to log in again would not help.
                Loaded::Unavailable(e) => {
                    return Err(Denial::LoginRefused {
                        reason: LoginProblem::Unavailable,
                        detail: format!("the session store is unavailable: {e}"),
                    });
                }
            };
            let idle = sessions.settings.idle_timeout.as_secs();
            let ended = if now >= record.exp {
                Some((SessionProblem::Expired, "past the session's lifetime"))
            } else if now.saturating_sub(record.seen) > idle {
                Some((SessionProblem::Idle, "unused past the idle timeout"))
            } else {
                None
            };
            if let Some((reason, detail)) = ended {
                let _ = sessions.store.end(&record, now).await;
                clear(&scope);
                return Err(refuse(reason, detail.into()));
            }
            if let Some(scope) = &scope {
                scope.set_user_id(record.sub.clone());
            }
            if step_up && !record.mfa {
                if navigate {
                    return Err(Denial::SessionRequired {
                        reason: SessionProblem::StepUp,
                        detail: "the route needs MFA; the session's login showed none".into(),
                        login: format!("{login}&step_up=1"),
                        navigate,
                    });
                }
                return Err(Denial::StepUpRequired {
                    acr_values: sessions.settings.mfa_acr_values.join(" "),
                });
            }
            let mut changed = false;
            if record.at_exp <= now.saturating_add(sessions.settings.refresh_before.as_secs()) {
                match sessions.refreshed(&record).await {
                    Ok(next) => {
                        record = next;
                        changed = true;
                    }
                    // The provider is down but the token still works: go on with it
                    // (graceful degradation) and retry a little later.
                    Err(failure) if !failure.rejected && record.at_exp > now.saturating_add(5) => {}
                    Err(failure) => {
                        let _ = sessions.store.end(&record, now).await;
                        clear(&scope);
                        return Err(refuse(SessionProblem::RefreshFailed, failure.detail));
                    }
                }
            }
            if changed || now.saturating_sub(record.seen) >= sessions.touch_interval() {
                record.seen = now;
                // Redis already holds a refreshed record; only the last use is new here.
                match sessions.store.save(&record, false, idle, now).await {
                    Ok(Some(value)) => {
                        if let Some(scope) = &scope {
                            scope.put_cookie(value);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        return Err(Denial::LoginRefused {
                            reason: LoginProblem::Unavailable,
                            detail: e.to_string(),
                        });
                    }
                }
            }
            let bearer = HeaderValue::from_str(&format!("Bearer {}", record.at)).map_err(|_| {
                refuse(
                    SessionProblem::Invalid,
                    "the session's access token is not a header value".into(),
                )
            })?;
            req.headers_mut().insert(header::AUTHORIZATION, bearer);
            cookie::strip(req.headers_mut(), cookie::is_gateway_cookie);
            if record.mfa {
                req.extensions_mut().insert(SessionMfa);
            }
            inner.call(req).await
        }))
    }
}
