//! The backend's audit trail: every security event of the backend becomes an
//! [`AuditEvent`](portcullis_audit::AuditEvent) in its hash-chained spool (emitter
//! `backend`, or `cli` for the administrative commands), delivered to the configured
//! sinks and to the `audit_events` table through [`DbSink`]. The proxy's events reach
//! the same table through the ingest ([`ingest`]). Administrators read it through
//! [`api`]; [`store`] is its SQL.

pub mod api;
mod emit;
pub mod ingest;
mod sink;
pub mod store;

use axum::Router;

pub use self::emit::{Audit, EventExt, SPOOL_LOCK_WAIT, event, unavailable};
pub use self::sink::{DB_SINK_NAME, DbSink};
use crate::AppState;
pub use portcullis_audit::{AuditEvent, Category, Level, Outcome};

/// Routes of the audit trail: the administrators' view and the proxy's ingest.
pub fn router() -> Router<AppState> {
    Router::new().merge(api::router()).merge(ingest::router())
}
