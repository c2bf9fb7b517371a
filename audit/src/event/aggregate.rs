//! Flood control for the audit trail: repeats of one event kind from one source inside
//! a window become a single summary event with a count.
//!
//! A client that is refused a thousand times a minute (rate limit, CSRF, a bad token,
//! a CSP report flood) would otherwise write a thousand fsync'd events, log lines and
//! rows, and push the events that matter behind them. With an [`Aggregator`]:
//! - the first event of a key in a window is recorded at once, unchanged, so an attack
//!   is visible as soon as it starts;
//! - later events of that key in the window are only counted;
//! - when the window ends, one summary event (a copy of the first, with a new id and
//!   time and the details `aggregate.repeats`, `aggregate.first_event_id`,
//!   `aggregate.window_seconds`, `aggregate.last_at`) records how many were absorbed.
//!
//! The key is what makes two events "the same": action, outcome, client network (an IPv6
//! client by its /64, as rate limits count it), user, route and the `rule`, `reason`,
//! `directive` and `key` details. Exact numbers stay in the metrics; the trail keeps a
//! bounded number of events per key and window. At most `max_keys` keys are tracked; past that, each action shares
//! one overflow key, so rotating keys cannot grow memory or the trail without bound.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::schema::AuditEvent;

/// See the module documentation.
#[derive(Debug)]
pub struct Aggregator {
    window: Duration,
    max_keys: usize,
    slots: Mutex<HashMap<String, Slot>>,
}

#[derive(Debug)]
struct Slot {
    opened: Instant,
    first: AuditEvent,
    repeats: u64,
    last_at: OffsetDateTime,
}

impl Slot {
    fn new(event: AuditEvent, now: Instant) -> Self {
        Self {
            opened: now,
            last_at: event.timestamp,
            first: event,
            repeats: 0,
        }
    }

    /// The summary of the window, when anything was absorbed.
    fn summary(self, window: Duration) -> Option<AuditEvent> {
        if self.repeats == 0 {
            return None;
        }
        let mut event = self.first;
        let first_id = event.id;
        event.id = Uuid::now_v7();
        event.timestamp = OffsetDateTime::now_utc();
        event.details.insert(
            "aggregate".to_owned(),
            json!({
                "repeats": self.repeats,
                "first_event_id": first_id.to_string(),
                "window_seconds": window.as_secs(),
                "last_at": self
                    .last_at
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
            }),
        );
        Some(event)
    }
}

impl Aggregator {
    /// Windows of `window`, at most `max_keys` keys tracked (at least 1).
    pub fn new(window: Duration, max_keys: usize) -> Self {
        Self {
            window,
            max_keys: max_keys.max(1),
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// Offers `event` at `now`; returns what to record now: the event itself when it
    /// opens a window of its key, and the summary of the key's previous window when that
    /// ended but was not flushed yet. Empty when the event was absorbed.
    pub fn admit(&self, event: AuditEvent, now: Instant) -> Vec<AuditEvent> {
        let key = key_of(&event);
        self.admit_keyed(&key, event, now)
    }

    fn admit_keyed(&self, key: &str, event: AuditEvent, now: Instant) -> Vec<AuditEvent> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let key = if slots.len() >= self.max_keys && !slots.contains_key(key) {
            format!("{}\u{0}overflow", event.action)
        } else {
            key.to_owned()
        };
        let mut out = Vec::new();
        match slots.get_mut(&key) {
            Some(slot) if now.duration_since(slot.opened) < self.window => {
                slot.repeats += 1;
                slot.last_at = event.timestamp;
                return out;
            }
            Some(slot) => {
                let ended = std::mem::replace(slot, Slot::new(event.clone(), now));
                out.extend(ended.summary(self.window));
            }
            None => {
                slots.insert(key, Slot::new(event.clone(), now));
            }
        }
        out.push(event);
        out
    }

    /// Closes every window that ended by `now` and returns their summaries (run it
    /// periodically, and with a time far ahead at shutdown to close them all).
    pub fn flush(&self, now: Instant) -> Vec<AuditEvent> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let ended: Vec<String> = slots
            .iter()
            .filter(|(_, s)| now.duration_since(s.opened) >= self.window)
            .map(|(k, _)| k.clone())
            .collect();
        ended
            .into_iter()
            .filter_map(|k| slots.remove(&k))
            .filter_map(|s| s.summary(self.window))
            .collect()
    }

