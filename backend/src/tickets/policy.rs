//! Object-level authorization of tickets: the policy's `ticket` input, the
//! `data.portcullis.tickets.decision` rule for one ticket and the
//! `data.portcullis.tickets.list_scope` rule for listings.

use serde_json::json;

use super::repo::{self, ListScope};
use crate::AppState;
use crate::http::policy::subject;
use crate::http::validate::not_found;
use crate::http::{ApiError, Caller};
use crate::model::Ticket;

/// `TCK-<year>-<6 digits>`; anything else names no ticket.
pub(crate) fn check_ticket_id(id: &str) -> Result<(), ApiError> {
    let b = id.as_bytes();
    let ok = b.len() == 15
        && id.starts_with("TCK-")
        && b[4..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'-'
        && b[9..].iter().all(u8::is_ascii_digit);
    ok.then_some(()).ok_or(ApiError::NotFound("ticket"))
}

fn ticket_input(t: &Ticket) -> serde_json::Value {
    json!({
        "reporter_id": t.reporter_id.to_string(),
        "assignee_id": t.assignee_id.map(|a| a.to_string()),
        "department_id": t.department_id.to_string(),
        "status": t.status.as_str(),
    })
}

impl AppState {
    /// Asks the policy whether `caller` may do `action` to `ticket`.
    pub(super) fn ticket_allowed(
        &self,
        caller: &Caller,
        action: &str,
        ticket: &Ticket,
        extra: Option<serde_json::Value>,
    ) -> bool {
        let mut input =
            json!({ "subject": subject(caller), "action": action, "ticket": ticket_input(ticket) });
        if let Some(extra) = extra {
            input["transition"] = extra;
        }
        let d = self
            .authz
            .current()
            .decide("data.portcullis.tickets.decision", &input);
        if !d.allow {
            tracing::info!(employee = caller.employee.id, action, ticket = %ticket.id, rule = %d.rule, reason = %d.reason, "ticket action denied");
        }
        d.allow
    }

    /// Loads a ticket the caller may read; otherwise 404 (existence is not revealed).
    pub(crate) async fn readable_ticket(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<Ticket, ApiError> {
        check_ticket_id(id)?;
        let t = repo::get_ticket(&self.db, id)
            .await
            .map_err(not_found("ticket"))?;
        if !self.ticket_allowed(caller, "read", &t, None) {
            return Err(ApiError::NotFound("ticket"));
        }
        Ok(t)
    }

    pub(super) fn list_scope(&self, caller: &Caller) -> ListScope {
        let input = json!({ "subject": subject(caller) });
        let v = match self
            .authz
            .current()
            .eval_value("data.portcullis.tickets.list_scope", &input)
        {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "list_scope failed; showing nothing");
                return ListScope::default();
            }
        };
        let num = |k: &str| {
            v.get(k)
                .and_then(|x| x.as_str())
                .and_then(|s| s.parse::<i64>().ok())
        };
        ListScope {
            all: v.get("all").and_then(serde_json::Value::as_bool) == Some(true),
            reporter_id: num("reporter_id"),
            assignee_id: num("assignee_id"),
            department_id: num("department_id"),
        }
    }
}
