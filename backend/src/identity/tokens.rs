//! Tokens: short-lived EdDSA access JWTs ([`AccessClaims`]) and rotating refresh
//! tokens for a session, the token response (body or `__Host-` cookies), and
//! `POST /auth/refresh` with refresh-token reuse detection.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis_contract::amr::{self, used_second_factor};
use portcullis_contract::cookies::{
    ACCESS_COOKIE, CSRF_COOKIE, REFRESH_COOKIE, cookie as read_cookie,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::cookies::{client_ip, cookie};
use super::store::{self, NewSession, RefreshUse};
use crate::AppState;
use crate::audit_log::{Category, Level, Outcome, event};
use crate::db::{RepoError, format_time, now_text};
use crate::directory::repo;
use crate::http::ApiError;
use crate::model::Role;

pub(super) fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

pub(super) fn at(unix: i64) -> String {
    format_time(
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
    )
}

pub(super) fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(super) fn token_hash(token: &str) -> String {
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

/// Issued tokens for a session.
pub struct Issued {
    pub(super) access: String,
    pub(super) refresh: String,
    pub(super) access_ttl: i64,
    pub(super) session_expires_at: String,
    /// Roles the employee has but this session does not (see
    /// `IdentityService::withhold_roles`).
    pub(super) withheld_roles: Vec<Role>,
}

impl AppState {
    async fn issue(
        &self,
        session_id: &str,
        employee_id: i64,
        amr: Vec<String>,
        expires_unix: i64,
    ) -> Result<Issued, ApiError> {
        let mut e = repo::get_employee(&self.db, employee_id).await?;
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

pub(super) fn token_response(
    issued: &Issued,
    api_client: bool,
    extra: serde_json::Value,
) -> Response {
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RefreshRequest {
    pub(super) refresh_token: Option<String>,
}

pub(super) async fn refresh(
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
        amr::EXTERNAL.to_owned()
    } else {
        amr::PASSWORD.to_owned()
    }];
    if session.mfa {
        amr.push(
            if session.auth_method == "oidc" {
                amr::MULTI_FACTOR
            } else {
                amr::ONE_TIME_PASSWORD
            }
            .into(),
        );
    }
    let issued = s.issue(&sid, session.employee_id, amr, expires).await?;
    Ok(token_response(&issued, api_client, json!({})))
}
