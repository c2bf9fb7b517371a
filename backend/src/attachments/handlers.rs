//! The attachment endpoints: upload (a raw body, `?filename=`), list, download (the
//! latest version or `?version=n`), a new version, delete. Content is sniffed, limited,
//! encrypted while it streams in and decrypted while it streams out; every change is
//! an audit event, and so is every download.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use utoipa::IntoParams;

use super::crypto::{self, ContentDecryptor, ContentEncryptor, ObjectIdentity};
use super::repo::{self, Attachment, AttachmentRow, NewVersion, StoredVersion};
use super::sniff;
use crate::AppState;
use crate::audit_log::{AuditEvent, Category, EventExt, Outcome, event};
use crate::db::RepoError;
use crate::http::validate::not_found;
use crate::http::{ApiError, ApiQuery, Caller};
use crate::model::Ticket;

/// Bytes buffered before a part goes to the store (S3 parts must be 5 MiB or more).
const STORE_PART_BYTES: usize = 8 * 1024 * 1024;

fn attachment_event(
    action: &str,
    outcome: Outcome,
    c: &Caller,
    ticket: &str,
    attachment: &str,
) -> AuditEvent {
    event(Category::Maintenance, action, outcome)
        .by(c)
        .detail("ticket_id", ticket.to_owned())
        .detail("attachment_id", attachment.to_owned())
}

/// The event of a stored upload: which version, how large, what it is.
fn uploaded(c: &Caller, ticket: &str, attachment: &str, v: &NewVersion) -> AuditEvent {
    attachment_event("attachment.upload", Outcome::Success, c, ticket, attachment)
        .detail("version", v.version)
        .detail("size_bytes", v.size_bytes)
        .detail("content_type", v.content_type.clone())
        .detail("sha256", v.sha256.clone())
}

fn too_large(max: u64) -> ApiError {
    ApiError::Custom {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        kind: "body-too-large",
        detail: format!("Attachments are at most {max} bytes"),
    }
}

fn integrity_failure(cause: &dyn std::fmt::Display, v: &StoredVersion) -> ApiError {
    tracing::error!(attachment = %v.attachment_id, version = v.version, kek_id = %v.kek_id, error = %cause, "attachment does not decrypt");
    ApiError::Custom {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        kind: "attachment-integrity",
        detail: "The stored attachment failed its integrity check and is not served; quote the request id when reporting it".into(),
    }
}

fn store_failure(e: &object_store::Error) -> ApiError {
    ApiError::Internal(format!("object store: {e}"))
}

/// An attachment with its versions, as the API shows it.
async fn view(s: &AppState, ticket: &str, row: AttachmentRow) -> Result<Attachment, ApiError> {
    let versions = repo::versions(&s.db, &row.id).await?;
    let latest = versions
        .last()
        .cloned()
        .ok_or_else(|| ApiError::Internal(format!("attachment {} has no version", row.id)))?;
    Ok(Attachment {
        id: row.id,
        ticket_id: ticket.to_owned(),
        filename: row.filename,
        created_by: row.created_by,
        created_at: row.created_at,
        latest,
        versions,
    })
}

/// `<uuid>` (what the server hands out); anything else names no attachment.
fn check_attachment_id(aid: &str) -> Result<(), ApiError> {
    uuid::Uuid::try_parse(aid)
        .ok()
        .filter(|u| u.hyphenated().to_string() == aid)
        .map(|_| ())
        .ok_or(ApiError::NotFound("attachment"))
}

