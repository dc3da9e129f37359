//! [`Provider`]: the OpenID provider as the gateway's login client sees it — its discovery
//! document (read at start and kept fresh), its token endpoint (code exchange and refresh,
//! with the client's authentication), and ID token verification with its published keys.

use crate::authn::jwks::FetchError;
use crate::authn::sign::SigningKey;
use crate::authn::token::{self, Claims, TokenError};
use crate::authn::{Issuer, check_claims};
use crate::outbound::{CallError, HttpClient};
use crate::secret::Secret;
use arc_swap::ArcSwapOption;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{Request, Uri, header};
use http_body_util::Full;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Largest discovery document or token answer read.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Longest token accepted from the token endpoint (access, refresh or ID token).
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Token endpoint calls in flight at once, across all sessions (callbacks and refreshes).
const MAX_CALLS: usize = 64;

/// The endpoints the login flow uses, from the discovery document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// Where the browser is sent to log in.
    pub authorization_endpoint: Uri,
    /// Where codes and refresh tokens are redeemed.
    pub token_endpoint: Uri,
    /// RP-initiated logout, when the provider offers it.
    pub end_session_endpoint: Option<Uri>,
}

/// How the gateway authenticates to the token endpoint.
pub enum ClientAuth {
    /// A public client: PKCE only, `client_id` in the form.
    Public,
    /// `client_secret_basic`.
    Secret(Secret),
    /// `private_key_jwt` (RFC 7523): a short-lived assertion signed with this key.
    PrivateKeyJwt(SigningKey),
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClientAuth::Public => "Public",
            ClientAuth::Secret(_) => "Secret",
            ClientAuth::PrivateKeyJwt(_) => "PrivateKeyJwt",
        })
    }
}

/// What the token endpoint gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenAnswer {
    /// The access token.
    pub access_token: String,
    /// Its lifetime in seconds, when the provider said.
    pub expires_in: Option<u64>,
    /// A refresh token (a successor, when the provider rotates them).
    pub refresh_token: Option<String>,
    /// The ID token (always on a code exchange with `openid`).
    pub id_token: Option<String>,
}

/// Why a token endpoint call gave no tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenCallError {
    /// The provider refused the grant (a 4xx: an invalid, used or revoked code or token).
    #[error("the provider refused: {0}")]
    Rejected(String),
    /// The provider could not be asked (down, slow, a 5xx, too many calls in flight).
    #[error("the provider is unavailable: {0}")]
    Unavailable(String),
    /// The answer is not a usable token response.
    #[error("unusable token answer: {0}")]
    Malformed(String),
}

/// One OpenID provider and this gateway's client registration at it.
#[derive(Debug)]
pub struct Provider {
    client_id: String,
    auth: ClientAuth,
    client: HttpClient,
    metadata: ArcSwapOption<Metadata>,
    /// The ID token rules: `iss`, `aud` = the client id, the provider's keys.
    id_tokens: Issuer,
    calls: tokio::sync::Semaphore,
    timeout: Duration,
    refresher: AtomicBool,
}

impl Provider {
    /// A provider whose ID tokens follow `id_tokens` (its `keys` are the provider's set,
    /// `audiences` the client id), called through `client`.
    pub fn new(client_id: String, auth: ClientAuth, client: HttpClient, id_tokens: Issuer) -> Self {
        Provider {
            client_id,
            auth,
            client,
            metadata: ArcSwapOption::empty(),
            id_tokens,
            calls: tokio::sync::Semaphore::new(MAX_CALLS),
            timeout: Duration::from_secs(5),
            refresher: AtomicBool::new(false),
        }
    }

