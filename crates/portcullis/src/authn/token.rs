//! Strict parsing of a JWS compact token and of its claims, before any key is involved.

use super::keys::Algorithm;
use crate::json::{JsonLimits, parse_strict};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

/// Why a token was refused. The variant names the exact check for the security event; the
/// client only ever sees a generic 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Longer than `max_token_bytes`.
    #[error("token over the size limit")]
    TooLarge,
    /// Five segments: an encrypted JWE, which is not accepted.
    #[error("encrypted (JWE) tokens are not accepted")]
    Jwe,
    /// Not three base64url segments of JSON.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// Padding, stray characters or non-zero trailing bits in base64url.
    #[error("non-canonical base64url")]
    NonCanonicalBase64,
    /// A JSON object in the token has a key twice.
    #[error("duplicate key in the {0}")]
    DuplicateKey(&'static str),
    /// `alg: none` in any spelling.
    #[error("unsigned token (alg none)")]
    AlgNone,
    /// An algorithm that is unknown, symmetric, or not allowed for the issuer.
    #[error("algorithm `{0}` is not allowed")]
    AlgNotAllowed(String),
    /// The header's `alg` differs from the key's pinned algorithm.
    #[error("algorithm does not match the key")]
    AlgMismatch,
    /// A `crit` header: no extension is understood, so every critical one is refused.
    #[error("critical header extensions are not supported")]
    Crit,
    /// `b64` header (RFC 7797 unencoded payload).
    #[error("unencoded payloads are not accepted")]
    B64,
    /// The token names or embeds its own key (`jwk`, `jku`, `x5u`, `x5c`).
    #[error("token-supplied keys are never used")]
    EmbeddedKey,
    /// `cty: JWT`: a nested token.
    #[error("nested tokens are not accepted")]
    Nested,
    /// A claim or header member has the wrong JSON type.
    #[error("claim `{0}` has the wrong type")]
    ClaimType(String),
    /// `iss` names no configured issuer.
    #[error("unknown issuer")]
    UnknownIssuer,
    /// No key with this `kid` (after a refresh, where allowed).
    #[error("unknown key id")]
    UnknownKid,
    /// The issuer's keys are not available yet.
    #[error("signing keys unavailable")]
    KeysUnavailable,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `exp` has passed (beyond the clock skew).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the clock skew).
    #[error("token not yet valid")]
    NotYetValid,
    /// `iat` is in the future (beyond the clock skew).
    #[error("token issued in the future")]
    IssuedInFuture,
    /// `exp - iat` exceeds `max_lifetime`.
    #[error("token lifetime too long")]
    LifetimeTooLong,
    /// None of the token's audiences is accepted.
    #[error("wrong audience")]
    WrongAudience,
    /// A required claim is absent.
    #[error("missing claim `{0}`")]
    MissingClaim(String),
    /// `typ` is not one of the accepted token types.
    #[error("wrong token type")]
    WrongType,
    /// Revoked by `jti` or by subject.
    #[error("token revoked")]
    Revoked,
    /// The introspection endpoint says the opaque token is not active.
    #[error("token not active")]
    Inactive,
    /// The revocation store could not be asked (fail closed); the store's error, for the
    /// event.
    #[error("{0}")]
    RevocationUnavailable(String),
    /// The introspection endpoint could not be asked (fail closed).
    #[error("introspection failed")]
    IntrospectionFailed,
}

impl TokenError {
    /// The reason recorded in the `auth_failure` event.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::TooLarge => "token_too_large",
            TokenError::Jwe => "jwe_not_accepted",
            TokenError::Malformed(_) => "malformed_token",
            TokenError::NonCanonicalBase64 => "non_canonical_base64",
            TokenError::DuplicateKey(_) => "duplicate_key",
            TokenError::AlgNone => "alg_none",
            TokenError::AlgNotAllowed(_) => "alg_not_allowed",
            TokenError::AlgMismatch => "alg_mismatch",
            TokenError::Crit => "crit_not_supported",
            TokenError::B64 => "b64_not_supported",
            TokenError::EmbeddedKey => "embedded_key",
            TokenError::Nested => "nested_token",
            TokenError::ClaimType(_) => "invalid_claim_type",
            TokenError::UnknownIssuer => "unknown_issuer",
            TokenError::UnknownKid => "unknown_kid",
            TokenError::KeysUnavailable => "jwks_unavailable",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "token_expired",
            TokenError::NotYetValid => "token_not_yet_valid",
            TokenError::IssuedInFuture => "iat_in_future",
            TokenError::LifetimeTooLong => "lifetime_too_long",
            TokenError::WrongAudience => "wrong_audience",
            TokenError::MissingClaim(_) => "missing_claim",
            TokenError::WrongType => "wrong_token_type",
            TokenError::Revoked => "revoked",
            TokenError::Inactive => "inactive_token",
            TokenError::IntrospectionFailed => "introspection_unavailable",
            TokenError::RevocationUnavailable(_) => "revocation_unavailable",
        }
    }
}