/// Takes the upload's body, checks its size and sniffed type, encrypts it into the store
/// as version `version` of `attachment_id`, and returns the row to record.
async fn receive(
    s: &AppState,
    c: &Caller,
    who: ObjectIdentity,
    ticket_row_id: i64,
    headers: &HeaderMap,
    body: Body,
) -> Result<NewVersion, ApiError> {
    let (attachment_id, version) = (who.attachment_id.as_str(), who.version);
    let att = &s.attachments;
    let max = att.settings.max_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large(max));
    }
    let mut body = body.into_data_stream();
    let read_error = |e: axum::Error| {
        tracing::debug!(error = %e, "attachment body not received");
        ApiError::BadRequest("The upload did not arrive completely".into())
    };
    // The first bytes decide the type before anything is stored.
    let mut head = Vec::with_capacity(sniff::SNIFF_BYTES);
    let mut ended = false;
    while head.len() < sniff::SNIFF_BYTES {
        match body.next().await {
            Some(chunk) => {
                head.extend_from_slice(&chunk.map_err(read_error)?);
                if head.len() as u64 > max {
                    return Err(too_large(max));
                }
            }
            None => {
                ended = true;
                break;
            }
        }
    }
    if head.is_empty() {
        return Err(ApiError::Validation("The attachment is empty".into()));
    }
    let sniff_window = &head[..head.len().min(sniff::SNIFF_BYTES)];
    let content_type = sniff::content_type(sniff_window, ended && head.len() <= sniff::SNIFF_BYTES);
    if !att.settings.allowed_types.iter().any(|t| t == content_type) {
        return Err(ApiError::Custom {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            kind: "attachment-type",
            detail: format!(
                "The content is {content_type}; attachments may be: {}",
                att.settings.allowed_types.join(", ")
            ),
        });
    }
    let dir = format!("attachments/{}/{attachment_id}", who.ticket_id);
    let partial = ObjectPath::from(format!(
        "{dir}/v{version}.{}.partial",
        uuid::Uuid::new_v4().simple()
    ));
    let mut enc = ContentEncryptor::new(&who);
    let mut hash = Sha256::new();
    let mut size: u64 = 0;
    let mut writer = BufWriter::with_capacity(att.store.clone(), partial.clone(), STORE_PART_BYTES);
    let written: Result<(), ApiError> = async {
        let mut next = Some(Bytes::from(head));
        loop {
            let plain = match next.take() {
                Some(p) => p,
                None => match body.next().await {
                    Some(chunk) => chunk.map_err(read_error)?,
                    None => break,
                },
            };
            size += plain.len() as u64;
            if size > max {
                return Err(too_large(max));
            }
            hash.update(&plain);
            let ct = enc
                .push(&plain)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            if !ct.is_empty() {
                writer
                    .put(Bytes::from(ct))
                    .await
                    .map_err(|e| store_failure(&e))?;
            }
        }
        let last = enc
            .finish()
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        writer
            .put(Bytes::from(last))
            .await
            .map_err(|e| store_failure(&e))?;
        tokio::io::AsyncWriteExt::shutdown(&mut writer)
            .await
            .map_err(|e| ApiError::Internal(format!("object store: {e}")))?;
        Ok(())
    }
    .await;
    if let Err(e) = written {
        if let Err(abort) = writer.abort().await {
            tracing::warn!(error = %abort, "abandoned upload not cleaned up");
        }
        // A part may already be stored under the partial name.
        let _ = att.store.delete(&partial).await;
        return Err(e);
    }
    let sha256 = hex::encode(hash.finalize());
    let object_key = format!("{dir}/v{version}-{sha256}");
    att.store
        .rename(&partial, &ObjectPath::from(object_key.as_str()))
        .await
        .map_err(|e| store_failure(&e))?;
    let kek_id = att
        .keks
        .current_id()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let kek = att
        .keks
        .key(&kek_id)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let wrapped = crypto::wrap(&kek, &kek_id, enc.data_key(), &who)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(NewVersion {
        attachment_id: attachment_id.to_owned(),
        ticket_row_id,
        version,
        sha256,
        size_bytes: i64::try_from(size).map_err(|_| too_large(max))?,
        content_type: content_type.to_owned(),
        object_key,
        kek_id,
        wrapped_key: wrapped,
        nonce_prefix: enc.nonce_prefix().to_vec(),
        created_by: c.employee.id,
    })
}

/// Removes an object whose row could not be recorded.
async fn discard(s: &AppState, key: &str) {
    if let Err(e) = s.attachments.store.delete(&ObjectPath::from(key)).await {
        tracing::warn!(error = %e, object = key, "unrecorded attachment object not removed");
    }
}

/// Query of a new attachment.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NewAttachmentParams {
    /// The file's name: no path separators or control characters, not only dots or
    /// spaces (the server keeps the last path component and drops control characters).
    #[param(
        min_length = 1,
        max_length = 1000,
        pattern = r"^[^\x00-\x1f\x7f/\\]*[^\x00-\x1f\x7f/\\. ][^\x00-\x1f\x7f/\\]*$"
    )]
    filename: String,
}

