//! The revocation feed for the proxy (`GET /auth/revocations`, signed as the
//! proxy's service subject): the sessions revoked after a number, while a token
//! naming them can still be valid, as [`Feed`].

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use portcullis_contract::revocation::{FEED_PAGE, Feed};
use serde::Deserialize;

use super::store;
use super::tokens::{at, now_unix};
use crate::AppState;
use crate::http::{ApiError, ApiQuery, verify_service};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct FeedQuery {
    /// Last revocation number already seen (0 at start).
    after: Option<i64>,
}

/// Added to the access-token lifetime to get how long a revocation matters.
const REVOCATION_RETAIN_MARGIN_SECONDS: i64 = 300;

/// The revocation feed for the proxy. Only the proxy may read it: the
/// request must carry a proxy-signed identity for the proxy's service subject
/// (`@proxy`).
pub(super) async fn revocations(
    State(s): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    ApiQuery(q): ApiQuery<FeedQuery>,
) -> Result<Response, ApiError> {
    verify_service(&s.identity_key, "GET", &uri, &headers)
        .map_err(|r| r.into_api_error("the revocation feed is for the proxy"))?;
    let after = q.after.unwrap_or(0).max(0);
    // A revoked session matters only while a token naming it can still be
    // valid: tokens are issued before the revocation and live at most one
    // access-token lifetime. Older revocations are not served (a restarted
    // proxy does not replay the whole history), and the proxy forgets each id
    // after `retain_seconds`. The margin covers verifier leeway and clock skew.
    let retain = s.identity.settings.access_ttl_seconds + REVOCATION_RETAIN_MARGIN_SECONDS;
    let since = at(now_unix() - retain);
    let rows = store::revocations_after(&s.db, after, &since, FEED_PAGE as i64).await?;
    let next = rows.last().map_or(after, |r| r.0);
    let feed = Feed {
        after: next,
        session_ids: rows.into_iter().map(|r| r.1).collect(),
        retain_seconds: u64::try_from(retain).ok(),
    };
    Ok(Json(feed).into_response())
}
