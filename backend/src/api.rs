//! The HTTP API: handlers, extractors and the OpenAPI document generated
//! from them. Object-level authorization goes through the shared policy
//! bundle (`data.portcullis.tickets.*`, `data.portcullis.directory.*`).

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use utoipa::openapi::{RefOr, ResponseBuilder};
use utoipa::{IntoParams, OpenApi};

use crate::AppState;
use crate::audit::{Category, EventExt, Level, Outcome, REQUEST_META, RequestMeta, event};
use crate::error::{ApiError, Problem, REQUEST_ID};
use crate::identity::{IDENTITY_HEADER, Identity, SIGNATURE_HEADER};
use crate::model::*;
use crate::repo::{self, ListScope, RepoError, TicketFilter};

/// Largest accepted JSON body.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 200;

// ------------------------------------------------------------- extractors

/// JSON body whose rejections become problem documents.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::UnsupportedMediaType),
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError::Validation(e.body_text())),
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

/// Query string whose rejections become problem documents.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e: QueryRejection| ApiError::BadRequest(e.body_text()))
    }
}

/// The authenticated caller: a verified proxy identity naming an active employee.
pub struct Caller {
    pub employee: Employee,
    pub identity: Identity,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let identity = state
            .identity_key
            .verify(
                parts.method.as_str(),
                target,
                header(IDENTITY_HEADER),
                header(SIGNATURE_HEADER),
                now,
            )
            .map_err(|e| {
                tracing::warn!(reason = %e, "request without a valid proxy identity refused");
                ApiError::Unauthenticated
            })?;
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
        let mfa = match crate::auth::store::session(&state.db, sid).await? {
            Some(s) if s.employee_id == employee.id && s.is_active(&crate::db::now_text()) => s.mfa,
            _ => return Err(ApiError::Unauthenticated),
        };
        // Roles that need a second factor count only in sessions that used one
        // (the same rule as the roles in the session's access tokens).
        let mut employee = employee;
        state.identity.withhold_roles(&mut employee.roles, mfa);
        Ok(Self { employee, identity })
    }
}

/// Sets the request id (from the proxy's `X-Request-Id`) for problem
/// documents and echoes it on the response.
pub async fn request_id_layer(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|s| {
            s.len() <= 128
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    let meta = RequestMeta {
        // Set by the proxy from its trusted-proxy logic (inbound copies are stripped).
        source_ip: req
            .headers()
            .get("x-portcullis-client-ip")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok()),
        user_agent: req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    };
    let mut resp = REQUEST_ID
        .scope(id.clone(), REQUEST_META.scope(meta, next.run(req)))
        .await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

// ------------------------------------------------------------- validation

fn check_text(
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

fn check_username(u: &str) -> Result<(), ApiError> {
    let ok = (3..=64).contains(&u.len())
        && u.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    ok.then_some(()).ok_or_else(|| {
        ApiError::Validation("username must be 3 to 64 of a-z, 0-9, `.`, `_`, `-`".into())
    })
}

fn check_email(e: &str) -> Result<(), ApiError> {
    check_text("email", e, 3, 254, false)?;
    let ok = e
        .split_once('@')
        .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'))
        && !e.contains(char::is_whitespace);
    ok.then_some(())
        .ok_or_else(|| ApiError::Validation("email is not an address".into()))
}

fn check_ticket_id(id: &str) -> Result<(), ApiError> {
    let b = id.as_bytes();
    let ok = b.len() == 15
        && id.starts_with("TCK-")
        && b[4..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'-'
        && b[9..].iter().all(u8::is_ascii_digit);
    ok.then_some(()).ok_or(ApiError::NotFound("ticket"))
}

fn etag(t: &Ticket) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{}\"", t.version))
        .unwrap_or(HeaderValue::from_static("\"0\""))
}

/// The version named by `If-Match`, required on every ticket change.
fn if_match(headers: &HeaderMap) -> Result<i64, ApiError> {
    let raw = headers
        .get(header::IF_MATCH)
        .ok_or(ApiError::PreconditionRequired)?
        .to_str()
        .map_err(|_| ApiError::PreconditionFailed { current_version: 0 })?
        .trim();
    raw.strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .and_then(|v| v.parse::<i64>().ok())
        .ok_or(ApiError::PreconditionFailed { current_version: 0 })
}

