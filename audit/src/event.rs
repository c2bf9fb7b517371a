//! The audit event schema: what an event holds and how it is written.
//!
//! An [`AuditEvent`] is built with [`AuditEvent::new`] and setters, then handed to
//! [`crate::AuditLog::emit`]. On disk and on the wire it is one JSON object per line with
//! flat, dotted Elastic Common Schema names (`@timestamp`, `event.id`, `log.level`, …);
//! fields ECS has no name for live under `portcullis.*`. The full field list is in
//! `docs/audit-events.md`; [`AuditRecord`] parses a line back.
//!
//! Secrets never reach the spool: detail keys that look like secrets (see
//! [`is_secret_key`]) are replaced by [`REDACTED`] when they are set, and request bodies have
//! no field in the schema (a `body` detail key is redacted too).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::chain;

/// The value that replaces a redacted detail.
pub const REDACTED: &str = "[redacted]";

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
    timestamp: OffsetDateTime,
    id: Uuid,
    category: Category,
    action: String,
    outcome: Outcome,
    level: Level,
    user_id: Option<String>,
    roles: Vec<String>,
    session_id: Option<String>,
    auth_method: Option<String>,
    source_ip: Option<IpAddr>,
    user_agent: Option<String>,
    request_id: Option<String>,
    decision_id: Option<String>,
    policy_digest: Option<String>,
    route: Option<String>,
    details: Map<String, Value>,
    checkpoint: Option<CheckpointFields>,
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
    /// key nested inside `value`) is stored as [`REDACTED`].
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

    /// Splits the canonical JSON of the event around the chain fields, so the spool writer
    /// only has to splice in `prev_hash`, `seq` and `hash` (see [`Encoded`]).
    pub(crate) fn encode(&self, emitter: &str) -> Encoded {
        let Self {
            timestamp,
            id,
            category,
            action,
            outcome,
            level,
            user_id,
            roles,
            session_id,
            auth_method,
            source_ip,
            user_agent,
            request_id,
            decision_id,
            policy_digest,
            route,
            details,
            checkpoint,
        } = self;
        let mut fields: BTreeMap<&'static str, Value> = BTreeMap::new();
        fields.insert(
            field::TIMESTAMP,
            Value::String(format_timestamp(*timestamp)),
        );
        fields.insert(field::ECS_VERSION, Value::String(ECS_VERSION.to_owned()));
        fields.insert(field::EVENT_ID, Value::String(id.to_string()));
        fields.insert(field::CATEGORY, Value::String(category.as_str().to_owned()));
        fields.insert(field::ACTION, Value::String(action.clone()));
        fields.insert(field::OUTCOME, Value::String(outcome.as_str().to_owned()));
        fields.insert(field::LEVEL, Value::String(level.as_str().to_owned()));
        fields.insert(field::EMITTER, Value::String(emitter.to_owned()));
        let optional = [
            (field::USER_ID, user_id),
            (field::SESSION_ID, session_id),
            (field::AUTH_METHOD, auth_method),
            (field::USER_AGENT, user_agent),
            (field::REQUEST_ID, request_id),
            (field::DECISION_ID, decision_id),
            (field::POLICY_DIGEST, policy_digest),
            (field::ROUTE, route),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                fields.insert(name, Value::String(value.clone()));
            }
        }
        if let Some(ip) = source_ip {
            fields.insert(field::SOURCE_IP, Value::String(ip.to_string()));
        }
        if !roles.is_empty() {
            let roles = roles.iter().cloned().map(Value::String).collect();
            fields.insert(field::ROLES, Value::Array(roles));
        }
        if !details.is_empty() {
            let mut bytes = Vec::new();
            let details = Value::Object(details.clone());
            chain::write_canonical(&details, &mut bytes);
            let details = if bytes.len() > MAX_DETAILS_BYTES {
                serde_json::json!({ "truncated": true, "original_bytes": bytes.len() })
            } else {
                details
            };
            fields.insert(field::DETAILS, details);
        }
        if let Some(cp) = checkpoint {
            fields.insert(field::CHECKPOINT_SEQ, Value::from(cp.seq));
            fields.insert(field::CHECKPOINT_HASH, Value::String(cp.hash.clone()));
            fields.insert(
                field::CHECKPOINT_SIGNATURE,
                Value::String(cp.signature.clone()),
            );
            fields.insert(
                field::CHECKPOINT_PUBLIC_KEY,
                Value::String(cp.public_key.clone()),
            );
        }

        // Canonical order is byte order of the keys; the three chain keys sort next to each
        // other (`portcullis.chain.hash` < `.prev_hash` < `.seq`), so everything below
        // `portcullis.chain.` is the head and everything above is the tail. `@timestamp` is
        // always in the head and `portcullis.emitter` always in the tail.
        let mut head = Vec::with_capacity(512);
        let mut tail = Vec::with_capacity(256);
        head.push(b'{');
        for (name, value) in &fields {
            let out = if *name < field::CHAIN_PREFIX {
                &mut head
            } else {
                &mut tail
            };
            if !(out.is_empty() || out.as_slice() == b"{") {
                out.push(b',');
            }
            chain::write_json_string(name, out);
            out.push(b':');
            chain::write_canonical(value, out);
        }
        head.push(b',');
        tail.push(b'}');
        Encoded {
            head,
            tail,
            category: *category,
        }
    }
}

