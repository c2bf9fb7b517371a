//! Authentication and authorisation settings: token issuers, the access
//! cookie, the revocation feed, and the policy evaluation time limit. The identity
//! key, the revocation channel and the policy folder are shared with the backend
//! (`portcullis_contract::shared`).

use std::time::Duration;

use portcullis_contract::cookies::ACCESS_COOKIE;
use portcullis_contract::revocation::FEED_PATH;
use portcullis_contract::shared::SharedSettings;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::jwt::{IssuerConfig, IssuerSettings};
use portcullis_contract::problems::Problems;

/// Authentication of requests.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Token issuers. Default: the backend (`portcullis`, EdDSA, JWKS at
    /// `backend.listen`: `http://127.0.0.1:8081/auth/jwks.json`).
    pub issuers: Vec<IssuerConfig>,
    /// Cookie holding a browser's access token. Default `__Host-portcullis-access`.
    pub access_cookie: String,
    /// The backend's revocation feed. Default: at `backend.listen`
    /// (`http://127.0.0.1:8081/auth/revocations`); `null` disables it (then only token
    /// expiry ends a session at the proxy).
    pub revocation_feed_url: Option<String>,
    /// How often the feed is polled (and at once on each announcement on
    /// `shared.revocation_pubsub`). Default 500.
    pub revocation_poll_milliseconds: u64,
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
            revocation_feed_url: Some(format!("http://127.0.0.1:8081{FEED_PATH}")),
            revocation_poll_milliseconds: 500,
        }
    }
}

/// The policy bundle.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Longest evaluation before it counts as a deny. Default 100.
    pub evaluation_time_limit_milliseconds: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            evaluation_time_limit_milliseconds: 100,
        }
    }
}

/// The validated `auth` section.
pub(super) struct Auth {
    pub issuers: Vec<IssuerSettings>,
    pub access_cookie: String,
    pub revocation_feed_url: Option<String>,
    pub revocation_poll: Duration,
}

impl AuthConfig {
    /// `at` is the section's path (`proxy.auth`).
    pub(super) fn validate(&self, p: &mut Problems, at: &str, shared: &SharedSettings) -> Auth {
        let Self {
            issuers,
            access_cookie,
            revocation_feed_url,
            revocation_poll_milliseconds,
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
        if shared.revocation_pubsub.is_some() && revocation_feed_url.is_none() {
            p.push(
                format!("{at}.revocation_feed_url"),
                "shared.revocation_pubsub needs the feed: announcements only trigger a poll of it",
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
            revocation_feed_url: revocation_feed_url.clone(),
            revocation_poll: Duration::from_millis(*revocation_poll_milliseconds),
        }
    }
}

impl PolicyConfig {
    /// The evaluation time limit. (The bundle's folder is `shared.policy_dir`.)
    pub(super) fn validate(&self, p: &mut Problems, at: &str) -> Duration {
        let Self {
            evaluation_time_limit_milliseconds,
        } = self;
        if !(1..=10_000).contains(evaluation_time_limit_milliseconds) {
            p.push(
                format!("{at}.evaluation_time_limit_milliseconds"),
                "must be 1 to 10000",
            );
        }
        Duration::from_millis(*evaluation_time_limit_milliseconds)
    }
}
