//! The event schema: [`Category`], [`Outcome`], [`Level`], the size limits, and
//! [`AuditEvent`] with its builder (which clips long values and redacts secret details as
//! they are set).

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::event::redact::{Redactor, is_secret_key, redact_value};

/// The ECS version the field names follow, written as `ecs.version`.
pub const ECS_VERSION: &str = "8.11.0";

/// Longest value kept for a string field (user agent, ids, action…), in bytes; longer values
/// are cut at a character boundary. Keeps attacker-controlled headers from bloating the spool.
pub const MAX_FIELD_BYTES: usize = 1024;

/// Largest `portcullis.details` object, in bytes of canonical JSON. A larger one is replaced
/// by `{"truncated": true, "original_bytes": N}`.
pub const MAX_DETAILS_BYTES: usize = 16 * 1024;

/// What an event is about (`event.category`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Sign-in, sign-out, MFA, token refresh, session revocation.
    Auth,
    /// User and role administration.
    User,
    /// Maintenance work: tickets, assets, work orders.
    Maintenance,
    /// The service itself: start, stop, configuration and policy reloads, audit checkpoints.
    System,
    /// An API request and its authorization decision.
    Api,
    /// Security signals: rate limits, CSRF failures, CSP violations, tampering.
    Security,
}

/// Whether the action succeeded (`event.outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The action was carried out.
    Success,
    /// The action was refused or failed.
    Failure,
    /// Not known when the event was written.
    Unknown,
}

/// How important the event is (`log.level`); also sets the syslog severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Routine (syslog severity 6).
    Info,
    /// Worth a look (syslog severity 4).
    Warning,
    /// Something failed (syslog severity 3).
    Error,
    /// Needs action now (syslog severity 2).
    Critical,
}

macro_rules! names {
    ($ty:ty { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $ty {
            /// The name used in the serialised event.
            pub const fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $name),* }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

names!(Category { Auth => "auth", User => "user", Maintenance => "maintenance", System => "system", Api => "api", Security => "security" });
names!(Outcome { Success => "success", Failure => "failure", Unknown => "unknown" });
names!(Level { Info => "info", Warning => "warning", Error => "error", Critical => "critical" });

impl Level {
    /// RFC 5424 severity.
    pub(crate) const fn syslog_severity(self) -> u8 {
        match self {
            Self::Info => 6,
            Self::Warning => 4,
            Self::Error => 3,
            Self::Critical => 2,
        }
    }
}

/// One audit event, before it is chained into the spool.
///
/// `AuditEvent::new` stamps the current time and a fresh UUID v7; every other field is
/// optional. String values longer than [`MAX_FIELD_BYTES`] are cut.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub(super) timestamp: OffsetDateTime,
    pub(super) id: Uuid,
    pub(super) category: Category,
    pub(super) action: String,
    pub(super) outcome: Outcome,
    pub(super) level: Level,
    pub(super) user_id: Option<String>,
    pub(super) roles: Vec<String>,
    pub(super) session_id: Option<String>,
    pub(super) auth_method: Option<String>,
    pub(super) source_ip: Option<IpAddr>,
    pub(super) user_agent: Option<String>,
    pub(super) request_id: Option<String>,
    pub(super) decision_id: Option<String>,
    pub(super) policy_digest: Option<String>,
    pub(super) route: Option<String>,
    pub(super) details: Map<String, Value>,
    pub(super) checkpoint: Option<CheckpointFields>,
}

/// The signed statement a checkpoint event carries (written by the spool, never by callers).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CheckpointFields {
    pub seq: u64,
    pub hash: String,
    pub signature: String,
    pub public_key: String,
}

impl AuditEvent {
    /// A new event at the current time, level `info`.
    pub fn new(category: Category, action: impl Into<String>, outcome: Outcome) -> Self {
        Self {
            timestamp: OffsetDateTime::now_utc(),
            id: Uuid::now_v7(),
            category,
            action: clip(action.into()),
            outcome,
            level: Level::Info,
            user_id: None,
            roles: Vec::new(),
            session_id: None,
            auth_method: None,
            source_ip: None,
            user_agent: None,
            request_id: None,
            decision_id: None,
            policy_digest: None,
            route: None,
            details: Map::new(),
            checkpoint: None,
        }
    }

    /// Overrides the time the event happened (converted to UTC; kept to the microsecond).
    #[must_use]
    pub fn timestamp(mut self, at: OffsetDateTime) -> Self {
        self.timestamp = at.to_offset(time::UtcOffset::UTC);
        self
    }

    /// Sets `log.level`.
    #[must_use]
    pub fn level(mut self, level: Level) -> Self {
        self.level = level;
        self
    }

