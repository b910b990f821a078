//! The client's address: the socket's peer, unless that peer is a proxy we
//! trust (`TRUSTED_PROXIES`), in which case the nearest address in
//! `X-Forwarded-For` that is not itself a trusted proxy. Anyone can write an
//! `X-Forwarded-For` header, so it is believed only from known proxies.

use std::net::IpAddr;

use actix_web::HttpRequest;
use ipnet::IpNet;

/// The networks whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(pub Vec<IpNet>);

impl TrustedProxies {
    /// Parses a comma-separated list of addresses and CIDR networks.
    pub fn parse(list: &str) -> Result<Self, String> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{s:?} is not an IP address or CIDR network"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }

    fn contains(&self, ip: &IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(ip))
    }

    /// Parses one `X-Forwarded-For` hop, IPv4-mapped addresses as IPv4.
    fn hop(hop: &str) -> Option<IpAddr> {
        hop.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
    }

    /// The client of a request that came from `peer` with these
    /// `X-Forwarded-For` values (oldest hop first, as proxies append).
    /// IPv4-mapped IPv6 addresses (how a dual-stack listener, `HOST=::`,
    /// sees IPv4 peers) are treated as the IPv4 addresses they are, so
    /// IPv4 entries of `TRUSTED_PROXIES` match them.
    pub fn client(&self, peer: IpAddr, forwarded_for: &[&str]) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(&peer) {
            return peer;
        }
        let hops: Vec<&str> = forwarded_for
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        // From the nearest hop outwards: the first address we do not run
        // ourselves. A hop that is not an address ends the walk at the last
        // proxy we trust: anything left of it may be the client's own writing.
        let mut nearest_trusted = peer;
        for hop in hops.iter().rev() {
            let Some(ip) = Self::hop(hop) else {
                return nearest_trusted;
            };
            if !self.contains(&ip) {
                return ip;
            }
            nearest_trusted = ip;
        }
        nearest_trusted
    }

    /// The client address of `req`.
    pub fn client_of(&self, req: &HttpRequest) -> IpAddr {
        let peer = req
            .peer_addr()
            .map(|a| a.ip())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let forwarded: Vec<&str> = req
            .headers()
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok())
            .collect();
        self.client(peer, &forwarded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = TrustedProxies::parse("10.0.0.0/8, 127.0.0.1").expect("valid");
        // Untrusted peer: its header is ignored.
        assert_eq!(
            trusted.client(ip("203.0.113.9"), &["1.2.3.4"]),
            ip("203.0.113.9")
        );
        // Trusted peer: the nearest untrusted hop.
        assert_eq!(
            trusted.client(ip("127.0.0.1"), &["198.51.100.7, 10.1.2.3"]),
            ip("198.51.100.7")
        );
        // A forged leftmost entry does not win over the hop our proxy saw.
        assert_eq!(
            trusted.client(ip("10.0.0.5"), &["6.6.6.6", "198.51.100.7"]),
            ip("198.51.100.7")
        );
        // Trusted peer without a usable header: the peer.
        assert_eq!(
            trusted.client(ip("127.0.0.1"), &["garbage"]),
            ip("127.0.0.1")
        );
        // A dual-stack listener sees IPv4 peers as IPv4-mapped addresses.
        assert_eq!(
            trusted.client(ip("::ffff:127.0.0.1"), &["::ffff:198.51.100.7"]),
            ip("198.51.100.7")
        );
        assert_eq!(
            trusted.client(ip("::ffff:203.0.113.9"), &["1.2.3.4"]),
            ip("203.0.113.9")
        );
        assert!(TrustedProxies::parse("not-an-ip").is_err());
        assert_eq!(
            TrustedProxies::parse("").expect("empty"),
            TrustedProxies::default()
        );
    }
}
