//! Prometheus metrics of sign-in (`portcullis_auth_*`), registered in the backend's
//! registry. Counters with known label values start at zero, so a first failure
//! shows as an increase and the dashboards have data from the start.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// Sign-in methods, as the `method` label spells them.
const METHODS: [&str; 3] = ["password", "backup_code", "oidc"];
/// Why a password sign-in failed, as the `reason` label spells them (OIDC failures
/// carry their problem slug).
const PASSWORD_FAILURES: [&str; 3] = ["invalid_credentials", "mfa_failed", "locked"];

pub(super) fn counter(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

/// Sign-in counters and timings.
pub(super) struct SignInMetrics {
    /// `portcullis_auth_lockouts_total{kind}` (`account`, `ip`).
    pub lockouts: IntCounterVec,
    /// `portcullis_auth_logins_total{result,method}` (`success`, `failure`, `locked`).
    logins: IntCounterVec,
    /// `portcullis_auth_login_failures_total{method,reason}`.
    failures: IntCounterVec,
    /// `portcullis_auth_login_duration_seconds{method,result}`: time to answer.
    duration: HistogramVec,
}

impl SignInMetrics {
    pub fn try_new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let lockouts = counter(
            registry,
            "portcullis_auth_lockouts_total",
            "Sign-in lockouts, by key kind.",
            &["kind"],
        )?;
        let logins = counter(
            registry,
            "portcullis_auth_logins_total",
            "Sign-in attempts, by result and method.",
            &["result", "method"],
        )?;
        let failures = counter(
            registry,
            "portcullis_auth_login_failures_total",
            "Failed sign-ins, by method and reason.",
            &["method", "reason"],
        )?;
        // Argon2id takes tens of milliseconds, the progressive delay up to 4 s, an
        // OIDC callback a round trip to the provider.
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "portcullis_auth_login_duration_seconds",
                "Time to answer a sign-in, by method and result.",
            )
            .buckets(vec![
                0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 4.0, 8.0,
            ]),
            &["method", "result"],
        )?;
        registry.register(Box::new(duration.clone()))?;
        for kind in ["account", "ip"] {
            lockouts.with_label_values(&[kind]);
        }
        for method in METHODS {
            for result in ["success", "failure", "locked"] {
                logins.with_label_values(&[result, method]);
            }
        }
        for method in ["password", "backup_code"] {
            for reason in PASSWORD_FAILURES {
                failures.with_label_values(&[method, reason]);
            }
        }
        Ok(Self {
            lockouts,
            logins,
            failures,
            duration,
        })
    }

    pub fn succeeded(&self, method: &str) {
        self.logins.with_label_values(&["success", method]).inc();
    }

    /// A refused sign-in; `locked` counts as its own result.
    pub fn failed(&self, method: &str, reason: &str) {
        let result = if reason == "locked" {
            "locked"
        } else {
            "failure"
        };
        self.logins.with_label_values(&[result, method]).inc();
        self.failures.with_label_values(&[method, reason]).inc();
    }

    /// How long a sign-in took to answer; `result` is `success`, `failure`,
    /// `challenge` (a code or a new password is needed) or `error`.
    pub fn answered(&self, method: &str, result: &str, took: std::time::Duration) {
        self.duration
            .with_label_values(&[method, result])
            .observe(took.as_secs_f64());
    }
}