    /// The issuer.
    pub fn issuer(&self) -> &str {
        &self.id_tokens.issuer
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The endpoints, once discovered.
    pub fn metadata(&self) -> Option<Arc<Metadata>> {
        self.metadata.load_full()
    }

    /// Whether logins can start and finish: the discovery document and the keys are loaded.
    pub fn is_ready(&self) -> bool {
        self.metadata.load().is_some() && self.id_tokens.keys.is_loaded()
    }

    /// Reads the discovery document now; on failure the last good one stays in use.
    pub async fn discover(&self) -> Result<(), FetchError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer().trim_end_matches('/')
        );
        let uri: Uri = url
            .parse()
            .map_err(|_| FetchError::Discovery(format!("`{url}` is not a URL")))?;
        let request = Request::get(uri)
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|e| CallError::Transport(e.to_string()))?;
        let (document, _) =
            tokio::time::timeout(self.timeout, self.client.json(request, MAX_DOCUMENT_BYTES))
                .await
                .map_err(|_| FetchError::Timeout)??;
        let metadata = parse_metadata(&document, self.issuer()).map_err(FetchError::Discovery)?;
        self.metadata.store(Some(Arc::new(metadata)));
        Ok(())
    }

    /// Keeps the discovery document (and the keys) fresh while the provider lives: now,
    /// then hourly, retrying failures with backoff. Calling it again does nothing.
    pub fn spawn_refresher(self: &Arc<Self>) {
        if self.refresher.swap(true, Ordering::AcqRel) {
            return;
        }
        self.id_tokens.keys.spawn_refresher();
        let weak: Weak<Provider> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(250);
            loop {
                let Some(provider) = weak.upgrade() else {
                    return;
                };
                let wait = match provider.discover().await {
                    Ok(()) => {
                        backoff = Duration::from_millis(250);
                        Duration::from_secs(3600)
                    }
                    Err(_) => {
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        backoff
                    }
                };
                drop(provider);
                tokio::time::sleep(wait).await;
            }
        });
    }

    /// Redeems an authorization code (with its PKCE verifier).
    pub async fn exchange_code(
        &self,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<TokenAnswer, TokenCallError> {
        self.token_call(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ])
        .await
    }

    /// Redeems a refresh token.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenAnswer, TokenCallError> {
        self.token_call(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    async fn token_call(&self, fields: &[(&str, &str)]) -> Result<TokenAnswer, TokenCallError> {
        let metadata = self
            .metadata()
            .ok_or_else(|| TokenCallError::Unavailable("discovery not loaded".into()))?;
        let _permit = self
            .calls
            .try_acquire()
            .map_err(|_| TokenCallError::Unavailable("too many token calls in flight".into()))?;
        let mut form: Vec<(&str, String)> =
            fields.iter().map(|(k, v)| (*k, v.to_string())).collect();
        let mut request = Request::post(metadata.token_endpoint.clone())
            .header(header::ACCEPT, "application/json")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        match &self.auth {
            ClientAuth::Public => form.push(("client_id", self.client_id.clone())),
            ClientAuth::Secret(secret) => {
                // RFC 6749 §2.3.1: both parts form-encoded before the Basic encoding.
                let pair = format!(
                    "{}:{}",
                    super::form::encode(&self.client_id),
                    super::form::encode(secret.expose())
                );
                request = request.header(
                    header::AUTHORIZATION,
                    format!("Basic {}", STANDARD.encode(pair)),
                );
            }
            ClientAuth::PrivateKeyJwt(key) => {
                let assertion = self
                    .assertion(key, &metadata.token_endpoint)
                    .ok_or_else(|| {
                        TokenCallError::Unavailable("cannot sign the assertion".into())
                    })?;
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ));
                form.push(("client_assertion", assertion));
                form.push(("client_id", self.client_id.clone()));
            }
        }
        let body = super::form::encode_pairs(form.iter().map(|(k, v)| (*k, v.as_str())));
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| TokenCallError::Unavailable(e.to_string()))?;
        let answer =
            tokio::time::timeout(self.timeout, self.client.json(request, MAX_DOCUMENT_BYTES))
                .await
                .map_err(|_| TokenCallError::Unavailable("timed out".into()))?;
        match answer {
            Ok((document, _)) => parse_token_answer(&document),
            Err(CallError::Status(status)) if (400..500).contains(&status) => {
                Err(TokenCallError::Rejected(format!("status {status}")))
            }
            Err(CallError::Json(e)) => Err(TokenCallError::Malformed(e.to_string())),
            Err(other) => Err(TokenCallError::Unavailable(other.to_string())),
        }
    }

    /// A `private_key_jwt` client assertion for `audience`, valid for one minute.
    fn assertion(&self, key: &SigningKey, audience: &Uri) -> Option<String> {
        let now = crate::authn::now_secs() as u64;
        let claims = serde_json::json!({
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": audience.to_string(),
            "jti": super::seal::random_token(16)?,
            "iat": now,
            "exp": now + 60,
        });
        let Value::Object(claims) = claims else {
            return None;
        };
        key.sign(&claims, "JWT", &serde_json::Map::new()).ok()
    }

    /// Verifies an ID token: signature with the provider's keys, `iss`, `aud` (this client),
    /// `azp` (this client when present, required with several audiences), `exp`, `iat`.
    pub async fn verify_id_token(&self, id_token: &str, now: f64) -> Result<Claims, TokenError> {
        let parsed = token::parse(id_token, MAX_TOKEN_BYTES)?;
        if parsed.claims.iss.as_deref() != Some(self.issuer()) {
            return Err(TokenError::UnknownIssuer);
        }
        self.id_tokens.check_signature(&parsed).await?;
        check_claims(&self.id_tokens, &parsed.header, &parsed.claims, now)?;
        let azp = parsed.claims.all.get("azp").and_then(Value::as_str);
        let azp_ok = match azp {
            Some(azp) => azp == self.client_id,
            None => parsed.claims.aud.len() == 1,
        };
        if !azp_ok {
            return Err(TokenError::WrongAudience);
        }
        Ok(parsed.claims)
    }
}

