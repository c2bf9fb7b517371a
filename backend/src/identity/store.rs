//! SQL for identity: credentials, sessions, refresh tokens, revocations,
//! TOTP, backup codes and login throttling. Same rules as every repository (see `db`).

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::db::RepoError;
use crate::db::{Db, Tx, now_text};

use super::password::StoredPassword;

/// A stored credential and whether it must be replaced at sign-in.
#[derive(Debug, Clone)]
pub struct Credential {
    pub password: StoredPassword,
    pub must_change: bool,
}

pub async fn employee_by_username(
    db: &Db,
    username: &str,
) -> Result<Option<(i64, String)>, RepoError> {
    let row = sqlx::query("select employee_id, status from employees where username = $1")
        .bind(username)
        .fetch_optional(db.pool())
        .await?;
    Ok(match row {
        Some(r) => Some((r.try_get(0)?, r.try_get(1)?)),
        None => None,
    })
}

pub async fn credential(db: &Db, employee_id: i64) -> Result<Option<Credential>, RepoError> {
    let row = sqlx::query("select password_hash, legacy_scheme, legacy_params, must_change from credentials where employee_id = $1")
        .bind(employee_id)
        .fetch_optional(db.pool())
        .await?;
    Ok(match row {
        Some(r) => Some(Credential {
            password: StoredPassword {
                hash: r.try_get(0)?,
                legacy_scheme: r.try_get(1)?,
                legacy_params: r.try_get(2)?,
            },
            must_change: r.try_get::<i64, _>(3)? != 0,
        }),
        None => None,
    })
}

/// Stores an employee's password; `conn` is the pool or a transaction (`&mut **tx`) that
/// commits it with its audit event.
pub async fn set_credential(
    conn: impl sqlx::Executor<'_, Database = sqlx::Any>,
    employee_id: i64,
    p: &StoredPassword,
    must_change: bool,
) -> Result<(), RepoError> {
    sqlx::query(
        "insert into credentials (employee_id, password_hash, legacy_scheme, legacy_params, must_change, changed_at) \
         values ($1, $2, $3, $4, $5, $6) on conflict (employee_id) do update set password_hash = excluded.password_hash, \
         legacy_scheme = excluded.legacy_scheme, legacy_params = excluded.legacy_params, must_change = excluded.must_change, \
         changed_at = excluded.changed_at",
    )
    .bind(employee_id)
    .bind(&p.hash)
    .bind(&p.legacy_scheme)
    .bind(&p.legacy_params)
    .bind(i64::from(must_change))
    .bind(now_text())
    .execute(conn)
    .await?;
    Ok(())
}

/// A session row.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Session {
    pub session_id: String,
    pub employee_id: i64,
    pub auth_method: String,
    pub mfa: bool,
    pub created_at: String,
    pub expires_at: String,
    pub absolute_expires_at: String,
    pub revoked_at: Option<String>,
    pub revoked_reason: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    #[serde(skip)]
    pub oidc_provider: Option<String>,
    #[serde(skip)]
    pub oidc_sid: Option<String>,
}

const SESSION_COLUMNS: &str = "session_id, employee_id, auth_method, mfa, created_at, expires_at, absolute_expires_at, \
     revoked_at, revoked_reason, source_ip, user_agent, oidc_provider, oidc_sid";

fn session_row(r: &AnyRow) -> Result<Session, sqlx::Error> {
    Ok(Session {
        session_id: r.try_get(0)?,
        employee_id: r.try_get(1)?,
        auth_method: r.try_get(2)?,
        mfa: r.try_get::<i64, _>(3)? != 0,
        created_at: r.try_get(4)?,
        expires_at: r.try_get(5)?,
        absolute_expires_at: r.try_get(6)?,
        revoked_at: r.try_get(7)?,
        revoked_reason: r.try_get(8)?,
        source_ip: r.try_get(9)?,
        user_agent: r.try_get(10)?,
        oidc_provider: r.try_get(11)?,
        oidc_sid: r.try_get(12)?,
    })
}

