//! Verification keys from JWKs, each pinned to exactly one algorithm.

use aws_lc_rs::signature::{self, ParsedPublicKey, VerificationAlgorithm};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use std::fmt;

/// The signature algorithms Portcullis verifies. Symmetric (`HS*`) and `none` do not exist
/// here, so they can never be selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// ECDSA P-256 with SHA-256, raw `r || s` signature.
    Es256,
    /// ECDSA P-384 with SHA-384, raw `r || s` signature.
    Es384,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// RSASSA-PSS with SHA-256.
    Ps256,
    /// Ed25519.
    EdDsa,
}

impl Algorithm {
    /// Parses a JOSE `alg` name (exact spelling).
    pub fn from_name(name: &str) -> Option<Algorithm> {
        match name {
            "ES256" => Some(Algorithm::Es256),
            "ES384" => Some(Algorithm::Es384),
            "RS256" => Some(Algorithm::Rs256),
            "PS256" => Some(Algorithm::Ps256),
            "EdDSA" => Some(Algorithm::EdDsa),
            _ => None,
        }
    }

    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Es256 => "ES256",
            Algorithm::Es384 => "ES384",
            Algorithm::Rs256 => "RS256",
            Algorithm::Ps256 => "PS256",
            Algorithm::EdDsa => "EdDSA",
        }
    }

    fn verification(self) -> &'static dyn VerificationAlgorithm {
        match self {
            Algorithm::Es256 => &signature::ECDSA_P256_SHA256_FIXED,
            Algorithm::Es384 => &signature::ECDSA_P384_SHA384_FIXED,
            // The 2048-bit floor is part of these parameters: smaller keys never verify.
            Algorithm::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Algorithm::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
            Algorithm::EdDsa => &signature::ED25519,
        }
    }

    /// The exact signature length, where the algorithm fixes one.
    fn signature_len(self) -> Option<usize> {
        match self {
            Algorithm::Es256 => Some(64),
            Algorithm::Es384 => Some(96),
            Algorithm::EdDsa => Some(64),
            Algorithm::Rs256 | Algorithm::Ps256 => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A public key, parsed once, that verifies signatures of exactly one algorithm.
pub struct VerifyingKey {
    /// The JWK's `kid`, if it had one.
    pub kid: Option<String>,
    /// The one algorithm this key verifies.
    pub algorithm: Algorithm,
    key: ParsedPublicKey,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// Why a JWK was not accepted as a verification key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A required member is missing or of the wrong type.
    #[error("member `{0}` is missing or not a string")]
    Missing(&'static str),
    /// The key type or curve is not supported.
    #[error("unsupported key type or curve `{0}`")]
    Unsupported(String),
    /// The key carries private material; a key set must only hold public keys.
    #[error("the key contains private material")]
    Private,
    /// `use` is present and is not `sig`.
    #[error("the key is not for signatures (use = {0})")]
    NotForSignatures(String),
    /// Neither the JWK nor the issuer's configuration pins one algorithm.
    #[error(
        "no single algorithm can be pinned to this key (set `alg` on the JWK or allow only one algorithm for its type)"
    )]
    NoAlgorithm,
    /// The JWK's `alg` is not allowed for the issuer or does not fit the key.
    #[error("algorithm `{0}` is not allowed for this key")]
    AlgorithmNotAllowed(String),
    /// RSA modulus under 2048 bits.
    #[error("RSA key of {0} bits is under the 2048-bit minimum")]
    RsaTooShort(usize),
    /// The key material is malformed.
    #[error("malformed key material")]
    Malformed,
}

fn member<'a>(jwk: &'a Map<String, Value>, name: &'static str) -> Result<&'a str, KeyError> {
    jwk.get(name)
        .and_then(Value::as_str)
        .ok_or(KeyError::Missing(name))
}

fn b64(jwk: &Map<String, Value>, name: &'static str) -> Result<Vec<u8>, KeyError> {
    URL_SAFE_NO_PAD
        .decode(member(jwk, name)?)
        .map_err(|_| KeyError::Malformed)
}

impl VerifyingKey {
    /// Builds a key from one JWK, pinning its algorithm: the JWK's `alg` if present (it must
    /// be in `allowed`), else the only algorithm in `allowed` that fits the key type.
    pub fn from_jwk(jwk: &Value, allowed: &[Algorithm]) -> Result<VerifyingKey, KeyError> {
        Self::from_jwk_members(jwk.as_object().ok_or(KeyError::Malformed)?, allowed)
    }

    /// [`VerifyingKey::from_jwk`] for a JWK already read as an object (a DPoP proof's).
    pub fn from_jwk_members(
        jwk: &Map<String, Value>,
        allowed: &[Algorithm],
    ) -> Result<VerifyingKey, KeyError> {
        if ["d", "p", "q", "dp", "dq", "qi", "k"]
            .iter()
            .any(|m| jwk.contains_key(*m))
        {
            return Err(KeyError::Private);
        }
        if let Some(usage) = jwk.get("use") {
            let usage = usage.as_str().unwrap_or_default();
            if usage != "sig" {
                return Err(KeyError::NotForSignatures(usage.to_string()));
            }
        }
        let kty = member(jwk, "kty")?;
        let (fits, material): (Vec<Algorithm>, Vec<u8>) = match kty {
            "EC" => {
                let crv = member(jwk, "crv")?;
                let (alg, size) = match crv {
                    "P-256" => (Algorithm::Es256, 32),
                    "P-384" => (Algorithm::Es384, 48),
                    other => return Err(KeyError::Unsupported(format!("EC {other}"))),
                };
                let (x, y) = (b64(jwk, "x")?, b64(jwk, "y")?);
                if x.len() != size || y.len() != size {
                    return Err(KeyError::Malformed);
                }
                let mut point = Vec::with_capacity(1 + 2 * size);
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                (vec![alg], point)
            }
            "RSA" => {
                let (n, e) = (b64(jwk, "n")?, b64(jwk, "e")?);
                let bits = bit_length(&n);
                if bits < 2048 {
                    return Err(KeyError::RsaTooShort(bits));
                }
                (
                    vec![Algorithm::Rs256, Algorithm::Ps256],
                    rsa_public_key_der(&n, &e),
                )
            }
            "OKP" => {
                let crv = member(jwk, "crv")?;
                if crv != "Ed25519" {
                    return Err(KeyError::Unsupported(format!("OKP {crv}")));
                }
                let x = b64(jwk, "x")?;
                if x.len() != 32 {
                    return Err(KeyError::Malformed);
                }
                (vec![Algorithm::EdDsa], x)
            }
            other => return Err(KeyError::Unsupported(other.to_string())),
        };
        let algorithm = match jwk.get("alg") {
            Some(alg) => {
                let name = alg.as_str().unwrap_or_default();
                match Algorithm::from_name(name) {
                    Some(a) if fits.contains(&a) && allowed.contains(&a) => a,
                    _ => return Err(KeyError::AlgorithmNotAllowed(name.to_string())),
                }
            }
            None => {
                let mut candidates = fits.iter().filter(|a| allowed.contains(a));
                match (candidates.next(), candidates.next()) {
                    (Some(a), None) => *a,
                    _ => return Err(KeyError::NoAlgorithm),
                }
            }
        };
        let key = ParsedPublicKey::new(algorithm.verification(), material)
            .map_err(|_| KeyError::Malformed)?;
        Ok(VerifyingKey {
            kid: jwk.get("kid").and_then(Value::as_str).map(str::to_string),
            algorithm,
            key,
        })
    }

    /// Whether `signature` is this key's valid signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        if self
            .algorithm
            .signature_len()
            .is_some_and(|len| len != signature.len())
        {
            return false;
        }
        self.key.verify_sig(message, signature).is_ok()
    }
}

