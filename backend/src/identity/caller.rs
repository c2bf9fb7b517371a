//! How a verified proxy identity becomes a [`Caller`]: the employee must be active
//! and the session it names live (checked here on every request, in depth behind
//! the proxy), with the roles that need a second factor withheld when the session
//! used none.

use portcullis_contract::identity::{Identity, IdentityKey};

use super::store;
use crate::AppState;
use crate::db::{RepoError, now_text};
use crate::directory::repo;
use crate::http::{ApiError, CallerSource};
use crate::model::Employee;

impl CallerSource for AppState {
    fn identity_key(&self) -> &IdentityKey {
        &self.identity_key
    }

    async fn caller_employee(&self, identity: &Identity) -> Result<Employee, ApiError> {
        let id: i64 = identity
            .sub
            .parse()
            .map_err(|_| ApiError::Unauthenticated)?;
        let employee = match repo::get_employee(&self.db, id).await {
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
        let mfa = match store::session(&self.db, sid).await? {
            Some(s) if s.employee_id == employee.id && s.is_active(&now_text()) => s.mfa,
            _ => return Err(ApiError::Unauthenticated),
        };
        // Roles that need a second factor count only in sessions that used one
        // (the same rule as the roles in the session's access tokens).
        let mut employee = employee;
        self.identity.withhold_roles(&mut employee.roles, mfa);
        Ok(employee)
    }
}
