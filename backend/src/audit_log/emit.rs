//! Recording the backend's events: the process's [`Audit`] log, [`event`] and the
//! [`EventExt`] setters for what the backend knows about an actor, and
//! [`AppState::audit`], which returns once the event is fsync'd in the spool. When it
//! cannot (the spool is full with the `reject` policy, or stayed full for the `block`
//! timeout), the action is refused with a 503 problem (`audit-unavailable`): sign-ins
//! are not granted.
//!
//! A change and its event go together through [`AppState::commit_audited`]: the change
//! is made in a transaction, its event is spooled, and only then is the transaction
//! committed. An event that cannot be spooled rolls the change back; a commit that fails
//! after the event was spooled is followed by a second event saying so
//! (`reason: not_committed`, naming the first), so the trail never misses a stored change
//! and never leaves an event for a change that did not happen uncorrected.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use portcullis_audit::{AuditEvent, AuditLog, Category, Level, Outcome, SpoolLock};

use crate::AppState;
use crate::db::Tx;
use crate::http::meta::{REQUEST_META, current_request_id};
use crate::http::policy::require;
use crate::http::{ApiError, Caller};

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
        let id = current_request_id();
        if !id.is_empty() {
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

    /// Spools `events` in order, then commits `tx`, which holds the change they record.
    /// When one cannot be spooled the transaction is rolled back and the caller gets the
    /// 503 problem; when the commit fails afterwards the caller gets the error. Either way
    /// each event already spooled is followed by a failure event naming it.
    pub async fn commit_audited(
        &self,
        tx: Tx,
        events: impl IntoIterator<Item = AuditEvent>,
    ) -> Result<(), ApiError> {
        let mut spooled = Vec::new();
        for event in events {
            let recorded = (event.category(), event.action().to_owned(), event.id());
            if let Err(e) = self.audit(event).await {
                if let Err(rb) = tx.rollback().await {
                    tracing::error!(error = %rb, "rolling back an unrecorded change failed");
                }
                self.not_committed(spooled).await;
                return Err(e);
            }
            spooled.push(recorded);
        }
        if let Err(e) = tx.commit().await {
            tracing::error!(error = %e, "a recorded change was not committed");
            self.not_committed(spooled).await;
            return Err(ApiError::Internal(format!("commit: {e}")));
        }
        Ok(())
    }

    /// Says of each spooled event that its change was not stored after all.
    async fn not_committed(&self, spooled: Vec<(Category, String, uuid::Uuid)>) {
        for (category, action, id) in spooled {
            self.audit_logged(
                AuditEvent::new(category, action, Outcome::Failure)
                    .level(Level::Error)
                    .detail("reason", "not_committed")
                    .detail("recorded_event_id", id.to_string()),
            )
            .await;
        }
    }

    /// [`AppState::audit`] where the action already happened and nothing can be refused
    /// any more (background tasks): a failure is logged only.
    pub async fn audit_logged(&self, event: AuditEvent) {
        let _ = self.audit(event).await;
    }

    /// [`crate::http::policy::require`] for a change: a refusal is recorded as the
    /// `denied` event (outcome failure, level warning, reason `policy`) before the 403.
    pub async fn require_change(
        &self,
        allowed: bool,
        what: &str,
        denied: impl FnOnce() -> AuditEvent,
    ) -> Result<(), ApiError> {
        if allowed {
            return Ok(());
        }
        self.audit(denied().level(Level::Warning).detail("reason", "policy"))
            .await?;
        require(false, what)
    }
}