/// Query of a new version.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UploadParams {
    /// The file's name; only its last path component is kept, without control
    /// characters. Required for a new attachment; a new version keeps the name unless
    /// one is given.
    #[param(min_length = 1, max_length = 1000)]
    filename: Option<String>,
}

#[utoipa::path(post, path = "/api/tickets/{id}/attachments", tag = "attachments",
    params(("id" = String, Path, description = "TCK-<year>-<6 digits>", pattern = r"^TCK-[0-9]{4}-[0-9]{6}$"), NewAttachmentParams),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file's bytes (its type is sniffed from them; the Content-Type sent is ignored)"),
    responses((status = 201, description = "Stored (encrypted)", body = Attachment, headers(("Location" = String)))))]
pub(crate) async fn upload(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<NewAttachmentParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let t = s.readable_ticket(&c, &id).await?;
    s.require_change(
        s.attachment_allowed(&c, "upload", &t, None),
        "add attachments to this ticket",
        || attachment_event("attachment.upload", Outcome::Failure, &c, &id, ""),
    )
    .await?;
    let filename = sniff::sanitize_filename(&q.filename).ok_or_else(|| {
        ApiError::Validation("filename must name a file in at most 1000 bytes".into())
    })?;
    let ticket_row = repo::ticket_row_id(&s.db, &id)
        .await
        .map_err(not_found("ticket"))?;
    let aid = uuid::Uuid::now_v7().hyphenated().to_string();
    let who = ObjectIdentity {
        ticket_id: t.id.clone(),
        attachment_id: aid.clone(),
        version: 1,
    };
    let v = receive(&s, &c, who, ticket_row, &headers, body).await?;
    let stored = async {
        let mut tx = s.db.begin().await?;
        repo::create(&mut tx, &filename, &v).await?;
        s.commit_audited(tx, [uploaded(&c, &id, &aid, &v)]).await
    };
    if let Err(e) = stored.await {
        discard(&s, &v.object_key).await;
        return Err(e);
    }
    let row = repo::get(&s.db, ticket_row, &aid).await?;
    let body = view(&s, &id, row).await?;
    let mut resp = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(l) = HeaderValue::from_str(&format!("/api/tickets/{id}/attachments/{aid}")) {
        resp.headers_mut().insert(header::LOCATION, l);
    }
    Ok(resp)
}

#[utoipa::path(post, path = "/api/tickets/{id}/attachments/{aid}/versions", tag = "attachments",
    params(("id" = String, Path, description = "TCK-<year>-<6 digits>", pattern = r"^TCK-[0-9]{4}-[0-9]{6}$"),
        ("aid" = String, Path, description = "The attachment's id (a UUID)", pattern = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"), UploadParams),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The new content"),
    responses((status = 201, description = "A new version was stored", body = Attachment),
        (status = 200, description = "The content equals the latest version: nothing new was stored", body = Attachment)))]
