//! Portcullis backend: the ticket service the proxy guards.
//!
//! It listens on loopback (`127.0.0.1:8081` by default) and believes only
//! identities the proxy signed (see [`identity`]). Data lives in SQLite
//! (embedded default) or PostgreSQL through one repository ([`repo`]);
//! object-level authorization uses the same Rego bundle as the proxy.

pub mod api;
pub mod audit;
pub mod auth;
pub mod db;
pub mod error;
pub mod model;
pub mod repo;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use portcullis_authz::Authorizer;
use portcullis_authz::revocation_channel::RevocationPubSubConfig;
use schemars::JsonSchema;
use serde::Deserialize;

pub use db::Db;
pub use identity::IdentityKey;
/// The proxy-signed identity at the boundary (shared with the proxy).
pub use portcullis_authz::identity;

/// The `backend:` section of the configuration file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BackendConfig {
    /// Listening address. Default `127.0.0.1:8081`: keep it on loopback, the
    /// proxy is the only client.
    pub listen: String,
    /// `sqlite://FILE` or `postgres://…`. Default: `sqlite://<state_dir>/portcullis.db`.
    /// A password in the URL is refused: use `database_password_file`.
    pub database_url: Option<String>,
    /// File holding the database password (PostgreSQL), read at start.
    pub database_password_file: Option<PathBuf>,
    /// Folder of the Rego policy bundle. Default `policies`.
    pub policy_dir: PathBuf,
    /// Shared proxy↔backend identity key (32 bytes, created 0600 if
    /// missing). Default `<state_dir>/keys/identity.key`.
    pub identity_key_file: Option<PathBuf>,
    /// Sign-in, sessions and tokens.
    pub identity: IdentityConfig,
}

/// The `backend.identity:` section.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// `iss` of issued access tokens. Default `portcullis`.
    pub issuer: String,
    /// `aud` of issued access tokens. Default `portcullis`.
    pub audience: String,
    /// Access token lifetime. Default 300.
    pub access_token_ttl_seconds: i64,
    /// Idle timeout of a session, unless set per user. Default 1800.
    pub session_timeout_seconds: i64,
    /// Longest life of a session. Default 43200.
    pub session_absolute_seconds: i64,
    /// Concurrent sessions per user; the oldest ends first. Default 5.
    pub max_sessions_per_user: usize,
    /// How long a new signing key is published before it signs. Default 600.
    pub key_overlap_seconds: i64,
    /// Roles that must use a second factor. Default none.
    pub mfa_required_roles: Vec<String>,
    /// Failed sign-in throttling.
    pub lockout: LockoutConfig,
    /// OIDC single sign-on providers (`/auth/oidc/login?provider=NAME`). Default none.
    pub oidc: Vec<auth::oidc::OidcProviderConfig>,
    /// Redis channel on which each revocation is announced, so proxies
    /// subscribed to it (`proxy.auth.revocation_pubsub`) poll the feed at once.
    /// Default none (the proxies poll on their own schedule).
    pub revocation_pubsub: Option<RevocationPubSubConfig>,
}

/// Failed sign-in throttling (per account and per client address).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LockoutConfig {
    /// Default 900.
    pub window_seconds: i64,
    /// Failures before each further attempt is slowed. Default 3.
    pub delay_after_failures: i64,
    /// Default 10.
    pub account_failures: i64,
    /// Default 50.
    pub ip_failures: i64,
    /// Default 900.
    pub lockout_seconds: i64,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        let d = auth::IdentitySettings::default();
        Self {
            issuer: d.issuer,
            audience: d.audience,
            access_token_ttl_seconds: d.access_ttl_seconds,
            session_timeout_seconds: d.session_timeout_seconds,
            session_absolute_seconds: d.session_absolute_seconds,
            max_sessions_per_user: d.max_sessions_per_user,
            key_overlap_seconds: d.key_overlap_seconds,
            mfa_required_roles: Vec::new(),
            lockout: LockoutConfig::default(),
            oidc: Vec::new(),
            revocation_pubsub: None,
        }
    }
}

