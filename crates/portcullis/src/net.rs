//! Address ranges and client-address resolution behind trusted proxies.

use http::HeaderMap;
use std::net::IpAddr;
use std::str::FromStr;

/// An IP network in CIDR notation (`10.0.0.0/8`, `::1/128`); a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

/// Why a CIDR string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an IP address or CIDR range")]
pub struct IpNetParseError(String);

impl FromStr for IpNet {
    type Err = IpNetParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || IpNetParseError(s.to_string());
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| err())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().map_err(|_| err())?,
            None => max,
        };
        if prefix > max {
            return Err(err());
        }
        Ok(IpNet { addr, prefix })
    }
}

impl IpNet {
    /// Whether `ip` lies in this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The peers whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

/// Most `X-Forwarded-For` hops examined; a longer chain is cut (an attacker controls its start).
const MAX_FORWARDED_HOPS: usize = 16;

impl TrustedProxies {
    /// Trusts the given networks.
    pub fn new(nets: Vec<IpNet>) -> Self {
        TrustedProxies(nets)
    }

    /// Whether `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(ip))
    }

    /// The client's address: the peer itself, unless the peer is a trusted proxy, in which
    /// case the right-most address in `X-Forwarded-For` that is not itself a trusted proxy.
    /// Addresses left of an untrusted hop are never believed, since that hop could forge them.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect::<Vec<_>>();
        for hop in hops.iter().rev().take(MAX_FORWARDED_HOPS) {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = canonical(ip);
                    if !self.trusts(client) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        client
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap_or(IpNet {
            addr: IpAddr::from([255, 255, 255, 255]),
            prefix: 32,
        })
    }

    #[test]
    fn parses_and_matches_ranges() {
        assert!(net("10.0.0.0/8").contains("10.200.1.1".parse().unwrap_or(IpAddr::from([0; 4]))));
        assert!(!net("10.0.0.0/8").contains(IpAddr::from([11, 0, 0, 1])));
        assert!(net("0.0.0.0/0").contains(IpAddr::from([1, 2, 3, 4])));
        assert!(net("::1").contains("::1".parse().unwrap_or(IpAddr::from([0; 4]))));
        assert!(
            net("127.0.0.1").contains("::ffff:127.0.0.1".parse().unwrap_or(IpAddr::from([0; 4])))
        );
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("nonsense".parse::<IpNet>().is_err());
    }

    #[test]
    fn forwarded_for_only_believed_from_trusted_peers() {
        let proxies = TrustedProxies::new(vec![net("10.0.0.0/8")]);
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 203.0.113.9, 10.0.0.7"),
        );
        let untrusted = IpAddr::from([198, 51, 100, 1]);
        assert_eq!(proxies.client_ip(untrusted, &headers), untrusted);
        let trusted = IpAddr::from([10, 0, 0, 1]);
        assert_eq!(
            proxies.client_ip(trusted, &headers),
            IpAddr::from([203, 0, 113, 9])
        );
    }
}
