//! Identity: sign-in with password (+ TOTP or a backup code), sessions in
//! the database, short-lived EdDSA access JWTs with a JWKS, rotating refresh
//! tokens with reuse detection, the revocation feed for the proxy, MFA
//! enrolment, brute-force throttling, and the administrators' session API.

pub mod announce;
pub mod keys;
pub mod mfa;
pub mod oidc;
pub mod password;
pub mod store;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::api::{ApiJson, ApiQuery, Caller};
use crate::audit::{Category, EventExt, Level, Outcome, event};
use crate::db::{format_time, now_text};
use crate::error::ApiError;
use crate::model::Role;
use crate::repo::RepoError;

use self::keys::Keyring;
use self::password::{Passwords, Verified};
use self::store::{NewSession, RefreshUse};

/// Identity settings (validated; defaults in [`IdentitySettings::default`]).
#[derive(Debug, Clone)]
pub struct IdentitySettings {
    /// `iss` of issued tokens.
    pub issuer: String,
    /// `aud` of issued tokens.
    pub audience: String,
    pub access_ttl_seconds: i64,
    /// Default idle timeout of a session (per user overridable).
    pub session_timeout_seconds: i64,
    /// A session never outlives this, refreshes or not.
    pub session_absolute_seconds: i64,
    pub max_sessions_per_user: usize,
    /// How long a new signing key is published before it signs.
    pub key_overlap_seconds: i64,
    /// Roles that must use a second factor.
    pub mfa_required_roles: Vec<Role>,
    pub throttle: ThrottleSettings,
    /// OIDC single sign-on providers (none by default).
    pub oidc: Vec<oidc::ProviderSettings>,
    /// Redis channel on which revocations are announced to the proxies.
    pub revocation_pubsub: Option<portcullis_authz::revocation_channel::RevocationChannel>,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        Self {
            issuer: "portcullis".into(),
            audience: "portcullis".into(),
            access_ttl_seconds: 300,
            session_timeout_seconds: 1800,
            session_absolute_seconds: 12 * 3600,
            max_sessions_per_user: 5,
            key_overlap_seconds: 600,
            mfa_required_roles: Vec::new(),
            throttle: ThrottleSettings::default(),
            oidc: Vec::new(),
            revocation_pubsub: None,
        }
    }
}

/// Failed sign-in throttling, per account and per client address.
#[derive(Debug, Clone)]
pub struct ThrottleSettings {
    pub window_seconds: i64,
    /// Failures after which every further attempt is slowed down.
    pub delay_after: i64,
    pub account_lockout_failures: i64,
    pub ip_lockout_failures: i64,
    pub lockout_seconds: i64,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self {
            window_seconds: 900,
            delay_after: 3,
            account_lockout_failures: 10,
            ip_lockout_failures: 50,
            lockout_seconds: 900,
        }
    }
}

/// Identity state shared by handlers.
pub struct Identity {
    pub settings: IdentitySettings,
    pub passwords: Passwords,
    pub keyring: RwLock<Keyring>,
    /// OIDC providers, loaded by `crate::open` (empty until then).
    pub oidc: oidc::Providers,
    /// Announces revocations when Redis is configured.
    announcer: Option<Arc<announce::Announcer>>,
    /// Seals TOTP secrets at rest.
    pub totp_sealer: mfa::SecretSealer,
    /// Slots for password hashing, one per core (see `AppState::hashing`).
    hashing: tokio::sync::Semaphore,
    lockouts: prometheus::IntCounterVec,
    logins: prometheus::IntCounterVec,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn counter(name: &str, help: &str, labels: &[&str]) -> prometheus::IntCounterVec {
    let c = prometheus::IntCounterVec::new(prometheus::Opts::new(name, help), labels)
        .unwrap_or_else(|_| unreachable_metric());
    // A second registration (tests start several backends) keeps the first.
    let _ = prometheus::default_registry().register(Box::new(c.clone()));
    c
}

#[allow(
    clippy::panic,
    reason = "metric names are constants; an invalid one is a programming error caught by tests"
)]
fn unreachable_metric() -> prometheus::IntCounterVec {
    panic!("invalid metric definition")
}

/// Whether an `amr` list records a second factor: our own TOTP or backup
/// code (`otp`), or a provider's multi-factor sign-in (`mfa`).
pub fn used_second_factor(amr: &[String]) -> bool {
    amr.iter().any(|m| m == "otp" || m == "mfa")
}

impl Identity {
    /// Narrows an employee's roles to those a session holds: a role listed
    /// in `mfa_required_roles` needs a session that used a second factor.
    /// Returns the roles taken out (none, without allocating, in the usual
    /// case of a second factor or an empty list).
    pub fn withhold_roles(&self, roles: &mut Vec<Role>, mfa: bool) -> Vec<Role> {
        let required = &self.settings.mfa_required_roles;
        if mfa || required.is_empty() {
            return Vec::new();
        }
        let withheld = roles
            .iter()
            .copied()
            .filter(|r| required.contains(r))
            .collect();
        roles.retain(|r| !required.contains(r));
        withheld
    }

