//! Passwords in use: Argon2id work off the async workers (bounded to one job per
//! core, and for sign-ins one at a time per client network), new credentials, checks with the dummy hash when there is none, the
//! password rules, re-authentication before a sensitive change, and
//! `POST /auth/password`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::cookies::clear_cookies;
use super::password::{self, Verified};
use super::service::IdentityService;
use super::store;
use super::tokens::now_unix;
use crate::AppState;
use crate::audit_log::{Category, EventExt, Level, Outcome, event};
use crate::http::{ApiError, ApiJson, Caller};

/// Argon2id hashes of `secrets`, computed off the async workers (each takes
/// tens of milliseconds of CPU by design).
pub(super) async fn hash_secrets(
    s: &AppState,
    secrets: Vec<String>,
) -> Result<Vec<String>, ApiError> {
    s.hashing(move |identity| {
        secrets
            .iter()
            .map(|p| identity.passwords.hash(p))
            .collect::<Result<Vec<_>, _>>()
    })
    .await?
    .map_err(|e| ApiError::Internal(e.to_string()))
}

/// How long Argon2id's working memory waits for the next hash before it goes back to the
/// kernel: a burst of sign-ins maps it once, an idle server does not hold it.
const HASH_MEMORY_KEPT: Duration = Duration::from_secs(5);

/// Every [`HASH_MEMORY_KEPT`], unmaps the Argon2id memory no hash has used for as long
/// (run by [`crate::serve`]).
pub async fn hash_memory_release(state: AppState) {
    loop {
        tokio::time::sleep(HASH_MEMORY_KEPT).await;
        state
            .identity
            .passwords
            .release_idle_memory(HASH_MEMORY_KEPT);
    }
}

/// How long a password check may wait for a hashing slot before the request
/// is answered 503 (never counted as a failed sign-in).
const HASHING_WAIT: Duration = super::turns::TURN_WAIT;

impl AppState {
    /// Runs password-hashing work on the blocking pool, at most one job per
    /// core at a time (first come, first served). Each Argon2id job takes
    /// 19 MiB and tens of milliseconds of CPU: unbounded, a burst of sign-ins
    /// from many addresses would multiply that memory (500 at once: ~9.5 GiB).
    /// At 50 sign-ins/s the bound costs nothing measurable (BENCHMARKS.md).
    pub(super) async fn hashing<T: Send + 'static>(
        &self,
        job: impl FnOnce(&IdentityService) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let busy = super::turns::busy;
        let _permit = tokio::time::timeout(HASHING_WAIT, self.identity.hashing.acquire())
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        let identity = Arc::clone(&self.identity);
        tokio::task::spawn_blocking(move || job(&identity))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))
    }
}

/// The answer to every failed sign-in or re-authentication (no enumeration).
pub(super) fn invalid_credentials() -> ApiError {
    ApiError::Custom {
        status: StatusCode::UNAUTHORIZED,
        kind: "invalid-credentials",
        detail: "The username or password is not correct, or sign-in is temporarily blocked. Try again later.".into(),
    }
}

/// A fresh Argon2id credential for `password`.
pub(super) async fn new_credential(
    s: &AppState,
    password: &str,
) -> Result<password::StoredPassword, ApiError> {
    let hash = hash_secrets(s, vec![password.to_owned()])
        .await?
        .pop()
        .ok_or_else(|| ApiError::Internal("no hash".into()))?;
    Ok(password::StoredPassword {
        hash,
        legacy_scheme: None,
        legacy_params: None,
    })
}

/// Checks a password (or spends the same work on the dummy hash when there
/// is no credential) on the blocking pool: Argon2id at OWASP cost takes tens
/// of milliseconds of CPU, which must not stall the async workers.
pub(super) async fn verify_password(
    s: &AppState,
    password: &str,
    stored: Option<password::StoredPassword>,
) -> Result<Option<Verified>, ApiError> {
    // Only timing depends on it: without it the check itself is unchanged.
    let legacy_cost = store::max_legacy_bcrypt_cost(&s.db)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read legacy credential costs");
            None
        });
    let password = password.to_owned();
    s.hashing(move |identity| {
        identity
            .passwords
            .verify_padded(&password, stored.as_ref(), legacy_cost)
    })
    .await
}

pub fn check_new_password(username: &str, pw: &str) -> Result<(), ApiError> {
    let n = pw.chars().count();
    if !(12..=256).contains(&n) {
        return Err(ApiError::Validation(
            "a password needs 12 to 256 characters".into(),
        ));
    }
    if pw.to_lowercase().contains(&username.to_lowercase()) {
        return Err(ApiError::Validation(
            "a password must not contain the username".into(),
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PasswordChange {
    current_password: String,
    new_password: String,
}

/// Re-authentication inside a session before a sensitive change (a new
/// password, a new authenticator): the current password must be given. A
/// stolen session must not become a password oracle, so wrong ones count
/// towards the account's lockout like failed sign-ins; each refusal is an
/// `action` failure event.
pub(super) async fn reauthenticate(
    s: &AppState,
    c: &Caller,
    given: &str,
    stored: password::StoredPassword,
    action: &'static str,
) -> Result<(), ApiError> {
    let now = now_unix();
    let account_key = format!("account:{}", c.employee.username);
    let locked = s.locked(&account_key, now).await?;
    if !locked && verify_password(s, given, Some(stored)).await?.is_some() {
        return Ok(());
    }
    s.audit(
        event(Category::Auth, action, Outcome::Failure)
            .level(Level::Warning)
            .by(c)
            .detail(
                "reason",
                if locked {
                    "locked"
                } else {
                    "invalid_current_password"
                },
            ),
    )
    .await?;
    if !locked {
        let t = &s.identity.settings.throttle;
        let failures = s
            .record_failure(
                &account_key,
                "account",
                &c.employee.username,
                t.account_lockout_failures,
                now,
            )
            .await?;
        s.penalty(failures).await;
    }
    Err(invalid_credentials())
}

pub(super) async fn change_password(
    State(s): State<AppState>,
    c: Caller,
    ApiJson(req): ApiJson<PasswordChange>,
) -> Result<Response, ApiError> {
    let cred = store::credential(&s.db, c.employee.id)
        .await?
        .ok_or(ApiError::Forbidden("this account has no password".into()))?;
    reauthenticate(
        &s,
        &c,
        &req.current_password,
        cred.password,
        "password.change",
    )
    .await?;
    check_new_password(&c.employee.username, &req.new_password)?;
    let stored = new_credential(&s, &req.new_password).await?;
    let mut tx = s.db.begin().await?;
    store::set_credential(&mut *tx, c.employee.id, &stored, false).await?;
    s.commit_audited(
        tx,
        [event(Category::Auth, "password.change", Outcome::Success).by(&c)],
    )
    .await?;
    for sid in s.revoke_all(c.employee.id, "password_change").await? {
        s.session_revoked(&sid, "password_change", Some(&c)).await?;
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    clear_cookies(&mut resp);
    Ok(resp)
}
