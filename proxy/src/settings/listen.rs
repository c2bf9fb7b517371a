//! Where the proxy listens and what it serves there: the listeners, the
//! serving certificate's source, the trusted-proxy list, threads, shutdown,
//! the CSP report collector's limit and the redirect target.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::forwarded::TrustedProxies;
use portcullis_contract::problems::Problems;

/// Listening addresses.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// TLS listener (TLS 1.2/1.3, h2 and http/1.1). Default `0.0.0.0:8443`.
    pub https: String,
    /// Clear-text listener that only redirects (308) to HTTPS. Default
    /// `0.0.0.0:8080`; `null` disables it.
    pub http: Option<String>,
    /// Admin listener: `/metrics`, `/health/live`, `/health/ready`. Default
    /// `127.0.0.1:9090`. Keep it on loopback or a private interface.
    pub admin: String,
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            https: "0.0.0.0:8443".to_owned(),
            http: Some("0.0.0.0:8080".to_owned()),
            admin: "127.0.0.1:9090".to_owned(),
        }
    }
}

/// Certificate files (PEM). Both or neither.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Certificate chain, leaf first.
    pub certificate_file: Option<PathBuf>,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub private_key_file: Option<PathBuf>,
}

/// What SIGTERM does.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// After SIGTERM the proxy reports not-ready, finishes in-flight requests and
    /// exits as soon as none is left, at the latest after this many seconds.
    /// Default 10.
    pub grace_seconds: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self { grace_seconds: 10 }
    }
}

/// The CSP report collector.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CspReportsConfig {
    /// Largest accepted report body. Default 65536.
    pub max_body_bytes: usize,
}

impl Default for CspReportsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
        }
    }
}

/// Where the clear-text listener sends clients.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RedirectConfig {
    /// Port in the `Location` of redirects. Default: the HTTPS listener's port
    /// (set it when a load balancer maps 443 to the proxy).
    pub https_port: Option<u16>,
    /// Host names redirects may name (`*.example.org` matches one label); a request for
    /// any other host gets 400. Default: the names of the certificate in force and the
    /// HTTPS listener's address.
    pub hosts: Vec<String>,
}

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// Operator-provided files, watched for changes.
    Files { certificate: PathBuf, key: PathBuf },
    /// A self-signed localhost certificate kept in this folder.
    SelfSigned { dir: PathBuf },
}

/// The three listening addresses, parsed.
pub(super) struct Listeners {
    pub https: Option<SocketAddr>,
    /// `None`: disabled; `Some(None)`: configured but invalid.
    pub http: Option<Option<SocketAddr>>,
    pub admin: Option<SocketAddr>,
}

pub(super) fn parse_addr(p: &mut Problems, path: &str, value: &str) -> Option<SocketAddr> {
    match value.parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            p.push(path, format!("`{value}` is not an IP:port address"));
            None
        }
    }
}

impl ListenConfig {
    /// `at` is the section's path (`proxy.listen`).
    pub(super) fn validate(&self, p: &mut Problems, at: &str) -> Listeners {
        let Self { https, http, admin } = self;
        Listeners {
            https: parse_addr(p, &format!("{at}.https"), https),
            http: http
                .as_deref()
                .map(|a| parse_addr(p, &format!("{at}.http"), a)),
            admin: parse_addr(p, &format!("{at}.admin"), admin),
        }
    }
}

impl TlsConfig {
    /// The certificate's source; without files, a self-signed one in
    /// `<state_dir>/tls`.
    pub(super) fn validate(
        &self,
        p: &mut Problems,
        at: &str,
        state_dir: &Path,
    ) -> Option<TlsSource> {
        let Self {
            certificate_file,
            private_key_file,
        } = self;
        match (certificate_file, private_key_file) {
            (Some(certificate), Some(key)) => {
                for (field, file) in [("certificate_file", certificate), ("private_key_file", key)]
                {
                    if !file.is_file() {
                        p.push(
                            format!("{at}.{field}"),
                            format!("{} is not a readable file", file.display()),
                        );
                    }
                }
                Some(TlsSource::Files {
                    certificate: certificate.clone(),
                    key: key.clone(),
                })
            }
            (None, None) => Some(TlsSource::SelfSigned {
                dir: state_dir.join("tls"),
            }),
            _ => {
                p.push(
                    at,
                    "set both certificate_file and private_key_file, or neither",
                );
                None
            }
        }
    }
}

/// The trusted-proxy list; `at` is its path (`proxy.trusted_proxies`).
pub(super) fn trusted_proxies(p: &mut Problems, at: &str, cidrs: &[String]) -> TrustedProxies {
    let mut nets = Vec::new();
    for (i, cidr) in cidrs.iter().enumerate() {
        match cidr
            .parse::<IpNet>()
            .or_else(|_| cidr.parse::<std::net::IpAddr>().map(IpNet::from))
        {
            Ok(net) => nets.push(net),
            Err(_) => p.push(
                format!("{at}[{i}]"),
                format!("`{cidr}` is not a CIDR (e.g. 10.0.0.0/8) or IP address"),
            ),
        }
    }
    TrustedProxies::new(nets)
}

/// Worker threads: at least one; default one per core.
pub(super) fn worker_threads(p: &mut Problems, at: &str, configured: Option<usize>) -> usize {
    if configured == Some(0) {
        p.push(at, "must be at least 1");
    }
    configured.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

impl ShutdownConfig {
    pub(super) fn validate(&self, p: &mut Problems, at: &str) -> std::time::Duration {
        let Self { grace_seconds } = self;
        if *grace_seconds > 3600 {
            p.push(format!("{at}.grace_seconds"), "must be at most 3600");
        }
        std::time::Duration::from_secs(*grace_seconds)
    }
}

impl CspReportsConfig {
    /// The largest accepted report body.
    pub(super) fn validate(&self, p: &mut Problems, at: &str) -> usize {
        let Self { max_body_bytes } = self;
        if *max_body_bytes == 0 || *max_body_bytes > 1024 * 1024 {
            p.push(
                format!("{at}.max_body_bytes"),
                "must be between 1 and 1048576",
            );
        }
        *max_body_bytes
    }
}

impl RedirectConfig {
    /// The port in `Location`, `https_port` defaulting to the HTTPS listener's.
    pub(super) fn validate(&self, p: &mut Problems, at: &str) -> (Option<u16>, Vec<String>) {
        let Self { https_port, hosts } = self;
        if *https_port == Some(0) {
            p.push(format!("{at}.https_port"), "must not be 0");
        }
        for (i, host) in hosts.iter().enumerate() {
            let name = host.strip_prefix("*.").unwrap_or(host);
            let ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b));
            if !ok {
                p.push(format!("{at}.hosts[{i}]"), "not a host name or IP address");
            }
        }
        (
            *https_port,
            hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
        )
    }
}
