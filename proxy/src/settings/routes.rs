//! Upstreams and routes: their part of the file, validated into the
//! [`RouteTable`]'s routes (each with its upstream and ready-made CSP).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use super::listen::parse_addr;
use crate::headers::{CspConfig, SecurityHeaders};
use crate::mode::Mode;
use crate::routes::{Route, RouteTable, Upstream};
use portcullis_contract::problems::Problems;

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
    /// Largest request body forwarded on this route, in bytes. A request that declares
    /// more gets 413 before anything reaches the upstream; one that sends more is cut off
    /// with 413. Default none (only the upstream's limits apply); the default `api` route
    /// has 26214400, which `check-config` holds equal to or above
    /// `backend.attachments.max_bytes` so uploads the backend accepts get through.
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
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
    pub mode: Option<Mode>,
}

/// The named upstreams; `at` is the section's path (`proxy.upstreams`).
pub(super) fn upstreams(
    p: &mut Problems,
    at: &str,
    upstreams: &BTreeMap<String, UpstreamConfig>,
) -> BTreeMap<String, Upstream> {
    let mut parsed = BTreeMap::new();
    for (name, up) in upstreams {
        let path = format!("{at}.{name}");
        let UpstreamConfig {
            address,
            connect_timeout_seconds,
            read_timeout_seconds,
        } = up;
        if let Some(address) = parse_addr(p, &format!("{path}.address"), address) {
            if *connect_timeout_seconds == 0 || *read_timeout_seconds == 0 {
                p.push(&path, "timeouts must be at least 1 second");
            }
            parsed.insert(
                name.clone(),
                Upstream {
                    name: name.clone(),
                    address,
                    connect_timeout: Duration::from_secs(*connect_timeout_seconds),
                    read_timeout: Duration::from_secs(*read_timeout_seconds),
                },
            );
        }
    }
    parsed
}

/// What routes are checked against.
pub(super) struct RouteContext<'a> {
    /// The section's path (`proxy`), for messages naming other sections.
    pub prefix: &'a str,
    pub upstreams: &'a BTreeMap<String, Upstream>,
    /// `None` when the headers section is invalid (CSPs are not built then).
    pub headers: Option<&'a SecurityHeaders>,
    /// `headers.csp`, which routes inherit.
    pub default_csp: &'a CspConfig,
}

/// The route table; `at` is the section's path (`proxy.routes`).
pub(super) fn routes(
    p: &mut Problems,
    at: &str,
    routes: &[RouteConfig],
    cx: &RouteContext<'_>,
) -> RouteTable {
    let mut parsed = Vec::new();
    let mut names = BTreeSet::new();
    if routes.is_empty() {
        p.push(at, "at least one route is required");
    }
    for (i, r) in routes.iter().enumerate() {
        let path = format!("{at}[{i}]");
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
        let upstream = cx.upstreams.get(&r.upstream).cloned();
        if upstream.is_none() {
            p.push(
                format!("{path}.upstream"),
                format!(
                    "no upstream named `{}` in {}.upstreams",
                    r.upstream, cx.prefix
                ),
            );
        }
        let csp = cx.headers.and_then(|h| {
            let policy = r
                .csp
                .as_ref()
                .and_then(|c| c.policy.as_deref())
                .unwrap_or(&cx.default_csp.policy);
            let mode = r
                .csp
                .as_ref()
                .and_then(|c| c.mode)
                .unwrap_or(cx.default_csp.mode);
            h.csp_for(policy, mode, &format!("{path}.csp.policy"), p)
        });
        if r.max_body_bytes == Some(0) {
            p.push(format!("{path}.max_body_bytes"), "must be at least 1");
        }
        if let (Some(upstream), Some(csp), true) = (upstream, csp, prefix_ok) {
            parsed.push(Route {
                name: r.name.clone(),
                prefix: r.path_prefix.clone(),
                upstream,
                csp,
                max_body_bytes: r.max_body_bytes,
            });
        }
    }
    RouteTable::new(parsed)
}
