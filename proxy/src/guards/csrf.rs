//! The CSRF guard: runs [`crate::csrf`]'s check on unsafe requests that ride on the
//! browser's session (authenticated by the access cookie, or carrying a session cookie),
//! and the Fetch Metadata part on the OIDC logout navigation; counts failures by reason
//! and mode, and refuses with 403 unless the route's CSRF mode is `report_only`.

use portcullis_audit::{Category, Level};
use prometheus::{IntCounterVec, Opts, Registry};

use super::{RequestGuard, Verdict};
use crate::context::{RequestCtx, RequestFacts, outcome};
use portcullis_contract::cookies::{ACCESS_COOKIE, REFRESH_COOKIE, cookie};
use portcullis_contract::paths::OIDC_LOGOUT;

use crate::csrf::{CsrfSettings, check_fetch_site, unsafe_method};
use crate::problem::{Problem, Refusal};

/// CSRF metrics.
#[derive(Clone)]
pub struct CsrfMetrics {
    /// `portcullis_csrf_rejections_total{reason,mode}`.
    pub rejections: IntCounterVec,
}

impl CsrfMetrics {
    pub fn try_new(registry: &Registry) -> prometheus::Result<Self> {
        let rejections = IntCounterVec::new(
            Opts::new(
                "portcullis_csrf_rejections_total",
                "Requests failing the CSRF check, by reason and mode.",
            ),
            &["reason", "mode"],
        )?;
        registry.register(Box::new(rejections.clone()))?;
        Ok(Self { rejections })
    }
}

/// The CSRF guard.
pub struct CsrfGuard {
    pub settings: CsrfSettings,
    pub metrics: CsrfMetrics,
}

impl RequestGuard for CsrfGuard {
    async fn check(&self, req: &RequestFacts<'_>, ctx: &mut RequestCtx) -> Verdict {
        // A request rides on the browser's session when it was authenticated by the
        // access cookie, or carries a session cookie at all: once the short-lived access
        // cookie has expired, `POST /auth/logout` and `/auth/refresh` look anonymous
        // here but still act on the refresh cookie.
        let session_bound = match &ctx.principal {
            Some(p) => p.via_cookie,
            None => [ACCESS_COOKIE, REFRESH_COOKIE]
                .iter()
                .any(|name| cookie(req.headers, name).is_some()),
        };
        if !session_bound {
            return Verdict::Continue;
        }
        let result = if unsafe_method(req.method) {
            self.settings.check(req.headers, req.host)
        } else if req.path.eq_ignore_ascii_case(OIDC_LOGOUT) {
            check_fetch_site(req.headers)
        } else {
            return Verdict::Continue;
        };
        let Err(failure) = result else {
            return Verdict::Continue;
        };
        let mode = ctx.modes.csrf;
        self.metrics
            .rejections
            .with_label_values(&[failure.code(), mode.label()])
            .inc();
        tracing::warn!(target: "portcullis::decision", request_id = ctx.request_id.as_str(), reason = failure.code(), mode = mode.label(), route = ctx.route_label(), "CSRF check failed");
        let enforced = mode.enforced();
        let event = ctx
            .info(req.user_agent())
            .event(Category::Security, "csrf.reject", outcome(enforced))
            .level(Level::Warning)
            .detail("reason", failure.code())
            .detail("mode", mode.label())
            .detail("method", req.method.as_str());
        let event = match &ctx.principal {
            Some(p) => p.annotate(event),
            None => event,
        };
        ctx.audit.push(event);
        if !enforced {
            return Verdict::Continue;
        }
        Verdict::Refuse(Refusal::new(Problem::new(
            403,
            "csrf",
            "Cross-site request refused",
            "The request did not come from this application's pages",
        )))
    }
}
