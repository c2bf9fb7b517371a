//! Security headers: their section of the file (`proxy.headers`), built once
//! into [`SecurityHeaders`] and applied to every response, the proxy's own
//! included; each route's CSP header.

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::http::ResponseHeader;
use schemars::JsonSchema;
use serde::Deserialize;
use thiserror::Error;

use crate::mode::Mode;
use portcullis_contract::problems::Problems;

/// Path of the CSP violation report collector.
pub const CSP_REPORT_PATH: &str = "/.portcullis/csp-report";
/// Reporting API endpoint name used in `report-to`.
const REPORT_GROUP: &str = "csp-endpoint";

/// Upstream response headers removed: those that reveal the software behind the proxy,
/// and the upstream's own content security policy, which the route's replaces. Names,
/// not strings: removing by `&str` parses the name again on every response. A `static`,
/// so the names are not built and dropped again on every call.
static REMOVED: [HeaderName; 6] = [
    http::header::SERVER,
    HeaderName::from_static("x-powered-by"),
    HeaderName::from_static("x-aspnet-version"),
    HeaderName::from_static("x-aspnetmvc-version"),
    http::header::CONTENT_SECURITY_POLICY,
    http::header::CONTENT_SECURITY_POLICY_REPORT_ONLY,
];

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
    pub mode: Mode,
}

impl Default for CspConfig {
    fn default() -> Self {
        Self {
            policy:
                "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                     font-src 'self'; connect-src 'self'; manifest-src 'self'; form-action 'self'; \
                     frame-ancestors 'none'; base-uri 'none'; object-src 'none'; \
                     require-trusted-types-for 'script'; trusted-types portcullis; \
                     upgrade-insecure-requests"
                    .to_owned(),
            mode: Mode::Enforce,
        }
    }
}

/// One ready-made response header.
#[derive(Debug, Clone)]
pub struct Field {
    name: HeaderName,
    /// The name as written on an HTTP/1 response. pingora's header keeps each name's
    /// spelling beside it and takes `Bytes` as they are, where from a `HeaderName` it
    /// would copy the name out again on every response.
    spelling: Bytes,
    value: HeaderValue,
}

impl Field {
    fn new(name: HeaderName, value: HeaderValue) -> Self {
        Self {
            spelling: Bytes::copy_from_slice(name.as_str().as_bytes()),
            name,
            value,
        }
    }
}

/// A route's ready-made CSP header.
#[derive(Debug, Clone)]
pub struct CspHeader(Field);

impl CspHeader {
    pub fn mode(&self) -> Mode {
        if self.0.name == http::header::CONTENT_SECURITY_POLICY {
            Mode::Enforce
        } else {
            Mode::ReportOnly
        }
    }
}

/// The fixed security headers plus the default CSP.
#[derive(Debug, Clone)]
pub struct SecurityHeaders {
    fixed: Vec<Field>,
    default_csp: CspHeader,
}

/// Directives whose sources decide whether inline script may run.
const SCRIPT_DIRECTIVES: &[&str] = &["script-src", "script-src-elem", "script-src-attr"];
const UNSAFE_SCRIPT_SOURCES: &[&str] = &["'unsafe-inline'", "'unsafe-eval'", "'unsafe-hashes'"];

/// What a configured CSP may not contain.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
enum CspPolicyError {
    #[error("leave out `{0}`: the proxy adds its own pointing at {CSP_REPORT_PATH}")]
    OwnedDirective(String),
    #[error("`{directive}` allows {found}; inline script is not permitted")]
    UnsafeScript { directive: String, found: String },
    #[error("`default-src` allows {0} and no script-src overrides it")]
    UnsafeDefault(String),
}

/// Parses a header value, reporting an empty or unprintable one under `path`.
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

/// Checks a policy for what the proxy owns or forbids.
fn check_policy(policy: &str) -> Result<(), CspPolicyError> {
    let mut has_script_src = false;
    let mut default_sources: Vec<&str> = Vec::new();
    for directive in policy.split(';') {
        let mut words = directive.split_ascii_whitespace();
        let Some(name) = words.next() else { continue };
        let name = name.to_ascii_lowercase();
        if name == "report-uri" || name == "report-to" {
            return Err(CspPolicyError::OwnedDirective(name));
        }
        let sources: Vec<&str> = words.collect();
        if SCRIPT_DIRECTIVES.contains(&name.as_str()) {
            has_script_src |= name == "script-src";
            if let Some(bad) = sources.iter().find(|s| {
                UNSAFE_SCRIPT_SOURCES
                    .iter()
                    .any(|u| u.eq_ignore_ascii_case(s))
            }) {
                return Err(CspPolicyError::UnsafeScript {
                    directive: name,
                    found: (*bad).to_owned(),
                });
            }
        }
        if name == "default-src" {
            default_sources = sources;
        }
    }
    if !has_script_src
        && let Some(bad) = default_sources.iter().find(|s| {
            UNSAFE_SCRIPT_SOURCES
                .iter()
                .any(|u| u.eq_ignore_ascii_case(s))
        })
    {
        return Err(CspPolicyError::UnsafeDefault((*bad).to_owned()));
    }
    Ok(())
}

