//! Portcullis backend: the ticket service the proxy guards.
//!
//! It listens on loopback (`127.0.0.1:8081` by default) and believes only
//! identities the proxy signed (see [`contract::identity`]). Data lives in SQLite
//! (embedded default) or PostgreSQL ([`db`]); object-level authorization uses the
//! same Rego bundle as the proxy.
//!
//! This file only composes: the modules, the shared [`AppState`], start-up
//! ([`open`]), serving ([`serve`]) and the [`router`] assembled from each
//! resource's own.
//!
//! Layers (imports point down only):
//! - bottom: [`settings`] (configuration), [`db`] (engine, shared SQL pieces),
//!   [`model`] (domain and JSON types), [`http`] (extractors, problems, ETags,
//!   checks, request context, policy glue);
//! - [`audit_log`]: recording events, the admin view and the proxy's ingest;
//! - [`directory`] (employees, departments), then [`identity`] (sign-in, sessions,
//!   tokens; builds on the directory) and [`tickets`] (uses the directory);
//! - [`attachments`]: encrypted files of tickets (uses `tickets`);
//! - [`anomaly`]: the anomaly job over the audit table (uses `audit_log`);
//! - [`monitoring`]: health, errors, performance, their middleware, and the OpenAPI
//!   document of the resources;
//! - [`backup`]: consistent copies of the database and state files, and restoring them
//!   (uses `db` and `settings` only);
//! - [`retention`]: archiving and deleting what expired, legal holds (raw SQL over the
//!   resources' tables; uses `audit_log`, `db` and the attachment store in `AppState`);
//! - [`web`]: the web application's static files.

pub mod anomaly;
pub mod attachments;
pub mod audit_log;
pub mod backup;
pub mod db;
pub mod directory;
pub mod http;
pub mod identity;
pub mod model;
pub mod monitoring;
pub mod retention;
pub mod settings;
pub mod tickets;
pub mod web;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use portcullis_authz::Authorizer;
use portcullis_contract::identity::{KeyError, load_or_create_key_file};

pub use db::Db;
/// The contract shared with the proxy (identity, headers, cookies, problem types, …).
pub use portcullis_contract as contract;
pub use portcullis_contract::identity::IdentityKey;
pub use settings::{BackendConfig, BackendSettings, IdentityConfig, LockoutConfig, connect_url};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub authz: Arc<Authorizer>,
    pub identity_key: IdentityKey,
    pub identity: Arc<identity::IdentityService>,
    /// The audit log (see [`audit_log`]).
    pub audit: audit_log::Audit,
    /// The web application's files ([`web`]).
    pub web_dir: Arc<std::path::Path>,
    /// The anomaly job ([`anomaly`]), run by [`serve`].
    pub anomaly: Arc<anomaly::AnomalyJob>,
    /// Attachment storage and keys ([`attachments`]).
    pub attachments: Arc<attachments::Attachments>,
    /// Request timings per route ([`monitoring::Timings`]).
    pub timings: Arc<monitoring::Timings>,
}

