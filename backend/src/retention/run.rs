//! One retention run: for each category (ended sessions, closed tickets with their
//! comments and history, audit events), batches of expired rows not under a legal hold
//! are archived (see [`super::archive`]) and then deleted, the batch recorded in the same
//! transaction as the delete. A run that stops half-way (crash, Ctrl-C) is resumed by
//! the next one with the same clock and archive folder; a finished run leaves a manifest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use portcullis_audit::{Category, CutSigner, Level, Outcome};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::Row;
use time::OffsetDateTime;

use super::archive::{self, ArchiveError, FORMAT, Manifest, ManifestFile};
use super::holds::{held_subjects, subject_not_held, ticket_not_held};
use super::rows::to_json;
use crate::AppState;
use crate::audit_log::event;
use crate::db::{Db, dynamic_sql, format_time, now_text};
use crate::settings::RetentionSettings;

/// The categories, in the order a run handles them.
pub const CATEGORIES: [&str; 3] = ["sessions", "tickets", "audit_events"];

/// Why a run failed. Batches already archived and deleted stay done; the next run
/// resumes.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("archive: {0}")]
    Archive(#[from] ArchiveError),
    #[error("the run's stored clock {0:?} is not RFC 3339")]
    Clock(String),
    #[error("the stored audit event {0} has no chain hash")]
    Chain(String),
    #[error("the run could not be recorded in the audit trail")]
    Audit,
    #[error("archive store: {0}")]
    Store(#[from] crate::attachments::store::StoreError),
}

/// Told about a run's progress (the CLI draws a bar from it).
pub trait Progress: Send + Sync {
    /// Rows the run expects to handle (an estimate; audit events held back by a hold or
    /// a chain gap are counted but stay).
    fn planned(&self, _rows: u64) {}
    /// `rows` more of `category` archived and deleted.
    fn advanced(&self, _category: &str, _rows: u64) {}
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;
impl Progress for NoProgress {}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Everything expired was archived and deleted; the manifest is written.
    Done,
    /// Stopped between batches on request; the next run resumes.
    Interrupted,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub retention_run_id: i64,
    pub status: RunStatus,
    /// The clock expiry was judged by.
    pub as_of: String,
    /// Whether this continued a run that had stopped.
    pub resumed: bool,
    /// The run's archive folder (it exists only when something was archived).
    pub archive_dir: PathBuf,
    /// Rows archived and deleted per category, over the whole run (resumed parts
    /// included). Tickets count once each, with their comments and history.
    pub counts: BTreeMap<String, u64>,
    /// Archive files of the run.
    pub files: u64,
}

/// Runs retention now (or resumes the run that stopped). `as_of` fixes the clock (tests,
/// `--now`); a resumed run keeps its own. `signer` signs the audit chain cuts (the
/// checkpoint key of `signed_by`, the emitter running retention); without it audit
/// events are not deleted. `stop` is checked between batches.
pub async fn run(
    state: &AppState,
    settings: &RetentionSettings,
    signer: Option<(&CutSigner, &str)>,
    as_of: Option<OffsetDateTime>,
    stop: &AtomicBool,
    progress: &dyn Progress,
) -> Result<RunReport, RetentionError> {
    let outcome = run_inner(state, settings, signer, as_of, stop, progress).await;
    let e = match &outcome {
        Ok(report) => event(
            Category::System,
            "retention.run",
            match report.status {
                RunStatus::Done => Outcome::Success,
                RunStatus::Interrupted => Outcome::Unknown,
            },
        )
        .detail("retention_run_id", report.retention_run_id)
        .detail("status", json!(report.status))
        .detail("as_of", report.as_of.clone())
        .detail("resumed", report.resumed)
        .detail("counts", json!(report.counts))
        .detail("files", report.files)
        .detail("archive_dir", report.archive_dir.display().to_string()),
        Err(err) => event(Category::System, "retention.run", Outcome::Failure)
            .level(Level::Error)
            .detail("error", err.to_string()),
    };
    if state.audit.log().emit(e).await.is_err() {
        return Err(RetentionError::Audit);
    }
    outcome
}

struct Batch {
    category: &'static str,
    /// Archive lines.
    lines: Vec<String>,
}

struct RunCtx<'a> {
    db: &'a Db,
    /// Where attachment objects live: a ticket's go once its rows are gone.
    store: &'a dyn ObjectStore,
    run_id: i64,
    dir: PathBuf,
    limit: u32,
    /// Where each archive file is copied before its rows go (`archive_store`).
    archive_store: Option<std::sync::Arc<dyn ObjectStore>>,
}

