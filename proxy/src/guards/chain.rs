//! [`Guards`]: the ordered list of guards `request_filter` runs, and the
//! per-route modes they run in.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::{RequestGuard, Verdict, authn, csrf, policy, rate_limit};
use crate::context::{RequestCtx, RequestFacts};
use crate::mode::{Modes, RouteModes};
use crate::problem::Refusal;

/// The guards, in request order, and the modes they run in.
pub struct Guards {
    modes: Arc<ArcSwap<RouteModes>>,
    chain: Vec<Box<dyn RequestGuard>>,
}

impl Guards {
    /// The request path of DESIGN.md: pre-auth limit → authentication → CSRF
    /// → post-auth limit → policy.
    pub fn in_request_order(
        modes: Arc<ArcSwap<RouteModes>>,
        client_limit: rate_limit::ClientLimit,
        authenticate: authn::Authenticate,
        csrf: csrf::CsrfGuard,
        subject_limit: rate_limit::SubjectLimit,
        policy: policy::PolicyGuard,
    ) -> Self {
        Self {
            modes,
            chain: vec![
                Box::new(client_limit),
                Box::new(authenticate),
                Box::new(csrf),
                Box::new(subject_limit),
                Box::new(policy),
            ],
        }
    }

    /// The current modes of `route`.
    pub fn modes_for(&self, route: &str) -> Modes {
        self.modes.load().get(route)
    }

    /// Runs every guard; `Ok` means the request goes upstream (`ctx.passed`).
    pub async fn check(&self, req: &RequestFacts<'_>, ctx: &mut RequestCtx) -> Result<(), Refusal> {
        ctx.modes = self.modes_for(ctx.route_label());
        for guard in &self.chain {
            if let Verdict::Refuse(refusal) = guard.check(req, ctx).await {
                return Err(refusal);
            }
        }
        ctx.passed = true;
        Ok(())
    }
}
