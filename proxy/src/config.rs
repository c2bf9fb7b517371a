//! The proxy's section of `portcullis.yaml`: serde structs that mirror the file
//! (`*Config`) and the validated [`ProxySettings`] the rest of the crate uses.
//!
//! Addresses, CIDRs and header values are kept as strings in the file structs and
//! parsed during validation, so that one run reports every mistake with its path
//! instead of stopping at the first.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderValue;
use ipnet::IpNet;
use portcullis_authz::revocation_channel::{RevocationChannel, RevocationPubSubConfig};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::forwarded::TrustedProxies;
use crate::headers::{CspMode, SecurityHeaders};
use crate::jwt::{IssuerConfig, IssuerSettings};
use crate::ratelimit::{RateLimitConfig, RateLimitSettings};
use crate::routes::{Route, RouteTable};

/// The `proxy:` section of the configuration file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Listening addresses.
    pub listen: ListenConfig,
    /// Certificate and key. Without them a self-signed certificate for
    /// localhost is generated into `<state_dir>/tls/`.
    pub tls: TlsConfig,
    /// Peers (CIDRs) whose `X-Forwarded-*`, `Forwarded` and `X-Request-Id`
    /// headers are believed. Everyone else's are dropped. Default: none.
    pub trusted_proxies: Vec<String>,
    /// Worker threads of the proxy. Default: one per core.
    pub worker_threads: Option<usize>,
    /// Shutdown behaviour on SIGTERM.
    pub shutdown: ShutdownConfig,
    /// Named upstreams that routes forward to.
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// Routes, matched on the normalised path by longest prefix at a segment
    /// boundary. A request that matches none gets 404 from the proxy.
    pub routes: Vec<RouteConfig>,
    /// Security headers added to every response, including the proxy's own.
    pub headers: HeadersConfig,
    /// The CSP violation report collector at `POST /.portcullis/csp-report`.
    pub csp_reports: CspReportsConfig,
    /// The clear-text listener's redirect target.
    pub redirect: RedirectConfig,
    /// Who may sign access tokens, and where sessions are revoked.
    pub auth: AuthConfig,
    /// The Rego policy bundle deciding every request.
    pub policy: PolicyConfig,
    /// Rate limits (GCRA), local or shared through Redis.
    pub rate_limits: RateLimitConfig,
    /// CSRF defence for cookie-authenticated unsafe requests.
    pub csrf: CsrfConfig,
}

/// Authentication of requests.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Token issuers. Default: the backend (`portcullis`, JWKS at
    /// `http://127.0.0.1:8081/auth/jwks.json`, EdDSA).
    pub issuers: Vec<IssuerConfig>,
    /// Cookie holding a browser's access token. Default `__Host-portcullis-access`.
    pub access_cookie: String,
    /// Shared proxy↔backend identity key. Default `<state_dir>/keys/identity.key`.
    pub identity_key_file: Option<PathBuf>,
    /// The backend's revocation feed. Default `http://127.0.0.1:8081/auth/revocations`;
    /// `null` disables it (then only token expiry ends a session at the proxy).
    pub revocation_feed_url: Option<String>,
    /// How often the feed is polled. Default 500.
    pub revocation_poll_milliseconds: u64,
    /// Redis channel on which the backend announces revocations: each message
    /// makes the proxy poll the feed at once, so revocations reach every proxy
    /// in milliseconds. Polling goes on as the fallback. Default none.
    pub revocation_pubsub: Option<RevocationPubSubConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            issuers: vec![IssuerConfig {
                algorithms: vec!["EdDSA".to_owned()],
                refresh_interval_seconds: 60,
                min_refetch_interval_seconds: 5,
                ..IssuerConfig::with_jwks_url(
                    "portcullis",
                    "backend",
                    vec!["portcullis".to_owned()],
                    "http://127.0.0.1:8081/auth/jwks.json",
                )
            }],
            access_cookie: "__Host-portcullis-access".to_owned(),
            identity_key_file: None,
            revocation_feed_url: Some("http://127.0.0.1:8081/auth/revocations".to_owned()),
            revocation_poll_milliseconds: 500,
            revocation_pubsub: None,
        }
    }
}

/// The policy bundle.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Folder of `*.rego`, `*_test.rego` and `data.yaml`. Default `policies`.
    /// Watched: edits (and SIGHUP) reload it after its tests pass.
    pub dir: PathBuf,
    /// Longest evaluation before it counts as a deny. Default 100.
    pub evaluation_time_limit_milliseconds: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("policies"),
            evaluation_time_limit_milliseconds: 100,
        }
    }
}