async fn run_inner(
    state: &AppState,
    settings: &RetentionSettings,
    signer: Option<(&CutSigner, &str)>,
    as_of: Option<OffsetDateTime>,
    stop: &AtomicBool,
    progress: &dyn Progress,
) -> Result<RunReport, RetentionError> {
    let db = &state.db;
    let (run_id, as_of_text, dir, resumed) = open_run(db, settings, as_of).await?;
    let as_of = OffsetDateTime::parse(&as_of_text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| RetentionError::Clock(as_of_text.clone()))?;
    let days = |d: u32| format_time(as_of - time::Duration::days(i64::from(d)));
    let sessions_cut = days(settings.ended_sessions_days);
    let tickets_cut = days(settings.closed_tickets_days);
    let audit_cut = days(settings.audit_events_days);
    let archive_store = settings
        .archive_store
        .as_ref()
        .map(crate::attachments::store::open)
        .transpose()?;
    let ctx = RunCtx {
        db,
        store: state.attachments.store.as_ref(),
        run_id,
        dir,
        limit: settings.batch_rows,
        archive_store,
    };
    progress.planned(
        plan(
            db,
            &sessions_cut,
            &tickets_cut,
            &audit_cut,
            signer.is_some(),
        )
        .await?,
    );
    let mut interrupted = false;
    'categories: for category in CATEGORIES {
        match category {
            "sessions" => loop {
                if stop.load(Ordering::SeqCst) {
                    interrupted = true;
                    break 'categories;
                }
                let n = sessions_batch(&ctx, &sessions_cut).await?;
                progress.advanced(category, n);
                if n == 0 {
                    break;
                }
            },
            "tickets" => loop {
                if stop.load(Ordering::SeqCst) {
                    interrupted = true;
                    break 'categories;
                }
                let n = tickets_batch(&ctx, &tickets_cut).await?;
                progress.advanced(category, n);
                if n == 0 {
                    break;
                }
            },
            _ => {
                let Some((signer, signed_by)) = signer else {
                    tracing::warn!(
                        "retention: no checkpoint key to sign the audit chain cut; audit events are kept"
                    );
                    continue;
                };
                let held = held_subjects(db).await?;
                for emitter in audit_emitters(db).await? {
                    loop {
                        if stop.load(Ordering::SeqCst) {
                            interrupted = true;
                            break 'categories;
                        }
                        let (n, more) =
                            audit_batch(&ctx, &emitter, &audit_cut, &held, signer, signed_by)
                                .await?;
                        progress.advanced(category, n);
                        if !more {
                            break;
                        }
                    }
                }
            }
        }
    }
    let batches = batches_of(db, run_id).await?;
    let mut counts: BTreeMap<String, u64> =
        CATEGORIES.iter().map(|c| ((*c).to_owned(), 0)).collect();
    for f in &batches {
        *counts.entry(f.category.clone()).or_default() += f.rows;
    }
    let status = if interrupted {
        RunStatus::Interrupted
    } else {
        if !batches.is_empty() {
            archive::write_manifest(
                &ctx.dir,
                &Manifest {
                    format: FORMAT.to_owned(),
                    retention_run_id: run_id,
                    as_of: as_of_text.clone(),
                    files: batches.clone(),
                },
            )?;
            if let Some(store) = &ctx.archive_store {
                archive::upload(store.as_ref(), &ctx.dir, archive::MANIFEST).await?;
            }
        }
        sqlx::query(
            "update retention_runs set status = 'done', finished_at = $1, counts = $2 \
             where retention_run_id = $3",
        )
        .bind(now_text())
        .bind(json!(counts).to_string())
        .bind(run_id)
        .execute(db.pool())
        .await?;
        RunStatus::Done
    };
    Ok(RunReport {
        retention_run_id: run_id,
        status,
        as_of: as_of_text,
        resumed,
        archive_dir: ctx.dir,
        counts,
        files: batches.len() as u64,
    })
}