impl SecurityHeaders {
    /// Builds the header set, reporting each bad value under `path`.
    pub fn try_new(config: &HeadersConfig, path: &str, p: &mut Problems) -> Option<Self> {
        let HeadersConfig {
            hsts_max_age_seconds,
            hsts_include_subdomains,
            hsts_preload,
            referrer_policy,
            permissions_policy,
            cross_origin_opener_policy,
            cross_origin_resource_policy,
            frame_options,
            csp,
        } = config;
        let before = p.len();
        if *hsts_max_age_seconds < 86_400 {
            p.push(
                format!("{path}.hsts_max_age_seconds"),
                "must be at least 86400 (one day)",
            );
        }
        if *hsts_preload && (!hsts_include_subdomains || *hsts_max_age_seconds < 31_536_000) {
            p.push(
                format!("{path}.hsts_preload"),
                "preload needs include_subdomains and a max-age of at least 31536000",
            );
        }
        let mut hsts = format!("max-age={hsts_max_age_seconds}");
        if *hsts_include_subdomains {
            hsts.push_str("; includeSubDomains");
        }
        if *hsts_preload {
            hsts.push_str("; preload");
        }
        let mut fixed = vec![Field::new(
            http::header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_str(&hsts).ok()?,
        )];
        fixed.push(Field::new(
            http::header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ));
        for (field, name, value) in [
            (
                "referrer_policy",
                http::header::REFERRER_POLICY,
                referrer_policy,
            ),
            (
                "permissions_policy",
                HeaderName::from_static("permissions-policy"),
                permissions_policy,
            ),
            (
                "cross_origin_opener_policy",
                HeaderName::from_static("cross-origin-opener-policy"),
                cross_origin_opener_policy,
            ),
            (
                "cross_origin_resource_policy",
                HeaderName::from_static("cross-origin-resource-policy"),
                cross_origin_resource_policy,
            ),
            (
                "frame_options",
                http::header::X_FRAME_OPTIONS,
                frame_options,
            ),
        ] {
            if let Some(v) = validated_header_value(p, &format!("{path}.{field}"), value) {
                fixed.push(Field::new(name, v));
            }
        }
        fixed.push(Field::new(
            HeaderName::from_static("reporting-endpoints"),
            HeaderValue::from_str(&format!("{REPORT_GROUP}=\"{CSP_REPORT_PATH}\"")).ok()?,
        ));
        let shell = Self {
            fixed,
            default_csp: CspHeader(Field::new(
                http::header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'none'"),
            )),
        };
        let default_csp = shell.csp_for(&csp.policy, csp.mode, &format!("{path}.csp.policy"), p)?;
        (before == p.len()).then_some(Self {
            default_csp,
            ..shell
        })
    }

    /// Builds a CSP header for `policy` in `mode`, with the proxy's reporting
    /// directives appended.
    pub fn csp_for(
        &self,
        policy: &str,
        mode: Mode,
        path: &str,
        p: &mut Problems,
    ) -> Option<CspHeader> {
        let policy = policy.trim().trim_end_matches(';').trim();
        if policy.is_empty() {
            p.push(path, "must not be empty");
            return None;
        }
        if let Err(why) = check_policy(policy) {
            p.push(path, why);
            return None;
        }
        let full = format!("{policy}; report-uri {CSP_REPORT_PATH}; report-to {REPORT_GROUP}");
        let value = validated_header_value(p, path, &full)?;
        let name = match mode {
            Mode::Enforce => http::header::CONTENT_SECURITY_POLICY,
            Mode::ReportOnly => http::header::CONTENT_SECURITY_POLICY_REPORT_ONLY,
        };
        Some(CspHeader(Field::new(name, value)))
    }

    /// The CSP used where no route matched.
    pub fn default_csp(&self) -> &CspHeader {
        &self.default_csp
    }

