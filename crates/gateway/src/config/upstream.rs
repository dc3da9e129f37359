//! Upstreams compiled from `upstreams:`: address, base path, timeout, the `Host` they see,
//! and the pooled client with its outbound trust.

use super::identity::Shared;
use super::raw::Text;
use super::{HostRule, Problems, Upstream, line_of};
use super::{raw, secret, tls};
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Uri};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub(super) fn socket_addr(
    path: &str,
    text: &Text,
    resolver: &secret::Resolver,
    problems: &mut Problems,
) -> Option<SocketAddr> {
    let value = resolver.text(path, text, problems)?;
    match value.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            problems.at(
                path,
                text,
                format!("`{value}` is not an address like 127.0.0.1:8080"),
            );
            None
        }
    }
}

/// What compiling an upstream needs besides its own section.
pub(super) struct UpstreamContext<'a> {
    pub(super) base_dir: &'a Path,
    pub(super) resolver: &'a secret::Resolver,
    pub(super) trust: &'a portcullis::outbound::Trust,
    pub(super) shared: &'a Shared,
}

pub(super) fn compile_upstream(
    name: &str,
    raw: &raw::RawUpstream,
    path: &str,
    context: &UpstreamContext<'_>,
    cert_facts: &mut tls::CertFacts,
    problems: &mut Problems,
) -> Option<Upstream> {
    let resolver = context.resolver;
    let url_path = format!("{path}.url");
    let url = resolver.text(&url_path, &raw.url, problems)?;
    let Ok(uri) = url.parse::<Uri>() else {
        problems.at(url_path, &raw.url, format!("`{url}` is not a URL"));
        return None;
    };
    let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
        problems.at(
            url_path,
            &raw.url,
            format!("`{url}` needs a scheme and host, like http://127.0.0.1:8081"),
        );
        return None;
    };
    if scheme != &Scheme::HTTP && scheme != &Scheme::HTTPS {
        problems.at(
            url_path,
            &raw.url,
            format!("unsupported scheme `{scheme}` (use http or https)"),
        );
        return None;
    }
    if uri.query().is_some() || authority.as_str().contains('@') {
        problems.at(
            url_path,
            &raw.url,
            "an upstream URL may not carry a query or credentials",
        );
        return None;
    }
    let host = match &raw.host {
        None => HostRule::Upstream,
        Some(text) => match text.value.as_str() {
            "upstream" => HostRule::Upstream,
            "preserve" => HostRule::Preserve,
            literal => match literal.parse::<Authority>() {
                Ok(a) if !a.as_str().contains('@') => {
                    HostRule::Literal(HeaderValue::from_str(a.as_str()).ok()?)
                }
                _ => {
                    problems.at(
                        format!("{path}.host"),
                        text,
                        format!("`{literal}` is not upstream, preserve, or a host name"),
                    );
                    return None;
                }
            },
        },
    };
    let grpc = match raw.protocol.as_ref().map(|t| (t, t.value.as_str())) {
        None | Some((_, "http")) => false,
        Some((_, "grpc")) => true,
        Some((text, other)) => {
            problems.at(
                format!("{path}.protocol"),
                text,
                format!("unknown protocol `{other}` (use http or grpc)"),
            );
            return None;
        }
    };
    let tls = match &raw.tls {
        Some(section) if scheme != &Scheme::HTTPS => {
            problems.add(
                format!("{path}.tls"),
                line_of(&section.referenced),
                "`tls` applies to https upstreams only",
            );
            return None;
        }
        Some(section) => Some(tls::compile_upstream(
            name,
            &section.value,
            &format!("{path}.tls"),
            context.base_dir,
            resolver,
            cert_facts,
            problems,
        )?),
        None => None,
    };
    let pooled = crate::upstream_pool::pooled_upstream(
        &context.shared.upstream_clients,
        context.trust,
        tls.as_ref(),
        grpc,
    )
    .map_err(|e| problems.add(path.to_string(), line_of(&raw.url.referenced), e))
    .ok()?;
    let client_cert = match (&pooled.client_cert, tls.and_then(|t| t.client_cert)) {
        (Some(holder), Some((key, _, _))) => Some((holder.clone(), key)),
        _ => None,
    };
    Some(Upstream {
        name: name.to_string(),
        scheme: scheme.clone(),
        authority: authority.clone(),
        base_path: uri.path().trim_end_matches('/').to_string(),
        timeout: raw.timeout.map_or(Duration::from_secs(30), |d| d.0),
        host,
        grpc,
        client: pooled.client,
        client_cert,
    })
}