impl Default for LockoutConfig {
    fn default() -> Self {
        let d = auth::ThrottleSettings::default();
        Self {
            window_seconds: d.window_seconds,
            delay_after_failures: d.delay_after,
            account_failures: d.account_lockout_failures,
            ip_failures: d.ip_lockout_failures,
            lockout_seconds: d.lockout_seconds,
        }
    }
}

impl IdentityConfig {
    fn validate(
        &self,
        prefix: &str,
        base: &Path,
        problems: &mut Vec<String>,
    ) -> auth::IdentitySettings {
        let mut positive = |name: &str, v: i64| {
            if v <= 0 {
                problems.push(format!("{prefix}.{name}: must be positive"));
            }
        };
        positive("access_token_ttl_seconds", self.access_token_ttl_seconds);
        positive("session_timeout_seconds", self.session_timeout_seconds);
        positive("session_absolute_seconds", self.session_absolute_seconds);
        positive("key_overlap_seconds", self.key_overlap_seconds);
        positive("lockout.window_seconds", self.lockout.window_seconds);
        positive("lockout.account_failures", self.lockout.account_failures);
        positive("lockout.ip_failures", self.lockout.ip_failures);
        positive("lockout.lockout_seconds", self.lockout.lockout_seconds);
        if self.access_token_ttl_seconds > 3600 {
            problems.push(format!(
                "{prefix}.access_token_ttl_seconds: keep access tokens short-lived (at most 3600)"
            ));
        }
        if self.max_sessions_per_user == 0 {
            problems.push(format!(
                "{prefix}.max_sessions_per_user: must be at least 1"
            ));
        }
        let mut roles = Vec::new();
        for (i, r) in self.mfa_required_roles.iter().enumerate() {
            match model::Role::parse(r) {
                Some(role) => roles.push(role),
                None => problems.push(format!(
                    "{prefix}.mfa_required_roles[{i}]: unknown role `{r}`"
                )),
            }
        }
        let oidc =
            auth::oidc::validate_providers(&self.oidc, &format!("{prefix}.oidc"), base, problems);
        let revocation_pubsub = self.revocation_pubsub.as_ref().and_then(|c| {
            c.validate()
                .map_err(|found| {
                    for (field, msg) in found {
                        problems.push(format!("{prefix}.revocation_pubsub.{field}: {msg}"));
                    }
                })
                .ok()
        });
        auth::IdentitySettings {
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            access_ttl_seconds: self.access_token_ttl_seconds,
            session_timeout_seconds: self.session_timeout_seconds,
            session_absolute_seconds: self.session_absolute_seconds,
            max_sessions_per_user: self.max_sessions_per_user,
            key_overlap_seconds: self.key_overlap_seconds,
            mfa_required_roles: roles,
            throttle: auth::ThrottleSettings {
                window_seconds: self.lockout.window_seconds,
                delay_after: self.lockout.delay_after_failures,
                account_lockout_failures: self.lockout.account_failures,
                ip_lockout_failures: self.lockout.ip_failures,
                lockout_seconds: self.lockout.lockout_seconds,
            },
            oidc,
            revocation_pubsub,
        }
    }
}

impl Default for BackendConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8081".to_owned(),
            database_url: None,
            database_password_file: None,
            policy_dir: PathBuf::from("policies"),
            identity_key_file: None,
            identity: IdentityConfig::default(),
        }
    }
}

/// Validated backend settings.
#[derive(Debug, Clone)]
pub struct BackendSettings {
    pub listen: SocketAddr,
    pub database_url: String,
    pub database_password_file: Option<PathBuf>,
    pub policy_dir: PathBuf,
    pub identity_key_file: PathBuf,
    /// Token signing keys (`keys/jwt/`).
    pub keyring_dir: PathBuf,
    /// Where the first administrator's one-time password is written.
    pub initial_admin_file: PathBuf,
    /// Key sealing TOTP secrets at rest (32 bytes, created 0600 if missing).
    pub mfa_key_file: PathBuf,
    pub identity: auth::IdentitySettings,
    /// The audit log: emitter `backend` for the service, `cli` for administrative
    /// commands (see `portcullis_audit::AuditTemplate`).
    pub audit: portcullis_audit::AuditSettings,
}