/// CSRF defence: Fetch Metadata, Origin and a double-submit token.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CsrfConfig {
    /// The cookie the backend sets at sign-in. Default `__Host-portcullis-csrf`.
    pub cookie: String,
    /// The header the page echoes it in. Default `x-csrf-token`.
    pub header: String,
    /// Origins allowed besides the request's own (`https://host[:port]`).
    pub allowed_origins: Vec<String>,
}

impl Default for CsrfConfig {
    fn default() -> Self {
        Self {
            cookie: "__Host-portcullis-csrf".to_owned(),
            header: "x-csrf-token".to_owned(),
            allowed_origins: Vec::new(),
        }
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        let upstreams = BTreeMap::from([(
            "backend".to_owned(),
            UpstreamConfig {
                address: "127.0.0.1:8081".to_owned(),
                connect_timeout_seconds: 2,
                read_timeout_seconds: 30,
            },
        )]);
        let route = |name: &str, prefix: &str| RouteConfig {
            name: name.to_owned(),
            path_prefix: prefix.to_owned(),
            upstream: "backend".to_owned(),
            csp: None,
        };
        Self {
            listen: ListenConfig::default(),
            tls: TlsConfig::default(),
            trusted_proxies: Vec::new(),
            worker_threads: None,
            shutdown: ShutdownConfig::default(),
            upstreams,
            routes: vec![
                route("api", "/api"),
                route("auth", "/auth"),
                route("admin", "/admin"),
                route("monitoring", "/monitoring"),
                route("app", "/"),
            ],
            headers: HeadersConfig::default(),
            csp_reports: CspReportsConfig::default(),
            redirect: RedirectConfig::default(),
            auth: AuthConfig::default(),
            policy: PolicyConfig::default(),
            rate_limits: RateLimitConfig::default(),
            csrf: CsrfConfig::default(),
        }
    }
}

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

/// One upstream.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `host:port` of a plain-HTTP upstream, normally on loopback.
    pub address: String,
    /// Default 2.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_seconds: u64,
    /// Default 30.
    #[serde(default = "default_read_timeout")]
    pub read_timeout_seconds: u64,
}

fn default_connect_timeout() -> u64 {
    2
}
fn default_read_timeout() -> u64 {
    30
}

/// One route.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Route name: the `route` label in metrics and audit events.
    pub name: String,
    /// Path prefix, matched at segment boundaries (`/api` matches `/api` and
    /// `/api/x`, not `/apix`). `/` matches everything.
    pub path_prefix: String,
    /// Name of an entry in `upstreams`. Default `backend`.
    #[serde(default = "default_upstream")]
    pub upstream: String,
    /// Overrides of the default CSP for this route.
    pub csp: Option<RouteCspConfig>,
}

fn default_upstream() -> String {
    "backend".to_owned()
}

/// A route's CSP override; unset fields inherit `headers.csp`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RouteCspConfig {
    /// The policy, without `report-uri`/`report-to` (the proxy adds them).
    pub policy: Option<String>,
    /// `enforce` or `report_only`.
    pub mode: Option<CspMode>,
}

/// Security headers. Each value is sent verbatim.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HeadersConfig {
    /// Default 63072000 (two years).
    pub hsts_max_age_seconds: u64,
    /// Default true.
    pub hsts_include_subdomains: bool,
    /// Default false: preload is a commitment to be made on purpose.
    pub hsts_preload: bool,
    /// Default `no-referrer`.
    pub referrer_policy: String,
    /// Default denies powerful features.
    pub permissions_policy: String,
    /// Default `same-origin`.
    pub cross_origin_opener_policy: String,
    /// Default `same-origin`.
    pub cross_origin_resource_policy: String,
    /// Default `DENY`.
    pub frame_options: String,
    /// The default Content-Security-Policy of every route.
    pub csp: CspConfig,
}

impl Default for HeadersConfig {
    fn default() -> Self {
        Self {
            hsts_max_age_seconds: 63_072_000,
            hsts_include_subdomains: true,
            hsts_preload: false,
            referrer_policy: "no-referrer".to_owned(),
            permissions_policy: "accelerometer=(), camera=(), geolocation=(), gyroscope=(), \
                                 magnetometer=(), microphone=(), payment=(), usb=()"
                .to_owned(),
            cross_origin_opener_policy: "same-origin".to_owned(),
            cross_origin_resource_policy: "same-origin".to_owned(),
            frame_options: "DENY".to_owned(),
            csp: CspConfig::default(),
        }
    }
}

