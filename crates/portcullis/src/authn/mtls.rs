//! Client certificates: the identity a verified certificate proves ([`ClientIdentity`]), and
//! the per-route patterns that name which identities may call ([`IdentityPattern`]).
//!
//! The certificate is verified by the TLS stack during the handshake (chain, validity,
//! clientAuth usage); this module only reads the fields of the leaf it accepted, once per
//! connection.

#![deny(clippy::arithmetic_side_effects)]

use base64::Engine;
use serde_json::{Value, json};
use x509_parser::extensions::GeneralName;

/// Most SAN entries read from one certificate (a bound on what one handshake can make us
/// allocate; real X.509-SVIDs carry one URI and a few DNS names).
const MAX_SANS: usize = 64;

/// The identity proved by a verified client certificate, read once per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The subject's distinguished name, e.g. `CN=payments, O=Corp`.
    pub subject: String,
    /// The certificate's single `spiffe://` URI SAN (an X.509-SVID), if it has one.
    pub spiffe_id: Option<String>,
    /// DNS-name SANs, lower-cased.
    pub dns_names: Vec<String>,
    /// URI SANs, as written.
    pub uris: Vec<String>,
    /// base64url (no padding) of the SHA-256 of the certificate's DER: the RFC 8705
    /// `x5t#S256` thumbprint.
    pub sha256: String,
    /// The certificate's validity window, in Unix seconds (`notBefore`, `notAfter`).
    pub valid: (i64, i64),
}

/// Why a certificate gives no usable identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The DER is not an X.509 certificate.
    #[error("not an X.509 certificate: {0}")]
    Unparsable(String),
    /// An X.509-SVID carries exactly one SPIFFE id; more than one is ambiguous.
    #[error("the certificate has {0} spiffe:// URI SANs; an X.509-SVID has exactly one")]
    SeveralSpiffeIds(usize),
    /// More SAN entries than anyone needs.
    #[error("the certificate has more than {MAX_SANS} subject alternative names")]
    TooManyNames,
    /// A `spiffe://` URI that the SPIFFE ID specification does not allow.
    #[error("`{0}` is not a valid SPIFFE id")]
    InvalidSpiffeId(String),
}

impl ClientIdentity {
    /// Reads the identity from a certificate's DER (a leaf the TLS stack already verified).
    pub fn from_der(der: &[u8]) -> Result<ClientIdentity, IdentityError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| IdentityError::Unparsable(e.to_string()))?;
        let mut dns_names = Vec::new();
        let mut uris = Vec::new();
        let sans = cert
            .subject_alternative_name()
            .map_err(|e| IdentityError::Unparsable(e.to_string()))?;
        if let Some(sans) = sans {
            if sans.value.general_names.len() > MAX_SANS {
                return Err(IdentityError::TooManyNames);
            }
            for name in &sans.value.general_names {
                match name {
                    GeneralName::DNSName(dns) => dns_names.push(dns.to_ascii_lowercase()),
                    GeneralName::URI(uri) => uris.push((*uri).to_string()),
                    _ => {}
                }
            }
        }
        let spiffe: Vec<&String> = uris
            .iter()
            .filter(|u| {
                u.get(..9)
                    .is_some_and(|s| s.eq_ignore_ascii_case("spiffe://"))
            })
            .collect();
        let spiffe_id = match spiffe.as_slice() {
            [] => None,
            [one] if is_spiffe_id(one) => Some((*one).clone()),
            [other] => return Err(IdentityError::InvalidSpiffeId((*other).clone())),
            several => return Err(IdentityError::SeveralSpiffeIds(several.len())),
        };
        let validity = cert.validity();
        Ok(ClientIdentity {
            subject: cert.subject().to_string(),
            spiffe_id,
            dns_names,
            uris,
            sha256: thumbprint(der),
            valid: (
                validity.not_before.timestamp(),
                validity.not_after.timestamp(),
            ),
        })
    }

    /// Whether the certificate is valid at `now` (Unix seconds). The handshake checked this
    /// for new sessions; a resumed session brings back its certificate unchecked, so the
    /// server checks again on every connection.
    pub fn is_valid_at(&self, now: i64) -> bool {
        (self.valid.0..=self.valid.1).contains(&now)
    }

    /// The identity as it appears in the policy input (`environment.mtls_identity`).
    pub fn to_json(&self) -> Value {
        json!({
            "subject": self.subject,
            "spiffe_id": self.spiffe_id,
            "dns_names": self.dns_names,
            "uris": self.uris,
            "sha256": self.sha256,
        })
    }
}

