//! The ticket endpoints (`/api/tickets/...`): create, list, read, edit, move through
//! the workflow, assign, approve, comment, and the hash-chained history. Every change
//! names the version it read (`If-Match`) and is an audit event.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;

use super::repo::{self, TicketFilter};
use crate::AppState;
use crate::audit_log::{Category, EventExt, Outcome, event};
use crate::db::RepoError;
use crate::directory::repo as directory;
use crate::http::etag::{if_match, with_etag};
use crate::http::validate::check_text;
use crate::http::{ApiError, ApiJson, ApiQuery, Caller};
use crate::model::{
    Assignment, Comment, HistoryEntry, NewComment, NewTicket, Role, Ticket, TicketPage,
    TicketPatch, TicketStatus, Transition,
};

const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 200;

/// A ticket event (category `maintenance`) by `c` about ticket `id`.
fn ticket_event(
    action: &str,
    outcome: Outcome,
    c: &Caller,
    id: &str,
) -> portcullis_audit::AuditEvent {
    event(Category::Maintenance, action, outcome)
        .by(c)
        .detail("ticket_id", id.to_owned())
}

#[utoipa::path(post, path = "/api/tickets", tag = "tickets", request_body = NewTicket,
    responses((status = 201, description = "Created", body = Ticket, headers(("ETag" = String), ("Location" = String)))))]
pub(crate) async fn create_ticket(
    State(s): State<AppState>,
    c: Caller,
    ApiJson(new): ApiJson<NewTicket>,
) -> Result<Response, ApiError> {
    check_text("title", &new.title, 1, 200, false)?;
    check_text("description", &new.description, 0, 10_000, true)?;
    let department_id = new
        .department_id
        .or(c.employee.department_id)
        .ok_or_else(|| {
            ApiError::Validation("department_id is required: you belong to no department".into())
        })?;
    let probe = Ticket {
        id: String::new(),
        title: String::new(),
        description: String::new(),
        status: TicketStatus::Open,
        priority: new.priority,
        department_id,
        reporter_id: c.employee.id,
        assignee_id: None,
        approved_by: None,
        approved_at: None,
        version: 0,
        created_at: String::new(),
        updated_at: String::new(),
    };
    s.require_change(
        s.ticket_allowed(&c, "create", &probe, None),
        "create tickets for this department",
        || {
            ticket_event("ticket.create", Outcome::Failure, &c, "")
                .detail("department_id", department_id)
        },
    )
    .await?;
    directory::get_department(&s.db, department_id)
        .await
        .map_err(|_| ApiError::Validation(format!("department {department_id} does not exist")))?;
    let mut tx = s.db.begin().await?;
    let t = repo::create_ticket(&mut tx, &c.employee, &new, department_id).await?;
    s.commit_audited(
        tx,
        [ticket_event("ticket.create", Outcome::Success, &c, &t.id)
            .detail("department_id", t.department_id)
            .detail("priority", json!(t.priority))
            .detail("version", t.version)],
    )
    .await?;
    let location = HeaderValue::from_str(&format!("/api/tickets/{}", t.id)).ok();
    let mut resp = with_etag(StatusCode::CREATED, t.version, t);
    if let Some(l) = location {
        resp.headers_mut().insert(header::LOCATION, l);
    }
    Ok(resp)
}

/// Query of `GET /api/tickets`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    status: Option<TicketStatus>,
    department_id: Option<i64>,
    assignee_id: Option<i64>,
    reporter_id: Option<i64>,
    /// 1 to 200, default 50.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// From `next_cursor` of the previous page.
    #[param(pattern = r"^[1-9][0-9]{0,17}$")]
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/tickets", tag = "tickets", params(ListParams),
    responses((status = 200, description = "Tickets visible to the caller, oldest first", body = TicketPage)))]
pub(crate) async fn list_tickets(
    State(s): State<AppState>,
    c: Caller,
    ApiQuery(q): ApiQuery<ListParams>,
) -> Result<Json<TicketPage>, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::Validation(format!(
            "limit must be 1 to {MAX_PAGE}"
        )));
    }
    let after =
        match q.cursor.as_deref() {
            None => None,
            Some(c) => Some(c.parse::<i64>().ok().filter(|v| *v > 0).ok_or_else(|| {
                ApiError::BadRequest("cursor is not one this API returned".into())
            })?),
        };
    let filter = TicketFilter {
        status: q.status,
        department_id: q.department_id,
        assignee_id: q.assignee_id,
        reporter_id: q.reporter_id,
    };
    let scope = s.list_scope(&c);
    let (tickets, next) = repo::list_tickets(&s.db, &filter, &scope, after, limit).await?;
    // Defence in depth: the row-level rule must agree with the scope.
    let items = tickets
        .into_iter()
        .filter(|t| s.ticket_allowed(&c, "read", t, None))
        .collect();
    Ok(Json(TicketPage {
        items,
        next_cursor: next.map(|n| n.to_string()),
    }))
}

