//! An `opa test` style runner for the `test_*` rules of a bundle's `*_test.rego` files.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use regorus::{Engine, Value};
use serde::Serialize;

use crate::bundle::{PolicyBundle, set_time_limit};
use crate::decision::{classify, to_json};

/// Time limit for each single test rule (tests may do more work than a request decision).
const TEST_TIME_LIMIT: Duration = Duration::from_secs(5);

/// Outcome of one `test_*` rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestResult {
    /// Dotted package of the test file, e.g. `portcullis.http_test`.
    pub package: String,
    /// Rule name, e.g. `test_login_is_public`.
    pub name: String,
    /// `true` only when the rule evaluated to `true`.
    pub passed: bool,
    /// Why the test failed (`false`, undefined, or the evaluation error); `None` when passed.
    pub error: Option<String>,
}

/// Line coverage of one non-test policy file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileCoverage {
    /// The file's path as loaded (`dir` joined with the file name).
    pub path: String,
    /// 1-based lines with an expression that was evaluated.
    pub covered: Vec<u32>,
    /// 1-based lines with expressions, none of which was evaluated.
    pub not_covered: Vec<u32>,
    /// `covered / (covered + not_covered)` in percent; 100 for a file without expressions.
    pub percent: f64,
}

/// Line coverage of the serving (non-test) policy files after a test run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CoverageSummary {
    /// One entry per non-test policy file, in load order.
    pub files: Vec<FileCoverage>,
    /// Covered lines over all files.
    pub covered_lines: usize,
    /// Lines with expressions over all files.
    pub total_lines: usize,
    /// `covered_lines / total_lines` in percent; 100 when there are no lines.
    pub percent: f64,
}

/// Result of [`PolicyBundle::run_tests`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestReport {
    /// One entry per `test_*` rule, in file and source order.
    pub results: Vec<TestResult>,
    /// Present when coverage was requested.
    pub coverage: Option<CoverageSummary>,
}

impl TestReport {
    /// Number of passing tests.
    #[must_use]
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed).count()
    }

    /// Number of failing tests.
    #[must_use]
    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }

    /// `true` when no test failed (also when there are no tests).
    #[must_use]
    pub fn all_passed(&self) -> bool {
        self.results.iter().all(|r| r.passed)
    }

    /// Human-readable report: `PASS package.name` / `FAIL package.name: error` per test, then
    /// `N passed, M failed`, then (with coverage) one `path 93.1% (not covered: 12, 40)` line
    /// per policy file and a `total` line.
    #[must_use]
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        for result in &self.results {
            let TestResult {
                package,
                name,
                passed,
                error,
            } = result;
            if *passed {
                let _ = writeln!(out, "PASS {package}.{name}");
            } else {
                let error = error.as_deref().unwrap_or("failed").trim();
                let error = error.replace('\n', "\n    ");
                let _ = writeln!(out, "FAIL {package}.{name}: {error}");
            }
        }
        let _ = writeln!(out, "{} passed, {} failed", self.passed(), self.failed());
        if let Some(coverage) = &self.coverage {
            for file in &coverage.files {
                let _ = write!(out, "{} {:.1}%", file.path, file.percent);
                if !file.not_covered.is_empty() {
                    let lines: Vec<String> = file.not_covered.iter().map(u32::to_string).collect();
                    let _ = write!(out, " (not covered: {})", lines.join(", "));
                }
                out.push('\n');
            }
            let _ = writeln!(
                out,
                "total {:.1}% ({} of {} lines)",
                coverage.percent, coverage.covered_lines, coverage.total_lines
            );
        }
        out
    }

    /// Machine-readable report:
    /// `{"passed": N, "failed": M, "results": [{package, name, passed, error}],
    /// "coverage": null | {percent, covered_lines, total_lines, files: [{path, percent,
    /// covered, not_covered}]}}`.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        let Self { results, coverage } = self;
        serde_json::json!({
            "passed": self.passed(),
            "failed": self.failed(),
            "results": results,
            "coverage": coverage,
        })
    }
}

