//! Authentication: strict JWT verification against each issuer's keys, the verified-token
//! cache, revocation, and the [`AuthenticateLayer`] that puts a [`Principal`] on requests.

pub mod cache;
pub mod dpop;
pub mod forwarded_cert;
pub mod introspection;
pub mod jwks;
pub mod keys;
mod layer;
pub mod mtls;
pub mod pending;
pub mod revocation;
pub mod settings;
pub mod sign;
pub mod token;

pub use layer::{Authenticate, AuthenticateLayer};
pub use settings::{AuthMode, ForwardSettings, RouteAuth, ScopeRule};

use cache::TokenCache;
use jwks::KeyStore;
use keys::Algorithm;
use revocation::Revocations;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use token::{Claims, TokenError};

/// Seconds since the Unix epoch, as JWT claims count time.
pub fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// A revocation lookup not yet awaited (see [`Authenticator::authenticate_deferred`]).
pub type RevocationCheck =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), TokenError>> + Send>>;

/// Whether `principal`'s token is revoked, as a token error; a store that cannot answer is
/// an error too (fail closed).
async fn check_revocation(
    revocations: &Revocations,
    principal: &Principal,
) -> Result<(), TokenError> {
    match revocations.is_revoked(principal).await {
        Ok(false) => Ok(()),
        Ok(true) => Err(TokenError::Revoked),
        Err(e) => Err(TokenError::RevocationUnavailable(e.to_string())),
    }
}

/// `amr` values (RFC 8176) that show a second factor.
const MFA_METHODS: [&str; 8] = ["mfa", "otp", "hwk", "sms", "fpt", "face", "iris", "retina"];

/// Whether these claims show multi-factor authentication: an `amr` naming a second factor,
/// or an `acr` among `mfa_acr_values`.
pub fn shows_mfa(claims: &Claims, mfa_acr_values: &[String]) -> bool {
    claims.amr.iter().any(|m| MFA_METHODS.contains(&m.as_str()))
        || claims
            .acr
            .as_ref()
            .is_some_and(|acr| mfa_acr_values.contains(acr))
}

/// Put on a request by the browser-session layer: the session's login showed MFA (in its
/// ID token), which counts for step-up like MFA claims in the access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionMfa;

/// One trusted token issuer.
#[derive(Debug)]
pub struct Issuer {
    /// The configured name (for events and metrics).
    pub name: Arc<str>,
    /// The exact `iss` value.
    pub issuer: String,
    /// Accepted audiences; a token must carry at least one.
    pub audiences: Vec<String>,
    /// Allowed algorithms.
    pub algorithms: Vec<Algorithm>,
    /// Tolerance for `exp`, `nbf` and `iat`.
    pub clock_skew: Duration,
    /// Longest accepted `exp - iat`.
    pub max_lifetime: Duration,
    /// Claims that must be present (beyond `exp`, which always must).
    pub required_claims: Vec<String>,
    /// Accepted `typ` values (compared without an `application/` prefix, case-insensitively);
    /// `None` accepts any.
    pub token_types: Option<Vec<String>>,
    /// The issuer's keys.
    pub keys: Arc<KeyStore>,
    /// `binding: required`: tokens without `cnf` (sender constraint) are refused.
    pub binding_required: bool,
}

impl Issuer {
    /// Checks the token's algorithm and signature with this issuer's keys (fetching them
    /// again for an unknown `kid`, rate-limited); the key set generation it was checked with.
    pub async fn check_signature(&self, parsed: &token::Unverified<'_>) -> Result<u64, TokenError> {
        let alg = parsed.header.alg;
        if !self.algorithms.contains(&alg) {
            return Err(TokenError::AlgNotAllowed(alg.name().to_string()));
        }
        if !self.keys.is_loaded() {
            return Err(TokenError::KeysUnavailable);
        }
        let kid = parsed.header.kid.as_deref();
        let mut generation = self.keys.generation();
        let mut keys = self.keys.keys();
        if keys.find(kid, alg).is_none()
            && let Some(kid) = kid
            && self.keys.refresh_for_kid(kid).await
        {
            generation = self.keys.generation();
            keys = self.keys.keys();
        }
        let key = keys.find(kid, alg).ok_or(TokenError::UnknownKid)?;
        if key.algorithm != alg {
            return Err(TokenError::AlgMismatch);
        }
        if !key.verify(parsed.signing_input, &parsed.signature) {
            return Err(TokenError::BadSignature);
        }
        Ok(generation)
    }
}

