//! SQL of the `audit_events` table (migration `0005_audit.sql`; chain cuts from
//! `0008_retention.sql`), the same on both engines.

use portcullis_audit::AuditRecord;
use sqlx::Row;
use thiserror::Error;

use crate::db::Params;
use crate::db::{Db, now_text};

/// Why events could not be stored or read.
#[derive(Debug, Error)]
pub enum AuditStoreError {
    /// A line is not an audit event.
    #[error("line {line}: not an audit event: {reason}")]
    Malformed {
        /// 1-based line in the batch.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A line belongs to an emitter this caller may not write for.
    #[error("line {line}: events of emitter {emitter:?} are not accepted here")]
    WrongEmitter {
        /// 1-based line in the batch.
        line: usize,
        /// The event's emitter.
        emitter: String,
    },
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// One event line parsed for its indexed columns.
struct Parsed<'a> {
    record: AuditRecord,
    line: &'a str,
}

/// Parses every line (all or nothing).
fn parse_all<'a>(lines: &[&'a str]) -> Result<Vec<Parsed<'a>>, AuditStoreError> {
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let line = line.trim_end_matches(['\n', '\r']);
            AuditRecord::parse(line)
                .map(|record| Parsed { record, line })
                .map_err(|e| AuditStoreError::Malformed {
                    line: i + 1,
                    reason: e.to_string(),
                })
        })
        .collect()
}

/// Stores event lines exactly as given (their hash covers them), in one transaction.
/// An event whose `event.id` is already stored is skipped. Returns how many were new.
pub async fn insert_lines(db: &Db, lines: &[&str]) -> Result<u64, AuditStoreError> {
    insert_lines_from(db, lines, None).await
}

/// [`insert_lines`], refusing the whole batch unless every event's emitter is of the kind
/// `emitter` (`proxy` takes `proxy` and `proxy-<instance>`).
pub async fn insert_lines_from(
    db: &Db,
    lines: &[&str],
    emitter: Option<&str>,
) -> Result<u64, AuditStoreError> {
    let parsed = parse_all(lines)?;
    if let Some(wanted) = emitter
        && let Some((i, p)) = parsed
            .iter()
            .enumerate()
            .find(|(_, p)| portcullis_audit::emitter_kind(&p.record.emitter) != wanted)
    {
        return Err(AuditStoreError::WrongEmitter {
            line: i + 1,
            emitter: p.record.emitter.clone(),
        });
    }
    let mut tx = db.begin().await?;
    let now = now_text();
    let mut stored = 0;
    for Parsed { record, line } in &parsed {
        // An event at or before the emitter's chain cut was archived and deleted by
        // retention: delivered again (at least once), it is not stored a second time.
        let done = sqlx::query(
            "insert into audit_events (event_id, emitter, seq, occurred_at, category, action, outcome, level, \
             user_id, session_id, request_id, line, received_at) \
             select $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13 \
             where not exists (select 1 from audit_chain_cuts c where c.emitter = $2 and c.seq >= $3) \
             on conflict (event_id) do nothing",
        )
        .bind(&record.id)
        .bind(&record.emitter)
        .bind(i64::try_from(record.seq).unwrap_or(i64::MAX))
        .bind(&record.timestamp)
        .bind(record.category.as_str())
        .bind(&record.action)
        .bind(record.outcome.as_str())
        .bind(record.level.as_str())
        .bind(record.user_id.as_deref())
        .bind(record.session_id.as_deref())
        .bind(record.request_id.as_deref())
        .bind(*line)
        .bind(&now)
        .execute(&mut *tx)
        .await?;
        stored += done.rows_affected();
    }
    tx.commit().await?;
    Ok(stored)
}

/// The admin view's filters; every field is optional and they combine with `and`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// `@timestamp` at or after (fixed-width RFC 3339 text).
    pub from: Option<String>,
    /// `@timestamp` before.
    pub to: Option<String>,
    pub user_id: Option<String>,
    pub category: Option<String>,
    pub action: Option<String>,
    pub outcome: Option<String>,
    pub level: Option<String>,
    pub request_id: Option<String>,
    pub session_id: Option<String>,
    pub emitter: Option<String>,
}

