//! `GET /monitoring/health`: whether the backend is up and what it depends on is
//! working — its database, its audit spool and each audit sink (lag, last delivery,
//! last failure), the Redis of the revocation channel when one is configured — what the
//! proxy recorded about reaching its upstreams, and the digest of the policy bundle the
//! backend enforces (the proxy shows its own at `/health/ready`, so an operator can see
//! that both layers agree).
//!
//! The route is public (load balancers probe it), so it says what is wrong without
//! detail that would help an attacker: sink failures by kind (`timeout`, `tls`, …),
//! never their messages, which go to the log.
//!
//! The answer is `503` when the database is unreachable (nothing works without it) and
//! `200` otherwise, with `status: degraded` when something else needs attention: the
//! spool at 90 % of its bound, a sink whose latest attempt failed, an unreachable Redis.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use portcullis_audit::{AuditStatus, SinkStatus};
use serde::Serialize;
use sqlx::Row;
use utoipa::ToSchema;

use crate::AppState;
use crate::db::format_time;

/// The window over which the proxy's upstream failures are counted, minutes.
pub const PROXY_WINDOW_MINUTES: i64 = 15;
/// Spool fill (of its bound) from which health is degraded.
const SPOOL_DEGRADED_RATIO: f64 = 0.9;

/// `GET /monitoring/health`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `degraded` when a check below is not.
    pub status: &'static str,
    pub service: &'static str,
    pub version: &'static str,
    /// Each check's verdict (`ok`, or what is wrong).
    pub checks: Checks,
    pub database: DatabaseHealth,
    pub audit: AuditHealth,
    /// What the backend talks to, probed now.
    pub upstreams: Vec<UpstreamHealth>,
    pub proxy: ProxyUpstreams,
    pub policy: PolicyHealth,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Checks {
    /// `ok` or `unreachable`.
    pub database: &'static str,
    /// `ok`, `nearly-full` or `failing`.
    pub audit: &'static str,
    /// `ok` or `unreachable` (some upstream).
    pub upstreams: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DatabaseHealth {
    /// `ok` or `unreachable`.
    pub status: &'static str,
    /// `sqlite` or `postgres`.
    pub engine: &'static str,
    /// Time `select 1` took, milliseconds.
    pub latency_ms: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditHealth {
    /// Whose chain (`backend`).
    pub emitter: String,
    pub spool: SpoolHealth,
    pub sinks: Vec<SinkHealth>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SpoolHealth {
    /// Events (checkpoints included) in the spool on disk.
    pub events: u64,
    pub bytes: u64,
    pub max_bytes: u64,
    /// `bytes / max_bytes`.
    pub fill_ratio: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SinkHealth {
    pub name: String,
    /// `ok`, `behind` (events waiting, the latest attempt did not fail) or `failing`
    /// (the latest attempt failed).
    pub status: &'static str,
    /// Events spooled, not yet acknowledged.
    pub lag_events: u64,
    /// Failed attempts since start.
    pub delivery_errors: u64,
    /// When the sink last took a batch (RFC 3339), since start.
    pub last_delivery_at: Option<String>,
    pub last_error: Option<SinkErrorHealth>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SinkErrorHealth {
    /// RFC 3339.
    pub at: String,
    /// `io`, `tls`, `http`, `status`, `timeout`, `spool-read`, `offset` or `other`.
    pub kind: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UpstreamHealth {
    /// `database`, `revocation-redis`.
    pub name: &'static str,
    /// `ok` or `unreachable`.
    pub status: &'static str,
}

/// The proxy's failures to reach its upstreams, from its `http.error` audit events
/// (the backend is its upstream: an answer here means it reached the backend now).
#[derive(Debug, Serialize, ToSchema)]
pub struct ProxyUpstreams {
    pub window_minutes: i64,
    /// Upstream failures (502, 504) the proxy answered in the window.
    pub upstream_errors: u64,
    /// The latest one (RFC 3339).
    pub last_error_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyHealth {
    /// Digest of the bundle the backend enforces.
    pub digest: String,
}

fn rfc3339(unix: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .map(format_time)
}

fn sink(s: SinkStatus) -> SinkHealth {
    let SinkStatus {
        name,
        lag_events,
        delivery_errors,
        last_delivery_unix,
        last_error,
    } = s;
    let failing = last_error
        .as_ref()
        .is_some_and(|e| last_delivery_unix.is_none_or(|ok| e.at_unix >= ok))
        && lag_events > 0;
    SinkHealth {
        name,
        status: if failing {
            "failing"
        } else if lag_events > 0 {
            "behind"
        } else {
            "ok"
        },
        lag_events,
        delivery_errors,
        last_delivery_at: last_delivery_unix.and_then(rfc3339),
        last_error: last_error.map(|e| SinkErrorHealth {
            at: rfc3339(e.at_unix).unwrap_or_default(),
            kind: e.kind,
        }),
    }
}

fn audit(status: AuditStatus) -> AuditHealth {
    let AuditStatus {
        emitter,
        spool_events,
        spool_bytes,
        spool_max_bytes,
        sinks,
    } = status;
    AuditHealth {
        emitter,
        spool: SpoolHealth {
            events: spool_events,
            bytes: spool_bytes,
            max_bytes: spool_max_bytes,
            fill_ratio: if spool_max_bytes == 0 {
                0.0
            } else {
                spool_bytes as f64 / spool_max_bytes as f64
            },
        },
        sinks: sinks.into_iter().map(sink).collect(),
    }
}

/// The proxies' `http.error` events (every instance's) with a 502 or 504 in the window.
async fn proxy_upstreams(s: &AppState) -> ProxyUpstreams {
    let from = format_time(
        time::OffsetDateTime::now_utc() - time::Duration::minutes(PROXY_WINDOW_MINUTES),
    );
    let rows = sqlx::query(
        "select occurred_at, line from audit_events where (emitter = 'proxy' or emitter like 'proxy-%') \
         and action = 'http.error' and occurred_at >= $1 order by occurred_at desc limit 1000",
    )
    .bind(from)
    .fetch_all(s.db.pool())
    .await
    .unwrap_or_default();
    let mut upstream_errors = 0;
    let mut last_error_at = None;
    for row in &rows {
        let (Ok(at), Ok(line)) = (row.try_get::<String, _>(0), row.try_get::<String, _>(1)) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["portcullis.details"]["cause"] == "upstream" {
            upstream_errors += 1;
            last_error_at.get_or_insert(at);
        }
    }
    ProxyUpstreams {
        window_minutes: PROXY_WINDOW_MINUTES,
        upstream_errors,
        last_error_at,
    }
}

#[utoipa::path(get, path = "/monitoring/health", tag = "monitoring",
    responses((status = 200, description = "The backend is up", body = Health),
              (status = 503, description = "The database is unreachable", body = Health)))]
pub(crate) async fn health(State(s): State<AppState>) -> Response {
    let started = Instant::now();
    let db_ok = sqlx::query("select 1").execute(s.db.pool()).await.is_ok();
    let latency_ms = (started.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0;
    let audit = audit(s.audit.log().status());
    let mut upstreams = vec![UpstreamHealth {
        name: "database",
        status: if db_ok { "ok" } else { "unreachable" },
    }];
    if let Some(up) = s.identity.revocation_channel_reachable().await {
        upstreams.push(UpstreamHealth {
            name: "revocation-redis",
            status: if up { "ok" } else { "unreachable" },
        });
    }
    let proxy = if db_ok {
        proxy_upstreams(&s).await
    } else {
        ProxyUpstreams {
            window_minutes: PROXY_WINDOW_MINUTES,
            upstream_errors: 0,
            last_error_at: None,
        }
    };
    let audit_check = if audit.sinks.iter().any(|s| s.status == "failing") {
        "failing"
    } else if audit.spool.fill_ratio >= SPOOL_DEGRADED_RATIO {
        "nearly-full"
    } else {
        "ok"
    };
    let upstreams_check = if upstreams.iter().all(|u| u.status == "ok") {
        "ok"
    } else {
        "unreachable"
    };
    let checks = Checks {
        database: if db_ok { "ok" } else { "unreachable" },
        audit: audit_check,
        upstreams: upstreams_check,
    };
    let all_ok = db_ok && audit_check == "ok" && upstreams_check == "ok";
    let body = Health {
        status: if all_ok { "ok" } else { "degraded" },
        service: "portcullis-backend",
        version: env!("CARGO_PKG_VERSION"),
        checks,
        database: DatabaseHealth {
            status: if db_ok { "ok" } else { "unreachable" },
            engine: match s.db.kind() {
                crate::db::DbKind::Sqlite => "sqlite",
                crate::db::DbKind::Postgres => "postgres",
            },
            latency_ms,
        },
        audit,
        upstreams,
        proxy,
        policy: PolicyHealth {
            digest: s.authz.current().digest().to_string(),
        },
    };
    let status = if db_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}