impl Session {
    /// Not revoked and not expired at `now` (stored time text).
    pub fn is_active(&self, now: &str) -> bool {
        self.revoked_at.is_none() && self.expires_at.as_str() > now
    }
}

/// What a new session records.
#[derive(Debug, Clone, Default)]
pub struct NewSession {
    pub employee_id: i64,
    pub auth_method: String,
    pub mfa: bool,
    pub expires_at: String,
    pub absolute_expires_at: String,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub oidc_provider: Option<String>,
    pub oidc_sid: Option<String>,
}

pub async fn create_session(
    db: &Db,
    session_id: &str,
    s: &NewSession,
) -> Result<Session, RepoError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "insert into sessions (session_id, employee_id, auth_method, mfa, oidc_provider, oidc_sid, created_at, expires_at, \
         absolute_expires_at, source_ip, user_agent) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) returning {SESSION_COLUMNS}"
    )))
    .bind(session_id)
    .bind(s.employee_id)
    .bind(&s.auth_method)
    .bind(i64::from(s.mfa))
    .bind(&s.oidc_provider)
    .bind(&s.oidc_sid)
    .bind(now_text())
    .bind(&s.expires_at)
    .bind(&s.absolute_expires_at)
    .bind(&s.source_ip)
    .bind(&s.user_agent)
    .fetch_one(db.pool())
    .await?;
    Ok(session_row(&row)?)
}

pub async fn session(db: &Db, session_id: &str) -> Result<Option<Session>, RepoError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "select {SESSION_COLUMNS} from sessions where session_id = $1"
    )))
    .bind(session_id)
    .fetch_optional(db.pool())
    .await?;
    Ok(row.as_ref().map(session_row).transpose()?)
}

/// Active sessions, oldest first; of one employee or of everyone.
pub async fn active_sessions(db: &Db, employee_id: Option<i64>) -> Result<Vec<Session>, RepoError> {
    let now = now_text();
    let rows = match employee_id {
        Some(id) => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "select {SESSION_COLUMNS} from sessions where revoked_at is null and expires_at > $1 and employee_id = $2 order by created_at"
            )))
            .bind(now)
            .bind(id)
            .fetch_all(db.pool())
            .await?
        }
        None => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "select {SESSION_COLUMNS} from sessions where revoked_at is null and expires_at > $1 order by created_at"
            )))
            .bind(now)
            .fetch_all(db.pool())
            .await?
        }
    };
    Ok(rows.iter().map(session_row).collect::<Result<_, _>>()?)
}

