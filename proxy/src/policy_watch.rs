//! Hot reload of the policy bundle: file events in the policy folder or
//! SIGHUP trigger a reload after a short debounce. The new bundle must
//! compile and pass its own Rego tests; otherwise it is rejected (message
//! naming file and line) and the running one keeps serving. Both outcomes
//! are logged as audit events with the bundle digest and counted in
//! `portcullis_policy_reloads_total{result}`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use portcullis_audit::AuditLog;
use portcullis_authz::Authorizer;

/// Called after a successful reload, e.g. to re-read per-route modes.
pub type OnReload = Box<dyn Fn() + Send>;

/// Starts the watcher thread and the SIGHUP listener.
pub fn start(
    dir: PathBuf,
    authorizer: Arc<Authorizer>,
    reloads: prometheus::IntCounterVec,
    audit: AuditLog,
    on_reload: OnReload,
) -> Result<(), String> {
    let (tx, rx) = mpsc::channel::<&'static str>();
    let file_tx = tx.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && ev
                .paths
                .iter()
                .any(|p| p.extension().is_some_and(|e| e == "rego" || e == "yaml"))
        {
            let _ = file_tx.send("file");
        }
    })
    .map_err(|e| e.to_string())?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| e.to_string())?;

    // SIGHUP: a tokio signal handler replaces the default (terminate) action.
    let hup_tx = tx;
    std::thread::Builder::new()
        .name("policy-sighup".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(mut hup) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                else {
                    tracing::error!("cannot listen for SIGHUP");
                    return;
                };
                while hup.recv().await.is_some() {
                    let _ = hup_tx.send("sighup");
                }
            });
        })
        .map_err(|e| e.to_string())?;

    std::thread::Builder::new()
        .name("policy-watch".into())
        .spawn(move || {
            let _watcher = watcher;
            while let Ok(trigger) = rx.recv() {
                // Debounce: editors write files in several steps.
                while rx.recv_timeout(Duration::from_millis(300)).is_ok() {}
                let before = authorizer.current().digest().to_owned();
                match authorizer.try_reload(&dir) {
                    Ok(digest) if digest == before => {}
                    Ok(digest) => {
                        reloads.with_label_values(&["success"]).inc();
                        tracing::warn!(event = "policy.reloaded", trigger, previous_digest = %before, digest = %digest, "policy bundle reloaded");
                        on_reload();
                        record(&audit, crate::audit::reload_event(trigger, &before, Ok(&digest)));
                    }
                    Err(e) => {
                        reloads.with_label_values(&["failure"]).inc();
                        tracing::error!(event = "policy.reload_rejected", trigger, digest = %before, error = %e, "policy bundle rejected; the previous bundle keeps serving");
                        let error = e.to_string();
                        record(&audit, crate::audit::reload_event(trigger, &before, Err(&error)));
                    }
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Emits from this thread (our own, not a pingora worker): blocking is fine here.
fn record(audit: &AuditLog, event: portcullis_audit::AuditEvent) {
    if let Err(e) = audit.emit_blocking(event) {
        tracing::error!(target: "portcullis::audit", action = "policy.reload", error = %e, "audit event not recorded");
    }
}
