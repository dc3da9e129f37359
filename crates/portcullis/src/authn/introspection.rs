//! RFC 7662 token introspection for opaque (non-JWT) access tokens, with a short, bounded
//! cache so an active token costs one round trip per `cache_ttl`, not one per request.

use super::token::TokenError;
use super::{Principal, now_secs};
use crate::outbound::{CallError, HttpClient};
use bytes::Bytes;
use http::{HeaderValue, Request, Uri, header};
use http_body_util::Full;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Settings of an introspection endpoint.
#[derive(Debug, Clone)]
pub struct IntrospectionSettings {
    /// The issuer name used for principals found this way.
    pub name: Arc<str>,
    /// The endpoint URL.
    pub endpoint: Uri,
    /// The gateway's client id at the authorization server.
    pub client_id: String,
    /// Its client secret.
    pub client_secret: crate::secret::Secret,
    /// Accepted audiences (empty: the server's `active` is enough).
    pub audiences: Vec<String>,
    /// How long an answer is reused.
    pub cache_ttl: Duration,
    /// Longest wait for the endpoint.
    pub timeout: Duration,
}

/// The last second of the year 9999: later timestamps are not plausible answers.
const MAX_TIMESTAMP: f64 = 253_402_300_799.0;

/// Most cached answers.
const MAX_CACHED: usize = 10_000;
/// Largest introspection response read.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

type Answer = Result<Arc<Principal>, TokenError>;

/// Asks the authorization server whether opaque tokens are active.
pub struct Introspector {
    settings: IntrospectionSettings,
    authorization: HeaderValue,
    client: HttpClient,
    cache: Mutex<HashMap<Box<str>, (Instant, Answer)>>,
}

impl std::fmt::Debug for Introspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspector")
            .field("endpoint", &self.settings.endpoint)
            .finish_non_exhaustive()
    }
}

impl Introspector {
    /// An introspector for these settings, calling the endpoint with `client`.
    pub fn new(settings: IntrospectionSettings, client: HttpClient) -> Introspector {
        use base64::Engine;
        // RFC 6749 §2.3.1: the credentials are form-encoded before Basic encoding.
        let credentials = format!(
            "{}:{}",
            form_encode(&settings.client_id),
            form_encode(settings.client_secret.expose())
        );
        let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
        let authorization = HeaderValue::from_str(&format!("Basic {encoded}"))
            .unwrap_or(HeaderValue::from_static(""));
        Introspector {
            settings,
            authorization,
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The principal of an active token, or why it is not accepted.
    pub async fn introspect(&self, token: &str) -> Answer {
        if let Ok(cache) = self.cache.lock()
            && let Some((until, answer)) = cache.get(token)
            && *until > Instant::now()
        {
            return answer.clone();
        }
        let answer = match tokio::time::timeout(self.settings.timeout, self.ask(token)).await {
            Ok(Ok(document)) => self.judge(&document),
            // Not cached: an outage must not pin a refusal (or anything else) for the TTL.
            Ok(Err(_)) | Err(_) => return Err(TokenError::IntrospectionFailed),
        };
        let ttl = match &answer {
            // `judge` bounded `exp`, but a conversion of a network number must never panic.
            Ok(principal) => principal.claims.exp.map_or(self.settings.cache_ttl, |exp| {
                Duration::try_from_secs_f64((exp - now_secs()).max(0.0))
                    .map_or(self.settings.cache_ttl, |left| {
                        left.min(self.settings.cache_ttl)
                    })
            }),
            // A malformed answer is not cached: the next request asks again.
            Err(TokenError::IntrospectionFailed) => return answer,
            Err(_) => self.settings.cache_ttl,
        };
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_CACHED {
                let now = Instant::now();
                cache.retain(|_, (until, _)| *until > now);
                if cache.len() >= MAX_CACHED {
                    cache.clear();
                }
            }
            cache.insert(Box::from(token), (Instant::now() + ttl, answer.clone()));
        }
        answer
    }

    async fn ask(&self, token: &str) -> Result<Value, CallError> {
        let body = format!("token={}&token_type_hint=access_token", form_encode(token));
        let request = Request::post(self.settings.endpoint.clone())
            .header(header::AUTHORIZATION, self.authorization.clone())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CallError::Transport(e.to_string()))?;
        let (document, _) = self.client.json(request, MAX_RESPONSE_BYTES).await?;
        Ok(document)
    }

    fn judge(&self, document: &Value) -> Answer {
        if document.get("active") != Some(&Value::Bool(true)) {
            return Err(TokenError::Inactive);
        }
        let Value::Object(map) = document else {
            return Err(TokenError::Inactive);
        };
        let claims = super::token::claims_of(map.clone())?;
        // RFC 7662 §2.2: `exp`, `iat` and `nbf` are integer timestamps. Anything else (a
        // fraction, a negative number, 1e20) is a broken answer, not a token: fail closed.
        for time in [claims.exp, claims.iat, claims.nbf].into_iter().flatten() {
            if time.fract() != 0.0 || !(0.0..=MAX_TIMESTAMP).contains(&time) {
                return Err(TokenError::IntrospectionFailed);
            }
        }
        if claims.exp.is_some_and(|exp| exp <= now_secs()) {
            return Err(TokenError::Expired);
        }
        if !self.settings.audiences.is_empty()
            && !claims
                .aud
                .iter()
                .any(|a| self.settings.audiences.contains(a))
        {
            return Err(TokenError::WrongAudience);
        }
        Ok(Arc::new(Principal {
            issuer: self.settings.name.clone(),
            subject: claims.sub.clone().or_else(|| {
                map.get("client_id")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            }),
            scopes: claims.scopes.clone(),
            claims,
        }))
    }
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
