//! The serving fast path: a bundle's `decision` rules compiled to regorus' bytecode VM.
//!
//! The interpreter re-walks the policy's syntax tree on every request; the compiled
//! program runs the same rules as bytecode, several times faster, with the same results
//! (a differential test over the shipped bundle's input matrix holds the two to that).
//! Each worker thread keeps its own VM per program (a VM needs `&mut` to run and is
//! cheap to make), so requests never share a lock.
//!
//! What the compiler does not support (`with`, `walk`, some partial-object forms) keeps
//! that rule on the interpreter: a bundle always serves, only slower. Test files are
//! never compiled; their `with` overrides run on the interpreter.
//!
//! regorus 0.14.1's VM also evaluates one construct wrongly: an `else` chain whose
//! earlier branch iterates (`some x in xs`, `xs[_]`) and finds nothing ends undefined
//! instead of going on to the next branch. [`iterating_else_rules`] finds such rules in
//! the source (conservatively: any iteration-looking branch counts), and a decision that
//! can reach one stays on the interpreter. The differential test
//! (`tests/vm_differential.rs`) pins both behaviours.

use std::cell::RefCell;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::program::Program;
use regorus::rvm::vm::{RegoVM, VmError};
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{Engine, Value};

use crate::eval_error::EvalError;
use crate::input_key::InputKey;

/// Bytecode instructions one evaluation may run. The time limit is the real bound; this
/// only replaces the VM's small default (25 000), which real bundles exceed.
const MAX_INSTRUCTIONS: usize = 50_000_000;

/// VM work units between two clock reads of the time limit.
const TIMER_CHECK_INTERVAL: u32 = 256;

/// At most this many VMs per thread; beyond it (tests that load many bundles) the
/// thread's cache starts over.
const MAX_VMS_PER_THREAD: usize = 16;

/// Builtins whose result is not a function of the input and data; a rule calling one is
/// never cached by anyone relying on [`CompiledDecisions::deterministic`].
const NON_DETERMINISTIC_BUILTINS: &[&str] = &[
    "time.now_ns",
    "rand.intn",
    "uuid.rfc4122",
    "opa.runtime",
    "http.send",
];

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's VMs, by program id.
    static VMS: RefCell<HashMap<u64, RegoVM>> = RefCell::new(HashMap::new());
}

/// One compiled entry point.
struct Compiled {
    /// Unique per program and time limit: a thread's VM for another id is never reused.
    id: u64,
    program: Arc<Program>,
    /// The input paths its decisions depend on; `None` when they are not known.
    reads: Option<InputKey>,
    /// Whether its decisions may be cached (no non-deterministic builtin is reachable).
    cacheable: bool,
}

/// The compiled `decision` rules of one bundle, by rule path.
pub(crate) struct CompiledDecisions {
    entries: HashMap<String, Compiled>,
    data: Value,
    time_limit: Duration,
}

/// A rule that could not be compiled, and why (it stays on the interpreter).
#[derive(Debug)]
pub(crate) struct NotCompiled {
    pub(crate) rule: String,
    pub(crate) reason: String,
}

impl CompiledDecisions {
    /// Compiles each rule in `rules` from the prepared serving `engine`. Rules the
    /// compiler refuses are returned beside the result, to be logged by the caller.
    /// `unsafe_rules` are rule paths the VM must not run (see [`iterating_else_rules`]);
    /// a decision whose program reaches one stays on the interpreter.
    /// `keys` names, per rule, the input paths its decisions depend on.
    pub(crate) fn compile(
        engine: &Engine,
        rules: &[String],
        unsafe_rules: &[String],
        keys: &HashMap<String, InputKey>,
        time_limit: Duration,
    ) -> (Self, Vec<NotCompiled>) {
        let mut entries = HashMap::new();
        let mut refused = Vec::new();
        for rule in rules {
            let compiled = compile_one(engine.clone(), rule).and_then(|program| {
                match program
                    .rule_infos
                    .iter()
                    .find(|info| unsafe_rules.contains(&info.name))
                {
                    Some(info) => Err(format!(
                        "it reaches {}, an else chain whose earlier branch iterates, which the bytecode VM evaluates wrongly",
                        info.name
                    )),
                    None => Ok(program),
                }
            });
            match compiled {
                Ok(program) => {
                    let cacheable = !program
                        .builtin_info_table
                        .iter()
                        .any(|b| NON_DETERMINISTIC_BUILTINS.contains(&b.name.as_str()));
                    entries.insert(
                        rule.clone(),
                        Compiled {
                            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                            program,
                            reads: keys.get(rule).cloned(),
                            cacheable,
                        },
                    );
                }
                Err(reason) => refused.push(NotCompiled {
                    rule: rule.clone(),
                    reason,
                }),
            }
        }
        let compiled = Self {
            entries,
            data: engine.get_data(),
            time_limit,
        };
        (compiled, refused)
    }

