//! SQL of tickets, their comments and their hash-chained history.

use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::db::{Db, Params, RepoError, Tx, classify, dynamic_sql, now_text};
use crate::model::{Comment, Employee, HistoryEntry, NewTicket, Priority, Ticket, TicketStatus};

/// Hash that starts every ticket's history chain.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const TICKET_COLUMNS: &str = "ticket_id, public_id, title, description, status, priority, department_id, \
     reporter_id, assignee_id, approved_by, approved_at, version, created_at, updated_at";

/// A ticket with its internal row id (used for ordering and cursors).
struct Row2 {
    row_id: i64,
    ticket: Ticket,
}

fn ticket_row(r: &AnyRow) -> Result<Row2, RepoError> {
    let status: String = r.try_get(4)?;
    let priority: String = r.try_get(5)?;
    Ok(Row2 {
        row_id: r.try_get(0)?,
        ticket: Ticket {
            id: r.try_get(1)?,
            title: r.try_get(2)?,
            description: r.try_get(3)?,
            status: TicketStatus::parse(&status)
                .ok_or_else(|| RepoError::Invalid(format!("stored status `{status}`")))?,
            priority: Priority::parse(&priority)
                .ok_or_else(|| RepoError::Invalid(format!("stored priority `{priority}`")))?,
            department_id: r.try_get(6)?,
            reporter_id: r.try_get(7)?,
            assignee_id: r.try_get(8)?,
            approved_by: r.try_get(9)?,
            approved_at: r.try_get(10)?,
            version: r.try_get(11)?,
            created_at: r.try_get(12)?,
            updated_at: r.try_get(13)?,
        },
    })
}

fn chain_hash(prev_hash: &str, snapshot: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(snapshot.as_bytes());
    hex::encode(h.finalize())
}

async fn append_history(
    tx: &mut Transaction<'_, Any>,
    row_id: i64,
    action: &str,
    actor_id: i64,
    ticket: &Ticket,
) -> Result<(), RepoError> {
    let last = sqlx::query(
        "select sequence, hash from ticket_history where ticket_id = $1 order by sequence desc limit 1",
    )
    .bind(row_id)
    .fetch_optional(&mut **tx)
    .await?;
    let (sequence, prev_hash) = match last {
        Some(r) => (r.try_get::<i64, _>(0)? + 1, r.try_get::<String, _>(1)?),
        None => (1, GENESIS_HASH.to_owned()),
    };
    let snapshot = serde_json::to_string(ticket).map_err(|e| RepoError::Invalid(e.to_string()))?;
    let hash = chain_hash(&prev_hash, &snapshot);
    sqlx::query(
        "insert into ticket_history (ticket_id, sequence, action, actor_id, snapshot, prev_hash, hash, created_at) \
         values ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(row_id)
    .bind(sequence)
    .bind(action)
    .bind(actor_id)
    .bind(snapshot)
    .bind(prev_hash)
    .bind(hash)
    .bind(now_text())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Creates a ticket with the next `TCK-<year>-<n>` number in `tx` (the caller commits).
pub async fn create_ticket(
    tx: &mut Tx,
    reporter: &Employee,
    new: &NewTicket,
    department_id: i64,
) -> Result<Ticket, RepoError> {
    let now = time::OffsetDateTime::now_utc();
    let year = i64::from(now.year());
    let stamp = crate::db::format_time(now);
    // The upsert takes the row lock (PostgreSQL) or the write lock (SQLite)
    // before reading the counter, so two creations cannot get one number.
    let n: i64 = sqlx::query(
        "insert into ticket_counters (year, last_value) values ($1, 1) \
         on conflict (year) do update set last_value = ticket_counters.last_value + 1 returning last_value",
    )
    .bind(year)
    .fetch_one(&mut **tx)
    .await?
    .try_get(0)?;
    if n > 999_999 {
        return Err(RepoError::Conflict(format!(
            "ticket numbers for {year} are exhausted"
        )));
    }
    let public_id = format!("TCK-{year}-{n:06}");
    let row = sqlx::query(dynamic_sql!(
        "insert into tickets (public_id, title, description, status, priority, department_id, reporter_id, \
         version, created_at, updated_at) values ($1, $2, $3, 'open', $4, $5, $6, 1, $7, $7) returning {TICKET_COLUMNS}"
    ))
    .bind(&public_id)
    .bind(&new.title)
    .bind(&new.description)
    .bind(new.priority.as_str())
    .bind(department_id)
    .bind(reporter.id)
    .bind(&stamp)
    .fetch_one(&mut **tx)
    .await
    .map_err(|e| classify(e, "the ticket"))?;
    let Row2 { row_id, ticket } = ticket_row(&row)?;
    append_history(tx, row_id, "created", reporter.id, &ticket).await?;
    Ok(ticket)
}

pub async fn get_ticket(db: &Db, public_id: &str) -> Result<Ticket, RepoError> {
    let row = sqlx::query(dynamic_sql!(
        "select {TICKET_COLUMNS} from tickets where public_id = $1"
    ))
    .bind(public_id)
    .fetch_optional(db.pool())
    .await?
    .ok_or(RepoError::NotFound)?;
    Ok(ticket_row(&row)?.ticket)
}

/// Filters of `GET /api/tickets`.
#[derive(Debug, Clone, Default)]
pub struct TicketFilter {
    pub status: Option<TicketStatus>,
    pub department_id: Option<i64>,
    pub assignee_id: Option<i64>,
    pub reporter_id: Option<i64>,
}

/// Which rows a caller may see, as decided by the policy's `list_scope`:
/// everything, or rows matching any of the given ownership columns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListScope {
    pub all: bool,
    pub reporter_id: Option<i64>,
    pub assignee_id: Option<i64>,
    pub department_id: Option<i64>,
}

/// One page in ticket order, after `cursor` (an internal row id).
pub async fn list_tickets(
    db: &Db,
    filter: &TicketFilter,
    scope: &ListScope,
    after: Option<i64>,
    limit: i64,
) -> Result<(Vec<Ticket>, Option<i64>), RepoError> {
    let mut p = Params::default();
    let mut clauses = Vec::new();
    if !scope.all {
        let mut any = Vec::new();
        if let Some(v) = scope.reporter_id {
            any.push(format!("reporter_id = {}", p.int(v)));
        }
        if let Some(v) = scope.assignee_id {
            any.push(format!("assignee_id = {}", p.int(v)));
        }
        if let Some(v) = scope.department_id {
            any.push(format!("department_id = {}", p.int(v)));
        }
        if any.is_empty() {
            return Ok((Vec::new(), None));
        }
        clauses.push(format!("({})", any.join(" or ")));
    }
    if let Some(s) = filter.status {
        clauses.push(format!("status = {}", p.text(s.as_str())));
    }
    if let Some(v) = filter.department_id {
        clauses.push(format!("department_id = {}", p.int(v)));
    }
    if let Some(v) = filter.assignee_id {
        clauses.push(format!("assignee_id = {}", p.int(v)));
    }
    if let Some(v) = filter.reporter_id {
        clauses.push(format!("reporter_id = {}", p.int(v)));
    }
    if let Some(a) = after {
        clauses.push(format!("ticket_id > {}", p.int(a)));
    }
    let filter_sql = if clauses.is_empty() {
        String::new()
    } else {
        format!("where {}", clauses.join(" and "))
    };
    let sql = format!(
        "select {TICKET_COLUMNS} from tickets {filter_sql} order by ticket_id limit {}",
        p.int(limit + 1)
    );
    let rows = p
        .apply(sqlx::query(sqlx::AssertSqlSafe(sql)))
        .fetch_all(db.pool())
        .await?;
    let mut items: Vec<Row2> = rows.iter().map(ticket_row).collect::<Result<_, _>>()?;
    let next = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|r| r.row_id)
    } else {
        None
    };
    Ok((items.into_iter().map(|r| r.ticket).collect(), next))
}

