//! Serialising an event: its canonical JSON, cut around the chain fields ([`Encoded`]) so
//! the spool writer only splices in seq, `prev_hash` and hash; and the timestamp format.

use std::collections::BTreeMap;

use serde_json::Value;
use time::OffsetDateTime;

use crate::canonical::{write_canonical, write_json_string};
use crate::event::field;
use crate::event::schema::{AuditEvent, Category, ECS_VERSION, MAX_DETAILS_BYTES};

impl AuditEvent {
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
            write_canonical(&details, &mut bytes);
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
            write_json_string(name, out);
            out.push(b':');
            write_canonical(value, out);
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
        write_json_string(field::CHAIN_HASH, out);
        out.push(b':');
        write_json_string(hash, out);
        out.push(b',');
        write_chain_tail(prev_hash, seq, out);
        out.extend_from_slice(&self.tail);
        out.push(b'\n');
    }
}

fn write_chain_tail(prev_hash: &str, seq: u64, out: &mut Vec<u8>) {
    write_json_string(field::CHAIN_PREV_HASH, out);
    out.push(b':');
    write_json_string(prev_hash, out);
    out.push(b',');
    write_json_string(field::CHAIN_SEQ, out);
    out.push(b':');
    out.extend_from_slice(seq.to_string().as_bytes());
    out.push(b',');
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
mod tests {
    use super::*;
    use crate::event::redact::REDACTED;
    use crate::event::schema::{MAX_FIELD_BYTES, Outcome};

    // Any 64 hex digits do as the previous hash; the genesis hash is one.
    use crate::chain::hash::GENESIS_HASH as PREV_HASH;

    #[test]
    fn encode_splices_chain_fields_in_canonical_order() {
        let event = AuditEvent::new(Category::Auth, "login", Outcome::Failure)
            .user_id("alice")
            .detail("reason", "bad password")
            .detail("password", "hunter2");
        let encoded = event.encode("proxy");
        let mut line = Vec::new();
        encoded.line(PREV_HASH, 1, "ab", &mut line);
        let value: Value = serde_json::from_slice(&line).unwrap();
        let mut canonical = Vec::new();
        write_canonical(&value, &mut canonical);
        canonical.push(b'\n');
        assert_eq!(
            String::from_utf8(canonical).unwrap(),
            String::from_utf8(line).unwrap()
        );
        assert_eq!(value["portcullis.details"]["password"], REDACTED);
        assert_eq!(value["portcullis.details"]["reason"], "bad password");
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
        encoded.line(PREV_HASH, 1, "ab", &mut line);
        let value: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(value["portcullis.details"]["truncated"], true);
    }
}
