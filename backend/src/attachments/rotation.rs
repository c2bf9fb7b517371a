//! Rotation of the key-encryption key: a new KEK becomes current and every version's
//! data key is re-wrapped under it, without touching the encrypted content. Each row
//! is re-wrapped on its own (a conditional update), so an interrupted run leaves every
//! row either old or new, and running again finishes the rest. A KEK is retired
//! (its file deleted) only when no row uses it any more.

use super::Attachments;
use super::crypto::{self, CryptoError, ObjectIdentity};
use super::repo;
use crate::db::{Db, RepoError};

/// What went wrong during a rotation or retirement.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error(transparent)]
    Keys(#[from] CryptoError),
    #[error("database: {0}")]
    Db(#[from] RepoError),
    #[error("key-encryption key {kek_id} still wraps {count} attachment version(s); rotate first")]
    InUse { kek_id: String, count: i64 },
    #[error("{0} is the current key-encryption key; rotate to a new one first")]
    Current(String),
    #[error("no key-encryption key {0}")]
    Unknown(String),
}

/// The outcome of [`rewrap_all`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RewrapReport {
    /// The KEK every data key is (or, in a dry run, would be) wrapped under.
    pub kek_id: String,
    /// Rows re-wrapped by this run.
    pub rewrapped: u64,
    /// Rows still under another KEK when the run stopped (0 once complete).
    pub remaining: u64,
    /// Rows another process changed first (they are picked up again if still old).
    pub skipped: u64,
}

/// Rows under another KEK than the current one.
pub async fn pending(db: &Db, keks: &crypto::Keks) -> Result<u64, RotationError> {
    let current = keks.current_id()?;
    Ok(repo::kek_usage(db)
        .await?
        .into_iter()
        .filter(|(k, _)| *k != current)
        .map(|(_, n)| u64::try_from(n).unwrap_or(0))
        .sum())
}

/// Re-wraps every data key not under the current KEK, at most `max_objects` of them
/// (`None`: all), calling `progress(done)` after each. With `dry_run` nothing changes
/// and the report counts what would be done.
pub async fn rewrap_all(
    db: &Db,
    attachments: &Attachments,
    max_objects: Option<u64>,
    dry_run: bool,
    mut progress: impl FnMut(u64),
) -> Result<RewrapReport, RotationError> {
    let keks = &attachments.keks;
    let current = keks.current_id()?;
    let new_kek = keks.key(&current)?;
    let mut report = RewrapReport {
        kek_id: current.clone(),
        ..Default::default()
    };
    if dry_run {
        report.remaining = pending(db, keks).await?;
        return Ok(report);
    }
    const BATCH: i64 = 200;
    'outer: loop {
        let batch = repo::wrapped_elsewhere(db, &current, BATCH).await?;
        if batch.is_empty() {
            break;
        }
        let mut changed_any = false;
        for v in batch {
            if max_objects.is_some_and(|m| report.rewrapped >= m) {
                break 'outer;
            }
            let who = ObjectIdentity {
                ticket_id: v.ticket_id.clone(),
                attachment_id: v.attachment_id.clone(),
                version: v.version,
            };
            let old = keks.key(&v.kek_id)?;
            let data_key = crypto::unwrap(&old, &v.kek_id, &v.wrapped_key, &who)?;
            let wrapped = crypto::wrap(&new_kek, &current, &data_key, &who)?;
            if repo::rewrap(db, &v, &current, &wrapped).await? {
                report.rewrapped += 1;
                changed_any = true;
                progress(report.rewrapped);
            } else {
                report.skipped += 1;
            }
        }
        if !changed_any {
            // Every row of the batch was changed by another process (another rotation
            // to another key): stop and report what is left rather than race it.
            break;
        }
    }
    report.remaining = pending(db, keks).await?;
    Ok(report)
}

/// Deletes KEK `kek_id`, refused while any version's data key is wrapped under it or
/// while it is the current one.
pub async fn retire(db: &Db, keks: &crypto::Keks, kek_id: &str) -> Result<(), RotationError> {
    if !keks.ids()?.iter().any(|k| k == kek_id) {
        return Err(RotationError::Unknown(kek_id.to_owned()));
    }
    if keks.current_id()? == kek_id {
        return Err(RotationError::Current(kek_id.to_owned()));
    }
    let count = repo::kek_usage(db)
        .await?
        .into_iter()
        .find(|(k, _)| k == kek_id)
        .map_or(0, |(_, n)| n);
    if count > 0 {
        return Err(RotationError::InUse {
            kek_id: kek_id.to_owned(),
            count,
        });
    }
    keks.remove(kek_id)?;
    Ok(())
}
