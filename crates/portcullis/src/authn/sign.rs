//! Signing tokens: for `portcullis token`, the demo's dev key, and tests. The gateway
//! itself never signs anything it then trusts.

use super::keys::Algorithm;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};

enum Inner {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
    Rsa(RsaKeyPair, Algorithm),
}

/// A private key that signs JWTs with one algorithm.
pub struct SigningKey {
    /// The key id written into token headers and the public JWK.
    pub kid: String,
    inner: Inner,
}

/// Why a private key could not be loaded or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The text is neither a supported JWK nor a PKCS#8 PEM private key.
    #[error("not a supported private key ({0})")]
    Unsupported(String),
    /// The key material was refused.
    #[error("the private key was rejected: {0}")]
    Rejected(String),
}

fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn rejected(e: impl std::fmt::Display) -> SignError {
    SignError::Rejected(e.to_string())
}

impl SigningKey {
    /// A fresh ES256 key, and its PKCS#8 PEM (to hand to `portcullis token --key`).
    pub fn generate_es256(kid: &str) -> Result<(SigningKey, String), SignError> {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).map_err(rejected)?;
        let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref()).map_err(rejected)?;
        let body = STANDARD.encode(pkcs8.as_ref());
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .filter_map(|c| std::str::from_utf8(c).ok())
            .collect();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            lines.join("\n")
        );
        let key = SigningKey {
            kid: kid.to_string(),
            inner: Inner::Ecdsa(pair),
        };
        Ok((key, pem))
    }

    /// Loads a private key from a JWK (EC P-256 / P-384 or Ed25519, with `d`) or from a
    /// PKCS#8 PEM (EC, Ed25519, or RSA — RSA signs `rsa_alg`, RS256 unless told PS256).
    pub fn from_text(
        text: &str,
        kid: Option<&str>,
        rsa_alg: Algorithm,
    ) -> Result<SigningKey, SignError> {
        let text = text.trim();
        if text.starts_with('{') {
            let jwk: Value = serde_json::from_str(text)
                .map_err(|e| SignError::Unsupported(format!("bad JWK: {e}")))?;
            return SigningKey::from_jwk(&jwk, kid);
        }
        let der = pem_body(text)
            .ok_or_else(|| SignError::Unsupported("expected a JWK or a PEM PRIVATE KEY".into()))?;
        let kid = kid.unwrap_or("portcullis-cli").to_string();
        let inner = if let Ok(p) =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &der)
        {
            Inner::Ecdsa(p)
        } else if let Ok(p) =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, &der)
        {
            Inner::Ecdsa(p)
        } else if let Ok(p) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der) {
            Inner::Ed25519(p)
        } else if let Ok(p) = RsaKeyPair::from_pkcs8(&der) {
            Inner::Rsa(p, rsa_alg)
        } else {
            return Err(SignError::Unsupported("unrecognised PKCS#8 key".into()));
        };
        Ok(SigningKey { kid, inner })
    }

    fn from_jwk(jwk: &Value, kid: Option<&str>) -> Result<SigningKey, SignError> {
        let field = |name: &str| -> Result<Vec<u8>, SignError> {
            let text = jwk
                .get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| SignError::Unsupported(format!("JWK without `{name}`")))?;
            URL_SAFE_NO_PAD
                .decode(text)
                .map_err(|_| SignError::Unsupported(format!("JWK `{name}` is not base64url")))
        };
        let kid = kid
            .map(str::to_string)
            .or_else(|| jwk.get("kid").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| "portcullis-cli".to_string());
        let kty = jwk.get("kty").and_then(Value::as_str).unwrap_or_default();
        let crv = jwk.get("crv").and_then(Value::as_str).unwrap_or_default();
        let inner = match (kty, crv) {
            ("EC", "P-256" | "P-384") => {
                let alg = if crv == "P-256" {
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING
                } else {
                    &signature::ECDSA_P384_SHA384_FIXED_SIGNING
                };
                let mut public = vec![0x04];
                public.extend(field("x")?);
                public.extend(field("y")?);
                Inner::Ecdsa(
                    EcdsaKeyPair::from_private_key_and_public_key(alg, &field("d")?, &public)
                        .map_err(rejected)?,
                )
            }
            ("OKP", "Ed25519") => Inner::Ed25519(
                Ed25519KeyPair::from_seed_and_public_key(&field("d")?, &field("x")?)
                    .map_err(rejected)?,
            ),
            _ => {
                return Err(SignError::Unsupported(format!(
                    "JWK kty `{kty}` crv `{crv}` (use an EC or Ed25519 JWK, or a PEM for RSA)"
                )));
            }
        };
        Ok(SigningKey { kid, inner })
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> Algorithm {
        match &self.inner {
            Inner::Ecdsa(pair) => {
                if pair.public_key().as_ref().len() == 65 {
                    Algorithm::Es256
                } else {
                    Algorithm::Es384
                }
            }
            Inner::Ed25519(_) => Algorithm::EdDsa,
            Inner::Rsa(_, alg) => *alg,
        }
    }

    /// The public half as a JWK (with `kid`, `alg` and `use`).
    pub fn public_jwk(&self) -> Value {
        let mut jwk = match &self.inner {
            Inner::Ecdsa(pair) => {
                let point = pair.public_key().as_ref();
                let size = (point.len() - 1) / 2;
                let (x, y) = point.get(1..).unwrap_or_default().split_at(size);
                json!({"kty": "EC", "crv": if size == 32 { "P-256" } else { "P-384" }, "x": b64url(x), "y": b64url(y)})
            }
            Inner::Ed25519(pair) => {
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64url(pair.public_key().as_ref())})
            }
            Inner::Rsa(pair, _) => {
                let public = pair.public_key();
                json!({
                    "kty": "RSA",
                    "n": b64url(public.modulus().big_endian_without_leading_zero()),
                    "e": b64url(public.exponent().big_endian_without_leading_zero()),
                })
            }
        };
        if let Value::Object(map) = &mut jwk {
            map.insert("kid".into(), json!(self.kid));
            map.insert("alg".into(), json!(self.algorithm().name()));
            map.insert("use".into(), json!("sig"));
        }
        jwk
    }

    /// Signs `claims` with a header of `alg`, `kid` and `typ`, plus `extra_header` members.
    pub fn sign(
        &self,
        claims: &Map<String, Value>,
        typ: &str,
        extra_header: &Map<String, Value>,
    ) -> Result<String, SignError> {
        let mut header = Map::new();
        header.insert("alg".into(), json!(self.algorithm().name()));
        header.insert("typ".into(), json!(typ));
        header.insert("kid".into(), json!(self.kid));
        for (k, v) in extra_header {
            header.insert(k.clone(), v.clone());
        }
        let signing_input = format!(
            "{}.{}",
            b64url(Value::Object(header).to_string().as_bytes()),
            b64url(Value::Object(claims.clone()).to_string().as_bytes())
        );
        let signature = self.sign_bytes(signing_input.as_bytes())?;
        Ok(format!("{signing_input}.{}", b64url(&signature)))
    }

    /// A raw signature over `message` (for building unusual tokens in tests).
    pub fn sign_bytes(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let rng = SystemRandom::new();
        match &self.inner {
            Inner::Ecdsa(pair) => Ok(pair
                .sign(&rng, message)
                .map_err(rejected)?
                .as_ref()
                .to_vec()),
            Inner::Ed25519(pair) => Ok(pair.sign(message).as_ref().to_vec()),
            Inner::Rsa(pair, alg) => {
                let padding: &'static dyn signature::RsaEncoding = match alg {
                    Algorithm::Ps256 => &signature::RSA_PSS_SHA256,
                    _ => &signature::RSA_PKCS1_SHA256,
                };
                let mut out = vec![0u8; pair.public_modulus_len()];
                pair.sign(padding, &rng, message, &mut out)
                    .map_err(rejected)?;
                Ok(out)
            }
        }
    }
}

/// The DER bytes inside a `-----BEGIN ... PRIVATE KEY-----` block.
fn pem_body(text: &str) -> Option<Vec<u8>> {
    let mut inside = false;
    let mut body = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("-----BEGIN") && line.contains("PRIVATE KEY") {
            inside = true;
        } else if line.starts_with("-----END") {
            break;
        } else if inside {
            body.push_str(line);
        }
    }
    STANDARD.decode(body).ok()
}
