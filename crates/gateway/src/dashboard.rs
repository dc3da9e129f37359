//! The dashboard on the admin listener (SPEC §5): a login form that takes the admin token
//! once and sets a session cookie, the page itself, and its script and style, compiled into
//! the binary. The page reads the admin API with the cookie; nothing comes from another host.
//!
//! The cookie holds a random session id, never the token. Sessions are bound to the token
//! they were opened with: changing `admin.token` (and reloading) closes them all. A session
//! authenticates only reads (`GET`, `HEAD`), so a forged cross-site form can never reload the
//! configuration or revoke tokens, even where `SameSite` is not honoured.

use crate::admin_session::{COOKIE, SESSION_FOR, constant_time_eq, session_cookie};
use crate::gateway::Gateway;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// The longest login form accepted.
pub const MAX_FORM_BYTES: usize = 4096;

/// The page's own policy: its script, its style, calls to itself; nothing else.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const LOGIN_HTML: &str = include_str!("../assets/login.html");
const DASHBOARD_HTML: &str = include_str!("../assets/dashboard.html");
const DASHBOARD_JS: &str = include_str!("../assets/dashboard.js");
const DASHBOARD_CSS: &str = include_str!("../assets/dashboard.css");

/// Whether the request is a read the dashboard session may make, with a valid session.
pub fn session_allows(gateway: &Gateway, method: &Method, headers: &HeaderMap) -> bool {
    if method != Method::GET && method != Method::HEAD {
        return false;
    }
    let Some(token) = admin_token(gateway) else {
        return false;
    };
    session_cookie(headers).is_some_and(|id| gateway.sessions.valid(id, token.as_bytes()))
}

fn admin_token(gateway: &Gateway) -> Option<String> {
    let current = gateway.current();
    let token = current.config.admin.as_ref()?.token.as_ref()?;
    Some(token.expose().to_string())
}

/// A page or asset with the dashboard's headers.
fn page(status: StatusCode, content_type: &'static str, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn login_page(status: StatusCode, message: Option<&str>) -> Response {
    let message = message.map_or(String::new(), |m| format!("<p class=\"error\">{m}</p>"));
    page(
        status,
        "text/html; charset=utf-8",
        LOGIN_HTML.replace("<!--MESSAGE-->", &message),
    )
}

fn redirect_home(cookie: Option<String>) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, HeaderValue::from_static("/"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(cookie) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(header::SET_COOKIE, cookie);
    }
    response
}

/// `GET /`: the dashboard with a valid session, else the login form.
pub async fn home(State(gateway): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if session_allows(&gateway, &Method::GET, &headers) {
        return page(
            StatusCode::OK,
            "text/html; charset=utf-8",
            DASHBOARD_HTML.to_string(),
        );
    }
    login_page(StatusCode::OK, None)
}

/// `GET /dashboard.js`.
pub async fn script() -> Response {
    page(
        StatusCode::OK,
        "text/javascript; charset=utf-8",
        DASHBOARD_JS.to_string(),
    )
}

/// `GET /dashboard.css`.
pub async fn style() -> Response {
    page(
        StatusCode::OK,
        "text/css; charset=utf-8",
        DASHBOARD_CSS.to_string(),
    )
}

/// `POST /login` (`token=...`, form-encoded): opens a session and sends the browser home.
pub async fn login(State(gateway): State<Arc<Gateway>>, body: Bytes) -> Response {
    if gateway.sessions.budget_spent() {
        return login_page(
            StatusCode::TOO_MANY_REQUESTS,
            Some("Too many failed sign-ins. Wait a minute and try again."),
        );
    }
    let presented = form_field(&body, "token");
    let expected = admin_token(&gateway);
    let (Some(presented), Some(expected)) = (presented, expected) else {
        gateway.sessions.failure_allowed();
        return login_page(StatusCode::UNAUTHORIZED, Some("That token is not valid."));
    };
    if !constant_time_eq(presented.as_bytes(), expected.as_bytes()) {
        let status = if gateway.sessions.failure_allowed() {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        return login_page(status, Some("That token is not valid."));
    }
    let Some(id) = gateway.sessions.open(expected.as_bytes()) else {
        return login_page(
            StatusCode::SERVICE_UNAVAILABLE,
            Some("No session could be opened."),
        );
    };
    let max_age = SESSION_FOR.as_secs();
    redirect_home(Some(format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}"
    )))
}

/// `POST /logout`: closes the session and clears the cookie.
pub async fn logout(State(gateway): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Some(id) = session_cookie(&headers) {
        gateway.sessions.close(id);
    }
    redirect_home(Some(format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
    )))
}

/// The value of `name` in a form-encoded body (`+` and `%XX` decoded); `None` when absent
/// or not UTF-8.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    let body = std::str::from_utf8(body).ok()?;
    let raw = body
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(n, _)| *n == name)?
        .1;
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_are_decoded() {
        assert_eq!(
            form_field(b"a=1&token=ab%2Bc+d", "token").as_deref(),
            Some("ab+c d")
        );
        assert_eq!(form_field(b"token=%zz", "token"), None);
        assert_eq!(form_field(b"token=%4", "token"), None);
        assert_eq!(form_field(b"other=1", "token"), None);
    }
}
