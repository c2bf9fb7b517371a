//! `portcullis retention run|verify` and `portcullis hold add|remove|list`
//! (docs/retention.md). The run is the backend's [`portcullis_backend::retention`] under
//! the `cli` emitter; the chain cuts it makes are signed with the `cli` checkpoint key.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use portcullis_audit::{Category, CutSigner, Outcome};
use portcullis_backend::AppState;
use portcullis_backend::audit_log::event;
use portcullis_backend::retention::holds::{self, HoldTarget};
use portcullis_backend::retention::{self, RunStatus};

use crate::config::Settings;
use crate::progress::Bar;

/// The emitter kind of administrative commands, whose key signs the cuts they make.
const CLI_EMITTER: &str = "cli";

/// Parses `--now` (RFC 3339).
pub fn parse_now(text: &str) -> anyhow::Result<time::OffsetDateTime> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| anyhow::anyhow!("--now {text:?}: not an RFC 3339 time ({e})"))
}

/// The checkpoint key of the `cli` emitter, when checkpoints are on.
pub fn cli_cut_signer(settings: &Settings) -> anyhow::Result<Option<CutSigner>> {
    let audit = settings.audit.settings(CLI_EMITTER);
    audit
        .spool
        .checkpoint
        .map(|cp| CutSigner::load(&cp.key_file))
        .transpose()
        .map_err(anyhow::Error::from)
}

/// `portcullis retention run`: returns whether it finished (false: interrupted).
pub async fn run(
    state: &AppState,
    settings: &Settings,
    now: Option<time::OffsetDateTime>,
    json: bool,
    stop: &AtomicBool,
) -> anyhow::Result<bool> {
    let signer = cli_cut_signer(settings)?;
    if signer.is_none() && !json {
        eprintln!(
            "warning: audit checkpoints are off: audit events are kept (a chain cut needs a signature)"
        );
    }
    let bar = Bar::new("retention", json);
    let signed_by = settings.audit.emitter(CLI_EMITTER);
    let report = retention::run::run(
        state,
        &settings.backend.retention,
        signer.as_ref().map(|s| (s, signed_by.as_str())),
        now,
        stop,
        &bar,
    )
    .await;
    bar.finish();
    let report = report?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        let counts = report
            .counts
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "retention run {} {}{} (as of {}): archived and deleted {counts}",
            report.retention_run_id,
            match report.status {
                RunStatus::Done => "done",
                RunStatus::Interrupted => "interrupted; run it again to resume",
            },
            if report.resumed { ", resumed" } else { "" },
            report.as_of,
        );
        if report.files > 0 {
            println!(
                "  archive: {} ({} file(s), manifest.json)",
                report.archive_dir.display(),
                report.files
            );
        }
    }
    Ok(report.status == RunStatus::Done)
}

/// `portcullis retention verify DIR`: exit status 0 when the archive matches its manifest.
pub fn verify(dir: &Path, json: bool) -> anyhow::Result<()> {
    match retention::archive::verify(dir) {
        Ok(report) => {
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "{}: ok (retention run {}, as of {}: {} file(s), {} row(s))",
                    dir.display(),
                    report.retention_run_id,
                    report.as_of,
                    report.files,
                    report.rows
                );
            }
            Ok(())
        }
        Err(e) => Err(anyhow::anyhow!("{}: does not verify: {e}", dir.display())),
    }
}

/// `portcullis retention verify --store RUN`: the run's copy in the archive store.
pub fn verify_store(settings: &Settings, run: &Path, json: bool) -> anyhow::Result<()> {
    let Some(store) = &settings.backend.retention.archive_store else {
        anyhow::bail!("no archive store is configured (`backend.retention.archive_store`)");
    };
    // The run folder's name, whether given alone or as the local folder's path.
    let name = run
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow::anyhow!("{}: not a run folder name", run.display()))?;
    let store = portcullis_backend::attachments::store::open(store)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match rt.block_on(retention::archive::verify_store(store.as_ref(), name)) {
        Ok(report) => {
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "{name} (archive store): ok (retention run {}, as of {}: {} file(s), {} row(s))",
                    report.retention_run_id, report.as_of, report.files, report.rows
                );
            }
            Ok(())
        }
        Err(e) => Err(anyhow::anyhow!(
            "{name} (archive store): does not verify: {e}"
        )),
    }
}

/// The hold's target from `--ticket` / `--subject`; a user name given as subject is
/// turned into the employee id audit events carry.
pub async fn target(
    state: &AppState,
    ticket: Option<String>,
    subject: Option<String>,
) -> anyhow::Result<HoldTarget> {
    match (ticket, subject) {
        (Some(t), None) => Ok(HoldTarget::Ticket(t)),
        (None, Some(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(HoldTarget::Subject(s))
        }
        (None, Some(s)) => match holds::employee_id(&state.db, &s).await? {
            Some(id) => Ok(HoldTarget::Subject(id.to_string())),
            None => Ok(HoldTarget::Subject(s)),
        },
        _ => Err(anyhow::anyhow!("give exactly one of --ticket or --subject")),
    }
}

fn hold_event(action: &str, hold: &holds::LegalHold) -> portcullis_audit::AuditEvent {
    event(Category::System, action, Outcome::Success)
        .auth_method("cli")
        .detail("os_user", crate::admin_cli::os_user())
        .detail("legal_hold_id", hold.legal_hold_id)
        .detail("kind", hold.kind.clone())
        .detail("target", hold.target.clone())
        .detail("reason", hold.reason.clone())
}

/// `portcullis hold add`.
pub async fn hold_add(state: &AppState, target: HoldTarget, reason: &str) -> anyhow::Result<()> {
    let by = crate::admin_cli::os_user();
    let hold = holds::add(&state.db, &target, reason, &by).await?;
    state
        .audit
        .log()
        .emit(hold_event("retention.hold.add", &hold))
        .await?;
    println!(
        "hold {} placed on {} {}",
        hold.legal_hold_id, hold.kind, hold.target
    );
    Ok(())
}

/// `portcullis hold remove`.
pub async fn hold_remove(state: &AppState, target: HoldTarget) -> anyhow::Result<()> {
    let by = crate::admin_cli::os_user();
    let hold = holds::release(&state.db, &target, &by)
        .await
        .map_err(|e| match e {
            portcullis_backend::db::RepoError::NotFound => {
                anyhow::anyhow!("no hold in force on that target")
            }
            other => other.into(),
        })?;
    state
        .audit
        .log()
        .emit(hold_event("retention.hold.remove", &hold))
        .await?;
    println!(
        "hold {} on {} {} released",
        hold.legal_hold_id, hold.kind, hold.target
    );
    Ok(())
}

/// `portcullis hold list`.
pub async fn hold_list(state: &AppState, all: bool, json: bool) -> anyhow::Result<()> {
    let list = holds::list(&state.db, !all).await?;
    if json {
        println!("{}", serde_json::to_string(&list)?);
        return Ok(());
    }
    if list.is_empty() {
        println!("no holds");
    }
    for h in list {
        println!(
            "{:>4} {:<7} {:<20} by {} at {}{}  {}",
            h.legal_hold_id,
            h.kind,
            h.target,
            h.created_by,
            h.created_at,
            h.released_at
                .map(|r| format!(", released {r}"))
                .unwrap_or_default(),
            h.reason
        );
    }
    Ok(())
}