impl BackendConfig {
    /// Validates the section; every problem comes back as `path: message`.
    /// Relative paths are resolved against `base`.
    pub fn validate(
        &self,
        prefix: &str,
        base: &Path,
        state_dir: &Path,
    ) -> Result<BackendSettings, Vec<String>> {
        let Self {
            listen,
            database_url,
            database_password_file,
            policy_dir,
            identity_key_file,
            identity,
        } = self;
        let mut problems = Vec::new();
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            }
        };
        let listen = listen
            .parse::<SocketAddr>()
            .map_err(|_| {
                problems.push(format!(
                    "{prefix}.listen: `{listen}` is not an IP:port address"
                ))
            })
            .ok();
        let url = database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                state_dir.join("portcullis.db").display()
            )
        });
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            problems.push(format!(
                "{prefix}.database_url: use sqlite://FILE or postgres://HOST/DB"
            ));
        }
        // Secrets never in the configuration file: a password belongs in a file.
        if let Some(rest) = url.split_once("://").map(|(_, r)| r)
            && let Some((userinfo, _)) = rest.split_once('@')
            && userinfo.contains(':')
        {
            problems.push(format!(
                "{prefix}.database_url: contains a password; put it in database_password_file instead"
            ));
        }
        let policy_dir = resolve(policy_dir);
        if !policy_dir.is_dir() {
            problems.push(format!(
                "{prefix}.policy_dir: {} is not a folder",
                policy_dir.display()
            ));
        }
        let identity = identity.validate(&format!("{prefix}.identity"), base, &mut problems);
        // The `audit:` section replaces these defaults (see the binary's config).
        let audit = portcullis_audit::AuditConfig::default()
            .validate("audit", base, state_dir)
            .map(|t| t.settings("backend"))
            .map_err(|e| problems.extend(e))
            .ok();
        match (listen, audit, problems.is_empty()) {
            (Some(listen), Some(audit), true) => Ok(BackendSettings {
                listen,
                database_url: url,
                database_password_file: database_password_file.as_deref().map(resolve),
                policy_dir,
                identity_key_file: identity_key_file
                    .as_deref()
                    .map_or_else(|| state_dir.join("keys/identity.key"), resolve),
                keyring_dir: state_dir.join("keys/jwt"),
                initial_admin_file: state_dir.join("initial-admin.txt"),
                mfa_key_file: state_dir.join("keys/mfa.key"),
                identity,
                audit,
            }),
            _ => Err(problems),
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub authz: Arc<Authorizer>,
    pub identity_key: IdentityKey,
    pub identity: Arc<auth::Identity>,
    /// The audit log (see [`audit`]).
    pub audit: audit::Audit,
}

/// Why the backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error("policy bundle: {0}")]
    Policy(String),
    #[error(transparent)]
    Key(#[from] identity::KeyError),
    #[error("database password file {0}: {1}")]
    PasswordFile(String, String),
    #[error("identity: {0}")]
    Identity(String),
    #[error("audit log: {0}")]
    Audit(String),
}

/// Opens the database (running migrations), starts the audit log (its spool,
/// sinks and the `audit_events` table as a sink), loads the policy bundle and
/// the identity key.
pub async fn open(settings: &BackendSettings) -> Result<AppState, StartError> {
    let db = Db::connect(&connect_url(settings)?).await?;
    db.migrate().await?;
    let audit = start_audit(&settings.audit, audit::DbSink::new(db.clone())).await?;
    let bundle = portcullis_authz::PolicyBundle::load(&settings.policy_dir)
        .map_err(|e| StartError::Policy(e.to_string()))?;
    let identity_key = IdentityKey::load_or_create(&settings.identity_key_file)?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let keyring = auth::keys::Keyring::open(&settings.keyring_dir, now)
        .map_err(|e| StartError::Identity(e.to_string()))?;
    let mfa_key = portcullis_authz::identity::load_or_create_key_file(&settings.mfa_key_file)?;
    let sealer =
        auth::mfa::SecretSealer::new(&mfa_key).map_err(|e| StartError::Identity(e.to_string()))?;
    let mut identity = auth::Identity::new(settings.identity.clone(), keyring, sealer)
        .map_err(|e| StartError::Identity(e.to_string()))?;
    identity.oidc = auth::oidc::Providers::load(&settings.identity.oidc)
        .map_err(|e| StartError::Identity(e.to_string()))?;
    let state = AppState {
        db,
        authz: Arc::new(Authorizer::new(bundle)),
        identity_key,
        identity: Arc::new(identity),
        audit,
    };
    auth::bootstrap_admin(&state, &settings.initial_admin_file)
        .await
        .map_err(|e| StartError::Identity(format!("{e:?}")))?;
    Ok(state)
}

