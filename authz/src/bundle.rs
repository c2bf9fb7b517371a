//! Loading and compiling a policy directory into an immutable [`PolicyBundle`].

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use regorus::Engine;
use regorus::unstable::{Expr, Rule, RuleHead};
use regorus::utils::limits::ExecutionTimerConfig;
use serde::Deserialize as _;
use sha2::{Digest as _, Sha256};

use crate::compiled::{CompiledDecisions, NotCompiled, iterating_else_rules};
use crate::input_key::InputKey;
use crate::route_index;

/// Time limit applied to every evaluation of a bundle unless
/// [`PolicyBundle::with_eval_time_limit`] sets another one.
pub const DEFAULT_EVAL_TIME_LIMIT: Duration = Duration::from_millis(100);

/// Interpreter work units between two clock reads of the execution timer.
const TIMER_CHECK_INTERVAL: u32 = 32;

/// Name of the optional data document in a policy directory.
const DATA_FILE: &str = "data.yaml";

/// Suffix of Rego files that hold `test_*` rules instead of serving policy.
const TEST_SUFFIX: &str = "_test.rego";

/// Why a policy directory could not be turned into a [`PolicyBundle`].
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The directory itself could not be listed.
    #[error("cannot read policy directory {}: {source}", dir.display())]
    ReadDir {
        /// The directory given to [`PolicyBundle::load`].
        dir: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A policy or data file could not be read (or is not UTF-8).
    #[error("cannot read {}: {source}", path.display())]
    ReadFile {
        /// The file that failed.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The directory holds no serving policy (only tests, or nothing at all).
    #[error("no *.rego policy files (other than *_test.rego) in {}", dir.display())]
    NoPolicies {
        /// The directory given to [`PolicyBundle::load`].
        dir: PathBuf,
    },
    /// A Rego file failed to parse, or the bundle failed to compile.
    ///
    /// `message` is regorus' own report, which quotes the offending source line.
    #[error("{}", render_policy_error(path, *line, message))]
    Policy {
        /// The Rego file at fault (the directory when regorus names no file).
        path: PathBuf,
        /// 1-based line of the error when regorus reports one.
        line: Option<u32>,
        /// The full error text.
        message: String,
    },
    /// `data.yaml` is not valid YAML or is not a mapping.
    #[error("{}: {message}", path.display())]
    Data {
        /// Path of the data file.
        path: PathBuf,
        /// What is wrong, with line and column when the YAML parser knows them.
        message: String,
    },
    /// The bundle compiled but its Rego tests did not all pass (only from
    /// [`crate::Authorizer::try_reload`]).
    #[error("{failed} of {total} policy tests failed: {}", first_failures.join("; "))]
    TestsFailed {
        /// Number of failing tests.
        failed: usize,
        /// Number of tests run.
        total: usize,
        /// `package.test_name` of (at most five of) the failing tests.
        first_failures: Vec<String>,
    },
}

/// One `test_*` rule found in a `*_test.rego` file.
#[derive(Debug, Clone)]
pub(crate) struct TestCase {
    /// Dotted package name, e.g. `portcullis.http_test`.
    pub(crate) package: String,
    /// Rule name, e.g. `test_login_is_public`.
    pub(crate) name: String,
    /// Rule path to evaluate, e.g. `data.portcullis.http_test.test_login_is_public`.
    pub(crate) query: String,
}

/// A compiled, immutable set of Rego policies plus their data document.
///
/// Built once by [`PolicyBundle::load`]; evaluation ([`PolicyBundle::decide`],
/// [`PolicyBundle::eval_value`]) takes `&self` and needs no lock, so one bundle can serve
/// every thread (share it through [`crate::Authorizer`]).
pub struct PolicyBundle {
    dir: PathBuf,
    digest: String,
    policy_files: Vec<PathBuf>,
    /// Serving engine: non-test modules + data, already prepared (analysed and scheduled).
    engine: Engine,
    /// Test engine: every module + data, already prepared.
    test_engine: Engine,
    /// The serving `decision` rules as bytecode (the fast path of `decide`).
    compiled: CompiledDecisions,
    tests: Vec<TestCase>,
    eval_time_limit: Duration,
}

impl fmt::Debug for PolicyBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyBundle")
            .field("dir", &self.dir)
            .field("digest", &self.digest)
            .field("policy_files", &self.policy_files)
            .field("tests", &self.tests.len())
            .field("eval_time_limit", &self.eval_time_limit)
            .finish_non_exhaustive()
    }
}

