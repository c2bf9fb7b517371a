//! SQL of attachments and their versions (tables of migration 0007).

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;
use utoipa::ToSchema;

use crate::db::{Db, RepoError, Tx, classify, now_text};

/// One immutable version of an attachment's content.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AttachmentVersion {
    /// 1, 2, 3 … per attachment.
    pub version: i64,
    /// Hex SHA-256 of the content: names the version.
    pub sha256: String,
    pub size_bytes: i64,
    /// Sniffed from the content when it was uploaded.
    pub content_type: String,
    pub created_by: i64,
    pub created_at: String,
}

/// An attachment of a ticket with its latest version.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Attachment {
    pub id: String,
    /// The ticket's public id.
    pub ticket_id: String,
    pub filename: String,
    pub created_by: i64,
    pub created_at: String,
    pub latest: AttachmentVersion,
    /// Every version, oldest first.
    pub versions: Vec<AttachmentVersion>,
}

/// What the server keeps to find and open a version (never sent to clients).
#[derive(Debug, Clone)]
pub struct StoredVersion {
    pub attachment_id: String,
    pub ticket_row_id: i64,
    pub ticket_id: String,
    pub version: i64,
    pub size_bytes: i64,
    pub content_type: String,
    pub sha256: String,
    pub object_key: String,
    pub kek_id: String,
    pub wrapped_key: Vec<u8>,
    pub nonce_prefix: Vec<u8>,
}

/// A version about to be recorded.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub attachment_id: String,
    pub ticket_row_id: i64,
    pub version: i64,
    pub sha256: String,
    pub size_bytes: i64,
    pub content_type: String,
    pub object_key: String,
    pub kek_id: String,
    pub wrapped_key: Vec<u8>,
    pub nonce_prefix: Vec<u8>,
    pub created_by: i64,
}

/// The attachment row (without versions).
#[derive(Debug, Clone)]
pub struct AttachmentRow {
    pub id: String,
    pub ticket_row_id: i64,
    pub filename: String,
    pub created_by: i64,
    pub created_at: String,
}

/// The internal row id of ticket `public_id`.
pub async fn ticket_row_id(db: &Db, public_id: &str) -> Result<i64, RepoError> {
    sqlx::query("select ticket_id from tickets where public_id = $1")
        .bind(public_id)
        .fetch_optional(db.pool())
        .await?
        .ok_or(RepoError::NotFound)?
        .try_get(0)
        .map_err(RepoError::from)
}

fn version_row(r: &AnyRow) -> Result<AttachmentVersion, RepoError> {
    Ok(AttachmentVersion {
        version: r.try_get("version")?,
        sha256: r.try_get("content_sha256")?,
        size_bytes: r.try_get("size_bytes")?,
        content_type: r.try_get("content_type")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
    })
}