    /// Sets `user.id`: the verified subject, or the attempted user name on a failed sign-in.
    #[must_use]
    pub fn user_id(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(clip(user_id.into()));
        self
    }

    /// Sets `user.roles`.
    #[must_use]
    pub fn roles<I, S>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.roles = roles.into_iter().map(|r| clip(r.into())).collect();
        self
    }

    /// Sets `portcullis.session.id`.
    #[must_use]
    pub fn session_id(mut self, session_id: impl Into<String>) -> Self {
        self.session_id = Some(clip(session_id.into()));
        self
    }

    /// Sets `portcullis.auth.method` (`password+totp`, `oidc`, `bearer`, `cookie`…).
    #[must_use]
    pub fn auth_method(mut self, method: impl Into<String>) -> Self {
        self.auth_method = Some(clip(method.into()));
        self
    }

    /// Sets `source.ip`.
    #[must_use]
    pub fn source_ip(mut self, ip: IpAddr) -> Self {
        self.source_ip = Some(ip);
        self
    }

    /// Sets `user_agent.original`.
    #[must_use]
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = Some(clip(user_agent.into()));
        self
    }

    /// Sets `http.request.id`, the `X-Request-Id` the proxy assigned.
    #[must_use]
    pub fn request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = Some(clip(request_id.into()));
        self
    }

    /// Sets `portcullis.decision.id`, the policy decision this event records.
    #[must_use]
    pub fn decision_id(mut self, decision_id: impl Into<String>) -> Self {
        self.decision_id = Some(clip(decision_id.into()));
        self
    }

    /// Sets `portcullis.policy.digest`, the digest of the policy bundle that decided.
    #[must_use]
    pub fn policy_digest(mut self, digest: impl Into<String>) -> Self {
        self.policy_digest = Some(clip(digest.into()));
        self
    }

    /// Sets `portcullis.route`: the route template (`/api/tickets/{id}`), not the raw path.
    #[must_use]
    pub fn route(mut self, route: impl Into<String>) -> Self {
        self.route = Some(clip(route.into()));
        self
    }

    /// Adds one entry to `portcullis.details`. A key that looks like a secret (and every such
    /// key nested inside `value`) is stored as [`REDACTED`](crate::REDACTED).
    #[must_use]
    pub fn detail(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        let key = key.into();
        let value = redact_value(&key, value.into(), &|k| is_secret_key(k));
        self.details.insert(key, value);
        self
    }

    /// Adds every entry of `details` (see [`AuditEvent::detail`]).
    #[must_use]
    pub fn details(mut self, details: Map<String, Value>) -> Self {
        for (key, value) in details {
            let value = redact_value(&key, value, &|k| is_secret_key(k));
            self.details.insert(key, value);
        }
        self
    }

    /// The event id (UUID v7).
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The category.
    pub fn category(&self) -> Category {
        self.category
    }

    /// The action.
    pub fn action(&self) -> &str {
        &self.action
    }

    /// The outcome.
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// The details object (already redacted).
    pub fn details_map(&self) -> &Map<String, Value> {
        &self.details
    }

    /// A checkpoint event: the spool's signed statement about its chain head.
    pub(crate) fn checkpoint(fields: CheckpointFields) -> Self {
        let mut event = Self::new(Category::System, CHECKPOINT_ACTION, Outcome::Success);
        event.checkpoint = Some(fields);
        event
    }

    /// Replaces the values of the configured keys (matched case-insensitively, at any depth).
    pub(crate) fn redact(&mut self, redactor: &Redactor) {
        if redactor.keys.is_empty() {
            return;
        }
        let details = std::mem::take(&mut self.details);
        for (key, value) in details {
            let value = redact_value(&key, value, &|k| redactor.matches(k));
            self.details.insert(key, value);
        }
    }
}

/// Action of the checkpoint events the spool writes.
pub const CHECKPOINT_ACTION: &str = "audit-checkpoint";

/// Cuts a string to [`MAX_FIELD_BYTES`] at a character boundary.
fn clip(mut s: String) -> String {
    if s.len() > MAX_FIELD_BYTES {
        let mut end = MAX_FIELD_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::redact::REDACTED;

    #[test]
    fn configured_keys_are_redacted_at_any_depth() {
        let mut event = AuditEvent::new(Category::Api, "get", Outcome::Success).detail(
            "ticket",
            serde_json::json!({"ssn": "123", "title": "x", "list": [{"SSN": 1}]}),
        );
        event.redact(&Redactor::new(&["ssn".to_owned()]));
        let details = event.details_map();
        assert_eq!(details["ticket"]["ssn"], REDACTED);
        assert_eq!(details["ticket"]["list"][0]["SSN"], REDACTED);
        assert_eq!(details["ticket"]["title"], "x");
    }
}
