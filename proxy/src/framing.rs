//! Where a request ends, said one way only: the message-framing headers a client may
//! send, and the hop-by-hop headers that never go upstream.
//!
//! A load balancer in front of the proxy and the proxy itself must agree on where each
//! request ends, or a second request hidden in the first one's body reaches the
//! backend unchecked (request smuggling). pingora's parser already refuses much; this
//! refuses the rest of what RFC 9112 leaves to the recipient, before anything else
//! reads the request:
//! - `Content-Length` must be one header with one value of digits only: no sign,
//!   no list, no repeat (even of the same value);
//! - `Transfer-Encoding` must be exactly `chunked` (one header, one coding), and never
//!   together with `Content-Length`;
//! - HTTP/2 requests must carry no `Transfer-Encoding` (h2 frames the body itself;
//!   RFC 9113 §8.2.2 makes it malformed);
//! - `Host` at most once (RFC 9112 §3.2).
//!
//! Chunk syntax itself (extensions, a bare LF after a chunk size) is parsed by pingora,
//! out of our reach: the gateway closes the connection after every chunked HTTP/1
//! request, so whatever a proxy in front made of such a body, no byte after it is read
//! as a request. The upstream body is re-framed by pingora, never passed through.
//!
//! Hop-by-hop headers (RFC 9110 §7.6.1: those `Connection` names, and `Connection`,
//! `Keep-Alive`, `TE`, `Upgrade`, `Proxy-Connection` themselves) are removed from the
//! upstream request: they describe the client's connection, not the backend's.

use http::{HeaderMap, HeaderName, Version, header};

/// Why a request's framing is refused (the metric label and log reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("Content-Length is not a plain number")]
    BadContentLength,
    #[error("Content-Length is repeated")]
    RepeatedContentLength,
    #[error("Transfer-Encoding other than a single `chunked`")]
    BadTransferEncoding,
    #[error("both Transfer-Encoding and Content-Length")]
    TransferEncodingWithLength,
    #[error("Transfer-Encoding in an HTTP/2 request")]
    TransferEncodingOverH2,
    #[error("Host is repeated")]
    RepeatedHost,
}

impl FramingError {
    /// The `reason` label of `portcullis_http_rejections_total`.
    pub fn code(self) -> &'static str {
        match self {
            Self::BadContentLength => "bad_content_length",
            Self::RepeatedContentLength => "repeated_content_length",
            Self::BadTransferEncoding => "bad_transfer_encoding",
            Self::TransferEncodingWithLength => "transfer_encoding_with_length",
            Self::TransferEncodingOverH2 => "transfer_encoding_over_h2",
            Self::RepeatedHost => "repeated_host",
        }
    }
}

/// Checks the framing headers of a request (see the module documentation).
pub fn check(version: Version, headers: &HeaderMap) -> Result<(), FramingError> {
    if headers.get_all(header::HOST).iter().nth(1).is_some() {
        return Err(FramingError::RepeatedHost);
    }
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    let length = lengths.next();
    if lengths.next().is_some() {
        return Err(FramingError::RepeatedContentLength);
    }
    if let Some(v) = length {
        let b = v.as_bytes();
        if b.is_empty() || b.len() > 19 || !b.iter().all(u8::is_ascii_digit) {
            return Err(FramingError::BadContentLength);
        }
    }
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
    if let Some(te) = codings.next() {
        if version == Version::HTTP_2 {
            return Err(FramingError::TransferEncodingOverH2);
        }
        if codings.next().is_some() || !te.as_bytes().eq_ignore_ascii_case(b"chunked") {
            return Err(FramingError::BadTransferEncoding);
        }
        if length.is_some() {
            return Err(FramingError::TransferEncodingWithLength);
        }
    }
    Ok(())
}

/// The hop-by-hop headers always removed, besides those `Connection` names.
const HOP_BY_HOP: [&str; 5] = [
    "connection",
    "keep-alive",
    "te",
    "upgrade",
    "proxy-connection",
];

/// The headers of `headers` that must not go upstream: the fixed hop-by-hop list and
/// every name `Connection` lists (framing headers excepted: pingora frames the
/// upstream request itself).
pub fn hop_by_hop(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut names: Vec<HeaderName> = HOP_BY_HOP
        .iter()
        .map(|n| HeaderName::from_static(n))
        .filter(|n| headers.contains_key(n))
        .collect();
    for value in headers.get_all(header::CONNECTION) {
        let Ok(text) = value.to_str() else { continue };
        for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes())
                && name != header::CONTENT_LENGTH
                && name != header::TRANSFER_ENCODING
                && name != header::HOST
                && headers.contains_key(&name)
                && !names.contains(&name)
            {
                names.push(name);
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn framing_is_one_plain_length_or_one_chunked_coding() {
        let h1 = Version::HTTP_11;
        let ok = |pairs: &[(&str, &str)]| check(h1, &headers(pairs));
        assert_eq!(ok(&[]), Ok(()));
        assert_eq!(ok(&[("content-length", "5")]), Ok(()));
        assert_eq!(ok(&[("transfer-encoding", "chunked")]), Ok(()));
        assert_eq!(ok(&[("transfer-encoding", "Chunked")]), Ok(()));
        for bad in [
            "+5",
            "-5",
            "5 ",
            " 5",
            "5,5",
            "0x5",
            "",
            "5e2",
            "99999999999999999999",
        ] {
            assert_eq!(
                ok(&[("content-length", bad)]),
                Err(FramingError::BadContentLength),
                "{bad:?}"
            );
        }
        assert_eq!(
            ok(&[("content-length", "5"), ("content-length", "5")]),
            Err(FramingError::RepeatedContentLength)
        );
        for bad in [
            "chunked, identity",
            "identity",
            "xchunked",
            "chunked;x",
            "gzip, chunked",
        ] {
            assert_eq!(
                ok(&[("transfer-encoding", bad)]),
                Err(FramingError::BadTransferEncoding),
                "{bad:?}"
            );
        }
        assert_eq!(
            ok(&[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked")
            ]),
            Err(FramingError::BadTransferEncoding)
        );
        assert_eq!(
            ok(&[("transfer-encoding", "chunked"), ("content-length", "5")]),
            Err(FramingError::TransferEncodingWithLength)
        );
        assert_eq!(
            check(
                Version::HTTP_2,
                &headers(&[("transfer-encoding", "chunked")])
            ),
            Err(FramingError::TransferEncodingOverH2)
        );
        assert_eq!(
            ok(&[("host", "a"), ("host", "b")]),
            Err(FramingError::RepeatedHost)
        );
    }

    #[test]
    fn connection_named_and_fixed_hop_headers_are_found() {
        let h = headers(&[
            ("connection", "close, X-Secret-Flag"),
            ("connection", "keep-alive , content-length"),
            ("x-secret-flag", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("proxy-connection", "keep-alive"),
            ("content-length", "0"),
            ("x-kept", "1"),
        ]);
        let names: Vec<String> = hop_by_hop(&h).iter().map(|n| n.to_string()).collect();
        assert_eq!(
            names,
            [
                "connection",
                "keep-alive",
                "te",
                "upgrade",
                "proxy-connection",
                "x-secret-flag"
            ]
        );
    }
}