/// Applies `change` to the ticket if its version is still `expected`,
/// bumps the version and appends a history entry, in `tx` (the caller commits).
/// `change` may refuse by returning an error; nothing is written then.
pub async fn update_ticket<F>(
    tx: &mut Tx,
    public_id: &str,
    expected: i64,
    actor_id: i64,
    action: &str,
    change: F,
) -> Result<Ticket, RepoError>
where
    F: FnOnce(&mut Ticket) -> Result<(), RepoError>,
{
    let row = sqlx::query(dynamic_sql!(
        "select {TICKET_COLUMNS} from tickets where public_id = $1"
    ))
    .bind(public_id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(RepoError::NotFound)?;
    let Row2 { row_id, mut ticket } = ticket_row(&row)?;
    if ticket.version != expected {
        return Err(RepoError::VersionMismatch {
            current: ticket.version,
        });
    }
    change(&mut ticket)?;
    ticket.version = expected + 1;
    ticket.updated_at = now_text();
    // The version guard also covers a writer that committed between our read
    // and this update (PostgreSQL read committed).
    let done = sqlx::query(
        "update tickets set title = $1, description = $2, status = $3, priority = $4, assignee_id = $5, \
         approved_by = $6, approved_at = $7, version = $8, updated_at = $9 where ticket_id = $10 and version = $11",
    )
    .bind(&ticket.title)
    .bind(&ticket.description)
    .bind(ticket.status.as_str())
    .bind(ticket.priority.as_str())
    .bind(ticket.assignee_id)
    .bind(ticket.approved_by)
    .bind(&ticket.approved_at)
    .bind(ticket.version)
    .bind(&ticket.updated_at)
    .bind(row_id)
    .bind(expected)
    .execute(&mut **tx)
    .await
    .map_err(|e| classify(e, "the change"))?;
    if done.rows_affected() != 1 {
        return Err(RepoError::VersionMismatch {
            current: expected + 1,
        });
    }
    append_history(tx, row_id, action, actor_id, &ticket).await?;
    Ok(ticket)
}

async fn ticket_row_id(db: &Db, public_id: &str) -> Result<i64, RepoError> {
    sqlx::query("select ticket_id from tickets where public_id = $1")
        .bind(public_id)
        .fetch_optional(db.pool())
        .await?
        .ok_or(RepoError::NotFound)?
        .try_get(0)
        .map_err(RepoError::from)
}

/// Adds a comment and records it in the history (the snapshot is unchanged
/// ticket data, the action says `commented`), in `tx` (the caller commits).
pub async fn add_comment(
    tx: &mut Tx,
    public_id: &str,
    author_id: i64,
    body: &str,
) -> Result<Comment, RepoError> {
    let row = sqlx::query(dynamic_sql!(
        "select {TICKET_COLUMNS} from tickets where public_id = $1"
    ))
    .bind(public_id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(RepoError::NotFound)?;
    let Row2 { row_id, ticket } = ticket_row(&row)?;
    let now = now_text();
    let id: i64 = sqlx::query(
        "insert into ticket_comments (ticket_id, author_id, body, created_at) values ($1, $2, $3, $4) returning comment_id",
    )
    .bind(row_id)
    .bind(author_id)
    .bind(body)
    .bind(&now)
    .fetch_one(&mut **tx)
    .await?
    .try_get(0)?;
    append_history(tx, row_id, "commented", author_id, &ticket).await?;
    Ok(Comment {
        id,
        ticket_id: public_id.to_owned(),
        author_id,
        body: body.to_owned(),
        created_at: now,
    })
}

pub async fn list_comments(db: &Db, public_id: &str) -> Result<Vec<Comment>, RepoError> {
    let row_id = ticket_row_id(db, public_id).await?;
    let rows = sqlx::query(
        "select comment_id, author_id, body, created_at from ticket_comments where ticket_id = $1 order by comment_id",
    )
    .bind(row_id)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Comment {
                id: r.try_get(0)?,
                ticket_id: public_id.to_owned(),
                author_id: r.try_get(1)?,
                body: r.try_get(2)?,
                created_at: r.try_get(3)?,
            })
        })
        .collect()
}