/// The protected header, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The declared algorithm (one Portcullis supports).
    pub alg: Algorithm,
    /// The key id, if any.
    pub kid: Option<String>,
    /// The token type, if any.
    pub typ: Option<String>,
}

/// The claims Portcullis reads, typed, plus the whole claim set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Claims {
    /// `iss`.
    pub iss: Option<String>,
    /// `sub`.
    pub sub: Option<String>,
    /// `aud`, as a list.
    pub aud: Vec<String>,
    /// `exp`, seconds since the epoch.
    pub exp: Option<f64>,
    /// `nbf`.
    pub nbf: Option<f64>,
    /// `iat`.
    pub iat: Option<f64>,
    /// `jti`.
    pub jti: Option<String>,
    /// Scopes from `scope` (space-separated) or `scp` (array).
    pub scopes: Vec<String>,
    /// `amr`.
    pub amr: Vec<String>,
    /// `acr`.
    pub acr: Option<String>,
    /// Every claim as sent.
    pub all: Map<String, Value>,
}

/// A parsed, not yet verified token.
#[derive(Debug)]
pub struct Unverified<'a> {
    /// The checked header.
    pub header: Header,
    /// The typed claims.
    pub claims: Claims,
    /// `header.payload`, the bytes the signature covers.
    pub signing_input: &'a [u8],
    /// The decoded signature.
    pub signature: Vec<u8>,
}

/// Bounds on the JSON inside a token.
const TOKEN_JSON: JsonLimits = JsonLimits {
    max_depth: 8,
    max_string_bytes: 8192,
};

fn decode(segment: &str) -> Result<Vec<u8>, TokenError> {
    // The engine refuses padding and non-zero trailing bits: one token, one encoding.
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| TokenError::NonCanonicalBase64)
}

fn object(bytes: &[u8], part: &'static str) -> Result<Map<String, Value>, TokenError> {
    match parse_strict(bytes, TOKEN_JSON) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(TokenError::Malformed("not a JSON object")),
        Err(crate::json::JsonError::DuplicateKey) => Err(TokenError::DuplicateKey(part)),
        Err(_) => Err(TokenError::Malformed("invalid JSON")),
    }
}

/// Parses a compact JWS and checks everything that needs no key.
pub fn parse(token: &str, max_bytes: usize) -> Result<Unverified<'_>, TokenError> {
    parse_parts(token, max_bytes, false).map(|(parsed, _)| parsed)
}

/// Parses a DPoP proof (RFC 9449): as [`parse`], except that the header must carry the
/// public `jwk` it is signed with, which is returned (the only embedded key ever read, and
/// only to check the proof itself).
pub fn parse_proof(
    token: &str,
    max_bytes: usize,
) -> Result<(Unverified<'_>, Map<String, Value>), TokenError> {
    let (parsed, jwk) = parse_parts(token, max_bytes, true)?;
    Ok((parsed, jwk.ok_or(TokenError::Malformed("no jwk"))?))
}

