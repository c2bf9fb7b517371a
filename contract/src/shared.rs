//! The settings proxy and backend must agree on, configured once in the `shared:`
//! section and handed to both: the policy bundle both layers enforce, the identity key
//! that signs what the proxy forwards, and the Redis channel revocations are announced
//! on. (Each used to be configured twice, once per side, and could disagree.)
//!
//! [`resolve_path`] is the one rule for relative file names in the configuration.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;

use crate::problems::Problems;
use crate::revocation::{RevocationChannel, RevocationPubSubConfig};

/// The `shared:` section of the configuration file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SharedConfig {
    /// Folder of the Rego bundle (`*.rego`, `*_test.rego`, `data.yaml`) the proxy's
    /// route decisions and the backend's object-level decisions come from. Default
    /// `policies`; when that folder does not exist, the built-in bundle is written to
    /// `<state_dir>/policies` on first start. Edits (and SIGHUP) reload it after its
    /// tests pass.
    pub policy_dir: PathBuf,
    /// The proxy↔backend identity key (32 bytes, created 0600 if missing). Default
    /// `<state_dir>/keys/identity.key`.
    pub identity_key_file: Option<PathBuf>,
    /// Redis channel on which the backend announces revocations: each message makes
    /// every proxy poll the revocation feed at once, so revocations reach every proxy
    /// in milliseconds. Polling goes on as the fallback. Default none.
    pub revocation_pubsub: Option<RevocationPubSubConfig>,
}

/// The policy folder used when none is configured.
pub const DEFAULT_POLICY_DIR: &str = "policies";

impl Default for SharedConfig {
    fn default() -> Self {
        Self {
            policy_dir: PathBuf::from(DEFAULT_POLICY_DIR),
            identity_key_file: None,
            revocation_pubsub: None,
        }
    }
}

/// The validated `shared:` section, with paths resolved.
#[derive(Debug, Clone)]
pub struct SharedSettings {
    pub policy_dir: PathBuf,
    pub identity_key_file: PathBuf,
    pub revocation_pubsub: Option<RevocationChannel>,
}

impl SharedConfig {
    /// Validates the section found at `at` (`shared`); relative paths are taken from
    /// `base`, the configuration file's folder. Whether the policy folder exists is
    /// left to the caller, which may put the built-in bundle in place of the default.
    pub fn validate(
        &self,
        at: &str,
        base: &Path,
        state_dir: &Path,
        problems: &mut Problems,
    ) -> SharedSettings {
        let revocation_pubsub = self.revocation_pubsub.as_ref().and_then(|c| {
            let password_file = c.password_file.as_deref().map(|f| resolve_path(base, f));
            c.validate(password_file.as_deref())
                .map_err(|found| {
                    for (field, message) in found {
                        problems.push(format!("{at}.revocation_pubsub.{field}"), message);
                    }
                })
                .ok()
        });
        SharedSettings {
            policy_dir: resolve_path(base, &self.policy_dir),
            identity_key_file: self.identity_key_file.as_deref().map_or_else(
                || state_dir.join("keys/identity.key"),
                |f| resolve_path(base, f),
            ),
            revocation_pubsub,
        }
    }
}

/// How a `*_file` setting names a systemd credential (`LoadCredential=NAME:…`,
/// `systemd-creds`): `credential:NAME` is the file NAME in `$CREDENTIALS_DIRECTORY`.
pub const CREDENTIAL_PREFIX: &str = "credential:";

/// A file name from the configuration: absolute as written, relative ones taken from
/// `base` (the configuration file's folder; empty for the embedded defaults), and
/// `credential:NAME` from `$CREDENTIALS_DIRECTORY` (left as written when that is not
/// set or NAME is not a plain file name, so opening it fails naming what was asked).
pub fn resolve_path(base: &Path, path: &Path) -> PathBuf {
    if let Some(name) = path
        .to_str()
        .and_then(|p| p.strip_prefix(CREDENTIAL_PREFIX))
    {
        return credential(name).unwrap_or_else(|| path.to_owned());
    }
    if path.is_absolute() || base.as_os_str().is_empty() {
        path.to_owned()
    } else {
        base.join(path)
    }
}

/// The file of systemd credential `name`, if the service manager handed us a folder.
fn credential(name: &str) -> Option<PathBuf> {
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0');
    // Where the service manager put the credential files: a folder, not a secret.
    #[allow(
        clippy::disallowed_methods,
        reason = "CREDENTIALS_DIRECTORY names a folder; the secrets are the files in it"
    )]
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY")?;
    plain.then(|| Path::new(&dir).join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_from_the_file_and_the_key_defaults_to_the_state_folder() {
        let mut p = Problems::default();
        let s = SharedConfig::default().validate(
            "shared",
            Path::new("/etc/portcullis"),
            Path::new("/var/lib/portcullis"),
            &mut p,
        );
        assert!(p.is_empty());
        assert_eq!(s.policy_dir, Path::new("/etc/portcullis/policies"));
        assert_eq!(
            s.identity_key_file,
            Path::new("/var/lib/portcullis/keys/identity.key")
        );
        assert!(s.revocation_pubsub.is_none());
        assert_eq!(
            resolve_path(Path::new(""), Path::new("policies")),
            Path::new("policies")
        );
    }

    #[test]
    fn a_bad_channel_is_reported_with_its_path_and_without_the_url() {
        let config = SharedConfig {
            revocation_pubsub: Some(RevocationPubSubConfig {
                url: "http://secret@x".to_owned(),
                password_file: None,
                channel: String::new(),
            }),
            ..SharedConfig::default()
        };
        let mut p = Problems::default();
        config.validate("shared", Path::new(""), Path::new("var"), &mut p);
        let lines = p.into_lines().join("\n");
        assert!(lines.contains("shared.revocation_pubsub.url:"), "{lines}");
        assert!(
            lines.contains("shared.revocation_pubsub.channel:"),
            "{lines}"
        );
        assert!(!lines.contains("secret"), "{lines}");
        // A password file that cannot be read is named by its path, never read out.
        let config = SharedConfig {
            revocation_pubsub: Some(RevocationPubSubConfig {
                url: "redis://127.0.0.1:6379".to_owned(),
                password_file: Some("missing/redis.password".into()),
                channel: "c".to_owned(),
            }),
            ..SharedConfig::default()
        };
        let mut p = Problems::default();
        config.validate("shared", Path::new("/etc/p"), Path::new("var"), &mut p);
        let lines = p.into_lines().join("\n");
        assert!(
            lines.contains("shared.revocation_pubsub.password_file:")
                && lines.contains("/etc/p/missing/redis.password"),
            "{lines}"
        );
    }
}
