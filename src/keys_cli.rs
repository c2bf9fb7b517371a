//! `portcullis keys rotate|retire --kind kek|identity` and `keys rotate --kind audit-checkpoint`.
//!
//! The key-encryption keys of attachments: rotation makes a new KEK current, then
//! re-wraps every data key under it (content is not re-encrypted); it can be stopped at
//! any point (Ctrl-C, `--max-objects`) and run again to finish.
//!
//! The proxy↔backend identity key, in three steps so that no request is ever signed
//! with a key a verifier does not accept yet: the first `rotate` stages a new key beside
//! the current one (`identity.key.next`: every process accepts it once it has re-read
//! the files, at once on a file event, within the reload poll otherwise); the second,
//! once the staged key has settled, moves the current key aside
//! (`identity.key.previous`, still accepted) and makes the staged one sign; `retire`
//! removes the previous key, after which it is refused.
//!
//! The audit checkpoint keys: a new signing key per emitter, the old public key kept
//! trusted (see [`rotate_audit_checkpoint`]).
//!
//! Each step is an audit event (`keys.rotate`, `keys.retire`).

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use portcullis_contract::identity::{
    activate_staged_key, previous_key_file, retire_previous_key, stage_key, staged_key_file,
};

use portcullis_backend::AppState;
use portcullis_backend::attachments::rotation::{self, RewrapReport};
use portcullis_backend::audit_log::{Category, Level, Outcome, event};

use crate::admin_cli::os_user;

fn key_event(action: &str, outcome: Outcome) -> portcullis_audit::AuditEvent {
    kind_event(action, outcome, "kek")
}

fn kind_event(action: &str, outcome: Outcome, kind: &str) -> portcullis_audit::AuditEvent {
    event(Category::System, action, outcome)
        .level(Level::Warning)
        .auth_method("cli")
        .detail("os_user", os_user())
        .detail("kind", kind.to_owned())
}

async fn record(state: &AppState, e: portcullis_audit::AuditEvent) -> anyhow::Result<()> {
    state
        .audit(e)
        .await
        .map_err(|_| anyhow::anyhow!("the audit log cannot record this action (spool full?)"))
}

fn print_report(report: &RewrapReport, started_new: Option<&str>, dry_run: bool, json: bool) {
    if json {
        let v = serde_json::json!({
            "kind": "kek",
            "dry_run": dry_run,
            "new_kek_id": started_new,
            "kek_id": report.kek_id,
            "rewrapped": report.rewrapped,
            "remaining": report.remaining,
            "skipped": report.skipped,
        });
        println!("{v}");
        return;
    }
    if dry_run {
        println!(
            "dry run: a new key-encryption key would become current and {} data key(s) would be re-wrapped under it",
            report.remaining
        );
        return;
    }
    if let Some(id) = started_new {
        println!("new key-encryption key {id} is current");
    }
    println!(
        "re-wrapped {} data key(s) under {}; {} remaining{}",
        report.rewrapped,
        report.kek_id,
        report.remaining,
        if report.remaining > 0 {
            " (run `portcullis keys rotate --kind kek --resume` to finish)"
        } else {
            ""
        }
    );
}

/// `keys rotate --kind kek [--dry-run] [--json] [--resume] [--max-objects N]`.
///
/// Without `--resume` a new KEK is created and made current first; with it, the run
/// only finishes re-wrapping under the current KEK.
pub async fn rotate_kek(
    state: &AppState,
    dry_run: bool,
    json: bool,
    resume: bool,
    max_objects: Option<u64>,
) -> anyhow::Result<()> {
    let att = &state.attachments;
    let db = &state.db;
    if dry_run {
        let mut report = rotation::rewrap_all(db, att, None, true, |_| {}).await?;
        // A new key would re-wrap everything, not only what the current one lacks.
        if !resume {
            report.remaining = total_versions(state).await?;
        }
        print_report(&report, None, true, json);
        return Ok(());
    }
    let previous = att.keks.current_id()?;
    let new_id = if resume {
        None
    } else {
        let id = att.keks.create()?;
        att.keks.set_current(&id)?;
        record(
            state,
            key_event("keys.rotate", Outcome::Success)
                .detail("step", "added")
                .detail("kid", id.clone())
                .detail("previous_kid", previous.clone()),
        )
        .await?;
        Some(id)
    };
    let pending = rotation::pending(db, &att.keks).await?;
    let total = max_objects.map_or(pending, |m| m.min(pending));
    let bar = (std::io::stderr().is_terminal() && !json).then(|| {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} {wide_bar} {pos}/{len} data keys, {eta} left",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message("re-wrapping");
        bar
    });
    let result = rotation::rewrap_all(db, att, max_objects, false, |n| {
        if let Some(b) = &bar {
            b.set_position(n);
        }
    })
    .await;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            record(
                state,
                key_event("keys.rotate", Outcome::Failure)
                    .detail("step", "rewrap")
                    .detail("reason", e.to_string()),
            )
            .await?;
            return Err(e.into());
        }
    };
    record(
        state,
        key_event("keys.rotate", Outcome::Success)
            .detail(
                "step",
                if report.remaining == 0 {
                    "rewrapped"
                } else {
                    "rewrap_partial"
                },
            )
            .detail("kid", report.kek_id.clone())
            .detail("rewrapped", report.rewrapped)
            .detail("remaining", report.remaining),
    )
    .await?;
    print_report(&report, new_id.as_deref(), false, json);
    Ok(())
}