impl PolicyBundle {
    /// Loads and compiles every `*.rego` file directly inside `dir` (not recursive; names
    /// starting with `.` are skipped, files are taken in name order) and the optional
    /// `data.yaml`, whose top-level mapping becomes the `data` document.
    ///
    /// Files ending in `_test.rego` are test files: they are compiled (so syntax errors
    /// are reported here) but only used by [`PolicyBundle::run_tests`], never for serving.
    /// Policies are parsed as Rego v1. Errors name the file and, when known, the line.
    /// Evaluations get [`DEFAULT_EVAL_TIME_LIMIT`].
    pub fn load(dir: &Path) -> Result<Self, BundleError> {
        let eval_time_limit = DEFAULT_EVAL_TIME_LIMIT;
        let files = read_bundle_files(dir)?;
        let digest = digest_files(&files);

        let mut base = Engine::new();
        base.set_rego_v0(false);

        let mut policy_files = Vec::new();
        let mut test_sources = Vec::new();
        let mut data_file = None;
        for file in &files {
            if file.name == DATA_FILE {
                data_file = Some(file);
            } else if file.name.ends_with(TEST_SUFFIX) {
                test_sources.push(file);
            } else {
                add_policy(&mut base, file)?;
                policy_files.push(file.path.clone());
            }
        }
        if policy_files.is_empty() {
            return Err(BundleError::NoPolicies {
                dir: dir.to_path_buf(),
            });
        }
        if let Some(file) = data_file {
            add_data(&mut base, file)?;
        }

        let mut test_engine = base.clone();
        for file in &test_sources {
            add_policy(&mut test_engine, file)?;
        }
        let tests = discover_tests(&mut test_engine, policy_files.len(), dir)?;

        let mut engine = base;
        set_time_limit(&mut engine, eval_time_limit);
        prepare(&mut engine, dir)?;
        prepare(&mut test_engine, dir)?;
        let decisions = find_rules(&mut engine, 0, "decision", dir)?;
        let unsafe_rules = {
            let packages: Vec<String> = engine
                .get_policy_package_components()
                .map_err(|err| policy_error(&format!("{err:#}"), dir))?
                .iter()
                .map(|p| rule_path(&p.components))
                .collect();
            iterating_else_rules(engine.get_modules(), &packages)
        };
        let keys = decision_keys(&files, &decisions);
        let (compiled, refused) =
            CompiledDecisions::compile(&engine, &decisions, &unsafe_rules, &keys, eval_time_limit);
        for NotCompiled { rule, reason } in refused {
            tracing::warn!(rule, reason, dir = %dir.display(),
                "policy rule not compiled to bytecode; it is evaluated by the slower interpreter");
        }

        Ok(Self {
            dir: dir.to_path_buf(),
            digest,
            policy_files,
            engine,
            test_engine,
            compiled,
            tests,
            eval_time_limit,
        })
    }

    /// Returns a copy of this bundle whose evaluations are cut off after `limit`
    /// (an evaluation that runs out of time is a deny for [`PolicyBundle::decide`]).
    #[must_use]
    pub fn with_eval_time_limit(mut self, limit: Duration) -> Self {
        set_time_limit(&mut self.engine, limit);
        self.compiled = self.compiled.with_time_limit(limit);
        self.eval_time_limit = limit;
        self
    }

