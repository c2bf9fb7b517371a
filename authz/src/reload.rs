//! The policy bundle as a target of the process's reload service: `*.rego` and
//! `*.yaml` edits in the bundle folder (and SIGHUP) load the folder again, run its Rego
//! tests and swap it in only when they pass ([`Authorizer::try_reload`]); a refused
//! bundle leaves the running one in force. Proxy and backend use the same target, so
//! both layers reload the same way.

use std::path::PathBuf;
use std::sync::Arc;

use portcullis_reload::{Outcome, Rejected, Target, Trigger};

use crate::Authorizer;

/// What a reload attempt did, for the caller's logs, audit events and derived state.
#[derive(Debug)]
pub enum PolicyReload<'a> {
    /// A new bundle is in force.
    Reloaded { previous: &'a str, digest: &'a str },
    /// The new bundle was refused; `previous` keeps serving.
    Refused { previous: &'a str, error: &'a str },
}

/// The reload target of `authorizer`'s bundle in `dir`; `observe` hears of every
/// reload and refusal (not of unchanged bundles), after the swap.
pub fn reload_target(
    authorizer: Arc<Authorizer>,
    dir: PathBuf,
    mut observe: impl FnMut(Trigger, PolicyReload<'_>) + Send + 'static,
) -> Target {
    let watched = dir.clone();
    Target::new("policy", move |trigger| {
        let before = authorizer.current().digest().to_owned();
        match authorizer.try_reload(&dir) {
            Ok(digest) if digest == before => Ok(Outcome::Unchanged),
            Ok(digest) => {
                observe(
                    trigger,
                    PolicyReload::Reloaded {
                        previous: &before,
                        digest: &digest,
                    },
                );
                Ok(Outcome::Reloaded { digest })
            }
            Err(e) => {
                let error = e.to_string();
                observe(
                    trigger,
                    PolicyReload::Refused {
                        previous: &before,
                        error: &error,
                    },
                );
                Err(Rejected(error))
            }
        }
    })
    .watch_dir(watched, |p| {
        p.extension().is_some_and(|e| e == "rego" || e == "yaml")
    })
}
