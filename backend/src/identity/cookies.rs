//! The browser side of sessions: `Set-Cookie` values for the `__Host-` cookies
//! (names from the contract), clearing them, and what a request says about its
//! client (bearer token, address).

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use portcullis_contract::cookies::{ACCESS_COOKIE, CSRF_COOKIE, REFRESH_COOKIE};
use portcullis_contract::headers::CLIENT_IP_HEADER;

pub(super) fn cookie(name: &str, value: &str, max_age: i64, http_only: bool) -> HeaderValue {
    let http_only = if http_only { "; HttpOnly" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Secure{http_only}; SameSite=Strict; Max-Age={max_age}"
    ))
    .unwrap_or(HeaderValue::from_static("invalid=; Max-Age=0"))
}

pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

pub(super) fn client_ip(headers: &HeaderMap) -> Option<String> {
    // Set by the proxy from its trusted-proxy logic; the proxy strips any
    // inbound `X-Portcullis-*` header, and only the proxy reaches the backend.
    headers
        .get(CLIENT_IP_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().chars().take(45).collect())
}

pub(super) fn clear_cookies(resp: &mut Response) {
    for name in [ACCESS_COOKIE, REFRESH_COOKIE, CSRF_COOKIE] {
        resp.headers_mut()
            .append(header::SET_COOKIE, cookie(name, "", 0, true));
    }
}
