//! The clear-text listener: every request gets `308 Permanent Redirect` to the
//! same host, path and query on the HTTPS port, and nothing else is served. Only
//! hosts the proxy serves are redirected to (`proxy.redirect.hosts`, by default the
//! names of the certificate in force and the HTTPS listener's address): a `Host` from
//! anyone else gets 400, so the listener cannot be made to send browsers elsewhere.

use async_trait::async_trait;
use http::{HeaderValue, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::headers::SecurityHeaders;
use crate::problem::{PROBLEM_JSON, Problem};
use crate::tls::CertStore;

/// Answers every clear-text request with a redirect to HTTPS.
pub struct RedirectApp {
    pub https_port: u16,
    pub headers: SecurityHeaders,
    pub hosts: RedirectHosts,
}

/// The hosts redirects may name.
pub enum RedirectHosts {
    /// `proxy.redirect.hosts` as configured (lower case).
    Configured(Vec<String>),
    /// The names of the certificate in force, and the HTTPS listener's address.
    Certificate {
        store: CertStore,
        listener: Option<String>,
    },
}

impl RedirectHosts {
    /// Whether `host` (without port) may be redirected to.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        match self {
            Self::Configured(names) => names.iter().any(|n| name_matches(n, &host)),
            Self::Certificate { store, listener } => {
                listener.as_deref() == Some(host.as_str())
                    || store.names().iter().any(|n| name_matches(n, &host))
            }
        }
    }
}

/// `name` as in a certificate: exact, or `*.rest` matching exactly one more label.
fn name_matches(name: &str, host: &str) -> bool {
    match name.strip_prefix("*.") {
        Some(rest) => host
            .split_once('.')
            .is_some_and(|(label, tail)| !label.is_empty() && tail == rest),
        None => name == host,
    }
}

/// The host part of a `Host` header without its port, if it is a plausible
/// DNS name or IP literal. Anything else (user-info, paths, spaces) is refused
/// so the `Location` cannot be steered to a different URL shape.
pub fn host_without_port(host: &str) -> Option<&str> {
    let host = host.trim();
    let name = if host.starts_with('[') {
        let end = host.find(']')?;
        let rest = &host[end + 1..];
        if !(rest.is_empty() || rest.strip_prefix(':').is_some_and(valid_port)) {
            return None;
        }
        let inner = &host[1..end];
        inner.parse::<std::net::Ipv6Addr>().ok()?;
        &host[..=end]
    } else {
        let (name, port) = host
            .rsplit_once(':')
            .map_or((host, None), |(n, p)| (n, Some(p)));
        if port.is_some_and(|p| !valid_port(p)) {
            return None;
        }
        let ok = !name.is_empty()
            && name.len() <= 253
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !ok {
            return None;
        }
        name
    };
    Some(name)
}

/// A port as RFC 3986 spells it: digits only (`u16::from_str` would take `+80`).
fn valid_port(port: &str) -> bool {
    !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok()
}

/// Builds the redirect `Location`, or `None` if the request cannot be
/// redirected safely.
pub fn location(host: Option<&str>, target: &[u8], https_port: u16) -> Option<String> {
    let host = host_without_port(host?)?;
    let target = std::str::from_utf8(target).ok()?;
    if !target.starts_with('/')
        || target.starts_with("//")
        || target.bytes().any(|b| b < 0x21 || b == 0x7f)
    {
        return None;
    }
    Some(if https_port == 443 {
        format!("https://{host}{target}")
    } else {
        format!("https://{host}:{https_port}{target}")
    })
}

#[async_trait]
impl ServeHttp for RedirectApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri.authority().map(|a| a.as_str()));
        let loc = location(host, req.raw_path(), self.https_port).filter(|_| {
            host.and_then(host_without_port)
                .is_some_and(|h| self.hosts.allows(h))
        });
        let mut resp = Response::new(Vec::new());
        match loc.and_then(|l| HeaderValue::from_str(&l).ok()) {
            Some(l) => {
                *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
                resp.headers_mut().insert(http::header::LOCATION, l);
            }
            None => {
                *resp.status_mut() = StatusCode::BAD_REQUEST;
                let problem = Problem::new(
                    400,
                    "bad-request",
                    "Bad request",
                    "Use HTTPS with a Host this service answers for",
                );
                *resp.body_mut() = problem.to_body_without_request_id().to_vec();
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static(PROBLEM_JSON),
                );
            }
        }
        let len = resp.body().len();
        resp.headers_mut()
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
        resp.headers_mut().insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
        self.headers
            .apply(resp.headers_mut(), self.headers.default_csp());
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_keep_host_path_and_query() {
        assert_eq!(
            location(Some("127.0.0.1:8080"), b"/x?y=1", 8443).as_deref(),
            Some("https://127.0.0.1:8443/x?y=1")
        );
        assert_eq!(
            location(Some("example.org"), b"/", 443).as_deref(),
            Some("https://example.org/")
        );
        assert_eq!(
            location(Some("[::1]:8080"), b"/a", 8443).as_deref(),
            Some("https://[::1]:8443/a")
        );
    }

    #[test]
    fn unsafe_hosts_and_targets_are_refused() {
        for host in [
            "evil.com/x",
            "a@b",
            "",
            "a b",
            "[zz]",
            "host:port",
            "[::1]x",
            "a:+80",
            "a:-1",
            "[::1]:+80",
        ] {
            assert_eq!(location(Some(host), b"/", 8443), None, "{host}");
        }
        assert_eq!(location(None, b"/", 8443), None);
        assert_eq!(location(Some("a"), b"//evil.com/", 8443), None);
        assert_eq!(location(Some("a"), b"http://evil.com/", 8443), None);
    }

    #[test]
    fn only_hosts_the_proxy_serves_are_redirected_to() {
        let hosts = RedirectHosts::Configured(vec![
            "portcullis.example.org".to_owned(),
            "*.tickets.example.org".to_owned(),
        ]);
        assert!(hosts.allows("portcullis.example.org"));
        assert!(hosts.allows("PORTCULLIS.example.org"));
        assert!(hosts.allows("eu.tickets.example.org"));
        assert!(!hosts.allows("tickets.example.org"));
        assert!(!hosts.allows("a.b.tickets.example.org"));
        assert!(!hosts.allows("evil.example"));
        assert!(!hosts.allows("portcullis.example.org.evil.example"));
    }
}