    /// Adds the security headers (replacing any the upstream set), sets the
    /// route's CSP and removes headers that fingerprint the upstream.
    pub fn apply(&self, resp: &mut impl HeaderSink, csp: &CspHeader) {
        for name in &REMOVED {
            resp.remove(name);
        }
        for field in &self.fixed {
            resp.set(field);
        }
        resp.set(&csp.0);
    }
}

/// Something response headers can be written to: pingora's header (which
/// keeps header case for HTTP/1) or a plain `http` header map.
pub trait HeaderSink {
    fn remove(&mut self, name: &HeaderName);
    /// Sets `field`, replacing any value under its name.
    fn set(&mut self, field: &Field);
}

impl HeaderSink for ResponseHeader {
    fn remove(&mut self, name: &HeaderName) {
        self.remove_header(name);
    }
    fn set(&mut self, field: &Field) {
        // Inserting a valid name/value pair into a header map cannot fail.
        let _ = self.insert_header(field.spelling.clone(), field.value.clone());
    }
}

impl HeaderSink for http::HeaderMap {
    fn remove(&mut self, name: &HeaderName) {
        http::HeaderMap::remove(self, name);
    }
    fn set(&mut self, field: &Field) {
        self.insert(field.name.clone(), field.value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers() -> SecurityHeaders {
        let mut p = Problems::default();
        let h = SecurityHeaders::try_new(&HeadersConfig::default(), "h", &mut p);
        assert!(p.is_empty(), "{p:?}");
        h.unwrap()
    }

    #[test]
    fn defaults_produce_every_header() {
        let h = headers();
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("server", "nginx/1.0").unwrap();
        resp.insert_header("x-powered-by", "PHP").unwrap();
        // Spelled as an upstream might: removal does not depend on the case.
        resp.insert_header("X-AspNet-Version", "4.0").unwrap();
        resp.insert_header("content-security-policy", "default-src *")
            .unwrap();
        resp.insert_header("Content-Security-Policy-Report-Only", "default-src *")
            .unwrap();
        h.apply(&mut resp, h.default_csp());
        let get = |n: &str| resp.headers.get(n).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(
            get("strict-transport-security").unwrap(),
            "max-age=63072000; includeSubDomains"
        );
        assert_eq!(get("x-content-type-options").unwrap(), "nosniff");
        assert_eq!(get("x-frame-options").unwrap(), "DENY");
        assert_eq!(get("cross-origin-opener-policy").unwrap(), "same-origin");
        assert_eq!(get("cross-origin-resource-policy").unwrap(), "same-origin");
        assert!(get("permissions-policy").unwrap().contains("camera=()"));
        assert!(get("referrer-policy").is_some());
        let csp = get("content-security-policy").unwrap();
        assert!(csp.starts_with("default-src 'none'"), "{csp}");
        assert!(csp.ends_with("report-uri /.portcullis/csp-report; report-to csp-endpoint"));
        assert_eq!(
            resp.headers
                .get_all("content-security-policy")
                .iter()
                .count(),
            1
        );
        for gone in [
            "server",
            "x-powered-by",
            "x-aspnet-version",
            "content-security-policy-report-only",
        ] {
            assert!(get(gone).is_none(), "{gone} still set");
        }
        // On the wire each name is written once, as configured.
        let mut wire = bytes::BytesMut::new();
        resp.header_to_h1_wire(&mut wire);
        let wire = String::from_utf8(wire.to_vec()).unwrap();
        for name in [
            "strict-transport-security: ",
            "permissions-policy: ",
            "content-security-policy: ",
        ] {
            assert_eq!(wire.matches(name).count(), 1, "{name} in {wire}");
        }
    }

    #[test]
    fn unsafe_or_owned_directives_are_refused() {
        let h = headers();
        for bad in [
            "script-src 'self' 'unsafe-inline'",
            "default-src 'self' 'UNSAFE-EVAL'",
            "default-src 'self'; report-uri https://elsewhere/",
            "",
            "default-src 'self'\r\nx: y",
        ] {
            let mut p = Problems::default();
            assert!(
                h.csp_for(bad, Mode::Enforce, "x", &mut p).is_none(),
                "{bad}"
            );
            assert!(!p.is_empty());
        }
        let mut p = Problems::default();
        let ro = h
            .csp_for(
                "default-src 'self'; style-src 'self' 'unsafe-inline';",
                Mode::ReportOnly,
                "x",
                &mut p,
            )
            .unwrap();
        assert_eq!(ro.mode(), Mode::ReportOnly);
    }
}