fn with_etag(status: StatusCode, t: Ticket) -> Response {
    let tag = etag(&t);
    let mut resp = (status, Json(t)).into_response();
    resp.headers_mut().insert(header::ETAG, tag);
    resp
}

// ------------------------------------------------------------- authorization

fn subject(c: &Caller) -> serde_json::Value {
    json!({
        "id": c.employee.id.to_string(),
        "roles": c.employee.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        "department_id": c.employee.department_id.map(|d| d.to_string()),
    })
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
    fn ticket_allowed(
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
    async fn readable_ticket(&self, caller: &Caller, id: &str) -> Result<Ticket, ApiError> {
        check_ticket_id(id)?;
        let t = repo::get_ticket(&self.db, id).await.map_err(|e| match e {
            RepoError::NotFound => ApiError::NotFound("ticket"),
            e => e.into(),
        })?;
        if !self.ticket_allowed(caller, "read", &t, None) {
            return Err(ApiError::NotFound("ticket"));
        }
        Ok(t)
    }

    fn require(&self, allowed: bool, what: &str) -> Result<(), ApiError> {
        allowed
            .then_some(())
            .ok_or_else(|| ApiError::Forbidden(format!("You may not {what}")))
    }

    /// [`AppState::require`] for a change: a refusal is recorded as the `denied` event
    /// (outcome failure, level warning, reason `policy`) before the 403.
    async fn require_change(
        &self,
        allowed: bool,
        what: &str,
        denied: impl FnOnce() -> portcullis_audit::AuditEvent,
    ) -> Result<(), ApiError> {
        if allowed {
            return Ok(());
        }
        self.audit(denied().level(Level::Warning).detail("reason", "policy"))
            .await?;
        self.require(false, what)
    }

    /// A directory change the policy must allow (`action` on `resource`); a refusal is
    /// recorded as `<resource>.<verb>` with outcome failure.
    async fn directory_change_allowed(
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

    fn directory_allowed(
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
        self.require(d.allow, &format!("{action} {resource}s"))
    }

    fn list_scope(&self, caller: &Caller) -> ListScope {
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

// ------------------------------------------------------------- tickets

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
async fn create_ticket(
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
    repo::get_department(&s.db, department_id)
        .await
        .map_err(|_| ApiError::Validation(format!("department {department_id} does not exist")))?;
    let t = repo::create_ticket(&s.db, &c.employee, &new, department_id).await?;
    s.audit(
        ticket_event("ticket.create", Outcome::Success, &c, &t.id)
            .detail("department_id", t.department_id)
            .detail("priority", json!(t.priority))
            .detail("version", t.version),
    )
    .await?;
    let location = HeaderValue::from_str(&format!("/api/tickets/{}", t.id)).ok();
    let mut resp = with_etag(StatusCode::CREATED, t);
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
    limit: Option<i64>,
    /// From `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/tickets", tag = "tickets", params(ListParams),
    responses((status = 200, description = "Tickets visible to the caller, oldest first", body = TicketPage)))]
async fn list_tickets(
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

#[utoipa::path(get, path = "/api/tickets/{id}", tag = "tickets", params(("id" = String, Path, description = "TCK-<year>-<6 digits>")),
    responses((status = 200, description = "The ticket", body = Ticket, headers(("ETag" = String)))))]
async fn get_ticket(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(with_etag(StatusCode::OK, s.readable_ticket(&c, &id).await?))
}

/// Applies a guarded change, maps version conflicts to 412, and records `audit` (with the
/// new version) once the change is stored.
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
    let t = repo::update_ticket(&s.db, id, expected, c.employee.id, action, change)
        .await
        .map_err(|e| match e {
            RepoError::Invalid(d) => ApiError::InvalidTransition(d),
            e => e.into(),
        })?;
    s.audit(
        audit
            .detail("version", t.version)
            .detail("status", t.status.as_str()),
    )
    .await?;
    Ok(with_etag(StatusCode::OK, t))
}

#[utoipa::path(patch, path = "/api/tickets/{id}", tag = "tickets", request_body = TicketPatch,
    params(("id" = String, Path), ("If-Match" = String, Header, description = "The ETag you read")),
    responses((status = 200, description = "Updated", body = Ticket, headers(("ETag" = String)))))]