    /// Whether `rule` is evaluated as compiled bytecode (else by the interpreter).
    #[must_use]
    pub fn is_compiled(&self, rule: &str) -> bool {
        self.compiled.has(rule)
    }

    /// Hex SHA-256 identifying the bundle's content: over the file names in order, each
    /// followed by a NUL byte, its length (8 bytes, big-endian) and its contents. Every
    /// loaded file counts, `data.yaml` and `*_test.rego` included; the directory path does not.
    #[must_use]
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The directory the bundle was loaded from.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The per-evaluation time limit.
    #[must_use]
    pub fn eval_time_limit(&self) -> Duration {
        self.eval_time_limit
    }

    /// Paths (as handed to regorus: `dir` joined with the file name) of the serving,
    /// non-test policy files.
    #[must_use]
    pub fn policy_files(&self) -> &[PathBuf] {
        &self.policy_files
    }

    /// A fresh evaluation engine; cheap (reference-counted modules and data).
    pub(crate) fn serving_engine(&self) -> Engine {
        self.engine.clone()
    }

    pub(crate) fn compiled(&self) -> &CompiledDecisions {
        &self.compiled
    }

    /// A fresh engine with the test modules loaded as well.
    pub(crate) fn test_engine(&self) -> Engine {
        self.test_engine.clone()
    }

    pub(crate) fn tests(&self) -> &[TestCase] {
        &self.tests
    }
}

/// One file read from the policy directory.
struct BundleFile {
    name: String,
    path: PathBuf,
    contents: String,
}

fn read_bundle_files(dir: &Path) -> Result<Vec<BundleFile>, BundleError> {
    let read_dir_error = |source| BundleError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_dir_error)? {
        let entry = entry.map_err(read_dir_error)?;
        let Ok(name) = entry.file_name().into_string() else {
            // Not UTF-8, so it cannot be `*.rego` or `data.yaml` as we spell them.
            continue;
        };
        if name.starts_with('.') || !(name.ends_with(".rego") || name == DATA_FILE) {
            continue;
        }
        let path = entry.path();
        // Follows symlinks; directories named `x.rego` are not policies.
        let is_file = std::fs::metadata(&path)
            .map_err(|source| BundleError::ReadFile {
                path: path.clone(),
                source,
            })?
            .is_file();
        if is_file {
            names.push((name, path));
        }
    }
    names.sort();
    names
        .into_iter()
        .map(|(name, path)| {
            let contents =
                std::fs::read_to_string(&path).map_err(|source| BundleError::ReadFile {
                    path: path.clone(),
                    source,
                })?;
            Ok(BundleFile {
                name,
                path,
                contents,
            })
        })
        .collect()
}

fn digest_files(files: &[BundleFile]) -> String {
    let mut hasher = Sha256::new();
    for file in files {
        hasher.update(file.name.as_bytes());
        hasher.update([0u8]);
        hasher.update((file.contents.len() as u64).to_be_bytes());
        hasher.update(file.contents.as_bytes());
    }
    hex::encode(hasher.finalize())
}

fn add_policy(engine: &mut Engine, file: &BundleFile) -> Result<(), BundleError> {
    engine
        .add_policy(file.path.display().to_string(), file.contents.clone())
        .map(|_package| ())
        .map_err(|err| policy_error(&format!("{err:#}"), &file.path))
}

