//! DPoP (RFC 9449): the proof a client sends with `Authorization: DPoP <token>` that it
//! holds the private half of the key its token is bound to (`cnf.jkt`), checked strictly —
//! one compact JWS of type `dpop+jwt`, an asymmetric algorithm, a public `jwk`, the method
//! and URL of this request, a fresh `iat`, the hash of this access token, and a `jti` never
//! seen before.

use super::keys::{Algorithm, KeyError, VerifyingKey};
use super::token::{self, TokenError};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Longest proof read.
const MAX_PROOF_BYTES: usize = 8192;
/// Longest `jti` remembered.
const MAX_JTI_BYTES: usize = 256;

/// How proofs are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpopSettings {
    /// How old (by `iat`) a proof may be.
    pub max_age: Duration,
    /// Tolerance for `iat` in the future (and beyond `max_age`).
    pub clock_skew: Duration,
}

/// The algorithms a proof may use, as the `algs` of a DPoP challenge (RFC 9449 §7.1): the
/// token issuer's list (every algorithm Portcullis verifies is asymmetric).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofAlgorithms(std::sync::Arc<str>);

impl ProofAlgorithms {
    /// The list of `algorithms`, space-separated.
    pub fn new(algorithms: &[Algorithm]) -> Self {
        let names: Vec<&str> = algorithms.iter().map(|a| a.name()).collect();
        ProofAlgorithms(names.join(" ").into())
    }

    /// The space-separated names.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The exact check a proof failed (the event's detail; the client sees `invalid_dpop_proof`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DpopError {
    /// `Authorization: DPoP` without a `DPoP` header.
    #[error("no DPoP proof")]
    Missing,
    /// More than one `DPoP` header.
    #[error("several DPoP proofs")]
    Multiple,
    /// Not a well-formed JWS, or a claim of the wrong type.
    #[error("malformed proof: {0}")]
    Malformed(String),
    /// `typ` is not `dpop+jwt`.
    #[error("the proof's typ is not dpop+jwt")]
    WrongType,
    /// `none`, a symmetric or an unlisted algorithm.
    #[error("proof algorithm `{0}` is not allowed")]
    AlgNotAllowed(String),
    /// No usable public `jwk` in the header.
    #[error("the proof's jwk is unusable: {0}")]
    BadJwk(String),
    /// The `jwk` carries private members.
    #[error("the proof's jwk carries private key members")]
    PrivateJwk,
    /// The signature does not verify with the `jwk`.
    #[error("the proof's signature does not verify")]
    BadSignature,
    /// `htm` is not this request's method.
    #[error("htm does not match the method")]
    HtmMismatch,
    /// `htu` is not this request's URL.
    #[error("htu does not match the request URL")]
    HtuMismatch,
    /// `iat` is older than `max_age` allows.
    #[error("the proof is too old")]
    Stale,
    /// `iat` is in the future.
    #[error("the proof is issued in the future")]
    Future,
    /// `ath` is missing or not the hash of this access token.
    #[error("ath does not match the access token")]
    AthMismatch,
    /// No (or an over-long) `jti`.
    #[error("the proof has no usable jti")]
    NoJti,
    /// This `jti` was accepted before.
    #[error("the proof was replayed")]
    Replayed,
    /// The proof's key is not the one the token is bound to.
    #[error("the proof's key is not the token's (cnf.jkt)")]
    KeyMismatch,
    /// The replay store could not be asked (fail closed).
    #[error("the replay store is unavailable")]
    StoreUnavailable,
    /// Server nonces are required and the proof has none, or a stale or foreign one; the
    /// client retries with this fresh nonce (`DPoP-Nonce`).
    #[error("the proof needs a fresh server nonce")]
    UseNonce(String),
}

impl DpopError {
    /// The name of the check in events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            DpopError::Missing => "dpop_missing",
            DpopError::Multiple => "dpop_multiple",
            DpopError::Malformed(_) => "dpop_malformed",
            DpopError::WrongType => "dpop_wrong_type",
            DpopError::AlgNotAllowed(_) => "dpop_alg_not_allowed",
            DpopError::BadJwk(_) => "dpop_bad_jwk",
            DpopError::PrivateJwk => "dpop_private_jwk",
            DpopError::BadSignature => "dpop_bad_signature",
            DpopError::HtmMismatch => "dpop_htm_mismatch",
            DpopError::HtuMismatch => "dpop_htu_mismatch",
            DpopError::Stale => "dpop_stale",
            DpopError::Future => "dpop_future",
            DpopError::AthMismatch => "dpop_ath_mismatch",
            DpopError::NoJti => "dpop_no_jti",
            DpopError::Replayed => "dpop_replayed",
            DpopError::KeyMismatch => "dpop_key_mismatch",
            DpopError::StoreUnavailable => "dpop_replay_store_unavailable",
            DpopError::UseNonce(_) => "dpop_nonce_required",
        }
    }
}