async fn update_ticket(
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
    params(("id" = String, Path), ("If-Match" = String, Header)),
    responses((status = 200, description = "Moved to the new status", body = Ticket)))]
async fn transition_ticket(
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
    params(("id" = String, Path), ("If-Match" = String, Header)),
    responses((status = 200, description = "Assigned", body = Ticket)))]
async fn assign_ticket(
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
    let tech = repo::get_employee(&s.db, a.assignee_id)
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
    params(("id" = String, Path), ("If-Match" = String, Header)),
    responses((status = 200, description = "Approved", body = Ticket)))]
async fn approve_ticket(
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

#[utoipa::path(get, path = "/api/tickets/{id}/comments", tag = "tickets", params(("id" = String, Path)),
    responses((status = 200, description = "Comments, oldest first", body = Vec<Comment>)))]
async fn list_comments(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<Comment>>, ApiError> {
    s.readable_ticket(&c, &id).await?;
    Ok(Json(repo::list_comments(&s.db, &id).await?))
}

#[utoipa::path(post, path = "/api/tickets/{id}/comments", tag = "tickets", params(("id" = String, Path)), request_body = NewComment,
    responses((status = 201, description = "Added", body = Comment)))]
async fn add_comment(
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
    let comment = repo::add_comment(&s.db, &id, c.employee.id, &n.body).await?;
    s.audit(
        ticket_event("ticket.comment", Outcome::Success, &c, &id).detail("comment_id", comment.id),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(comment)))
}

#[utoipa::path(get, path = "/api/tickets/{id}/history", tag = "tickets", params(("id" = String, Path)),
    responses((status = 200, description = "The hash-chained history, oldest first", body = Vec<HistoryEntry>)))]
async fn ticket_history(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<HistoryEntry>>, ApiError> {
    s.readable_ticket(&c, &id).await?;
    Ok(Json(repo::history(&s.db, &id).await?))
}

// ------------------------------------------------------------- directory

fn parse_id(raw: &str, what: &'static str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or(ApiError::NotFound(what))
}

fn not_found(what: &'static str) -> impl FnOnce(RepoError) -> ApiError {
    move |e| match e {
        RepoError::NotFound => ApiError::NotFound(what),
        e => e.into(),
    }
}

fn check_roles(roles: &[Role]) -> Result<(), ApiError> {
    if roles.is_empty() {
        return Err(ApiError::Validation(
            "an employee needs at least one role".into(),
        ));
    }
    Ok(())
}

/// Query of `GET /api/employees`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EmployeeQuery {
    department_id: Option<i64>,
}

#[utoipa::path(get, path = "/api/employees", tag = "directory", params(EmployeeQuery),
    responses((status = 200, description = "Employees", body = Vec<Employee>)))]
async fn list_employees(
    State(s): State<AppState>,
    c: Caller,
    ApiQuery(q): ApiQuery<EmployeeQuery>,
) -> Result<Json<Vec<Employee>>, ApiError> {
    s.directory_allowed(&c, "read", "employee")?;
    Ok(Json(repo::list_employees(&s.db, q.department_id).await?))
}

#[utoipa::path(post, path = "/api/employees", tag = "directory", request_body = NewEmployee,
    responses((status = 201, description = "Created", body = Employee)))]