/// A Content-Security-Policy and how it is applied.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CspConfig {
    /// The policy, without `report-uri`/`report-to` (the proxy adds them).
    pub policy: String,
    /// `enforce` (default) or `report_only`.
    pub mode: CspMode,
}

impl Default for CspConfig {
    fn default() -> Self {
        Self {
            policy:
                "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                     font-src 'self'; connect-src 'self'; manifest-src 'self'; form-action 'self'; \
                     frame-ancestors 'none'; base-uri 'none'; object-src 'none'; \
                     require-trusted-types-for 'script'; upgrade-insecure-requests"
                    .to_owned(),
            mode: CspMode::Enforce,
        }
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
}

/// Validated proxy settings: everything the running proxy needs, parsed.
#[derive(Debug)]
pub struct ProxySettings {
    pub https_addr: SocketAddr,
    pub http_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    pub redirect_https_port: u16,
    pub tls: TlsSource,
    pub trusted_proxies: TrustedProxies,
    pub worker_threads: usize,
    pub shutdown_grace: Duration,
    pub routes: RouteTable,
    pub headers: SecurityHeaders,
    pub csp_report_max_body_bytes: usize,
    pub issuers: Vec<IssuerSettings>,
    pub access_cookie: String,
    pub identity_key_file: PathBuf,
    pub revocation_feed_url: Option<String>,
    pub revocation_poll: Duration,
    /// The Redis channel of revocation announcements.
    pub revocation_pubsub: Option<RevocationChannel>,
    pub policy_dir: PathBuf,
    pub policy_time_limit: Duration,
    pub rate_limits: RateLimitSettings,
    pub csrf: crate::csrf::CsrfSettings,
    /// The proxy's audit log (emitter `proxy`); the binary sets it from the `audit:`
    /// section (default: `portcullis_audit::AuditConfig::default()`).
    pub audit: portcullis_audit::AuditSettings,
    /// The backend's ingest endpoint the proxy ships its events to, if any.
    pub audit_ingest_url: Option<String>,
}

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// Operator-provided files, watched for changes.
    Files { certificate: PathBuf, key: PathBuf },
    /// A self-signed localhost certificate kept in this folder.
    SelfSigned { dir: PathBuf },
}

/// One upstream, parsed.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    pub address: SocketAddr,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
}

/// Collects `path: message` lines during validation.
#[derive(Debug, Default)]
pub struct Problems(Vec<String>);

impl Problems {
    pub fn push(&mut self, path: impl AsRef<str>, message: impl std::fmt::Display) {
        self.0.push(format!("{}: {message}", path.as_ref()));
    }
    pub fn into_vec(self) -> Vec<String> {
        self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

fn parse_addr(problems: &mut Problems, path: &str, value: &str) -> Option<SocketAddr> {
    match value.parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            problems.push(path, format!("`{value}` is not an IP:port address"));
            None
        }
    }
}

pub(crate) fn validated_header_value(
    problems: &mut Problems,
    path: &str,
    value: &str,
) -> Option<HeaderValue> {
    match HeaderValue::from_str(value) {
        Ok(v) if !value.trim().is_empty() => Some(v),
        _ => {
            problems.push(path, "must be a non-empty, printable header value");
            None
        }
    }
}