/// A proof that passed every check but the replay check.
#[derive(Debug, Clone, PartialEq)]
pub struct Proof {
    /// The RFC 7638 thumbprint of its key.
    pub jkt: String,
    /// Its `jti`.
    pub jti: String,
    /// Until when (Unix seconds) its `jti` must be remembered.
    pub remember_until: f64,
    /// Its server nonce, if it carries one.
    pub nonce: Option<String>,
}

/// The RFC 7638 SHA-256 thumbprint of a public JWK: its required members only, in
/// lexicographic order, without whitespace.
pub fn thumbprint(jwk: &Map<String, Value>) -> Option<String> {
    let text = |name: &str| jwk.get(name).and_then(Value::as_str);
    let members: Vec<(&str, &str)> = match text("kty")? {
        "EC" => vec![
            ("crv", text("crv")?),
            ("kty", "EC"),
            ("x", text("x")?),
            ("y", text("y")?),
        ],
        "RSA" => vec![("e", text("e")?), ("kty", "RSA"), ("n", text("n")?)],
        "OKP" => vec![("crv", text("crv")?), ("kty", "OKP"), ("x", text("x")?)],
        _ => return None,
    };
    // Written straight into one buffer: this runs on every DPoP request.
    let mut canonical = Vec::with_capacity(160);
    canonical.push(b'{');
    for (i, (name, value)) in members.iter().enumerate() {
        if i > 0 {
            canonical.push(b',');
        }
        serde_json::to_writer(&mut canonical, name).ok()?;
        canonical.push(b':');
        serde_json::to_writer(&mut canonical, value).ok()?;
    }
    canonical.push(b'}');
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &canonical);
    Some(URL_SAFE_NO_PAD.encode(digest.as_ref()))
}

/// base64url(SHA-256(`access_token`)): the `ath` a proof must carry.
pub fn ath(access_token: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, access_token.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// The request a proof must be for: its method, its URL (scheme, authority and path, no
/// query or fragment) and the access token it carries.
#[derive(Debug, Clone, Copy)]
pub struct ProofTarget<'a> {
    /// The request method.
    pub method: &'a str,
    /// The URL `htu` must name.
    pub htu: &'a str,
    /// The access token `ath` must hash.
    pub access_token: &'a str,
}

/// Checks `proof` for `target`, signed with one of `algorithms` (the token issuer's), at
/// `now` (Unix seconds).
pub fn verify(
    proof: &str,
    target: ProofTarget<'_>,
    algorithms: &[Algorithm],
    settings: &DpopSettings,
    now: f64,
) -> Result<Proof, DpopError> {
    let ProofTarget {
        method,
        htu,
        access_token,
    } = target;
    let parsed = token::parse_proof(proof, MAX_PROOF_BYTES).map_err(|e| match e {
        TokenError::AlgNone => DpopError::AlgNotAllowed("none".into()),
        TokenError::AlgNotAllowed(alg) => DpopError::AlgNotAllowed(alg),
        other => DpopError::Malformed(other.to_string()),
    })?;
    let (unverified, jwk) = parsed;
    let typ = unverified.header.typ.as_deref().unwrap_or_default();
    if !typ.eq_ignore_ascii_case("dpop+jwt") {
        return Err(DpopError::WrongType);
    }
    let alg = unverified.header.alg;
    if !algorithms.contains(&alg) {
        return Err(DpopError::AlgNotAllowed(alg.name().into()));
    }
    let key = proof_key(&jwk, alg)?;
    if !key.verify(unverified.signing_input, &unverified.signature) {
        return Err(DpopError::BadSignature);
    }
    let claims = &unverified.claims.all;
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    if text("htm") != Some(method) {
        return Err(DpopError::HtmMismatch);
    }
    if !text("htu").is_some_and(|given| same_url(given, htu)) {
        return Err(DpopError::HtuMismatch);
    }
    let iat = unverified
        .claims
        .iat
        .ok_or_else(|| DpopError::Malformed("no iat".into()))?;
    let skew = settings.clock_skew.as_secs_f64();
    if iat > now + skew {
        return Err(DpopError::Future);
    }
    if iat + settings.max_age.as_secs_f64() + skew < now {
        return Err(DpopError::Stale);
    }
    let expected = ath(access_token);
    if !text("ath")
        .is_some_and(|given| crate::secret::constant_time_eq(given.as_bytes(), expected.as_bytes()))
    {
        return Err(DpopError::AthMismatch);
    }
    let jti = text("jti")
        .filter(|j| !j.is_empty() && j.len() <= MAX_JTI_BYTES)
        .ok_or(DpopError::NoJti)?;
    let jkt = thumbprint(&jwk).ok_or_else(|| DpopError::BadJwk("no thumbprint".into()))?;
    Ok(Proof {
        jkt,
        jti: jti.to_string(),
        remember_until: iat + settings.max_age.as_secs_f64() + 2.0 * skew,
        nonce: text("nonce").map(str::to_string),
    })
}