/// The run that stopped half-way, or a new one.
async fn open_run(
    db: &Db,
    settings: &RetentionSettings,
    as_of: Option<OffsetDateTime>,
) -> Result<(i64, String, PathBuf, bool), RetentionError> {
    if let Some(r) = sqlx::query(
        "select retention_run_id, as_of, archive_dir from retention_runs \
         where status = 'running' order by retention_run_id desc limit 1",
    )
    .fetch_optional(db.pool())
    .await?
    {
        let dir: String = r.try_get(2)?;
        return Ok((r.try_get(0)?, r.try_get(1)?, PathBuf::from(dir), true));
    }
    let as_of = format_time(as_of.unwrap_or_else(OffsetDateTime::now_utc));
    let now = now_text();
    let id: i64 = sqlx::query(
        "insert into retention_runs (status, as_of, archive_dir, started_at) \
         values ('running', $1, $2, $3) returning retention_run_id",
    )
    .bind(&as_of)
    .bind(settings.archive_dir.display().to_string())
    .bind(&now)
    .fetch_one(db.pool())
    .await?
    .try_get(0)?;
    // One folder per run, named so that `ls` lists them in order.
    let dir = settings
        .archive_dir
        .join(format!("{}-run-{id:06}", now.get(..10).unwrap_or("run")));
    sqlx::query("update retention_runs set archive_dir = $1 where retention_run_id = $2")
        .bind(dir.display().to_string())
        .bind(id)
        .execute(db.pool())
        .await?;
    Ok((id, as_of, dir, false))
}

/// An estimate of the rows the run will handle, for the progress bar.
async fn plan(
    db: &Db,
    sessions_cut: &str,
    tickets_cut: &str,
    audit_cut: &str,
    audit: bool,
) -> Result<u64, sqlx::Error> {
    let count = |sql: sqlx::AssertSqlSafe<String>, cut: &str| {
        let cut = cut.to_owned();
        async move {
            let n: i64 = sqlx::query(sql)
                .bind(cut)
                .fetch_one(db.pool())
                .await?
                .try_get(0)?;
            Ok::<u64, sqlx::Error>(u64::try_from(n).unwrap_or(0))
        }
    };
    let mut total = count(
        dynamic_sql!(
            "select count(*) from sessions where coalesce(revoked_at, expires_at) < $1 and {}",
            subject_not_held("cast(employee_id as text)")
        ),
        sessions_cut,
    )
    .await?;
    total += count(
        dynamic_sql!(
            "select count(*) from tickets where status = 'closed' and updated_at < $1 and {}",
            ticket_not_held("public_id")
        ),
        tickets_cut,
    )
    .await?;
    if audit {
        total += count(
            dynamic_sql!("select count(*) from audit_events where occurred_at < $1"),
            audit_cut,
        )
        .await?;
    }
    Ok(total)
}

/// A batch archived and its transaction open: the caller deletes its rows in `tx`,
/// then [`finish_batch`] records it and commits.
struct Pending {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    batch_no: i64,
    category: &'static str,
    name: String,
    sha256: String,
    rows: u64,
}

