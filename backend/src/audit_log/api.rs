//! The administrators' view of the audit trail: `/admin/audit/logs` (a page, newest
//! first), `/count` and `/export` (CSV, streamed; the export is itself an event).

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis_audit::{AuditRecord, Category, Level, Outcome};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::emit::{EventExt, event};
use super::store::{self, AuditFilter, Order, Position};
use crate::AppState;
use crate::db::{Db, format_time};
use crate::http::policy::require_admin;
use crate::http::{ApiError, ApiQuery, Caller};

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 500;
/// Rows read per database round trip of an export; bounds its memory.
const EXPORT_PAGE: i64 = 500;
/// Longest accepted text filter.
const MAX_FILTER_CHARS: usize = 1024;

/// Query of the audit log view (`/admin/audit/logs`, `/count`, `/export`). Filters
/// combine with `and`; `limit` and `cursor` apply to the list only.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Events at or after this time (RFC 3339, e.g. `2026-03-01T00:00:00Z`).
    #[param(format = DateTime)]
    from: Option<String>,
    /// Events before this time (RFC 3339).
    #[param(format = DateTime)]
    to: Option<String>,
    /// `user.id`: an employee id, or on a failed sign-in the user name tried.
    #[param(min_length = 1, max_length = 1024)]
    user_id: Option<String>,
    /// `auth`, `user`, `maintenance`, `system`, `api` or `security`.
    category: Option<String>,
    /// `event.action`, e.g. `login`, `ticket.update`, `policy.deny`.
    #[param(min_length = 1, max_length = 1024)]
    action: Option<String>,
    /// `success`, `failure` or `unknown`.
    outcome: Option<String>,
    /// `info`, `warning`, `error` or `critical`.
    level: Option<String>,
    /// `http.request.id`: every event of one request, proxy and backend.
    #[param(min_length = 1, max_length = 1024)]
    request_id: Option<String>,
    /// `portcullis.session.id`.
    #[param(min_length = 1, max_length = 1024)]
    session_id: Option<String>,
    /// `proxy`, `backend` or `cli`.
    #[param(min_length = 1, max_length = 1024)]
    emitter: Option<String>,
    /// Page size, 1 to 500, default 100 (list only).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page (list only).
    cursor: Option<String>,
}

fn one_of(field: &str, value: &Option<String>, allowed: &[&str]) -> Result<(), ApiError> {
    match value {
        Some(v) if !allowed.contains(&v.as_str()) => Err(ApiError::Validation(format!(
            "{field} must be one of {}",
            allowed.join(", ")
        ))),
        _ => Ok(()),
    }
}

fn time_filter(field: &str, value: &Option<String>) -> Result<Option<String>, ApiError> {
    value
        .as_deref()
        .map(|v| {
            time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
                .map(format_time)
                .map_err(|_| {
                    ApiError::Validation(format!(
                        "{field} must be an RFC 3339 time such as 2026-03-01T00:00:00Z"
                    ))
                })
        })
        .transpose()
}

impl AuditQuery {
    /// The validated filters; `paged` says whether `limit`/`cursor` may be given.
    fn filter(&self, paged: bool) -> Result<AuditFilter, ApiError> {
        let Self {
            from,
            to,
            user_id,
            category,
            action,
            outcome,
            level,
            request_id,
            session_id,
            emitter,
            limit,
            cursor,
        } = self;
        if !paged && (limit.is_some() || cursor.is_some()) {
            return Err(ApiError::BadRequest(
                "limit and cursor apply to /admin/audit/logs only".into(),
            ));
        }
        one_of(
            "category",
            category,
            &["auth", "user", "maintenance", "system", "api", "security"],
        )?;
        one_of("outcome", outcome, &["success", "failure", "unknown"])?;
        one_of("level", level, &["info", "warning", "error", "critical"])?;
        for (field, value) in [
            ("user_id", user_id),
            ("action", action),
            ("request_id", request_id),
            ("session_id", session_id),
            ("emitter", emitter),
        ] {
            if value
                .as_ref()
                .is_some_and(|v| v.is_empty() || v.chars().count() > MAX_FILTER_CHARS)
            {
                return Err(ApiError::Validation(format!(
                    "{field} must be 1 to {MAX_FILTER_CHARS} characters"
                )));
            }
        }
        let filter = AuditFilter {
            from: time_filter("from", from)?,
            to: time_filter("to", to)?,
            user_id: user_id.clone(),
            category: category.clone(),
            action: action.clone(),
            outcome: outcome.clone(),
            level: level.clone(),
            request_id: request_id.clone(),
            session_id: session_id.clone(),
            emitter: emitter.clone(),
        };
        if let (Some(f), Some(t)) = (&filter.from, &filter.to)
            && f >= t
        {
            return Err(ApiError::Validation("from must be before to".into()));
        }
        Ok(filter)
    }
}

