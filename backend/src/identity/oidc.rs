//! OIDC single sign-on: authorization code flow with PKCE (S256), `state` and
//! `nonce`; IdP groups mapped to roles at every sign-in; OIDC Back-Channel
//! Logout; RP-initiated logout.
//!
//! Routes:
//! - `GET /auth/oidc/providers`: the configured providers' names and display
//!   names (public; the sign-in page's buttons).
//! - `GET /auth/oidc/login?provider=NAME&return_to=/path`: stores a pending
//!   login (hashed `state` and `nonce`, 10 minutes, single use) bound to the
//!   browser by the `__Host-portcullis-oidc` cookie, and redirects to the
//!   provider. The PKCE verifier is derived from that cookie and the state
//!   (HMAC-SHA-256), so it is never stored: the database alone cannot finish a
//!   sign-in, nor can an intercepted code without the browser's cookie.
//! - `GET /auth/oidc/callback`: consumes the pending login, exchanges the code
//!   with the verifier, verifies the ID token (discovery, JWKS, `iss`, `aud`,
//!   `exp`, `nonce`; a nonce is accepted once), reads username, email, name
//!   and groups from the ID token or else the userinfo endpoint, creates the
//!   employee on first sign-in (`is_oidc`), re-synchronises roles, starts a
//!   session and redirects to `return_to` with the session cookies.
//! - `POST /auth/oidc/backchannel-logout`: verifies a logout token and ends the
//!   sessions it names (provider + `sid`, or provider + `sub`).
//! - `GET /auth/oidc/logout`: ends the local session and redirects to the
//!   provider's `end_session_endpoint` (with `client_id` and the configured
//!   `post_logout_redirect_uri`), or to `/`.
//!
//! Outbound HTTP (discovery, JWKS, token, userinfo) uses one reqwest client
//! with rustls, redirects off and timeouts; metadata is cached for ten minutes
//! and refreshed early (at most every 30 s) when a token is signed by an
//! unknown key.
//!
//! Submodules: `account` (profile, provisioning), `provider` (discovery, tokens,
//! verification), `store` (SQL); the
//! `backend.identity.oidc` entries are read in [`crate::settings::oidc`].

mod account;
mod provider;
mod store;

pub use crate::settings::oidc::{OidcProviderConfig, validate_providers};
pub use provider::{BACKCHANNEL_LOGOUT_EVENT, Claims, LogoutClaims, OidcError, Providers};

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;

use portcullis_contract::amr;
use portcullis_contract::cookies::cookie as read_cookie;

use self::account::{profile, provision};
use self::provider::CLOCK_SKEW_SECONDS;
use super::cookies::clear_cookies;
use super::sessions::session_of;
use super::store as identity_store;
use super::tokens::{at, now_unix, random_token, token_hash, token_response};
use crate::AppState;
use crate::audit_log::{Category, Level, Outcome, event};
use crate::db::now_text;
use crate::http::{ApiError, ApiQuery};
use crate::model::Role;

/// The cookie binding a pending sign-in to the browser that started it.
pub const OIDC_COOKIE: &str = "__Host-portcullis-oidc";
/// How long a pending sign-in waits for its callback.
pub const LOGIN_TTL_SECONDS: i64 = 600;

/// The PKCE verifier of a sign-in: HMAC-SHA-256 keyed by the browser's
/// cookie secret over the state, base64url (43 characters).
fn pkce_verifier(browser_secret: &str, state: &str) -> Result<String, ApiError> {
    let mut mac = Hmac::<Sha256>::new_from_slice(browser_secret.as_bytes())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    mac.update(b"portcullis-oidc-pkce\0");
    mac.update(state.as_bytes());
    Ok(URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

/// `return_to` when it is a local path: starts with one `/`, printable ASCII,
/// no backslash (browsers read `/\host` as `//host`), at most 2048 bytes.
pub fn local_path(raw: &str) -> Option<&str> {
    let ok = raw.starts_with('/')
        && !raw.starts_with("//")
        && raw.len() <= 2048
        && raw
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'\\');
    ok.then_some(raw)
}

fn oidc_cookie(value: &str, max_age: i64) -> HeaderValue {
    // Lax, unlike the session cookies: the provider's redirect back is a
    // cross-site navigation that must carry it.
    HeaderValue::from_str(&format!(
        "{OIDC_COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={max_age}"
    ))
    .unwrap_or(HeaderValue::from_static("invalid=; Max-Age=0"))
}

fn see_other(location: &str) -> Response {
    let location = HeaderValue::from_str(location).unwrap_or(HeaderValue::from_static("/"));
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
    )
        .into_response()
}

