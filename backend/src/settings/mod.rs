//! The `backend:` section of the configuration file ([`BackendConfig`], with its
//! `identity` part in [`identity`] and the OIDC providers in [`oidc`]) and the
//! validated [`BackendSettings`] the backend starts from.

pub mod anomaly;
pub mod attachments;
pub mod identity;
pub mod oidc;
pub mod retention;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use portcullis_contract::problems::Problems;
use portcullis_contract::shared::{SharedSettings, resolve_path};
use schemars::JsonSchema;
use serde::Deserialize;

pub use self::anomaly::{AnomalyConfig, AnomalySettings};
pub use self::attachments::{AttachmentsConfig, AttachmentsSettings, StorageSettings};
pub use self::identity::{IdentityConfig, IdentitySettings, LockoutConfig, ThrottleSettings};
pub use self::retention::{RetentionConfig, RetentionSettings};

/// The `backend:` section of the configuration file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BackendConfig {
    /// Listening address. Default `127.0.0.1:8081`: keep it on loopback, the
    /// proxy is the only client.
    pub listen: String,
    /// The backend's admin listener: `GET /metrics` (the backend's own metrics, also
    /// under `portcullis up`, where the proxy's admin listener serves the proxy's)
    /// and `GET /health/live`. Default `127.0.0.1:9091`; `null` turns it off. Keep it
    /// on loopback or a private network.
    pub admin_listen: Option<String>,
    /// `sqlite://FILE` or `postgres://…`. Default: `sqlite://<state_dir>/portcullis.db`.
    /// A password in the URL is refused: use `database_password_file`.
    pub database_url: Option<String>,
    /// File holding the database password (PostgreSQL), read at start.
    pub database_password_file: Option<PathBuf>,
    /// Sign-in, sessions and tokens.
    pub identity: IdentityConfig,
    /// The anomaly job: per-subject baselines from the audit table.
    pub anomaly: AnomalyConfig,
    /// Data retention: periods, archive folder, schedule (docs/retention.md).
    pub retention: RetentionConfig,
    /// Ticket attachments: limits and storage.
    pub attachments: AttachmentsConfig,
    /// The built web application served at `/` and `/assets/` (`make web` builds it).
    /// Default `web/dist`, relative to the configuration file's folder.
    pub web_dir: PathBuf,
}

impl Default for BackendConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8081".to_owned(),
            admin_listen: Some("127.0.0.1:9091".to_owned()),
            database_url: None,
            database_password_file: None,
            identity: IdentityConfig::default(),
            anomaly: AnomalyConfig::default(),
            retention: RetentionConfig::default(),
            attachments: AttachmentsConfig::default(),
            web_dir: PathBuf::from("web/dist"),
        }
    }
}

/// Validated backend settings.
#[derive(Debug, Clone)]
pub struct BackendSettings {
    pub listen: SocketAddr,
    pub admin_listen: Option<SocketAddr>,
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
    pub identity: IdentitySettings,
    pub anomaly: AnomalySettings,
    /// Data retention ([`crate::retention`]).
    pub retention: RetentionSettings,
    /// Ticket attachments (limits, storage, key-encryption keys).
    pub attachments: AttachmentsSettings,
    /// The audit log: emitter `backend` for the service, `cli` for administrative
    /// commands (see `portcullis_audit::AuditTemplate`).
    pub audit: portcullis_audit::AuditSettings,
    /// The web application's files.
    pub web_dir: PathBuf,
}

