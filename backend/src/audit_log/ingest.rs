//! `POST /internal/audit/ingest` (path, emitter and size limit from the contract): the
//! proxy's events, NDJSON lines exactly as chained, signed as the proxy's service
//! subject with the body's digest in the signed query. Events already stored are
//! skipped, so redelivery is harmless.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use portcullis_contract::audit_ingest::{EMITTER, MAX_BODY_BYTES, PATH};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::store::{self, AuditStoreError};
use crate::AppState;
use crate::http::{ApiError, ApiQuery, ServiceRefusal, verify_service};

/// Query of the ingest: the body's digest, so the signature (over method, path and
/// query) covers the body too.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IngestQuery {
    /// Hex SHA-256 of the body (required; checked after the signature). Named
    /// [`portcullis_contract::audit_ingest::DIGEST_PARAM`] (a test holds them equal).
    sha256: Option<String>,
}

/// `POST /internal/audit/ingest`: the proxy's events (NDJSON, lines exactly as chained).
/// Only the proxy may call it: the request must carry an identity signed with the
/// proxy↔backend key for the `@proxy` service, and the body must match the signed digest.
/// Events already stored are skipped, so redelivery is harmless.
async fn ingest(
    State(s): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    ApiQuery(q): ApiQuery<IngestQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    verify_service(&s.identity_key, "POST", &uri, &headers).map_err(|refusal| {
        match &refusal {
            ServiceRefusal::Unverified(e) => {
                tracing::warn!(reason = %e, "audit ingest without a valid proxy signature refused");
            }
            ServiceRefusal::User(id) => {
                tracing::warn!(sub = %id.sub, "audit ingest signed for a user refused");
            }
        }
        refusal.into_api_error("the audit ingest is for the proxy")
    })?;
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let ndjson = header(header::CONTENT_TYPE.as_str())
        .is_some_and(|ct| ct.split(';').next().map(str::trim) == Some("application/x-ndjson"));
    if !ndjson {
        return Err(ApiError::Custom {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            kind: "unsupported-media-type",
            detail: "Send application/x-ndjson".into(),
        });
    }
    let signed_digest = q.sha256.unwrap_or_default();
    if !hex::encode(Sha256::digest(&body)).eq_ignore_ascii_case(&signed_digest) {
        return Err(ApiError::BadRequest(
            "the body does not match the signed sha256".into(),
        ));
    }
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::BadRequest("the body is not UTF-8".into()))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let stored = store::insert_lines_from(&s.db, &lines, Some(EMITTER))
        .await
        .map_err(|e| match e {
            AuditStoreError::Db(e) => ApiError::Internal(e.to_string()),
            e => ApiError::Validation(e.to_string()),
        })?;
    Ok(Json(json!({ "received": lines.len(), "stored": stored })).into_response())
}

/// Route of the ingest, with its own body limit.
pub fn router() -> Router<AppState> {
    Router::new().route(
        PATH,
        post(ingest).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)),
    )
}

#[cfg(test)]
mod tests {
    use portcullis_contract::audit_ingest::DIGEST_PARAM;

    use super::*;

    #[test]
    fn the_digest_travels_in_the_contract_parameter() {
        let uri: Uri = format!("{PATH}?{DIGEST_PARAM}=ab").parse().unwrap();
        let q = axum::extract::Query::<IngestQuery>::try_from_uri(&uri).unwrap();
        assert_eq!(q.0.sha256.as_deref(), Some("ab"));
    }
}
