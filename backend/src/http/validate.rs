//! Field checks shared by the resources; each failure is a 422 (or a 404 for an id
//! that cannot name anything).

use super::error::ApiError;
use crate::db::RepoError;

/// `value` has `min` to `max` characters (not blank when `min > 0`) and no control
/// characters (but newlines and tabs when `multiline`).
pub fn check_text(
    field: &str,
    value: &str,
    min: usize,
    max: usize,
    multiline: bool,
) -> Result<(), ApiError> {
    let n = value.chars().count();
    if n < min || n > max || (min > 0 && value.trim().is_empty()) {
        return Err(ApiError::Validation(format!(
            "{field} must be {min} to {max} characters"
        )));
    }
    if value
        .chars()
        .any(|c| c.is_control() && !(multiline && (c == '\n' || c == '\t' || c == '\r')))
    {
        return Err(ApiError::Validation(format!(
            "{field} contains control characters"
        )));
    }
    Ok(())
}

/// A positive numeric id from the path; anything else names no `what`.
pub fn parse_id(raw: &str, what: &'static str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or(ApiError::NotFound(what))
}

/// Maps [`RepoError::NotFound`] to a 404 naming `what`.
pub fn not_found(what: &'static str) -> impl FnOnce(RepoError) -> ApiError {
    move |e| match e {
        RepoError::NotFound => ApiError::NotFound(what),
        e => e.into(),
    }
}