impl AuditFilter {
    /// `where …` clauses for these filters (values bound through `p`).
    fn clauses(&self, p: &mut Params) -> Vec<String> {
        let Self {
            from,
            to,
            user_id,
            category,
            action,
            outcome,
            level,
            request_id,
            session_id,
            emitter,
        } = self;
        let mut c = Vec::new();
        if let Some(v) = from {
            c.push(format!("occurred_at >= {}", p.text(v.as_str())));
        }
        if let Some(v) = to {
            c.push(format!("occurred_at < {}", p.text(v.as_str())));
        }
        for (column, value) in [
            ("user_id", user_id),
            ("category", category),
            ("action", action),
            ("outcome", outcome),
            ("level", level),
            ("request_id", request_id),
            ("session_id", session_id),
            ("emitter", emitter),
        ] {
            if let Some(v) = value {
                c.push(format!("{column} = {}", p.text(v.as_str())));
            }
        }
        c
    }
}

fn where_sql(clauses: &[String]) -> String {
    if clauses.is_empty() {
        String::new()
    } else {
        format!("where {}", clauses.join(" and "))
    }
}

/// Position of a row in the view's order: (`occurred_at`, `audit_event_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub occurred_at: String,
    pub row_id: i64,
}

/// One stored event.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub position: Position,
    /// The event's JSON line.
    pub line: String,
}

fn stored(r: &sqlx::any::AnyRow) -> Result<StoredEvent, sqlx::Error> {
    Ok(StoredEvent {
        position: Position {
            row_id: r.try_get(0)?,
            occurred_at: r.try_get(1)?,
        },
        line: r.try_get(2)?,
    })
}

/// Which way a page goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Newest first (the admin view).
    NewestFirst,
    /// Oldest first (the export).
    OldestFirst,
}

/// Up to `limit` events matching `filter`, after `after` in `order`.
pub async fn page(
    db: &Db,
    filter: &AuditFilter,
    order: Order,
    after: Option<&Position>,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let mut p = Params::default();
    let mut clauses = filter.clauses(&mut p);
    let (cmp, dir) = match order {
        Order::NewestFirst => ("<", "desc"),
        Order::OldestFirst => (">", "asc"),
    };
    if let Some(pos) = after {
        let at = p.text(pos.occurred_at.as_str());
        let id = p.int(pos.row_id);
        clauses.push(format!(
            "(occurred_at {cmp} {at} or (occurred_at = {at} and audit_event_id {cmp} {id}))"
        ));
    }
    let sql = format!(
        "select audit_event_id, occurred_at, line from audit_events {} \
         order by occurred_at {dir}, audit_event_id {dir} limit {}",
        where_sql(&clauses),
        p.int(limit)
    );
    let rows = p
        .apply(sqlx::query(sqlx::AssertSqlSafe(sql)))
        .fetch_all(db.pool())
        .await?;
    rows.iter().map(stored).collect()
}

/// How many events match `filter`.
pub async fn count(db: &Db, filter: &AuditFilter) -> Result<i64, sqlx::Error> {
    let mut p = Params::default();
    let clauses = filter.clauses(&mut p);
    let sql = format!("select count(*) from audit_events {}", where_sql(&clauses));
    p.apply(sqlx::query(sqlx::AssertSqlSafe(sql)))
        .fetch_one(db.pool())
        .await?
        .try_get(0)
}

/// Succeeds when the `audit_events` table is there (migrated), without reading it.
pub async fn probe(db: &Db) -> Result<(), sqlx::Error> {
    sqlx::query("select count(*) from audit_events where 1 = 0")
        .fetch_one(db.pool())
        .await
        .map(|_| ())
}

/// The emitters with events in the table.
pub async fn emitters(db: &Db) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query("select distinct emitter from audit_events order by emitter")
        .fetch_all(db.pool())
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect()
}

/// Every stored line of `emitter` in chain order (seq, then insertion), for
/// `portcullis audit verify --database`; with the row id of each.
pub async fn chain(db: &Db, emitter: &str) -> Result<Vec<(i64, String)>, sqlx::Error> {
    sqlx::query(
        "select audit_event_id, line from audit_events where emitter = $1 order by seq, audit_event_id",
    )
    .bind(emitter)
    .fetch_all(db.pool())
    .await?
    .iter()
    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
    .collect()
}
