//! The client certificate a trusted TLS-terminating proxy in front forwards in a header
//! (`x-forwarded-client-cert` or a configured name), read into the same [`ClientIdentity`]
//! a direct mTLS connection gives, so certificate-bound tokens (RFC 8705) and
//! `client_identities` work behind such a proxy.
//!
//! Two encodings are read, the ones proxies actually send:
//! - Envoy's XFCC element, `Hash=<hex>;Cert="<URL-encoded PEM>";Subject="…";URI=…`
//!   (exactly one element: several mean several hops, and which one is the client is then a
//!   guess); `Hash`, when present, must be the certificate's SHA-256;
//! - a bare URL-encoded PEM certificate (nginx's `$ssl_client_escaped_cert`, HAProxy, Traefik).
//!
//! Only the caller knows whether the peer is trusted: the header must be dropped, unread,
//! from anyone else.

use super::mtls::{ClientIdentity, IdentityError};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Longest header value read (a PEM certificate with a long chain of names fits easily).
pub const MAX_HEADER_BYTES: usize = 12 * 1024;

/// Why a forwarded certificate could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardedCertError {
    /// Longer than [`MAX_HEADER_BYTES`].
    #[error("the forwarded certificate header is over {MAX_HEADER_BYTES} bytes")]
    TooLarge,
    /// Several XFCC elements (several hops) or several header fields.
    #[error("the forwarded certificate header names several certificates")]
    Several,
    /// No `Cert=` member, or not a PEM certificate.
    #[error("the forwarded certificate header carries no PEM certificate")]
    NoCertificate,
    /// A `%` escape that is truncated or not hex, or a value that is not text.
    #[error("the forwarded certificate is not validly URL-encoded")]
    BadEncoding,
    /// `Hash=` is not the certificate's SHA-256.
    #[error("the forwarded certificate's Hash is not its SHA-256")]
    HashMismatch,
    /// The certificate is expired or not yet valid.
    #[error("the forwarded certificate is outside its validity period")]
    Expired,
    /// The certificate itself is unusable.
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// Reads the identity from the values of the forwarded-certificate header fields, for a
/// certificate valid at `now` (Unix seconds).
pub fn read<'a>(
    mut values: impl Iterator<Item = &'a [u8]>,
    now: i64,
) -> Result<ClientIdentity, ForwardedCertError> {
    let value = values.next().ok_or(ForwardedCertError::NoCertificate)?;
    if values.next().is_some() {
        return Err(ForwardedCertError::Several);
    }
    if value.len() > MAX_HEADER_BYTES {
        return Err(ForwardedCertError::TooLarge);
    }
    let text = std::str::from_utf8(value).map_err(|_| ForwardedCertError::BadEncoding)?;
    let text = text.trim();
    // An XFCC element names its members (`Cert=`); anything else is the certificate itself.
    let (encoded, hash) = if text.contains('=') && !text.contains("-----") {
        xfcc_certificate(text)?
    } else {
        (text, None)
    };
    let pem = percent_decode(encoded)?;
    let der =
        CertificateDer::from_pem_slice(&pem).map_err(|_| ForwardedCertError::NoCertificate)?;
    if let Some(hash) = hash {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der.as_ref());
        let expected: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        if !crate::secret::constant_time_eq(
            hash.to_ascii_lowercase().as_bytes(),
            expected.as_bytes(),
        ) {
            return Err(ForwardedCertError::HashMismatch);
        }
    }
    let identity = ClientIdentity::from_der(der.as_ref())?;
    if !identity.is_valid_at(now) {
        return Err(ForwardedCertError::Expired);
    }
    Ok(identity)
}

