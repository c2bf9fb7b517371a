//! The CSRF guard: runs [`crate::csrf`]'s check on cookie-authenticated
//! unsafe requests, counts failures by reason and mode, and refuses with 403
//! unless the route's CSRF mode is `report_only`.

use portcullis_audit::{Category, Level};
use prometheus::{IntCounterVec, Opts, Registry};

use super::{RequestGuard, Verdict};
use crate::context::{RequestCtx, RequestFacts, outcome};
use crate::csrf::{CsrfSettings, unsafe_method};
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
        let Some(p) = &ctx.principal else {
            return Verdict::Continue;
        };
        if !p.via_cookie || !unsafe_method(req.method) {
            return Verdict::Continue;
        }
        let Err(failure) = self.settings.check(req.headers, req.host) else {
            return Verdict::Continue;
        };
        let mode = ctx.modes.csrf;
        self.metrics
            .rejections
            .with_label_values(&[failure.code(), mode.label()])
            .inc();
        tracing::warn!(target: "portcullis::decision", request_id = ctx.request_id.as_str(), reason = failure.code(), mode = mode.label(), route = ctx.route_label(), "CSRF check failed");
        let enforced = mode.enforced();
        let event = p.annotate(
            ctx.info(req.user_agent())
                .event(Category::Security, "csrf.reject", outcome(enforced))
                .level(Level::Warning)
                .detail("reason", failure.code())
                .detail("mode", mode.label())
                .detail("method", req.method.as_str()),
        );
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
