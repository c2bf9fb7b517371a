//! Why an evaluation produced no value: shared by the interpreter and the compiled path.

/// Why an evaluation produced no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// The input document could not be converted for the engine.
    #[error("input is not a valid policy input: {0}")]
    Input(String),
    /// The query has no value for this input (no rule body matched, or no such rule).
    #[error("query is undefined")]
    Undefined,
    /// The evaluation ran longer than the bundle's time limit.
    #[error("policy evaluation exceeded its time limit")]
    TimeLimitExceeded,
    /// The query did not parse, named something that is not a rule, or evaluation failed
    /// (conflicting rule values, a built-in error, …). Carries regorus' message.
    #[error("policy evaluation failed: {0}")]
    Evaluation(String),
    /// The result could not be represented as JSON.
    #[error("policy result is not representable as JSON: {0}")]
    Output(String),
}

impl EvalError {
    /// Stable reason code used in fail-closed [`Decision`]s and metrics.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Input(_) => "invalid_input",
            Self::Undefined => "undefined",
            Self::TimeLimitExceeded => "timeout",
            Self::Evaluation(_) | Self::Output(_) => "policy_error",
        }
    }
}
