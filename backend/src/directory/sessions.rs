//! What the directory asks of whoever owns sessions: when an employee's roles
//! change or the account is disabled, every session of theirs ends at once.
//! The identity module (which builds on the directory) implements it.

use std::future::Future;

use crate::http::{ApiError, Caller};

/// Ends an employee's sessions on a change made by `by`.
pub trait EndSessions {
    /// Ends every active session of `employee_id` for `reason`, each a
    /// `session.revoke` event by `by`.
    fn end_sessions(
        &self,
        employee_id: i64,
        reason: &str,
        by: &Caller,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
}
