//! Object-level authorization of attachments: the `data.portcullis.attachments.decision`
//! rule for one attachment (or a new one) of a ticket the caller may read.

use serde_json::json;

use crate::AppState;
use crate::http::Caller;
use crate::http::policy::subject;
use crate::model::Ticket;

impl AppState {
    /// Asks the policy whether `caller` may `action` (`read`, `upload`, `delete`) an
    /// attachment of `ticket` uploaded by `created_by` (`None` for a new one).
    pub(super) fn attachment_allowed(
        &self,
        caller: &Caller,
        action: &str,
        ticket: &Ticket,
        created_by: Option<i64>,
    ) -> bool {
        let input = json!({
            "subject": subject(caller),
            "action": action,
            "ticket": {
                "reporter_id": ticket.reporter_id.to_string(),
                "assignee_id": ticket.assignee_id.map(|a| a.to_string()),
                "department_id": ticket.department_id.to_string(),
                "status": ticket.status.as_str(),
            },
            "attachment": {"created_by": created_by.map(|c| c.to_string())},
        });
        let d = self
            .authz
            .current()
            .decide("data.portcullis.attachments.decision", &input);
        if !d.allow {
            tracing::info!(employee = caller.employee.id, action, ticket = %ticket.id, rule = %d.rule, reason = %d.reason, "attachment action denied");
        }
        d.allow
    }
}
