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

/// How long a password check may wait for a hashing slot before the request
/// is answered 503 (never counted as a failed sign-in).
const HASHING_WAIT: Duration = Duration::from_secs(10);

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

/// Password checks take turns per client network (an IPv6 client by its /64, as the
/// proxy's limits and the lockouts count it): one check at a time per network, the
/// others of that network waiting without holding a hashing slot. A flood of made-up
/// sign-ins from one address then holds one slot at most, and everyone else's checks
/// keep the rest. Entries live only while a check of their network is in flight.
#[derive(Debug, Default)]
pub(super) struct NetworkTurns {
    turns: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Semaphore>>>,
}

/// A network's turn at password checking; the next one waiting goes when it drops.
pub(super) struct NetworkTurn<'a> {
    turns: &'a NetworkTurns,
    network: String,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl NetworkTurns {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Arc<tokio::sync::Semaphore>>>
    {
        self.turns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits (at most [`HASHING_WAIT`]) for `network`'s turn.
    pub(super) async fn take(&self, network: &str) -> Result<NetworkTurn<'_>, ApiError> {
        let semaphore = Arc::clone(
            self.lock()
                .entry(network.to_owned())
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(1))),
        );
        let mut turn = NetworkTurn {
            turns: self,
            network: network.to_owned(),
            permit: None,
        };
        turn.permit = Some(
            tokio::time::timeout(HASHING_WAIT, semaphore.acquire_owned())
                .await
                .map_err(|_| busy())?
                .map_err(|_| busy())?,
        );
        Ok(turn)
    }
}

impl Drop for NetworkTurn<'_> {
    fn drop(&mut self) {
        drop(self.permit.take());
        let mut turns = self.turns.lock();
        // Only the map holds it: nobody of this network is checking or waiting.
        if turns
            .get(&self.network)
            .is_some_and(|s| Arc::strong_count(s) == 1)
        {
            turns.remove(&self.network);
        }
    }
}

fn busy() -> ApiError {
    ApiError::Custom {
        status: StatusCode::SERVICE_UNAVAILABLE,
        kind: "busy",
        detail: "Too many sign-ins at once; try again in a moment".into(),
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
    store::set_credential(&s.db, c.employee.id, &stored, false).await?;
    s.audit(event(Category::Auth, "password.change", Outcome::Success).by(&c))
        .await?;
    for sid in s.revoke_all(c.employee.id, "password_change").await? {
        s.session_revoked(&sid, "password_change", Some(&c)).await?;
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    clear_cookies(&mut resp);
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_check_at_a_time_per_network_and_none_left_behind() {
        let turns = NetworkTurns::default();
        let first = turns.take("203.0.113.7").await.unwrap();
        // Another network goes at once; the same network waits for the first.
        let other = turns.take("2001:db8:1:2::/64").await.unwrap();
        let same = tokio::time::timeout(Duration::from_millis(50), turns.take("203.0.113.7"));
        assert!(
            same.await.is_err(),
            "a second check of one network ran at once"
        );
        drop(other);
        drop(first);
        let again = tokio::time::timeout(Duration::from_millis(50), turns.take("203.0.113.7"));
        let again = again.await.expect("the turn was not handed on").unwrap();
        drop(again);
        assert!(turns.lock().is_empty(), "entries outlive their checks");
    }
}