pub async fn extend_session(db: &Db, session_id: &str, expires_at: &str) -> Result<(), RepoError> {
    sqlx::query("update sessions set expires_at = $1 where session_id = $2 and revoked_at is null")
        .bind(expires_at)
        .bind(session_id)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Ends a session; returns false if it was already ended. Every ending is
/// numbered in `session_revocations` for the proxy's feed.
pub async fn revoke_session(db: &Db, session_id: &str, reason: &str) -> Result<bool, RepoError> {
    let mut tx = db.begin().await?;
    let now = now_text();
    let done = sqlx::query("update sessions set revoked_at = $1, revoked_reason = $2 where session_id = $3 and revoked_at is null")
        .bind(&now)
        .bind(reason)
        .bind(session_id)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 1 {
        // The proxy reads the feed as "numbers after the last one seen". On
        // PostgreSQL two concurrent transactions can commit their numbers out
        // of order (5 after 6), and a poll in between would skip 5 for good;
        // this lock makes numbering and commit one step, so readers always see
        // a gap-free prefix. SQLite's write lock already does.
        if db.kind() == crate::db::DbKind::Postgres {
            sqlx::query("select pg_advisory_xact_lock(7243065061) is not null")
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("insert into session_revocations (session_id, revoked_at) values ($1, $2)")
            .bind(session_id)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(done.rows_affected() == 1)
}

/// Ends every active session of an employee; returns their ids.
pub async fn revoke_all(db: &Db, employee_id: i64, reason: &str) -> Result<Vec<String>, RepoError> {
    let mut ended = Vec::new();
    for s in active_sessions(db, Some(employee_id)).await? {
        if revoke_session(db, &s.session_id, reason).await? {
            ended.push(s.session_id);
        }
    }
    Ok(ended)
}

/// Revocations numbered after `after` and made at `since` or later, oldest first.
pub async fn revocations_after(
    db: &Db,
    after: i64,
    since: &str,
    limit: i64,
) -> Result<Vec<(i64, String)>, RepoError> {
    let rows = sqlx::query("select revocation_id, session_id from session_revocations where revocation_id > $1 and revoked_at >= $2 order by revocation_id limit $3")
        .bind(after)
        .bind(since)
        .bind(limit)
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

pub async fn insert_refresh(db: &Db, token_hash: &str, session_id: &str) -> Result<(), RepoError> {
    sqlx::query(
        "insert into refresh_tokens (token_hash, session_id, created_at) values ($1, $2, $3)",
    )
    .bind(token_hash)
    .bind(session_id)
    .bind(now_text())
    .execute(db.pool())
    .await?;
    Ok(())
}

/// The outcome of presenting a refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshUse {
    /// First use: the caller rotates it.
    Fresh {
        session_id: String,
    },
    /// Already used: somebody replayed it.
    Reused {
        session_id: String,
    },
    Unknown,
}

/// Marks a refresh token used, atomically: of two concurrent uses only one
/// is `Fresh`.
pub async fn use_refresh(db: &Db, token_hash: &str) -> Result<RefreshUse, RepoError> {
    let done = sqlx::query(
        "update refresh_tokens set used_at = $1 where token_hash = $2 and used_at is null",
    )
    .bind(now_text())
    .bind(token_hash)
    .execute(db.pool())
    .await?;
    let row = sqlx::query("select session_id from refresh_tokens where token_hash = $1")
        .bind(token_hash)
        .fetch_optional(db.pool())
        .await?;
    Ok(match (row, done.rows_affected()) {
        (Some(r), 1) => RefreshUse::Fresh {
            session_id: r.try_get(0)?,
        },
        (Some(r), _) => RefreshUse::Reused {
            session_id: r.try_get(0)?,
        },
        (None, _) => RefreshUse::Unknown,
    })
}

/// TOTP enrolment of an employee: `(secret, confirmed)`.
pub async fn totp(db: &Db, employee_id: i64) -> Result<Option<(String, bool)>, RepoError> {
    let row = sqlx::query("select secret, confirmed_at from mfa_totp where employee_id = $1")
        .bind(employee_id)
        .fetch_optional(db.pool())
        .await?;
    Ok(match row {
        Some(r) => Some((r.try_get(0)?, r.try_get::<Option<String>, _>(1)?.is_some())),
        None => None,
    })
}

pub async fn start_totp(db: &Db, employee_id: i64, secret: &str) -> Result<(), RepoError> {
    sqlx::query(
        "insert into mfa_totp (employee_id, secret, confirmed_at, last_step) values ($1, $2, null, 0) \
         on conflict (employee_id) do update set secret = excluded.secret, confirmed_at = null, last_step = 0",
    )
    .bind(employee_id)
    .bind(secret)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Marks the enrolled TOTP secret confirmed, in `tx` (the caller commits).
pub async fn confirm_totp(tx: &mut Tx, employee_id: i64) -> Result<(), RepoError> {
    sqlx::query("update mfa_totp set confirmed_at = $1 where employee_id = $2")
        .bind(now_text())
        .bind(employee_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Records `step` as used if it is newer than the last one; false means replay.
pub async fn claim_totp_step(db: &Db, employee_id: i64, step: i64) -> Result<bool, RepoError> {
    let done =
        sqlx::query("update mfa_totp set last_step = $1 where employee_id = $2 and last_step < $3")
            .bind(step)
            .bind(employee_id)
            .bind(step)
            .execute(db.pool())
            .await?;
    Ok(done.rows_affected() == 1)
}

/// Removes an employee's second factor and backup codes, in `tx` (the caller commits).
pub async fn reset_mfa(tx: &mut Tx, employee_id: i64) -> Result<(), RepoError> {
    sqlx::query("delete from mfa_totp where employee_id = $1")
        .bind(employee_id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("delete from mfa_backup_codes where employee_id = $1")
        .bind(employee_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Replaces an employee's backup codes, in `tx` (the caller commits).
pub async fn replace_backup_codes(
    tx: &mut Tx,
    employee_id: i64,
    hashes: &[String],
) -> Result<(), RepoError> {
    sqlx::query("delete from mfa_backup_codes where employee_id = $1")
        .bind(employee_id)
        .execute(&mut **tx)
        .await?;
    for h in hashes {
        sqlx::query("insert into mfa_backup_codes (employee_id, code_hash) values ($1, $2)")
            .bind(employee_id)
            .bind(h)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Unused backup codes: `(id, hash)`.
pub async fn unused_backup_codes(
    db: &Db,
    employee_id: i64,
) -> Result<Vec<(i64, String)>, RepoError> {
    let rows = sqlx::query("select backup_code_id, code_hash from mfa_backup_codes where employee_id = $1 and used_at is null")
        .bind(employee_id)
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// Marks a backup code used; false if it was used concurrently.
pub async fn use_backup_code(db: &Db, id: i64) -> Result<bool, RepoError> {
    let done = sqlx::query(
        "update mfa_backup_codes set used_at = $1 where backup_code_id = $2 and used_at is null",
    )
    .bind(now_text())
    .bind(id)
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// `(failures, window_started_at, locked_until)` for a throttle key.
pub async fn failures(
    db: &Db,
    key: &str,
) -> Result<Option<(i64, String, Option<String>)>, RepoError> {
    let row = sqlx::query("select failures, window_started_at, locked_until from login_failures where throttle_key = $1")
        .bind(key)
        .fetch_optional(db.pool())
        .await?;
    Ok(match row {
        Some(r) => Some((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)),
        None => None,
    })
}

/// The highest bcrypt cost among imported credentials not yet upgraded, if any.
pub async fn max_legacy_bcrypt_cost(db: &Db) -> Result<Option<u32>, RepoError> {
    // legacy_params is `$2b$12$<salt>`: the cost is characters 5 and 6.
    let cost: Option<String> = sqlx::query_scalar(
        "select max(substr(legacy_params, 5, 2)) from credentials where legacy_scheme = 'bcrypt'",
    )
    .fetch_one(db.pool())
    .await?;
    Ok(cost.and_then(|c| c.parse().ok()))
}

/// Counts one failure for `key` in one statement, so concurrent failures
/// are all counted: the window restarts when it began before
/// `window_cutoff`. From `max` failures on, the key is locked until
/// `locked_until`. Returns the failures in the window, this one included.
pub async fn count_failure(
    db: &Db,
    key: &str,
    now: &str,
    window_cutoff: &str,
    max: i64,
    locked_until: &str,
) -> Result<i64, RepoError> {
    let mut tx = db.begin().await?;
    let failures: i64 = sqlx::query_scalar(
        "insert into login_failures (throttle_key, failures, window_started_at) values ($1, 1, $2) \
         on conflict (throttle_key) do update set \
         failures = case when login_failures.window_started_at > $3 then login_failures.failures + 1 else 1 end, \
         window_started_at = case when login_failures.window_started_at > $3 then login_failures.window_started_at else $2 end \
         returning failures",
    )
    .bind(key)
    .bind(now)
    .bind(window_cutoff)
    .fetch_one(&mut *tx)
    .await?;
    if failures >= max {
        sqlx::query("update login_failures set locked_until = $1 where throttle_key = $2")
            .bind(locked_until)
            .bind(key)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(failures)
}

pub async fn clear_failures(db: &Db, key: &str) -> Result<(), RepoError> {
    sqlx::query("delete from login_failures where throttle_key = $1")
        .bind(key)
        .execute(db.pool())
        .await?;
    Ok(())
}
