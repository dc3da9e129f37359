//! `portcullis token`: mints a signed JWT for local testing.

use crate::cli::TokenArgs;
use crate::config::duration::parse_duration;
use anyhow::{Context, bail};
use portcullis::authn::keys::Algorithm;
use portcullis::authn::sign::SigningKey;
use rustls_pki_types::pem::PemObject;
use serde_json::{Map, Value, json};
use std::io::Write;
use std::path::Path;

/// A key file's public half as a JWK.
fn public_jwk(path: &Path) -> anyhow::Result<(SigningKey, Value)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the key file {}", path.display()))?;
    let key = SigningKey::from_text(&text, None, Algorithm::Rs256)
        .with_context(|| format!("cannot use the key in {}", path.display()))?;
    let mut jwk = key.public_jwk();
    if let Some(members) = jwk.as_object_mut() {
        // The proof's jwk carries the key only.
        members.remove("kid");
        members.remove("alg");
        members.remove("use");
    }
    Ok((key, jwk))
}

/// The RFC 7638 thumbprint of a key file's public half.
pub fn thumbprint_of(path: &Path) -> anyhow::Result<String> {
    let (_, jwk) = public_jwk(path)?;
    jwk.as_object()
        .and_then(portcullis::authn::dpop::thumbprint)
        .context("the key has no RFC 7638 thumbprint")
}

/// `portcullis dpop proof`: `count` proofs for one request, one per line, each with its own
/// `jti` (the private key is read once).
pub fn dpop_proofs(
    key: &Path,
    request: &ProofRequest<'_>,
    count: usize,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    if count == 0 || count > MAX_PROOFS {
        bail!("--count must be between 1 and {MAX_PROOFS}");
    }
    let (key, jwk) = public_jwk(key)?;
    let htu = request.url.split(['?', '#']).next().unwrap_or(request.url);
    let mut claims = Map::new();
    claims.insert("htm".into(), json!(request.method.to_ascii_uppercase()));
    claims.insert("htu".into(), json!(htu));
    claims.insert("iat".into(), json!(portcullis::authn::now_secs() as u64));
    if let Some(token) = request.token {
        claims.insert("ath".into(), json!(portcullis::authn::dpop::ath(token)));
    }
    if let Some(nonce) = request.nonce {
        claims.insert("nonce".into(), json!(nonce));
    }
    let mut header = Map::new();
    header.insert("jwk".into(), jwk);
    let mut out = std::io::BufWriter::new(out);
    for _ in 0..count {
        claims.insert(
            "jti".into(),
            json!(portcullis::request_id::RequestId::generate().as_str()),
        );
        writeln!(out, "{}", key.sign(&claims, "dpop+jwt", &header)?)?;
    }
    out.flush()?;
    Ok(())
}

/// Most proofs one `portcullis dpop proof --count` prints.
const MAX_PROOFS: usize = 5_000_000;

/// What a DPoP proof is for.
pub struct ProofRequest<'a> {
    /// The request method (`htm`).
    pub method: &'a str,
    /// The request URL (`htu`, without query and fragment).
    pub url: &'a str,
    /// The access token (`ath`), if any.
    pub token: Option<&'a str>,
    /// A server nonce, if any.
    pub nonce: Option<&'a str>,
}

/// Prints a token signed as `args` asks.
pub fn run(args: &TokenArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.key)
        .with_context(|| format!("cannot read the key file {}", args.key.display()))?;
    let rsa_alg = match args.alg.as_str() {
        "RS256" => Algorithm::Rs256,
        "PS256" => Algorithm::Ps256,
        other => bail!("--alg {other} is not an RSA algorithm (use RS256 or PS256)"),
    };
    let key = SigningKey::from_text(&text, args.kid.as_deref(), rsa_alg)
        .with_context(|| format!("cannot use the key in {}", args.key.display()))?;
    let ttl = parse_duration(&args.ttl)
        .with_context(|| format!("--ttl {} is not a duration like 15m", args.ttl))?;
    let now = portcullis::authn::now_secs() as u64;
    let mut claims = Map::new();
    claims.insert("iss".into(), json!(args.iss));
    claims.insert("aud".into(), json!(args.aud));
    claims.insert("sub".into(), json!(args.sub));
    claims.insert("iat".into(), json!(now));
    claims.insert("exp".into(), json!(now + ttl.as_secs()));
    claims.insert(
        "jti".into(),
        json!(portcullis::request_id::RequestId::generate().as_str()),
    );
    if let Some(scope) = &args.scope {
        claims.insert("scope".into(), json!(scope));
    }
    for claim in &args.claims {
        let Some((name, value)) = claim.split_once('=') else {
            bail!("--claim {claim} is not name=value");
        };
        let value =
            serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
        claims.insert(name.to_string(), value);
    }
    let mut cnf = Map::new();
    if let Some(path) = &args.cnf_jkt {
        cnf.insert("jkt".into(), json!(thumbprint_of(path)?));
    }
    if let Some(path) = &args.cnf_x5t {
        let pem = std::fs::read(path)
            .with_context(|| format!("cannot read the certificate {}", path.display()))?;
        let der = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
            .next()
            .with_context(|| format!("no certificate in {}", path.display()))?
            .with_context(|| format!("cannot read the certificate in {}", path.display()))?;
        cnf.insert(
            "x5t#S256".into(),
            json!(portcullis::authn::mtls::thumbprint(der.as_ref())),
        );
    }
    if !cnf.is_empty() {
        claims.insert("cnf".into(), Value::Object(cnf));
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for _ in 0..args.count {
        let jti = portcullis::request_id::RequestId::generate();
        claims.insert("jti".into(), json!(jti.as_str()));
        writeln!(out, "{}", key.sign(&claims, &args.typ, &Map::new())?)?;
    }
    out.flush()?;
    Ok(())
}