fn add_data(engine: &mut Engine, file: &BundleFile) -> Result<(), BundleError> {
    let data_error = |message: String| BundleError::Data {
        path: file.path.clone(),
        message,
    };
    let json: serde_json::Value =
        yaml_serde::from_str(&file.contents).map_err(|err| data_error(err.to_string()))?;
    match json {
        // An empty file (or one with only comments) adds nothing.
        serde_json::Value::Null => Ok(()),
        serde_json::Value::Object(data) => {
            if data.contains_key(route_index::DERIVED_KEY) {
                return Err(data_error(format!(
                    "the top-level key `{}` is reserved for the data the loader derives (the route index)",
                    route_index::DERIVED_KEY
                )));
            }
            let mut json = serde_json::Value::Object(data);
            if let Some(derived) = route_index::derive(&json).map_err(data_error)? {
                json[route_index::DERIVED_KEY] = derived;
            }
            let value = regorus::Value::deserialize(&json)
                .map_err(|err| data_error(format!("unsupported value: {err}")))?;
            engine
                .add_data(value)
                .map_err(|err| data_error(format!("{err:#}")))
        }
        _ => Err(data_error(
            "the top level must be a mapping (it becomes `data`)".to_owned(),
        )),
    }
}

pub(crate) fn set_time_limit(engine: &mut Engine, limit: Duration) {
    engine.set_execution_timer_config(ExecutionTimerConfig {
        limit,
        check_interval: NonZeroU32::new(TIMER_CHECK_INTERVAL).unwrap_or(NonZeroU32::MIN),
    });
}

/// Runs regorus' analysis (rule scheduling, imports, function table) now, so a broken
/// bundle fails at load time and clones start out prepared.
fn prepare(engine: &mut Engine, dir: &Path) -> Result<(), BundleError> {
    engine
        .eval_query("true".to_owned(), false)
        .map(|_results| ())
        .map_err(|err| policy_error(&format!("{err:#}"), dir))
}

/// Finds `test_*` rules in the modules loaded after the first `first_test_module` ones.
fn discover_tests(
    engine: &mut Engine,
    first_test_module: usize,
    dir: &Path,
) -> Result<Vec<TestCase>, BundleError> {
    Ok(named_rules(engine, first_test_module, dir)?
        .into_iter()
        .filter(|(_, name, _)| name.starts_with("test_"))
        .map(|(package, name, query)| TestCase {
            package,
            name,
            query,
        })
        .collect())
}

/// For each decision rule (`data.pkg.decision`), the input paths its decisions can
/// depend on: those read in its package's files and in every serving package they name
/// (`data.other.pkg…`, imports included), followed to the end.
fn decision_keys(files: &[BundleFile], decisions: &[String]) -> HashMap<String, InputKey> {
    let serving: Vec<(String, &str)> = files
        .iter()
        .filter(|f| f.name != DATA_FILE && !f.name.ends_with(TEST_SUFFIX))
        .filter_map(|f| {
            let package = f.contents.lines().find_map(|l| {
                l.trim()
                    .strip_prefix("package ")
                    .map(|p| format!("data.{}", p.trim()))
            })?;
            Some((package, f.contents.as_str()))
        })
        .collect();
    decisions
        .iter()
        .map(|rule| {
            let own = rule.rsplit_once('.').map_or(rule.as_str(), |(p, _)| p);
            let mut packages = vec![own.to_owned()];
            let mut i = 0;
            while i < packages.len() {
                let current = packages[i].clone();
                for (package, source) in &serving {
                    if *package != current {
                        continue;
                    }
                    for (other, _) in &serving {
                        if !packages.contains(other) && source.contains(other.as_str()) {
                            packages.push(other.clone());
                        }
                    }
                }
                i += 1;
            }
            let sources: Vec<&str> = serving
                .iter()
                .filter(|(p, _)| packages.contains(p))
                .map(|(_, source)| *source)
                .collect();
            (rule.clone(), crate::input_key::input_key(&sources))
        })
        .collect()
}

/// Paths of the rules called `name` in the modules from `first_module` on.
fn find_rules(
    engine: &mut Engine,
    first_module: usize,
    name: &str,
    dir: &Path,
) -> Result<Vec<String>, BundleError> {
    Ok(named_rules(engine, first_module, dir)?
        .into_iter()
        .filter(|(_, rule, _)| rule == name)
        .map(|(_, _, path)| path)
        .collect())
}