fn parse_parts(
    token: &str,
    max_bytes: usize,
    take_jwk: bool,
) -> Result<(Unverified<'_>, Option<Map<String, Value>>), TokenError> {
    if token.len() > max_bytes {
        return Err(TokenError::TooLarge);
    }
    let segments: Vec<&str> = token.split('.').collect();
    let [header_b64, payload_b64, signature_b64] = segments.as_slice() else {
        return Err(if segments.len() == 5 {
            TokenError::Jwe
        } else {
            TokenError::Malformed("not three segments")
        });
    };
    let mut header = object(&decode(header_b64)?, "header")?;
    let jwk = match header.remove("jwk") {
        Some(Value::Object(jwk)) if take_jwk => Some(jwk),
        Some(_) if take_jwk => return Err(TokenError::Malformed("jwk is not an object")),
        // An access token never brings its own key.
        Some(_) => return Err(TokenError::EmbeddedKey),
        None => None,
    };
    let header = check_header(&header)?;
    let claims = claims_of(object(&decode(payload_b64)?, "payload")?)?;
    let signature = decode(signature_b64)?;
    let signing_len = header_b64.len() + 1 + payload_b64.len();
    let signing_input = token
        .as_bytes()
        .get(..signing_len)
        .ok_or(TokenError::Malformed("truncated"))?;
    Ok((
        Unverified {
            header,
            claims,
            signing_input,
            signature,
        },
        jwk,
    ))
}

fn optional_string(map: &Map<String, Value>, name: &str) -> Result<Option<String>, TokenError> {
    match map.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(TokenError::ClaimType(name.to_string())),
    }
}

fn check_header(header: &Map<String, Value>) -> Result<Header, TokenError> {
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg,
        Some(_) => return Err(TokenError::ClaimType("alg".into())),
        None => return Err(TokenError::Malformed("no alg")),
    };
    if alg.eq_ignore_ascii_case("none") {
        return Err(TokenError::AlgNone);
    }
    if header.contains_key("crit") {
        return Err(TokenError::Crit);
    }
    if header.contains_key("b64") {
        return Err(TokenError::B64);
    }
    if ["jwk", "jku", "x5u", "x5c"]
        .iter()
        .any(|k| header.contains_key(*k))
    {
        return Err(TokenError::EmbeddedKey);
    }
    if let Some(cty) = optional_string(header, "cty")?
        && cty.eq_ignore_ascii_case("jwt")
    {
        return Err(TokenError::Nested);
    }
    let alg = Algorithm::from_name(alg).ok_or_else(|| TokenError::AlgNotAllowed(alg.clone()))?;
    Ok(Header {
        alg,
        kid: optional_string(header, "kid")?,
        typ: optional_string(header, "typ")?,
    })
}

fn number(map: &Map<String, Value>, name: &str) -> Result<Option<f64>, TokenError> {
    match map.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|v| v.is_finite())
            .map(Some)
            .ok_or_else(|| TokenError::ClaimType(name.to_string())),
        Some(_) => Err(TokenError::ClaimType(name.to_string())),
    }
}

fn strings(value: &Value, name: &str) -> Result<Vec<String>, TokenError> {
    match value {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| TokenError::ClaimType(name.to_string()))
            })
            .collect(),
        _ => Err(TokenError::ClaimType(name.to_string())),
    }
}

/// Types the claims Portcullis reads; a claim of the wrong type is an error, never ignored.
pub fn claims_of(all: Map<String, Value>) -> Result<Claims, TokenError> {
    let mut scopes = Vec::new();
    match all.get("scope") {
        Some(Value::String(s)) => scopes.extend(s.split_whitespace().map(str::to_string)),
        Some(_) => return Err(TokenError::ClaimType("scope".into())),
        None => {}
    }
    if let Some(scp) = all.get("scp") {
        scopes.extend(
            strings(scp, "scp")?
                .into_iter()
                .flat_map(|s| s.split_whitespace().map(str::to_string).collect::<Vec<_>>()),
        );
    }
    Ok(Claims {
        iss: optional_string(&all, "iss")?,
        sub: optional_string(&all, "sub")?,
        aud: all
            .get("aud")
            .map(|a| strings(a, "aud"))
            .transpose()?
            .unwrap_or_default(),
        exp: number(&all, "exp")?,
        nbf: number(&all, "nbf")?,
        iat: number(&all, "iat")?,
        jti: optional_string(&all, "jti")?,
        scopes,
        amr: all
            .get("amr")
            .map(|a| strings(a, "amr"))
            .transpose()?
            .unwrap_or_default(),
        acr: optional_string(&all, "acr")?,
        all,
    })
}