    pub fn new(
        settings: IdentitySettings,
        keyring: Keyring,
        totp_sealer: mfa::SecretSealer,
    ) -> Result<Self, password::PasswordError> {
        let announcer = settings.revocation_pubsub.clone().map(|target| {
            let errors = counter(
                "portcullis_revocation_announce_errors_total",
                "Revocations that could not be announced on Redis (proxies learn of them at their next poll).",
                &[],
            )
            .with_label_values(&[] as &[&str]);
            Arc::new(announce::Announcer::new(target, errors))
        });
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Ok(Self {
            settings,
            totp_sealer,
            hashing: tokio::sync::Semaphore::new(cores),
            announcer,
            passwords: Passwords::try_new()?,
            keyring: RwLock::new(keyring),
            oidc: oidc::Providers::default(),
            lockouts: counter(
                "portcullis_auth_lockouts_total",
                "Sign-in lockouts, by key kind.",
                &["kind"],
            ),
            logins: counter(
                "portcullis_auth_logins_total",
                "Sign-in attempts, by result and method.",
                &["result", "method"],
            ),
        })
    }
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn at(unix: i64) -> String {
    format_time(
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
    )
}

fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub sid: String,
    pub roles: Vec<String>,
    pub amr: Vec<String>,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    pub preferred_username: String,
}

// ------------------------------------------------------------- cookies

pub const ACCESS_COOKIE: &str = "__Host-portcullis-access";
pub const REFRESH_COOKIE: &str = "__Host-portcullis-refresh";
pub const CSRF_COOKIE: &str = "__Host-portcullis-csrf";

fn cookie(name: &str, value: &str, max_age: i64, http_only: bool) -> HeaderValue {
    let http_only = if http_only { "; HttpOnly" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Secure{http_only}; SameSite=Strict; Max-Age={max_age}"
    ))
    .unwrap_or(HeaderValue::from_static("invalid=; Max-Age=0"))
}

fn read_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

fn client_ip(headers: &HeaderMap) -> Option<String> {
    // Set by the proxy from its trusted-proxy logic; the proxy strips any
    // inbound `X-Portcullis-*` header, and only the proxy reaches the backend.
    headers
        .get("x-portcullis-client-ip")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().chars().take(45).collect())
}

// ------------------------------------------------------------- throttling

impl AppState {
    /// Seconds of lockout left for a key, if locked.
    async fn locked(&self, key: &str, now: i64) -> Result<bool, ApiError> {
        Ok(match store::failures(&self.db, key).await? {
            Some((_, _, Some(until))) => until > at(now),
            _ => false,
        })
    }

    /// Counts a failure; returns the failures in the current window. Reaching `max` locks
    /// the key and is an audit event (`lockout`).
    async fn record_failure(
        &self,
        key: &str,
        kind: &str,
        username: &str,
        max: i64,
        now: i64,
    ) -> Result<i64, ApiError> {
        let t = &self.identity.settings.throttle;
        let locked_until = at(now + t.lockout_seconds);
        let failures = store::count_failure(
            &self.db,
            key,
            &at(now),
            &at(now - t.window_seconds),
            max,
            &locked_until,
        )
        .await?;
        let locked_until = (failures >= max).then_some(locked_until);
        if failures == max {
            self.identity.lockouts.with_label_values(&[kind]).inc();
            self.audit(
                event(Category::Auth, "lockout", Outcome::Failure)
                    .level(Level::Warning)
                    .user_id(username)
                    .detail("kind", kind)
                    .detail("failures", failures)
                    .detail("locked_until", locked_until.clone().unwrap_or_default()),
            )
            .await?;
        }
        Ok(failures)
    }