/// The SPIFFE ID rules (SPIFFE-ID specification §2): `spiffe://`, a lower-case trust domain
/// of letters, digits, `.`, `-` and `_`, then path segments of letters, digits, `.`, `-` and
/// `_` that are neither empty nor `.` or `..`; no query, fragment, port, userinfo or escapes.
/// Anything else could be read differently by a policy or an upstream than by a pattern.
fn is_spiffe_id(uri: &str) -> bool {
    let Some(rest) = uri.strip_prefix("spiffe://") else {
        return false;
    };
    let mut parts = rest.split('/');
    let domain = parts.next().unwrap_or_default();
    let domain_ok = !domain.is_empty()
        && domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
    domain_ok
        && parts.all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        })
}

/// base64url (no padding) of the SHA-256 of `der`: RFC 8705's `x5t#S256`.
pub fn thumbprint(der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// Why a `client_identities` pattern is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// A segment (or DNS label) is empty.
    #[error("has an empty segment")]
    EmptySegment,
    /// `**` anywhere but at the open end.
    #[error("`**` may only end a SPIFFE pattern or start a DNS name pattern")]
    MisplacedRest,
    /// `*` as part of a segment.
    #[error("`*` must stand for a whole segment")]
    PartialWildcard,
    /// A SPIFFE pattern whose trust domain is a wildcard.
    #[error("the trust domain must be written out")]
    WildcardTrustDomain,
    /// Neither a `spiffe://` id nor a DNS name.
    #[error("is neither a spiffe:// id nor a DNS name")]
    NotAnIdentity,
}

/// One segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*`: exactly one segment.
    One,
    /// `**`: one or more segments (only at the open end of the pattern).
    Rest,
}

/// Which identities a route accepts: a SPIFFE id pattern (`spiffe://corp.test/ns/*/sa/api`)
/// matched on the certificate's SPIFFE id, or a DNS name pattern (`*.payments.corp.test`)
/// matched on its DNS SANs. `*` stands for exactly one path segment (or DNS label), `**` for
/// any non-empty remainder: at the end of a SPIFFE pattern, at the start of a DNS pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityPattern {
    text: String,
    spiffe: bool,
    /// SPIFFE: the trust domain and path segments in order. DNS: labels from the right.
    segments: Vec<Segment>,
}