async fn insert_version(tx: &mut Tx, v: &NewVersion) -> Result<(), RepoError> {
    sqlx::query(
        "insert into attachment_versions (attachment_id, ticket_id, version, content_sha256, size_bytes, \
         content_type, object_key, kek_id, wrapped_key, nonce_prefix, created_by, created_at) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(&v.attachment_id)
    .bind(v.ticket_row_id)
    .bind(v.version)
    .bind(&v.sha256)
    .bind(v.size_bytes)
    .bind(&v.content_type)
    .bind(&v.object_key)
    .bind(&v.kek_id)
    .bind(hex::encode(&v.wrapped_key))
    .bind(hex::encode(&v.nonce_prefix))
    .bind(v.created_by)
    .bind(now_text())
    .execute(&mut **tx)
    .await
    .map_err(|e| classify(e, "this version"))?;
    Ok(())
}

/// Records a new attachment named `filename` with its first version, in `tx` (the
/// caller commits).
pub async fn create(tx: &mut Tx, filename: &str, first: &NewVersion) -> Result<(), RepoError> {
    sqlx::query(
        "insert into attachments (attachment_id, ticket_id, filename, created_by, created_at) \
         values ($1, $2, $3, $4, $5)",
    )
    .bind(&first.attachment_id)
    .bind(first.ticket_row_id)
    .bind(filename)
    .bind(first.created_by)
    .bind(now_text())
    .execute(&mut **tx)
    .await
    .map_err(|e| classify(e, "this attachment"))?;
    insert_version(tx, first).await
}

/// Records another version of an existing attachment. Two uploads racing for the same
/// version number: the second gets a conflict. In `tx` (the caller commits).
pub async fn add_version(tx: &mut Tx, v: &NewVersion) -> Result<(), RepoError> {
    insert_version(tx, v).await
}

/// A live (not deleted) attachment of ticket row `ticket_row_id`.
pub async fn get(db: &Db, ticket_row_id: i64, id: &str) -> Result<AttachmentRow, RepoError> {
    let r = sqlx::query(
        "select attachment_id, ticket_id, filename, created_by, created_at from attachments \
         where attachment_id = $1 and ticket_id = $2 and deleted_at is null",
    )
    .bind(id)
    .bind(ticket_row_id)
    .fetch_optional(db.pool())
    .await?
    .ok_or(RepoError::NotFound)?;
    Ok(AttachmentRow {
        id: r.try_get(0)?,
        ticket_row_id: r.try_get(1)?,
        filename: r.try_get(2)?,
        created_by: r.try_get(3)?,
        created_at: r.try_get(4)?,
    })
}

const VERSION_COLUMNS: &str = "v.attachment_id, v.ticket_id, t.public_id, v.version, v.size_bytes, \
     v.content_type, v.content_sha256, v.object_key, v.kek_id, v.wrapped_key, v.nonce_prefix";

fn stored_row(r: &AnyRow) -> Result<StoredVersion, RepoError> {
    let hex_col = |i: usize| -> Result<Vec<u8>, RepoError> {
        let s: String = r.try_get(i)?;
        hex::decode(s).map_err(|_| RepoError::Invalid("stored key material is not hex".into()))
    };
    Ok(StoredVersion {
        attachment_id: r.try_get(0)?,
        ticket_row_id: r.try_get(1)?,
        ticket_id: r.try_get(2)?,
        version: r.try_get(3)?,
        size_bytes: r.try_get(4)?,
        content_type: r.try_get(5)?,
        sha256: r.try_get(6)?,
        object_key: r.try_get(7)?,
        kek_id: r.try_get(8)?,
        wrapped_key: hex_col(9)?,
        nonce_prefix: hex_col(10)?,
    })
}

/// Version `version` of attachment `id`, or the latest with `None`.
pub async fn stored_version(
    db: &Db,
    id: &str,
    version: Option<i64>,
) -> Result<StoredVersion, RepoError> {
    let sql = format!(
        "select {VERSION_COLUMNS} from attachment_versions v join tickets t on t.ticket_id = v.ticket_id \
         where v.attachment_id = $1 and ($2 = 0 or v.version = $2) order by v.version desc limit 1"
    );
    let r = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(version.unwrap_or(0))
        .fetch_optional(db.pool())
        .await?
        .ok_or(RepoError::NotFound)?;
    stored_row(&r)
}

/// Every version of attachment `id`, oldest first.
pub async fn versions(db: &Db, id: &str) -> Result<Vec<AttachmentVersion>, RepoError> {
    sqlx::query(
        "select version, content_sha256, size_bytes, content_type, created_by, created_at \
         from attachment_versions where attachment_id = $1 order by version",
    )
    .bind(id)
    .fetch_all(db.pool())
    .await?
    .iter()
    .map(version_row)
    .collect()
}

/// The live attachments of a ticket, oldest first.
pub async fn list(db: &Db, ticket_row_id: i64) -> Result<Vec<AttachmentRow>, RepoError> {
    sqlx::query(
        "select attachment_id, ticket_id, filename, created_by, created_at from attachments \
         where ticket_id = $1 and deleted_at is null order by created_at, attachment_id",
    )
    .bind(ticket_row_id)
    .fetch_all(db.pool())
    .await?
    .iter()
    .map(|r| {
        Ok(AttachmentRow {
            id: r.try_get(0)?,
            ticket_row_id: r.try_get(1)?,
            filename: r.try_get(2)?,
            created_by: r.try_get(3)?,
            created_at: r.try_get(4)?,
        })
    })
    .collect()
}

/// Marks attachment `id` deleted by `by` and forgets its versions (their wrapped keys
/// with them) in `tx` (the caller commits); returns the object keys to remove from the
/// store once it has.
pub async fn delete(tx: &mut Tx, id: &str, by: i64) -> Result<Vec<String>, RepoError> {
    let keys = sqlx::query("select object_key from attachment_versions where attachment_id = $1")
        .bind(id)
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<Vec<_>, _>>()?;
    let done = sqlx::query(
        "update attachments set deleted_at = $1, deleted_by = $2 where attachment_id = $3 and deleted_at is null",
    )
    .bind(now_text())
    .bind(by)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() != 1 {
        return Err(RepoError::NotFound);
    }
    sqlx::query("delete from attachment_versions where attachment_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(keys)
}

/// Versions whose data key is wrapped under another KEK than `kek_id`, at most `limit`.
pub async fn wrapped_elsewhere(
    db: &Db,
    kek_id: &str,
    limit: i64,
) -> Result<Vec<StoredVersion>, RepoError> {
    let sql = format!(
        "select {VERSION_COLUMNS} from attachment_versions v join tickets t on t.ticket_id = v.ticket_id \
         where v.kek_id <> $1 order by v.attachment_id, v.version limit $2"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(kek_id)
        .bind(limit)
        .fetch_all(db.pool())
        .await?
        .iter()
        .map(stored_row)
        .collect()
}

/// Replaces the wrapped key of one version, only if it is still wrapped under
/// `old_kek` (so a rerun or a concurrent rotation never overwrites newer work).
/// Returns whether the row changed.
pub async fn rewrap(
    db: &Db,
    v: &StoredVersion,
    new_kek: &str,
    wrapped: &[u8],
) -> Result<bool, RepoError> {
    let done = sqlx::query(
        "update attachment_versions set kek_id = $1, wrapped_key = $2 \
         where attachment_id = $3 and version = $4 and kek_id = $5 and wrapped_key = $6",
    )
    .bind(new_kek)
    .bind(hex::encode(wrapped))
    .bind(&v.attachment_id)
    .bind(v.version)
    .bind(&v.kek_id)
    .bind(hex::encode(&v.wrapped_key))
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// How many versions each KEK wraps.
pub async fn kek_usage(db: &Db) -> Result<Vec<(String, i64)>, RepoError> {
    sqlx::query("select kek_id, count(*) from attachment_versions group by kek_id order by kek_id")
        .fetch_all(db.pool())
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}
