//! `portcullis backup` and `portcullis restore` (docs/runbooks/disaster-recovery.md):
//! the backend's [`portcullis_backend::backup`] with the configured database and state
//! folder, a progress bar on a terminal, a summary or `--json` otherwise, and Ctrl-C
//! checked between files. A backup is recorded in the audit trail (`backup.create`); a
//! restore is logged, and leaves the restored audit table as the backup held it.

use std::path::Path;
use std::time::Duration;

use portcullis_audit::{Category, Outcome};
use portcullis_backend::backup::{self, BackupOptions, RestoreOptions};

use crate::config::Settings;
use crate::progress::{Bar, Interrupted, interrupt_flag, interrupted};

impl backup::Progress for Bar {
    fn planned(&self, steps: u64) {
        self.set_length(steps);
    }
    fn advanced(&self, what: &str) {
        self.inc(1, what);
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Records `event` through the `cli` emitter's log (its sinks and the database).
async fn record(settings: &Settings, event: portcullis_audit::AuditEvent) {
    let Ok(url) = portcullis_backend::connect_url(&settings.backend) else {
        return;
    };
    let Ok(db) = portcullis_backend::Db::connect(&url).await else {
        eprintln!("warning: not recorded in the audit trail: the database is not reachable");
        return;
    };
    let sink = portcullis_backend::audit_log::DbSink::new(db);
    match portcullis_backend::start_audit(
        &settings.audit.settings("cli"),
        sink,
        &prometheus::Registry::new(),
    )
    .await
    {
        Ok(audit) => {
            if let Err(e) = audit.log().emit(event).await {
                eprintln!("warning: not recorded in the audit trail: {e}");
            }
            audit.shutdown(Duration::from_secs(5)).await;
        }
        Err(e) => eprintln!("warning: not recorded in the audit trail: {e}"),
    }
}

/// `portcullis backup`.
pub fn backup(
    settings: &Settings,
    out: &Path,
    age_recipient: Option<&str>,
    include_keys: bool,
    json: bool,
) -> anyhow::Result<()> {
    if include_keys && age_recipient.is_none() {
        eprintln!(
            "warning: --include-keys without --age-recipient writes key material in clear text"
        );
    }
    let recipient = match age_recipient {
        // A file of recipients (one per line, `#` comments) or one recipient.
        Some(r) if Path::new(r).is_file() => Some(
            std::fs::read_to_string(r)?
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'))
                .ok_or_else(|| anyhow::anyhow!("{r}: no age recipient in the file"))?
                .to_owned(),
        ),
        other => other.map(str::to_owned),
    };
    let options = BackupOptions {
        database_url: settings.backend.database_url.clone(),
        database_password_file: settings.backend.database_password_file.clone(),
        state_dir: settings.state_dir.clone(),
        out: out.to_owned(),
        age_recipient: recipient,
        include_keys,
    };
    let stop = interrupt_flag()?;
    let rt = runtime()?;
    let bar = Bar::new("backup", json);
    let result = rt.block_on(backup::backup(&options, &stop, &bar));
    bar.finish();
    if interrupted(&stop) {
        return Err(Interrupted("backup").into());
    }
    let report = result?;
    rt.block_on(record(
        settings,
        portcullis_backend::audit_log::event(Category::System, "backup.create", Outcome::Success)
            .auth_method("cli")
            .detail("os_user", crate::admin_cli::os_user())
            .detail("out", report.out.display().to_string())
            .detail("engine", report.engine.clone())
            .detail("files", report.files)
            .detail("bytes", report.bytes)
            .detail("encrypted", report.encrypted)
            .detail("include_keys", include_keys),
    ));
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "backup of the {} database at {}: {} file(s), {} bytes{} in {} ms -> {}",
            report.engine,
            report.created_at,
            report.files,
            report.bytes,
            if report.encrypted { ", encrypted" } else { "" },
            report.duration_ms,
            report.out.display()
        );
    }
    Ok(())
}

/// `portcullis restore`.
pub fn restore(
    settings: &Settings,
    from: &Path,
    identity: Option<&Path>,
    force: bool,
    json: bool,
) -> anyhow::Result<()> {
    let options = RestoreOptions {
        from: from.to_owned(),
        database_url: settings.backend.database_url.clone(),
        database_password_file: settings.backend.database_password_file.clone(),
        state_dir: settings.state_dir.clone(),
        identity: identity.map(Path::to_owned),
        force,
    };
    let stop = interrupt_flag()?;
    let rt = runtime()?;
    let bar = Bar::new("restore", json);
    let result = rt.block_on(backup::restore(&options, &stop, &bar));
    bar.finish();
    if interrupted(&stop) {
        return Err(Interrupted("restore").into());
    }
    let report = result?;
    // Not recorded in the restored audit table: it must hold what the backup held, so
    // that `portcullis audit verify --database` checks the restored chain as it was. The
    // restore goes to the log (and the incident record).
    tracing::warn!(
        from = %report.from.display(),
        backup_created_at = %report.backup_created_at,
        forced = force,
        "restored from a backup"
    );
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "restored the {} database and {} file(s) from {} (taken {}) in {} ms",
            report.engine,
            report.files,
            report.from.display(),
            report.backup_created_at,
            report.duration_ms
        );
    }
    Ok(())
}
