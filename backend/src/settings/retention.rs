//! The `backend.retention` section: how long each kind of data is kept, where expired
//! rows are archived before they are deleted, and how often `portcullis up` runs
//! retention ([`RetentionConfig`] in the file, [`RetentionSettings`] validated).

use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis_contract::problems::Problems;
use portcullis_contract::shared::resolve_path;
use schemars::JsonSchema;
use serde::Deserialize;

use super::attachments::{StorageConfig, StorageSettings};

/// The `backend.retention:` section (docs/retention.md). The defaults are the seeds'
/// retention periods: audit events 2 years, tickets with their comments and history 7
/// years after closing, employees kept, ended sessions 30 days.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Run retention on a schedule inside `portcullis up` and `portcullis backend`.
    /// Default true. `portcullis retention run` works either way.
    pub enabled: bool,
    /// How often the schedule runs. Default 86400 (daily); 60 to 604800.
    pub interval_seconds: u64,
    /// Audit events older than this are archived, then deleted (the hash chain is cut
    /// with a signed anchor). Default 730 (2 years); 1 to 36500.
    pub audit_events_days: u32,
    /// Closed tickets, with their comments and history, are archived and deleted this
    /// long after they were closed. Default 2557 (7 years); 1 to 36500.
    pub closed_tickets_days: u32,
    /// Sessions that ended (signed out, revoked or expired) this long ago are archived
    /// and deleted, their refresh tokens with them. Default 30; 1 to 36500.
    pub ended_sessions_days: u32,
    /// Rows per archived and deleted batch. Default 500; 1 to 100000.
    pub batch_rows: u32,
    /// The archive folder: one sub-folder per run with gzip JSON-lines files and a
    /// SHA-256 manifest. Default `<state_dir>/archive`, relative paths from the
    /// configuration file's folder.
    pub archive_dir: Option<PathBuf>,
    /// An object store (`kind: s3`, or `kind: filesystem` with a `dir`, as
    /// `attachments.storage`) that receives every archive file and the manifest, named
    /// `<run folder>/<file>`, before the rows in them are deleted; the archive folder is
    /// then the staging copy. Default none: the folder only.
    pub archive_store: Option<StorageConfig>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_seconds: 86_400,
            audit_events_days: 730,
            closed_tickets_days: 2557,
            ended_sessions_days: 30,
            batch_rows: 500,
            archive_dir: None,
            archive_store: None,
        }
    }
}

/// Validated retention settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionSettings {
    pub enabled: bool,
    pub interval: Duration,
    pub audit_events_days: u32,
    pub closed_tickets_days: u32,
    pub ended_sessions_days: u32,
    pub batch_rows: u32,
    pub archive_dir: PathBuf,
    pub archive_store: Option<StorageSettings>,
}

impl RetentionSettings {
    /// The defaults, archiving below `state_dir`.
    pub fn defaults(state_dir: &Path) -> Self {
        let c = RetentionConfig::default();
        Self {
            enabled: c.enabled,
            interval: Duration::from_secs(c.interval_seconds),
            audit_events_days: c.audit_events_days,
            closed_tickets_days: c.closed_tickets_days,
            ended_sessions_days: c.ended_sessions_days,
            batch_rows: c.batch_rows,
            archive_dir: state_dir.join("archive"),
            archive_store: None,
        }
    }
}

impl RetentionConfig {
    /// Validates the section; every problem is pushed as `path: message`.
    pub fn validate(
        &self,
        prefix: &str,
        base: &Path,
        state_dir: &Path,
        problems: &mut Problems,
    ) -> Option<RetentionSettings> {
        let Self {
            enabled,
            interval_seconds,
            audit_events_days,
            closed_tickets_days,
            ended_sessions_days,
            batch_rows,
            archive_dir,
            archive_store,
        } = self;
        let before = problems.len();
        if !(60..=604_800).contains(interval_seconds) {
            problems.push(format!("{prefix}.interval_seconds"), "use 60 to 604800");
        }
        for (name, days) in [
            ("audit_events_days", audit_events_days),
            ("closed_tickets_days", closed_tickets_days),
            ("ended_sessions_days", ended_sessions_days),
        ] {
            if !(1..=36_500).contains(days) {
                problems.push(format!("{prefix}.{name}"), "use 1 to 36500");
            }
        }
        if !(1..=100_000).contains(batch_rows) {
            problems.push(format!("{prefix}.batch_rows"), "use 1 to 100000");
        }
        let archive_store = archive_store.as_ref().map(|store| {
            store.validate(
                &format!("{prefix}.archive_store"),
                base,
                state_dir.join("archive-store"),
                problems,
            )
        });
        (problems.len() == before).then(|| RetentionSettings {
            enabled: *enabled,
            interval: Duration::from_secs(*interval_seconds),
            audit_events_days: *audit_events_days,
            closed_tickets_days: *closed_tickets_days,
            ended_sessions_days: *ended_sessions_days,
            batch_rows: *batch_rows,
            archive_dir: archive_dir
                .as_deref()
                .map_or_else(|| state_dir.join("archive"), |d| resolve_path(base, d)),
            archive_store,
        })
    }
}
