//! Session revocations between backend and proxies: the signed feed's wire shape
//! ([`Feed`], served at [`FEED_PATH`]) and the Redis pub/sub channel for
//! revocations: the backend publishes after each revocation, every proxy
//! subscribed polls the signed revocation feed at once. A message means only
//! "poll now"; the revoked ids never travel on it. Both sides read the same
//! configuration shape (`backend.identity.revocation_pubsub`,
//! `proxy.auth.revocation_pubsub`) through this module.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::redis_client::{self, RedisConfigError};

/// `GET` endpoint of the feed, signed as [`crate::identity::SERVICE_SUBJECT`];
/// `?after=N` returns the revocations numbered above `N`.
pub const FEED_PATH: &str = "/auth/revocations";
/// Most session ids in one page: a full page means the poller asks again at once.
pub const FEED_PAGE: usize = 1000;

/// One page of the revocation feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feed {
    /// The highest revocation number in this page (ask for `after` it next).
    pub after: i64,
    /// Sessions revoked since the number asked for.
    pub session_ids: Vec<String>,
    /// How long a revocation matters: the longest a token naming it can be valid.
    pub retain_seconds: Option<u64>,
}

/// Channel used when the configuration names none.
pub const DEFAULT_CHANNEL: &str = "portcullis:revocations";

/// A Redis pub/sub channel for revocation announcements.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RevocationPubSubConfig {
    /// `redis://[user@]host:port[/db]`, without a password.
    pub url: String,
    /// File holding the Redis password (or `credential:NAME`), when the server asks for
    /// one. Default none.
    pub password_file: Option<PathBuf>,
    /// Default `portcullis:revocations`.
    #[serde(default = "default_channel")]
    pub channel: String,
}

fn default_channel() -> String {
    DEFAULT_CHANNEL.to_owned()
}

/// A validated channel: the Redis client (not connected yet) and the name.
#[derive(Clone)]
pub struct RevocationChannel {
    pub client: redis::Client,
    pub channel: String,
}

impl std::fmt::Debug for RevocationChannel {
    // The client's URL may hold a password: it is not shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationChannel")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl RevocationPubSubConfig {
    /// The channel, or every problem as (field, message); the field is `url`,
    /// `password_file` or `channel`, for the caller to prefix with its own path.
    /// `password_file` is this config's `password_file` as the caller resolved it.
    pub fn validate(
        &self,
        password_file: Option<&Path>,
    ) -> Result<RevocationChannel, Vec<(&'static str, String)>> {
        let mut problems = Vec::new();
        let client = redis_client::client(&self.url, password_file)
            .map_err(|e| {
                let field = match e {
                    RedisConfigError::Url => "url",
                    _ => "password_file",
                };
                problems.push((field, e.to_string()));
            })
            .ok();
        if self.channel.is_empty() {
            problems.push(("channel", "must not be empty".to_owned()));
        }
        match client {
            Some(client) if problems.is_empty() => Ok(RevocationChannel {
                client,
                channel: self.channel.clone(),
            }),
            _ => Err(problems),
        }
    }
}