/// The key a proof's header `jwk` names, for the proof's `alg` only.
pub(crate) fn proof_key(
    jwk: &Map<String, Value>,
    alg: Algorithm,
) -> Result<VerifyingKey, DpopError> {
    let key = VerifyingKey::from_jwk_members(jwk, &[alg]).map_err(|e| match e {
        KeyError::Private => DpopError::PrivateJwk,
        other => DpopError::BadJwk(other.to_string()),
    })?;
    if key.algorithm != alg {
        return Err(DpopError::AlgNotAllowed(alg.name().into()));
    }
    Ok(key)
}

/// RFC 9449 §4.3: `htu` compared without query and fragment, scheme and host
/// case-insensitively, a default port the same as none.
fn same_url(given: &str, expected: &str) -> bool {
    let normal = |url: &str| -> Option<(String, String, String)> {
        let url = url.split(['?', '#']).next()?;
        let (scheme, rest) = url.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let (authority, path) = match rest.find('/') {
            Some(i) => (rest.get(..i)?, rest.get(i..)?),
            None => (rest, "/"),
        };
        let authority = authority.to_ascii_lowercase();
        let authority = match (scheme.as_str(), authority.rsplit_once(':')) {
            ("https", Some((host, "443"))) | ("http", Some((host, "80"))) => host.to_string(),
            _ => authority,
        };
        Some((scheme, authority, path.to_string()))
    };
    matches!((normal(given), normal(expected)), (Some(a), Some(b)) if a == b)
}

/// Accepted proof ids, in this process: bounded, forgetting ids once their proofs expire.
#[derive(Debug)]
pub struct ReplayCache {
    seen: Mutex<HashMap<String, f64>>,
    capacity: usize,
}

impl ReplayCache {
    /// A cache of at most `capacity` ids.
    pub fn new(capacity: usize) -> Self {
        ReplayCache {
            seen: Mutex::default(),
            capacity,
        }
    }

    /// Records `jkt`'s `jti` until `until`; `false` if it was already there (a replay), or
    /// if the cache is full of live ids (fail closed rather than forget one).
    pub fn first_use(&self, jkt: &str, jti: &str, until: f64, now: f64) -> bool {
        let Ok(mut seen) = self.seen.lock() else {
            return false;
        };
        let key = format!("{jkt}:{jti}");
        if seen.get(&key).is_some_and(|t| *t >= now) {
            return false;
        }
        if seen.len() >= self.capacity {
            seen.retain(|_, t| *t >= now);
            if seen.len() >= self.capacity {
                return false;
            }
        }
        seen.insert(key, until);
        true
    }
}

/// Where accepted proof ids are remembered: this process, or the shared Redis (so a proof
/// replayed against another instance is refused too).
#[derive(Debug)]
pub enum ReplayStore {
    /// In memory, bounded.
    Memory(std::sync::Arc<ReplayCache>),
    /// `SET NX PX` on the rate-limit store's Redis (fails closed while it is down).
    Redis(std::sync::Arc<crate::ratelimit::store::Limiter>),
}

impl ReplayStore {
    /// Whether this is the first use of the proof (false for a replay); an error when the
    /// shared store cannot say.
    pub async fn first_use(&self, proof: &Proof, now: f64) -> Result<bool, DpopError> {
        match self {
            ReplayStore::Memory(cache) => {
                Ok(cache.first_use(&proof.jkt, &proof.jti, proof.remember_until, now))
            }
            ReplayStore::Redis(limiter) => {
                let redis = limiter.shared_store().ok_or(DpopError::StoreUnavailable)?;
                let millis = ((proof.remember_until - now).max(1.0) * 1000.0) as u64;
                // The hash tag keeps one key's proofs on one Cluster slot.
                redis
                    .set_new(
                        format!("portcullis:dpop:{{{}}}:{}", proof.jkt, ath(&proof.jti)),
                        millis,
                    )
                    .await
                    .map_err(|_| DpopError::StoreUnavailable)
            }
        }
    }
}