async fn create_employee(
    State(s): State<AppState>,
    c: Caller,
    ApiJson(n): ApiJson<NewEmployee>,
) -> Result<(StatusCode, Json<Employee>), ApiError> {
    s.directory_change_allowed(&c, "create", "employee", "user.create")
        .await?;
    check_username(&n.username)?;
    check_email(&n.email)?;
    check_text("display_name", &n.display_name, 1, 100, false)?;
    check_roles(&n.roles)?;
    if let Some(d) = n.department_id {
        repo::get_department(&s.db, d)
            .await
            .map_err(|_| ApiError::Validation(format!("department {d} does not exist")))?;
    }
    let e = repo::create_employee(&s.db, &n, false).await?;
    s.audit(
        event(Category::User, "user.create", Outcome::Success)
            .by(&c)
            .target(e.id)
            .detail("target_username", e.username.clone())
            .detail(
                "roles",
                e.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
            )
            .detail("source", "api"),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(e)))
}

#[utoipa::path(get, path = "/api/employees/{id}", tag = "directory", params(("id" = i64, Path)),
    responses((status = 200, description = "The employee", body = Employee)))]
async fn get_employee(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<Json<Employee>, ApiError> {
    s.directory_allowed(&c, "read", "employee")?;
    let id = parse_id(&id, "employee")?;
    Ok(Json(
        repo::get_employee(&s.db, id)
            .await
            .map_err(not_found("employee"))?,
    ))
}

#[utoipa::path(patch, path = "/api/employees/{id}", tag = "directory", params(("id" = i64, Path)), request_body = EmployeePatch,
    responses((status = 200, description = "Updated", body = Employee)))]
async fn update_employee(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
    ApiJson(p): ApiJson<EmployeePatch>,
) -> Result<Json<Employee>, ApiError> {
    s.directory_change_allowed(&c, "update", "employee", "user.update")
        .await?;
    let id = parse_id(&id, "employee")?;
    // An administrator cannot lock themselves out by accident.
    if id == c.employee.id && (p.roles.is_some() || p.status.is_some()) {
        return Err(ApiError::Conflict(
            "you cannot change your own roles or status; ask another administrator".into(),
        ));
    }
    if let Some(e) = &p.email {
        check_email(e)?;
    }
    if let Some(d) = &p.display_name {
        check_text("display_name", d, 1, 100, false)?;
    }
    if let Some(r) = &p.roles {
        check_roles(r)?;
    }
    if let Some(st) = &p.status
        && st != "active"
        && st != "disabled"
    {
        return Err(ApiError::Validation(
            "status must be active or disabled".into(),
        ));
    }
    if let Some(Some(t)) = p.session_timeout_seconds
        && !(300..=43_200).contains(&t)
    {
        return Err(ApiError::Validation(
            "session_timeout_seconds must be 300 to 43200, or null for the default".into(),
        ));
    }
    if let Some(Some(d)) = p.department_id {
        repo::get_department(&s.db, d)
            .await
            .map_err(|_| ApiError::Validation(format!("department {d} does not exist")))?;
    }
    let before = repo::get_employee(&s.db, id)
        .await
        .map_err(not_found("employee"))?;
    let after = repo::update_employee(&s.db, id, &p)
        .await
        .map_err(not_found("employee"))?;
    let roles = |e: &Employee| e.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>();
    let fields: Vec<&str> = [
        ("email", before.email != after.email),
        ("display_name", before.display_name != after.display_name),
        ("department_id", before.department_id != after.department_id),
        ("roles", before.roles != after.roles),
        ("status", before.status != after.status),
        (
            "session_timeout_seconds",
            before.session_timeout_seconds != after.session_timeout_seconds,
        ),
    ]
    .into_iter()
    .filter_map(|(f, changed)| changed.then_some(f))
    .collect();
    s.audit(
        event(Category::User, "user.update", Outcome::Success)
            .by(&c)
            .target(id)
            .detail("fields", fields),
    )
    .await?;
    // A role change or a disabled account ends every session at once.
    if before.roles != after.roles || after.status != "active" {
        s.audit(
            event(Category::User, "user.roles_change", Outcome::Success)
                .level(Level::Warning)
                .by(&c)
                .target(id)
                .detail("roles_before", roles(&before))
                .detail("roles_after", roles(&after))
                .detail("status_before", before.status.clone())
                .detail("status_after", after.status.clone()),
        )
        .await?;
        for sid in s.revoke_all(id, "role_change").await? {
            s.session_revoked(&sid, "role_change", Some(&c)).await?;
        }
    }
    Ok(Json(after))
}

