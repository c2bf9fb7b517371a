//! `portcullis audit verify`: checks the hash chain and the signed checkpoints of
//! audit events in files (spool, file sink) or in the `audit_events` table. Each
//! verification is itself an audit event (`audit.verify`, emitter `cli`; a finding of
//! tampering has level `critical`), so the SIEM sees both the checks and their results.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use portcullis_audit::{
    AuditEvent, Category, Level, Outcome, TrustedKeys, VerifyError, VerifyReport,
};
use portcullis_backend::Db;

use crate::config::Settings;

/// Exit status when events were tampered with (edited, deleted, reordered, bad checkpoint).
const EXIT_TAMPERED: u8 = 2;
/// Exit status when the events could not be read.
const EXIT_FAILURE: u8 = 1;
/// How long the `cli` log's sinks get to take the verification events.
const AUDIT_DRAIN: Duration = Duration::from_secs(5);

/// What one verification found.
enum Finding {
    Ok(VerifyReport),
    Tampered {
        /// Where, for a human (`file:line`, `row audit_event_id=…`).
        position: String,
        tamper: String,
        emitter: Option<String>,
        seq: Option<u64>,
        detail: String,
    },
    Unreadable(String),
}

fn print_report(what: &str, report: &VerifyReport) {
    println!(
        "{what}: ok ({} event(s){})",
        report.events,
        if report.files > 0 {
            format!(" in {} file(s)", report.files)
        } else {
            String::new()
        }
    );
    for c in &report.chains {
        println!(
            "  {}: seq {}..{}, {} checkpoint(s), {} signature(s) verified, last hash {}{}",
            c.emitter,
            c.first_seq,
            c.last_seq,
            c.checkpoints,
            c.checkpoints_verified,
            c.last_hash,
            c.cut_seq
                .map(|s| format!(", starts after the retention cut at seq {s}"))
                .unwrap_or_default()
        );
    }
}

/// One verification as JSON (`audit verify --json`).
fn finding_json(target: &str, signed: bool, finding: &Finding) -> serde_json::Value {
    use serde_json::json;
    match finding {
        Finding::Ok(r) => json!({
            "target": target,
            "status": "ok",
            "signatures_checked": signed,
            "events": r.events,
            "files": r.files,
            "chains": r.chains.iter().map(|c| json!({
                "emitter": c.emitter,
                "first_seq": c.first_seq,
                "last_seq": c.last_seq,
                "last_hash": c.last_hash,
                "checkpoints": c.checkpoints,
                "checkpoints_verified": c.checkpoints_verified,
                "cut_seq": c.cut_seq,
            })).collect::<Vec<_>>(),
        }),
        Finding::Tampered {
            position,
            tamper,
            emitter,
            seq,
            detail,
        } => json!({
            "target": target,
            "status": "tampered",
            "position": position,
            "tamper": tamper,
            "emitter": emitter,
            "seq": seq,
            "detail": detail,
        }),
        Finding::Unreadable(e) => json!({"target": target, "status": "unreadable", "error": e}),
    }
}

/// A note about what was not checked: on standard output, or standard error with
/// `--json` (which keeps standard output for the one JSON object).
fn note(json: bool, text: &str) {
    if json {
        eprintln!("{text}");
    } else {
        println!("{text}");
    }
}

/// The `audit.verify` event of one verification of `target`.
fn verify_event(target: &str, finding: &Finding, signed: bool) -> AuditEvent {
    let base = |outcome, level| {
        AuditEvent::new(Category::Security, "audit.verify", outcome)
            .level(level)
            .auth_method("cli")
            .detail("os_user", crate::admin_cli::os_user())
            .detail("target", target)
            .detail("signatures_checked", signed)
    };
    match finding {
        Finding::Ok(report) => base(Outcome::Success, Level::Info)
            .detail("events", report.events)
            .detail(
                "chains",
                report
                    .chains
                    .iter()
                    .map(|c| {
                        serde_json::json!({
                            "emitter": c.emitter, "first_seq": c.first_seq, "last_seq": c.last_seq,
                            "checkpoints_verified": c.checkpoints_verified,
                        })
                    })
                    .collect::<Vec<_>>(),
            ),
        Finding::Tampered {
            position,
            tamper,
            emitter,
            seq,
            detail,
        } => base(Outcome::Failure, Level::Critical)
            .detail("position", position.clone())
            .detail("tamper", tamper.clone())
            .detail("chain_emitter", emitter.clone())
            .detail("chain_seq", *seq)
            .detail("finding", detail.clone()),
        Finding::Unreadable(error) => {
            base(Outcome::Unknown, Level::Error).detail("error", error.clone())
        }
    }
}