impl BackendConfig {
    /// Validates the section, returning every problem found. Relative paths are
    /// resolved against `base`; `shared` is what the backend shares with the proxy.
    pub fn validate(
        &self,
        prefix: &str,
        base: &Path,
        state_dir: &Path,
        shared: &SharedSettings,
    ) -> Result<BackendSettings, Problems> {
        let Self {
            listen,
            admin_listen,
            database_url,
            database_password_file,
            identity,
            anomaly,
            retention,
            attachments,
            web_dir,
        } = self;
        let mut problems = Problems::default();
        let resolve = |p: &Path| resolve_path(base, p);
        let listen = listen
            .parse::<SocketAddr>()
            .map_err(|_| {
                problems.push(
                    format!("{prefix}.listen"),
                    format!("`{listen}` is not an IP:port address"),
                )
            })
            .ok();
        let admin_listen = match admin_listen {
            None => Some(None),
            Some(a) => match a.parse::<SocketAddr>() {
                Ok(addr) if Some(addr) == listen => {
                    problems.push(
                        format!("{prefix}.admin_listen"),
                        "must differ from backend.listen",
                    );
                    None
                }
                Ok(addr) => Some(Some(addr)),
                Err(_) => {
                    problems.push(
                        format!("{prefix}.admin_listen"),
                        format!("`{a}` is not an IP:port address"),
                    );
                    None
                }
            },
        };
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
            problems.push(
                format!("{prefix}.database_url"),
                "use sqlite://FILE or postgres://HOST/DB",
            );
        }
        // Secrets never in the configuration file: a password belongs in a file.
        if let Some(rest) = url.split_once("://").map(|(_, r)| r)
            && let Some((userinfo, _)) = rest.split_once('@')
            && userinfo.contains(':')
        {
            problems.push(
                format!("{prefix}.database_url"),
                "contains a password; put it in database_password_file instead",
            );
        }
        let identity = identity.validate(
            &format!("{prefix}.identity"),
            base,
            shared.revocation_pubsub.clone(),
            &mut problems,
        );
        let anomaly = anomaly.validate(&format!("{prefix}.anomaly"), &mut problems);
        let retention = retention.validate(
            &format!("{prefix}.retention"),
            base,
            state_dir,
            &mut problems,
        );
        let attachments = attachments.validate(
            &format!("{prefix}.attachments"),
            base,
            state_dir,
            &mut problems,
        );
        // The `audit:` section replaces these defaults (see the binary's config).
        let audit = portcullis_audit::AuditConfig::default()
            .validate("audit", base, state_dir)
            .map(|t| t.settings("backend"))
            .map_err(|e| problems.append(e))
            .ok();
        match (
            listen,
            admin_listen,
            anomaly,
            retention,
            attachments,
            audit,
            problems.is_empty(),
        ) {
            (
                Some(listen),
                Some(admin_listen),
                Some(anomaly),
                Some(retention),
                Some(attachments),
                Some(audit),
                true,
            ) => Ok(BackendSettings {
                listen,
                admin_listen,
                database_url: url,
                database_password_file: database_password_file.as_deref().map(resolve),
                policy_dir: shared.policy_dir.clone(),
                identity_key_file: shared.identity_key_file.clone(),
                keyring_dir: state_dir.join("keys/jwt"),
                initial_admin_file: state_dir.join("initial-admin.txt"),
                mfa_key_file: state_dir.join("keys/mfa.key"),
                identity,
                anomaly,
                retention,
                attachments,
                audit,
                web_dir: resolve(web_dir),
            }),
            _ => Err(problems),
        }
    }
}

/// The database password file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("database password file {path}: {reason}")]
pub struct PasswordFileError {
    pub path: String,
    pub reason: String,
}

/// The database URL with the password from `database_password_file`, if any.
pub fn connect_url(settings: &BackendSettings) -> Result<String, PasswordFileError> {
    Ok(match &settings.database_password_file {
        Some(file) => {
            let pw = std::fs::read_to_string(file).map_err(|e| PasswordFileError {
                path: file.display().to_string(),
                reason: e.to_string(),
            })?;
            with_password(&settings.database_url, pw.trim())
        }
        None => settings.database_url.clone(),
    })
}

/// `url` with the password from `password_file`, if any (for tools that connect
/// without the whole settings, such as backup and restore).
pub fn url_with_password(
    url: &str,
    password_file: Option<&Path>,
) -> Result<String, PasswordFileError> {
    Ok(match password_file {
        Some(file) => {
            let pw = std::fs::read_to_string(file).map_err(|e| PasswordFileError {
                path: file.display().to_string(),
                reason: e.to_string(),
            })?;
            with_password(url, pw.trim())
        }
        None => url.to_owned(),
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
