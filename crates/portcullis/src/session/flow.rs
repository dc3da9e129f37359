//! The login flow's own endpoints: starting a login, the provider's callback, and logout.

use super::seal::{random_token, s256};
use super::store::{Loaded, SessionRecord};
use super::{Sessions, cookie, form, now};
use crate::body::{self, Body};
use crate::denial::{Denial, LoginProblem};
use crate::event::{EventType, SecurityEvent, Severity};
use crate::scope::RequestScope;
use http::{HeaderMap, HeaderValue, Response, StatusCode, Uri, header};
use serde::{Deserialize, Serialize};

/// A login in progress, sealed in its own short-lived cookie (one per `state`, so logins
/// in several tabs never overwrite each other).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PendingLogin {
    state: String,
    nonce: String,
    verifier: String,
    return_to: String,
    redirect_uri: String,
    step_up: bool,
    created: u64,
}

/// Longest return path kept.
const MAX_RETURN_BYTES: usize = 1024;

fn same(a: &str, b: &str) -> bool {
    crate::secret::constant_time_eq(a.as_bytes(), b.as_bytes())
}

fn refused(reason: LoginProblem, detail: impl Into<String>) -> Denial {
    Denial::LoginRefused {
        reason,
        detail: detail.into(),
    }
}

/// The pending-login cookie's name for `state` (its first characters: enough to tell
/// logins apart; the whole state is compared inside the sealed value).
fn pending_name(state: &str) -> String {
    format!(
        "{}{}",
        cookie::LOGIN_PREFIX,
        state.get(..16).unwrap_or(state)
    )
}

/// A relative path on this site, or `/`: never another origin (`//host`, `/\host`, a
/// scheme), never control characters.
pub fn safe_return(path: Option<&str>) -> String {
    match path {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.starts_with("/\\")
                && p.len() <= MAX_RETURN_BYTES
                && p.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b'\\') =>
        {
            p.to_string()
        }
        _ => "/".to_string(),
    }
}

/// The gateway's own origin for this request: `external_url`, else the scheme it was
/// reached with and its `Host` (which the edge has already checked against `listen.hosts`).
pub(super) fn own_origin(
    sessions: &Sessions,
    headers: &HeaderMap,
    uri: &Uri,
    https: bool,
) -> Option<String> {
    if let Some(origin) = &sessions.settings.external_origin {
        return Some(origin.clone());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))?;
    Some(format!("{}://{host}", if https { "https" } else { "http" }))
}

fn redirect(location: &str, cookies: Vec<HeaderValue>) -> Result<Response<Body>, Denial> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::FOUND;
    let headers = response.headers_mut();
    headers.insert(
        header::LOCATION,
        HeaderValue::from_str(location)
            .map_err(|_| refused(LoginProblem::BadRequest, "unusable redirect target"))?,
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for value in cookies {
        headers.append(header::SET_COOKIE, value);
    }
    Ok(response)
}

fn session_event(reason: &str, sub: &str, scope: Option<&RequestScope>) -> SecurityEvent {
    let mut event = match scope {
        Some(scope) => {
            crate::event::request_event(EventType::Session, Severity::Low, reason, scope)
        }
        None => SecurityEvent::new(EventType::Session, Severity::Low, reason),
    };
    event.user_id = Some(sub.to_string());
    event
}

