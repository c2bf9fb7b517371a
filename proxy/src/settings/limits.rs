//! Bounds on what one client connection may hold: the TLS handshake's deadline, the
//! number of open connections, how long an idle keep-alive connection is kept, one
//! deadline per HTTP/1.1 request head, the header fields one request may carry, and
//! HTTP/2's concurrent streams and header-list size. Each has a bounded default: a security proxy must
//! survive the slow and idle clients it exists to stop.

use std::time::Duration;

use portcullis_contract::problems::Problems;
use schemars::JsonSchema;
use serde::Deserialize;

/// The `proxy.limits:` section.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// A TCP connection that has not finished its TLS handshake by then is closed.
    /// Default 10.
    pub tls_handshake_timeout_seconds: u64,
    /// Open HTTPS connections at most; past it new ones are closed at once (counted in
    /// `portcullis_connections_refused_total{reason="connection_limit"}`). Default 10000.
    pub max_connections: usize,
    /// An HTTP/1.1 keep-alive connection idle this long between requests is closed.
    /// Default 60.
    pub keepalive_idle_seconds: u64,
    /// An HTTP/1.1 request head (request line and headers) must arrive whole within
    /// this many seconds of its first byte, however it trickles in; past it the
    /// connection is closed (counted as `reason="request_head_timeout"`). Default 10.
    pub request_head_timeout_seconds: u64,
    /// Header fields one request may carry (HTTP/1.1 and HTTP/2 alike; each repeated
    /// field counts); more are answered 431. At most 256, pingora's own HTTP/1.1 bound.
    /// Default 100.
    pub max_request_headers: usize,
    /// HTTP/2 streams one connection may have open at once. Default 100.
    pub h2_max_concurrent_streams: u32,
    /// The largest HTTP/2 header list (decoded names and values, 32 bytes of overhead
    /// each, RFC 9113 section 6.5.2) a request may carry; HPACK cannot inflate past it.
    /// Default 65536.
    pub h2_max_header_list_bytes: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            tls_handshake_timeout_seconds: 10,
            max_connections: 10_000,
            keepalive_idle_seconds: 60,
            request_head_timeout_seconds: 10,
            max_request_headers: 100,
            h2_max_concurrent_streams: 100,
            h2_max_header_list_bytes: 64 * 1024,
        }
    }
}

/// The validated `proxy.limits`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub tls_handshake_timeout: Duration,
    pub max_connections: usize,
    pub keepalive_idle: Duration,
    pub request_head_timeout: Duration,
    pub max_request_headers: usize,
    pub h2_max_concurrent_streams: u32,
    pub h2_max_header_list_bytes: u32,
}

impl LimitsConfig {
    pub(super) fn validate(&self, p: &mut Problems, at: &str) -> Limits {
        let Self {
            tls_handshake_timeout_seconds,
            max_connections,
            keepalive_idle_seconds,
            request_head_timeout_seconds,
            max_request_headers,
            h2_max_concurrent_streams,
            h2_max_header_list_bytes,
        } = *self;
        if !(1..=120).contains(&tls_handshake_timeout_seconds) {
            p.push(
                format!("{at}.tls_handshake_timeout_seconds"),
                "must be 1 to 120",
            );
        }
        if !(1..=1_000_000).contains(&max_connections) {
            p.push(format!("{at}.max_connections"), "must be 1 to 1000000");
        }
        if !(1..=3600).contains(&keepalive_idle_seconds) {
            p.push(format!("{at}.keepalive_idle_seconds"), "must be 1 to 3600");
        }
        if !(1..=300).contains(&request_head_timeout_seconds) {
            p.push(
                format!("{at}.request_head_timeout_seconds"),
                "must be 1 to 300",
            );
        }
        if !(16..=256).contains(&max_request_headers) {
            p.push(format!("{at}.max_request_headers"), "must be 16 to 256");
        }
        if !(4096..=1_048_576).contains(&h2_max_header_list_bytes) {
            p.push(
                format!("{at}.h2_max_header_list_bytes"),
                "must be 4096 to 1048576",
            );
        }
        if !(1..=1000).contains(&h2_max_concurrent_streams) {
            p.push(
                format!("{at}.h2_max_concurrent_streams"),
                "must be 1 to 1000",
            );
        }
        Limits {
            tls_handshake_timeout: Duration::from_secs(tls_handshake_timeout_seconds),
            max_connections,
            keepalive_idle: Duration::from_secs(keepalive_idle_seconds),
            request_head_timeout: Duration::from_secs(request_head_timeout_seconds),
            max_request_headers,
            h2_max_concurrent_streams,
            h2_max_header_list_bytes,
        }
    }
}