/// `(package, rule name, rule path)` of every complete rule (`name := …`, `name if …`)
/// in the modules from `first_module` on, each rule once however many definitions it has.
fn named_rules(
    engine: &mut Engine,
    first_module: usize,
    dir: &Path,
) -> Result<Vec<(String, String, String)>, BundleError> {
    let packages = engine
        .get_policy_package_components()
        .map_err(|err| policy_error(&format!("{err:#}"), dir))?;
    let modules = engine.get_modules();
    let mut rules: Vec<(String, String, String)> = Vec::new();
    for (module, package) in modules.iter().zip(&packages).skip(first_module) {
        let package_path = rule_path(&package.components);
        let package_name = package.components.join(".");
        for rule in &module.policy {
            let Rule::Spec {
                head: RuleHead::Compr { refr, .. },
                ..
            } = rule.as_ref()
            else {
                continue;
            };
            let Expr::Var { value, .. } = refr.as_ref() else {
                continue;
            };
            let Ok(name) = value.as_string() else {
                continue;
            };
            let path = format!("{package_path}.{name}");
            // Incremental definitions of one rule are one rule.
            if rules.iter().any(|(_, _, p)| *p == path) {
                continue;
            }
            rules.push((package_name.clone(), name.to_string(), path));
        }
    }
    Ok(rules)
}

/// `data` followed by the components, dotted where they are identifiers, bracketed otherwise.
pub(crate) fn rule_path(components: &[String]) -> String {
    let mut path = String::from("data");
    for component in components {
        let is_identifier = component
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && component
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if is_identifier {
            path.push('.');
            path.push_str(component);
        } else {
            path.push('[');
            path.push_str(&serde_json::Value::String(component.clone()).to_string());
            path.push(']');
        }
    }
    path
}

/// `path:line: error: summary` followed by regorus' source excerpt (its `--> file:line:col`
/// marker dropped as redundant).
fn render_policy_error(path: &Path, line: Option<u32>, message: &str) -> String {
    let mut lines: Vec<&str> = message
        .trim()
        .lines()
        .filter(|l| !l.trim_start().starts_with("--> "))
        .collect();
    let summary = lines.pop().unwrap_or_default().trim();
    let mut out = format!("{}", path.display());
    if let Some(line) = line {
        out.push_str(&format!(":{line}"));
    }
    out.push_str(": ");
    out.push_str(summary);
    for excerpt in lines {
        out.push('\n');
        out.push_str(excerpt);
    }
    out
}

/// Builds [`BundleError::Policy`], taking file and line from regorus' `--> file:line:col`
/// marker when present and falling back to `fallback`.
fn policy_error(message: &str, fallback: &Path) -> BundleError {
    let location = message.lines().find_map(|line| {
        let rest = line.trim_start().strip_prefix("--> ")?;
        let mut parts = rest.rsplitn(3, ':');
        let _col = parts.next()?;
        let line = parts.next()?.parse::<u32>().ok()?;
        let file = parts.next()?;
        Some((PathBuf::from(file), line))
    });
    let (path, line) = match location {
        Some((path, line)) => (path, Some(line)),
        None => (fallback.to_path_buf(), None),
    };
    BundleError::Policy {
        path,
        line,
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_path_brackets_non_identifiers() {
        let components = vec!["portcullis".to_owned(), "1.0".to_owned(), "x_y".to_owned()];
        assert_eq!(rule_path(&components), r#"data.portcullis["1.0"].x_y"#);
    }

    #[test]
    fn policy_error_extracts_location() {
        let message = "\n--> policies/http.rego:12:5\n   |\n12 | x :=\n   |     ^\nerror: oops";
        let BundleError::Policy { path, line, .. } = policy_error(message, Path::new("dir")) else {
            unreachable!("policy_error builds BundleError::Policy");
        };
        assert_eq!(path, PathBuf::from("policies/http.rego"));
        assert_eq!(line, Some(12));
    }
}