impl IdentityPattern {
    /// Parses a pattern, refusing ones that could never match or are ambiguous.
    pub fn parse(text: &str) -> Result<IdentityPattern, PatternError> {
        let (spiffe, parts): (bool, Vec<&str>) = match text.strip_prefix("spiffe://") {
            Some(rest) => (true, rest.split('/').collect()),
            None => (false, text.split('.').rev().collect()),
        };
        if parts.iter().any(|p| p.is_empty()) {
            return Err(PatternError::EmptySegment);
        }
        let last = parts.len().saturating_sub(1);
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let segment = match *part {
                "*" => Segment::One,
                "**" if i == last && i > 0 => Segment::Rest,
                "**" => return Err(PatternError::MisplacedRest),
                p if p.contains('*') => return Err(PatternError::PartialWildcard),
                p if spiffe => Segment::Literal(p.to_string()),
                p => Segment::Literal(p.to_ascii_lowercase()),
            };
            segments.push(segment);
        }
        if spiffe && !matches!(segments.first(), Some(Segment::Literal(_))) {
            return Err(PatternError::WildcardTrustDomain);
        }
        if !spiffe
            && !text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.*".contains(&b))
        {
            return Err(PatternError::NotAnIdentity);
        }
        Ok(IdentityPattern {
            text: text.to_string(),
            spiffe,
            segments,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the identity matches: its SPIFFE id for a SPIFFE pattern, any of its DNS
    /// names for a DNS pattern.
    pub fn matches(&self, identity: &ClientIdentity) -> bool {
        if self.spiffe {
            identity.spiffe_id.as_deref().is_some_and(|id| {
                id.get(9..)
                    .is_some_and(|rest| self.matches_parts(rest.split('/')))
            })
        } else {
            identity
                .dns_names
                .iter()
                .any(|name| self.matches_parts(name.split('.').rev()))
        }
    }

    fn matches_parts<'a>(&self, mut parts: impl Iterator<Item = &'a str>) -> bool {
        for segment in &self.segments {
            match (segment, parts.next()) {
                (_, None) | (_, Some("")) => return false,
                (Segment::Rest, Some(_)) => return parts.all(|p| !p.is_empty()),
                (Segment::One, Some(_)) => {}
                (Segment::Literal(want), Some(got)) => {
                    let same = if self.spiffe {
                        want == got
                    } else {
                        want.eq_ignore_ascii_case(got)
                    };
                    if !same {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }
}

/// Whether any of `patterns` accepts `identity` (no identity: none does).
pub fn any_matches(patterns: &[IdentityPattern], identity: Option<&ClientIdentity>) -> bool {
    identity.is_some_and(|identity| patterns.iter().any(|p| p.matches(identity)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(spiffe: Option<&str>, dns: &[&str]) -> ClientIdentity {
        ClientIdentity {
            subject: "CN=test".into(),
            spiffe_id: spiffe.map(str::to_string),
            dns_names: dns.iter().map(|d| d.to_string()).collect(),
            uris: spiffe.iter().map(|s| s.to_string()).collect(),
            sha256: String::new(),
            valid: (0, i64::MAX),
        }
    }

    #[test]
    fn spiffe_patterns_match_whole_segments() {
        let p = IdentityPattern::parse("spiffe://corp.test/ns/payments/sa/*").unwrap();
        assert!(p.matches(&identity(
            Some("spiffe://corp.test/ns/payments/sa/api"),
            &[]
        )));
        assert!(!p.matches(&identity(
            Some("spiffe://corp.test/ns/payments/sa/api/x"),
            &[]
        )));
        assert!(!p.matches(&identity(Some("spiffe://corp.test/ns/payments/sa"), &[])));
        assert!(!p.matches(&identity(Some("spiffe://corp.test/ns/payments/sa/"), &[])));
        assert!(!p.matches(&identity(
            Some("spiffe://evil.test/ns/payments/sa/api"),
            &[]
        )));
        assert!(!p.matches(&identity(None, &["corp.test"])));
        let rest = IdentityPattern::parse("spiffe://corp.test/ns/**").unwrap();
        assert!(rest.matches(&identity(Some("spiffe://corp.test/ns/a/sa/b"), &[])));
        assert!(!rest.matches(&identity(Some("spiffe://corp.test/ns"), &[])));
        assert!(!rest.matches(&identity(Some("spiffe://corp.test/other/a"), &[])));
        let exact = IdentityPattern::parse("spiffe://corp.test/ns/a").unwrap();
        assert!(exact.matches(&identity(Some("spiffe://corp.test/ns/a"), &[])));
        assert!(!exact.matches(&identity(Some("spiffe://corp.test/ns/A"), &[])));
    }

    #[test]
    fn dns_patterns_match_labels_from_the_right() {
        let p = IdentityPattern::parse("*.payments.corp.test").unwrap();
        assert!(p.matches(&identity(
            None,
            &["other.example", "api.payments.corp.test"]
        )));
        assert!(!p.matches(&identity(None, &["payments.corp.test"])));
        assert!(!p.matches(&identity(None, &["a.b.payments.corp.test"])));
        let any = IdentityPattern::parse("**.corp.test").unwrap();
        assert!(any.matches(&identity(None, &["a.b.corp.test"])));
        assert!(!any.matches(&identity(None, &["corp.test"])));
        let exact = IdentityPattern::parse("API.corp.test").unwrap();
        assert!(exact.matches(&identity(None, &["api.corp.test"])));
        assert!(!exact.matches(&identity(Some("spiffe://api.corp.test"), &[])));
    }

    #[test]
    fn ambiguous_patterns_are_refused() {
        for bad in [
            "spiffe://corp.test/**/x",
            "spiffe://*/ns",
            "spiffe://corp.test//x",
            "spiffe://corp.test/a*",
            "api.**.test",
            "a b.test",
            "",
        ] {
            assert!(IdentityPattern::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    fn certificate(uris: &[&str], dns: &[&str]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "payments");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Corp");
        for uri in uris {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI((*uri).try_into().unwrap()));
        }
        for name in dns {
            params
                .subject_alt_names
                .push(rcgen::SanType::DnsName((*name).try_into().unwrap()));
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn identity_is_read_from_the_certificate() {
        let der = certificate(
            &[
                "spiffe://corp.test/ns/payments/sa/api",
                "https://corp.test/x",
            ],
            &["API.Payments.corp.test"],
        );
        let identity = ClientIdentity::from_der(&der).unwrap();
        assert_eq!(
            identity.spiffe_id.as_deref(),
            Some("spiffe://corp.test/ns/payments/sa/api")
        );
        assert_eq!(identity.dns_names, ["api.payments.corp.test"]);
        assert_eq!(identity.uris.len(), 2);
        assert!(
            identity.subject.contains("CN=payments"),
            "{}",
            identity.subject
        );
        assert_eq!(identity.sha256, thumbprint(&der));
        assert_eq!(identity.sha256.len(), 43, "base64url of 32 bytes, unpadded");
        let json = identity.to_json();
        assert_eq!(json["spiffe_id"], "spiffe://corp.test/ns/payments/sa/api");
        assert_eq!(json["dns_names"][0], "api.payments.corp.test");
        let plain = ClientIdentity::from_der(&certificate(&[], &["a.test"])).unwrap();
        assert_eq!(plain.spiffe_id, None);
        assert_eq!(plain.to_json()["spiffe_id"], Value::Null);
    }

    #[test]
    fn several_spiffe_ids_are_refused() {
        let der = certificate(&["spiffe://corp.test/a", "spiffe://corp.test/b"], &[]);
        assert_eq!(
            ClientIdentity::from_der(&der),
            Err(IdentityError::SeveralSpiffeIds(2))
        );
        assert!(matches!(
            ClientIdentity::from_der(b"not a certificate"),
            Err(IdentityError::Unparsable(_))
        ));
    }

    #[test]
    fn spiffe_ids_follow_the_specification() {
        for bad in [
            "spiffe://corp.test/ns/payments/../../admin",
            "spiffe://corp.test/ns/./x",
            "spiffe://corp.test/ns//x",
            "spiffe://Corp.test/ns/x",
            "spiffe://corp.test/ns/x%2fy",
            "spiffe://corp.test/ns/x?y",
            "spiffe://corp.test:8443/ns/x",
            "spiffe:///ns/x",
        ] {
            let der = certificate(&[bad], &[]);
            assert!(
                matches!(
                    ClientIdentity::from_der(&der),
                    Err(IdentityError::InvalidSpiffeId(_))
                ),
                "{bad} was accepted"
            );
        }
        let der = certificate(&["spiffe://corp.test/ns/pay-ments/sa/api_1.v2"], &[]);
        assert!(ClientIdentity::from_der(&der).is_ok());
    }

    #[test]
    fn no_identity_matches_nothing() {
        let p = IdentityPattern::parse("spiffe://corp.test/**").unwrap();
        assert!(!any_matches(&[p], None));
    }
}