pub(crate) async fn upload_version(
    State(s): State<AppState>,
    c: Caller,
    Path((id, aid)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<UploadParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (t, ticket_row, row) = attachment_of(&s, &c, &id, &aid).await?;
    s.require_change(
        s.attachment_allowed(&c, "upload", &t, Some(row.created_by)),
        "add versions to this attachment",
        || attachment_event("attachment.upload", Outcome::Failure, &c, &id, &aid),
    )
    .await?;
    if let Some(f) = q.filename.as_deref() {
        // Checked, but the attachment keeps its name: versions share one.
        sniff::sanitize_filename(f).ok_or_else(|| {
            ApiError::Validation("filename must name a file in at most 1000 bytes".into())
        })?;
    }
    let latest = repo::stored_version(&s.db, &aid, None).await?;
    let who = ObjectIdentity {
        ticket_id: t.id.clone(),
        attachment_id: aid.clone(),
        version: latest.version + 1,
    };
    let v = receive(&s, &c, who, ticket_row, &headers, body).await?;
    if v.sha256 == latest.sha256 {
        discard(&s, &v.object_key).await;
        let body = view(&s, &id, row).await?;
        return Ok((StatusCode::OK, Json(body)).into_response());
    }
    let stored = async {
        let mut tx = s.db.begin().await?;
        repo::add_version(&mut tx, &v).await.map_err(|e| match e {
            RepoError::Conflict(_) => ApiError::Conflict(
                "Another version was uploaded at the same time; reload and retry".into(),
            ),
            e => e.into(),
        })?;
        s.commit_audited(tx, [uploaded(&c, &id, &aid, &v)]).await
    };
    if let Err(e) = stored.await {
        discard(&s, &v.object_key).await;
        return Err(e);
    }
    let body = view(&s, &id, row).await?;
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// The readable ticket `id`, its row id and its live attachment `aid`.
async fn attachment_of(
    s: &AppState,
    c: &Caller,
    id: &str,
    aid: &str,
) -> Result<(Ticket, i64, AttachmentRow), ApiError> {
    let t = s.readable_ticket(c, id).await?;
    check_attachment_id(aid)?;
    let ticket_row = repo::ticket_row_id(&s.db, id)
        .await
        .map_err(not_found("ticket"))?;
    let row = repo::get(&s.db, ticket_row, aid)
        .await
        .map_err(not_found("attachment"))?;
    if !s.attachment_allowed(c, "read", &t, Some(row.created_by)) {
        return Err(ApiError::NotFound("attachment"));
    }
    Ok((t, ticket_row, row))
}

#[utoipa::path(get, path = "/api/tickets/{id}/attachments", tag = "attachments",
    params(("id" = String, Path, description = "TCK-<year>-<6 digits>", pattern = r"^TCK-[0-9]{4}-[0-9]{6}$")),
    responses((status = 200, description = "The ticket's attachments, oldest first, each with its versions", body = Vec<Attachment>)))]
pub(crate) async fn list_attachments(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<Attachment>>, ApiError> {
    let t = s.readable_ticket(&c, &id).await?;
    let ticket_row = repo::ticket_row_id(&s.db, &id)
        .await
        .map_err(not_found("ticket"))?;
    let mut out = Vec::new();
    for row in repo::list(&s.db, ticket_row).await? {
        if s.attachment_allowed(&c, "read", &t, Some(row.created_by)) {
            out.push(view(&s, &id, row).await?);
        }
    }
    Ok(Json(out))
}

/// Query of a download.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DownloadParams {
    /// A version number; default the latest.
    #[param(minimum = 1)]
    version: Option<i64>,
}

/// A download in progress: the object's ciphertext in, plaintext chunks out.
struct Decrypting {
    dec: ContentDecryptor,
    src: BoxStream<'static, object_store::Result<Bytes>>,
    done: bool,
}

impl Decrypting {
    /// The next authenticated plaintext, `None` at a clean end. Any failure ends the
    /// download: nothing unauthenticated is ever returned.
    async fn next_plain(&mut self) -> Result<Option<Bytes>, std::io::Error> {
        if self.done {
            return Ok(None);
        }
        loop {
            match self.src.next().await {
                Some(Ok(ct)) => {
                    let plain = self.dec.push(&ct).map_err(std::io::Error::other)?;
                    if !plain.is_empty() {
                        return Ok(Some(Bytes::from(plain)));
                    }
                }
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => {
                    self.done = true;
                    self.dec.finish().map_err(std::io::Error::other)?;
                    return Ok(None);
                }
            }
        }
    }
}

#[utoipa::path(get, path = "/api/tickets/{id}/attachments/{aid}", tag = "attachments",
    params(("id" = String, Path, description = "TCK-<year>-<6 digits>", pattern = r"^TCK-[0-9]{4}-[0-9]{6}$"),
        ("aid" = String, Path, description = "The attachment's id (a UUID)", pattern = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"), DownloadParams),
    responses((status = 200, description = "The content, decrypted, as a download (Content-Disposition: attachment)",
        headers(("Content-Disposition" = String), ("X-Content-Type-Options" = String), ("ETag" = String)))))]