    /// Keys tracked now.
    pub fn keys(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// What makes two events the same (see the module documentation).
fn key_of(e: &AuditEvent) -> String {
    use std::fmt::Write as _;
    let network = e
        .source_ip
        .map(portcullis_contract::headers::client_network)
        .unwrap_or_default();
    let mut key = format!(
        "{}\u{0}{:?}\u{0}{network}\u{0}{}\u{0}{}",
        e.action,
        e.outcome,
        e.user_id.as_deref().unwrap_or(""),
        e.route.as_deref().unwrap_or("")
    );
    for name in ["rule", "reason", "directive", "key"] {
        if let Some(v) = e.details.get(name) {
            let _ = write!(key, "\u{0}{v}");
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Category, Outcome};

    fn event(action: &str) -> AuditEvent {
        AuditEvent::new(Category::Security, action, Outcome::Failure).detail("rule", "r")
    }

    #[test]
    fn the_first_event_passes_repeats_become_one_summary() {
        let a = Aggregator::new(Duration::from_secs(60), 100);
        let t0 = Instant::now();
        let first = event("csrf.reject");
        let first_id = first.id();
        assert_eq!(a.admit_keyed("k", first, t0).len(), 1);
        for i in 0..999 {
            assert!(
                a.admit_keyed("k", event("csrf.reject"), t0 + Duration::from_millis(i))
                    .is_empty()
            );
        }
        // Another key is independent.
        assert_eq!(a.admit_keyed("other", event("csrf.reject"), t0).len(), 1);
        assert!(a.flush(t0 + Duration::from_secs(59)).is_empty());
        let summaries = a.flush(t0 + Duration::from_secs(60));
        assert_eq!(
            summaries.len(),
            1,
            "only the key with repeats has a summary"
        );
        let s = &summaries[0];
        assert_eq!(s.action(), "csrf.reject");
        assert_ne!(s.id(), first_id);
        let agg = &s.details_map()["aggregate"];
        assert_eq!(agg["repeats"], 999);
        assert_eq!(agg["first_event_id"], first_id.to_string());
        assert_eq!(agg["window_seconds"], 60);
        assert_eq!(s.details_map()["rule"], "r");
        assert_eq!(a.keys(), 0);
    }

    #[test]
    fn an_ended_window_is_summarised_when_the_key_comes_back() {
        let a = Aggregator::new(Duration::from_secs(10), 100);
        let t0 = Instant::now();
        a.admit_keyed("k", event("x"), t0);
        a.admit_keyed("k", event("x"), t0 + Duration::from_secs(1));
        let out = a.admit_keyed("k", event("x"), t0 + Duration::from_secs(11));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].details_map()["aggregate"]["repeats"], 1);
        assert!(!out[1].details_map().contains_key("aggregate"));
    }

    #[test]
    fn rotating_keys_share_one_overflow_key_per_action() {
        let a = Aggregator::new(Duration::from_secs(60), 3);
        let t0 = Instant::now();
        let mut recorded = 0;
        for i in 0..10_000 {
            recorded += a
                .admit_keyed(&format!("k{i}"), event("token.reject"), t0)
                .len();
        }
        // Three keys, then one overflow key: four events, not ten thousand.
        assert_eq!(recorded, 4);
        assert_eq!(a.keys(), 4);
        let s = a.flush(t0 + Duration::from_secs(60));
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].details_map()["aggregate"]["repeats"], 10_000 - 4);
    }

    #[test]
    fn the_key_groups_ipv6_clients_by_64_and_separates_rules_and_users() {
        let at = |ip: &str, user: &str, rule: &str| {
            key_of(
                &AuditEvent::new(Category::Security, "policy.deny", Outcome::Failure)
                    .source_ip(ip.parse().unwrap())
                    .user_id(user)
                    .detail("rule", rule),
            )
        };
        assert_eq!(
            at("2001:db8:1:2::1", "u", "r"),
            at("2001:db8:1:2:ffff::9", "u", "r")
        );
        assert_ne!(
            at("2001:db8:1:2::1", "u", "r"),
            at("2001:db8:1:3::1", "u", "r")
        );
        assert_eq!(at("::ffff:10.0.0.1", "u", "r"), at("10.0.0.1", "u", "r"));
        assert_ne!(at("10.0.0.1", "u", "r"), at("10.0.0.2", "u", "r"));
        assert_ne!(at("10.0.0.1", "u", "r"), at("10.0.0.1", "v", "r"));
        assert_ne!(at("10.0.0.1", "u", "r"), at("10.0.0.1", "u", "s"));
    }
}
