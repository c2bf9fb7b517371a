//! Prometheus counters of the identity module, registered in the process's registry.

pub(super) fn counter(
    registry: &prometheus::Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<prometheus::IntCounterVec, prometheus::Error> {
    let c = prometheus::IntCounterVec::new(prometheus::Opts::new(name, help), labels)
        .unwrap_or_else(|_| unreachable_metric());
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

#[allow(
    clippy::panic,
    reason = "metric names are constants; an invalid one is a programming error caught by tests"
)]
fn unreachable_metric() -> prometheus::IntCounterVec {
    panic!("invalid metric definition")
}