/// The end of a sign-in: a page that moves on to `location` by itself.
///
/// The provider's redirect to the callback is a cross-site navigation, and
/// browsers count a redirect chain it starts as cross-site too: a 303 to
/// `location` would arrive without the `SameSite=Strict` session cookies just
/// set, and the user would look signed out. A navigation started by this
/// same-site page carries them. It uses a meta refresh, not script, so the
/// strict CSP (`script-src 'self'`, no inline) holds; the link is for
/// browsers that ignore refreshes.
fn continue_to(location: &str) -> Response {
    let url = html_escape::encode_double_quoted_attribute(location);
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"0;url={url}\"><title>Signed in</title></head>\
         <body><p>Signed in. <a href=\"{url}\">Continue</a></p></body></html>\n"
    );
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        page,
    )
        .into_response()
}

// ------------------------------------------------------------- sign-in

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginQuery {
    /// Provider name; optional when only one is configured.
    provider: Option<String>,
    /// Local path to return to afterwards. Default `/`.
    return_to: Option<String>,
}

async fn login(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<LoginQuery>,
) -> Result<Response, ApiError> {
    let provider = s.identity.oidc.select(q.provider.as_deref())?;
    let return_to = match q.return_to.as_deref() {
        None => "/",
        Some(r) => local_path(r).ok_or_else(|| ApiError::Custom {
            status: StatusCode::BAD_REQUEST,
            kind: "oidc-invalid-return-to",
            detail: "return_to must be a local path such as /tickets".into(),
        })?,
    };
    let (state, nonce, browser) = (random_token(), random_token(), random_token());
    let verifier = pkce_verifier(&browser, &state)?;
    let url = provider
        .authorization_url(&state, &nonce, &verifier)
        .await?;
    let now = now_unix();
    store::purge_expired(&s.db, &now_text()).await?;
    store::insert_login(
        &s.db,
        &store::PendingLogin {
            state_hash: token_hash(&state),
            browser_hash: token_hash(&browser),
            provider: provider.settings.name.clone(),
            nonce_hash: token_hash(&nonce),
            return_to: return_to.to_owned(),
            created_at: at(now),
            expires_at: at(now + LOGIN_TTL_SECONDS),
        },
    )
    .await?;
    let mut resp = see_other(&url);
    resp.headers_mut()
        .append(header::SET_COOKIE, oidc_cookie(&browser, LOGIN_TTL_SECONDS));
    Ok(resp)
}

/// Query of the provider's redirect back. Not `deny_unknown_fields`:
/// providers add their own parameters (`session_state`, …).
#[derive(Debug, Deserialize)]
struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    /// RFC 9207: the issuer of the response (mix-up defence).
    iss: Option<String>,
    error: Option<String>,
}

fn invalid_state() -> ApiError {
    ApiError::Custom {
        status: StatusCode::BAD_REQUEST,
        kind: "oidc-invalid-state",
        detail: "This sign-in is unknown, expired, already used or was started in another browser; start again".into(),
    }
}

async fn callback(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<CallbackQuery>,
) -> Response {
    let started = std::time::Instant::now();
    let resp = finish_sign_in(&s, &headers, &q).await;
    // The hand-over page (200) means signed in; anything else was refused.
    let result = if resp.status() == StatusCode::OK {
        "success"
    } else {
        "failure"
    };
    s.identity
        .metrics
        .answered("oidc", result, started.elapsed());
    resp
}