/// Archives `batch` (fsync'd) and opens the transaction its deletes go into; `None` for
/// an empty batch.
async fn archive_batch(ctx: &RunCtx<'_>, batch: Batch) -> Result<Option<Pending>, RetentionError> {
    let rows = batch.lines.len() as u64;
    if rows == 0 {
        return Ok(None);
    }
    let next: i64 = sqlx::query(
        "select coalesce(max(batch_no), 0) + 1 from retention_batches where retention_run_id = $1",
    )
    .bind(ctx.run_id)
    .fetch_one(ctx.db.pool())
    .await?
    .try_get(0)?;
    let name = format!("{next:06}-{}.jsonl.gz", batch.category);
    let sha256 = archive::write_lines(&ctx.dir, &name, &batch.lines)?;
    if let Some(store) = &ctx.archive_store {
        archive::upload(store.as_ref(), &ctx.dir, &name).await?;
    }
    let tx = ctx.db.begin().await?;
    Ok(Some(Pending {
        tx,
        batch_no: next,
        category: batch.category,
        name,
        sha256,
        rows,
    }))
}

/// Records the batch in the transaction that deleted its rows, and commits.
async fn finish_batch(ctx: &RunCtx<'_>, pending: Pending) -> Result<u64, RetentionError> {
    let Pending {
        mut tx,
        batch_no,
        category,
        name,
        sha256,
        rows,
    } = pending;
    sqlx::query(
        "insert into retention_batches (retention_run_id, batch_no, category, file_name, sha256, row_count, created_at) \
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(ctx.run_id)
    .bind(batch_no)
    .bind(category)
    .bind(&name)
    .bind(&sha256)
    .bind(i64::try_from(rows).unwrap_or(i64::MAX))
    .bind(now_text())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// Sessions that ended before `cut` (signed out, revoked or expired), with their refresh
/// tokens; the archive holds the session rows (refresh tokens are hashes of dead tokens
/// and are only deleted).
async fn sessions_batch(ctx: &RunCtx<'_>, cut: &str) -> Result<u64, RetentionError> {
    let rows = sqlx::query(dynamic_sql!(
        "select session_id, employee_id, auth_method, mfa, oidc_provider, created_at, expires_at, \
         absolute_expires_at, revoked_at, revoked_reason, source_ip, user_agent from sessions \
         where coalesce(revoked_at, expires_at) < $1 and {} order by session_id limit {}",
        subject_not_held("cast(employee_id as text)"),
        ctx.limit
    ))
    .bind(cut)
    .fetch_all(ctx.db.pool())
    .await?;
    let ids: Vec<String> = rows
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<_, _>>()?;
    let lines = rows.iter().map(|r| to_json(r).to_string()).collect();
    let Some(mut pending) = archive_batch(
        ctx,
        Batch {
            category: "sessions",
            lines,
        },
    )
    .await?
    else {
        return Ok(0);
    };
    for id in &ids {
        sqlx::query("delete from refresh_tokens where session_id = $1")
            .bind(id)
            .execute(&mut *pending.tx)
            .await?;
        sqlx::query("delete from sessions where session_id = $1")
            .bind(id)
            .execute(&mut *pending.tx)
            .await?;
    }
    finish_batch(ctx, pending).await
}

/// Tickets closed before `cut` that no hold keeps (on the ticket, its reporter or its
/// assignee); each archive line is the ticket with its comments and history.
async fn tickets_batch(ctx: &RunCtx<'_>, cut: &str) -> Result<u64, RetentionError> {
    let rows = sqlx::query(dynamic_sql!(
        "select * from tickets where status = 'closed' and updated_at < $1 and {} and {} \
         and (assignee_id is null or {}) order by ticket_id limit {}",
        ticket_not_held("public_id"),
        subject_not_held("cast(reporter_id as text)"),
        subject_not_held("cast(assignee_id as text)"),
        ctx.limit
    ))
    .bind(cut)
    .fetch_all(ctx.db.pool())
    .await?;
    let mut ids = Vec::with_capacity(rows.len());
    let mut lines = Vec::with_capacity(rows.len());
    let mut objects = Vec::new();
    for row in &rows {
        let id: i64 = row.try_get("ticket_id")?;
        let comments =
            sqlx::query("select * from ticket_comments where ticket_id = $1 order by comment_id")
                .bind(id)
                .fetch_all(ctx.db.pool())
                .await?;
        let history =
            sqlx::query("select * from ticket_history where ticket_id = $1 order by sequence")
                .bind(id)
                .fetch_all(ctx.db.pool())
                .await?;
        let attachments =
            sqlx::query("select * from attachments where ticket_id = $1 order by attachment_id")
                .bind(id)
                .fetch_all(ctx.db.pool())
                .await?;
        // What each version was (name, size, type, hash), not how to open it: the content
        // expires with the ticket, so its wrapped key is not archived.
        let versions = sqlx::query(
            "select attachment_id, version, content_sha256, size_bytes, content_type, object_key, \
             created_by, created_at from attachment_versions where ticket_id = $1 \
             order by attachment_id, version",
        )
        .bind(id)
        .fetch_all(ctx.db.pool())
        .await?;
        for v in &versions {
            objects.push(v.try_get::<String, _>("object_key")?);
        }
        lines.push(
            json!({
                "ticket": to_json(row),
                "comments": comments.iter().map(to_json).collect::<Vec<Value>>(),
                "history": history.iter().map(to_json).collect::<Vec<Value>>(),
                "attachments": attachments.iter().map(to_json).collect::<Vec<Value>>(),
                "attachment_versions": versions.iter().map(to_json).collect::<Vec<Value>>(),
            })
            .to_string(),
        );
        ids.push(id);
    }
    let Some(mut pending) = archive_batch(
        ctx,
        Batch {
            category: "tickets",
            lines,
        },
    )
    .await?
    else {
        return Ok(0);
    };
    for id in &ids {
        for sql in [
            "delete from attachment_versions where ticket_id = $1",
            "delete from attachments where ticket_id = $1",
            "delete from ticket_history where ticket_id = $1",
            "delete from ticket_comments where ticket_id = $1",
            "delete from tickets where ticket_id = $1",
        ] {
            sqlx::query(sql).bind(*id).execute(&mut *pending.tx).await?;
        }
    }
    let rows = finish_batch(ctx, pending).await?;
    // Once no row names them, the encrypted objects go. One that cannot be removed now
    // is ciphertext whose key is gone with its row: it is logged, not retried.
    for key in objects {
        if let Err(e) = ctx.store.delete(&ObjectPath::from(key.as_str())).await {
            tracing::warn!(object = %key, error = %e, "retention: an expired attachment object was not removed");
        }
    }
    Ok(rows)
}

async fn audit_emitters(db: &Db) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query("select distinct emitter from audit_events order by emitter")
        .fetch_all(db.pool())
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect()
}

/// The seq an emitter's chain was cut after, if it was.
pub(crate) async fn chain_cut_seq(db: &Db, emitter: &str) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query("select seq from audit_chain_cuts where emitter = $1")
        .bind(emitter)
        .fetch_optional(db.pool())
        .await?
        .map(|r| r.try_get::<i64, _>(0))
        .transpose()
}

