//! The second factor in a session: TOTP enrolment (`/auth/mfa/totp/enroll`,
//! `/confirm`, with backup codes), opening sealed secrets, and the administrators'
//! reset (`/admin/users/{id}/mfa/reset`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::credentials::{hash_secrets, reauthenticate};
use super::tokens::now_unix;
use super::{mfa, store};
use crate::AppState;
use crate::audit_log::{Category, EventExt, Level, Outcome, event};
use crate::directory::repo;
use crate::http::policy::require_admin;
use crate::http::validate::parse_id;
use crate::http::{ApiError, ApiJson, Caller};

impl AppState {
    /// The TOTP secret of a stored (sealed) value. Fails closed: a value that
    /// cannot be opened refuses the sign-in rather than skipping the factor.
    pub(super) fn open_totp_secret(
        &self,
        employee_id: i64,
        sealed: &str,
    ) -> Result<String, ApiError> {
        self.identity
            .totp_sealer
            .open(employee_id, sealed)
            .map_err(|e| ApiError::Internal(e.to_string()))
    }
}

/// `{}` for single sign-on accounts.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TotpEnroll {
    /// The account's current password (accounts that sign in with a
    /// password): a session alone cannot bind a new authenticator.
    password: Option<String>,
}

pub(super) async fn totp_enroll(
    State(s): State<AppState>,
    c: Caller,
    ApiJson(req): ApiJson<TotpEnroll>,
) -> Result<Response, ApiError> {
    if let Some((_, true)) = store::totp(&s.db, c.employee.id).await? {
        return Err(ApiError::Conflict(
            "an authenticator is already enrolled; an administrator can reset it".into(),
        ));
    }
    // Whoever holds a stolen session must not be able to bind their own
    // authenticator and lock the owner out. Single sign-on accounts have no
    // password here: their provider authenticated this session.
    if let Some(cred) = store::credential(&s.db, c.employee.id).await? {
        let Some(given) = req.password else {
            return Err(ApiError::Validation(
                "give the account's current password (password) to enrol an authenticator".into(),
            ));
        };
        reauthenticate(&s, &c, &given, cred.password, "mfa.enroll").await?;
    }
    let secret = mfa::new_secret();
    let sealed = s
        .identity
        .totp_sealer
        .seal(c.employee.id, &secret)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    store::start_totp(&s.db, c.employee.id, &sealed).await?;
    let t = mfa::totp(&secret, "Portcullis", &c.employee.username)
        .ok_or(ApiError::Internal("totp".into()))?;
    let uri = t.get_url();
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({ "secret": secret, "otpauth_uri": uri, "qr_svg": mfa::qr_svg(&uri) })),
    )
        .into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TotpCode {
    code: String,
}

pub(super) async fn totp_confirm(
    State(s): State<AppState>,
    c: Caller,
    ApiJson(req): ApiJson<TotpCode>,
) -> Result<Response, ApiError> {
    let Some((sealed, confirmed)) = store::totp(&s.db, c.employee.id).await? else {
        return Err(ApiError::Conflict("start the enrolment first".into()));
    };
    let secret = s.open_totp_secret(c.employee.id, &sealed)?;
    if confirmed {
        return Err(ApiError::Conflict("already enrolled".into()));
    }
    let t = mfa::totp(&secret, "Portcullis", &c.employee.username)
        .ok_or(ApiError::Internal("totp".into()))?;
    let ok = match mfa::matching_step(&t, req.code.trim(), now_unix() as u64) {
        Some(step) => store::claim_totp_step(&s.db, c.employee.id, step).await?,
        None => false,
    };
    if !ok {
        s.audit(
            event(Category::Auth, "mfa.enroll", Outcome::Failure)
                .level(Level::Warning)
                .by(&c)
                .detail("factor", "totp")
                .detail("reason", "invalid_code"),
        )
        .await?;
        return Err(ApiError::Validation(
            "the code is not valid; check the device clock and try the next code".into(),
        ));
    }
    let codes = mfa::new_backup_codes();
    let hashes = hash_secrets(
        &s,
        codes
            .iter()
            .map(|c| mfa::normalise_backup_code(c))
            .collect(),
    )
    .await?;
    let mut tx = s.db.begin().await?;
    store::confirm_totp(&mut tx, c.employee.id).await?;
    store::replace_backup_codes(&mut tx, c.employee.id, &hashes).await?;
    s.commit_audited(
        tx,
        [event(Category::Auth, "mfa.enroll", Outcome::Success)
            .by(&c)
            .detail("factor", "totp")
            .detail("backup_codes", codes.len())],
    )
    .await?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({ "backup_codes": codes })),
    )
        .into_response())
}

pub(super) async fn admin_reset_mfa(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_admin(&c)?;
    let id = parse_id(&id, "employee")?;
    repo::get_employee(&s.db, id)
        .await
        .map_err(|_| ApiError::NotFound("employee"))?;
    let mut tx = s.db.begin().await?;
    store::reset_mfa(&mut tx, id).await?;
    s.commit_audited(
        tx,
        [event(Category::Auth, "mfa.reset", Outcome::Success)
            .level(Level::Warning)
            .by(&c)
            .target(id)],
    )
    .await?;
    for sid in s.revoke_all(id, "mfa_reset").await? {
        s.session_revoked(&sid, "mfa_reset", Some(&c)).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}
