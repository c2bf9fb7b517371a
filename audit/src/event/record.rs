//! Reading an event line back: [`AuditRecord`], for database tables and admin views.

use std::net::IpAddr;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::event::schema::{Category, Level, Outcome};

/// An event line parsed back: what a database table or admin view needs.
///
/// Unknown fields are ignored, so newer writers stay readable. Parse with
/// [`AuditRecord::parse`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct AuditRecord {
    /// `@timestamp`, RFC 3339 in UTC with microseconds (sorts as text).
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    /// `event.id`, a UUID v7.
    #[serde(rename = "event.id")]
    pub id: String,
    /// `event.category`.
    #[serde(rename = "event.category")]
    pub category: Category,
    /// `event.action`.
    #[serde(rename = "event.action")]
    pub action: String,
    /// `event.outcome`.
    #[serde(rename = "event.outcome")]
    pub outcome: Outcome,
    /// `log.level`.
    #[serde(rename = "log.level")]
    pub level: Level,
    /// `user.id`.
    #[serde(rename = "user.id", default)]
    pub user_id: Option<String>,
    /// `user.roles`.
    #[serde(rename = "user.roles", default)]
    pub roles: Vec<String>,
    /// `portcullis.session.id`.
    #[serde(rename = "portcullis.session.id", default)]
    pub session_id: Option<String>,
    /// `portcullis.auth.method`.
    #[serde(rename = "portcullis.auth.method", default)]
    pub auth_method: Option<String>,
    /// `source.ip`.
    #[serde(rename = "source.ip", default)]
    pub source_ip: Option<IpAddr>,
    /// `user_agent.original`.
    #[serde(rename = "user_agent.original", default)]
    pub user_agent: Option<String>,
    /// `http.request.id`.
    #[serde(rename = "http.request.id", default)]
    pub request_id: Option<String>,
    /// `portcullis.decision.id`.
    #[serde(rename = "portcullis.decision.id", default)]
    pub decision_id: Option<String>,
    /// `portcullis.policy.digest`.
    #[serde(rename = "portcullis.policy.digest", default)]
    pub policy_digest: Option<String>,
    /// `portcullis.route`.
    #[serde(rename = "portcullis.route", default)]
    pub route: Option<String>,
    /// `portcullis.details` (an empty object when absent).
    #[serde(rename = "portcullis.details", default)]
    pub details: Map<String, Value>,
    /// `portcullis.emitter`: whose chain the event belongs to (`proxy`, `backend`).
    #[serde(rename = "portcullis.emitter")]
    pub emitter: String,
    /// `portcullis.chain.seq`, 1-based position in the emitter's chain.
    #[serde(rename = "portcullis.chain.seq")]
    pub seq: u64,
    /// `portcullis.chain.prev_hash`, hex SHA-256 of the previous event.
    #[serde(rename = "portcullis.chain.prev_hash")]
    pub prev_hash: String,
    /// `portcullis.chain.hash`, hex SHA-256 of this event.
    #[serde(rename = "portcullis.chain.hash")]
    pub hash: String,
}

impl AuditRecord {
    /// Parses one event line (with or without its trailing newline).
    pub fn parse(line: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(line.trim_end())
    }
}
