//! The `backend.anomaly` section: the anomaly job's schedule and thresholds
//! ([`AnomalyConfig`] in the file, [`AnomalySettings`] validated).

use std::time::Duration;

use portcullis_contract::problems::Problems;
use schemars::JsonSchema;
use serde::Deserialize;

/// The `backend.anomaly:` section (docs/observability.md, "Anomaly detection").
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AnomalyConfig {
    /// Run the job. Default true.
    pub enabled: bool,
    /// How often the job looks at the latest window. Default 300.
    pub interval_seconds: u64,
    /// The window judged, ending now. Default 60.
    pub window_minutes: u32,
    /// Days of history the baselines come from. Default 14.
    pub baseline_days: u32,
    /// Robust z-score past which a count is flagged. Default 3.5.
    pub threshold: f64,
    /// Fewest events (denials, tickets, off-hours events, events from new addresses)
    /// a window needs before it can be flagged at all. Default 10.
    pub min_events: u32,
    /// Days of the baseline a subject must have been active on before it is judged
    /// (a new account has no normal to deviate from). Default 3; 0 judges new
    /// subjects against an empty history.
    pub min_baseline_days: u32,
    /// Off hours, UTC: from `start_hour` to `end_hour` (wrapping midnight). Default 22 to 6.
    pub off_hours: OffHoursConfig,
}

/// Hours of the day (UTC) counted as off hours.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OffHoursConfig {
    pub start_hour: u8,
    pub end_hour: u8,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_seconds: 300,
            window_minutes: 60,
            baseline_days: 14,
            threshold: 3.5,
            min_events: 10,
            min_baseline_days: 3,
            off_hours: OffHoursConfig {
                start_hour: 22,
                end_hour: 6,
            },
        }
    }
}

/// Validated anomaly-job settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalySettings {
    pub enabled: bool,
    pub interval: Duration,
    /// Seconds in the judged window.
    pub window_seconds: i64,
    pub baseline_days: u32,
    pub threshold: f64,
    pub min_events: u32,
    pub min_baseline_days: u32,
    pub off_hours: (u8, u8),
}

impl Default for AnomalySettings {
    fn default() -> Self {
        AnomalyConfig::default()
            .validate("anomaly", &mut Problems::default())
            .unwrap_or(Self {
                enabled: false,
                interval: Duration::from_secs(300),
                window_seconds: 3600,
                baseline_days: 14,
                threshold: 3.5,
                min_events: 10,
                min_baseline_days: 3,
                off_hours: (22, 6),
            })
    }
}

impl AnomalyConfig {
    /// Validates the section; every problem is pushed as `path: message`.
    pub fn validate(&self, prefix: &str, problems: &mut Problems) -> Option<AnomalySettings> {
        let Self {
            enabled,
            interval_seconds,
            window_minutes,
            baseline_days,
            threshold,
            min_events,
            min_baseline_days,
            off_hours,
        } = self;
        let before = problems.len();
        if !(1..=86_400).contains(interval_seconds) {
            problems.push(format!("{prefix}.interval_seconds"), "use 1 to 86400");
        }
        if !(5..=1440).contains(window_minutes) {
            problems.push(format!("{prefix}.window_minutes"), "use 5 to 1440");
        }
        if !(1..=366).contains(baseline_days) {
            problems.push(format!("{prefix}.baseline_days"), "use 1 to 366");
        }
        if !(threshold.is_finite() && *threshold > 0.0) {
            problems.push(format!("{prefix}.threshold"), "use a number above 0");
        }
        if *min_events == 0 {
            problems.push(
                format!("{prefix}.min_events"),
                "use at least 1 (one event is no pattern)",
            );
        }
        if min_baseline_days > baseline_days {
            problems.push(
                format!("{prefix}.min_baseline_days"),
                "must not exceed baseline_days",
            );
        }
        for (name, hour) in [
            ("start_hour", off_hours.start_hour),
            ("end_hour", off_hours.end_hour),
        ] {
            if hour > 23 {
                problems.push(format!("{prefix}.off_hours.{name}"), "use 0 to 23");
            }
        }
        (problems.len() == before).then(|| AnomalySettings {
            enabled: *enabled,
            interval: Duration::from_secs(*interval_seconds),
            window_seconds: i64::from(*window_minutes) * 60,
            baseline_days: *baseline_days,
            threshold: *threshold,
            min_events: *min_events,
            min_baseline_days: *min_baseline_days,
            off_hours: (off_hours.start_hour, off_hours.end_hour),
        })
    }
}