fn bit_length(n: &[u8]) -> usize {
    let trimmed: Vec<u8> = n.iter().copied().skip_while(|b| *b == 0).collect();
    match trimmed.first() {
        Some(first) => (trimmed.len() - 1) * 8 + (8 - first.leading_zeros() as usize),
        None => 0,
    }
}

/// DER `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }` (RFC 8017).
fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    let mut body = der_unsigned_integer(n);
    body.extend(der_unsigned_integer(e));
    let mut out = vec![0x30];
    out.extend(der_length(body.len()));
    out.extend(body);
    out
}

fn der_unsigned_integer(bytes: &[u8]) -> Vec<u8> {
    let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    // A set high bit would read as negative: prefix a zero byte.
    if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend(trimmed);
    let mut out = vec![0x02];
    out.extend(der_length(content.len()));
    out.extend(content);
    out
}

fn der_length(len: usize) -> Vec<u8> {
    if len < 0x80 {
        return vec![len as u8];
    }
    let bytes: Vec<u8> = len
        .to_be_bytes()
        .iter()
        .copied()
        .skip_while(|b| *b == 0)
        .collect();
    let mut out = vec![0x80 | bytes.len() as u8];
    out.extend(bytes);
    out
}

/// Every verification key of one issuer.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<VerifyingKey>,
}

