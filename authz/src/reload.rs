//! The policy bundle as a target of the process's reload service: `*.rego` and
//! `*.yaml` edits in the bundle folder (and SIGHUP) load the folder again, run its Rego
//! tests and swap it in only when they pass ([`Authorizer::try_reload`]); a refused
//! bundle leaves the running one in force. Proxy and backend use the same target, so
//! both layers reload, log and audit the same way.

use std::path::PathBuf;
use std::sync::Arc;

use portcullis_audit::{AuditEvent, AuditLog, Category, Level, Outcome as AuditOutcome};
use portcullis_reload::{Outcome, Rejected, Target, Trigger};

use crate::Authorizer;

/// The reload target of `authorizer`'s bundle in `dir`, for `layer` (`proxy` or
/// `backend`, in the log). Every reload and refusal is logged and written to `audit`
/// as a `policy.reload` event; `on_reload` runs after a new bundle is in force (the
/// proxy re-reads its per-route modes there).
pub fn reload_target(
    authorizer: Arc<Authorizer>,
    dir: PathBuf,
    layer: &'static str,
    audit: AuditLog,
    mut on_reload: impl FnMut() + Send + 'static,
) -> Target {
    let watched = dir.clone();
    Target::new("policy", move |trigger| {
        let before = authorizer.current().digest().to_owned();
        let (event, result) = match authorizer.try_reload(&dir) {
            Ok(digest) if digest == before => return Ok(Outcome::Unchanged),
            Ok(digest) => {
                tracing::warn!(event = "policy.reloaded", layer, trigger = trigger.label(), previous_digest = %before, digest = %digest, "policy bundle reloaded");
                on_reload();
                (
                    reloaded_event(trigger, &before, &digest),
                    Ok(Outcome::Reloaded { version: digest }),
                )
            }
            Err(e) => {
                let error = e.to_string();
                tracing::error!(event = "policy.reload_rejected", layer, trigger = trigger.label(), digest = %before, error = %error, "policy bundle rejected; the previous bundle keeps serving");
                (refused_event(trigger, &before, &error), Err(Rejected(error)))
            }
        };
        // The reload service's thread is ours, not a request worker: blocking is fine.
        if let Err(e) = audit.emit_blocking(event) {
            tracing::error!(target: "portcullis::audit", action = "policy.reload", layer, error = %e, "audit event not recorded");
        }
        result
    })
    .watch_dir(watched, |p| {
        p.extension().is_some_and(|e| e == "rego" || e == "yaml")
    })
}

/// `policy.reload` (category `system`) for a new bundle in force.
fn reloaded_event(trigger: Trigger, previous: &str, digest: &str) -> AuditEvent {
    AuditEvent::new(Category::System, "policy.reload", AuditOutcome::Success)
        .level(Level::Warning)
        .policy_digest(digest)
        .detail("trigger", trigger.label())
        .detail("previous_digest", previous)
}

/// `policy.reload` for a refused bundle: the digest still in force and the reason,
/// which names the file and line.
fn refused_event(trigger: Trigger, previous: &str, error: &str) -> AuditEvent {
    AuditEvent::new(Category::System, "policy.reload", AuditOutcome::Failure)
        .level(Level::Error)
        .policy_digest(previous)
        .detail("trigger", trigger.label())
        .detail("error", error)
}