/// The filters as given, for the export's own audit event.
fn filter_json(f: &AuditFilter) -> serde_json::Value {
    let AuditFilter {
        from,
        to,
        user_id,
        category,
        action,
        outcome,
        level,
        request_id,
        session_id,
        emitter,
    } = f;
    let mut map = serde_json::Map::new();
    for (k, v) in [
        ("from", from),
        ("to", to),
        ("user_id", user_id),
        ("category", category),
        ("action", action),
        ("outcome", outcome),
        ("level", level),
        ("request_id", request_id),
        ("session_id", session_id),
        ("emitter", emitter),
    ] {
        if let Some(v) = v {
            map.insert(k.to_owned(), json!(v));
        }
    }
    serde_json::Value::Object(map)
}

fn encode_cursor(p: &Position) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}|{}", p.occurred_at, p.row_id))
}

fn decode_cursor(raw: &str) -> Result<Position, ApiError> {
    let bad = || ApiError::BadRequest("cursor is not one this API returned".into());
    let text = URL_SAFE_NO_PAD
        .decode(raw)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(bad)?;
    let (at, id) = text.split_once('|').ok_or_else(bad)?;
    let row_id = id.parse::<i64>().ok().filter(|v| *v > 0).ok_or_else(bad)?;
    if at.len() != 27 || !at.ends_with('Z') {
        return Err(bad());
    }
    Ok(Position {
        occurred_at: at.to_owned(),
        row_id,
    })
}

/// A page of audit events.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditLogPage {
    /// Events, newest first, each the ECS object as recorded (see `docs/audit-events.md`).
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<serde_json::Value>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// How many events match.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditLogCount {
    pub count: i64,
}

/// `GET /admin/audit/logs`.
#[utoipa::path(get, path = "/admin/audit/logs", tag = "admin", params(AuditQuery),
    responses((status = 200, description = "Audit events, newest first", body = AuditLogPage)))]
pub async fn list_logs(
    State(s): State<AppState>,
    c: Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Response, ApiError> {
    require_admin(&c)?;
    let filter = q.filter(true)?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::Validation(format!(
            "limit must be 1 to {MAX_LIMIT}"
        )));
    }
    let after = q.cursor.as_deref().map(decode_cursor).transpose()?;
    let mut rows = store::page(
        &s.db,
        &filter,
        Order::NewestFirst,
        after.as_ref(),
        limit + 1,
    )
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let next = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| encode_cursor(&r.position))
    } else {
        None
    };
    let items = rows
        .iter()
        .map(|r| {
            serde_json::from_str(&r.line)
                .unwrap_or_else(|_| json!({ "portcullis.malformed_line": r.line }))
        })
        .collect();
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(AuditLogPage {
            items,
            next_cursor: next,
        }),
    )
        .into_response())
}

/// `GET /admin/audit/logs/count`.
#[utoipa::path(get, path = "/admin/audit/logs/count", tag = "admin", params(AuditQuery),
    responses((status = 200, description = "Number of matching events", body = AuditLogCount)))]
pub async fn count_logs(
    State(s): State<AppState>,
    c: Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Response, ApiError> {
    require_admin(&c)?;
    let filter = q.filter(false)?;
    let count = store::count(&s.db, &filter)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(AuditLogCount { count }),
    )
        .into_response())
}

/// CSV columns of the export.
pub const EXPORT_COLUMNS: [&str; 19] = [
    "timestamp",
    "event_id",
    "emitter",
    "seq",
    "category",
    "action",
    "outcome",
    "level",
    "user_id",
    "roles",
    "session_id",
    "auth_method",
    "source_ip",
    "user_agent",
    "request_id",
    "decision_id",
    "policy_digest",
    "route",
    "details",
];

/// A cell a spreadsheet will not run as a formula: text starting with `=`, `+`, `-`, `@`,
/// tab or carriage return gets a leading `'` (OWASP "CSV injection").
pub fn safe_cell(value: &str) -> std::borrow::Cow<'_, str> {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        std::borrow::Cow::Owned(format!("'{value}"))
    } else {
        std::borrow::Cow::Borrowed(value)
    }
}

