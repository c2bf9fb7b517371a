//! What every repository shares: [`RepoError`], the mapping of constraint
//! violations to conflicts, the `$N` parameter builder for statements built at
//! run time, and the `dynamic_sql!` marker for such statements.

use sqlx::Any;
use sqlx::error::ErrorKind;
use thiserror::Error;

/// Builds SQL text at run time. Only constant column lists and `$N`
/// placeholders are ever interpolated; values always go through `bind`.
macro_rules! dynamic_sql {
    ($($t:tt)*) => { sqlx::AssertSqlSafe(format!($($t)*)) };
}
pub(crate) use dynamic_sql;

#[derive(Debug, Error)]
pub enum RepoError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("the stored version is {current}")]
    VersionMismatch { current: i64 },
    #[error("{0}")]
    Invalid(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

pub(crate) fn classify(e: sqlx::Error, what: &str) -> RepoError {
    if let sqlx::Error::Database(db) = &e {
        match db.kind() {
            ErrorKind::UniqueViolation => {
                return RepoError::Conflict(format!("{what} already exists"));
            }
            ErrorKind::ForeignKeyViolation => {
                return RepoError::Conflict(format!(
                    "{what} is referenced by other records or refers to a missing one"
                ));
            }
            _ => {}
        }
    }
    RepoError::Db(e)
}

/// A value bound to a dynamically built statement.
enum Bind {
    Int(i64),
    Text(String),
}

/// Builds `$N` placeholders in order of first use.
#[derive(Default)]
pub(crate) struct Params(Vec<Bind>);

impl Params {
    pub(crate) fn int(&mut self, v: i64) -> String {
        self.0.push(Bind::Int(v));
        format!("${}", self.0.len())
    }
    pub(crate) fn text(&mut self, v: impl Into<String>) -> String {
        self.0.push(Bind::Text(v.into()));
        format!("${}", self.0.len())
    }
    pub(crate) fn apply(
        self,
        mut q: sqlx::query::Query<'_, Any, sqlx::any::AnyArguments>,
    ) -> sqlx::query::Query<'_, Any, sqlx::any::AnyArguments> {
        for b in self.0 {
            q = match b {
                Bind::Int(v) => q.bind(v),
                Bind::Text(v) => q.bind(v),
            };
        }
        q
    }
}