/// Locks the spool (waiting for another process to let go of it) and starts the log
/// with its configured sinks and `db` (the `audit_events` table).
pub async fn start_audit(
    settings: &portcullis_audit::AuditSettings,
    db: audit::DbSink,
) -> Result<audit::Audit, StartError> {
    let dir = settings.spool.dir.clone();
    let lock = tokio::task::spawn_blocking(move || {
        portcullis_audit::SpoolLock::acquire(&dir, audit::SPOOL_LOCK_WAIT)
    })
    .await
    .map_err(|e| StartError::Audit(e.to_string()))?
    .map_err(|e| StartError::Audit(e.to_string()))?;
    let registry = portcullis_audit::metrics_registry(&settings.spool.emitter);
    let log = portcullis_audit::AuditLog::start_with_sinks(
        settings.clone(),
        vec![Box::new(db)],
        &registry,
    )
    .map_err(|e| StartError::Audit(e.to_string()))?;
    Ok(audit::Audit::new(log, lock))
}

/// The database URL with the password from `database_password_file`, if any.
pub fn connect_url(settings: &BackendSettings) -> Result<String, StartError> {
    Ok(match &settings.database_password_file {
        Some(file) => {
            let pw = std::fs::read_to_string(file)
                .map_err(|e| StartError::PasswordFile(file.display().to_string(), e.to_string()))?;
            with_password(&settings.database_url, pw.trim())
        }
        None => settings.database_url.clone(),
    })
}

/// Inserts a percent-encoded password into a `postgres://user@host/db` URL.
fn with_password(url: &str, password: &str) -> String {
    let encoded: String = password
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    match url.split_once("://").and_then(|(scheme, rest)| {
        rest.split_once('@')
            .map(|(user, host)| (scheme, user, host))
    }) {
        Some((scheme, user, host)) => format!("{scheme}://{user}:{encoded}@{host}"),
        None => url.to_owned(),
    }
}

/// Serves until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let keys = tokio::spawn(keyring_maintenance(state.clone()));
    let served = axum::serve(listener, api::router(state))
        .with_graceful_shutdown(shutdown)
        .await;
    keys.abort();
    served
}

/// How often the keyring is re-read and its time-based steps taken.
const KEYRING_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps the signing keys current: picks up rotations started by
/// `portcullis keys rotate` (another process) and takes the timed steps
/// (next → current after the overlap, previous → retired once no token it
/// signed can still be valid). Each step is an audit event.
async fn keyring_maintenance(state: AppState) {
    let retire_after = state.identity.settings.access_ttl_seconds + 60;
    loop {
        tokio::time::sleep(KEYRING_TICK).await;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        // The guard must not live across an await: take the steps in a block.
        let steps = {
            let Ok(mut ring) = state.identity.keyring.write() else {
                tracing::error!("keyring lock poisoned");
                return;
            };
            if let Err(e) = ring.reload() {
                tracing::warn!(error = %e, "cannot re-read the keyring; keeping the keys in memory");
                continue;
            }
            match ring.advance(now, retire_after) {
                Ok(events) => events,
                Err(e) => {
                    tracing::error!(error = %e, "keyring step failed");
                    continue;
                }
            }
        };
        for step in steps {
            state.audit_logged(auth::keys::rotation_event(&step)).await;
        }
    }
}