/// The discovery document's endpoints, checked: the same issuer, usable URLs, and PKCE
/// S256 among the challenge methods when the document lists them.
fn parse_metadata(document: &Value, issuer: &str) -> Result<Metadata, String> {
    if document.get("issuer").and_then(Value::as_str) != Some(issuer) {
        return Err("the document names another issuer".into());
    }
    let endpoint = |name: &str| -> Result<Option<Uri>, String> {
        let Some(text) = document.get(name) else {
            return Ok(None);
        };
        let uri: Uri = text
            .as_str()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| format!("its {name} is not a URL"))?;
        crate::outbound::check_url(&uri).map_err(|e| format!("its {name}: {e}"))?;
        Ok(Some(uri))
    };
    let required =
        |name: &str| endpoint(name)?.ok_or_else(|| format!("the document has no {name}"));
    if let Some(methods) = document
        .get("code_challenge_methods_supported")
        .and_then(Value::as_array)
        && !methods.iter().any(|m| m.as_str() == Some("S256"))
    {
        return Err("the provider does not support PKCE S256".into());
    }
    Ok(Metadata {
        authorization_endpoint: required("authorization_endpoint")?,
        token_endpoint: required("token_endpoint")?,
        end_session_endpoint: endpoint("end_session_endpoint")?,
    })
}