#[utoipa::path(delete, path = "/api/employees/{id}", tag = "directory", params(("id" = i64, Path)),
    responses((status = 204, description = "Deleted")))]
async fn delete_employee(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.directory_change_allowed(&c, "delete", "employee", "user.delete")
        .await?;
    let id = parse_id(&id, "employee")?;
    if id == c.employee.id {
        return Err(ApiError::Conflict(
            "you cannot delete your own account".into(),
        ));
    }
    repo::delete_employee(&s.db, id)
        .await
        .map_err(not_found("employee"))?;
    s.audit(
        event(Category::User, "user.delete", Outcome::Success)
            .level(Level::Warning)
            .by(&c)
            .target(id),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/departments", tag = "directory",
    responses((status = 200, description = "Departments", body = Vec<Department>)))]
async fn list_departments(
    State(s): State<AppState>,
    c: Caller,
) -> Result<Json<Vec<Department>>, ApiError> {
    s.directory_allowed(&c, "read", "department")?;
    Ok(Json(repo::list_departments(&s.db).await?))
}

#[utoipa::path(post, path = "/api/departments", tag = "directory", request_body = NewDepartment,
    responses((status = 201, description = "Created", body = Department)))]
async fn create_department(
    State(s): State<AppState>,
    c: Caller,
    ApiJson(n): ApiJson<NewDepartment>,
) -> Result<(StatusCode, Json<Department>), ApiError> {
    s.directory_change_allowed(&c, "create", "department", "department.create")
        .await?;
    check_text("name", &n.name, 1, 100, false)?;
    let d = repo::create_department(&s.db, n.name.trim()).await?;
    s.audit(
        event(Category::User, "department.create", Outcome::Success)
            .by(&c)
            .detail("department_id", d.id)
            .detail("name", d.name.clone()),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(d)))
}

#[utoipa::path(get, path = "/api/departments/{id}", tag = "directory", params(("id" = i64, Path)),
    responses((status = 200, description = "The department", body = Department)))]
async fn get_department(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<Json<Department>, ApiError> {
    s.directory_allowed(&c, "read", "department")?;
    let id = parse_id(&id, "department")?;
    Ok(Json(
        repo::get_department(&s.db, id)
            .await
            .map_err(not_found("department"))?,
    ))
}

#[utoipa::path(patch, path = "/api/departments/{id}", tag = "directory", params(("id" = i64, Path)), request_body = NewDepartment,
    responses((status = 200, description = "Renamed", body = Department)))]
async fn rename_department(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
    ApiJson(n): ApiJson<NewDepartment>,
) -> Result<Json<Department>, ApiError> {
    s.directory_change_allowed(&c, "update", "department", "department.rename")
        .await?;
    let id = parse_id(&id, "department")?;
    check_text("name", &n.name, 1, 100, false)?;
    let d = repo::rename_department(&s.db, id, n.name.trim())
        .await
        .map_err(not_found("department"))?;
    s.audit(
        event(Category::User, "department.rename", Outcome::Success)
            .by(&c)
            .detail("department_id", d.id)
            .detail("name", d.name.clone()),
    )
    .await?;
    Ok(Json(d))
}

#[utoipa::path(delete, path = "/api/departments/{id}", tag = "directory", params(("id" = i64, Path)),
    responses((status = 204, description = "Deleted")))]
async fn delete_department(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.directory_change_allowed(&c, "delete", "department", "department.delete")
        .await?;
    let id = parse_id(&id, "department")?;
    repo::delete_department(&s.db, id)
        .await
        .map_err(not_found("department"))?;
    s.audit(
        event(Category::User, "department.delete", Outcome::Success)
            .level(Level::Warning)
            .by(&c)
            .detail("department_id", id),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ------------------------------------------------------------- public

#[utoipa::path(get, path = "/monitoring/health", tag = "monitoring",
    responses((status = 200, description = "The backend is up", body = serde_json::Value)))]