impl Sessions {
    /// `paths.login`: a redirect to the provider with PKCE S256, `state` and `nonce`, and a
    /// pending-login cookie holding them. At most `max_pending` logins stay pending per
    /// browser: starting more drops the oldest.
    pub(super) fn start_login(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
        https: bool,
    ) -> Result<Response<Body>, Denial> {
        let metadata = self
            .provider
            .metadata()
            .ok_or_else(|| refused(LoginProblem::Unavailable, "discovery not loaded"))?;
        let origin = own_origin(self, headers, uri, https)
            .ok_or_else(|| refused(LoginProblem::BadRequest, "no host"))?;
        let query = uri.query();
        let random =
            || random_token(32).ok_or_else(|| refused(LoginProblem::Unavailable, "no randomness"));
        let pending = PendingLogin {
            state: random()?,
            nonce: random()?,
            verifier: random()?,
            return_to: safe_return(form::param(query, "return_to").as_deref()),
            redirect_uri: format!("{origin}{}", self.settings.paths.callback),
            step_up: form::param(query, "step_up").as_deref() == Some("1"),
            created: now(),
        };
        let name = pending_name(&pending.state);
        let sealed = serde_json::to_vec(&pending)
            .ok()
            .and_then(|json| self.store.sealer().seal(&name, &json))
            .ok_or_else(|| refused(LoginProblem::Unavailable, "sealing failed"))?;
        let mut cookies: Vec<HeaderValue> =
            cookie::set(&name, &sealed, Some(self.settings.pending_ttl.as_secs()))
                .into_iter()
                .collect();
        // Older pending logins beyond the cap, oldest first, are dropped.
        let mut older: Vec<(u64, String)> = cookie::pairs(headers)
            .filter(|(n, _)| n.starts_with(cookie::LOGIN_PREFIX) && *n != name)
            .map(|(n, v)| {
                let created = self
                    .store
                    .sealer()
                    .open(n, v)
                    .and_then(|p| serde_json::from_slice::<PendingLogin>(&p).ok())
                    .map_or(0, |p| p.created);
                (created, n.to_string())
            })
            .collect();
        older.sort();
        let keep = self.settings.max_pending.saturating_sub(1);
        let excess = older.len().saturating_sub(keep);
        cookies.extend(
            older
                .iter()
                .take(excess)
                .filter_map(|(_, n)| cookie::clear(n)),
        );
        let scopes = self.settings.scopes.join(" ");
        let challenge = s256(&pending.verifier);
        let mut params: Vec<(&str, &str)> = vec![
            ("response_type", "code"),
            ("client_id", self.provider.client_id()),
            ("redirect_uri", &pending.redirect_uri),
            ("scope", &scopes),
            ("state", &pending.state),
            ("nonce", &pending.nonce),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ];
        if let Some(resource) = &self.settings.resource {
            params.push(("resource", resource));
        }
        let acr_values = self.settings.mfa_acr_values.join(" ");
        if pending.step_up {
            // A fresh authentication with a second factor (OIDC Core §3.1.2.1).
            params.push(("max_age", "0"));
            if !acr_values.is_empty() {
                params.push(("acr_values", &acr_values));
            }
        }
        let endpoint = metadata.authorization_endpoint.to_string();
        let separator = if endpoint.contains('?') { '&' } else { '?' };
        let location = format!("{endpoint}{separator}{}", form::encode_pairs(params));
        redirect(&location, cookies)
    }