/// A token endpoint answer, checked: a Bearer `access_token`, bounded sizes and lifetime.
fn parse_token_answer(document: &Value) -> Result<TokenAnswer, TokenCallError> {
    let text = |name: &str| -> Result<Option<String>, TokenCallError> {
        match document.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_TOKEN_BYTES => {
                Ok(Some(s.clone()))
            }
            Some(_) => Err(TokenCallError::Malformed(format!("`{name}` is unusable"))),
        }
    };
    let access_token =
        text("access_token")?.ok_or_else(|| TokenCallError::Malformed("no access_token".into()))?;
    let token_type = text("token_type")?.unwrap_or_default();
    if !token_type.eq_ignore_ascii_case("bearer") {
        return Err(TokenCallError::Malformed(format!(
            "token_type `{}` is not Bearer",
            crate::problem::truncated(&token_type, 32)
        )));
    }
    let expires_in = match document.get("expires_in") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_u64()
                .filter(|s| *s <= 366 * 24 * 3600)
                .ok_or_else(|| TokenCallError::Malformed("`expires_in` is unusable".into()))?,
        ),
    };
    Ok(TokenAnswer {
        access_token,
        expires_in,
        refresh_token: text("refresh_token")?,
        id_token: text("id_token")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metadata_is_checked() {
        let good = json!({
            "issuer": "https://idp.test",
            "authorization_endpoint": "https://idp.test/auth",
            "token_endpoint": "https://idp.test/token",
            "code_challenge_methods_supported": ["S256"],
        });
        let metadata = parse_metadata(&good, "https://idp.test").unwrap();
        assert_eq!(metadata.end_session_endpoint, None);
        assert!(parse_metadata(&good, "https://other.test").is_err());
        let mut plain_only = good.clone();
        plain_only["code_challenge_methods_supported"] = json!(["plain"]);
        assert!(parse_metadata(&plain_only, "https://idp.test").is_err());
        let mut cleartext = good.clone();
        cleartext["token_endpoint"] = json!("http://idp.example.com/token");
        assert!(parse_metadata(&cleartext, "https://idp.test").is_err());
    }

    #[test]
    fn private_key_jwt_assertions_are_signed_for_the_token_endpoint() {
        use crate::authn::jwks::KeyStore;
        use crate::authn::keys::{Algorithm, KeySet, VerifyingKey};
        let (key, _) = SigningKey::generate_es256("client-1").unwrap();
        let public = VerifyingKey::from_jwk(&key.public_jwk(), &[Algorithm::Es256]).unwrap();
        let provider = Provider::new(
            "portal".into(),
            ClientAuth::Public,
            HttpClient::new(&crate::outbound::Trust::empty()).unwrap(),
            Issuer {
                name: "login".into(),
                issuer: "https://idp.test".into(),
                audiences: vec!["portal".into()],
                algorithms: vec![Algorithm::Es256],
                clock_skew: Duration::from_secs(30),
                max_lifetime: Duration::from_secs(3600),
                required_claims: Vec::new(),
                token_types: None,
                binding_required: false,
                keys: KeyStore::fixed(KeySet::default()),
            },
        );
        let endpoint: Uri = "https://idp.test/token".parse().unwrap();
        let assertion = provider.assertion(&key, &endpoint).unwrap();
        let parsed = token::parse(&assertion, MAX_TOKEN_BYTES).unwrap();
        assert!(public.verify(parsed.signing_input, &parsed.signature));
        assert_eq!(parsed.header.kid.as_deref(), Some("client-1"));
        assert_eq!(parsed.claims.iss.as_deref(), Some("portal"));
        assert_eq!(parsed.claims.sub.as_deref(), Some("portal"));
        assert_eq!(
            parsed.claims.aud,
            vec!["https://idp.test/token".to_string()]
        );
        let (iat, exp) = (parsed.claims.iat.unwrap(), parsed.claims.exp.unwrap());
        assert!(exp - iat <= 60.0 && parsed.claims.jti.is_some());
    }

    #[test]
    fn token_answers_are_checked() {
        let answer = parse_token_answer(&json!({
            "access_token": "at", "token_type": "Bearer", "expires_in": 60, "refresh_token": "rt"
        }))
        .unwrap();
        assert_eq!(answer.expires_in, Some(60));
        assert_eq!(answer.refresh_token.as_deref(), Some("rt"));
        for bad in [
            json!({"token_type": "Bearer"}),
            json!({"access_token": "at", "token_type": "DPoP"}),
            json!({"access_token": "at", "token_type": "Bearer", "expires_in": -1}),
            json!({"access_token": 5, "token_type": "Bearer"}),
        ] {
            assert!(parse_token_answer(&bad).is_err(), "{bad}");
        }
    }
}
