//! CSRF defence for cookie-authenticated unsafe requests: Fetch Metadata
//! (`Sec-Fetch-Site`), the `Origin` header, and a double-submit token (the
//! `__Host-` CSRF cookie echoed in a header). Bearer-token calls are exempt:
//! a browser never attaches them on its own.
//!
//! This module owns the check and its section of the file (`proxy.csrf`);
//! `guards::csrf` runs it on the request path.

use http::{HeaderMap, Method};
use portcullis_contract::cookies::{CSRF_COOKIE, cookie};
use schemars::JsonSchema;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use portcullis_contract::problems::Problems;

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
            cookie: CSRF_COOKIE.to_owned(),
            header: "x-csrf-token".to_owned(),
            allowed_origins: Vec::new(),
        }
    }
}

/// Why a request was refused; the code is the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsrfFailure {
    CrossSite,
    OriginMismatch,
    TokenMissing,
    TokenMismatch,
}

impl CsrfFailure {
    pub fn code(self) -> &'static str {
        match self {
            Self::CrossSite => "cross_site",
            Self::OriginMismatch => "origin_mismatch",
            Self::TokenMissing => "token_missing",
            Self::TokenMismatch => "token_mismatch",
        }
    }
}

/// The CSRF check's settings.
#[derive(Debug, Clone)]
pub struct CsrfSettings {
    pub cookie: String,
    pub header: String,
    /// Origins allowed besides the request's own (`https://host[:port]`).
    pub extra_origins: Vec<String>,
}

/// Whether the method can change state.
pub fn unsafe_method(m: &Method) -> bool {
    !matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

impl CsrfSettings {
    /// Validates the section; paths are relative to it (`cookie`).
    pub fn try_new(config: &CsrfConfig) -> Result<Self, Problems> {
        let CsrfConfig {
            cookie,
            header,
            allowed_origins,
        } = config;
        let mut p = Problems::default();
        for (i, o) in allowed_origins.iter().enumerate() {
            if !o.starts_with("https://") || o.ends_with('/') {
                p.push(
                    format!("allowed_origins[{i}]"),
                    "an origin is https://host[:port] without a path",
                );
            }
        }
        if !cookie.starts_with("__Host-") {
            p.push("cookie", "use a `__Host-` cookie name");
        }
        p.into_result(|| Self {
            cookie: cookie.clone(),
            header: header.to_ascii_lowercase(),
            extra_origins: allowed_origins.clone(),
        })
    }

    /// Checks a cookie-authenticated unsafe request; `host` is the request's
    /// authority as the client sent it.
    pub fn check(&self, headers: &HeaderMap, host: Option<&str>) -> Result<(), CsrfFailure> {
        let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        check_fetch_site(headers)?;
        if let Some(origin) = get("origin") {
            // This site's own origin is `https://` and the authority the client sent.
            let own = host.is_some_and(|h| origin.strip_prefix("https://") == Some(h));
            let allowed = own || self.extra_origins.iter().any(|o| o == origin);
            if !allowed {
                return Err(CsrfFailure::OriginMismatch);
            }
        }
        let (Some(sent), Some(expected)) = (get(&self.header), cookie(headers, &self.cookie))
        else {
            return Err(CsrfFailure::TokenMissing);
        };
        if sent.is_empty() || !bool::from(sent.as_bytes().ct_eq(expected.as_bytes())) {
            return Err(CsrfFailure::TokenMismatch);
        }
        Ok(())
    }
}

/// The Fetch Metadata part of the check alone, for navigations (a `GET` that changes
/// state, such as the OIDC logout, cannot carry the token header): a browser says where
/// the request came from, and anything but this origin (or the user typing the URL) is
/// refused. A client that sends no `Sec-Fetch-Site` is no browser another site drives.
pub fn check_fetch_site(headers: &HeaderMap) -> Result<(), CsrfFailure> {
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some(site) if !matches!(site, "same-origin" | "none") => Err(CsrfFailure::CrossSite),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> CsrfSettings {
        CsrfSettings {
            cookie: "__Host-portcullis-csrf".into(),
            header: "x-csrf-token".into(),
            extra_origins: vec![],
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn same_origin_with_token_passes_everything_else_fails() {
        let s = settings();
        let ok = headers(&[
            ("sec-fetch-site", "same-origin"),
            ("origin", "https://app.example"),
            ("cookie", "a=b; __Host-portcullis-csrf=tok123"),
            ("x-csrf-token", "tok123"),
        ]);
        assert_eq!(s.check(&ok, Some("app.example")), Ok(()));
        let cases = [
            (
                vec![
                    ("sec-fetch-site", "cross-site"),
                    ("cookie", "__Host-portcullis-csrf=t"),
                    ("x-csrf-token", "t"),
                ],
                CsrfFailure::CrossSite,
            ),
            (
                vec![
                    ("sec-fetch-site", "same-site"),
                    ("cookie", "__Host-portcullis-csrf=t"),
                    ("x-csrf-token", "t"),
                ],
                CsrfFailure::CrossSite,
            ),
            (
                vec![
                    ("origin", "https://evil.example"),
                    ("cookie", "__Host-portcullis-csrf=t"),
                    ("x-csrf-token", "t"),
                ],
                CsrfFailure::OriginMismatch,
            ),
            (
                vec![
                    ("origin", "http://app.example"),
                    ("cookie", "__Host-portcullis-csrf=t"),
                    ("x-csrf-token", "t"),
                ],
                CsrfFailure::OriginMismatch,
            ),
            (
                vec![
                    ("origin", "https://app.example.evil"),
                    ("cookie", "__Host-portcullis-csrf=t"),
                    ("x-csrf-token", "t"),
                ],
                CsrfFailure::OriginMismatch,
            ),
            (
                vec![
                    ("origin", "null"),
                    ("cookie", "__Host-portcullis-csrf=t"),
                    ("x-csrf-token", "t"),
                ],
                CsrfFailure::OriginMismatch,
            ),
            (
                vec![("cookie", "__Host-portcullis-csrf=t")],
                CsrfFailure::TokenMissing,
            ),
            (vec![("x-csrf-token", "t")], CsrfFailure::TokenMissing),
            (
                vec![
                    ("cookie", "__Host-portcullis-csrf=t"),
                    ("x-csrf-token", "u"),
                ],
                CsrfFailure::TokenMismatch,
            ),
        ];
        for (h, want) in cases {
            assert_eq!(
                s.check(&headers(&h), Some("app.example")),
                Err(want),
                "{h:?}"
            );
        }
        // Without the request's authority only a listed origin could match.
        assert_eq!(
            s.check(&ok, None),
            Err(CsrfFailure::OriginMismatch),
            "no host"
        );
        assert!(
            unsafe_method(&Method::POST)
                && unsafe_method(&Method::DELETE)
                && !unsafe_method(&Method::GET)
        );
    }
}