impl ProxyConfig {
    /// Validates the section. `prefix` is the section's path in the file
    /// (`proxy`), `state_dir` where generated material goes. Returns every
    /// problem found, each as `path: message`.
    pub fn validate(
        &self,
        prefix: &str,
        base: &Path,
        state_dir: &Path,
    ) -> Result<ProxySettings, Vec<String>> {
        let Self {
            listen,
            tls,
            trusted_proxies,
            worker_threads,
            shutdown,
            upstreams,
            routes,
            headers,
            csp_reports,
            redirect,
            auth,
            policy,
            rate_limits,
            csrf,
        } = self;
        let mut p = Problems::default();
        let https_addr = parse_addr(&mut p, &format!("{prefix}.listen.https"), &listen.https);
        let http_addr = listen
            .http
            .as_deref()
            .map(|a| parse_addr(&mut p, &format!("{prefix}.listen.http"), a));
        let admin_addr = parse_addr(&mut p, &format!("{prefix}.listen.admin"), &listen.admin);

        let tls = match (&tls.certificate_file, &tls.private_key_file) {
            (Some(certificate), Some(key)) => {
                for (field, file) in [("certificate_file", certificate), ("private_key_file", key)]
                {
                    if !file.is_file() {
                        p.push(
                            format!("{prefix}.tls.{field}"),
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
                    format!("{prefix}.tls"),
                    "set both certificate_file and private_key_file, or neither",
                );
                None
            }
        };

        let mut nets = Vec::new();
        for (i, cidr) in trusted_proxies.iter().enumerate() {
            match cidr
                .parse::<IpNet>()
                .or_else(|_| cidr.parse::<std::net::IpAddr>().map(IpNet::from))
            {
                Ok(net) => nets.push(net),
                Err(_) => p.push(
                    format!("{prefix}.trusted_proxies[{i}]"),
                    format!("`{cidr}` is not a CIDR (e.g. 10.0.0.0/8) or IP address"),
                ),
            }
        }

        if *worker_threads == Some(0) {
            p.push(format!("{prefix}.worker_threads"), "must be at least 1");
        }
        if shutdown.grace_seconds > 3600 {
            p.push(
                format!("{prefix}.shutdown.grace_seconds"),
                "must be at most 3600",
            );
        }

        let mut parsed_upstreams = BTreeMap::new();
        for (name, up) in upstreams {
            let path = format!("{prefix}.upstreams.{name}");
            if let Some(address) = parse_addr(&mut p, &format!("{path}.address"), &up.address) {
                if up.connect_timeout_seconds == 0 || up.read_timeout_seconds == 0 {
                    p.push(&path, "timeouts must be at least 1 second");
                }
                parsed_upstreams.insert(
                    name.clone(),
                    Upstream {
                        name: name.clone(),
                        address,
                        connect_timeout: Duration::from_secs(up.connect_timeout_seconds),
                        read_timeout: Duration::from_secs(up.read_timeout_seconds),
                    },
                );
            }
        }

        let headers = SecurityHeaders::try_new(headers, &format!("{prefix}.headers"), &mut p);

        let mut parsed_routes = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        if routes.is_empty() {
            p.push(format!("{prefix}.routes"), "at least one route is required");
        }
        for (i, r) in routes.iter().enumerate() {
            let path = format!("{prefix}.routes[{i}]");
            if r.name.is_empty()
                || !r
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                p.push(
                    format!("{path}.name"),
                    "use letters, digits, `_` and `-` only",
                );
            } else if !names.insert(r.name.clone()) {
                p.push(
                    format!("{path}.name"),
                    format!("`{}` is used twice", r.name),
                );
            }
            let prefix_ok = r.path_prefix.starts_with('/')
                && (r.path_prefix == "/" || !r.path_prefix.ends_with('/'))
                && crate::path::normalise(&r.path_prefix)
                    .map(|n| n.as_str() == r.path_prefix)
                    .unwrap_or(false);
            if !prefix_ok {
                p.push(
                    format!("{path}.path_prefix"),
                    "must be a normalised absolute path without a trailing slash (e.g. /api)",
                );
            }
            let upstream = parsed_upstreams.get(&r.upstream).cloned();
            if upstream.is_none() {
                p.push(
                    format!("{path}.upstream"),
                    format!("no upstream named `{}` in {prefix}.upstreams", r.upstream),
                );
            }
            let csp = headers.as_ref().and_then(|h| {
                let policy = r
                    .csp
                    .as_ref()
                    .and_then(|c| c.policy.as_deref())
                    .unwrap_or(&self.headers.csp.policy);
                let mode = r
                    .csp
                    .as_ref()
                    .and_then(|c| c.mode)
                    .unwrap_or(self.headers.csp.mode);
                h.csp_for(policy, mode, &format!("{path}.csp.policy"), &mut p)
            });
            if let (Some(upstream), Some(csp), true) = (upstream, csp, prefix_ok) {
                parsed_routes.push(Route {
                    name: r.name.clone(),
                    prefix: r.path_prefix.clone(),
                    upstream,
                    csp,
                });
            }
        }

        if csp_reports.max_body_bytes == 0 || csp_reports.max_body_bytes > 1024 * 1024 {
            p.push(
                format!("{prefix}.csp_reports.max_body_bytes"),
                "must be between 1 and 1048576",
            );
        }
        if redirect.https_port == Some(0) {
            p.push(format!("{prefix}.redirect.https_port"), "must not be 0");
        }

        let resolve = |f: &Path| {
            if f.is_absolute() || base.as_os_str().is_empty() {
                f.to_owned()
            } else {
                base.join(f)
            }
        };
        let mut issuers = Vec::new();
        if auth.issuers.is_empty() {
            p.push(
                format!("{prefix}.auth.issuers"),
                "at least one issuer is required",
            );
        }
        for (i, cfg) in auth.issuers.iter().enumerate() {
            match IssuerSettings::try_new(cfg) {
                Ok(s) => issuers.push(s),
                Err(errors) => {
                    for e in errors {
                        p.push(format!("{prefix}.auth.issuers[{i}].{}", e.field), e.message);
                    }
                }
            }
        }
        if !auth.access_cookie.starts_with("__Host-") {
            p.push(
                format!("{prefix}.auth.access_cookie"),
                "use a `__Host-` cookie name",
            );
        }
        if let Some(url) = &auth.revocation_feed_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            p.push(
                format!("{prefix}.auth.revocation_feed_url"),
                "must be an http(s) URL",
            );
        }
        let revocation_pubsub = auth.revocation_pubsub.as_ref().and_then(|c| {
            c.validate()
                .map_err(|problems| {
                    for (field, msg) in problems {
                        p.push(format!("{prefix}.auth.revocation_pubsub.{field}"), msg);
                    }
                })
                .ok()
        });
        if auth.revocation_pubsub.is_some() && auth.revocation_feed_url.is_none() {
            p.push(
                format!("{prefix}.auth.revocation_pubsub"),
                "needs revocation_feed_url: announcements only trigger a poll of the feed",
            );
        }
        if !(100..=60_000).contains(&auth.revocation_poll_milliseconds) {
            p.push(
                format!("{prefix}.auth.revocation_poll_milliseconds"),
                "must be 100 to 60000",
            );
        }
        let policy_dir = resolve(&policy.dir);
        if !policy_dir.is_dir() {
            p.push(
                format!("{prefix}.policy.dir"),
                format!("{} is not a folder", policy_dir.display()),
            );
        }
        if !(1..=10_000).contains(&policy.evaluation_time_limit_milliseconds) {
            p.push(
                format!("{prefix}.policy.evaluation_time_limit_milliseconds"),
                "must be 1 to 10000",
            );
        }
        let route_names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
        let rate_limits = match rate_limits.validate(&route_names) {
            Ok(r) => Some(r),
            Err(errors) => {
                for e in errors {
                    p.push(format!("{prefix}.rate_limits.{}", e.field), e.message);
                }
                None
            }
        };
        for (i, o) in csrf.allowed_origins.iter().enumerate() {
            if !o.starts_with("https://") || o.ends_with('/') {
                p.push(
                    format!("{prefix}.csrf.allowed_origins[{i}]"),
                    "an origin is https://host[:port] without a path",
                );
            }
        }
        if !csrf.cookie.starts_with("__Host-") {
            p.push(
                format!("{prefix}.csrf.cookie"),
                "use a `__Host-` cookie name",
            );
        }

        // The `audit:` section replaces these defaults (see the binary's config).
        let audit =
            match portcullis_audit::AuditConfig::default().validate("audit", base, state_dir) {
                Ok(t) => Some(t),
                Err(problems) => {
                    for line in problems {
                        p.0.push(line);
                    }
                    None
                }
            };

        match (
            https_addr,
            http_addr,
            admin_addr,
            tls,
            headers,
            rate_limits,
            audit,
            p.is_empty(),
        ) {
            (
                Some(https_addr),
                http_addr,
                Some(admin_addr),
                Some(tls),
                Some(headers),
                Some(rate_limits),
                Some(audit),
                true,
            ) => Ok(ProxySettings {
                redirect_https_port: redirect.https_port.unwrap_or(https_addr.port()),
                https_addr,
                http_addr: http_addr.flatten(),
                admin_addr,
                tls,
                trusted_proxies: TrustedProxies::new(nets),
                worker_threads: worker_threads
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
                shutdown_grace: Duration::from_secs(shutdown.grace_seconds),
                routes: RouteTable::new(parsed_routes),
                headers,
                csp_report_max_body_bytes: csp_reports.max_body_bytes,
                issuers,
                access_cookie: auth.access_cookie.clone(),
                identity_key_file: auth
                    .identity_key_file
                    .as_deref()
                    .map_or_else(|| state_dir.join("keys/identity.key"), resolve),
                revocation_feed_url: auth.revocation_feed_url.clone(),
                revocation_poll: Duration::from_millis(auth.revocation_poll_milliseconds),
                revocation_pubsub,
                policy_dir,
                policy_time_limit: Duration::from_millis(policy.evaluation_time_limit_milliseconds),
                rate_limits,
                csrf: crate::csrf::CsrfSettings {
                    cookie: csrf.cookie.clone(),
                    header: csrf.header.to_ascii_lowercase(),
                    extra_origins: csrf.allowed_origins.clone(),
                },
                audit_ingest_url: audit.ingest_url.clone(),
                audit: audit.settings(crate::audit::EMITTER),
            }),
            _ => Err(p.into_vec()),
        }
    }
}
