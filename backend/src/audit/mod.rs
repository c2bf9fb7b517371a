//! The backend's audit trail: every security event of the backend becomes an
//! [`AuditEvent`] in its hash-chained spool (emitter `backend`, or `cli` for the
//! administrative commands), delivered to the configured sinks and to the
//! `audit_events` table through [`DbSink`]. The proxy's events reach the same
//! table through `POST /internal/audit/ingest` ([`api`]).
//!
//! [`AppState::audit`] returns once the event is fsync'd in the spool. When
//! it cannot (the spool is full with the `reject` policy, or stayed full for
//! the `block` timeout), the action is refused with a 503 problem
//! (`audit-unavailable`): sign-ins are not granted, and a change that was
//! already stored is reported as failed to its caller and logged as an error.

pub mod api;
pub mod store;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::http::StatusCode;
use portcullis_audit::{AuditEvent, AuditLog, Sink, SinkError, SpoolLock, SpooledEvent};

use crate::AppState;
use crate::api::Caller;
use crate::db::Db;
use crate::error::ApiError;

pub use portcullis_audit::{Category, Level, Outcome};

/// Name of the sink that writes into the `audit_events` table.
pub const DB_SINK_NAME: &str = "database";

/// How long a starting process waits for another one to release the spool.
pub const SPOOL_LOCK_WAIT: Duration = Duration::from_secs(10);

/// The audit log of this process, shared by every handler.
#[derive(Debug, Clone)]
pub struct Audit {
    log: AuditLog,
    _lock: Arc<SpoolLock>,
}

impl Audit {
    /// Wraps a started log and the lock on its spool.
    pub fn new(log: AuditLog, lock: SpoolLock) -> Self {
        Self {
            log,
            _lock: Arc::new(lock),
        }
    }

    /// The underlying log.
    pub fn log(&self) -> &AuditLog {
        &self.log
    }

    /// Writes a final checkpoint and gives the sinks (the database among them) up to
    /// `drain` to take what is left; the rest is delivered after the next start.
    pub async fn shutdown(&self, drain: Duration) {
        self.log.clone().shutdown(drain).await;
    }
}

/// What the request being handled says about its client, for every event it causes
/// (set by [`crate::api::request_id_layer`]).
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    /// `X-Portcullis-Client-Ip`, as the proxy established it.
    pub source_ip: Option<IpAddr>,
    /// `User-Agent`.
    pub user_agent: Option<String>,
}

tokio::task_local! {
    /// The client of the request being handled.
    pub static REQUEST_META: RequestMeta;
}

/// A new event (level `info`).
pub fn event(category: Category, action: &str, outcome: Outcome) -> AuditEvent {
    AuditEvent::new(category, action, outcome)
}

/// Setters for what the backend knows about an actor.
pub trait EventExt: Sized {
    /// The authenticated caller: `user.id`, roles, session, method, the proxy's decision.
    #[must_use]
    fn by(self, caller: &Caller) -> Self;
    /// The employee an action is about (`portcullis.details.target_user_id`).
    #[must_use]
    fn target(self, employee_id: i64) -> Self;
}

impl EventExt for AuditEvent {
    fn by(self, c: &Caller) -> Self {
        let mut e = self
            .user_id(c.employee.id.to_string())
            .roles(c.employee.roles.iter().map(|r| r.as_str()))
            .detail("username", c.employee.username.clone());
        if let Some(sid) = &c.identity.session_id {
            e = e.session_id(sid.clone());
        }
        if let Some(m) = &c.identity.auth_method {
            e = e.auth_method(m.clone());
        }
        if let Some(d) = &c.identity.decision_id {
            e = e.decision_id(d.clone());
        }
        e
    }

    fn target(self, employee_id: i64) -> Self {
        self.detail("target_user_id", employee_id.to_string())
    }
}

/// The problem returned when an event cannot be recorded.
pub fn unavailable() -> ApiError {
    ApiError::Custom {
        status: StatusCode::SERVICE_UNAVAILABLE,
        kind: "audit-unavailable",
        detail: "The audit log cannot record this action right now, so it was not carried out; try again later".into(),
    }
}

impl AppState {
    /// Records `event` with the request's id, client address and user agent; returns once
    /// it is fsync'd in the spool. An error is the 503 problem the caller must return.
    pub async fn audit(&self, event: AuditEvent) -> Result<(), ApiError> {
        let mut event = event;
        if let Ok(id) = crate::error::REQUEST_ID.try_with(Clone::clone)
            && !id.is_empty()
        {
            event = event.request_id(id);
        }
        if let Ok(meta) = REQUEST_META.try_with(Clone::clone) {
            if let Some(ip) = meta.source_ip {
                event = event.source_ip(ip);
            }
            if let Some(ua) = meta.user_agent {
                event = event.user_agent(ua);
            }
        }
        let action = event.action().to_owned();
        let outcome = event.outcome();
        match self.audit.log().emit(event).await {
            Ok(seq) => {
                tracing::info!(target: "portcullis::audit", action = %action, outcome = %outcome, seq, "audit event");
                Ok(())
            }
            Err(e) => {
                tracing::error!(target: "portcullis::audit", action = %action, outcome = %outcome, error = %e, "audit event not recorded; the action is refused");
                Err(unavailable())
            }
        }
    }

    /// [`AppState::audit`] where the action already happened and nothing can be refused
    /// any more (background tasks): a failure is logged only.
    pub async fn audit_logged(&self, event: AuditEvent) {
        let _ = self.audit(event).await;
    }
}

/// Writes delivered events into `audit_events` (the admin view), one transaction per
/// batch; an event already there (redelivery after a crash) is skipped by its id.
///
/// A spool must always be started with the same sinks (a segment is deleted once the
/// sinks it was started with have it), so a process that may find the database down
/// uses [`DbSink::connecting`]: it connects at its first delivery and retries until then.
pub struct DbSink {
    db: Option<Db>,
    url: Option<String>,
}

impl DbSink {
    /// A sink writing to `db`.
    pub fn new(db: Db) -> Self {
        Self {
            db: Some(db),
            url: None,
        }
    }

    /// A sink that connects to `url` when it first has events to deliver.
    pub fn connecting(url: String) -> Self {
        Self {
            db: None,
            url: Some(url),
        }
    }

    async fn db(&mut self) -> Result<&Db, SinkError> {
        if self.db.is_none() {
            let url = self.url.as_deref().unwrap_or_default();
            let db = Db::connect(url)
                .await
                .map_err(|e| SinkError::Other(Box::new(e)))?;
            self.db = Some(db);
        }
        self.db
            .as_ref()
            .ok_or_else(|| SinkError::Other("no database".into()))
    }
}

#[async_trait]
impl Sink for DbSink {
    fn name(&self) -> &str {
        DB_SINK_NAME
    }

    async fn deliver(&mut self, batch: &[SpooledEvent]) -> Result<(), SinkError> {
        let lines: Vec<&str> = batch.iter().map(SpooledEvent::json).collect();
        let db = self.db().await?.clone();
        let insert = store::insert_lines(&db, &lines);
        match tokio::time::timeout(Duration::from_secs(30), insert).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(SinkError::Other(Box::new(e))),
            Err(_) => Err(SinkError::Timeout("database insert".into())),
        }
    }
}