/// The `Cert` and `Hash` members of the only XFCC element.
fn xfcc_certificate(text: &str) -> Result<(&str, Option<&str>), ForwardedCertError> {
    let elements = split_unquoted(text, ',');
    let [element] = elements.as_slice() else {
        return Err(ForwardedCertError::Several);
    };
    let (mut cert, mut hash) = (None, None);
    for pair in split_unquoted(element, ';') {
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        let key = key.trim();
        if key.eq_ignore_ascii_case("cert") && cert.replace(value).is_some() {
            return Err(ForwardedCertError::Several);
        }
        if key.eq_ignore_ascii_case("hash") {
            hash = Some(value);
        }
    }
    Ok((cert.ok_or(ForwardedCertError::NoCertificate)?, hash))
}

/// `text` split at `separator`s outside double quotes (XFCC quotes values holding `,` `;`).
fn split_unquoted(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(text.get(start..i).unwrap_or_default());
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(text.get(start..).unwrap_or_default());
    parts.retain(|p| !p.trim().is_empty());
    parts
}

/// Strict `%XX` decoding (a `+` stays a `+`: base64 uses it).
fn percent_decode(text: &str) -> Result<Vec<u8>, ForwardedCertError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(ForwardedCertError::BadEncoding)?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn escaped(pem: &str) -> String {
        percent_encoding::utf8_percent_encode(pem, percent_encoding::NON_ALPHANUMERIC).to_string()
    }

    fn certificate() -> (String, Vec<u8>) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://corp.test/ns/a/sa/b".try_into().unwrap(),
        ));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), cert.der().to_vec())
    }

    #[test]
    fn reads_envoy_xfcc_and_escaped_pem() {
        let (pem, der) = certificate();
        let hash: String = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let xfcc = format!(
            r#"By=spiffe://corp.test/gw;Hash={hash};Cert="{}";Subject="CN=a,O=b";URI=spiffe://corp.test/ns/a/sa/b"#,
            escaped(&pem)
        );
        for value in [xfcc, escaped(&pem)] {
            let identity = read(std::iter::once(value.as_bytes()), NOW).unwrap();
            assert_eq!(identity.sha256, super::super::mtls::thumbprint(&der));
            assert_eq!(
                identity.spiffe_id.as_deref(),
                Some("spiffe://corp.test/ns/a/sa/b")
            );
        }
        assert_eq!(
            read(std::iter::once(escaped(&pem).as_bytes()), 0),
            Err(ForwardedCertError::Expired)
        );
        let wrong = format!(r#"Hash={};Cert="{}""#, "0".repeat(64), escaped(&pem));
        assert_eq!(
            read(std::iter::once(wrong.as_bytes()), NOW),
            Err(ForwardedCertError::HashMismatch)
        );
    }

    #[test]
    fn splits_outside_quotes_only() {
        assert_eq!(
            split_unquoted(r#"Hash=ab;Subject="CN=a,O=b;c";URI=x"#, ';'),
            vec!["Hash=ab", r#"Subject="CN=a,O=b;c""#, "URI=x"]
        );
        assert_eq!(split_unquoted(r#"By=a;Subject="x,y",By=b"#, ',').len(), 2);
    }

    #[test]
    fn refuses_what_it_cannot_read_unambiguously() {
        let read1 = |v: &str| read(std::iter::once(v.as_bytes()), NOW);
        assert_eq!(read1("Hash=00"), Err(ForwardedCertError::NoCertificate));
        assert_eq!(
            read1(r#"Cert="a",Cert="b""#),
            Err(ForwardedCertError::Several)
        );
        assert_eq!(read1("Cert=%zz"), Err(ForwardedCertError::BadEncoding));
        assert_eq!(read1("Cert=%4"), Err(ForwardedCertError::BadEncoding));
        assert!(
            read1(&escaped(
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
            ))
            .is_err()
        );
        assert_eq!(
            read([b"a".as_slice(), b"b".as_slice()].into_iter(), NOW),
            Err(ForwardedCertError::Several)
        );
        assert_eq!(
            read1(&"x".repeat(MAX_HEADER_BYTES + 1)),
            Err(ForwardedCertError::TooLarge)
        );
    }
}