/// Runs the command; the exit code says ok (0), unreadable (1) or tampered (2).
pub fn verify(
    settings: &Settings,
    path: Option<&Path>,
    key: Option<&Path>,
    database: bool,
    emitter: Option<&str>,
    json: bool,
) -> ExitCode {
    let key = match key.map(TrustedKeys::read_file).transpose() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("portcullis: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    if !database && path.is_none() {
        eprintln!("portcullis: give a file or folder to verify, or --database");
        return ExitCode::from(EXIT_FAILURE);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portcullis: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    rt.block_on(async {
        let db = connect(settings).await;
        let findings = match (database, path) {
            (true, _) => match &db {
                Ok(db) => verify_database(settings, db, key.as_ref(), emitter, json).await,
                Err(e) => vec![(
                    "audit_events".to_owned(),
                    false,
                    Finding::Unreadable(format!("cannot read the audit_events table: {e:#}")),
                )],
            },
            (false, Some(path)) => {
                if key.is_none() {
                    note(
                        json,
                        "note: no --key given: checkpoint signatures are checked for consistency only",
                    );
                }
                let target = path.display().to_string();
                // A bar by bytes (with an ETA) on a terminal: a trail can be gigabytes.
                let bar = crate::progress::Bar::new("verify", json);
                let verified = portcullis_audit::verify_file_with_progress(
                    path,
                    key.as_ref(),
                    &mut |done, total| {
                        bar.set_length(total);
                        bar.set_position(done);
                    },
                );
                bar.finish();
                let finding = match verified {
                    Ok(report) => Finding::Ok(report),
                    Err(VerifyError::Tampered(bad)) => Finding::Tampered {
                        position: match &bad.file {
                            Some(f) => format!("{}:{}", f.display(), bad.line),
                            None => bad.line.to_string(),
                        },
                        tamper: bad.tamper.to_string(),
                        emitter: bad.emitter.clone(),
                        seq: bad.seq,
                        detail: bad.detail.clone(),
                    },
                    Err(e) => Finding::Unreadable(e.to_string()),
                };
                vec![(target, key.is_some(), finding)]
            }
            (false, None) => Vec::new(),
        };
        let mut code = ExitCode::SUCCESS;
        let mut worst = 0u8;
        for (target, _, finding) in &findings {
            if json {
                worst = worst.max(match finding {
                    Finding::Ok(_) => 0,
                    Finding::Tampered { .. } => EXIT_TAMPERED,
                    Finding::Unreadable(_) => EXIT_FAILURE,
                });
                continue;
            }
            match finding {
                Finding::Ok(report) => print_report(target, report),
                Finding::Tampered {
                    position,
                    tamper,
                    emitter,
                    seq,
                    detail,
                } => {
                    let chain = match (emitter, seq) {
                        (Some(e), Some(s)) => format!(" ({e} seq {s})"),
                        _ => String::new(),
                    };
                    eprintln!("TAMPERED: {target}: {position}{chain}: {tamper}: {detail}");
                    worst = worst.max(EXIT_TAMPERED);
                }
                Finding::Unreadable(e) => {
                    eprintln!("portcullis: {target}: {e}");
                    worst = worst.max(EXIT_FAILURE);
                }
            }
        }
        if json {
            let targets: Vec<_> = findings
                .iter()
                .map(|(t, signed, f)| finding_json(t, *signed, f))
                .collect();
            println!(
                "{}",
                serde_json::json!({"ok": worst == 0, "exit_code": worst, "targets": targets})
            );
        }
        if worst > 0 {
            code = ExitCode::from(worst);
        }
        record(settings, db.ok().as_ref(), &findings).await;
        code
    })
}

/// The database, when it is reachable and has the audit table.
async fn connect(settings: &Settings) -> anyhow::Result<Db> {
    let url = portcullis_backend::connect_url(&settings.backend)?;
    let db = Db::connect(&url).await?;
    portcullis_backend::audit_log::store::probe(&db).await?;
    Ok(db)
}

/// Records each verification through the `cli` emitter (its sinks and the database).
/// A failure to record is reported but does not change the verdict.
async fn record(settings: &Settings, db: Option<&Db>, findings: &[(String, bool, Finding)]) {
    let sink = match (db, portcullis_backend::connect_url(&settings.backend)) {
        (Some(db), _) => portcullis_backend::audit_log::DbSink::new(db.clone()),
        (None, Ok(url)) => portcullis_backend::audit_log::DbSink::connecting(url),
        (None, Err(e)) => {
            eprintln!("warning: the verification is not recorded in the audit trail: {e}");
            return;
        }
    };
    // Without the database its sink cannot deliver now; the events wait in the spool.
    let drain = if db.is_some() {
        AUDIT_DRAIN
    } else {
        Duration::from_millis(500)
    };
    let audit = match portcullis_backend::start_audit(
        &settings.audit.settings("cli"),
        sink,
        &prometheus::Registry::new(),
    )
    .await
    {
        Ok(a) => a,
        Err(e) => {
            eprintln!("warning: the verification is not recorded in the audit trail: {e}");
            return;
        }
    };
    for (target, signed, finding) in findings {
        if let Err(e) = audit
            .log()
            .emit(verify_event(target, finding, *signed))
            .await
        {
            eprintln!("warning: the verification is not recorded in the audit trail: {e}");
        }
    }
    audit.shutdown(drain).await;
}

async fn verify_database(
    settings: &Settings,
    db: &Db,
    key: Option<&TrustedKeys>,
    only: Option<&str>,
    json: bool,
) -> Vec<(String, bool, Finding)> {
    use portcullis_backend::audit_log::store;
    // Where retention cut a chain, verification starts at the signed anchor.
    let cuts = match portcullis_backend::retention::chain_cuts(db).await {
        Ok(cuts) => cuts,
        Err(e) => {
            return vec![(
                "audit_chain_cuts".to_owned(),
                false,
                Finding::Unreadable(e.to_string()),
            )];
        }
    };
    let emitters = match only {
        Some(e) => vec![e.to_owned()],
        None => match store::emitters(db).await {
            Ok(mut e) => {
                for (cut, _) in &cuts {
                    if !e.contains(&cut.emitter) {
                        e.push(cut.emitter.clone());
                    }
                }
                e.sort();
                e
            }
            Err(e) => {
                return vec![(
                    "audit_events".to_owned(),
                    false,
                    Finding::Unreadable(e.to_string()),
                )];
            }
        },
    };
    if emitters.is_empty() {
        note(json, "audit_events: no events");
    }
    let mut findings = Vec::new();
    for emitter in emitters {
        let what = format!("audit_events ({emitter})");
        let rows = match store::chain(db, &emitter).await {
            Ok(rows) => rows,
            Err(e) => {
                findings.push((what, false, Finding::Unreadable(e.to_string())));
                continue;
            }
        };
        // Without --key, each emitter's own configured checkpoint key (if it is here).
        let own_key = match key {
            Some(_) => None,
            None => settings
                .audit
                .public_key_file(&emitter)
                .filter(|p| p.is_file())
                .and_then(|p| TrustedKeys::read_file(&p).ok()),
        };
        let key = key.or(own_key.as_ref());
        if key.is_none() {
            note(
                json,
                &format!(
                    "note: {emitter}: no checkpoint public key: signatures are checked for consistency only"
                ),
            );
        }
        let cut = cuts.iter().find(|(c, _)| c.emitter == emitter);
        let verified = match cut {
            None => portcullis_audit::verify_events(rows.iter().map(|(_, l)| l), key),
            Some((cut, signed_by)) => {
                // The cut is signed by the emitter that ran retention (`cli`, `backend`).
                let signer_key = match key {
                    Some(k) => Some(k.clone()),
                    None => settings
                        .audit
                        .public_key_file(signed_by)
                        .filter(|p| p.is_file())
                        .and_then(|p| TrustedKeys::read_file(&p).ok()),
                };
                if signer_key.is_none() {
                    note(
                        json,
                        &format!(
                            "note: {emitter}: no public key of {signed_by}: the chain cut's signature is checked for consistency only"
                        ),
                    );
                }
                portcullis_audit::verify_events_after(
                    cut,
                    signer_key.as_ref(),
                    rows.iter().map(|(_, l)| l),
                    key,
                )
            }
        };
        let finding = match verified {
            Ok(report) => Finding::Ok(report),
            Err(VerifyError::Tampered(bad)) => {
                let row = if bad.line == 0 {
                    format!("audit_chain_cuts emitter={emitter}")
                } else {
                    usize::try_from(bad.line)
                        .ok()
                        .and_then(|i| i.checked_sub(1))
                        .and_then(|i| rows.get(i))
                        .map_or_else(
                            || format!("position {}", bad.line),
                            |(id, _)| format!("row audit_event_id={id}"),
                        )
                };
                Finding::Tampered {
                    position: row,
                    tamper: bad.tamper.to_string(),
                    emitter: bad.emitter.clone(),
                    seq: bad.seq,
                    detail: bad.detail.clone(),
                }
            }
            Err(e) => Finding::Unreadable(e.to_string()),
        };
        findings.push((what, key.is_some(), finding));
    }
    findings
}
