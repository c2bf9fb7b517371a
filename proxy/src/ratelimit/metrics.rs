//! Rate-limit metrics. Labels are configured rule names, modes and store
//! kinds, never keys.

use prometheus::{IntCounterVec, Opts, Registry};

/// The rate limiter's Prometheus metrics. Create them in the proxy's
/// registry with [`RateLimitMetrics::try_new`]; clones share the counters.
#[derive(Clone, Debug)]
pub struct RateLimitMetrics {
    /// `portcullis_ratelimit_rejections_total{rule,mode}`: requests over a
    /// rule's limit; `mode="report_only"` counts those let through.
    pub(crate) rejections: IntCounterVec,
    /// `portcullis_ratelimit_store_errors_total{store}`.
    pub(crate) store_errors: IntCounterVec,
}

impl RateLimitMetrics {
    /// Creates the metrics and registers them in `registry`. Fails only on a
    /// programming error (or a second set in the same registry).
    pub fn try_new(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = Self {
            rejections: IntCounterVec::new(
                Opts::new(
                    "portcullis_ratelimit_rejections_total",
                    "Requests over a rate-limit rule, by rule and mode (enforce, report_only).",
                ),
                &["rule", "mode"],
            )?,
            store_errors: IntCounterVec::new(
                Opts::new(
                    "portcullis_ratelimit_store_errors_total",
                    "Rate-limit checks the store could not answer (settled by the rule's fail mode), by store.",
                ),
                &["store"],
            )?,
        };
        metrics.register(registry)?;
        Ok(metrics)
    }

    fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        let Self {
            rejections,
            store_errors,
        } = self;
        registry.register(Box::new(rejections.clone()))?;
        registry.register(Box::new(store_errors.clone()))?;
        Ok(())
    }
}
