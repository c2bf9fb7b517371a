//! Identity: sign-in with password (+ TOTP or a backup code) or OIDC, sessions in
//! the database, short-lived EdDSA access JWTs with a JWKS, rotating refresh
//! tokens with reuse detection, the revocation feed for the proxy, MFA
//! enrolment, brute-force throttling, the administrators' session API, the first
//! administrator, and how a proxy identity becomes a [`crate::http::Caller`].
//!
//! Builds on the directory (employees) and the audit log; the settings it runs on
//! are read in [`crate::settings::identity`].

mod announce;
mod bootstrap;
mod caller;
mod cookies;
mod credentials;
mod jwks;
pub mod keys;
mod login;
mod metrics;
pub mod mfa;
pub mod oidc;
pub mod password;
mod revocations;
mod second_factor;
mod service;
mod sessions;
pub mod store;
mod throttle;
mod tokens;
mod turns;

use axum::Router;
use axum::routing::{delete, get, post};
use portcullis_contract::revocation::FEED_PATH;

pub use self::bootstrap::bootstrap_admin;
pub use self::credentials::hash_memory_release;
pub use self::jwks::keyring_maintenance;
pub use self::service::{IdentityService, StartIdentityError};
use crate::AppState;
pub use crate::settings::{IdentitySettings, ThrottleSettings};

/// Routes of the identity API.
pub fn router() -> Router<AppState> {
    use self::credentials::change_password;
    use self::jwks::jwks;
    use self::login::login;
    use self::revocations::revocations;
    use self::second_factor::{admin_reset_mfa, totp_confirm, totp_enroll};
    use self::sessions::{
        admin_revoke_session, admin_revoke_user_sessions, admin_sessions, admin_user_sessions,
        current_session, end_own_session, logout, own_sessions,
    };
    use self::tokens::refresh;
    Router::new()
        .route(portcullis_contract::paths::LOGIN, post(login))
        .route("/auth/logout", post(logout))
        .route("/auth/refresh", post(refresh))
        .route("/auth/jwks.json", get(jwks))
        .route(FEED_PATH, get(revocations))
        .route("/auth/session", get(current_session))
        .route("/auth/sessions", get(own_sessions))
        .route("/auth/sessions/{sid}", delete(end_own_session))
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