/// A key set document with the keys that were skipped and why.
#[derive(Debug, Default)]
pub struct ParsedKeySet {
    /// The usable keys.
    pub keys: KeySet,
    /// `(kid or index, reason)` for every key that was not usable.
    pub skipped: Vec<(String, KeyError)>,
}

/// Most keys read from one JWKS document.
const MAX_KEYS: usize = 64;

impl KeySet {
    /// Parses a JWKS document (`{"keys": [...]}`), keeping the keys usable with `allowed`.
    pub fn from_jwks(document: &Value, allowed: &[Algorithm]) -> Result<ParsedKeySet, KeyError> {
        let keys = document
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(KeyError::Missing("keys"))?;
        let mut parsed = ParsedKeySet::default();
        for (i, jwk) in keys.iter().take(MAX_KEYS).enumerate() {
            match VerifyingKey::from_jwk(jwk, allowed) {
                Ok(key) => parsed.keys.keys.push(key),
                Err(e) => {
                    let name = jwk
                        .get("kid")
                        .and_then(Value::as_str)
                        .map_or_else(|| format!("#{i}"), str::to_string);
                    parsed.skipped.push((name, e));
                }
            }
        }
        Ok(parsed)
    }

    /// The key for a token: by `kid`, or, without one, the only key of the token's algorithm.
    pub fn find(&self, kid: Option<&str>, algorithm: Algorithm) -> Option<&VerifyingKey> {
        match kid {
            Some(kid) => self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            None => {
                let mut matching = self.keys.iter().filter(|k| k.algorithm == algorithm);
                match (matching.next(), matching.next()) {
                    (Some(key), None) => Some(key),
                    _ => None,
                }
            }
        }
    }

    /// Whether the set has a key with this `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// How many keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_encoding_of_small_integers() {
        assert_eq!(
            der_unsigned_integer(&[0x01, 0x00, 0x01]),
            vec![0x02, 0x03, 0x01, 0x00, 0x01]
        );
        assert_eq!(der_unsigned_integer(&[0x80]), vec![0x02, 0x02, 0x00, 0x80]);
        assert_eq!(der_length(300), vec![0x82, 0x01, 0x2c]);
    }

    #[test]
    fn key_without_pinnable_algorithm_is_refused() {
        let jwk = serde_json::json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode([0xffu8; 256]), "e": "AQAB"});
        let both = [Algorithm::Rs256, Algorithm::Ps256];
        assert_eq!(
            VerifyingKey::from_jwk(&jwk, &both).err(),
            Some(KeyError::NoAlgorithm)
        );
        assert!(VerifyingKey::from_jwk(&jwk, &[Algorithm::Rs256]).is_ok());
        let short = serde_json::json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode([0xffu8; 128]), "e": "AQAB", "alg": "RS256"});
        assert_eq!(
            VerifyingKey::from_jwk(&short, &both).err(),
            Some(KeyError::RsaTooShort(1024))
        );
        let private =
            serde_json::json!({"kty": "EC", "crv": "P-256", "x": "a", "y": "b", "d": "c"});
        assert_eq!(
            VerifyingKey::from_jwk(&private, &[Algorithm::Es256]).err(),
            Some(KeyError::Private)
        );
    }
}