pub async fn history(db: &Db, public_id: &str) -> Result<Vec<HistoryEntry>, RepoError> {
    let row_id = ticket_row_id(db, public_id).await?;
    let rows = sqlx::query(
        "select sequence, action, actor_id, snapshot, prev_hash, hash, created_at from ticket_history \
         where ticket_id = $1 order by sequence",
    )
    .bind(row_id)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(HistoryEntry {
                sequence: r.try_get(0)?,
                action: r.try_get(1)?,
                actor_id: r.try_get(2)?,
                snapshot: r.try_get(3)?,
                prev_hash: r.try_get(4)?,
                hash: r.try_get(5)?,
                created_at: r.try_get(6)?,
            })
        })
        .collect()
}

/// Where a ticket's history stops being trustworthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryBreak {
    /// 1-based position in sequence order of the first bad entry.
    pub position: usize,
    pub reason: String,
}

/// Checks the chain: sequences 1..n without gaps, each `prev_hash` equal to
/// the previous `hash`, each `hash` recomputed from its row, and the last
/// snapshot equal to the ticket as stored.
pub fn verify_chain(entries: &[HistoryEntry], current: &Ticket) -> Result<(), HistoryBreak> {
    let mut prev = GENESIS_HASH.to_owned();
    for (i, e) in entries.iter().enumerate() {
        let position = i + 1;
        let fail = |reason: &str| HistoryBreak {
            position,
            reason: reason.to_owned(),
        };
        if e.sequence != position as i64 {
            return Err(fail("sequence gap or reordering"));
        }
        if e.prev_hash != prev {
            return Err(fail("prev_hash does not match the previous entry"));
        }
        if chain_hash(&e.prev_hash, &e.snapshot) != e.hash {
            return Err(fail("hash does not match the entry's content"));
        }
        prev = e.hash.clone();
    }
    let Some(last) = entries.last() else {
        return Err(HistoryBreak {
            position: 1,
            reason: "no history".to_owned(),
        });
    };
    let stored = serde_json::to_string(current).unwrap_or_default();
    if last.snapshot != stored {
        return Err(HistoryBreak {
            position: entries.len(),
            reason: "the ticket differs from its last recorded snapshot".to_owned(),
        });
    }
    Ok(())
}

pub async fn verify_history(
    db: &Db,
    public_id: &str,
) -> Result<Result<(), HistoryBreak>, RepoError> {
    let ticket = get_ticket(db, public_id).await?;
    let entries = history(db, public_id).await?;
    Ok(verify_chain(&entries, &ticket))
}
