//! The proxy's policy reload target: `portcullis_authz::reload::reload_target` (tests
//! first, logged and audited), with the per-route modes re-read from each new bundle.
//! The certificate's target is `tls::CertStore::reload_target`.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use portcullis_audit::AuditLog;
use portcullis_authz::Authorizer;
use portcullis_authz::reload::reload_target;
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
    reload_target(authorizer, dir, "proxy", audit, move || {
        modes.store(Arc::new(RouteModes::from_bundle(&current.current())));
    })
}