#[utoipa::path(get, path = "/api/tickets/{id}", tag = "tickets", params(("id" = String, Path, description = "TCK-<year>-<6 digits>", pattern = r"^TCK-[0-9]{4}-[0-9]{6}$")),
    responses((status = 200, description = "The ticket", body = Ticket, headers(("ETag" = String)))))]
pub(crate) async fn get_ticket(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let t = s.readable_ticket(&c, &id).await?;
    Ok(with_etag(StatusCode::OK, t.version, t))
}

/// Applies a guarded change, maps version conflicts to 412, and commits it together with
/// `audit` (carrying the new version).
async fn change_ticket<F>(
    s: &AppState,
    c: &Caller,
    id: &str,
    headers: &HeaderMap,
    action: &str,
    audit: portcullis_audit::AuditEvent,
    change: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(&mut Ticket) -> Result<(), RepoError>,
{
    let expected = if_match(headers)?;
    let mut tx = s.db.begin().await?;
    let t = repo::update_ticket(&mut tx, id, expected, c.employee.id, action, change)
        .await
        .map_err(|e| match e {
            RepoError::Invalid(d) => ApiError::InvalidTransition(d),
            e => e.into(),
        })?;
    s.commit_audited(
        tx,
        [audit
            .detail("version", t.version)
            .detail("status", t.status.as_str())],
    )
    .await?;
    Ok(with_etag(StatusCode::OK, t.version, t))
}

#[utoipa::path(patch, path = "/api/tickets/{id}", tag = "tickets", request_body = TicketPatch,
    params(("id" = String, Path, description = "TCK-<year>-<6 digits>", pattern = r"^TCK-[0-9]{4}-[0-9]{6}$"),
        ("If-Match" = String, Header, description = "The ETag you read: `\"<version>\"`, one strong tag", pattern = r#"^"[0-9]{1,18}"$"#)),
    responses((status = 200, description = "Updated", body = Ticket, headers(("ETag" = String)))))]
pub(crate) async fn update_ticket(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(p): ApiJson<TicketPatch>,
) -> Result<Response, ApiError> {
    let t = s.readable_ticket(&c, &id).await?;
    s.require_change(
        s.ticket_allowed(&c, "update", &t, None),
        "edit this ticket",
        || ticket_event("ticket.update", Outcome::Failure, &c, &id),
    )
    .await?;
    if let Some(title) = &p.title {
        check_text("title", title, 1, 200, false)?;
    }
    if let Some(d) = &p.description {
        check_text("description", d, 0, 10_000, true)?;
    }
    let fields: Vec<&str> = [
        ("title", p.title.is_some()),
        ("description", p.description.is_some()),
        ("priority", p.priority.is_some()),
    ]
    .into_iter()
    .filter_map(|(f, set)| set.then_some(f))
    .collect();
    let audit = ticket_event("ticket.update", Outcome::Success, &c, &id).detail("fields", fields);
    change_ticket(&s, &c, &id, &headers, "updated", audit, |t| {
        if let Some(v) = p.title {
            t.title = v;
        }
        if let Some(v) = p.description {
            t.description = v;
        }
        if let Some(v) = p.priority {
            t.priority = v;
        }
        Ok(())
    })
    .await
}

#[utoipa::path(post, path = "/api/tickets/{id}/transitions", tag = "tickets", request_body = Transition,
    params(("id" = String, Path, description = "TCK-<year>-<6 digits>", pattern = r"^TCK-[0-9]{4}-[0-9]{6}$"),
        ("If-Match" = String, Header, description = "The ETag you read: `\"<version>\"`, one strong tag", pattern = r#"^"[0-9]{1,18}"$"#)),
    responses((status = 200, description = "Moved to the new status", body = Ticket, headers(("ETag" = String)))))]
pub(crate) async fn transition_ticket(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(tr): ApiJson<Transition>,
) -> Result<Response, ApiError> {
    let t = s.readable_ticket(&c, &id).await?;
    let extra = json!({ "from": t.status.as_str(), "to": tr.to.as_str() });
    s.require_change(
        s.ticket_allowed(&c, "transition", &t, Some(extra.clone())),
        "move this ticket to that status",
        || {
            ticket_event("ticket.transition", Outcome::Failure, &c, &id)
                .detail("transition", extra.clone())
        },
    )
    .await?;
    let audit = ticket_event("ticket.transition", Outcome::Success, &c, &id)
        .detail("from", t.status.as_str())
        .detail("to", tr.to.as_str());
    change_ticket(&s, &c, &id, &headers, "transitioned", audit, |t| {
        if !t.status.can_become(tr.to) {
            return Err(RepoError::Invalid(format!(
                "a ticket cannot go from {} to {}",
                t.status.as_str(),
                tr.to.as_str()
            )));
        }
        t.status = tr.to;
        Ok(())
    })
    .await
}

#[utoipa::path(put, path = "/api/tickets/{id}/assignment", tag = "tickets", request_body = Assignment,
    params(("id" = String, Path, description = "TCK-<year>-<6 digits>", pattern = r"^TCK-[0-9]{4}-[0-9]{6}$"),
        ("If-Match" = String, Header, description = "The ETag you read: `\"<version>\"`, one strong tag", pattern = r#"^"[0-9]{1,18}"$"#)),
    responses((status = 200, description = "Assigned", body = Ticket, headers(("ETag" = String)))))]
pub(crate) async fn assign_ticket(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(a): ApiJson<Assignment>,
) -> Result<Response, ApiError> {
    let t = s.readable_ticket(&c, &id).await?;
    s.require_change(
        s.ticket_allowed(&c, "assign", &t, None),
        "assign this ticket",
        || {
            ticket_event("ticket.assign", Outcome::Failure, &c, &id)
                .detail("assignee_id", a.assignee_id)
        },
    )
    .await?;
    let tech = directory::get_employee(&s.db, a.assignee_id)
        .await
        .map_err(|_| ApiError::Validation(format!("employee {} does not exist", a.assignee_id)))?;
    if tech.status != "active" || !tech.roles.contains(&Role::Technician) {
        return Err(ApiError::Validation(
            "tickets are assigned to active technicians only".into(),
        ));
    }
    let audit = ticket_event("ticket.assign", Outcome::Success, &c, &id)
        .detail("assignee_id", tech.id)
        .detail("previous_assignee_id", json!(t.assignee_id));
    change_ticket(&s, &c, &id, &headers, "assigned", audit, |t| {
        t.assignee_id = Some(tech.id);
        Ok(())
    })
    .await
}

#[utoipa::path(post, path = "/api/tickets/{id}/approval", tag = "tickets",
    params(("id" = String, Path, description = "TCK-<year>-<6 digits>", pattern = r"^TCK-[0-9]{4}-[0-9]{6}$"),
        ("If-Match" = String, Header, description = "The ETag you read: `\"<version>\"`, one strong tag", pattern = r#"^"[0-9]{1,18}"$"#)),
    responses((status = 200, description = "Approved", body = Ticket, headers(("ETag" = String)))))]
pub(crate) async fn approve_ticket(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let t = s.readable_ticket(&c, &id).await?;
    s.require_change(
        s.ticket_allowed(&c, "approve", &t, None),
        "approve this ticket",
        || ticket_event("ticket.approve", Outcome::Failure, &c, &id),
    )
    .await?;
    let approver = c.employee.id;
    let audit = ticket_event("ticket.approve", Outcome::Success, &c, &id);
    change_ticket(&s, &c, &id, &headers, "approved", audit, |t| {
        if t.approved_by.is_some() {
            return Err(RepoError::Invalid("the ticket is already approved".into()));
        }
        t.approved_by = Some(approver);
        t.approved_at = Some(crate::db::now_text());
        Ok(())
    })
    .await
}

#[utoipa::path(get, path = "/api/tickets/{id}/comments", tag = "tickets", params(("id" = String, Path, description = "TCK-<year>-<6 digits>", pattern = r"^TCK-[0-9]{4}-[0-9]{6}$")),
    responses((status = 200, description = "Comments, oldest first", body = Vec<Comment>)))]
