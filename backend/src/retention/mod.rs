//! Data retention (docs/retention.md): what expires under `backend.retention` is archived
//! to gzip JSON lines with a SHA-256 manifest ([`archive`]) before it is deleted, in
//! batches, resumably ([`run`]); legal holds keep what they name ([`holds`]); deleting the
//! oldest audit events cuts each emitter's hash chain at a signed anchor that
//! `portcullis audit verify --database` starts from. [`run_periodically`] is the schedule
//! inside `portcullis up` and `portcullis backend`.
//!
//! Layers: `rows` and [`archive`] (leaves), [`holds`], then [`run`].

pub mod archive;
pub mod holds;
mod rows;
pub mod run;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use portcullis_audit::CutSigner;

pub use self::run::{NoProgress, Progress, RetentionError, RunReport, RunStatus, chain_cuts};
use crate::AppState;
use crate::settings::RetentionSettings;

/// Runs retention every `settings.interval`, the first time one interval after start (so
/// a restart does not run it at once). Does nothing when `settings.enabled` is false.
/// `signer` signs audit chain cuts as `signed_by` (the emitter of `state.audit`).
pub async fn run_periodically(
    state: AppState,
    settings: RetentionSettings,
    signer: Option<Arc<CutSigner>>,
    signed_by: String,
) {
    if !settings.enabled {
        return;
    }
    let never = AtomicBool::new(false);
    loop {
        tokio::time::sleep(settings.interval).await;
        let signer = signer.as_deref().map(|s| (s, signed_by.as_str()));
        match run::run(&state, &settings, signer, None, &never, &NoProgress).await {
            Ok(report) => tracing::info!(
                retention_run_id = report.retention_run_id,
                counts = %serde_json::json!(report.counts),
                "retention run finished"
            ),
            Err(e) => tracing::error!(error = %e, "retention run failed"),
        }
    }
}