    /// `paths.callback`: checks, in order, the state (a pending login of this browser), the
    /// code exchange, the ID token (signature, `iss`, `aud`, `azp`, `exp`, `nonce`) and its
    /// `at_hash`; then a new session (a new id: nothing chosen before login survives it)
    /// and a redirect to the page first asked for.
    pub(super) async fn finish_login(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
        scope: Option<&RequestScope>,
    ) -> Result<Response<Body>, Denial> {
        let query = uri.query();
        let state = form::param(query, "state").ok_or_else(|| {
            refused(
                LoginProblem::UnknownState,
                "no (or several) state parameters",
            )
        })?;
        let name = pending_name(&state);
        // Whatever happens, this pending login is used up.
        if let (Some(scope), Some(clear)) = (scope, cookie::clear(&name)) {
            scope.put_cookie(clear);
        }
        let pending = cookie::get(headers, &name)
            .and_then(|value| self.store.sealer().open(&name, value))
            .and_then(|plain| serde_json::from_slice::<PendingLogin>(&plain).ok())
            .filter(|p| same(&p.state, &state))
            .ok_or_else(|| {
                refused(
                    LoginProblem::UnknownState,
                    "no pending login for this state in this browser (replayed, stale, or started elsewhere)",
                )
            })?;
        let now = now();
        if now
            > pending
                .created
                .saturating_add(self.settings.pending_ttl.as_secs())
        {
            return Err(refused(
                LoginProblem::StateExpired,
                "the login took too long",
            ));
        }
        if let Some(error) = form::param(query, "error") {
            return Err(refused(
                LoginProblem::IdpError,
                format!(
                    "the provider answered `{}`",
                    crate::problem::truncated(&error, 64)
                ),
            ));
        }
        let code = form::param(query, "code")
            .filter(|c| !c.is_empty() && c.len() <= 2048)
            .ok_or_else(|| refused(LoginProblem::BadRequest, "no code"))?;
        let tokens = self
            .provider
            .exchange_code(&code, &pending.redirect_uri, &pending.verifier)
            .await
            .map_err(|e| refused(LoginProblem::CodeExchange, e.to_string()))?;
        let id_token = tokens
            .id_token
            .as_deref()
            .ok_or_else(|| refused(LoginProblem::IdToken, "no ID token"))?;
        let claims = self
            .provider
            .verify_id_token(id_token, now as f64)
            .await
            .map_err(|e| refused(LoginProblem::IdToken, e.to_string()))?;
        let nonce = claims
            .all
            .get("nonce")
            .and_then(|n| n.as_str())
            .unwrap_or_default();
        if !same(nonce, &pending.nonce) {
            return Err(refused(
                LoginProblem::Nonce,
                "the ID token's nonce is not this login's",
            ));
        }
        if let Some(at_hash) = claims.all.get("at_hash") {
            let expected = at_hash_of(id_token, &tokens.access_token);
            if at_hash
                .as_str()
                .zip(expected.as_deref())
                .is_none_or(|(a, b)| !same(a, b))
            {
                return Err(refused(
                    LoginProblem::AtHash,
                    "at_hash does not match the access token",
                ));
            }
        }
        let sub = claims
            .sub
            .clone()
            .ok_or_else(|| refused(LoginProblem::IdToken, "no sub"))?;
        let mfa = crate::authn::shows_mfa(&claims, &self.settings.mfa_acr_values);
        if pending.step_up {
            let auth_time = claims
                .all
                .get("auth_time")
                .and_then(|t| t.as_u64())
                .unwrap_or(0);
            // max_age=0 asked for an authentication after the step-up began.
            if !mfa || auth_time.saturating_add(30) < pending.created {
                return Err(refused(
                    LoginProblem::StepUpNotMet,
                    format!("the step-up login shows mfa={mfa}, auth_time={auth_time}"),
                ));
            }
        }
        let sid =
            random_token(32).ok_or_else(|| refused(LoginProblem::Unavailable, "no randomness"))?;
        let record = SessionRecord {
            sid,
            sub: sub.clone(),
            at_exp: super::refresh::token_expiry(&tokens, now),
            at: tokens.access_token,
            rt: tokens.refresh_token,
            idt: Some(id_token.to_string()),
            mfa,
            created: now,
            seen: now,
            exp: now.saturating_add(self.settings.ttl.as_secs()),
        };
        // A session this browser had before ends: its id is never carried over.
        if let Some(old) = cookie::get(headers, cookie::SESSION)
            && let Loaded::Found(old) = self.store.load(old, now).await
        {
            let _ = self.store.end(&old, now).await;
        }
        let session_cookie = self
            .store
            .save(&record, true, self.settings.idle_timeout.as_secs(), now)
            .await
            .map_err(|e| match e {
                super::store::SaveError::TooLarge(_) => {
                    refused(LoginProblem::TooLarge, e.to_string())
                }
                super::store::SaveError::Unavailable(_) => {
                    refused(LoginProblem::Unavailable, e.to_string())
                }
            })?;
        let mut event = session_event("login", &sub, scope);
        event.details = serde_json::json!({ "mfa": mfa, "step_up": pending.step_up });
        self.events.emit(event);
        redirect(&pending.return_to, session_cookie.into_iter().collect())
    }

