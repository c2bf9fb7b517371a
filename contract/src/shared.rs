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
            c.validate()
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

/// A file name from the configuration: absolute as written, relative ones taken from
/// `base` (the configuration file's folder; empty for the embedded defaults).
pub fn resolve_path(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() || base.as_os_str().is_empty() {
        path.to_owned()
    } else {
        base.join(path)
    }
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
    }
}
