//! Admin sessions for the dashboard: random ids (the cookie's value) bound to the admin
//! token they were opened with, and the failed-login budget. Also the constant-time token
//! comparison every admin check uses.

use axum::http::HeaderMap;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The session cookie's name.
pub const COOKIE: &str = "portcullis_admin";
/// How long a session lasts.
pub const SESSION_FOR: Duration = Duration::from_secs(8 * 3600);
/// Open sessions at most; past it the oldest is closed.
const MAX_SESSIONS: usize = 64;
/// Failed logins allowed per minute (all clients together): the token is long and random,
/// and this keeps guessing it through the form slower than through the bearer header.
const MAX_FAILURES_PER_MINUTE: u32 = 10;

#[derive(Debug, Clone, Copy)]
struct Session {
    expires: Instant,
    /// SHA-256 of the admin token the session was opened with.
    token: [u8; 32],
}

/// Open dashboard sessions, and the login failure budget.
#[derive(Debug, Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, Session>>,
    failures: Mutex<(Option<Instant>, u32)>,
}

fn fingerprint(token: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

impl Sessions {
    /// Opens a session for `token`; its id (the cookie value).
    pub fn open(&self, token: &[u8]) -> Option<String> {
        let mut id = [0u8; 32];
        aws_lc_rs::rand::fill(&mut id).ok()?;
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.retain(|_, s| s.expires > now);
        if open.len() >= MAX_SESSIONS
            && let Some(oldest) = open
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(id, _)| id.clone())
        {
            open.remove(&oldest);
        }
        open.insert(
            id.clone(),
            Session {
                expires: now + SESSION_FOR,
                token: fingerprint(token),
            },
        );
        Some(id)
    }

    /// Whether `id` is an open session opened with `token`.
    pub fn valid(&self, id: &str, token: &[u8]) -> bool {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(id)
            .is_some_and(|s| s.expires > Instant::now() && s.token == fingerprint(token))
    }

    pub fn close(&self, id: &str) {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    /// Counts a failed login; false once the minute's budget is spent.
    pub fn failure_allowed(&self) -> bool {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match failures.0 {
            Some(start) if now.saturating_duration_since(start) < Duration::from_secs(60) => {}
            _ => *failures = (Some(now), 0),
        }
        failures.1 = failures.1.saturating_add(1);
        failures.1 <= MAX_FAILURES_PER_MINUTE
    }

    pub fn budget_spent(&self) -> bool {
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        failures
            .0
            .is_some_and(|start| start.elapsed() < Duration::from_secs(60))
            && failures.1 >= MAX_FAILURES_PER_MINUTE
    }
}

/// The session id the request's cookie carries, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    portcullis::session::cookie::get(headers, COOKIE)
}

pub use portcullis::secret::constant_time_eq;

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn sessions_are_bound_to_their_token() {
        let sessions = Sessions::default();
        let id = sessions.open(b"token-one").unwrap();
        assert!(sessions.valid(&id, b"token-one"));
        assert!(!sessions.valid(&id, b"token-two"));
        assert!(!sessions.valid("forged", b"token-one"));
        sessions.close(&id);
        assert!(!sessions.valid(&id, b"token-one"));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            axum::http::header::COOKIE,
            HeaderValue::from_static("a=1; portcullis_admin=abc; b=2"),
        );
        assert_eq!(session_cookie(&headers), Some("abc"));
    }
}
