//! Rego policy evaluation for Portcullis, on [regorus](https://github.com/microsoft/regorus).
//!
//! - [`PolicyBundle`]: a policy directory (`*.rego`, `*_test.rego`, `data.yaml`) compiled
//!   once; evaluates without locks ([`PolicyBundle::decide`], [`PolicyBundle::eval_value`])
//!   and runs its own Rego tests ([`PolicyBundle::run_tests`]).
//! - [`Decision`]: a route- or object-level verdict; anything but a well-formed policy
//!   result is a deny.
//! - [`Authorizer`]: the current bundle behind an [`ArcSwap`], replaced only by a bundle
//!   whose tests pass ([`Authorizer::try_reload`]).

pub mod embedded;
pub mod reload;

mod bundle;
mod compiled;
mod decision;
mod eval_error;
mod input_key;
mod route_index;
mod testing;

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;

pub use bundle::{BundleError, DEFAULT_EVAL_TIME_LIMIT, PolicyBundle};
pub use decision::{Decision, FAIL_CLOSED_RULE, Obligations};
pub use eval_error::EvalError;
pub use input_key::PolicyInput;
pub use testing::{CoverageSummary, FileCoverage, TestReport, TestResult};

/// At most this many failing test names are copied into [`BundleError::TestsFailed`].
const REPORTED_FAILURES: usize = 5;

/// Holds the policy bundle in force; readers never block, a reload is one pointer swap.
#[derive(Debug)]
pub struct Authorizer {
    current: ArcSwap<PolicyBundle>,
}

impl Authorizer {
    /// Starts serving `bundle`.
    ///
    /// The caller decides whether to run the bundle's tests first (`try_reload` always does).
    #[must_use]
    pub fn new(bundle: PolicyBundle) -> Self {
        Self {
            current: ArcSwap::from_pointee(bundle),
        }
    }

    /// The bundle in force; hold the `Arc` for as long as one request needs a stable view.
    #[must_use]
    pub fn current(&self) -> Arc<PolicyBundle> {
        self.current.load_full()
    }

    /// Evaluates `query` on the bundle in force; see [`PolicyBundle::decide`].
    #[must_use]
    pub fn decide<I: PolicyInput + ?Sized>(&self, query: &str, input: &I) -> Decision {
        self.current.load().decide(query, input)
    }

    /// Loads `dir` with `time_limit` and serves it, but only when every Rego test of the
    /// bundle passes: a bundle that fails its own tests never starts serving.
    pub fn load_tested(dir: &Path, time_limit: std::time::Duration) -> Result<Self, BundleError> {
        let bundle = PolicyBundle::load(dir)?.with_eval_time_limit(time_limit);
        check_tests(&bundle)?;
        tracing::info!(digest = bundle.digest(), dir = %dir.display(), "policy bundle loaded");
        Ok(Self::new(bundle))
    }

    /// Serves `bundle` from now on, unconditionally, and returns the previous one.
    pub fn replace(&self, bundle: PolicyBundle) -> Arc<PolicyBundle> {
        self.current.swap(Arc::new(bundle))
    }

    /// Loads `dir` (with the current bundle's evaluation time limit), runs its Rego tests
    /// and swaps it in only when it compiles and every test passes; returns the new digest.
    ///
    /// A bundle with the current digest is not tested or swapped again. On any error the
    /// current bundle keeps serving.
    pub fn try_reload(&self, dir: &Path) -> Result<String, BundleError> {
        let time_limit = self.current.load().eval_time_limit();
        let bundle = PolicyBundle::load(dir)?.with_eval_time_limit(time_limit);
        let digest = bundle.digest().to_owned();
        if digest == self.current.load().digest() {
            tracing::debug!(%digest, "policy bundle unchanged");
            return Ok(digest);
        }
        check_tests(&bundle)?;
        let old = self.replace(bundle);
        tracing::debug!(old = old.digest(), new = %digest, "policy bundle swapped");
        Ok(digest)
    }
}

/// Runs the bundle's Rego tests; every failing one is logged.
fn check_tests(bundle: &PolicyBundle) -> Result<(), BundleError> {
    let report = bundle.run_tests(false);
    if report.all_passed() {
        return Ok(());
    }
    let failing: Vec<&TestResult> = report.results.iter().filter(|r| !r.passed).collect();
    for result in &failing {
        tracing::warn!(
            package = %result.package,
            test = %result.name,
            error = result.error.as_deref().unwrap_or_default(),
            "policy test failed"
        );
    }
    Err(BundleError::TestsFailed {
        failed: failing.len(),
        total: report.results.len(),
        first_failures: failing
            .iter()
            .take(REPORTED_FAILURES)
            .map(|r| format!("{}.{}", r.package, r.name))
            .collect(),
    })
}
