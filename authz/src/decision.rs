//! Evaluating queries against a [`PolicyBundle`] and turning results into [`Decision`]s.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

use regorus::{LimitError, Value};
use serde::{Deserialize, Serialize};

use crate::bundle::PolicyBundle;
use crate::eval_error::EvalError;
use crate::input_key::PolicyInput;

/// `rule` of every decision that did not come from a well-formed policy result.
pub const FAIL_CLOSED_RULE: &str = "fail_closed";

/// What the proxy or backend must additionally do when a request is allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Obligations {
    /// Response headers to set, name → value.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Rate-limit class to charge the request to; `None` means the route's default.
    #[serde(default)]
    pub rate_limit_class: Option<String>,
}

/// The outcome of an authorisation query.
///
/// Built only from a policy result of the form
/// `{allow: bool, reason: string, rule: string, public_reason?: bool, obligations?: {headers?:
/// {string: string}, rate_limit_class?: string}}` (other keys are ignored). Anything else —
/// undefined, not an object, a missing or mistyped field, an evaluation error or time-out —
/// gives `allow: false` with `rule` [`FAIL_CLOSED_RULE`] and `reason` one of `undefined`,
/// `malformed_decision`, `policy_error`, `timeout`, `invalid_input`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allow: bool,
    /// Reason code, e.g. `unauthenticated`, `forbidden`, `role_permitted`.
    pub reason: String,
    /// The policy rule (or route id) that decided.
    pub rule: String,
    /// Whether `reason` may be shown to the client; `false` unless the policy says so.
    pub public_reason: bool,
    /// Extra duties; empty unless the policy returned some.
    pub obligations: Obligations,
}

impl Decision {
    /// A deny produced by this crate rather than by a policy.
    #[must_use]
    pub fn fail_closed(reason: &str) -> Self {
        Self {
            allow: false,
            reason: reason.to_owned(),
            rule: FAIL_CLOSED_RULE.to_owned(),
            public_reason: false,
            obligations: Obligations::default(),
        }
    }

    /// Parses a policy result; `None` when it is not a well-formed decision object.
    fn from_policy_value(value: serde_json::Value) -> Option<Self> {
        #[derive(Deserialize)]
        struct Raw {
            allow: bool,
            reason: String,
            rule: String,
            #[serde(default)]
            public_reason: bool,
            #[serde(default)]
            obligations: Obligations,
        }
        let Raw {
            allow,
            reason,
            rule,
            public_reason,
            obligations,
        } = serde_json::from_value(value).ok()?;
        Some(Self {
            allow,
            reason,
            rule,
            public_reason,
            obligations,
        })
    }
}

impl PolicyBundle {
    /// Evaluates the rule at `query` (a rule path such as `data.portcullis.http.decision`)
    /// with `input` and interprets the result as a [`Decision`], failing closed: see
    /// [`Decision`] for what counts as well formed. Never blocks: a compiled rule runs on
    /// this thread's VM, any other on its own copy of the prepared interpreter.
    ///
    /// A compiled rule's decisions are cached per worker thread, keyed by the input
    /// fields the rule can read (see `input_key`); fail-closed decisions are never cached.
    ///
    /// `input` is read field by field for the cache key; its whole document is built
    /// only when the decision is not cached (see [`PolicyInput`]).
    #[must_use]
    pub fn decide<I: PolicyInput + ?Sized>(&self, query: &str, input: &I) -> Decision {
        let Some((id, key)) = self.compiled().cache_slot(query) else {
            return self.decide_uncached(query, &input.document());
        };
        let (hit, key) = KEY.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            buffer.clear();
            key.write(input, &mut buffer);
            match cached(id, &buffer) {
                Some(hit) => (Some(hit), Vec::new()),
                None => (None, buffer.clone()),
            }
        });
        if let Some(hit) = hit {
            return hit;
        }
        let decision = self.decide_uncached(query, &input.document());
        if decision.rule != FAIL_CLOSED_RULE {
            remember(id, key, decision.clone());
        }
        decision
    }

    /// [`PolicyBundle::decide`] without the cache: the compiled rule, else the
    /// interpreter.
    #[must_use]
    pub fn decide_uncached(&self, query: &str, input: &serde_json::Value) -> Decision {
        // A compiled decision gets only the fields it reads (on the interpreter fallback
        // below too: it is the same decision).
        let input = match self.compiled().reads(query) {
            Some(reads) => reads.prune(input),
            None => Cow::Borrowed(input),
        };
        let value = to_regorus(&input).and_then(|input| {
            match self.compiled().eval(query, input.clone()) {
                // An undefined result is rare (decisions have defaults) and the VM gives
                // it where the interpreter reports an error (conflicting rule values):
                // the interpreter says which, so the reason is the same on both paths.
                Some(Err(EvalError::Undefined)) | None => self.eval_rule_value(query, input),
                Some(result) => result.and_then(|v| to_json(&v)),
            }
        });
        Self::decision_from(query, value)
    }

    /// [`PolicyBundle::decide`] on the interpreter only, whether or not the rule is
    /// compiled: the reference the compiled path is tested against.
    #[must_use]
    pub fn decide_interpreted(&self, query: &str, input: &serde_json::Value) -> Decision {
        Self::decision_from(query, self.eval_rule(query, input))
    }

    fn decision_from(query: &str, value: Result<serde_json::Value, EvalError>) -> Decision {
        let value = match value {
            Ok(value) => value,
            Err(err) => {
                tracing::warn!(query, error = %err, "policy evaluation failed; denying");
                return Decision::fail_closed(err.reason());
            }
        };
        match Decision::from_policy_value(value) {
            Some(decision) => decision,
            None => {
                tracing::warn!(query, "policy returned a malformed decision; denying");
                Decision::fail_closed("malformed_decision")
            }
        }
    }

    /// Evaluates an arbitrary Rego query (`data.portcullis.tickets.list_scope`,
    /// `data.portcullis.http`, `1 + 1`, …) with `input`.
    ///
    /// When the query yields exactly one result with one expression and no bindings, that
    /// expression's value is returned; otherwise the whole result set is returned as regorus'
    /// JSON form `{"result": [{"expressions": [...], "bindings": {...}}, ...]}`. No result at
    /// all is [`EvalError::Undefined`].
    pub fn eval_value(
        &self,
        query: &str,
        input: &serde_json::Value,
    ) -> Result<serde_json::Value, EvalError> {
        let mut engine = self.serving_engine();
        engine.set_input(to_regorus(input)?);
        let results = engine
            .eval_query(query.to_owned(), false)
            .map_err(classify)?;
        match results.result.as_slice() {
            [] => Err(EvalError::Undefined),
            [only] if only.expressions.len() == 1 && is_empty_bindings(&only.bindings) => {
                match only.expressions.first() {
                    Some(expr) => to_json(&expr.value),
                    None => Err(EvalError::Undefined),
                }
            }
            _ => serde_json::to_value(&results).map_err(|err| EvalError::Output(err.to_string())),
        }
    }

    /// Evaluates the rule at path `query` and returns its value as JSON.
    pub(crate) fn eval_rule(
        &self,
        query: &str,
        input: &serde_json::Value,
    ) -> Result<serde_json::Value, EvalError> {
        self.eval_rule_value(query, to_regorus(input)?)
    }

    fn eval_rule_value(&self, query: &str, input: Value) -> Result<serde_json::Value, EvalError> {
        let mut engine = self.serving_engine();
        engine.set_input(input);
        let value = engine.eval_rule(query.to_owned()).map_err(classify)?;
        to_json(&value)
    }
}