async fn health(State(s): State<AppState>) -> Response {
    let db_ok = sqlx::query("select 1").execute(s.db.pool()).await.is_ok();
    let status = if db_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if db_ok { "ok" } else { "degraded" },
        "service": "portcullis-backend",
        "version": env!("CARGO_PKG_VERSION"),
        "checks": { "database": if db_ok { "ok" } else { "unreachable" } },
    });
    (status, Json(body)).into_response()
}

async fn openapi_json() -> Response {
    match serde_json::to_string(&openapi()) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => ApiError::Internal(e.to_string()).into_response(),
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Portcullis ticket API", description = "Reached through the Portcullis gateway, which authenticates every request."),
    paths(
        create_ticket, list_tickets, get_ticket, update_ticket, transition_ticket, assign_ticket, approve_ticket,
        list_comments, add_comment, ticket_history,
        list_employees, create_employee, get_employee, update_employee, delete_employee,
        list_departments, create_department, get_department, rename_department, delete_department,
        crate::audit::api::list_logs, crate::audit::api::count_logs, crate::audit::api::export_logs,
        health,
    ),
    components(schemas(Problem, crate::audit::api::AuditLogPage, crate::audit::api::AuditLogCount)),
    modifiers(&ErrorResponses),
)]
struct ApiDoc;

/// Adds the problem responses every operation can produce (from the
/// backend or from the gateway in front of it) and the bearer scheme.
struct ErrorResponses;

impl utoipa::Modify for ErrorResponses {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        let problem = |desc: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(desc)
                    .content(
                        "application/problem+json",
                        utoipa::openapi::ContentBuilder::new()
                            .schema(Some(utoipa::openapi::Ref::from_schema_name("Problem")))
                            .build(),
                    )
                    .build(),
            )
        };
        let common: &[(&str, &str)] = &[
            ("400", "Malformed request"),
            ("401", "Not authenticated"),
            ("403", "Not allowed"),
            ("404", "Not found or not visible"),
            ("405", "Method not allowed"),
            ("406", "Not acceptable"),
            ("409", "Conflict or invalid workflow transition"),
            ("412", "If-Match does not name the current version"),
            ("413", "Body too large"),
            ("415", "Send application/json"),
            ("422", "Invalid field values"),
            ("428", "If-Match required"),
            ("429", "Rate limited"),
            ("500", "Internal error"),
            ("502", "Backend unavailable"),
            ("503", "Unavailable"),
            ("504", "Backend timeout"),
        ];
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                for (code, desc) in common {
                    op.responses
                        .responses
                        .entry((*code).to_owned())
                        .or_insert_with(|| problem(desc));
                }
                if op
                    .tags
                    .as_ref()
                    .is_some_and(|t| t.iter().any(|t| t != "monitoring"))
                {
                    op.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
                        "bearer",
                        Vec::<String>::new(),
                    )]);
                }
            }
        }
    }
}

/// The OpenAPI 3.1 document of this API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// All routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/monitoring/health", get(health))
        .route("/api/openapi.json", get(openapi_json))
        .route("/api/tickets", post(create_ticket).get(list_tickets))
        .route("/api/tickets/{id}", get(get_ticket).patch(update_ticket))
        .route("/api/tickets/{id}/transitions", post(transition_ticket))
        .route("/api/tickets/{id}/assignment", put(assign_ticket))
        .route("/api/tickets/{id}/approval", post(approve_ticket))
        .route(
            "/api/tickets/{id}/comments",
            get(list_comments).post(add_comment),
        )
        .route("/api/tickets/{id}/history", get(ticket_history))
        .route("/api/employees", get(list_employees).post(create_employee))
        .route(
            "/api/employees/{id}",
            get(get_employee)
                .patch(update_employee)
                .delete(delete_employee),
        )
        .route(
            "/api/departments",
            get(list_departments).post(create_department),
        )
        .route(
            "/api/departments/{id}",
            get(get_department)
                .patch(rename_department)
                .delete(delete_department),
        )
        .merge(crate::auth::router())
        .merge(crate::audit::api::router())
        .fallback(|| async { ApiError::NotFound("resource") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(request_id_layer))
        .with_state(state)
}
