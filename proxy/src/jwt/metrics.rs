//! JWT and JWKS metrics. Labels are reason codes and configured issuer
//! labels, never token contents.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

/// The verifier's Prometheus metrics. Create them in the proxy's registry
/// with [`JwtMetrics::try_new`]; clones share the same counters.
#[derive(Clone, Debug)]
pub struct JwtMetrics {
    /// `portcullis_jwt_rejections_total{reason}`: `reason` is [`super::JwtError::reason`].
    pub(crate) rejections: IntCounterVec,
    /// `portcullis_jwt_accepted_total{issuer}`.
    pub(crate) accepted: IntCounterVec,
    /// `portcullis_jwks_fetches_total{issuer,result}`, `result` = `ok` | `error`.
    pub(crate) fetches: IntCounterVec,
    /// `portcullis_jwks_changes_total{issuer}`: key sets whose kids changed
    /// (the first successful load included).
    pub(crate) changes: IntCounterVec,
    /// `portcullis_jwks_keys{issuer}`: usable keys in the cached set.
    pub(crate) keys: IntGaugeVec,
}

impl JwtMetrics {
    /// Creates the metrics and registers them in `registry`. Fails only on a
    /// programming error (or a second set in the same registry).
    pub fn try_new(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = Self {
            rejections: IntCounterVec::new(
                Opts::new(
                    "portcullis_jwt_rejections_total",
                    "Bearer tokens refused, by reason.",
                ),
                &["reason"],
            )?,
            accepted: IntCounterVec::new(
                Opts::new(
                    "portcullis_jwt_accepted_total",
                    "Bearer tokens accepted (verified or served from the verified-token cache), by issuer.",
                ),
                &["issuer"],
            )?,
            fetches: IntCounterVec::new(
                Opts::new(
                    "portcullis_jwks_fetches_total",
                    "JWKS fetch attempts, by issuer and result (ok, error).",
                ),
                &["issuer", "result"],
            )?,
            changes: IntCounterVec::new(
                Opts::new(
                    "portcullis_jwks_changes_total",
                    "Fetched key sets whose key ids differ from the cached set, by issuer.",
                ),
                &["issuer"],
            )?,
            keys: IntGaugeVec::new(
                Opts::new(
                    "portcullis_jwks_keys",
                    "Usable verification keys in the cached key set, by issuer.",
                ),
                &["issuer"],
            )?,
        };
        metrics.register(registry)?;
        Ok(metrics)
    }

    fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        let Self {
            rejections,
            accepted,
            fetches,
            changes,
            keys,
        } = self;
        registry.register(Box::new(rejections.clone()))?;
        registry.register(Box::new(accepted.clone()))?;
        registry.register(Box::new(fetches.clone()))?;
        registry.register(Box::new(changes.clone()))?;
        registry.register(Box::new(keys.clone()))?;
        Ok(())
    }
}
