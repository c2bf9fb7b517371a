//! The proxy's side of a policy reload (the target itself is
//! `portcullis_authz::reload::reload_target`, the certificate's is
//! `tls::CertStore::reload_target`): the per-route modes follow the new bundle, and
//! each reload or refusal is logged and written as an audit event with the digests.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use portcullis_audit::AuditLog;
use portcullis_authz::Authorizer;
use portcullis_authz::reload::{PolicyReload, reload_target};
use portcullis_reload::Target;

use crate::mode::RouteModes;

/// The policy bundle in `dir`, as the proxy reloads it.
pub fn policy_target(
    dir: PathBuf,
    authorizer: Arc<Authorizer>,
    modes: Arc<ArcSwap<RouteModes>>,
    audit: AuditLog,
) -> Target {
    let current = Arc::clone(&authorizer);
    reload_target(authorizer, dir, move |trigger, outcome| {
        let trigger = trigger.label();
        let event = match outcome {
            PolicyReload::Reloaded { previous, digest } => {
                modes.store(Arc::new(RouteModes::from_bundle(&current.current())));
                tracing::warn!(event = "policy.reloaded", trigger, previous_digest = %previous, digest = %digest, "policy bundle reloaded");
                crate::audit::reload_event(trigger, previous, Ok(digest))
            }
            PolicyReload::Refused { previous, error } => {
                tracing::error!(event = "policy.reload_rejected", trigger, digest = %previous, error = %error, "policy bundle rejected; the previous bundle keeps serving");
                crate::audit::reload_event(trigger, previous, Err(error))
            }
        };
        // The reload thread is ours, not a pingora worker: blocking is fine here.
        if let Err(e) = audit.emit_blocking(event) {
            tracing::error!(target: "portcullis::audit", action = "policy.reload", error = %e, "audit event not recorded");
        }
    })
}
