//! `GET /monitoring/errors`: the recent failures of the audit trail (events whose
//! outcome is `failure`, from the proxy and the backend) grouped by problem type and
//! route. The problem type is the `problem` detail the event carries (the proxy sets it
//! on every event of a request it refused, and `http.error` events carry the problem of
//! the 5xx they record); events without one are grouped under `problem_type: null` with
//! their actions listed. Summaries of folded repeats count as their repeats.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::db::format_time;
use crate::http::policy::require_operator;
use crate::http::{ApiError, ApiQuery, Caller};

/// Default window, minutes.
const DEFAULT_MINUTES: i64 = 60;
/// Longest window, minutes (one week).
const MAX_MINUTES: i64 = 7 * 24 * 60;
/// Most events read for one answer (newest first); past that the answer says
/// `truncated`.
const MAX_EVENTS: i64 = 5000;

/// The window of `GET /monitoring/errors`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ErrorsQuery {
    /// The last this many minutes, 1 to 10080 (a week); default 60.
    #[param(minimum = 1, maximum = 10080)]
    minutes: Option<i64>,
}

/// Failures of one problem type on one route.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorGroup {
    /// The problem `type` answered (`urn:portcullis:problem:…`), if the events name one.
    pub problem_type: Option<String>,
    /// The route template (`/api/tickets/{id}`) or the proxy's route name.
    pub route: Option<String>,
    /// Failures in the window (a folded summary counts as its repeats).
    pub count: u64,
    /// The HTTP statuses answered.
    pub statuses: Vec<u16>,
    /// The events' actions (`http.error`, `policy.deny`, …).
    pub actions: Vec<String>,
    /// Who recorded them (`proxy`, `backend`).
    pub emitters: Vec<String>,
    pub first_seen: String,
    pub last_seen: String,
    /// The request id of the latest one, to find it in the audit log.
    pub last_request_id: Option<String>,
}

/// `GET /monitoring/errors`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Errors {
    /// Start of the window (RFC 3339).
    pub from: String,
    pub minutes: i64,
    /// Failure events read.
    pub events: u64,
    /// More than the most read per answer (5000) were in the window: the oldest are
    /// left out.
    pub truncated: bool,
    /// Largest count first.
    pub groups: Vec<ErrorGroup>,
}

#[derive(Default)]
struct Acc {
    count: u64,
    statuses: BTreeSet<u16>,
    actions: BTreeSet<String>,
    emitters: BTreeSet<String>,
    first_seen: String,
    last_seen: String,
    last_request_id: Option<String>,
}

/// Groups event lines, newest first, by (problem type, route).
fn group(lines: &[String]) -> Vec<ErrorGroup> {
    let mut groups: BTreeMap<(Option<String>, Option<String>), Acc> = BTreeMap::new();
    for line in lines {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let details = &v["portcullis.details"];
        let text = |v: &Value| v.as_str().map(str::to_owned);
        let key = (text(&details["problem"]), text(&v["portcullis.route"]));
        let at = text(&v["@timestamp"]).unwrap_or_default();
        let acc = groups.entry(key).or_default();
        acc.count += details["aggregate"]["repeats"].as_u64().unwrap_or(1).max(1);
        if let Some(s) = details["status"]
            .as_u64()
            .and_then(|s| u16::try_from(s).ok())
        {
            acc.statuses.insert(s);
        }
        if let Some(a) = text(&v["event.action"]) {
            acc.actions.insert(a);
        }
        if let Some(e) = text(&v["portcullis.emitter"]) {
            acc.emitters.insert(e);
        }
        // Lines come newest first: the first seen of a group is its latest.
        if acc.last_seen.is_empty() {
            acc.last_seen.clone_from(&at);
            acc.last_request_id = text(&v["http.request.id"]);
        }
        acc.first_seen = at;
    }
    let mut out: Vec<ErrorGroup> = groups
        .into_iter()
        .map(|((problem_type, route), a)| ErrorGroup {
            problem_type,
            route,
            count: a.count,
            statuses: a.statuses.into_iter().collect(),
            actions: a.actions.into_iter().collect(),
            emitters: a.emitters.into_iter().collect(),
            first_seen: a.first_seen,
            last_seen: a.last_seen,
            last_request_id: a.last_request_id,
        })
        .collect();
    out.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| b.last_seen.cmp(&a.last_seen))
    });
    out
}

/// Recent failures grouped by problem type and route (administrators and developers).
#[utoipa::path(get, path = "/monitoring/errors", tag = "monitoring", params(ErrorsQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "Failures of the window, grouped", body = Errors)))]
pub(crate) async fn errors(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ErrorsQuery>,
) -> Result<Json<Errors>, ApiError> {
    require_operator(&caller)?;
    let minutes = q.minutes.unwrap_or(DEFAULT_MINUTES);
    if !(1..=MAX_MINUTES).contains(&minutes) {
        return Err(ApiError::Validation(format!(
            "minutes must be 1 to {MAX_MINUTES}"
        )));
    }
    let from = format_time(time::OffsetDateTime::now_utc() - time::Duration::minutes(minutes));
    let rows = sqlx::query(
        "select line from audit_events where outcome = 'failure' and occurred_at >= $1 \
         order by occurred_at desc, audit_event_id desc limit $2",
    )
    .bind(&from)
    .bind(MAX_EVENTS + 1)
    .fetch_all(s.db.pool())
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let truncated = rows.len() > usize::try_from(MAX_EVENTS).unwrap_or(usize::MAX);
    let lines: Vec<String> = rows
        .iter()
        .take(usize::try_from(MAX_EVENTS).unwrap_or(usize::MAX))
        .filter_map(|r| r.try_get::<String, _>(0).ok())
        .collect();
    Ok(Json(Errors {
        from,
        minutes,
        events: lines.len() as u64,
        truncated,
        groups: group(&lines),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_problem_and_route_counting_folded_repeats() {
        let lines = [
            r#"{"@timestamp":"2026-01-01T00:00:03.000000Z","event.action":"http.error","portcullis.emitter":"backend","portcullis.route":"/api/tickets","http.request.id":"r3","portcullis.details":{"problem":"urn:portcullis:problem:internal","status":500}}"#,
            r#"{"@timestamp":"2026-01-01T00:00:02.000000Z","event.action":"policy.deny","portcullis.emitter":"proxy","portcullis.route":"admin","portcullis.details":{"problem":"urn:portcullis:problem:forbidden","status":403,"aggregate":{"repeats":7}}}"#,
            r#"{"@timestamp":"2026-01-01T00:00:01.000000Z","event.action":"http.error","portcullis.emitter":"backend","portcullis.route":"/api/tickets","http.request.id":"r1","portcullis.details":{"problem":"urn:portcullis:problem:internal","status":500}}"#,
            r#"{"@timestamp":"2026-01-01T00:00:00.000000Z","event.action":"ticket.update","portcullis.emitter":"backend"}"#,
            "not json",
        ]
        .map(str::to_owned);
        let g = group(&lines);
        assert_eq!(g.len(), 3);
        assert_eq!(g[0].count, 7);
        assert_eq!(g[0].statuses, vec![403]);
        assert_eq!(g[1].count, 2);
        assert_eq!(g[1].route.as_deref(), Some("/api/tickets"));
        assert_eq!(g[1].last_request_id.as_deref(), Some("r3"));
        assert_eq!(g[1].first_seen, "2026-01-01T00:00:01.000000Z");
        assert_eq!(g[2].problem_type, None);
        assert_eq!(g[2].actions, vec!["ticket.update".to_owned()]);
    }
}
