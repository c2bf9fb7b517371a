//! The audit event schema: what an event holds and how it is written.
//!
//! An [`AuditEvent`](crate::AuditEvent) is built with
//! [`AuditEvent::new`](crate::AuditEvent::new) and setters, then handed to
//! [`crate::AuditLog::emit`]. On disk and on the wire it is one JSON object per line with
//! flat, dotted Elastic Common Schema names (`@timestamp`, `event.id`, `log.level`, …);
//! fields ECS has no name for live under `portcullis.*`. The full field list is in
//! `docs/audit-events.md`; [`AuditRecord`](crate::AuditRecord) parses a line back.
//!
//! Secrets never reach the spool: detail keys that look like secrets (see
//! [`is_secret_key`](crate::is_secret_key)) are replaced by [`REDACTED`](crate::REDACTED)
//! when they are set, and request bodies have no field in the schema (a `body` detail key is
//! redacted too).
//!
//! Layers, lowest first: [`field`] (the names), [`redact`] (what is hidden), [`schema`] (the
//! types and builder), [`encode`] (the canonical bytes the spool chains) and [`record`]
//! (parsing a line back); [`aggregate`] folds floods of one kind into summary events.

pub(crate) mod aggregate;
pub(crate) mod encode;
pub(crate) mod field;
pub(crate) mod record;
pub(crate) mod redact;
pub(crate) mod schema;