/// Who is calling, as proven by a verified token.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    /// The issuer's configured name.
    pub issuer: Arc<str>,
    /// `sub`, when present.
    pub subject: Option<String>,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// All claims.
    pub claims: Claims,
}

/// Everything needed to turn a bearer token into a [`Principal`].
#[derive(Debug)]
pub struct Authenticator {
    issuers: Vec<Issuer>,
    introspector: Option<introspection::Introspector>,
    cache: TokenCache,
    revocations: Arc<Revocations>,
    max_token_bytes: usize,
    dpop: Option<Arc<dpop::Dpop>>,
}

impl Authenticator {
    /// Longest token accepted unless configured otherwise.
    pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8192;
    /// Verified tokens cached unless configured otherwise.
    pub const DEFAULT_CACHE_ENTRIES: usize = 16_384;

    /// An authenticator over these issuers.
    pub fn new(
        issuers: Vec<Issuer>,
        revocations: Arc<Revocations>,
        max_token_bytes: usize,
        cache_capacity: usize,
    ) -> Self {
        Authenticator {
            issuers,
            introspector: None,
            cache: TokenCache::new(cache_capacity),
            revocations,
            max_token_bytes,
            dpop: None,
        }
    }

    /// Accepts `Authorization: DPoP` with proofs checked by `dpop`.
    pub fn with_dpop(mut self, dpop: Arc<dpop::Dpop>) -> Self {
        self.dpop = Some(dpop);
        self
    }

    /// The DPoP rules, when DPoP is accepted.
    pub fn dpop(&self) -> Option<&Arc<dpop::Dpop>> {
        self.dpop.as_ref()
    }

    /// The algorithms the issuer named `name` allows (its tokens' DPoP proofs use them too).
    pub fn algorithms_of(&self, name: &str) -> &[Algorithm] {
        self.issuers
            .iter()
            .find(|i| &*i.name == name)
            .map_or(&[], |i| i.algorithms.as_slice())
    }

    /// Whether the issuer named `name` refuses tokens without `cnf`.
    pub fn binding_required(&self, name: &str) -> bool {
        self.issuers
            .iter()
            .any(|i| &*i.name == name && i.binding_required)
    }

    /// Checks opaque (non-JWT) tokens with this introspection endpoint.
    pub fn with_introspection(mut self, introspector: introspection::Introspector) -> Self {
        self.introspector = Some(introspector);
        self
    }

    /// Whether any token source (issuer or introspection) is configured.
    pub fn is_configured(&self) -> bool {
        !self.issuers.is_empty() || self.introspector.is_some()
    }

    /// The configured issuers.
    pub fn issuers(&self) -> &[Issuer] {
        &self.issuers
    }

    /// Verifies a token, fetching keys for an unknown `kid` when allowed, and checks
    /// revocation (which is never cached).
    pub async fn authenticate(&self, token: &str) -> Result<Arc<Principal>, TokenError> {
        let principal = self.verified(token).await?;
        check_revocation(&self.revocations, &principal).await?;
        Ok(principal)
    }

