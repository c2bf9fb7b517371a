//! CSRF defence for cookie-authenticated unsafe requests: Fetch Metadata
//! (`Sec-Fetch-Site`), the `Origin` header, and a double-submit token (the
//! `__Host-` CSRF cookie echoed in a header). Bearer-token calls are exempt:
//! a browser never attaches them on its own.

use http::{HeaderMap, Method};
use subtle::ConstantTimeEq;

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

/// The value of the first cookie called `name` (shared by the session and
/// CSRF checks).
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl CsrfSettings {
    /// Checks a cookie-authenticated unsafe request; `host` is the request's
    /// authority as the client sent it.
    pub fn check(&self, headers: &HeaderMap, host: Option<&str>) -> Result<(), CsrfFailure> {
        let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        if let Some(site) = get("sec-fetch-site")
            && !matches!(site, "same-origin" | "none")
        {
            return Err(CsrfFailure::CrossSite);
        }
        if let Some(origin) = get("origin") {
            let own = host.map(|h| format!("https://{h}"));
            let allowed =
                own.as_deref() == Some(origin) || self.extra_origins.iter().any(|o| o == origin);
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

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
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
        assert!(
            unsafe_method(&Method::POST)
                && unsafe_method(&Method::DELETE)
                && !unsafe_method(&Method::GET)
        );
    }
}
