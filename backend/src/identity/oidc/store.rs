//! SQL for OIDC sign-in: pending logins, linked provider accounts, single-use
//! values, and the sessions a back-channel logout names. Same rules as
//! `repo.rs` (`$N` numbered in order of first use).

use sqlx::Row;

use crate::db::Db;
use crate::db::RepoError;

/// A sign-in waiting for its callback.
#[derive(Debug, Clone)]
pub struct PendingLogin {
    pub state_hash: String,
    pub browser_hash: String,
    pub provider: String,
    pub nonce_hash: String,
    pub return_to: String,
    pub created_at: String,
    pub expires_at: String,
}

/// What a consumed pending login gives the callback.
#[derive(Debug, Clone)]
pub struct ClaimedLogin {
    pub provider: String,
    pub nonce_hash: String,
    pub return_to: String,
}

pub async fn insert_login(db: &Db, p: &PendingLogin) -> Result<(), RepoError> {
    sqlx::query(
        "insert into oidc_logins (state_hash, browser_hash, provider, nonce_hash, return_to, created_at, expires_at) \
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&p.state_hash)
    .bind(&p.browser_hash)
    .bind(&p.provider)
    .bind(&p.nonce_hash)
    .bind(&p.return_to)
    .bind(&p.created_at)
    .bind(&p.expires_at)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Consumes a pending login, atomically: it must exist, belong to this
/// browser, be unexpired and unused. Of two concurrent callbacks only one
/// gets it.
pub async fn claim_login(
    db: &Db,
    state_hash: &str,
    browser_hash: &str,
    now: &str,
) -> Result<Option<ClaimedLogin>, RepoError> {
    let row = sqlx::query(
        "update oidc_logins set used_at = $1 where state_hash = $2 and browser_hash = $3 \
         and used_at is null and expires_at > $1 returning provider, nonce_hash, return_to",
    )
    .bind(now)
    .bind(state_hash)
    .bind(browser_hash)
    .fetch_optional(db.pool())
    .await?;
    Ok(match row {
        Some(r) => Some(ClaimedLogin {
            provider: r.try_get(0)?,
            nonce_hash: r.try_get(1)?,
            return_to: r.try_get(2)?,
        }),
        None => None,
    })
}

/// Drops expired pending logins and single-use records.
pub async fn purge_expired(db: &Db, now: &str) -> Result<(), RepoError> {
    sqlx::query("delete from oidc_logins where expires_at < $1")
        .bind(now)
        .execute(db.pool())
        .await?;
    sqlx::query("delete from oidc_replay where expires_at < $1")
        .bind(now)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Records a single-use value; false if it was seen before.
pub async fn use_once(
    db: &Db,
    provider: &str,
    kind: &str,
    value_hash: &str,
    expires_at: &str,
) -> Result<bool, RepoError> {
    let done = sqlx::query(
        "insert into oidc_replay (provider, kind, value_hash, expires_at) values ($1, $2, $3, $4) \
         on conflict (provider, kind, value_hash) do nothing",
    )
    .bind(provider)
    .bind(kind)
    .bind(value_hash)
    .bind(expires_at)
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The employee a provider account is linked to.
pub async fn linked_employee(
    db: &Db,
    provider: &str,
    subject: &str,
) -> Result<Option<i64>, RepoError> {
    let row =
        sqlx::query("select employee_id from oidc_identities where provider = $1 and subject = $2")
            .bind(provider)
            .bind(subject)
            .fetch_optional(db.pool())
            .await?;
    Ok(match row {
        Some(r) => Some(r.try_get(0)?),
        None => None,
    })
}

/// Whether any provider account is linked to the employee.
pub async fn has_link(db: &Db, employee_id: i64) -> Result<bool, RepoError> {
    let row = sqlx::query("select 1 from oidc_identities where employee_id = $1")
        .bind(employee_id)
        .fetch_optional(db.pool())
        .await?;
    Ok(row.is_some())
}

/// Links a provider account to an employee.
pub async fn link(
    db: &Db,
    provider: &str,
    subject: &str,
    employee_id: i64,
    now: &str,
) -> Result<(), RepoError> {
    sqlx::query(
        "insert into oidc_identities (provider, subject, employee_id, created_at, last_login_at) \
         values ($1, $2, $3, $4, $4)",
    )
    .bind(provider)
    .bind(subject)
    .bind(employee_id)
    .bind(now)
    .execute(db.pool())
    .await?;
    Ok(())
}

pub async fn touch_link(
    db: &Db,
    provider: &str,
    subject: &str,
    now: &str,
) -> Result<(), RepoError> {
    sqlx::query(
        "update oidc_identities set last_login_at = $1 where provider = $2 and subject = $3",
    )
    .bind(now)
    .bind(provider)
    .bind(subject)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Active sessions started through `provider` with the provider session `sid`:
/// `(session_id, employee_id)`.
pub async fn sessions_by_sid(
    db: &Db,
    provider: &str,
    sid: &str,
    now: &str,
) -> Result<Vec<(String, i64)>, RepoError> {
    let rows = sqlx::query(
        "select session_id, employee_id from sessions where oidc_provider = $1 and oidc_sid = $2 \
         and revoked_at is null and expires_at > $3",
    )
    .bind(provider)
    .bind(sid)
    .bind(now)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// Active sessions of an employee started through `provider`.
pub async fn sessions_of_employee(
    db: &Db,
    provider: &str,
    employee_id: i64,
    now: &str,
) -> Result<Vec<String>, RepoError> {
    let rows = sqlx::query(
        "select session_id from sessions where oidc_provider = $1 and employee_id = $2 \
         and revoked_at is null and expires_at > $3",
    )
    .bind(provider)
    .bind(employee_id)
    .bind(now)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
}
