//! Prometheus metrics. Every metric carries a constant `emitter` label, so the proxy's and the
//! backend's audit logs can register into one registry (`portcullis up`).

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// The audit metrics of one emitter.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    /// `portcullis_audit_spool_bytes`: bytes of segment files on disk.
    pub spool_bytes: IntGauge,
    /// `portcullis_audit_spool_events`: events (checkpoints included) in the spool on disk.
    pub spool_events: IntGauge,
    /// `portcullis_audit_sink_lag_events{sink}`: events written but not yet acknowledged.
    pub sink_lag: IntGaugeVec,
    /// `portcullis_audit_delivery_errors_total{sink}`: failed delivery attempts.
    pub delivery_errors: prometheus::IntCounterVec,
    /// `portcullis_audit_events_total{category}`: events written to the spool
    /// (checkpoints excluded).
    pub events: IntCounterVec,
    /// `portcullis_audit_emit_failures_total{reason}`: events the spool did not take.
    pub emit_failures: IntCounterVec,
    /// `portcullis_audit_spool_max_bytes`: the spool's configured bound.
    pub spool_max_bytes: IntGauge,
}

impl Metrics {
    /// Metrics for `emitter`, not yet registered anywhere.
    pub(crate) fn new(emitter: &str) -> Result<Self, prometheus::Error> {
        let opts = |name: &str, help: &str| Opts::new(name, help).const_label("emitter", emitter);
        Ok(Self {
            spool_bytes: IntGauge::with_opts(opts(
                "portcullis_audit_spool_bytes",
                "Bytes of audit events held in the spool on disk.",
            ))?,
            spool_events: IntGauge::with_opts(opts(
                "portcullis_audit_spool_events",
                "Audit events held in the spool on disk, checkpoints included.",
            ))?,
            sink_lag: IntGaugeVec::new(
                opts(
                    "portcullis_audit_sink_lag_events",
                    "Audit events spooled but not yet acknowledged by the sink.",
                ),
                &["sink"],
            )?,
            delivery_errors: IntCounterVec::new(
                opts(
                    "portcullis_audit_delivery_errors_total",
                    "Failed attempts to deliver a batch of audit events to the sink.",
                ),
                &["sink"],
            )?,
            events: IntCounterVec::new(
                opts(
                    "portcullis_audit_events_total",
                    "Audit events written to the spool, by category.",
                ),
                &["category"],
            )?,
            emit_failures: IntCounterVec::new(
                opts(
                    "portcullis_audit_emit_failures_total",
                    "Audit events the spool did not take (the audited action was refused, or the event is lost), by reason.",
                ),
                &["reason"],
            )?,
            spool_max_bytes: IntGauge::with_opts(opts(
                "portcullis_audit_spool_max_bytes",
                "The most bytes the spool may hold on disk (its configured bound).",
            ))?,
        })
    }

    /// Registers every metric into `registry`.
    pub(crate) fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        let Self {
            spool_bytes,
            spool_events,
            sink_lag,
            delivery_errors,
            events,
            emit_failures,
            spool_max_bytes,
        } = self;
        type Boxed = Box<dyn prometheus::core::Collector>;
        fn twice<C: prometheus::core::Collector + Clone + 'static>(c: &C) -> (Boxed, Boxed) {
            (Box::new(c.clone()), Box::new(c.clone()))
        }
        let collectors = [
            twice(spool_bytes),
            twice(spool_events),
            twice(sink_lag),
            twice(delivery_errors),
            twice(events),
            twice(emit_failures),
            twice(spool_max_bytes),
        ];
        let mut registered: Vec<Boxed> = Vec::new();
        for (collector, copy) in collectors {
            if let Err(e) = registry.register(collector) {
                // All or nothing, so a retry does not trip over half a registration.
                for done in registered {
                    let _ = registry.unregister(done);
                }
                return Err(e);
            }
            registered.push(copy);
        }
        Ok(())
    }
}
