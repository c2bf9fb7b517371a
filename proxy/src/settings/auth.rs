//! Authentication and authorisation settings: token issuers, the access
//! cookie, the identity key, the revocation feed and channel, and the policy
//! bundle's folder and time limit.

use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis_contract::cookies::ACCESS_COOKIE;
use portcullis_contract::revocation::{FEED_PATH, RevocationChannel, RevocationPubSubConfig};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::jwt::{IssuerConfig, IssuerSettings};
use crate::problems::Problems;

/// Authentication of requests.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Token issuers. Default: the backend (`portcullis`, JWKS at
    /// `http://127.0.0.1:8081/auth/jwks.json`, EdDSA).
    pub issuers: Vec<IssuerConfig>,
    /// Cookie holding a browser's access token. Default `__Host-portcullis-access`.
    pub access_cookie: String,
    /// Shared proxy↔backend identity key. Default `<state_dir>/keys/identity.key`.
    pub identity_key_file: Option<PathBuf>,
    /// The backend's revocation feed. Default `http://127.0.0.1:8081/auth/revocations`;
    /// `null` disables it (then only token expiry ends a session at the proxy).
    pub revocation_feed_url: Option<String>,
    /// How often the feed is polled. Default 500.
    pub revocation_poll_milliseconds: u64,
    /// Redis channel on which the backend announces revocations: each message
    /// makes the proxy poll the feed at once, so revocations reach every proxy
    /// in milliseconds. Polling goes on as the fallback. Default none.
    pub revocation_pubsub: Option<RevocationPubSubConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            issuers: vec![IssuerConfig {
                algorithms: vec!["EdDSA".to_owned()],
                refresh_interval_seconds: 60,
                min_refetch_interval_seconds: 5,
                ..IssuerConfig::with_jwks_url(
                    "portcullis",
                    "backend",
                    vec!["portcullis".to_owned()],
                    "http://127.0.0.1:8081/auth/jwks.json",
                )
            }],
            access_cookie: ACCESS_COOKIE.to_owned(),
            identity_key_file: None,
            revocation_feed_url: Some(format!("http://127.0.0.1:8081{FEED_PATH}")),
            revocation_poll_milliseconds: 500,
            revocation_pubsub: None,
        }
    }
}

/// The policy bundle.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Folder of `*.rego`, `*_test.rego` and `data.yaml`. Default `policies`.
    /// Watched: edits (and SIGHUP) reload it after its tests pass.
    pub dir: PathBuf,
    /// Longest evaluation before it counts as a deny. Default 100.
    pub evaluation_time_limit_milliseconds: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("policies"),
            evaluation_time_limit_milliseconds: 100,
        }
    }
}

/// The validated `auth` section.
pub(super) struct Auth {
    pub issuers: Vec<IssuerSettings>,
    pub access_cookie: String,
    pub identity_key_file: PathBuf,
    pub revocation_feed_url: Option<String>,
    pub revocation_poll: Duration,
    pub revocation_pubsub: Option<RevocationChannel>,
}

/// Resolves a relative file name against the configuration file's folder.
pub(super) fn resolve(base: &Path, f: &Path) -> PathBuf {
    if f.is_absolute() || base.as_os_str().is_empty() {
        f.to_owned()
    } else {
        base.join(f)
    }
}

impl AuthConfig {
    /// `at` is the section's path (`proxy.auth`).
    pub(super) fn validate(
        &self,
        p: &mut Problems,
        at: &str,
        base: &Path,
        state_dir: &Path,
    ) -> Auth {
        let Self {
            issuers,
            access_cookie,
            identity_key_file,
            revocation_feed_url,
            revocation_poll_milliseconds,
            revocation_pubsub,
        } = self;
        if issuers.is_empty() {
            p.push(format!("{at}.issuers"), "at least one issuer is required");
        }
        let mut parsed = Vec::new();
        for (i, cfg) in issuers.iter().enumerate() {
            match IssuerSettings::try_new(cfg) {
                Ok(s) => parsed.push(s),
                Err(problems) => p.extend_under(&format!("{at}.issuers[{i}]"), problems),
            }
        }
        if !access_cookie.starts_with("__Host-") {
            p.push(format!("{at}.access_cookie"), "use a `__Host-` cookie name");
        }
        if let Some(url) = revocation_feed_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            p.push(
                format!("{at}.revocation_feed_url"),
                "must be an http(s) URL",
            );
        }
        let channel = revocation_pubsub.as_ref().and_then(|c| {
            c.validate()
                .map_err(|problems| {
                    for (field, msg) in problems {
                        p.push(format!("{at}.revocation_pubsub.{field}"), msg);
                    }
                })
                .ok()
        });
        if revocation_pubsub.is_some() && revocation_feed_url.is_none() {
            p.push(
                format!("{at}.revocation_pubsub"),
                "needs revocation_feed_url: announcements only trigger a poll of the feed",
            );
        }
        if !(100..=60_000).contains(revocation_poll_milliseconds) {
            p.push(
                format!("{at}.revocation_poll_milliseconds"),
                "must be 100 to 60000",
            );
        }
        Auth {
            issuers: parsed,
            access_cookie: access_cookie.clone(),
            identity_key_file: identity_key_file
                .as_deref()
                .map_or_else(|| state_dir.join("keys/identity.key"), |f| resolve(base, f)),
            revocation_feed_url: revocation_feed_url.clone(),
            revocation_poll: Duration::from_millis(*revocation_poll_milliseconds),
            revocation_pubsub: channel,
        }
    }
}

impl PolicyConfig {
    /// The bundle's folder (resolved) and evaluation time limit. Whether the folder
    /// exists is the composition's to check: a missing default folder is replaced by the
    /// built-in bundle (`portcullis_authz::embedded`).
    pub(super) fn validate(&self, p: &mut Problems, at: &str, base: &Path) -> (PathBuf, Duration) {
        let Self {
            dir,
            evaluation_time_limit_milliseconds,
        } = self;
        let dir = resolve(base, dir);
        if !(1..=10_000).contains(evaluation_time_limit_milliseconds) {
            p.push(
                format!("{at}.evaluation_time_limit_milliseconds"),
                "must be 1 to 10000",
            );
        }
        (
            dir,
            Duration::from_millis(*evaluation_time_limit_milliseconds),
        )
    }
}