fn csv_row(line: &str) -> Vec<String> {
    let Ok(r) = AuditRecord::parse(line) else {
        // Only a row edited in the database fails to parse; export it as it is.
        let mut cells = vec![String::new(); EXPORT_COLUMNS.len()];
        cells[EXPORT_COLUMNS.len() - 1] = line.to_owned();
        return cells;
    };
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    vec![
        r.timestamp.clone(),
        r.id.clone(),
        r.emitter.clone(),
        r.seq.to_string(),
        r.category.as_str().to_owned(),
        r.action.clone(),
        r.outcome.as_str().to_owned(),
        r.level.as_str().to_owned(),
        opt(&r.user_id),
        r.roles.join(";"),
        opt(&r.session_id),
        opt(&r.auth_method),
        r.source_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        opt(&r.user_agent),
        opt(&r.request_id),
        opt(&r.decision_id),
        opt(&r.policy_digest),
        opt(&r.route),
        if r.details.is_empty() {
            String::new()
        } else {
            serde_json::Value::Object(r.details.clone()).to_string()
        },
    ]
}

/// Encodes rows as CSV (formula-safe cells).
fn csv_bytes(rows: impl IntoIterator<Item = Vec<String>>, header: bool) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    if header {
        let _ = w.write_record(EXPORT_COLUMNS);
    }
    for row in rows {
        let _ = w.write_record(row.iter().map(|c| safe_cell(c).into_owned()));
    }
    w.into_inner().unwrap_or_default()
}

/// Where an export stream is.
struct ExportCursor {
    db: Db,
    filter: AuditFilter,
    after: Option<Position>,
    first: bool,
}

/// `GET /admin/audit/logs/export`: matching events as CSV, oldest first, streamed one
/// page at a time (memory stays bounded whatever the size). The export itself is an
/// audit event (`audit.export`, with the filters and the row count), recorded before the
/// first byte; if it cannot be recorded, nothing is exported.
#[utoipa::path(get, path = "/admin/audit/logs/export", tag = "admin", params(AuditQuery),
    responses((status = 200, description = "CSV with a header row; cells that a spreadsheet would read as a formula start with `'`", content_type = "text/csv")))]
pub async fn export_logs(
    State(s): State<AppState>,
    c: Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Response, ApiError> {
    require_admin(&c)?;
    let filter = q.filter(false)?;
    let rows = store::count(&s.db, &filter)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    s.audit(
        event(Category::Api, "audit.export", Outcome::Success)
            .level(Level::Warning)
            .by(&c)
            .detail("rows", rows)
            .detail("filters", filter_json(&filter))
            .route("/admin/audit/logs/export"),
    )
    .await?;
    let start = ExportCursor {
        db: s.db.clone(),
        filter,
        after: None,
        first: true,
    };
    let stream = futures_util::stream::unfold(Some(start), |state| async move {
        let mut cur = state?;
        match store::page(
            &cur.db,
            &cur.filter,
            Order::OldestFirst,
            cur.after.as_ref(),
            EXPORT_PAGE,
        )
        .await
        {
            Err(e) => {
                tracing::error!(error = %e, "audit export failed mid-stream");
                Some((Err(std::io::Error::other("database error")), None))
            }
            Ok(page) => {
                if page.is_empty() && !cur.first {
                    return None;
                }
                let header = cur.first;
                let last_page = (page.len() as i64) < EXPORT_PAGE;
                cur.first = false;
                cur.after = page.last().map(|r| r.position.clone());
                let bytes = csv_bytes(page.iter().map(|r| csv_row(&r.line)), header);
                let next = if last_page { None } else { Some(cur) };
                Some((Ok::<_, std::io::Error>(Bytes::from(bytes)), next))
            }
        }
    });
    let name = format!(
        "attachment; filename=\"portcullis-audit-{}.csv\"",
        time::OffsetDateTime::now_utc().unix_timestamp()
    );
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&name) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// Routes of the administrators' view.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/audit/logs", get(list_logs))
        .route("/admin/audit/logs/count", get(count_logs))
        .route("/admin/audit/logs/export", get(export_logs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_defused() {
        for v in ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(safe_cell(v), format!("'{v}"));
        }
        assert_eq!(safe_cell("login"), "login");
        assert_eq!(safe_cell(""), "");
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let p = Position {
            occurred_at: "2026-03-01T12:00:00.123456Z".into(),
            row_id: 42,
        };
        assert_eq!(decode_cursor(&encode_cursor(&p)).ok(), Some(p));
        assert!(decode_cursor("nope").is_err());
        assert!(decode_cursor(&URL_SAFE_NO_PAD.encode("x|1")).is_err());
    }
}