pub(crate) async fn download(
    State(s): State<AppState>,
    c: Caller,
    Path((id, aid)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<DownloadParams>,
) -> Result<Response, ApiError> {
    let (_, _, row) = attachment_of(&s, &c, &id, &aid).await?;
    if q.version.is_some_and(|v| v < 1) {
        return Err(ApiError::NotFound("attachment version"));
    }
    let v = repo::stored_version(&s.db, &aid, q.version)
        .await
        .map_err(not_found("attachment version"))?;
    let who = ObjectIdentity {
        ticket_id: v.ticket_id.clone(),
        attachment_id: v.attachment_id.clone(),
        version: v.version,
    };
    let att = &s.attachments;
    let kek = att
        .keks
        .key(&v.kek_id)
        .map_err(|e| integrity_failure(&e, &v))?;
    let data_key = crypto::unwrap(&kek, &v.kek_id, &v.wrapped_key, &who)
        .map_err(|e| integrity_failure(&e, &v))?;
    let size = u64::try_from(v.size_bytes).map_err(|e| integrity_failure(&e, &v))?;
    let dec = ContentDecryptor::new(&data_key, &v.nonce_prefix, &who, size)
        .map_err(|e| integrity_failure(&e, &v))?;
    drop(data_key);
    let got = att
        .store
        .get(&ObjectPath::from(v.object_key.as_str()))
        .await
        .map_err(|e| store_failure(&e))?;
    if got.meta.size != crypto::ciphertext_len(size) {
        return Err(integrity_failure(&"stored object has the wrong length", &v));
    }
    let mut state = Decrypting {
        dec,
        src: got.into_stream(),
        done: false,
    };
    // The first chunk is checked before the answer starts, so a bad object is a clean
    // error; a later bad chunk aborts the response mid-way (never bad data).
    let first = state
        .next_plain()
        .await
        .map_err(|e| integrity_failure(&e, &v))?;
    s.audit(
        attachment_event("attachment.download", Outcome::Success, &c, &id, &aid)
            .detail("version", v.version),
    )
    .await?;
    let attachment = v.attachment_id.clone();
    let rest = futures_util::stream::try_unfold(state, move |mut st| {
        let attachment = attachment.clone();
        async move {
            match st.next_plain().await {
                Ok(Some(b)) => Ok(Some((b, st))),
                Ok(None) => Ok(None),
                Err(e) => {
                    tracing::error!(attachment = %attachment, error = %e, "attachment download aborted: content failed its integrity check");
                    Err(e)
                }
            }
        }
    });
    let body = futures_util::stream::iter(first.map(Ok::<_, std::io::Error>)).chain(rest);
    let mut resp = Response::new(Body::from_stream(body));
    let h = resp.headers_mut();
    let ct = HeaderValue::from_str(&v.content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_TYPE, ct);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    if let Ok(d) = HeaderValue::from_str(&sniff::content_disposition(&row.filename)) {
        h.insert(header::CONTENT_DISPOSITION, d);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    if let Ok(e) = HeaderValue::from_str(&format!("\"{}\"", v.sha256)) {
        h.insert(header::ETAG, e);
    }
    Ok(resp)
}

#[utoipa::path(delete, path = "/api/tickets/{id}/attachments/{aid}", tag = "attachments",
    params(("id" = String, Path, description = "TCK-<year>-<6 digits>", pattern = r"^TCK-[0-9]{4}-[0-9]{6}$"),
        ("aid" = String, Path, description = "The attachment's id (a UUID)", pattern = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")),
    responses((status = 204, description = "Deleted: every version's content and key are gone")))]
pub(crate) async fn delete_attachment(
    State(s): State<AppState>,
    c: Caller,
    Path((id, aid)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (t, _, row) = attachment_of(&s, &c, &id, &aid).await?;
    s.require_change(
        s.attachment_allowed(&c, "delete", &t, Some(row.created_by)),
        "delete this attachment",
        || attachment_event("attachment.delete", Outcome::Failure, &c, &id, &aid),
    )
    .await?;
    let mut tx = s.db.begin().await?;
    let keys = repo::delete(&mut tx, &aid, c.employee.id)
        .await
        .map_err(not_found("attachment"))?;
    s.commit_audited(
        tx,
        [
            attachment_event("attachment.delete", Outcome::Success, &c, &id, &aid)
                .detail("versions", keys.len()),
        ],
    )
    .await?;
    // Only once the rows are gone: a rolled-back delete keeps readable content.
    for k in &keys {
        discard(&s, k).await;
    }
    Ok(StatusCode::NO_CONTENT)
}
