//! The proxy's section of `portcullis.yaml`: serde structs that mirror the file
//! (`*Config`) and the validated [`ProxySettings`] the rest of the crate uses.
//!
//! Addresses, CIDRs and header values are kept as strings in the file structs and
//! parsed during validation, so that one run reports every mistake with its path
//! instead of stopping at the first. Each section validates itself into the one
//! [`Problems`] collector: listeners and TLS (`listen`), upstreams and routes
//! (`routes`), authentication and policy (`auth`); headers, CSRF, issuers and
//! rate limits are validated by the modules that own them.

mod auth;
mod limits;
mod listen;
mod routes;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis_contract::revocation::RevocationChannel;
use portcullis_contract::shared::SharedSettings;
use schemars::JsonSchema;
use serde::Deserialize;

pub use auth::{AuthConfig, PolicyConfig};
pub use limits::{Limits, LimitsConfig};
pub use listen::{
    CspReportsConfig, ListenConfig, RedirectConfig, ShutdownConfig, TlsConfig, TlsSource,
};
pub use routes::{RouteConfig, RouteCspConfig, UpstreamConfig};

pub use crate::csrf::CsrfConfig;
pub use crate::headers::{CspConfig, HeadersConfig};
pub use portcullis_contract::problems::Problems;

use crate::csrf::CsrfSettings;
use crate::forwarded::TrustedProxies;
use crate::headers::SecurityHeaders;
use crate::jwt::IssuerSettings;
use crate::ratelimit::{RateLimitConfig, RateLimitSettings};
use crate::routes::RouteTable;

/// Body limit of the default `api` route: 25 MiB, the backend's default attachment
/// limit (`backend.attachments.max_bytes`).
pub const DEFAULT_API_MAX_BODY_BYTES: u64 = 25 * 1024 * 1024;

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
    /// Worker threads of the proxy: each accepts and serves its own HTTPS connections
    /// (a listening socket of its own, SO_REUSEPORT). Default: one per core.
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
    /// Bounds per client connection: TLS handshake deadline, open connections,
    /// keep-alive idle time, HTTP/2 concurrent streams.
    pub limits: LimitsConfig,
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
            max_body_bytes: (name == "api").then_some(DEFAULT_API_MAX_BODY_BYTES),
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
            limits: LimitsConfig::default(),
        }
    }
}

/// Validated proxy settings: everything the running proxy needs, parsed.
#[derive(Debug)]
pub struct ProxySettings {
    pub https_addr: SocketAddr,
    pub http_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    pub redirect_https_port: u16,
    /// Hosts the redirect listener names; empty: the certificate's names.
    pub redirect_hosts: Vec<String>,
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
    pub csrf: CsrfSettings,
    pub limits: Limits,
    /// The proxy's audit log (emitter `proxy`); the binary sets it from the `audit:`
    /// section (default: `portcullis_audit::AuditConfig::default()`).
    pub audit: portcullis_audit::AuditSettings,
    /// The backend's ingest endpoint the proxy ships its events to, if any.
    pub audit_ingest_url: Option<String>,
}

impl ProxyConfig {
    /// Validates the section. `prefix` is the section's path in the file
    /// (`proxy`), `state_dir` where generated material goes, `shared` what the
    /// proxy shares with the backend. Returns every problem found.
    pub fn validate(
        &self,
        prefix: &str,
        base: &Path,
        state_dir: &Path,
        shared: &SharedSettings,
    ) -> Result<ProxySettings, Problems> {
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
            limits,
        } = self;
        let at = |section: &str| format!("{prefix}.{section}");
        let mut p = Problems::default();
        let listeners = listen.validate(&mut p, &at("listen"));
        let tls = tls.validate(&mut p, &at("tls"), state_dir);
        let trusted_proxies =
            listen::trusted_proxies(&mut p, &at("trusted_proxies"), trusted_proxies);
        let worker_threads = listen::worker_threads(&mut p, &at("worker_threads"), *worker_threads);
        let shutdown_grace = shutdown.validate(&mut p, &at("shutdown"));
        let upstreams = routes::upstreams(&mut p, &at("upstreams"), upstreams);
        let security_headers = SecurityHeaders::try_new(headers, &at("headers"), &mut p);
        let route_table = routes::routes(
            &mut p,
            &at("routes"),
            routes,
            &routes::RouteContext {
                prefix,
                upstreams: &upstreams,
                headers: security_headers.as_ref(),
                default_csp: &headers.csp,
            },
        );
        let csp_report_max_body_bytes = csp_reports.validate(&mut p, &at("csp_reports"));
        let (redirect_https_port, redirect_hosts) = redirect.validate(&mut p, &at("redirect"));
        let auth = auth.validate(&mut p, &at("auth"), shared);
        let policy_time_limit = policy.validate(&mut p, &at("policy"));
        let limits = limits.validate(&mut p, &at("limits"));
        let route_names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
        let rate_limits = rate_limits
            .validate(&route_names, base)
            .map_err(|problems| p.extend_under(&at("rate_limits"), problems))
            .ok();
        let csrf = CsrfSettings::try_new(csrf)
            .map_err(|problems| p.extend_under(&at("csrf"), problems))
            .ok();
        // The `audit:` section replaces these defaults (see the binary's config).
        let audit = portcullis_audit::AuditConfig::default()
            .validate("audit", base, state_dir)
            .map_err(|problems| p.append(problems))
            .ok();

        let (
            Some(https_addr),
            Some(admin_addr),
            Some(tls),
            Some(headers),
            Some(rate_limits),
            Some(csrf),
            Some(audit),
            true,
        ) = (
            listeners.https,
            listeners.admin,
            tls,
            security_headers,
            rate_limits,
            csrf,
            audit,
            p.is_empty(),
        )
        else {
            return Err(p);
        };
        let auth::Auth {
            issuers,
            access_cookie,
            revocation_feed_url,
            revocation_poll,
        } = auth;
        Ok(ProxySettings {
            redirect_https_port: redirect_https_port.unwrap_or(https_addr.port()),
            redirect_hosts,
            https_addr,
            http_addr: listeners.http.flatten(),
            admin_addr,
            tls,
            trusted_proxies,
            worker_threads,
            shutdown_grace,
            routes: route_table,
            headers,
            csp_report_max_body_bytes,
            issuers,
            access_cookie,
            identity_key_file: shared.identity_key_file.clone(),
            revocation_feed_url,
            revocation_poll,
            revocation_pubsub: shared.revocation_pubsub.clone(),
            policy_dir: shared.policy_dir.clone(),
            policy_time_limit,
            rate_limits,
            csrf,
            limits,
            audit_ingest_url: audit.ingest_url.clone(),
            audit: audit.settings(portcullis_contract::audit_ingest::EMITTER),
        })
    }
}
