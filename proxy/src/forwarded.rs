//! Who the client is, and which inbound headers may be believed.
//!
//! `X-Forwarded-*`, `Forwarded`, `X-Real-IP` and `X-Request-Id` are only taken
//! from peers in the trusted-proxy list; from anyone else they are dropped
//! before routing. The proxy's own identity headers (`X-Portcullis-*`,
//! [`portcullis_contract::headers::RESERVED_PREFIX`]) are dropped from every
//! peer: only the proxy itself sets them.

use std::net::IpAddr;

use ipnet::IpNet;

/// Headers about the client's hop that only a trusted proxy may send.
pub const HOP_HEADERS: &[&str] = &[
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
];

/// The trusted-proxy CIDR list.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

/// Maps `::ffff:a.b.c.d` to `a.b.c.d` so v4 CIDRs match dual-stack peers.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self { nets }
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client address: the peer itself unless it is trusted, otherwise the
    /// right-most `X-Forwarded-For` entry that is not a trusted proxy (entries
    /// further left could have been written by the client). An unparsable
    /// entry stops the walk at the last address known to be good.
    pub fn client_ip<'a>(&self, peer: IpAddr, xff: impl Iterator<Item = &'a str>) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        let entries: Vec<&str> = xff.flat_map(|h| h.split(',')).collect();
        let mut client = peer;
        for entry in entries.iter().rev() {
            match entry.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = canonical(ip);
                    if !self.contains(client) {
                        return client;
                    }
                }
                Err(_) => return client,
            }
        }
        client
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_contract::headers::valid_request_id;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_claims() {
        let t = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
        assert_eq!(
            t.client_ip(ip("203.0.113.9"), ["1.2.3.4"].into_iter()),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn trusted_chain_yields_rightmost_untrusted() {
        let t = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
        let xff = ["6.6.6.6, 198.51.100.7", "10.1.1.1"];
        assert_eq!(
            t.client_ip(ip("10.0.0.2"), xff.into_iter()),
            ip("198.51.100.7")
        );
        assert_eq!(
            t.client_ip(ip("10.0.0.2"), ["garbage, 10.1.1.1"].into_iter()),
            ip("10.1.1.1")
        );
        assert_eq!(
            t.client_ip(ip("::ffff:10.0.0.2"), ["192.0.2.1"].into_iter()),
            ip("192.0.2.1")
        );
    }

    #[test]
    fn request_ids_are_checked() {
        assert!(valid_request_id("0190f1c2-7e3a-7cc0-b5a2-1f9c4d2e8a11"));
        assert!(!valid_request_id(""));
        assert!(!valid_request_id("a b"));
        assert!(!valid_request_id(&"a".repeat(129)));
    }
}
