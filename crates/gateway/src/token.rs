//! `portcullis token`: mints a signed JWT for local testing.

use crate::cli::TokenArgs;
use crate::config::duration::parse_duration;
use anyhow::{Context, bail};
use portcullis::authn::keys::Algorithm;
use portcullis::authn::sign::SigningKey;
use serde_json::{Map, Value, json};
use std::io::Write;

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
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for _ in 0..args.count {
        let jti = portcullis::request_id::RequestId::generate();
        claims.insert("jti".into(), json!(jti.as_str()));
        writeln!(out, "{}", key.sign(&claims, &args.typ, &Map::new())?)?;
    }
    out.flush()?;
    Ok(())
}