/// Action of the checkpoint events the spool writes.
pub const CHECKPOINT_ACTION: &str = "audit-checkpoint";

/// An event serialised up to its chain fields (see [`AuditEvent::encode`]).
#[derive(Debug)]
pub(crate) struct Encoded {
    /// `{` + fields that sort before `portcullis.chain.` + `,`.
    pub head: Vec<u8>,
    /// Fields that sort after the chain fields + `}`.
    pub tail: Vec<u8>,
    pub category: Category,
}

impl Encoded {
    /// The canonical JSON without the event's own hash (what the hash covers).
    pub(crate) fn unhashed(&self, prev_hash: &str, seq: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.head);
        write_chain_tail(prev_hash, seq, out);
        out.extend_from_slice(&self.tail);
    }

    /// The line as stored: canonical JSON with the hash, and a trailing newline.
    pub(crate) fn line(&self, prev_hash: &str, seq: u64, hash: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.head);
        chain::write_json_string(field::CHAIN_HASH, out);
        out.push(b':');
        chain::write_json_string(hash, out);
        out.push(b',');
        write_chain_tail(prev_hash, seq, out);
        out.extend_from_slice(&self.tail);
        out.push(b'\n');
    }
}

fn write_chain_tail(prev_hash: &str, seq: u64, out: &mut Vec<u8>) {
    chain::write_json_string(field::CHAIN_PREV_HASH, out);
    out.push(b':');
    chain::write_json_string(prev_hash, out);
    out.push(b',');
    chain::write_json_string(field::CHAIN_SEQ, out);
    out.push(b':');
    out.extend_from_slice(seq.to_string().as_bytes());
    out.push(b',');
}

/// The serialised field names.
pub(crate) mod field {
    pub const TIMESTAMP: &str = "@timestamp";
    pub const ECS_VERSION: &str = "ecs.version";
    pub const EVENT_ID: &str = "event.id";
    pub const CATEGORY: &str = "event.category";
    pub const ACTION: &str = "event.action";
    pub const OUTCOME: &str = "event.outcome";
    pub const LEVEL: &str = "log.level";
    pub const USER_ID: &str = "user.id";
    pub const ROLES: &str = "user.roles";
    pub const SESSION_ID: &str = "portcullis.session.id";
    pub const AUTH_METHOD: &str = "portcullis.auth.method";
    pub const SOURCE_IP: &str = "source.ip";
    pub const USER_AGENT: &str = "user_agent.original";
    pub const REQUEST_ID: &str = "http.request.id";
    pub const DECISION_ID: &str = "portcullis.decision.id";
    pub const POLICY_DIGEST: &str = "portcullis.policy.digest";
    pub const ROUTE: &str = "portcullis.route";
    pub const DETAILS: &str = "portcullis.details";
    pub const EMITTER: &str = "portcullis.emitter";
    pub const CHAIN_PREFIX: &str = "portcullis.chain.";
    pub const CHAIN_HASH: &str = "portcullis.chain.hash";
    pub const CHAIN_PREV_HASH: &str = "portcullis.chain.prev_hash";
    pub const CHAIN_SEQ: &str = "portcullis.chain.seq";
    pub const CHECKPOINT_SEQ: &str = "portcullis.checkpoint.seq";
    pub const CHECKPOINT_HASH: &str = "portcullis.checkpoint.hash";
    pub const CHECKPOINT_SIGNATURE: &str = "portcullis.checkpoint.signature";
    pub const CHECKPOINT_PUBLIC_KEY: &str = "portcullis.checkpoint.public_key";
}

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

/// The configured extra keys to redact (exact match, case-insensitive).
#[derive(Debug, Clone, Default)]
pub(crate) struct Redactor {
    keys: HashSet<String>,
}

