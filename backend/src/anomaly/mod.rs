//! The anomaly job: every `backend.anomaly.interval_seconds` it reads the audit table
//! over the baseline period, applies the rule in [`detect`] to each subject (`user.id`),
//! and for each new finding records a `security` event (`anomaly.detected`, naming the
//! subject) and counts it (`portcullis_anomalies_total{kind}`). A finding is reported
//! once per window: later runs over the same window stay quiet about it.

pub mod detect;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::TryStreamExt;
use portcullis_audit::{Category, Level, Outcome};
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use serde_json::Value;
use sqlx::Row;

use self::detect::{Finding, Kind, Observation};
use crate::AppState;
use crate::audit_log::event;
use crate::db::{RepoError, format_time};
use crate::http::ApiError;
use crate::settings::AnomalySettings;

/// The job's state: its settings, metrics and what it already reported.
pub struct AnomalyJob {
    settings: AnomalySettings,
    flagged: IntCounterVec,
    last_success: IntGauge,
    /// (subject, kind) → when it was last reported (Unix seconds).
    reported: Mutex<HashMap<(String, Kind), i64>>,
}

/// Why a run failed (it is retried at the next interval).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("reading the audit table: {0}")]
    Read(#[from] RepoError),
    #[error("recording a finding: {0}")]
    Record(#[from] ApiError),
}

impl AnomalyJob {
    /// The job with its metrics registered in `registry` (the kinds exported at zero).
    pub fn try_new(settings: AnomalySettings, registry: &Registry) -> prometheus::Result<Self> {
        let flagged = IntCounterVec::new(
            Opts::new(
                "portcullis_anomalies_total",
                "Subjects the anomaly job flagged, by kind of deviation.",
            ),
            &["kind"],
        )?;
        for kind in Kind::ALL {
            flagged.with_label_values(&[kind.as_str()]);
        }
        let last_success = IntGauge::new(
            "portcullis_anomaly_job_last_success_timestamp_seconds",
            "When the anomaly job last completed a run (Unix seconds; 0: not yet).",
        )?;
        registry.register(Box::new(flagged.clone()))?;
        registry.register(Box::new(last_success.clone()))?;
        Ok(Self {
            settings,
            flagged,
            last_success,
            reported: Mutex::default(),
        })
    }

    /// Runs every interval for as long as the runtime runs (when enabled).
    pub async fn run_periodically(self: Arc<Self>, state: AppState) {
        if !self.settings.enabled {
            return;
        }
        let mut tick = tokio::time::interval(self.settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            match self.run_once(&state, now).await {
                Ok(found) if !found.is_empty() => {
                    tracing::warn!(findings = found.len(), "anomaly job flagged subjects");
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "anomaly job run failed"),
            }
        }
    }

    /// One run over the window ending at `now` (Unix seconds); returns what it reported.
    pub async fn run_once(&self, state: &AppState, now: i64) -> Result<Vec<Finding>, RunError> {
        let observations = load(state, detect::since(now, &self.settings)).await?;
        let found = detect::detect(&observations, now, &self.settings);
        let fresh: Vec<Finding> = {
            let mut reported = self
                .reported
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let window = self.settings.window_seconds;
            reported.retain(|_, at| now - *at < window);
            found
                .into_iter()
                .filter(|f| reported.insert((f.subject.clone(), f.kind), now).is_none())
                .collect()
        };
        for f in &fresh {
            state.audit(finding_event(f, &self.settings)).await?;
            self.flagged.with_label_values(&[f.kind.as_str()]).inc();
        }
        self.last_success.set(now);
        Ok(fresh)
    }
}

fn finding_event(f: &Finding, s: &AnomalySettings) -> portcullis_audit::AuditEvent {
    event(Category::Security, "anomaly.detected", Outcome::Unknown)
        .level(Level::Warning)
        .user_id(f.subject.clone())
        .detail("kind", f.kind.as_str())
        .detail("value", f.value)
        .detail("baseline_median", f.median)
        .detail("baseline_mad", f.mad)
        .detail("score", (f.score * 100.0).round() / 100.0)
        .detail("window_minutes", s.window_seconds / 60)
        .detail("baseline_days", s.baseline_days)
}

/// The audit events with a subject since `since` (Unix seconds), streamed, without the
/// job's own findings.
async fn load(state: &AppState, since: i64) -> Result<Vec<Observation>, RepoError> {
    let since = time::OffsetDateTime::from_unix_timestamp(since)
        .map(format_time)
        .unwrap_or_default();
    let mut rows = sqlx::query(
        "select occurred_at, user_id, outcome, line from audit_events \
         where occurred_at >= $1 and user_id is not null and action <> 'anomaly.detected'",
    )
    .bind(since)
    .fetch(state.db.pool());
    let mut out = Vec::new();
    while let Some(row) = rows.try_next().await? {
        let (Ok(at), Ok(subject), Ok(outcome), Ok(line)) = (
            row.try_get::<String, _>(0),
            row.try_get::<String, _>(1),
            row.try_get::<String, _>(2),
            row.try_get::<String, _>(3),
        ) else {
            continue;
        };
        let Ok(at) =
            time::OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339)
        else {
            continue;
        };
        let line: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        let ticket = match &line["portcullis.details"]["ticket_id"] {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        // A summary of folded repeats (the proxy's flood control) stands for them all.
        let weight = line["portcullis.details"]["aggregate"]["repeats"]
            .as_u64()
            .map_or(1, |n| u32::try_from(n).unwrap_or(u32::MAX));
        out.push(Observation {
            subject,
            at: at.unix_timestamp(),
            denied: outcome == "failure",
            weight,
            ticket,
            source_ip: line["source.ip"].as_str().map(str::to_owned),
        });
    }
    Ok(out)
}
