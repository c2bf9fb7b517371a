//! Extractors every resource uses: [`ApiJson`] and [`ApiQuery`] (rejections become
//! problem documents) and [`Caller`], the verified proxy identity of an active
//! employee. How an identity becomes an employee (the session check, roles withheld
//! without a second factor) is the identity module's: it implements [`CallerSource`].

use std::future::Future;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use portcullis_contract::identity::{IDENTITY_HEADER, Identity, IdentityKey, SIGNATURE_HEADER};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::model::Employee;

/// JSON body whose rejections become problem documents.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::UnsupportedMediaType),
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError::Validation(e.body_text())),
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

/// Query string whose rejections become problem documents.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e: QueryRejection| ApiError::BadRequest(e.body_text()))
    }
}

/// The authenticated caller: a verified proxy identity naming an active employee.
pub struct Caller {
    pub employee: Employee,
    pub identity: Identity,
}

/// What [`Caller`] needs from the application state.
pub trait CallerSource: Send + Sync {
    /// The proxy↔backend key the identity headers are verified with.
    fn identity_key(&self) -> &IdentityKey;

    /// The employee a verified identity names, with the roles its session holds;
    /// [`ApiError::Unauthenticated`] when there is none (unknown, inactive, no
    /// live session).
    fn caller_employee(
        &self,
        identity: &Identity,
    ) -> impl Future<Output = Result<Employee, ApiError>> + Send;
}

impl<S: CallerSource> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let identity = state
            .identity_key()
            .verify(
                parts.method.as_str(),
                target,
                header(IDENTITY_HEADER),
                header(SIGNATURE_HEADER),
                now,
            )
            .map_err(|e| {
                tracing::warn!(reason = %e, "request without a valid proxy identity refused");
                ApiError::Unauthenticated
            })?;
        let employee = state.caller_employee(&identity).await?;
        Ok(Self { employee, identity })
    }
}