    /// `paths.logout` GET: a page asking to confirm (a link must never log anyone out).
    pub(super) fn confirm_logout(&self) -> Response<Body> {
        let page = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign out</title></head>\
             <body><h1>Sign out?</h1><form method=\"post\" action=\"{}\">\
             <button type=\"submit\" id=\"logout\">Sign out</button></form></body></html>",
            html_escape(&self.settings.paths.logout)
        );
        let mut response = Response::new(body::full(page));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        response
    }

    /// `paths.logout` POST (same-origin, checked by the caller): ends the session here and,
    /// when the provider offers RP-initiated logout, at the provider too.
    pub(super) async fn logout(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
        https: bool,
        scope: Option<&RequestScope>,
    ) -> Result<Response<Body>, Denial> {
        let now = now();
        let mut id_token = None;
        if let Some(value) = cookie::get(headers, cookie::SESSION)
            && let Loaded::Found(record) = self.store.load(value, now).await
        {
            self.store
                .end(&record, now)
                .await
                .map_err(|e| refused(LoginProblem::Unavailable, e))?;
            self.events
                .emit(session_event("logout", &record.sub, scope));
            id_token = record.idt;
        }
        let cookies: Vec<HeaderValue> = cookie::clear(cookie::SESSION).into_iter().collect();
        let landing = safe_return(Some(&self.settings.post_logout_redirect));
        let end_session = self
            .provider
            .metadata()
            .and_then(|m| m.end_session_endpoint.clone());
        let Some(end_session) = end_session else {
            return redirect(&landing, cookies);
        };
        let origin = own_origin(self, headers, uri, https)
            .ok_or_else(|| refused(LoginProblem::BadRequest, "no host"))?;
        let back = format!("{origin}{landing}");
        let mut params = vec![
            ("client_id", self.provider.client_id()),
            ("post_logout_redirect_uri", back.as_str()),
        ];
        if let Some(hint) = &id_token {
            params.push(("id_token_hint", hint));
        }
        let endpoint = end_session.to_string();
        let separator = if endpoint.contains('?') { '&' } else { '?' };
        redirect(
            &format!("{endpoint}{separator}{}", form::encode_pairs(params)),
            cookies,
        )
    }
}

/// The `at_hash` an ID token should carry for `access_token` (OIDC Core §3.1.3.6): the left
/// half of the hash its algorithm uses, base64url.
fn at_hash_of(id_token: &str, access_token: &str) -> Option<String> {
    use aws_lc_rs::digest::{SHA256, SHA384, SHA512, digest};
    use base64::Engine;
    let header = id_token.split('.').next()?;
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()?;
    let header: serde_json::Value = serde_json::from_slice(&header).ok()?;
    let alg = header.get("alg")?.as_str()?;
    let algorithm = match alg.get(2..) {
        Some("256") => &SHA256,
        Some("384") => &SHA384,
        Some("512") => &SHA512,
        _ if alg == "EdDSA" => &SHA512,
        _ => return None,
    };
    let hash = digest(algorithm, access_token.as_bytes());
    let half = hash.as_ref().get(..hash.as_ref().len() / 2)?;
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(half))
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_relative_return_paths() {
        for (given, kept) in [
            (Some("/app?x=1"), "/app?x=1"),
            (Some("//evil.test/x"), "/"),
            (Some("/\\evil.test"), "/"),
            (Some("https://evil.test/"), "/"),
            (Some("/a b"), "/"),
            (Some("app"), "/"),
            (None, "/"),
        ] {
            assert_eq!(safe_return(given), kept, "{given:?}");
        }
    }
}
