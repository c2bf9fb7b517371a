//! Browser cookie names (defaults; the proxy's are configurable, the backend follows the
//! same configuration) and the one cookie reader both services use.

use http::HeaderMap;

/// The browser's access token.
pub const ACCESS_COOKIE: &str = "__Host-portcullis-access";
/// The browser's refresh token.
pub const REFRESH_COOKIE: &str = "__Host-portcullis-refresh";
/// The double-submit CSRF token (readable by the page, so not HttpOnly).
pub const CSRF_COOKIE: &str = "__Host-portcullis-csrf";

/// The value of the first cookie called `name` in the request's `Cookie` headers.
#[must_use]
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_cookie_of_that_name_across_headers() {
        let mut h = HeaderMap::new();
        h.append(http::header::COOKIE, "a=1; b=2".parse().unwrap());
        h.append(http::header::COOKIE, "b=3; c=4".parse().unwrap());
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), Some("4"));
        assert_eq!(cookie(&h, "d"), None);
        assert_eq!(cookie(&h, "a=1"), None);
    }
}