pub(crate) async fn list_comments(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<Comment>>, ApiError> {
    s.readable_ticket(&c, &id).await?;
    Ok(Json(repo::list_comments(&s.db, &id).await?))
}

#[utoipa::path(post, path = "/api/tickets/{id}/comments", tag = "tickets", params(("id" = String, Path, description = "TCK-<year>-<6 digits>", pattern = r"^TCK-[0-9]{4}-[0-9]{6}$")), request_body = NewComment,
    responses((status = 201, description = "Added", body = Comment)))]
pub(crate) async fn add_comment(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
    ApiJson(n): ApiJson<NewComment>,
) -> Result<(StatusCode, Json<Comment>), ApiError> {
    let t = s.readable_ticket(&c, &id).await?;
    s.require_change(
        s.ticket_allowed(&c, "comment", &t, None),
        "comment on this ticket",
        || ticket_event("ticket.comment", Outcome::Failure, &c, &id),
    )
    .await?;
    check_text("body", &n.body, 1, 5_000, true)?;
    let mut tx = s.db.begin().await?;
    let comment = repo::add_comment(&mut tx, &id, c.employee.id, &n.body).await?;
    s.commit_audited(
        tx,
        [ticket_event("ticket.comment", Outcome::Success, &c, &id)
            .detail("comment_id", comment.id)],
    )
    .await?;
    Ok((StatusCode::CREATED, Json(comment)))
}

#[utoipa::path(get, path = "/api/tickets/{id}/history", tag = "tickets", params(("id" = String, Path, description = "TCK-<year>-<6 digits>", pattern = r"^TCK-[0-9]{4}-[0-9]{6}$")),
    responses((status = 200, description = "The hash-chained history, oldest first", body = Vec<HistoryEntry>)))]
pub(crate) async fn ticket_history(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<HistoryEntry>>, ApiError> {
    s.readable_ticket(&c, &id).await?;
    Ok(Json(repo::history(&s.db, &id).await?))
}
