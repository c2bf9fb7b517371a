//! Sessions: ending one or all of an employee's (announced to the proxies when Redis
//! is configured), the `session.revoke` and `logout` events, `POST /auth/logout`,
//! the caller's own sessions (`GET /auth/session`, `GET /auth/sessions`,
//! `DELETE /auth/sessions/{sid}`) and the administrators' session API
//! (`/admin/sessions`, `/admin/users/{id}/sessions`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use portcullis_contract::cookies::{ACCESS_COOKIE, REFRESH_COOKIE, cookie as read_cookie};
use serde_json::json;

use super::cookies::{bearer, clear_cookies};
use super::store;
use super::tokens::{AccessClaims, RefreshRequest, token_hash};
use crate::AppState;
use crate::audit_log::{Category, EventExt, Outcome, event};
use crate::db::RepoError;
use crate::directory::{EndSessions, repo};
use crate::http::policy::require_admin;
use crate::http::validate::parse_id;
use crate::http::{ApiError, Caller};

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

impl AppState {
    /// Ends a session (see [`store::revoke_session`]) and announces it to the
    /// proxies when Redis is configured.
    pub(crate) async fn revoke_session(
        &self,
        session_id: &str,
        reason: &str,
    ) -> Result<bool, RepoError> {
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
    ) -> Result<Vec<String>, RepoError> {
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
}

/// The session a request names, through its access token (even expired) or
/// its refresh token.
pub(super) async fn session_of(
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

pub(super) async fn logout(
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

/// `GET /auth/session`, a public route: who the request is signed in as, for the web
/// application (its access token is `HttpOnly`). Anonymous callers, and callers whose
/// session has ended, get `{"authenticated": false}` rather than a 401, so asking is
/// never an error.
pub(super) async fn current_session(
    State(s): State<AppState>,
    caller: Result<Caller, ApiError>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let anonymous = || Json(json!({ "authenticated": false }));
    let c = match caller {
        Ok(c) => c,
        Err(ApiError::Unauthenticated) => return Ok(anonymous()),
        Err(e) => return Err(e),
    };
    let Some(sid) = c.identity.session_id.as_deref() else {
        return Ok(anonymous());
    };
    let Some(session) = store::session(&s.db, sid).await? else {
        return Ok(anonymous());
    };
    // The caller's roles already lack those withheld for want of a second factor;
    // the page says which they are.
    let mut held = repo::get_employee(&s.db, c.employee.id).await?.roles;
    let withheld = s.identity.withhold_roles(&mut held, session.mfa);
    let mfa_enrolled = matches!(store::totp(&s.db, c.employee.id).await?, Some((_, true)));
    let e = &c.employee;
    Ok(Json(json!({
        "authenticated": true,
        "employee_id": e.id,
        "username": e.username,
        "display_name": e.display_name,
        "email": e.email,
        "department_id": e.department_id,
        "roles": e.roles,
        "withheld_roles": withheld,
        "auth_method": session.auth_method,
        "oidc_provider": session.oidc_provider,
        "mfa": session.mfa,
        "mfa_enrolled": mfa_enrolled,
        "session_id": session.session_id,
        "session_expires_at": session.expires_at,
        "session_absolute_expires_at": session.absolute_expires_at,
    })))
}

/// One of the caller's sessions, marked when it is the one asking.
#[derive(serde::Serialize)]
pub(super) struct OwnSession {
    #[serde(flatten)]
    session: store::Session,
    current: bool,
}

/// `GET /auth/sessions`: the caller's active sessions, oldest first.
pub(super) async fn own_sessions(
    State(s): State<AppState>,
    c: Caller,
) -> Result<Json<Vec<OwnSession>>, ApiError> {
    let current = c.identity.session_id.as_deref();
    let sessions = store::active_sessions(&s.db, Some(c.employee.id)).await?;
    Ok(Json(
        sessions
            .into_iter()
            .map(|session| OwnSession {
                current: current == Some(session.session_id.as_str()),
                session,
            })
            .collect(),
    ))
}

/// `DELETE /auth/sessions/{sid}`: ends one of the caller's own sessions (another
/// device, or this one). Anyone else's session, ended or not, is "not found": the
/// answer does not tell whether such a session exists.
pub(super) async fn end_own_session(
    State(s): State<AppState>,
    c: Caller,
    Path(sid): Path<String>,
) -> Result<Response, ApiError> {
    let own = store::session(&s.db, &sid)
        .await?
        .is_some_and(|session| session.employee_id == c.employee.id);
    if !own || !s.revoke_session(&sid, "user").await? {
        return Err(ApiError::NotFound("active session"));
    }
    s.session_revoked(&sid, "user", Some(&c)).await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if c.identity.session_id.as_deref() == Some(sid.as_str()) {
        // This browser's own session: its cookies are of no further use.
        clear_cookies(&mut resp);
    }
    Ok(resp)
}

pub(super) async fn admin_sessions(
    State(s): State<AppState>,
    c: Caller,
) -> Result<Json<Vec<store::Session>>, ApiError> {
    require_admin(&c)?;
    Ok(Json(store::active_sessions(&s.db, None).await?))
}

pub(super) async fn admin_revoke_session(
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

pub(super) async fn admin_user_sessions(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<store::Session>>, ApiError> {
    require_admin(&c)?;
    Ok(Json(
        store::active_sessions(&s.db, Some(parse_id(&id, "employee")?)).await?,
    ))
}

pub(super) async fn admin_revoke_user_sessions(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&c)?;
    let ended = s.revoke_all(parse_id(&id, "employee")?, "admin").await?;
    for sid in &ended {
        s.session_revoked(sid, "admin", Some(&c)).await?;
    }
    Ok(Json(json!({ "ended": ended.len() })))
}

impl EndSessions for AppState {
    async fn end_sessions(
        &self,
        employee_id: i64,
        reason: &str,
        by: &Caller,
    ) -> Result<(), ApiError> {
        for sid in self.revoke_all(employee_id, reason).await? {
            self.session_revoked(&sid, reason, Some(by)).await?;
        }
        Ok(())
    }
}