async fn total_versions(state: &AppState) -> anyhow::Result<u64> {
    Ok(portcullis_backend::attachments::repo::kek_usage(&state.db)
        .await?
        .iter()
        .map(|(_, n)| u64::try_from(*n).unwrap_or(0))
        .sum())
}

/// `keys retire --kind kek --id X [--json]`: refused while any data key is wrapped
/// under it (or while it is current).
pub async fn retire_kek(state: &AppState, id: &str, json: bool) -> anyhow::Result<()> {
    match rotation::retire(&state.db, &state.attachments.keks, id).await {
        Ok(()) => {
            record(
                state,
                key_event("keys.retire", Outcome::Success).detail("kid", id.to_owned()),
            )
            .await?;
            if json {
                println!("{}", serde_json::json!({"kind": "kek", "retired": id}));
            } else {
                println!("key-encryption key {id} retired (its file is deleted)");
            }
            Ok(())
        }
        Err(e) => {
            record(
                state,
                key_event("keys.retire", Outcome::Failure)
                    .detail("kid", id.to_owned())
                    .detail("reason", e.to_string()),
            )
            .await?;
            Err(e.into())
        }
    }
}

/// The step a `keys rotate --kind identity` takes now.
#[derive(Debug, PartialEq, Eq)]
enum IdentityStep {
    /// No rotation under way: stage a new key.
    Stage,
    /// A key is staged and has settled: make it sign.
    Activate,
    /// A key is staged but younger than the settle time.
    Wait(Duration),
    /// The previous key of the last rotation is still accepted: retire it first.
    RetireFirst,
}

fn identity_step(file: &Path, settle: Duration) -> anyhow::Result<IdentityStep> {
    let staged = staged_key_file(file);
    if !staged.exists() {
        return Ok(if previous_key_file(file).exists() {
            IdentityStep::RetireFirst
        } else {
            IdentityStep::Stage
        });
    }
    let age = std::fs::metadata(&staged)?
        .modified()?
        .elapsed()
        .unwrap_or_default();
    Ok(if age >= settle {
        IdentityStep::Activate
    } else {
        IdentityStep::Wait(settle - age)
    })
}