    /// The same programs under another time limit (VMs made for the old one are not
    /// reused).
    pub(crate) fn with_time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = limit;
        for compiled in self.entries.values_mut() {
            compiled.id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        }
        self
    }

    /// Whether `rule` runs on the VM.
    pub(crate) fn has(&self, rule: &str) -> bool {
        self.entries.contains_key(rule)
    }

    /// The cache slot of `rule`'s decisions: the program's id and what they are keyed
    /// by, or `None` when that rule's decisions are not cached.
    pub(crate) fn cache_slot(&self, rule: &str) -> Option<(u64, &InputKey)> {
        let compiled = self.entries.get(rule)?;
        if !compiled.cacheable {
            return None;
        }
        Some((compiled.id, compiled.reads.as_ref()?))
    }

    /// The input paths the compiled `rule`'s decisions depend on; `None` when the rule is
    /// not compiled or they are not known.
    pub(crate) fn reads(&self, rule: &str) -> Option<&InputKey> {
        self.entries.get(rule)?.reads.as_ref()
    }

    /// Evaluates the compiled `rule` with `input` on this thread's VM; `None` when the
    /// rule is not compiled.
    pub(crate) fn eval(&self, rule: &str, input: Value) -> Option<Result<Value, EvalError>> {
        let compiled = self.entries.get(rule)?;
        Some(VMS.with(|vms| {
            let mut vms = vms.borrow_mut();
            if !vms.contains_key(&compiled.id) {
                if vms.len() >= MAX_VMS_PER_THREAD {
                    vms.clear();
                }
                let vm = self.new_vm(&compiled.program)?;
                vms.insert(compiled.id, vm);
            }
            let vm = vms
                .get_mut(&compiled.id)
                .ok_or_else(|| EvalError::Evaluation("VM cache".to_owned()))?;
            vm.set_input(input);
            // Entry point 0: each program is compiled for one rule.
            let value = vm.execute().map_err(classify)?;
            // The input stays in the VM until the next run; it holds nothing secret
            // beyond the request, but there is no reason to keep it.
            vm.set_input(Value::Undefined);
            match value {
                Value::Undefined => Err(EvalError::Undefined),
                value => Ok(value),
            }
        }))
    }

    fn new_vm(&self, program: &Arc<Program>) -> Result<RegoVM, EvalError> {
        let mut vm = RegoVM::new();
        vm.load_program(Arc::clone(program));
        // After the program: the VM checks that data and rules do not define one path.
        vm.set_data(self.data.clone()).map_err(classify)?;
        // As the interpreter: a failing builtin fails the evaluation (a deny), rather
        // than making one expression undefined.
        vm.set_strict_builtin_errors(true);
        vm.set_max_instructions(MAX_INSTRUCTIONS);
        vm.set_execution_timer_config(Some(ExecutionTimerConfig {
            limit: self.time_limit,
            check_interval: NonZeroU32::new(TIMER_CHECK_INTERVAL).unwrap_or(NonZeroU32::MIN),
        }));
        Ok(vm)
    }
}

/// Paths (`data.pkg.rule`) of the rules in `modules` whose `else` chain has a branch
/// before the last that iterates. Conservative: `some`, `[_]` or a bracket around a bare
/// name counts as iterating, even where the name is bound.
pub(crate) fn iterating_else_rules(
    modules: &[regorus::unstable::Ref<regorus::unstable::Module>],
    packages: &[String],
) -> Vec<String> {
    use regorus::unstable::{Literal, Rule, RuleHead};
    let mut found = Vec::new();
    for (module, package) in modules.iter().zip(packages) {
        for rule in &module.policy {
            let Rule::Spec { head, bodies, .. } = rule.as_ref() else {
                continue;
            };
            if !bodies.iter().any(|b| b.is_else) {
                continue;
            }
            let iterates = bodies[..bodies.len().saturating_sub(1)].iter().any(|body| {
                body.query.stmts.iter().any(|stmt| match &stmt.literal {
                    Literal::SomeVars { .. } | Literal::SomeIn { .. } => true,
                    _ => looks_iterating(stmt.span.text()),
                })
            });
            if iterates {
                let refr = match head {
                    RuleHead::Compr { refr, .. }
                    | RuleHead::Set { refr, .. }
                    | RuleHead::Func { refr, .. } => refr,
                };
                found.push(format!("{package}.{}", refr.span().text()));
            }
        }
    }
    found
}

/// Whether a statement's text indexes with `_` or with a bare name (`xs[i]`).
fn looks_iterating(text: &str) -> bool {
    text.split('[').skip(1).any(|after| {
        let inside = after.split(']').next().unwrap_or_default().trim();
        inside == "_"
            || (!inside.is_empty()
                && inside
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !inside.chars().all(|c| c.is_ascii_digit()))
    })
}

fn compile_one(mut engine: Engine, rule: &str) -> Result<Arc<Program>, String> {
    let entry: regorus::Rc<str> = regorus::Rc::from(rule);
    let policy = engine
        .compile_with_entrypoint(&entry)
        .map_err(|e| format!("{e:#}"))?;
    Compiler::compile_from_policy(&policy, &[rule]).map_err(|e| e.to_string())
}

fn classify(err: VmError) -> EvalError {
    match err {
        VmError::TimeLimitExceeded { .. } | VmError::InstructionLimitExceeded { .. } => {
            EvalError::TimeLimitExceeded
        }
        other => EvalError::Evaluation(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::looks_iterating;

    #[test]
    fn iteration_is_recognised_in_statement_text() {
        assert!(looks_iterating("input.l[_] == 9"));
        assert!(looks_iterating("route.methods[method]"));
        assert!(!looks_iterating("public_grants[0].id == x"));
        assert!(!looks_iterating("input.m[\"k\"]"));
        assert!(!looks_iterating("count(xs) > 0"));
    }
}
