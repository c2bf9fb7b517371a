//! The controls on the request path, each behind the one-phase
//! [`RequestGuard`] trait (River's "single-serving" modifiers), run by the
//! gateway's `request_filter` in the order of DESIGN.md:
//!
//! 1. [`rate_limit::ClientLimit`]: pre-auth rate limit (client IP, route);
//! 2. [`authn::Authenticate`]: bearer JWT or session cookie, revoked sessions refused;
//! 3. [`csrf::CsrfGuard`]: CSRF for cookie-authenticated unsafe methods;
//! 4. [`rate_limit::SubjectLimit`]: post-auth rate limit (subject);
//! 5. [`policy::PolicyGuard`]: the policy decision (regorus).
//!
//! The sign-in account's limit ([`rate_limit::LoginAccountLimit`]) runs later,
//! once the body has been read. Each control has a per-route `enforce |
//! report_only` mode ([`crate::mode::RouteModes`]). Refusals, and would-be
//! refusals of report-only controls, are added to the request's audit events.

pub mod authn;
mod chain;
pub mod csrf;
pub mod policy;
pub mod rate_limit;

pub use chain::Guards;

use crate::context::{RequestCtx, RequestFacts};
use crate::problem::Refusal;

/// What a guard decided.
pub enum Verdict {
    /// On to the next guard.
    Continue,
    /// Answer locally with this refusal; no further guard runs.
    Refuse(Refusal),
}

/// One control of `request_filter`. It reads the request, may record what it
/// established in `ctx` (the principal, rate-limit headers, the decision) and
/// its audit events in `ctx.audit`.
///
/// [`Guards`] calls each guard through its concrete type (no `dyn`, no boxed future):
/// the chain runs on every request.
pub trait RequestGuard: Send + Sync {
    fn check(
        &self,
        req: &RequestFacts<'_>,
        ctx: &mut RequestCtx,
    ) -> impl Future<Output = Verdict> + Send;
}