/// The oldest events of `emitter`'s chain, from its cut on, while they are older than
/// `cut`, have no held subject and follow each other without a gap: a chain can only be
/// cut at one point, so the first event that must stay keeps every later one too.
/// Returns the rows archived and whether another batch may follow.
async fn audit_batch(
    ctx: &RunCtx<'_>,
    emitter: &str,
    cut: &str,
    held: &[String],
    signer: &CutSigner,
    signed_by: &str,
) -> Result<(u64, bool), RetentionError> {
    let after = chain_cut_seq(ctx.db, emitter).await?;
    let rows = sqlx::query(dynamic_sql!(
        "select seq, occurred_at, user_id, line from audit_events \
         where emitter = $1 and seq > $2 order by seq limit {}",
        ctx.limit
    ))
    .bind(emitter)
    .bind(after.unwrap_or(0))
    .fetch_all(ctx.db.pool())
    .await?;
    let fetched = rows.len();
    let mut expected = after.map(|s| s + 1);
    let mut lines = Vec::new();
    let mut last: Option<(i64, String)> = None;
    for row in &rows {
        let seq: i64 = row.try_get(0)?;
        let occurred_at: String = row.try_get(1)?;
        let user_id: Option<String> = row.try_get(2)?;
        let line: String = row.try_get(3)?;
        let contiguous = expected.is_none_or(|e| e == seq);
        let held_subject = user_id.as_ref().is_some_and(|u| held.contains(u));
        if !contiguous || held_subject || occurred_at.as_str() >= cut {
            break;
        }
        let hash = serde_json::from_str::<Value>(&line)
            .ok()
            .and_then(|v| {
                v.get("portcullis.chain.hash")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .ok_or_else(|| RetentionError::Chain(format!("{emitter} seq {seq}")))?;
        expected = Some(seq + 1);
        last = Some((seq, hash));
        lines.push(line);
    }
    let Some((last_seq, last_hash)) = last else {
        return Ok((0, false));
    };
    let more = lines.len() == fetched && fetched == ctx.limit as usize;
    let anchor = signer.sign(emitter, u64::try_from(last_seq).unwrap_or(0), &last_hash);
    let Some(mut pending) = archive_batch(
        ctx,
        Batch {
            category: "audit_events",
            lines,
        },
    )
    .await?
    else {
        return Ok((0, false));
    };
    sqlx::query("delete from audit_events where emitter = $1 and seq <= $2")
        .bind(emitter)
        .bind(last_seq)
        .execute(&mut *pending.tx)
        .await?;
    sqlx::query(
        "insert into audit_chain_cuts (emitter, seq, hash, signature, signed_by, retention_run_id, cut_at) \
         values ($1, $2, $3, $4, $5, $6, $7) \
         on conflict (emitter) do update set seq = excluded.seq, hash = excluded.hash, \
         signature = excluded.signature, signed_by = excluded.signed_by, \
         retention_run_id = excluded.retention_run_id, cut_at = excluded.cut_at",
    )
    .bind(emitter)
    .bind(last_seq)
    .bind(&anchor.hash)
    .bind(&anchor.signature)
    .bind(signed_by)
    .bind(ctx.run_id)
    .bind(now_text())
    .execute(&mut *pending.tx)
    .await?;
    let n = finish_batch(ctx, pending).await?;
    Ok((n, more))
}

/// The recorded batches of a run, as manifest entries.
async fn batches_of(db: &Db, run_id: i64) -> Result<Vec<ManifestFile>, sqlx::Error> {
    sqlx::query(
        "select file_name, category, sha256, row_count from retention_batches \
         where retention_run_id = $1 order by batch_no",
    )
    .bind(run_id)
    .fetch_all(db.pool())
    .await?
    .iter()
    .map(|r| {
        Ok(ManifestFile {
            name: r.try_get(0)?,
            category: r.try_get(1)?,
            sha256: r.try_get(2)?,
            rows: u64::try_from(r.try_get::<i64, _>(3)?).unwrap_or(0),
        })
    })
    .collect()
}

/// The signed cut of every emitter's chain that retention cut.
pub async fn chain_cuts(db: &Db) -> Result<Vec<(portcullis_audit::ChainCut, String)>, sqlx::Error> {
    sqlx::query(
        "select emitter, seq, hash, signature, signed_by from audit_chain_cuts order by emitter",
    )
    .fetch_all(db.pool())
    .await?
    .iter()
    .map(|r| {
        Ok((
            portcullis_audit::ChainCut {
                emitter: r.try_get(0)?,
                seq: u64::try_from(r.try_get::<i64, _>(1)?).unwrap_or(0),
                hash: r.try_get(2)?,
                signature: r.try_get(3)?,
            },
            r.try_get(4)?,
        ))
    })
    .collect()
}

/// Whether `dir` holds a retention archive manifest.
pub fn is_archive(dir: &Path) -> bool {
    dir.join(archive::MANIFEST).is_file()
}
