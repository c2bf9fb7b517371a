//! How a verified proxy identity becomes a [`Caller`]: the employee must be active
//! and the session it names live (checked here on every request, in depth behind
//! the proxy), with the roles that need a second factor withheld when the session
//! used none.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use portcullis_contract::identity::Identity;

use super::store;
use crate::AppState;
use crate::db::{RepoError, now_text};
use crate::directory::repo;
use crate::http::{ApiError, Caller, verify_identity};
use crate::model::Employee;

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let identity = verify_identity(
            &state.identity_key,
            parts.method.as_str(),
            &parts.uri,
            &parts.headers,
        )
        .map_err(|e| {
            tracing::warn!(reason = %e, "request without a valid proxy identity refused");
            ApiError::Unauthenticated
        })?;
        let employee = caller_employee(state, &identity).await?;
        Ok(Self { employee, identity })
    }
}

/// The employee a verified identity names, with the roles its session holds;
/// [`ApiError::Unauthenticated`] when there is none (unknown, inactive, no live
/// session).
async fn caller_employee(state: &AppState, identity: &Identity) -> Result<Employee, ApiError> {
    let id: i64 = identity
        .sub
        .parse()
        .map_err(|_| ApiError::Unauthenticated)?;
    let employee = match repo::get_employee(&state.db, id).await {
        Ok(e) => e,
        Err(RepoError::NotFound) => return Err(ApiError::Unauthenticated),
        Err(e) => return Err(e.into()),
    };
    if employee.status != "active" {
        return Err(ApiError::Unauthenticated);
    }
    // Defence in depth: the proxy refuses revoked sessions too, but the
    // backend checks its own table on every request.
    let Some(sid) = identity.session_id.as_deref() else {
        return Err(ApiError::Unauthenticated);
    };
    let mfa = match store::session(&state.db, sid).await? {
        Some(s) if s.employee_id == employee.id && s.is_active(&now_text()) => s.mfa,
        _ => return Err(ApiError::Unauthenticated),
    };
    // Roles that need a second factor count only in sessions that used one
    // (the same rule as the roles in the session's access tokens).
    let mut employee = employee;
    state.identity.withhold_roles(&mut employee.roles, mfa);
    Ok(employee)
}
