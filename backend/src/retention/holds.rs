//! Legal holds (table `legal_holds`, migration `0008_retention.sql`): a hold on a ticket
//! keeps that ticket with its comments and history; a hold on a subject keeps their audit
//! events (and, since an audit chain is cut at one point only, the later events of the
//! same chain), their sessions and the tickets they reported or are assigned to.

use serde::Serialize;
use sqlx::Row;

use crate::db::{Db, RepoError, classify, now_text};

/// What a hold is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldTarget {
    /// A ticket by its public id (`tck-2026-000001`).
    Ticket(String),
    /// A subject as audit events name it in `user.id` (an employee id).
    Subject(String),
}

impl HoldTarget {
    fn parts(&self) -> (&'static str, &str) {
        match self {
            Self::Ticket(t) => ("ticket", t),
            Self::Subject(s) => ("subject", s),
        }
    }
}

/// A hold as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LegalHold {
    pub legal_hold_id: i64,
    /// `ticket` or `subject`.
    pub kind: String,
    pub target: String,
    pub reason: String,
    pub created_by: String,
    pub created_at: String,
    pub released_at: Option<String>,
    pub released_by: Option<String>,
}

/// Places a hold; a second hold on the same target while one is in force is a conflict.
pub async fn add(
    db: &Db,
    target: &HoldTarget,
    reason: &str,
    by: &str,
) -> Result<LegalHold, RepoError> {
    let (kind, value) = target.parts();
    if value.trim().is_empty() {
        return Err(RepoError::Invalid("the hold's target is empty".to_owned()));
    }
    if kind == "ticket" {
        let n: i64 = sqlx::query("select count(*) from tickets where public_id = $1")
            .bind(value)
            .fetch_one(db.pool())
            .await?
            .try_get(0)?;
        if n == 0 {
            return Err(RepoError::Invalid(format!("no ticket {value}")));
        }
    }
    let row = sqlx::query(
        "insert into legal_holds (kind, target, reason, created_by, created_at) \
         values ($1, $2, $3, $4, $5) returning legal_hold_id",
    )
    .bind(kind)
    .bind(value)
    .bind(reason)
    .bind(by)
    .bind(now_text())
    .fetch_one(db.pool())
    .await
    .map_err(|e| classify(e, "a hold in force on this target"))?;
    let id: i64 = row.try_get(0)?;
    list(db, true)
        .await?
        .into_iter()
        .find(|h| h.legal_hold_id == id)
        .ok_or(RepoError::NotFound)
}

/// Releases the hold in force on `target`; `NotFound` if there is none.
pub async fn release(db: &Db, target: &HoldTarget, by: &str) -> Result<LegalHold, RepoError> {
    let (kind, value) = target.parts();
    let row = sqlx::query(
        "update legal_holds set released_at = $1, released_by = $2 \
         where kind = $3 and target = $4 and released_at is null returning legal_hold_id",
    )
    .bind(now_text())
    .bind(by)
    .bind(kind)
    .bind(value)
    .fetch_optional(db.pool())
    .await?
    .ok_or(RepoError::NotFound)?;
    let id: i64 = row.try_get(0)?;
    list(db, false)
        .await?
        .into_iter()
        .find(|h| h.legal_hold_id == id)
        .ok_or(RepoError::NotFound)
}

/// Holds in force (`active_only`) or all of them, oldest first.
pub async fn list(db: &Db, active_only: bool) -> Result<Vec<LegalHold>, RepoError> {
    let sql = if active_only {
        "select legal_hold_id, kind, target, reason, created_by, created_at, released_at, released_by \
         from legal_holds where released_at is null order by legal_hold_id"
    } else {
        "select legal_hold_id, kind, target, reason, created_by, created_at, released_at, released_by \
         from legal_holds order by legal_hold_id"
    };
    let rows = sqlx::query(sql).fetch_all(db.pool()).await?;
    rows.iter()
        .map(|r| {
            Ok(LegalHold {
                legal_hold_id: r.try_get(0)?,
                kind: r.try_get(1)?,
                target: r.try_get(2)?,
                reason: r.try_get(3)?,
                created_by: r.try_get(4)?,
                created_at: r.try_get(5)?,
                released_at: r.try_get(6)?,
                released_by: r.try_get(7)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(RepoError::from)
}

/// SQL condition: the subject column expression `subject` (an employee id) is under no
/// hold in force.
pub(super) fn subject_not_held(subject: &str) -> String {
    format!(
        "{subject} not in (select target from legal_holds where kind = 'subject' and released_at is null)"
    )
}

/// SQL condition: the ticket public id expression `public_id` is under no hold in force.
pub(super) fn ticket_not_held(public_id: &str) -> String {
    format!(
        "{public_id} not in (select target from legal_holds where kind = 'ticket' and released_at is null)"
    )
}

/// Subjects under a hold in force.
pub(super) async fn held_subjects(db: &Db) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query("select target from legal_holds where kind = 'subject' and released_at is null")
        .fetch_all(db.pool())
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect()
}

/// The employee id of `username` (the form subjects take in audit events), if any.
pub async fn employee_id(db: &Db, username: &str) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query("select employee_id from employees where username = $1")
        .bind(username)
        .fetch_optional(db.pool())
        .await?
        .map(|r| r.try_get::<i64, _>(0))
        .transpose()
}
