//! Optimistic concurrency: a version as a strong `ETag`, and the version a change
//! names in `If-Match` (required).

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::ApiError;

/// `"<version>"`.
fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// The version named by `If-Match`, required on every change of a versioned resource.
///
/// Anything but one strong tag of a version (`*`, a list, a weak tag, garbage) is
/// answered like a missing header (428): it names no version to compare, and a 412
/// would have to invent the current one.
pub fn if_match(headers: &HeaderMap) -> Result<i64, ApiError> {
    headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .and_then(|raw| raw.strip_prefix('"'))
        .and_then(|r| r.strip_suffix('"'))
        .and_then(|v| v.parse::<i64>().ok())
        .ok_or(ApiError::PreconditionRequired)
}

/// `body` as JSON with `status` and the `ETag` of `version`.
pub fn with_etag(status: StatusCode, version: i64, body: impl Serialize) -> Response {
    let mut resp = (status, Json(body)).into_response();
    resp.headers_mut().insert(header::ETAG, etag(version));
    resp
}