/// The callback's work: the pending sign-in, the code exchange, the session.
async fn finish_sign_in(s: &AppState, headers: &HeaderMap, q: &CallbackQuery) -> Response {
    // The pending login must exist, be this browser's, and be unused.
    let state = q
        .state
        .as_deref()
        .filter(|v| !v.is_empty() && v.len() <= 512);
    let browser = read_cookie(headers, OIDC_COOKIE).filter(|v| !v.is_empty());
    let (Some(state), Some(browser)) = (state, browser) else {
        return invalid_state().into_response();
    };
    let claimed = match store::claim_login(
        &s.db,
        &token_hash(state),
        &token_hash(browser),
        &now_text(),
    )
    .await
    {
        Ok(Some(c)) => c,
        Ok(None) => {
            let refused = event(Category::Auth, "login", Outcome::Failure)
                .level(Level::Warning)
                .auth_method("oidc")
                .detail("reason", "oidc-invalid-state");
            if let Err(e) = s.audit(refused).await {
                return e.into_response();
            }
            return invalid_state().into_response();
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    // From here on the pending login is spent: the browser's cookie goes too.
    let outcome = complete(s, headers, q, &claimed, state, browser).await;
    let mut resp = match outcome {
        Ok(r) => r,
        Err(e) => {
            let reason = match &e {
                ApiError::Custom { kind, .. } => *kind,
                ApiError::Internal(_) => "internal",
                _ => "other",
            };
            s.identity.metrics.failed("oidc", reason);
            let refused = event(Category::Auth, "login", Outcome::Failure)
                .level(Level::Warning)
                .auth_method("oidc")
                .detail("provider", claimed.provider.clone())
                .detail("reason", reason);
            match s.audit(refused).await {
                Ok(()) => e.into_response(),
                Err(unrecorded) => unrecorded.into_response(),
            }
        }
    };
    resp.headers_mut()
        .append(header::SET_COOKIE, oidc_cookie("", 0));
    resp
}

async fn complete(
    s: &AppState,
    headers: &HeaderMap,
    q: &CallbackQuery,
    claimed: &store::ClaimedLogin,
    state: &str,
    browser: &str,
) -> Result<Response, ApiError> {
    let provider = s
        .identity
        .oidc
        .get(&claimed.provider)
        .ok_or_else(invalid_state)?;
    let settings = &provider.settings;
    if let Some(error) = &q.error {
        let code: String = error
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        return Err(ApiError::Custom {
            status: StatusCode::UNAUTHORIZED,
            kind: "oidc-sign-in-refused",
            detail: format!("The identity provider did not sign you in ({code})"),
        });
    }
    if q.iss.as_deref().is_some_and(|iss| iss != settings.issuer) {
        return Err(ApiError::Custom {
            status: StatusCode::BAD_REQUEST,
            kind: "oidc-issuer-mismatch",
            detail: "The answer came from another identity provider than the one asked".into(),
        });
    }
    let code = q
        .code
        .as_deref()
        .filter(|c| !c.is_empty() && c.len() <= 4096)
        .ok_or_else(|| ApiError::Custom {
            status: StatusCode::BAD_REQUEST,
            kind: "oidc-invalid-callback",
            detail: "The identity provider's answer has no authorization code".into(),
        })?;
    let verifier = pkce_verifier(browser, state)?;
    let (id_token, access_token) = provider.exchange(code, &verifier).await?;
    let claims = provider
        .verify_id_token(&id_token, &claimed.nonce_hash)
        .await?;
    // Each nonce is accepted once (the pending login is single use already;
    // this also holds if that ever changes).
    let nonce = claims
        .get("nonce")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .unwrap_or_else(now_unix);
    if !store::use_once(
        &s.db,
        &settings.name,
        "nonce",
        &token_hash(nonce),
        &at(exp.max(now_unix()) + CLOCK_SKEW_SECONDS),
    )
    .await?
    {
        return Err(ApiError::Custom {
            status: StatusCode::UNAUTHORIZED,
            kind: "oidc-replay",
            detail: "This sign-in answer was already used; start again".into(),
        });
    }
    // RFC 8176: the provider says it used more than one factor.
    let provider_mfa = claims
        .get("amr")
        .and_then(Value::as_array)
        .is_some_and(|amr| amr.iter().any(|m| m.as_str() == Some(amr::MULTI_FACTOR)));
    let profile = profile(provider, claims, &access_token).await?;
    let mut roles: Vec<Role> = profile
        .groups
        .iter()
        .filter_map(|g| settings.role_mapping.get(g).copied())
        .collect();
    roles.sort();
    roles.dedup();
    let employee_id = provision(s, settings, &profile, &roles).await?;
    let (sid, issued) = s
        .start_session(
            employee_id,
            "oidc",
            if provider_mfa {
                vec![amr::EXTERNAL.into(), amr::MULTI_FACTOR.into()]
            } else {
                vec![amr::EXTERNAL.into()]
            },
            headers,
            Some((settings.name.clone(), profile.sid.clone())),
        )
        .await?;
    s.signed_in(
        &sid,
        employee_id,
        &profile.username,
        "oidc",
        provider_mfa,
        Some(&settings.name),
    )
    .await?;
    s.identity.metrics.succeeded("oidc");
    // The same cookies as a browser password sign-in, then back to the page.
    let tokens = token_response(&issued, false, json!({}));
    let mut resp = continue_to(&claimed.return_to);
    for c in tokens.headers().get_all(header::SET_COOKIE) {
        resp.headers_mut().append(header::SET_COOKIE, c.clone());
    }
    Ok(resp)
}

// ------------------------------------------------------------- logout

#[derive(Debug, Deserialize)]
struct BackchannelForm {
    logout_token: String,
}

/// OIDC Back-Channel Logout: 200 when the token is valid (whether or not a
/// session matched), 400 problem otherwise. Never cached.
async fn backchannel_logout(
    State(s): State<AppState>,
    form: Result<Form<BackchannelForm>, FormRejection>,
) -> Response {
    let outcome = async {
        let Form(form) = form.map_err(|e| ApiError::Custom {
            status: StatusCode::BAD_REQUEST,
            kind: "oidc-invalid-logout-token",
            detail: format!("Send logout_token as application/x-www-form-urlencoded ({e})"),
        })?;
        let now = now_unix();
        let claims = s
            .identity
            .oidc
            .verify_logout_token(&form.logout_token, now)
            .await?;
        store::purge_expired(&s.db, &now_text()).await?;
        if !store::use_once(
            &s.db,
            &claims.provider,
            "jti",
            &token_hash(&claims.jti),
            &at(claims.keep_until),
        )
        .await?
        {
            return Err(OidcError::InvalidLogoutToken("already used (jti)".into()).into());
        }
        let now_t = now_text();
        let employee = match &claims.sub {
            Some(sub) => store::linked_employee(&s.db, &claims.provider, sub).await?,
            None => None,
        };
        let sessions: Vec<String> = match (&claims.sid, &claims.sub, employee) {
            (Some(sid), sub, employee) => {
                store::sessions_by_sid(&s.db, &claims.provider, sid, &now_t)
                    .await?
                    .into_iter()
                    .filter(|(_, e)| sub.is_none() || Some(*e) == employee)
                    .map(|(sid, _)| sid)
                    .collect()
            }
            (None, Some(_), Some(employee)) => {
                store::sessions_of_employee(&s.db, &claims.provider, employee, &now_t).await?
            }
            _ => Vec::new(),
        };
        let mut ended = 0usize;
        for sid in &sessions {
            if s.revoke_session(sid, "backchannel_logout").await? {
                s.session_revoked(sid, "backchannel_logout", None).await?;
                ended += 1;
            }
        }
        let mut e = event(Category::Auth, "logout.backchannel", Outcome::Success)
            .auth_method("oidc")
            .detail("provider", claims.provider.clone())
            .detail("sessions_ended", ended);
        if let Some(id) = employee {
            e = e.user_id(id.to_string());
        }
        s.audit(e).await?;
        Ok::<_, ApiError>(())
    }
    .await;
    let mut resp = match outcome {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => e.into_response(),
    };
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// RP-initiated logout: ends the local session (as `/auth/logout`), then
/// sends the browser to the provider's end-session endpoint, or to `/`.
async fn logout(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let mut target = "/".to_owned();
    if let Some(sid) = session_of(&s, &headers, None).await? {
        let session = identity_store::session(&s.db, &sid).await?;
        let provider = session.as_ref().and_then(|x| x.oidc_provider.clone());
        s.logged_out(&sid, provider.as_deref()).await?;
        if let Some(p) = session
            .and_then(|x| x.oidc_provider)
            .and_then(|name| s.identity.oidc.get(&name))
        {
            match p.end_session_url().await {
                Ok(Some(url)) => target = url,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "no end-session redirect: provider metadata unavailable");
                }
            }
        }
    }
    let mut resp = see_other(&target);
    clear_cookies(&mut resp);
    Ok(resp)
}

/// Routes of OIDC sign-in and logout.
/// `GET /auth/oidc/providers`, a public route: the providers one can sign in with,
/// for the sign-in page's buttons (an empty list when single sign-on is off).
async fn providers(State(s): State<AppState>) -> Json<Value> {
    let list: Vec<Value> = s
        .identity
        .oidc
        .names()
        .map(|(name, display_name)| json!({ "name": name, "display_name": display_name }))
        .collect();
    Json(json!({ "providers": list }))
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/oidc/providers", get(providers))
        .route("/auth/oidc/login", get(login))
        .route("/auth/oidc/callback", get(callback))
        .route("/auth/oidc/backchannel-logout", post(backchannel_logout))
        .route(portcullis_contract::paths::OIDC_LOGOUT, get(logout))
}