    /// As [`authenticate`](Self::authenticate), but a revocation lookup in a remote store
    /// (Redis) is returned unawaited, for the caller to wait for together with the request's
    /// other store lookups. The principal must not be trusted before it resolves to `Ok`.
    pub async fn authenticate_deferred(
        &self,
        token: &str,
    ) -> Result<(Arc<Principal>, Option<RevocationCheck>), TokenError> {
        let principal = self.verified(token).await?;
        if !matches!(*self.revocations, Revocations::Redis(_)) {
            check_revocation(&self.revocations, &principal).await?;
            return Ok((principal, None));
        }
        let revocations = self.revocations.clone();
        let checked = principal.clone();
        let check: RevocationCheck =
            Box::pin(async move { check_revocation(&revocations, &checked).await });
        Ok((principal, Some(check)))
    }

    /// The token's principal from the cache or verified now; revocation not checked.
    async fn verified(&self, token: &str) -> Result<Arc<Principal>, TokenError> {
        let now = now_secs();
        let is_jwt = token.bytes().filter(|b| *b == b'.').count() == 2;
        match (&self.introspector, is_jwt) {
            (Some(introspector), false) if token.len() <= self.max_token_bytes => {
                introspector.introspect(token).await
            }
            _ => match self.cache.get(token, now, |i| self.generation(i)) {
                Some(principal) => Ok(principal),
                None => self.verify(token, now).await,
            },
        }
    }

    fn generation(&self, issuer: usize) -> u64 {
        self.issuers
            .get(issuer)
            .map_or(u64::MAX, |i| i.keys.generation())
    }

    async fn verify(&self, token: &str, now: f64) -> Result<Arc<Principal>, TokenError> {
        let parsed = token::parse(token, self.max_token_bytes)?;
        let iss = parsed
            .claims
            .iss
            .as_deref()
            .ok_or(TokenError::MissingClaim("iss".into()))?;
        let (index, issuer) = self
            .issuers
            .iter()
            .enumerate()
            .find(|(_, i)| i.issuer == iss)
            .ok_or(TokenError::UnknownIssuer)?;
        let generation = issuer.check_signature(&parsed).await?;
        check_claims(issuer, &parsed.header, &parsed.claims, now)?;
        let claims = parsed.claims;
        let expires_at = claims.exp.unwrap_or(now);
        let principal = Arc::new(Principal {
            issuer: issuer.name.clone(),
            subject: claims.sub.clone(),
            scopes: claims.scopes.clone(),
            claims,
        });
        self.cache.insert(
            token,
            principal.clone(),
            expires_at + issuer.clock_skew.as_secs_f64(),
            index,
            generation,
        );
        Ok(principal)
    }
}

/// The time, audience, type and presence rules of one issuer.
pub fn check_claims(
    issuer: &Issuer,
    header: &token::Header,
    claims: &Claims,
    now: f64,
) -> Result<(), TokenError> {
    let skew = issuer.clock_skew.as_secs_f64();
    let exp = claims.exp.ok_or(TokenError::MissingClaim("exp".into()))?;
    if now > exp + skew {
        return Err(TokenError::Expired);
    }
    if claims.nbf.is_some_and(|nbf| nbf > now + skew) {
        return Err(TokenError::NotYetValid);
    }
    if claims.iat.is_some_and(|iat| iat > now + skew) {
        return Err(TokenError::IssuedInFuture);
    }
    let start = claims.iat.unwrap_or(now);
    if exp - start > issuer.max_lifetime.as_secs_f64() {
        return Err(TokenError::LifetimeTooLong);
    }
    if !claims.aud.iter().any(|a| issuer.audiences.contains(a)) {
        return Err(TokenError::WrongAudience);
    }
    for name in &issuer.required_claims {
        if !claims.all.contains_key(name) {
            return Err(TokenError::MissingClaim(name.clone()));
        }
    }
    if let Some(types) = &issuer.token_types {
        let typ = header.typ.as_deref().unwrap_or_default();
        let bare = |t: &str| {
            let t = t.trim();
            t.get(..12)
                .filter(|p| p.eq_ignore_ascii_case("application/"))
                .and_then(|_| t.get(12..))
                .unwrap_or(t)
                .to_ascii_lowercase()
        };
        if !types.iter().any(|t| bare(t) == bare(typ)) {
            return Err(TokenError::WrongType);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