    /// Slows down repeated failures (see [`penalty_delay`]).
    async fn penalty(&self, failures: i64) {
        let delay = penalty_delay(failures, self.identity.settings.throttle.delay_after);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
}

/// The delay before answering a failed sign-in: none up to `delay_after`
/// failures in the window, then 250 ms doubling with each further failure,
/// at most 4 s (lockout follows at the configured count).
fn penalty_delay(failures: i64, delay_after: i64) -> Duration {
    let over = failures.saturating_sub(delay_after);
    if over <= 0 {
        return Duration::ZERO;
    }
    let doublings = u32::try_from((over - 1).min(4)).unwrap_or(4);
    Duration::from_millis(250u64 << doublings)
}

// ------------------------------------------------------------- sign-in

/// Argon2id hashes of `secrets`, computed off the async workers (each takes
/// tens of milliseconds of CPU by design).
async fn hash_secrets(s: &AppState, secrets: Vec<String>) -> Result<Vec<String>, ApiError> {
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
    async fn hashing<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Identity) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let busy = || ApiError::Custom {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "busy",
            detail: "Too many sign-ins at once; try again in a moment".into(),
        };
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

/// A fresh Argon2id credential for `password`.
async fn new_credential(
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
async fn verify_password(
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

impl AppState {
    /// Counts a failed sign-in for the account and the address, records it
    /// (`login`, failure, with `reason`), slows the answer down and returns
    /// the generic error (or the 503 problem when it cannot be recorded).
    async fn login_failed(
        &self,
        account_key: &str,
        ip_key: &str,
        username: &str,
        now: i64,
        method: &str,
        reason: &str,
    ) -> ApiError {
        let t = self.identity.settings.throttle.clone();
        if let Err(e) = self.audit(login_failure(username, method, reason)).await {
            return e;
        }
        let counted = async {
            let n = self
                .record_failure(
                    account_key,
                    "account",
                    username,
                    t.account_lockout_failures,
                    now,
                )
                .await?;
            let m = self
                .record_failure(ip_key, "ip", username, t.ip_lockout_failures, now)
                .await?;
            Ok::<i64, ApiError>(n.max(m))
        };
        let failures = match counted.await {
            Ok(n) => n,
            Err(e) => return e,
        };
        self.identity
            .logins
            .with_label_values(&["failure", "password"])
            .inc();
        self.penalty(failures).await;
        invalid_credentials()
    }
}

/// A failed sign-in: `user.id` is the user name tried.
fn login_failure(username: &str, method: &str, reason: &str) -> portcullis_audit::AuditEvent {
    event(Category::Auth, "login", Outcome::Failure)
        .level(Level::Warning)
        .user_id(username)
        .auth_method(method)
        .detail("reason", reason)
}

/// A second factor checked at sign-in (`mfa.verify`).
fn mfa_event(
    employee_id: i64,
    username: &str,
    factor: &str,
    ok: bool,
) -> portcullis_audit::AuditEvent {
    let (outcome, level) = if ok {
        (Outcome::Success, Level::Info)
    } else {
        (Outcome::Failure, Level::Warning)
    };
    event(Category::Auth, "mfa.verify", outcome)
        .level(level)
        .user_id(employee_id.to_string())
        .detail("username", username)
        .detail("factor", factor)
}

impl AppState {
    /// Records that a session ended (`session.revoke` with `reason`): by `actor` (an
    /// administrator, or the user), or by the system. The revocation feed the proxy
    /// polls covers every proxy.
    pub async fn session_revoked(
        &self,
        session_id: &str,
        reason: &str,
        actor: Option<&Caller>,
    ) -> Result<(), ApiError> {
        let owner = store::session(&self.db, session_id)
            .await?
            .map(|s| s.employee_id);
        let mut e = event(Category::Auth, "session.revoke", Outcome::Success);
        if let Some(c) = actor {
            e = e.by(c);
            if let Some(owner) = owner {
                e = e.target(owner);
            }
        } else if let Some(owner) = owner {
            e = e.user_id(owner.to_string());
        }
        self.audit(e.session_id(session_id).detail("reason", reason))
            .await
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
    /// The 6-digit code of an enrolled authenticator.
    pub totp_code: Option<String>,
    /// One of the backup codes instead of a TOTP code.
    pub backup_code: Option<String>,
    /// Required when the password is a one-time password.
    pub new_password: Option<String>,
    /// `browser` (default): tokens in `__Host-` cookies only. `api`: tokens in the body.
    pub client: Option<String>,
}

fn invalid_credentials() -> ApiError {
    ApiError::Custom {
        status: StatusCode::UNAUTHORIZED,
        kind: "invalid-credentials",
        detail: "The username or password is not correct, or sign-in is temporarily blocked. Try again later.".into(),
    }
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

/// Issued tokens for a session.
pub struct Issued {
    access: String,
    refresh: String,
    access_ttl: i64,
    session_expires_at: String,
    /// Roles the employee has but this session does not (see
    /// [`Identity::withhold_roles`]).
    withheld_roles: Vec<Role>,
}

impl AppState {
    async fn issue(
        &self,
        session_id: &str,
        employee_id: i64,
        amr: Vec<String>,
        expires_unix: i64,
    ) -> Result<Issued, ApiError> {
        let mut e = crate::repo::get_employee(&self.db, employee_id).await?;
        let now = now_unix();
        let exp = (now + self.identity.settings.access_ttl_seconds).min(expires_unix);
        let withheld_roles = self
            .identity
            .withhold_roles(&mut e.roles, used_second_factor(&amr));
        let claims = AccessClaims {
            iss: self.identity.settings.issuer.clone(),
            aud: self.identity.settings.audience.clone(),
            sub: e.id.to_string(),
            sid: session_id.to_owned(),
            roles: e.roles.iter().map(|r| r.as_str().to_owned()).collect(),
            amr,
            iat: now,
            exp,
            jti: random_token(),
            preferred_username: e.username.clone(),
        };
        let access = self
            .identity
            .keyring
            .read()
            .map_err(|_| ApiError::Internal("keyring lock poisoned".into()))?
            .sign(&claims)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let refresh = random_token();
        store::insert_refresh(&self.db, &token_hash(&refresh), session_id).await?;
        Ok(Issued {
            access,
            refresh,
            access_ttl: exp - now,
            session_expires_at: at(expires_unix),
            withheld_roles,
        })
    }

    /// Creates a session for a verified sign-in and issues its tokens.
    pub async fn start_session(
        &self,
        employee_id: i64,
        method: &str,
        amr: Vec<String>,
        headers: &HeaderMap,
        oidc: Option<(String, Option<String>)>,
    ) -> Result<(String, Issued), ApiError> {
        let s = &self.identity.settings;
        // Oldest sessions end first when the limit is reached.
        let active = store::active_sessions(&self.db, Some(employee_id)).await?;
        let excess = (active.len() + 1).saturating_sub(s.max_sessions_per_user);
        for old in active.iter().take(excess) {
            if self
                .revoke_session(&old.session_id, "session_limit")
                .await?
            {
                self.session_revoked(&old.session_id, "session_limit", None)
                    .await?;
            }
        }
        let timeout = self.session_timeout(employee_id).await?;
        let now = now_unix();
        let absolute = now + s.session_absolute_seconds;
        let expires = (now + timeout).min(absolute);
        let sid = random_token();
        let new = NewSession {
            employee_id,
            auth_method: method.to_owned(),
            mfa: used_second_factor(&amr),
            expires_at: at(expires),
            absolute_expires_at: at(absolute),
            source_ip: client_ip(headers),
            user_agent: headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|u| u.chars().take(256).collect()),
            oidc_provider: oidc.as_ref().map(|o| o.0.clone()),
            oidc_sid: oidc.and_then(|o| o.1),
        };
        store::create_session(&self.db, &sid, &new).await?;
        let issued = self.issue(&sid, employee_id, amr, expires).await?;
        Ok((sid, issued))
    }

    async fn session_timeout(&self, employee_id: i64) -> Result<i64, ApiError> {
        use sqlx::Row;
        let row =
            sqlx::query("select session_timeout_seconds from employees where employee_id = $1")
                .bind(employee_id)
                .fetch_optional(self.db.pool())
                .await
                .map_err(RepoError::from)?;
        let per_user: Option<i64> = row.and_then(|r| r.try_get(0).ok()).flatten();
        Ok(per_user.unwrap_or(self.identity.settings.session_timeout_seconds))
    }
}

fn token_response(issued: &Issued, api_client: bool, extra: serde_json::Value) -> Response {
    let mut body = json!({
        "token_type": "Bearer",
        "expires_in": issued.access_ttl,
        "session_expires_at": issued.session_expires_at,
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    if api_client {
        body["access_token"] = json!(issued.access);
        body["refresh_token"] = json!(issued.refresh);
        return (
            StatusCode::OK,
            [(header::CACHE_CONTROL, "no-store")],
            Json(body),
        )
            .into_response();
    }
    let csrf = random_token();
    body["csrf_token"] = json!(csrf);
    let mut resp = (
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-store")],
        Json(body),
    )
        .into_response();
    let h = resp.headers_mut();
    h.append(
        header::SET_COOKIE,
        cookie(ACCESS_COOKIE, &issued.access, issued.access_ttl, true),
    );
    h.append(
        header::SET_COOKIE,
        cookie(REFRESH_COOKIE, &issued.refresh, 12 * 3600, true),
    );
    // Readable by the page for the double-submit check; carries no authority.
    h.append(
        header::SET_COOKIE,
        cookie(CSRF_COOKIE, &csrf, 12 * 3600, false),
    );
    resp
}

async fn login(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let now = now_unix();
    let username = req.username.trim().to_lowercase();
    if username.is_empty() || username.len() > 64 || req.password.len() > 1024 {
        return Err(invalid_credentials());
    }
    let account_key = format!("account:{username}");
    let ip_key = format!("ip:{}", client_ip(&headers).unwrap_or_default());
    if s.locked(&account_key, now).await? || s.locked(&ip_key, now).await? {
        // Same work and the same answer as a wrong password: no enumeration.
        // The outcome does not matter, only the work (a busy answer is fine too).
        let _ = verify_password(&s, &req.password, None).await;
        s.identity
            .logins
            .with_label_values(&["locked", "password"])
            .inc();
        s.audit(login_failure(&username, "password", "locked"))
            .await?;
        return Err(invalid_credentials());
    }
    let found = store::employee_by_username(&s.db, &username).await?;
    let credential = match &found {
        Some((id, status)) if status == "active" => store::credential(&s.db, *id).await?,
        _ => None,
    };
    let stored = match (&found, &credential) {
        (Some(_), Some(c)) => Some(c.password.clone()),
        _ => None,
    };
    let verified = verify_password(&s, &req.password, stored).await?;
    let (Some((employee_id, _)), Some(credential), Some(verified)) = (found, credential, verified)
    else {
        return Err(s
            .login_failed(
                &account_key,
                &ip_key,
                &username,
                now,
                "password",
                "invalid_credentials",
            )
            .await);
    };

    // Second factor.
    let mut method = "password";
    let mut amr = vec!["pwd".to_owned()];
    if let Some((sealed, true)) = store::totp(&s.db, employee_id).await? {
        let secret = s.open_totp_secret(employee_id, &sealed)?;
        if let Some(code) = &req.totp_code {
            let ok = match mfa::totp(&secret, "Portcullis", &username) {
                Some(t) => match mfa::matching_step(&t, code.trim(), now as u64) {
                    Some(step) => store::claim_totp_step(&s.db, employee_id, step).await?,
                    None => false,
                },
                None => false,
            };
            s.audit(mfa_event(employee_id, &username, "totp", ok))
                .await?;
            if !ok {
                return Err(s
                    .login_failed(
                        &account_key,
                        &ip_key,
                        &username,
                        now,
                        "password",
                        "mfa_failed",
                    )
                    .await);
            }
            amr.push("otp".into());
        } else if let Some(code) = &req.backup_code {
            let wanted = mfa::normalise_backup_code(code);
            let unused = store::unused_backup_codes(&s.db, employee_id).await?;
            let matching = s
                .hashing(move |identity| {
                    unused.into_iter().find_map(|(id, hash)| {
                        let stored = password::StoredPassword {
                            hash,
                            legacy_scheme: None,
                            legacy_params: None,
                        };
                        identity.passwords.verify(&wanted, &stored).map(|_| id)
                    })
                })
                .await?;
            let used = match matching {
                Some(id) => store::use_backup_code(&s.db, id).await?,
                None => false,
            };
            s.audit(mfa_event(employee_id, &username, "backup_code", used))
                .await?;
            if !used {
                return Err(s
                    .login_failed(
                        &account_key,
                        &ip_key,
                        &username,
                        now,
                        "backup_code",
                        "mfa_failed",
                    )
                    .await);
            }
            method = "backup_code";
            amr.push("otp".into());
        } else {
            return Err(ApiError::Custom {
                status: StatusCode::UNAUTHORIZED,
                kind: "mfa-required",
                detail: "Enter the code from your authenticator app (totp_code) or a backup code"
                    .into(),
            });
        }
    }

    if credential.must_change {
        let Some(new_password) = &req.new_password else {
            return Err(ApiError::Custom {
                status: StatusCode::FORBIDDEN,
                kind: "password-change-required",
                detail: "This is a one-time password: sign in again with new_password set".into(),
            });
        };
        check_new_password(&username, new_password)?;
        let stored = new_credential(&s, new_password).await?;
        store::set_credential(&s.db, employee_id, &stored, false).await?;
        s.audit(
            event(Category::Auth, "password.change", Outcome::Success)
                .user_id(employee_id.to_string())
                .detail("username", username.clone())
                .detail("reason", "one_time_password"),
        )
        .await?;
    } else if verified == Verified::Upgrade {
        let stored = new_credential(&s, &req.password).await?;
        store::set_credential(&s.db, employee_id, &stored, false).await?;
        s.audit(
            event(Category::Auth, "password.upgrade", Outcome::Success)
                .user_id(employee_id.to_string())
                .detail("username", username.clone()),
        )
        .await?;
    }
    store::clear_failures(&s.db, &account_key).await?;
    let mfa = used_second_factor(&amr);
    let (sid, issued) = s
        .start_session(employee_id, method, amr, &headers, None)
        .await?;
    s.signed_in(&sid, employee_id, &username, method, mfa, None)
        .await?;
    s.identity
        .logins
        .with_label_values(&["success", method])
        .inc();
    // Roles that need a second factor are withheld from this session: the
    // account has none enrolled yet (with one, the code was required above).
    let extra = if issued.withheld_roles.is_empty() {
        json!({})
    } else {
        json!({
            "mfa_enrollment_required": true,
            "withheld_roles": issued.withheld_roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        })
    };
    Ok(token_response(
        &issued,
        req.client.as_deref() == Some("api"),
        extra,
    ))
}

impl AppState {
    /// Ends a session (see [`store::revoke_session`]) and announces it to the
    /// proxies when Redis is configured.
    pub(crate) async fn revoke_session(
        &self,
        session_id: &str,
        reason: &str,
    ) -> Result<bool, crate::repo::RepoError> {
        let ended = store::revoke_session(&self.db, session_id, reason).await?;
        if ended {
            self.announce_revocations();
        }
        Ok(ended)
    }

    /// Ends every active session of an employee; returns their ids.
    pub(crate) async fn revoke_all(
        &self,
        employee_id: i64,
        reason: &str,
    ) -> Result<Vec<String>, crate::repo::RepoError> {
        let ended = store::revoke_all(&self.db, employee_id, reason).await?;
        if !ended.is_empty() {
            self.announce_revocations();
        }
        Ok(ended)
    }

    fn announce_revocations(&self) {
        if let Some(a) = &self.identity.announcer {
            a.announce();
        }
    }

    /// The TOTP secret of a stored (sealed) value. Fails closed: a value that
    /// cannot be opened refuses the sign-in rather than skipping the factor.
    fn open_totp_secret(&self, employee_id: i64, sealed: &str) -> Result<String, ApiError> {
        self.identity
            .totp_sealer
            .open(employee_id, sealed)
            .map_err(|e| ApiError::Internal(e.to_string()))
    }

    /// Records a sign-in (`login`, success). Fail closed: when the event cannot be
    /// recorded the new session is ended again and the sign-in refused (503).
    pub(crate) async fn signed_in(
        &self,
        session_id: &str,
        employee_id: i64,
        username: &str,
        method: &str,
        mfa: bool,
        provider: Option<&str>,
    ) -> Result<(), ApiError> {
        let mut e = event(Category::Auth, "login", Outcome::Success)
            .user_id(employee_id.to_string())
            .session_id(session_id)
            .auth_method(method)
            .detail("username", username)
            .detail("mfa", mfa);
        if let Some(p) = provider {
            e = e.detail("provider", p);
        }
        if let Err(refused) = self.audit(e).await {
            if let Err(e) = self.revoke_session(session_id, "audit_unavailable").await {
                tracing::error!(error = %e, "could not end the session whose sign-in was not recorded");
            }
            return Err(refused);
        }
        Ok(())
    }
}

fn clear_cookies(resp: &mut Response) {
    for name in [ACCESS_COOKIE, REFRESH_COOKIE, CSRF_COOKIE] {
        resp.headers_mut()
            .append(header::SET_COOKIE, cookie(name, "", 0, true));
    }
}

/// The session a request names, through its access token (even expired) or
/// its refresh token.
async fn session_of(
    s: &AppState,
    headers: &HeaderMap,
    refresh_in_body: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let token = bearer(headers).or_else(|| read_cookie(headers, ACCESS_COOKIE));
    if let Some(token) = token {
        let ring = s
            .identity
            .keyring
            .read()
            .map_err(|_| ApiError::Internal("keyring lock poisoned".into()))?;
        if let Some(c) = ring.verify::<AccessClaims>(
            token,
            &s.identity.settings.issuer,
            &s.identity.settings.audience,
        ) {
            return Ok(Some(c.sid));
        }
    }
    let refresh = refresh_in_body.or_else(|| read_cookie(headers, REFRESH_COOKIE));
    if let Some(r) = refresh {
        use sqlx::Row;
        let row = sqlx::query("select session_id from refresh_tokens where token_hash = $1")
            .bind(token_hash(r))
            .fetch_optional(s.db.pool())
            .await
            .map_err(RepoError::from)?;
        return Ok(row.and_then(|r| r.try_get(0).ok()));
    }
    Ok(None)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshRequest {
    refresh_token: Option<String>,
}

async fn logout(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Option<Json<RefreshRequest>>,
) -> Result<Response, ApiError> {
    let body = body.map(|b| b.0).unwrap_or_default();
    if let Some(sid) = session_of(&s, &headers, body.refresh_token.as_deref()).await? {
        s.logged_out(&sid, None).await?;
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    clear_cookies(&mut resp);
    Ok(resp)
}

impl AppState {
    /// Ends a session at the user's request (`logout`, then `session.revoke`). The
    /// session ends even when the event cannot be recorded (that is logged as an
    /// error): refusing a logout would be the less safe outcome.
    pub(crate) async fn logged_out(
        &self,
        session_id: &str,
        provider: Option<&str>,
    ) -> Result<(), ApiError> {
        let session = store::session(&self.db, session_id).await?;
        let revoked = self.revoke_session(session_id, "logout").await?;
        let mut e = event(Category::Auth, "logout", Outcome::Success).session_id(session_id);
        if let Some(s) = &session {
            e = e
                .user_id(s.employee_id.to_string())
                .auth_method(s.auth_method.clone());
        }
        if let Some(p) = provider {
            e = e.detail("provider", p);
        }
        self.audit_logged(e).await;
        if revoked {
            let _ = self.session_revoked(session_id, "logout", None).await;
        }
        Ok(())
    }
}

async fn refresh(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Option<Json<RefreshRequest>>,
) -> Result<Response, ApiError> {
    let body = body.map(|b| b.0).unwrap_or_default();
    let api_client = body.refresh_token.is_some();
    let Some(token) = body
        .refresh_token
        .as_deref()
        .or_else(|| read_cookie(&headers, REFRESH_COOKIE))
    else {
        return Err(ApiError::Unauthenticated);
    };
    let sid = match store::use_refresh(&s.db, &token_hash(token)).await? {
        RefreshUse::Fresh { session_id } => session_id,
        RefreshUse::Reused { session_id } => {
            // A rotated token came back: whoever holds the family is not
            // trustworthy any more. End it.
            let revoked = s.revoke_session(&session_id, "refresh_token_reuse").await?;
            let owner = store::session(&s.db, &session_id)
                .await?
                .map(|x| x.employee_id.to_string());
            let mut e = event(Category::Auth, "token.refresh_reuse", Outcome::Failure)
                .level(Level::Warning)
                .session_id(session_id.clone());
            if let Some(owner) = owner {
                e = e.user_id(owner);
            }
            s.audit(e).await?;
            if revoked {
                s.session_revoked(&session_id, "refresh_token_reuse", None)
                    .await?;
            }
            return Err(ApiError::Unauthenticated);
        }
        RefreshUse::Unknown => return Err(ApiError::Unauthenticated),
    };
    let Some(session) = store::session(&s.db, &sid).await? else {
        return Err(ApiError::Unauthenticated);
    };
    if !session.is_active(&now_text()) {
        return Err(ApiError::Unauthenticated);
    }
    let timeout = s.session_timeout(session.employee_id).await?;
    let absolute = time::OffsetDateTime::parse(
        &session.absolute_expires_at,
        &time::format_description::well_known::Rfc3339,
    )
    .map(|t| t.unix_timestamp())
    .unwrap_or(0);
    let expires = (now_unix() + timeout).min(absolute);
    store::extend_session(&s.db, &sid, &at(expires)).await?;
    let mut amr = vec![if session.auth_method == "oidc" {
        "ext".to_owned()
    } else {
        "pwd".to_owned()
    }];
    if session.mfa {
        amr.push(
            if session.auth_method == "oidc" {
                "mfa"
            } else {
                "otp"
            }
            .into(),
        );
    }
    let issued = s.issue(&sid, session.employee_id, amr, expires).await?;
    Ok(token_response(&issued, api_client, json!({})))
}

async fn jwks(State(s): State<AppState>) -> Result<Response, ApiError> {
    let body = s
        .identity
        .keyring
        .read()
        .map_err(|_| ApiError::Internal("keyring lock poisoned".into()))?
        .jwks();
    Ok(([(header::CACHE_CONTROL, "public, max-age=60")], Json(body)).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct FeedQuery {
    /// Last revocation number already seen (0 at start).
    after: Option<i64>,
}

/// Added to the access-token lifetime to get how long a revocation matters.
const REVOCATION_RETAIN_MARGIN_SECONDS: i64 = 300;

/// The revocation feed for the proxy. Only the proxy may read it: the
/// request must carry a proxy-signed identity for the `@proxy` service.
async fn revocations(
    State(s): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    ApiQuery(q): ApiQuery<FeedQuery>,
) -> Result<Response, ApiError> {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let id = s
        .identity_key
        .verify(
            "GET",
            target,
            header(crate::identity::IDENTITY_HEADER),
            header(crate::identity::SIGNATURE_HEADER),
            now_unix(),
        )
        .map_err(|_| ApiError::Unauthenticated)?;
    if id.sub != "@proxy" {
        return Err(ApiError::Forbidden(
            "the revocation feed is for the proxy".into(),
        ));
    }
    let after = q.after.unwrap_or(0).max(0);
    // A revoked session matters only while a token naming it can still be
    // valid: tokens are issued before the revocation and live at most one
    // access-token lifetime. Older revocations are not served (a restarted
    // proxy does not replay the whole history), and the proxy forgets each id
    // after `retain_seconds`. The margin covers verifier leeway and clock skew.
    let retain = s.identity.settings.access_ttl_seconds + REVOCATION_RETAIN_MARGIN_SECONDS;
    let since = at(now_unix() - retain);
    let rows = store::revocations_after(&s.db, after, &since, 1000).await?;
    let next = rows.last().map_or(after, |r| r.0);
    let ids: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    Ok(
        Json(json!({ "after": next, "session_ids": ids, "retain_seconds": retain }))
            .into_response(),
    )
}

// ------------------------------------------------------------- password, MFA

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

/// Re-authentication inside a session before a sensitive change (a new
/// password, a new authenticator): the current password must be given. A
/// stolen session must not become a password oracle, so wrong ones count
/// towards the account's lockout like failed sign-ins; each refusal is an
/// `action` failure event.
async fn reauthenticate(
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

async fn change_password(
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

/// `{}` for single sign-on accounts.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TotpEnroll {
    /// The account's current password (accounts that sign in with a
    /// password): a session alone cannot bind a new authenticator.
    password: Option<String>,
}

async fn totp_enroll(
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
struct TotpCode {
    code: String,
}

async fn totp_confirm(
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
    store::confirm_totp(&s.db, c.employee.id).await?;
    let codes = mfa::new_backup_codes();
    let hashes = hash_secrets(
        &s,
        codes
            .iter()
            .map(|c| mfa::normalise_backup_code(c))
            .collect(),
    )
    .await?;
    store::replace_backup_codes(&s.db, c.employee.id, &hashes).await?;
    s.audit(
        event(Category::Auth, "mfa.enroll", Outcome::Success)
            .by(&c)
            .detail("factor", "totp")
            .detail("backup_codes", codes.len()),
    )
    .await?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({ "backup_codes": codes })),
    )
        .into_response())
}

// ------------------------------------------------------------- administration

fn require_admin(c: &Caller) -> Result<(), ApiError> {
    c.employee
        .roles
        .contains(&Role::Administrator)
        .then_some(())
        .ok_or_else(|| ApiError::Forbidden("administrators only".into()))
}

async fn admin_sessions(
    State(s): State<AppState>,
    c: Caller,
) -> Result<Json<Vec<store::Session>>, ApiError> {
    require_admin(&c)?;
    Ok(Json(store::active_sessions(&s.db, None).await?))
}

async fn admin_revoke_session(
    State(s): State<AppState>,
    c: Caller,
    Path(sid): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_admin(&c)?;
    if !s.revoke_session(&sid, "admin").await? {
        return Err(ApiError::NotFound("active session"));
    }
    s.session_revoked(&sid, "admin", Some(&c)).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn employee_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or(ApiError::NotFound("employee"))
}

async fn admin_user_sessions(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<store::Session>>, ApiError> {
    require_admin(&c)?;
    Ok(Json(
        store::active_sessions(&s.db, Some(employee_id(&id)?)).await?,
    ))
}

async fn admin_revoke_user_sessions(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&c)?;
    let ended = s.revoke_all(employee_id(&id)?, "admin").await?;
    for sid in &ended {
        s.session_revoked(sid, "admin", Some(&c)).await?;
    }
    Ok(Json(json!({ "ended": ended.len() })))
}

async fn admin_reset_mfa(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_admin(&c)?;
    let id = employee_id(&id)?;
    crate::repo::get_employee(&s.db, id)
        .await
        .map_err(|_| ApiError::NotFound("employee"))?;
    store::reset_mfa(&s.db, id).await?;
    s.audit(
        event(Category::Auth, "mfa.reset", Outcome::Success)
            .level(Level::Warning)
            .by(&c)
            .target(id),
    )
    .await?;
    for sid in s.revoke_all(id, "mfa_reset").await? {
        s.session_revoked(&sid, "mfa_reset", Some(&c)).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Routes of the identity API.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/login", post(login))
        .route("/auth/logout", post(logout))
        .route("/auth/refresh", post(refresh))
        .route("/auth/jwks.json", get(jwks))
        .route("/auth/revocations", get(revocations))
        .route("/auth/password", post(change_password))
        .route("/auth/mfa/totp/enroll", post(totp_enroll))
        .route("/auth/mfa/totp/confirm", post(totp_confirm))
        .route("/admin/sessions", get(admin_sessions))
        .route("/admin/sessions/{sid}", delete(admin_revoke_session))
        .route(
            "/admin/users/{id}/sessions",
            get(admin_user_sessions).delete(admin_revoke_user_sessions),
        )
        .route("/admin/users/{id}/mfa/reset", post(admin_reset_mfa))
        .merge(oidc::router())
}

/// Creates the first administrator when there is none: user `admin` with a
/// one-time password written to `initial_password_file` (mode 0600), which
/// must be replaced at first sign-in.
pub async fn bootstrap_admin(
    s: &AppState,
    initial_password_file: &std::path::Path,
) -> Result<bool, ApiError> {
    use sqlx::Row;
    let count: i64 =
        sqlx::query("select count(*) from employee_roles where role = 'administrator'")
            .fetch_one(s.db.pool())
            .await
            .map_err(RepoError::from)?
            .try_get(0)
            .map_err(RepoError::from)?;
    if count > 0 {
        return Ok(false);
    }
    let one_time: String = {
        const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
        let raw: [u8; 24] = rand::random();
        raw.iter()
            .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
            .collect()
    };
    let admin = crate::repo::create_employee(
        &s.db,
        &crate::model::NewEmployee {
            username: "admin".into(),
            email: "admin@localhost.invalid".into(),
            display_name: "Administrator".into(),
            department_id: None,
            roles: vec![Role::Administrator],
        },
        false,
    )
    .await?;
    let hash = s
        .identity
        .passwords
        .hash(&one_time)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    store::set_credential(
        &s.db,
        admin.id,
        &password::StoredPassword {
            hash,
            legacy_scheme: None,
            legacy_params: None,
        },
        true,
    )
    .await?;
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = initial_password_file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| ApiError::Internal(e.to_string()))?;
        }
        let _ = std::fs::remove_file(initial_password_file);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(initial_password_file)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        writeln!(f, "username: admin\none-time password: {one_time}\n(replace it at first sign-in: POST /auth/login with new_password)")
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    }
    tracing::warn!(file = %initial_password_file.display(), "created the first administrator `admin`; its one-time password is in the file");
    s.audit(
        event(Category::User, "user.create", Outcome::Success)
            .level(Level::Warning)
            .target(admin.id)
            .detail("target_username", "admin")
            .detail("roles", vec!["administrator"])
            .detail("source", "bootstrap"),
    )
    .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_sign_ins_are_slowed_progressively_up_to_four_seconds() {
        let ms = |failures| penalty_delay(failures, 3).as_millis();
        assert_eq!(
            (0..=10).map(ms).collect::<Vec<_>>(),
            [0, 0, 0, 0, 250, 500, 1000, 2000, 4000, 4000, 4000]
        );
        assert_eq!(penalty_delay(i64::MAX, i64::MIN).as_millis(), 4000);
    }
}
