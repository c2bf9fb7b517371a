//! Prometheus counters of the identity module (registered once in the default registry).

pub(super) fn counter(name: &str, help: &str, labels: &[&str]) -> prometheus::IntCounterVec {
    let c = prometheus::IntCounterVec::new(prometheus::Opts::new(name, help), labels)
        .unwrap_or_else(|_| unreachable_metric());
    // A second registration (tests start several backends) keeps the first.
    let _ = prometheus::default_registry().register(Box::new(c.clone()));
    c
}

#[allow(
    clippy::panic,
    reason = "metric names are constants; an invalid one is a programming error caught by tests"
)]
fn unreachable_metric() -> prometheus::IntCounterVec {
    panic!("invalid metric definition")
}
