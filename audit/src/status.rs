//! What a running audit log can tell an operator ([`AuditStatus`]): how much the spool
//! holds, and for each sink how far behind it is, when it last took a batch and when
//! and how it last failed. The figures are the ones the metrics export; the sink
//! outcomes are kept here by the delivery tasks ([`SinkBoard`]).

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::metrics::Metrics;

/// The state of one emitter's audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditStatus {
    /// Whose chain (`proxy`, `backend`, `cli`).
    pub emitter: String,
    /// Events (checkpoints included) held in the spool on disk.
    pub spool_events: u64,
    /// Bytes of segment files on disk.
    pub spool_bytes: u64,
    /// The spool's configured bound in bytes.
    pub spool_max_bytes: u64,
    /// Every sink, in delivery order.
    pub sinks: Vec<SinkStatus>,
}

/// One sink's delivery state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkStatus {
    /// The sink's name (its offset file and metric label).
    pub name: String,
    /// Events spooled but not yet acknowledged by the sink.
    pub lag_events: u64,
    /// Failed delivery attempts since the process started.
    pub delivery_errors: u64,
    /// When the sink last took a batch (Unix seconds), since the process started.
    pub last_delivery_unix: Option<i64>,
    /// The latest failed attempt, if any since the process started.
    pub last_error: Option<SinkFailure>,
}

/// A failed delivery attempt: when, and what kind of failure (a stable code; the
/// message, which may name hosts and paths, goes to the log only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkFailure {
    /// Unix seconds.
    pub at_unix: i64,
    /// `io`, `tls`, `http`, `status`, `timeout`, `spool-read`, `offset` or `other`.
    pub kind: &'static str,
}

#[derive(Debug, Clone, Default)]
struct Entry {
    name: String,
    last_delivery_unix: Option<i64>,
    last_error: Option<SinkFailure>,
}

/// The delivery tasks' outcomes, one entry per sink (by its index).
#[derive(Debug, Default)]
pub(crate) struct SinkBoard {
    entries: Mutex<Vec<Entry>>,
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl SinkBoard {
    pub(crate) fn new(names: impl IntoIterator<Item = String>) -> Self {
        Self {
            entries: Mutex::new(
                names
                    .into_iter()
                    .map(|name| Entry {
                        name,
                        ..Entry::default()
                    })
                    .collect(),
            ),
        }
    }

    fn with(&self, sink: usize, f: impl FnOnce(&mut Entry)) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(e) = entries.get_mut(sink) {
            f(e);
        }
    }

    /// Sink `sink` took a batch.
    pub(crate) fn delivered(&self, sink: usize) {
        let at = now_unix();
        self.with(sink, |e| e.last_delivery_unix = Some(at));
    }

    /// An attempt for sink `sink` failed with `kind`.
    pub(crate) fn failed(&self, sink: usize, kind: &'static str) {
        let at_unix = now_unix();
        self.with(sink, |e| e.last_error = Some(SinkFailure { at_unix, kind }));
    }

    /// The status, with the figures of `metrics`.
    pub(crate) fn status(&self, emitter: &str, metrics: &Metrics) -> AuditStatus {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let count = |v: i64| u64::try_from(v).unwrap_or(0);
        AuditStatus {
            emitter: emitter.to_owned(),
            spool_events: count(metrics.spool_events.get()),
            spool_bytes: count(metrics.spool_bytes.get()),
            spool_max_bytes: count(metrics.spool_max_bytes.get()),
            sinks: entries
                .into_iter()
                .map(|e| SinkStatus {
                    lag_events: count(metrics.sink_lag.with_label_values(&[&e.name]).get()),
                    delivery_errors: metrics.delivery_errors.with_label_values(&[&e.name]).get(),
                    name: e.name,
                    last_delivery_unix: e.last_delivery_unix,
                    last_error: e.last_error,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn the_latest_outcome_of_each_sink_is_kept() {
        let metrics = Metrics::new("t").unwrap();
        let board = SinkBoard::new(["file".to_owned(), "siem".to_owned()]);
        metrics.sink_lag.with_label_values(&["siem"]).set(7);
        metrics.delivery_errors.with_label_values(&["siem"]).inc();
        board.delivered(0);
        board.failed(1, "timeout");
        board.failed(9, "io"); // no such sink: ignored
        let s = board.status("t", &metrics);
        assert_eq!(s.sinks.len(), 2);
        assert!(s.sinks[0].last_delivery_unix.is_some());
        assert_eq!(s.sinks[0].last_error, None);
        assert_eq!(s.sinks[1].lag_events, 7);
        assert_eq!(s.sinks[1].delivery_errors, 1);
        assert_eq!(s.sinks[1].last_error.as_ref().unwrap().kind, "timeout");
        assert_eq!(s.sinks[1].last_delivery_unix, None);
    }
}
