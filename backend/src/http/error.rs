//! `ApiError`: every failure of the API as an RFC 9457 problem document with
//! a stable `type`. Internal causes are logged with the request id, never
//! echoed to the client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use portcullis_contract::problem;

use super::meta::current_request_id;
use crate::db::RepoError;

/// The problem document (RFC 9457).
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// `urn:portcullis:problem:<slug>`, stable.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// What went wrong, phrased so a user can act on it.
    pub detail: String,
    pub request_id: String,
}

/// The problem `type` slug of an error response, left in the response's extensions
/// so that middleware (the monitoring's error events) can tell what was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProblemSlug(pub &'static str);

#[derive(Debug)]
pub enum ApiError {
    Unauthenticated,
    Forbidden(String),
    NotFound(&'static str),
    BadRequest(String),
    Validation(String),
    Conflict(String),
    InvalidTransition(String),
    MethodNotAllowed,
    PreconditionRequired,
    PreconditionFailed {
        current_version: i64,
    },
    UnsupportedMediaType,
    /// Any other problem with its own stable slug.
    Custom {
        status: StatusCode,
        kind: &'static str,
        detail: String,
    },
    Internal(String),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (status, kind, detail) = self.parts();
        write!(f, "{status} {kind}: {detail}")
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    pub(crate) fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            Self::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "Sign in through the gateway to use this API".to_owned(),
            ),
            Self::Forbidden(d) => (StatusCode::FORBIDDEN, "forbidden", d.clone()),
            Self::NotFound(what) => (
                StatusCode::NOT_FOUND,
                "not-found",
                format!("No such {what}, or it is not visible to you"),
            ),
            Self::BadRequest(d) => (StatusCode::BAD_REQUEST, "bad-request", d.clone()),
            Self::Validation(d) => (StatusCode::UNPROCESSABLE_ENTITY, "validation", d.clone()),
            Self::Conflict(d) => (StatusCode::CONFLICT, "conflict", d.clone()),
            Self::InvalidTransition(d) => (StatusCode::CONFLICT, "invalid-transition", d.clone()),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "This resource does not support that method".to_owned(),
            ),
            Self::PreconditionRequired => (
                StatusCode::PRECONDITION_REQUIRED,
                "precondition-required",
                "Send If-Match with the ticket's ETag so a concurrent change is not overwritten"
                    .to_owned(),
            ),
            Self::PreconditionFailed { current_version } => (
                StatusCode::PRECONDITION_FAILED,
                "precondition-failed",
                format!(
                    "The ticket changed since you read it (now version {current_version}); reload and retry"
                ),
            ),
            Self::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Send application/json".to_owned(),
            ),
            Self::Custom {
                status,
                kind,
                detail,
            } => (*status, kind, detail.clone()),
            Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "The request could not be completed; quote the request id when reporting it"
                    .to_owned(),
            ),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<RepoError> for ApiError {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::NotFound => Self::NotFound("resource"),
            RepoError::Conflict(d) => Self::Conflict(d),
            RepoError::VersionMismatch { current } => Self::PreconditionFailed {
                current_version: current,
            },
            RepoError::Invalid(d) => Self::Internal(d),
            RepoError::Db(e) => Self::Internal(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug, detail) = self.parts();
        let request_id = current_request_id();
        if let Self::Internal(cause) = &self {
            tracing::error!(request_id = %request_id, cause = %cause, "internal error");
        }
        let body = Problem {
            kind: problem::type_uri(slug),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
            request_id,
        };
        let mut resp = (status, axum::Json(body)).into_response();
        resp.extensions_mut().insert(ProblemSlug(slug));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(problem::CONTENT_TYPE),
        );
        if let Self::PreconditionFailed { current_version } = self
            && let Ok(v) = HeaderValue::from_str(&format!("\"{current_version}\""))
        {
            resp.headers_mut().insert(header::ETAG, v);
        }
        resp
    }
}