/// Why the backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error("policy bundle: {0}")]
    Policy(#[from] portcullis_authz::BundleError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    PasswordFile(#[from] settings::PasswordFileError),
    #[error("token signing keys: {0}")]
    Keyring(#[from] identity::keys::KeyringError),
    #[error("TOTP secret sealing: {0}")]
    Sealer(#[from] identity::mfa::SealError),
    #[error("identity: {0}")]
    Identity(#[from] identity::StartIdentityError),
    #[error("first administrator: {0}")]
    Bootstrap(#[source] http::ApiError),
    #[error("OIDC providers: {0}")]
    Oidc(#[from] identity::oidc::OidcError),
    #[error("audit spool lock: {0}")]
    AuditLock(#[source] std::io::Error),
    #[error("audit log: {0}")]
    Audit(#[from] portcullis_audit::AuditError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("attachments: {0}")]
    Attachments(#[from] attachments::AttachmentsError),
}

/// Opens the database (running migrations), starts the audit log (its spool,
/// sinks and the `audit_events` table as a sink), loads the policy bundle and
/// the identity key.
///
/// `authorizer` is the bundle to enforce when the process already loaded it (under
/// `portcullis up`, the proxy's, so one reload changes both layers): with `Some`, the
/// owner of that [`Authorizer`] reloads it. With `None` the backend loads `policy_dir`
/// itself, and it must pass its own tests; the caller then registers
/// [`policy_target`] to keep it current.
///
/// Metrics go to `registry`, the backend's (served by its admin listener).
pub async fn open(
    settings: &BackendSettings,
    authorizer: Option<Arc<Authorizer>>,
    registry: &prometheus::Registry,
) -> Result<AppState, StartError> {
    let db = Db::connect(&connect_url(settings)?).await?;
    db.migrate().await?;
    let audit = start_audit(
        &settings.audit,
        audit_log::DbSink::new(db.clone()),
        registry,
    )
    .await?;
    let authz = match authorizer {
        Some(shared) => shared,
        None => Arc::new(Authorizer::load_tested(
            &settings.policy_dir,
            portcullis_authz::DEFAULT_EVAL_TIME_LIMIT,
        )?),
    };
    let identity_key = IdentityKey::load_or_create(&settings.identity_key_file)?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let keyring = identity::keys::Keyring::open(&settings.keyring_dir, now)?;
    let mfa_key = load_or_create_key_file(&settings.mfa_key_file)?;
    let sealer = identity::mfa::SecretSealer::new(&mfa_key)?;
    let mut identity =
        identity::IdentityService::new(settings.identity.clone(), keyring, sealer, registry)?;
    identity.oidc = identity::oidc::Providers::load(&settings.identity.oidc)?;
    let state = AppState {
        db,
        authz,
        identity_key,
        identity: Arc::new(identity),
        audit,
        web_dir: Arc::from(settings.web_dir.as_path()),
        anomaly: Arc::new(anomaly::AnomalyJob::try_new(
            settings.anomaly.clone(),
            registry,
        )?),
        attachments: Arc::new(attachments::Attachments::open(&settings.attachments)?),
        timings: Arc::new(monitoring::Timings::try_new(registry)?),
    };
    identity::bootstrap_admin(&state, &settings.initial_admin_file)
        .await
        .map_err(StartError::Bootstrap)?;
    Ok(state)
}

/// The backend's own policy reload (when it is not sharing the proxy's bundle): the
/// object-level decisions follow every edit of the bundle that passes its tests, and
/// each reload or refusal is logged and audited.
pub fn policy_target(state: &AppState, dir: std::path::PathBuf) -> portcullis_reload::Target {
    portcullis_authz::reload::reload_target(
        Arc::clone(&state.authz),
        dir,
        "backend",
        state.audit.log().clone(),
        || {},
    )
}

/// Locks the spool (waiting for another process to let go of it) and starts the log
/// with its configured sinks and `db` (the `audit_events` table).
pub async fn start_audit(
    settings: &portcullis_audit::AuditSettings,
    db: audit_log::DbSink,
    registry: &prometheus::Registry,
) -> Result<audit_log::Audit, StartError> {
    let dir = settings.spool.dir.clone();
    let lock = tokio::task::spawn_blocking(move || {
        portcullis_audit::SpoolLock::acquire(&dir, audit_log::SPOOL_LOCK_WAIT)
    })
    .await
    .map_err(|e| StartError::AuditLock(std::io::Error::other(e)))?
    .map_err(StartError::AuditLock)?;
    let log = portcullis_audit::AuditLog::start_with_sinks(
        settings.clone(),
        vec![Box::new(db)],
        registry,
    )?;
    Ok(audit_log::Audit::new(log, lock))
}

/// Serves until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let keys = tokio::spawn(identity::keyring_maintenance(state.clone()));
    let anomalies = tokio::spawn(Arc::clone(&state.anomaly).run_periodically(state.clone()));
    let hash_memory = tokio::spawn(identity::hash_memory_release(state.clone()));
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await;
    keys.abort();
    anomalies.abort();
    hash_memory.abort();
    served
}

/// Serves the admin listener (`/metrics` of `registry`) until `shutdown` resolves.
pub async fn serve_admin(
    listener: tokio::net::TcpListener,
    registry: prometheus::Registry,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, monitoring::admin_router(registry))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Every route: each resource's router, the problem answers for unknown routes and
/// methods, the body limit and the request-id/client middleware.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(monitoring::router())
        .merge(tickets::router())
        .merge(attachments::router())
        .merge(directory::router())
        .merge(identity::router())
        .merge(audit_log::router())
        .merge(web::router(&state.web_dir))
        .fallback(|| async { http::ApiError::NotFound("resource") })
        .method_not_allowed_fallback(|| async { http::ApiError::MethodNotAllowed })
        .layer(axum::extract::DefaultBodyLimit::max(http::MAX_BODY_BYTES))
        // Inside the request-id layer, so its `http.error` events carry the request id.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            monitoring::observe,
        ))
        .layer(axum::middleware::from_fn(http::meta::request_id_layer))
        .with_state(state)
}
