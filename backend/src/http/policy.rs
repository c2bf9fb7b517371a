//! Glue to the shared policy bundle for object-level checks: the caller as the
//! policy's `subject` and the 403s that follow a refusal. The decisions
//! themselves are asked by each resource (`data.portcullis.<resource>.*`).

use serde_json::json;

use super::error::ApiError;
use super::extract::Caller;
use crate::model::Role;

/// The caller as the policy's `subject` input.
pub fn subject(c: &Caller) -> serde_json::Value {
    json!({
        "id": c.employee.id.to_string(),
        "roles": c.employee.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        "department_id": c.employee.department_id.map(|d| d.to_string()),
    })
}

/// `Ok` when `allowed`, else the 403 "You may not `what`".
pub fn require(allowed: bool, what: &str) -> Result<(), ApiError> {
    allowed
        .then_some(())
        .ok_or_else(|| ApiError::Forbidden(format!("You may not {what}")))
}

/// The 403 for everyone but administrators.
pub fn require_admin(c: &Caller) -> Result<(), ApiError> {
    c.employee
        .roles
        .contains(&Role::Administrator)
        .then_some(())
        .ok_or_else(|| ApiError::Forbidden("administrators only".into()))
}

/// The 403 for everyone but administrators and developers (the policy's `operators`:
/// the monitoring routes).
pub fn require_operator(c: &Caller) -> Result<(), ApiError> {
    c.employee
        .roles
        .iter()
        .any(|r| matches!(r, Role::Administrator | Role::Developer))
        .then_some(())
        .ok_or_else(|| ApiError::Forbidden("administrators and developers only".into()))
}
