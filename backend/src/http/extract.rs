//! Extractors every resource uses: [`ApiJson`] and [`ApiQuery`] (rejections become
//! problem documents) and [`Caller`], the verified proxy identity of an active
//! employee; and the verification of the proxy-signed identity headers
//! ([`verify_identity`], and [`verify_service`] for the proxy's own calls). How an
//! identity becomes an employee (the session check, roles withheld without a second
//! factor) is the identity module's: it implements the extraction of [`Caller`].

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Uri};
use portcullis_contract::identity::{
    IDENTITY_HEADER, Identity, IdentityError, IdentityKey, SIGNATURE_HEADER,
};
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
            Err(JsonRejection::JsonDataError(e)) => {
                // Not the parser's message: it quotes values, a password among them.
                let said = schema_mismatch(&e);
                tracing::debug!(error = %said, "request body refused");
                Err(ApiError::Validation(said))
            }
            Err(e) => {
                tracing::debug!(error = %e.body_text(), "request body refused");
                Err(ApiError::BadRequest(
                    "The body is not valid JSON".to_owned(),
                ))
            }
        }
    }
}

/// What the client is told about a body of the wrong shape: where (the field path, which
/// the schema names), never the parser's message, which quotes the input.
fn schema_mismatch(e: &(dyn std::error::Error + 'static)) -> String {
    let mut source = e.source();
    while let Some(err) = source {
        if let Some(found) = err.downcast_ref::<serde_path_to_error::Error<serde_json::Error>>() {
            // An unknown field's path ends in the client's own key: not repeated.
            if found.inner().to_string().starts_with("unknown field") {
                return "The body has a field the schema does not define (see /api/openapi.json)"
                    .to_owned();
            }
            let path = found.path().to_string();
            if path != "." {
                return format!(
                    "The body does not match the schema at `{path}` (see /api/openapi.json)"
                );
            }
        }
        source = err.source();
    }
    "The body does not match the schema (see /api/openapi.json)".to_owned()
}

/// Query string whose rejections become problem documents.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e: QueryRejection| {
                // The parser's message quotes the client's names and values (a token
                // pasted into a URL among them): neither echoed nor logged.
                tracing::debug!(status = %e.status(), "query string refused");
                ApiError::BadRequest(
                    "The query string does not match what this operation accepts (see /api/openapi.json)"
                        .to_owned(),
                )
            })
    }
}

/// The authenticated caller: a verified proxy identity naming an active employee.
pub struct Caller {
    pub employee: Employee,
    pub identity: Identity,
}

/// The identity the proxy signed for a request to `method` `uri` (the path and query
/// are signed), verified with `key` against the clock.
pub fn verify_identity(
    key: &IdentityKey,
    method: &str,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Identity, IdentityError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    key.verify(
        method,
        target,
        header(IDENTITY_HEADER),
        header(SIGNATURE_HEADER),
        now,
    )
}

/// Why [`verify_service`] refused a request.
#[derive(Debug)]
pub enum ServiceRefusal {
    /// No valid proxy-signed identity (a 401).
    Unverified(IdentityError),
    /// A valid identity, but a user's rather than the proxy's service subject (a 403).
    User(Box<Identity>),
}

impl ServiceRefusal {
    /// The problem answering the refusal; `forbidden` is the detail of the 403.
    pub fn into_api_error(self, forbidden: &str) -> ApiError {
        match self {
            Self::Unverified(_) => ApiError::Unauthenticated,
            Self::User(_) => ApiError::Forbidden(forbidden.into()),
        }
    }
}

/// The proxy's own call to an internal endpoint: a verified identity (see
/// [`verify_identity`]) for the proxy's service subject (`@proxy`, from no token).
pub fn verify_service(
    key: &IdentityKey,
    method: &str,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Identity, ServiceRefusal> {
    let id = verify_identity(key, method, uri, headers).map_err(ServiceRefusal::Unverified)?;
    if !id.is_service() {
        return Err(ServiceRefusal::User(Box::new(id)));
    }
    Ok(id)
}
