//! Header names between proxy and backend, and the request-id rule both apply.

/// Base64url JSON of the verified [`crate::identity::Identity`].
pub const IDENTITY_HEADER: &str = "x-portcullis-identity";
/// `v1=<hex HMAC>` binding the identity to one request.
pub const SIGNATURE_HEADER: &str = "x-portcullis-signature";
/// The id of the proxy's policy decision for a forwarded request (also inside the
/// signed identity); the backend's logs and audit events join on it.
pub const DECISION_ID_HEADER: &str = "x-portcullis-decision-id";
/// The client address the proxy determined (trusted-proxy list applied).
pub const CLIENT_IP_HEADER: &str = "x-portcullis-client-ip";
/// The request id, set by the proxy on every forwarded request.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Every header whose name starts with this is the proxy's to set: a client's copy is dropped.
pub const RESERVED_PREFIX: &str = "x-portcullis-";

/// Longest request id accepted from a trusted peer.
pub const MAX_REQUEST_ID_CHARS: usize = 128;

/// Whether `id` may be used as a request id: 1–128 characters of `[A-Za-z0-9._:-]`, so
/// it can go into logs, headers and audit events without escaping.
#[must_use]
pub fn valid_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_CHARS
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The client network a rate limit or lockout counts against: an IPv4 address as it
/// is, an IPv6 address by its /64 (one host usually holds a whole /64, so counting
/// single addresses would let it rotate the low 64 bits past every limit). Proxy and
/// backend both key on this, so a lockout cannot be evaded where the rate limit holds.
#[must_use]
pub fn client_network(ip: std::net::IpAddr) -> String {
    let mut out = String::with_capacity(24);
    write_client_network(&mut out, ip);
    out
}

/// [`client_network`], appended to `out` (the proxy writes it into a rate-limit key
/// on every request, without a string of its own).
pub fn write_client_network(out: &mut String, ip: std::net::IpAddr) {
    use std::fmt::Write as _;
    // Writing to a `String` cannot fail.
    let _ = match ip.to_canonical() {
        std::net::IpAddr::V4(v4) => write!(out, "{v4}"),
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            write!(out, "{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_short_and_plain() {
        assert!(valid_request_id("0192f3a4-7b2c-7e55-9a10-3c1d2e4f5a6b"));
        assert!(valid_request_id("trace:abc_1.2"));
        assert!(!valid_request_id(""));
        assert!(!valid_request_id("a b"));
        assert!(!valid_request_id("x\r\ny"));
        assert!(!valid_request_id(&"a".repeat(129)));
    }

    #[test]
    fn ipv6_clients_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let a = client_network("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = client_network("2001:db8:1:2:ffff:1:2:3".parse().unwrap());
        assert_eq!(a, b);
        assert_eq!(a, "2001:db8:1:2::/64");
        assert_ne!(a, client_network("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(
            client_network("::ffff:192.0.2.7".parse().unwrap()),
            "192.0.2.7"
        );
        assert_eq!(client_network("192.0.2.7".parse().unwrap()), "192.0.2.7");
    }
}