/// `keys rotate --kind identity [--dry-run] [--json] [--settle-seconds N]`.
pub async fn rotate_identity(
    state: &AppState,
    file: &Path,
    settle: Duration,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<()> {
    let step = identity_step(file, settle)?;
    let (name, say) = match &step {
        IdentityStep::Stage => (
            "staged",
            "a new identity key is staged: every process accepts it once it has re-read the \
             key files; run `portcullis keys rotate --kind identity` again after the settle \
             time to make it sign"
                .to_owned(),
        ),
        IdentityStep::Activate => (
            "activated",
            "the staged identity key signs now; the old one is still accepted until \
             `portcullis keys retire --kind identity`"
                .to_owned(),
        ),
        IdentityStep::Wait(left) => (
            "wait",
            format!(
                "the staged key has not settled yet: run this again in {} s, when every \
                 process has had the time to accept it",
                left.as_secs() + 1
            ),
        ),
        IdentityStep::RetireFirst => (
            "retire_first",
            "the previous identity key is still accepted: retire it first \
             (`portcullis keys retire --kind identity`)"
                .to_owned(),
        ),
    };
    let refused = matches!(step, IdentityStep::Wait(_) | IdentityStep::RetireFirst);
    if json {
        println!(
            "{}",
            serde_json::json!({"kind": "identity", "dry_run": dry_run, "step": name, "done": !dry_run && !refused})
        );
    } else if dry_run {
        println!("dry run: {say}");
    } else if !refused {
        println!("{say}");
    }
    if dry_run {
        return Ok(());
    }
    if refused {
        anyhow::bail!("{say}");
    }
    match step {
        IdentityStep::Stage => stage_key(file)?,
        IdentityStep::Activate => activate_staged_key(file)?,
        IdentityStep::Wait(_) | IdentityStep::RetireFirst => {}
    }
    record(
        state,
        kind_event("keys.rotate", Outcome::Success, "identity").detail("step", name),
    )
    .await
}

/// `keys retire --kind identity [--json]`: the previous identity key is refused from
/// now on (by each process once it has re-read the files).
pub async fn retire_identity(state: &AppState, file: &Path, json: bool) -> anyhow::Result<()> {
    if !retire_previous_key(file)? {
        let reason = "there is no previous identity key to retire";
        record(
            state,
            kind_event("keys.retire", Outcome::Failure, "identity").detail("reason", reason),
        )
        .await?;
        anyhow::bail!("{reason}");
    }
    record(
        state,
        kind_event("keys.retire", Outcome::Success, "identity"),
    )
    .await?;
    if json {
        println!(
            "{}",
            serde_json::json!({"kind": "identity", "retired": "previous"})
        );
    } else {
        println!("the previous identity key is retired: requests signed with it are refused");
    }
    Ok(())
}

/// `keys rotate --kind audit-checkpoint [--dry-run] [--json]`: a new checkpoint signing
/// key for each emitter (`proxy`, `backend`, `cli`) that has one. The new public key is
/// added to `<key_file>.pub` before anything is signed with it and the old one stays
/// there, so `audit verify` accepts checkpoints and chain cuts from before and after;
/// the old private key is overwritten. Running spools switch at their next write.
pub async fn rotate_audit_checkpoint(
    state: &AppState,
    audit: &portcullis_audit::AuditTemplate,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<()> {
    let mut files: Vec<(String, std::path::PathBuf)> = Vec::new();
    for kind in portcullis_audit::EMITTERS {
        let settings = audit.settings(kind);
        let emitter = settings.spool.emitter;
        let Some(cp) = settings.spool.checkpoint else {
            anyhow::bail!(
                "audit checkpoints are off (`audit.checkpoint: null`): there is no key to rotate"
            );
        };
        // One key file may serve several emitters (no `{emitter}` in its path).
        if !files.iter().any(|(_, f)| *f == cp.key_file) {
            files.push((emitter, cp.key_file));
        }
    }
    let mut done = Vec::new();
    for (emitter, file) in &files {
        if !file.exists() {
            // Nothing has signed yet: the emitter generates its key when it first starts.
            done.push(
                serde_json::json!({"emitter": emitter, "key_file": file, "skipped": "no key yet"}),
            );
            if !json {
                println!(
                    "{emitter}: no checkpoint key yet ({}); nothing to rotate",
                    file.display()
                );
            }
            continue;
        }
        let event = |outcome| {
            kind_event("keys.rotate", outcome, "audit-checkpoint")
                .detail("emitter", emitter.clone())
        };
        let rotation = match portcullis_audit::rotate_key(file, dry_run) {
            Ok(r) => r,
            Err(e) => {
                if !dry_run {
                    record(
                        state,
                        event(Outcome::Failure).detail("reason", e.to_string()),
                    )
                    .await?;
                }
                return Err(anyhow::anyhow!("{emitter}: {e}"));
            }
        };
        let previous = rotation.previous.to_hex();
        let current = rotation.current.as_ref().map(|k| k.to_hex());
        if let Some(current) = &current {
            record(
                state,
                event(Outcome::Success)
                    .detail("previous_public_key", previous.clone())
                    .detail("public_key", current.clone()),
            )
            .await?;
        }
        if !json {
            match &current {
                None => println!(
                    "dry run: {emitter}: the checkpoint key {} would be replaced; verifiers would trust both ({})",
                    short(&previous),
                    rotation.trusted_file.display()
                ),
                Some(current) => println!(
                    "{emitter}: checkpoint key {} replaced by {}; {} lists both",
                    short(&previous),
                    short(current),
                    rotation.trusted_file.display()
                ),
            }
        }
        done.push(serde_json::json!({
            "emitter": emitter,
            "key_file": file,
            "previous_public_key": previous,
            "public_key": current,
            "trusted_keys_file": rotation.trusted_file,
        }));
    }
    if json {
        println!(
            "{}",
            serde_json::json!({"kind": "audit-checkpoint", "dry_run": dry_run, "keys": done})
        );
    }
    Ok(())
}

/// The first 16 hex digits of a public key, for messages.
fn short(hex: &str) -> String {
    format!("{}…", &hex[..hex.len().min(16)])
}