/// Stateless server nonces (RFC 9449 §8): base64url of a time step and an HMAC over it, so
/// any instance holding the key issues and accepts them, with no shared state. A nonce is
/// good for the step it was issued in and the next one (between one and two `max_age`).
pub struct NonceKey {
    key: aws_lc_rs::hmac::Key,
    step_secs: u64,
}

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceKey")
            .field("step_secs", &self.step_secs)
            .finish_non_exhaustive()
    }
}

/// Bytes of HMAC kept in a nonce.
const NONCE_MAC_BYTES: usize = 16;

impl NonceKey {
    /// A key from `secret` (at least 32 bytes), with steps of `step` (the proofs' `max_age`).
    pub fn new(secret: &[u8], step: Duration) -> Option<NonceKey> {
        (secret.len() >= 32).then(|| NonceKey {
            key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret),
            step_secs: step.as_secs().max(1),
        })
    }

    fn for_step(&self, step: u64) -> String {
        let tag = aws_lc_rs::hmac::sign(&self.key, &step.to_be_bytes());
        let mut bytes = step.to_be_bytes().to_vec();
        bytes.extend_from_slice(tag.as_ref().get(..NONCE_MAC_BYTES).unwrap_or_default());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The nonce to hand out at `now` (Unix seconds).
    pub fn issue(&self, now: f64) -> String {
        self.for_step(now.max(0.0) as u64 / self.step_secs)
    }

    /// Whether `nonce` was issued by this key in this step or the one before.
    pub fn accepts(&self, nonce: &str, now: f64) -> bool {
        let current = now.max(0.0) as u64 / self.step_secs;
        [current, current.saturating_sub(1)].iter().any(|step| {
            crate::secret::constant_time_eq(nonce.as_bytes(), self.for_step(*step).as_bytes())
        })
    }
}

/// DPoP at this gateway: the proof rules, the replay store, and server nonces if required.
#[derive(Debug)]
pub struct Dpop {
    /// The proof rules.
    pub settings: DpopSettings,
    /// Where proof ids are remembered.
    pub replay: ReplayStore,
    /// Server nonces (`nonce_key`), when required.
    pub nonces: Option<NonceKey>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authn::sign::SigningKey;
    use serde_json::json;

    fn settings() -> DpopSettings {
        DpopSettings {
            max_age: Duration::from_secs(60),
            clock_skew: Duration::from_secs(5),
        }
    }

    const ALGS: &[Algorithm] = &[Algorithm::Es256, Algorithm::EdDsa, Algorithm::Ps256];

    fn to<'a>(htu: &'a str, at: &'a str) -> ProofTarget<'a> {
        ProofTarget {
            method: "GET",
            htu,
            access_token: at,
        }
    }

    fn proof(key: &SigningKey, claims: Value, header: Value) -> String {
        let mut extra = Map::new();
        extra.insert("jwk".into(), key.public_jwk());
        for (k, v) in header.as_object().cloned().unwrap_or_default() {
            extra.insert(k, v);
        }
        let mut signed = key
            .sign(claims.as_object().unwrap(), "dpop+jwt", &extra)
            .unwrap();
        if let Some(typ) = header.get("typ").and_then(Value::as_str) {
            // Re-sign with another typ (the signer puts its own first).
            let mut extra = extra.clone();
            extra.remove("typ");
            signed = key.sign(claims.as_object().unwrap(), typ, &extra).unwrap();
        }
        signed
    }

