//! Object-level authorization of the directory: the
//! `data.portcullis.directory.decision` rule per action and resource
//! (`employee`, `department`).

use serde_json::json;

use crate::AppState;
use crate::audit_log::{Category, EventExt, Outcome, event};
use crate::http::policy::{require, subject};
use crate::http::{ApiError, Caller};

impl AppState {
    /// A directory change the policy must allow (`action` on `resource`); a refusal is
    /// recorded as `<resource>.<verb>` with outcome failure.
    pub(super) async fn directory_change_allowed(
        &self,
        caller: &Caller,
        action: &str,
        resource: &str,
        audit_action: &str,
    ) -> Result<(), ApiError> {
        if self.directory_allowed(caller, action, resource).is_ok() {
            return Ok(());
        }
        self.require_change(false, &format!("{action} {resource}s"), || {
            event(Category::User, audit_action, Outcome::Failure).by(caller)
        })
        .await
    }

    pub(super) fn directory_allowed(
        &self,
        caller: &Caller,
        action: &str,
        resource: &str,
    ) -> Result<(), ApiError> {
        let input = json!({ "subject": subject(caller), "action": action, "resource": resource });
        let d = self
            .authz
            .current()
            .decide("data.portcullis.directory.decision", &input);
        require(d.allow, &format!("{action} {resource}s"))
    }
}