impl PolicyBundle {
    /// Evaluates every `test_*` rule of the bundle's `*_test.rego` files against all modules
    /// and the data document (like `opa test`). A test passes only when it evaluates to
    /// `true`. With `coverage`, line coverage of the non-test policy files is gathered over
    /// the whole run. Each test has a time limit of 5 s.
    #[must_use]
    pub fn run_tests(&self, coverage: bool) -> TestReport {
        let mut engine = self.test_engine();
        set_time_limit(&mut engine, TEST_TIME_LIMIT);
        if coverage {
            engine.set_enable_coverage(true);
        }
        let results = self
            .tests()
            .iter()
            .map(|test| {
                let error = match engine.eval_rule(test.query.clone()) {
                    Ok(Value::Bool(true)) => None,
                    Ok(Value::Undefined) => {
                        Some("undefined (a body expression was false or undefined)".to_owned())
                    }
                    Ok(other) => Some(match to_json(&other) {
                        Ok(json) => format!("evaluated to {json}, not true"),
                        Err(err) => err.to_string(),
                    }),
                    Err(err) => Some(classify(err).to_string()),
                };
                TestResult {
                    package: test.package.clone(),
                    name: test.name.clone(),
                    passed: error.is_none(),
                    error,
                }
            })
            .collect();
        let coverage = coverage.then(|| self.coverage_summary(&engine));
        TestReport { results, coverage }
    }

    fn coverage_summary(&self, engine: &Engine) -> CoverageSummary {
        let mut by_file: BTreeMap<String, (BTreeSet<u32>, BTreeSet<u32>)> = BTreeMap::new();
        if let Ok(report) = engine.get_coverage_report() {
            for file in report.files {
                by_file.insert(file.path, (file.covered, file.not_covered));
            }
        }
        let mut files = Vec::new();
        for path in self.policy_files() {
            let path = path.display().to_string();
            let (covered, not_covered) = match by_file.remove(&path) {
                Some(lines) => lines,
                // regorus reports only files of which something was evaluated.
                None => (BTreeSet::new(), self.coverable_lines(&path)),
            };
            files.push(FileCoverage {
                percent: percent(covered.len(), covered.len() + not_covered.len()),
                path,
                covered: covered.into_iter().collect(),
                not_covered: not_covered.into_iter().collect(),
            });
        }
        let covered_lines = files.iter().map(|f| f.covered.len()).sum();
        let total_lines = files
            .iter()
            .map(|f| f.covered.len() + f.not_covered.len())
            .sum();
        CoverageSummary {
            files,
            covered_lines,
            total_lines,
            percent: percent(covered_lines, total_lines),
        }
    }

    /// Every line of `path` that holds an expression, found by evaluating the file's package
    /// on a scratch engine with coverage on: regorus reports each such line as covered or not
    /// covered, so their union is the set of coverable lines.
    fn coverable_lines(&self, path: &str) -> BTreeSet<u32> {
        let mut lines = BTreeSet::new();
        let mut probe = self.serving_engine();
        let Ok(packages) = probe.get_policy_package_components() else {
            return lines;
        };
        let Some(package) = packages.iter().find(|p| p.source_file == path) else {
            return lines;
        };
        probe.set_enable_coverage(true);
        probe.set_input(Value::new_object());
        let query = crate::bundle::rule_path(&package.components);
        // Errors are fine here: whatever was reached is recorded.
        let _ = probe.eval_query(query, false);
        if let Ok(report) = probe.get_coverage_report() {
            for file in report.files.into_iter().filter(|f| f.path == path) {
                lines.extend(file.covered);
                lines.extend(file.not_covered);
            }
        }
        lines
    }
}

#[allow(clippy::cast_precision_loss, reason = "line counts are far below 2^52")]
fn percent(part: usize, total: usize) -> f64 {
    if total == 0 {
        100.0
    } else {
        part as f64 * 100.0 / total as f64
    }
}
