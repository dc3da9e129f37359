//! The `Host` rules: one host, no userinfo, the target's authority, and one of the
//! listener's names.

use super::{NormalizeSettings, malformed};
use crate::denial::Denial;
use crate::reason::MalformedReason;
use crate::scope::LocalAddr;
use http::header;

/// The `Host` rules (RFC 9112 §3.2, RFC 9113 §8.3.1): one `Host`, no userinfo, the same
/// authority as an absolute-form target (or `:authority`), and one of `listen.hosts` with
/// the listener's own port, when that list is set.
pub(super) fn check_host(
    settings: &NormalizeSettings,
    parts: &http::request::Parts,
) -> Result<(), Denial> {
    let mut fields = parts.headers.get_all(header::HOST).iter();
    let host = fields.next();
    if fields.next().is_some() {
        return Err(malformed(
            MalformedReason::DuplicateHost,
            "several Host fields",
            true,
        ));
    }
    let host = match host {
        None => None,
        Some(value) => Some(value.to_str().map_err(|_| {
            malformed(
                MalformedReason::InvalidHost,
                "Host is not visible ASCII",
                true,
            )
        })?),
    };
    let authority = parts.uri.authority().map(|a| a.as_str());
    if host.is_some_and(|h| h.contains('@')) || authority.is_some_and(|a| a.contains('@')) {
        return Err(malformed(
            MalformedReason::UserinfoInHost,
            "userinfo in the host",
            true,
        ));
    }
    if let (Some(host), Some(authority)) = (host, authority)
        && !host.eq_ignore_ascii_case(authority)
    {
        return Err(malformed(
            MalformedReason::HostMismatch,
            "Host differs from the request target's authority",
            true,
        ));
    }
    if settings.hosts.is_empty() {
        return Ok(());
    }
    let named = host.or(authority).unwrap_or_default();
    let misdirected = || Denial::MisdirectedRequest {
        host: crate::problem::truncated(named, 128).to_string(),
    };
    let (name, port) = split_host_port(named).ok_or_else(misdirected)?;
    let local_port = parts.extensions.get::<LocalAddr>().map(|a| a.0.port());
    let port_ok = port.is_none() || port == local_port;
    let name_ok = settings
        .hosts
        .iter()
        .any(|h| h.trim_matches(['[', ']']).eq_ignore_ascii_case(name));
    if name_ok && port_ok {
        Ok(())
    } else {
        Err(misdirected())
    }
}

/// `host[:port]` (brackets around IPv6 literals removed); `None` if the port is not a
/// number.
fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let (name, port) = match authority.strip_prefix('[') {
        Some(rest) => {
            let (name, after) = rest.split_once(']')?;
            (name, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (authority, None),
        },
    };
    let port = match port {
        None => None,
        Some(p) => Some(p.parse::<u16>().ok()?),
    };
    (!name.is_empty()).then_some((name, port))
}