impl Redactor {
    pub(crate) fn new<'a>(keys: impl IntoIterator<Item = &'a String>) -> Self {
        Self {
            keys: keys.into_iter().map(|k| k.to_lowercase()).collect(),
        }
    }

    fn matches(&self, key: &str) -> bool {
        self.keys.contains(&key.to_lowercase())
    }
}

/// Whether a detail key looks like it holds a secret or a request body; such keys are always
/// redacted.
///
/// Matches, case-insensitively and ignoring `_`, `-`, `.` and spaces, any key containing
/// `password`, `passwd`, `passphrase`, `secret`, `token`, `authorization`, `cookie`,
/// `codeverifier`, `apikey`, `privatekey` or `credential`; and keys with a word `otp`, `totp`,
/// `hotp`, `pwd` or `body` (words split at separators and camelCase humps).
pub fn is_secret_key(key: &str) -> bool {
    const FRAGMENTS: [&str; 11] = [
        "password",
        "passwd",
        "passphrase",
        "secret",
        "token",
        "authorization",
        "cookie",
        "codeverifier",
        "apikey",
        "privatekey",
        "credential",
    ];
    const WORDS: [&str; 5] = ["otp", "totp", "hotp", "pwd", "body"];
    let squashed: String = key
        .chars()
        .filter(|c| !matches!(c, '_' | '-' | '.' | ' '))
        .flat_map(char::to_lowercase)
        .collect();
    if FRAGMENTS.iter().any(|f| squashed.contains(f)) {
        return true;
    }
    words(key).any(|w| WORDS.contains(&w.as_str()))
}

/// Splits `requestBody`, `request_body`, `x-otp` into lower-case words.
fn words(key: &str) -> impl Iterator<Item = String> + '_ {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut prev_lower = false;
    for c in key.chars() {
        if !c.is_alphanumeric() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        out.push(current);
    }
    out.into_iter()
}

fn redact_value(key: &str, value: Value, redact: &dyn Fn(&str) -> bool) -> Value {
    if redact(key) {
        return Value::String(REDACTED.to_owned());
    }
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let v = redact_value(&k, v, redact);
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|v| redact_value("", v, redact))
                .collect(),
        ),
        other => other,
    }
}

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

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`: RFC 3339 in UTC with microseconds, valid as an RFC 5424
/// TIMESTAMP and sortable as text.
pub(crate) fn format_timestamp(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.microsecond()
    )
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys() {
        for key in [
            "password",
            "newPassword",
            "access_token",
            "refreshToken",
            "client_secret",
            "Authorization",
            "Set-Cookie",
            "otp",
            "totp_code",
            "x-otp",
            "code_verifier",
            "codeVerifier",
            "api_key",
            "request_body",
            "requestBody",
            "body",
        ] {
            assert!(is_secret_key(key), "{key} should be secret");
        }
        for key in [
            "user",
            "footprint",
            "hotplug",
            "route",
            "reason",
            "code",
            "nobody_knows",
        ] {
            assert!(!is_secret_key(key), "{key} should not be secret");
        }
    }

    #[test]
    fn encode_splices_chain_fields_in_canonical_order() {
        let event = AuditEvent::new(Category::Auth, "login", Outcome::Failure)
            .user_id("alice")
            .detail("reason", "bad password")
            .detail("password", "hunter2");
        let encoded = event.encode("proxy");
        let mut line = Vec::new();
        encoded.line(chain::GENESIS_HASH, 1, "ab", &mut line);
        let value: Value = serde_json::from_slice(&line).unwrap();
        let mut canonical = Vec::new();
        chain::write_canonical(&value, &mut canonical);
        canonical.push(b'\n');
        assert_eq!(
            String::from_utf8(canonical).unwrap(),
            String::from_utf8(line).unwrap()
        );
        assert_eq!(value["portcullis.details"]["password"], REDACTED);
        assert_eq!(value["portcullis.details"]["reason"], "bad password");
    }

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

    #[test]
    fn long_values_are_clipped() {
        let event =
            AuditEvent::new(Category::Api, "get", Outcome::Success).user_agent("é".repeat(2000));
        assert!(event.user_agent.as_deref().unwrap().len() <= MAX_FIELD_BYTES);
        let big = "x".repeat(MAX_DETAILS_BYTES + 1);
        let event = AuditEvent::new(Category::Api, "get", Outcome::Success).detail("note", big);
        let encoded = event.encode("proxy");
        let mut line = Vec::new();
        encoded.line(chain::GENESIS_HASH, 1, "ab", &mut line);
        let value: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(value["portcullis.details"]["truncated"], true);
    }
}
