//! [`Sealer`]: AES-256-GCM sealing of the values the gateway hands to browsers (session and
//! pending-login cookies, session records at rest), with key rotation: the first key seals,
//! every key opens.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Shortest accepted key secret, in bytes.
pub const MIN_KEY_BYTES: usize = 32;

/// Why keys cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// No key at all.
    #[error("no session key")]
    NoKey,
    /// A key shorter than [`MIN_KEY_BYTES`].
    #[error("session key {0} has {1} bytes; each needs at least {MIN_KEY_BYTES}")]
    ShortKey(usize, usize),
}

/// Seals and opens values with a list of keys.
pub struct Sealer {
    keys: Vec<LessSafeKey>,
    random: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// Keys derived from these secrets (each at least [`MIN_KEY_BYTES`]); the first seals.
    pub fn new<S: AsRef<[u8]>>(secrets: &[S]) -> Result<Sealer, SealError> {
        if secrets.is_empty() {
            return Err(SealError::NoKey);
        }
        let mut keys = Vec::with_capacity(secrets.len());
        for (i, secret) in secrets.iter().enumerate() {
            let secret = secret.as_ref();
            if secret.len() < MIN_KEY_BYTES {
                return Err(SealError::ShortKey(i, secret.len()));
            }
            // A context-bound derivation: the same secret used elsewhere gives another key.
            let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
            context.update(b"portcullis session key v1\0");
            context.update(secret);
            let digest = context.finish();
            let key = UnboundKey::new(&AES_256_GCM, digest.as_ref())
                .map_err(|_| SealError::ShortKey(i, secret.len()))?;
            keys.push(LessSafeKey::new(key));
        }
        Ok(Sealer {
            keys,
            random: SystemRandom::new(),
        })
    }

    /// `plaintext` sealed for `purpose` (authenticated, so a value sealed for one purpose,
    /// such as a cookie name, never opens as another): base64url of nonce, ciphertext, tag.
    pub fn seal(&self, purpose: &str, plaintext: &[u8]) -> Option<String> {
        let key = self.keys.first()?;
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).ok()?;
        let mut data = plaintext.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(purpose.as_bytes()),
            &mut data,
        )
        .ok()?;
        let mut all = Vec::with_capacity(NONCE_LEN + data.len());
        all.extend_from_slice(&nonce);
        all.extend_from_slice(&data);
        Some(URL_SAFE_NO_PAD.encode(all))
    }

    /// The plaintext of a value sealed for `purpose` by any of the keys; `None` if it was
    /// altered, sealed for something else, or by a key no longer listed.
    pub fn open(&self, purpose: &str, sealed: &str) -> Option<Vec<u8>> {
        // A bound before decoding: nothing the gateway seals is this large.
        if sealed.len() > 16 * 1024 {
            return None;
        }
        let all = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if all.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return None;
        }
        let (nonce, data) = all.split_at(NONCE_LEN);
        for key in &self.keys {
            let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
            let mut buffer = data.to_vec();
            if let Ok(plain) = key.open_in_place(nonce, Aad::from(purpose.as_bytes()), &mut buffer)
            {
                return Some(plain.to_vec());
            }
        }
        None
    }
}

/// `bytes` random bytes, base64url without padding (state, nonce, PKCE verifier, session id).
/// `None` only if the system generator fails, which nothing should go on without.
pub fn random_token(bytes: usize) -> Option<String> {
    let mut buffer = vec![0u8; bytes];
    SystemRandom::new().fill(&mut buffer).ok()?;
    Some(URL_SAFE_NO_PAD.encode(buffer))
}

/// base64url(SHA-256(`text`)): the PKCE S256 challenge of a verifier.
pub fn s256(text: &str) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        text.as_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &[u8] = b"0123456789abcdef0123456789abcdef";
    const B: &[u8] = b"fedcba9876543210fedcba9876543210";

    #[test]
    fn seals_opens_and_rotates() {
        let old = Sealer::new(&[A]).unwrap();
        let sealed = old.seal("cookie", b"hello").unwrap();
        assert_eq!(old.open("cookie", &sealed).as_deref(), Some(&b"hello"[..]));
        // Another purpose never opens it.
        assert_eq!(old.open("other", &sealed), None);
        // Rotation: the new first key seals, the old one still opens.
        let rotated = Sealer::new(&[B, A]).unwrap();
        assert_eq!(
            rotated.open("cookie", &sealed).as_deref(),
            Some(&b"hello"[..])
        );
        let fresh = rotated.seal("cookie", b"new").unwrap();
        assert_eq!(old.open("cookie", &fresh), None);
        // The old key retired: its values no longer open.
        let retired = Sealer::new(&[B]).unwrap();
        assert_eq!(retired.open("cookie", &sealed), None);
    }

    #[test]
    fn any_altered_byte_fails() {
        let sealer = Sealer::new(&[A]).unwrap();
        let sealed = sealer.seal("c", b"some session").unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        for i in 0..bytes.len() {
            bytes[i] ^= 1;
            assert_eq!(
                sealer.open("c", &URL_SAFE_NO_PAD.encode(&bytes)),
                None,
                "byte {i}"
            );
            bytes[i] ^= 1;
        }
        assert_eq!(sealer.open("c", "short"), None);
        assert_eq!(sealer.open("c", "!!not base64!!"), None);
    }

    #[test]
    fn keys_must_be_long_enough() {
        assert_eq!(Sealer::new::<&[u8]>(&[]).err(), Some(SealError::NoKey));
        assert_eq!(
            Sealer::new(&[A, b"short"]).err(),
            Some(SealError::ShortKey(1, 5))
        );
        assert_eq!(
            s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
