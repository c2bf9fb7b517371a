//! Revoked sessions. The backend numbers every ended session; the proxy
//! polls `GET /auth/revocations?after=N` (signed as the `@proxy` service)
//! every `poll_interval` and refuses tokens whose `sid` is in the set, so a
//! logout or an administrator's revocation takes effect within about one
//! interval (500 ms by default).

use std::collections::HashSet;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use portcullis_authz::identity::{IDENTITY_HEADER, Identity, IdentityKey, SIGNATURE_HEADER};

/// Revoked session ids, shared by all requests.
#[derive(Debug, Default)]
pub struct Revocations {
    revoked: RwLock<HashSet<String>>,
    after: AtomicI64,
    /// True once the first poll succeeded.
    synced: AtomicBool,
}

impl Revocations {
    pub fn is_revoked(&self, sid: &str) -> bool {
        self.revoked.read().map_or(true, |s| s.contains(sid))
    }

    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    fn add(&self, ids: Vec<String>, after: i64) {
        if let Ok(mut set) = self.revoked.write() {
            set.extend(ids);
        }
        self.after.store(after, Ordering::Release);
        self.synced.store(true, Ordering::Release);
    }
}

#[derive(serde::Deserialize)]
struct Feed {
    after: i64,
    session_ids: Vec<String>,
}

/// Polls the feed until the process exits.
pub struct FeedPoller {
    pub url: String,
    pub interval: Duration,
    pub key: IdentityKey,
    pub revocations: std::sync::Arc<Revocations>,
    pub errors: prometheus::IntCounter,
}

impl FeedPoller {
    async fn poll_once(&self, client: &reqwest::Client) -> Result<usize, String> {
        loop {
            let after = self.revocations.after.load(Ordering::Acquire);
            let url = format!("{}?after={after}", self.url);
            let target = url
                .split_once("://")
                .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_owned()))
                .unwrap_or_else(|| "/".to_owned());
            let identity = Identity {
                sub: "@proxy".into(),
                session_id: None,
                auth_method: None,
                decision_id: None,
                iat: time::OffsetDateTime::now_utc().unix_timestamp(),
            };
            let (id, sig) = self.key.sign("GET", &target, &identity);
            let resp = client
                .get(&url)
                .header(IDENTITY_HEADER, id)
                .header(SIGNATURE_HEADER, sig)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                return Err(format!("status {}", resp.status()));
            }
            let feed: Feed = resp.json().await.map_err(|e| e.to_string())?;
            let n = feed.session_ids.len();
            self.revocations.add(feed.session_ids, feed.after);
            // A full page means there may be more.
            if n < 1000 {
                return Ok(n);
            }
        }
    }

    pub async fn run(self) {
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .redirect(reqwest::redirect::Policy::none())
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "revocation feed client unusable");
                return;
            }
        };
        let mut failing = false;
        loop {
            match self.poll_once(&client).await {
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!("revocation feed reachable again");
                }
                Ok(_) => {}
                Err(e) => {
                    self.errors.inc();
                    if !failing {
                        tracing::warn!(error = %e, url = %self.url, "revocation feed unreachable; known revocations still apply");
                        failing = true;
                    }
                }
            }
            tokio::time::sleep(self.interval).await;
        }
    }
}