fn is_empty_bindings(bindings: &Value) -> bool {
    match bindings {
        Value::Object(map) => map.is_empty(),
        Value::Undefined | Value::Null => true,
        _ => false,
    }
}

fn to_regorus(input: &serde_json::Value) -> Result<Value, EvalError> {
    Value::deserialize(input).map_err(|err| EvalError::Input(err.to_string()))
}

/// Converts a regorus value to JSON; sets become arrays, `Undefined` is [`EvalError::Undefined`].
pub(crate) fn to_json(value: &Value) -> Result<serde_json::Value, EvalError> {
    if *value == Value::Undefined {
        return Err(EvalError::Undefined);
    }
    serde_json::to_value(value).map_err(|err| EvalError::Output(err.to_string()))
}

/// Maps a regorus error (an `anyhow::Error`, taken through its std-error view so this
/// crate need not depend on anyhow) to [`EvalError`], recognising the execution timer.
pub(crate) fn classify<E>(err: E) -> EvalError
where
    E: AsRef<dyn std::error::Error + Send + Sync + 'static> + fmt::Display,
{
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err.as_ref());
    while let Some(current) = cause {
        if let Some(LimitError::TimeLimitExceeded { .. }) = current.downcast_ref::<LimitError>() {
            return EvalError::TimeLimitExceeded;
        }
        cause = current.source();
    }
    EvalError::Evaluation(format!("{err:#}"))
}

/// Entries one thread keeps for one bundle before it starts over.
const MAX_CACHED: usize = 8192;
/// Bundles one thread keeps caches for (tests load many).
const MAX_CACHED_BUNDLES: usize = 8;

thread_local! {
    /// This worker thread's decisions, by compiled program and input key: no lock on the
    /// request path, and a reloaded bundle (new programs) starts empty.
    static CACHE: RefCell<HashMap<u64, HashMap<Vec<u8>, Decision>>> = RefCell::new(HashMap::new());
    /// This thread's buffer for writing a key: a cache hit allocates none.
    static KEY: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// This thread's cached decision for `key` under bundle `id`.
fn cached(id: u64, key: &[u8]) -> Option<Decision> {
    CACHE.with(|caches| caches.borrow().get(&id)?.get(key).cloned())
}

/// Remembers `decision` for `key` under bundle `id` on this thread.
fn remember(id: u64, key: Vec<u8>, decision: Decision) {
    CACHE.with(|caches| {
        let mut caches = caches.borrow_mut();
        if !caches.contains_key(&id) && caches.len() >= MAX_CACHED_BUNDLES {
            caches.clear();
        }
        let cache = caches.entry(id).or_default();
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(key, decision);
    });
}
