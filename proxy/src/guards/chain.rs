//! [`Guards`]: the ordered list of guards `request_filter` runs, and the
//! per-route modes they run in.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::{RequestGuard, Verdict, authn, csrf, policy, rate_limit};
use crate::context::{RequestCtx, RequestFacts};
use crate::mode::RouteModes;
use crate::problem::Refusal;

/// The guards, in request order, and the modes they run in.
pub struct Guards {
    modes: Arc<ArcSwap<RouteModes>>,
    client_limit: rate_limit::ClientLimit,
    authenticate: authn::Authenticate,
    csrf: csrf::CsrfGuard,
    subject_limit: rate_limit::SubjectLimit,
    policy: policy::PolicyGuard,
    class_limit: rate_limit::ClassLimit,
}

impl Guards {
    /// The request path of DESIGN.md: pre-auth limit → authentication → CSRF
    /// → post-auth limit → policy → the limits of the class the policy named.
    pub fn in_request_order(
        modes: Arc<ArcSwap<RouteModes>>,
        client_limit: rate_limit::ClientLimit,
        authenticate: authn::Authenticate,
        csrf: csrf::CsrfGuard,
        subject_limit: rate_limit::SubjectLimit,
        policy: policy::PolicyGuard,
        class_limit: rate_limit::ClassLimit,
    ) -> Self {
        Self {
            modes,
            client_limit,
            authenticate,
            csrf,
            subject_limit,
            policy,
            class_limit,
        }
    }

    /// Runs every guard in order, with this request's view of the route's modes;
    /// `Ok` means the request goes upstream (`ctx.passed`).
    pub async fn check(&self, req: &RequestFacts<'_>, ctx: &mut RequestCtx) -> Result<(), Refusal> {
        let Self {
            modes,
            client_limit,
            authenticate,
            csrf,
            subject_limit,
            policy,
            class_limit,
        } = self;
        ctx.modes = modes.load().get(ctx.route_label());
        run(client_limit, req, ctx).await?;
        run(authenticate, req, ctx).await?;
        run(csrf, req, ctx).await?;
        run(subject_limit, req, ctx).await?;
        run(policy, req, ctx).await?;
        run(class_limit, req, ctx).await?;
        ctx.passed = true;
        Ok(())
    }

    /// The proxy's own endpoints that browsers call without credentials or CSRF token
    /// (the CSP report collector): the pre-auth limit, the policy for an anonymous
    /// caller (which admits the endpoint and names its rate-limit class) and that
    /// class's limits. Credentials the request carries are not looked at.
    pub async fn check_anonymous(
        &self,
        req: &RequestFacts<'_>,
        ctx: &mut RequestCtx,
    ) -> Result<(), Refusal> {
        ctx.modes = self.modes.load().get(ctx.route_label());
        ctx.principal = None;
        run(&self.client_limit, req, ctx).await?;
        run(&self.policy, req, ctx).await?;
        run(&self.class_limit, req, ctx).await?;
        Ok(())
    }
}

async fn run(
    guard: &impl RequestGuard,
    req: &RequestFacts<'_>,
    ctx: &mut RequestCtx,
) -> Result<(), Refusal> {
    match guard.check(req, ctx).await {
        Verdict::Continue => Ok(()),
        Verdict::Refuse(refusal) => Err(refusal),
    }
}