    #[test]
    fn rfc7638_thumbprint_vector() {
        // RFC 7638 §3.1.
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"
        });
        assert_eq!(
            thumbprint(jwk.as_object().unwrap()).as_deref(),
            Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
        );
    }

    #[test]
    fn every_check_refuses_what_it_should() {
        let (key, _) = SigningKey::generate_es256("c").unwrap();
        let now = 1_000_000.0;
        let at = "the-access-token";
        let good = || json!({"htm": "GET", "htu": "https://api.test/items", "iat": now, "jti": "j1", "ath": ath(at)});
        let check = |claims: Value, header: Value| {
            verify(
                &proof(&key, claims, header),
                to("https://API.test:443/items?x=1", at),
                ALGS,
                &settings(),
                now,
            )
        };
        let accepted = check(good(), json!({})).unwrap();
        assert_eq!(
            Some(accepted.jkt),
            thumbprint(key.public_jwk().as_object().unwrap())
        );
        let with = |name: &str, value: Value| {
            let mut claims = good();
            claims[name] = value;
            claims
        };
        assert_eq!(
            check(with("htm", json!("POST")), json!({})),
            Err(DpopError::HtmMismatch)
        );
        assert_eq!(
            check(with("htu", json!("https://api.test/other")), json!({})),
            Err(DpopError::HtuMismatch)
        );
        assert_eq!(
            check(with("iat", json!(now - 100.0)), json!({})),
            Err(DpopError::Stale)
        );
        assert_eq!(
            check(with("iat", json!(now + 100.0)), json!({})),
            Err(DpopError::Future)
        );
        assert_eq!(
            check(with("ath", json!(ath("another"))), json!({})),
            Err(DpopError::AthMismatch)
        );
        assert_eq!(
            check(with("jti", json!("")), json!({})),
            Err(DpopError::NoJti)
        );
        assert_eq!(
            check(good(), json!({"typ": "JWT"})),
            Err(DpopError::WrongType)
        );
        // A private jwk.
        let mut private = key.public_jwk();
        private["d"] = json!("AAAA");
        assert_eq!(
            check(good(), json!({"jwk": private})),
            Err(DpopError::PrivateJwk)
        );
        // A foreign key: the jwk is not the signer's.
        let (other, _) = SigningKey::generate_es256("o").unwrap();
        assert_eq!(
            check(good(), json!({"jwk": other.public_jwk()})),
            Err(DpopError::BadSignature)
        );
        // alg none and HS256 never verify a proof.
        let unsigned = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(
                json!({"alg": "none", "typ": "dpop+jwt", "jwk": key.public_jwk()}).to_string()
            ),
            URL_SAFE_NO_PAD.encode(good().to_string())
        );
        assert!(matches!(
            verify(
                &unsigned,
                to("https://api.test/items", at),
                ALGS,
                &settings(),
                now
            ),
            Err(DpopError::AlgNotAllowed(_))
        ));
        let hs = format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(
                json!({"alg": "HS256", "typ": "dpop+jwt", "jwk": key.public_jwk()}).to_string()
            ),
            URL_SAFE_NO_PAD.encode(good().to_string())
        );
        assert!(matches!(
            verify(
                &hs,
                to("https://api.test/items", at),
                ALGS,
                &settings(),
                now
            ),
            Err(DpopError::AlgNotAllowed(_))
        ));
        assert!(matches!(
            verify(
                "not-a-jws",
                to("https://api.test/items", at),
                ALGS,
                &settings(),
                now
            ),
            Err(DpopError::Malformed(_))
        ));
        // Only the issuer's algorithms: an ES256 proof for an RS256-only issuer.
        assert_eq!(
            verify(
                &proof(&key, good(), json!({})),
                to("https://api.test/items", at),
                &[Algorithm::Rs256],
                &settings(),
                now
            ),
            Err(DpopError::AlgNotAllowed("ES256".into()))
        );
        assert_eq!(ProofAlgorithms::new(ALGS).as_str(), "ES256 EdDSA PS256");
    }

    #[test]
    fn nonces_are_accepted_for_two_steps_by_any_holder_of_the_key() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let (a, b) = (
            NonceKey::new(secret, Duration::from_secs(60)).unwrap(),
            NonceKey::new(secret, Duration::from_secs(60)).unwrap(),
        );
        let nonce = a.issue(6000.0);
        assert!(b.accepts(&nonce, 6000.0));
        assert!(b.accepts(&nonce, 6119.0));
        assert!(!b.accepts(&nonce, 6120.0), "stale");
        let other = NonceKey::new(
            b"another-key-0123456789abcdef-0123",
            Duration::from_secs(60),
        )
        .unwrap();
        assert!(!other.accepts(&nonce, 6000.0), "foreign");
        assert!(NonceKey::new(b"short", Duration::from_secs(60)).is_none());
    }

    #[test]
    fn replays_are_refused_until_the_proof_expires() {
        let cache = ReplayCache::new(2);
        assert!(cache.first_use("k", "a", 10.0, 1.0));
        assert!(!cache.first_use("k", "a", 10.0, 2.0));
        assert!(cache.first_use("other-key", "a", 10.0, 2.0));
        // Full of live ids: refused (never forgotten early).
        assert!(!cache.first_use("k", "b", 10.0, 3.0));
        // Once expired they make room.
        assert!(cache.first_use("k", "b", 30.0, 11.0));
    }
}
