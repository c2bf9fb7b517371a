//! Revoked sessions. The backend numbers every ended session; the proxy
//! polls `GET /auth/revocations?after=N` (signed as the `@proxy` service,
//! [`portcullis_contract::revocation`] is the wire shape)
//! every `poll_interval` and refuses tokens whose `sid` is in the set, so a
//! logout or an administrator's revocation takes effect within about one
//! interval (500 ms by default).
//!
//! With Redis configured, the backend also publishes a message on a channel
//! after each revocation and [`PubSubListener`] wakes the poller at once, so
//! every proxy subscribed learns of it within a feed round trip. The message
//! is only a nudge: what is revoked still comes from the signed feed, so a
//! party able to publish on the channel can make proxies poll, nothing more,
//! and a lost message costs at most one poll interval.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use prometheus::{IntCounter, IntGauge, Registry};
use thiserror::Error;
use tokio::sync::Notify;

use portcullis_contract::identity::{
    IDENTITY_HEADER, Identity, IdentityKey, SERVICE_SUBJECT, SIGNATURE_HEADER,
};
use portcullis_contract::revocation::{FEED_PAGE, Feed};

/// How long a revoked id is kept when the feed does not say (an older backend).
const DEFAULT_RETAIN: Duration = Duration::from_secs(3600);
/// Pruning walks the whole set: at most this often.
const PRUNE_INTERVAL: Duration = Duration::from_secs(10);

/// Revoked session ids, shared by all requests. Each id is kept for the
/// feed's `retain_seconds` (the longest a token naming it can still be valid,
/// plus a margin), so the set stays as small as the recent revocations.
#[derive(Debug, Default)]
pub struct Revocations {
    /// Session id → when this proxy learnt of it.
    revoked: RwLock<HashMap<String, Instant>>,
    after: AtomicI64,
    /// True once the first poll succeeded.
    synced: AtomicBool,
    last_prune: Mutex<Option<Instant>>,
}

impl Revocations {
    pub fn is_revoked(&self, sid: &str) -> bool {
        self.revoked.read().map_or(true, |s| s.contains_key(sid))
    }

    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    fn add(&self, ids: Vec<String>, after: i64, now: Instant) {
        if let Ok(mut set) = self.revoked.write() {
            for id in ids {
                set.entry(id).or_insert(now);
            }
        }
        self.after.store(after, Ordering::Release);
        self.synced.store(true, Ordering::Release);
    }

    /// Forgets ids learnt more than `retain` before `now` (at most every
    /// [`PRUNE_INTERVAL`]).
    fn prune(&self, retain: Duration, now: Instant) {
        let Ok(mut last) = self.last_prune.lock() else {
            return;
        };
        if last.is_some_and(|t| now.saturating_duration_since(t) < PRUNE_INTERVAL) {
            return;
        }
        *last = Some(now);
        if let Ok(mut set) = self.revoked.write() {
            set.retain(|_, learnt| now.saturating_duration_since(*learnt) < retain);
        }
    }
}

/// Revocation metrics.
#[derive(Clone)]
pub struct RevocationMetrics {
    /// `portcullis_revocation_feed_errors_total`.
    pub feed_errors: IntCounter,
    /// `portcullis_revocation_pubsub_up`, registered only with a channel configured.
    pub pubsub_up: Option<IntGauge>,
}

impl RevocationMetrics {
    /// Registers the feed's metric, and the channel's when `pubsub` is set.
    pub fn try_new(registry: &Registry, pubsub: bool) -> prometheus::Result<Self> {
        let feed_errors = IntCounter::new(
            "portcullis_revocation_feed_errors_total",
            "Failed polls of the backend's session revocation feed.",
        )?;
        registry.register(Box::new(feed_errors.clone()))?;
        let pubsub_up = if pubsub {
            let up = IntGauge::new(
                "portcullis_revocation_pubsub_up",
                "1 while subscribed to the Redis channel of revocation announcements.",
            )?;
            registry.register(Box::new(up.clone()))?;
            Some(up)
        } else {
            None
        };
        Ok(Self {
            feed_errors,
            pubsub_up,
        })
    }
}

/// Why a poll of the feed failed.
#[derive(Debug, Error)]
enum FeedError {
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("status {0}")]
    Status(reqwest::StatusCode),
}

/// Why a subscription to the channel ended.
#[derive(Debug, Error)]
enum PubSubError {
    #[error("{0} timed out")]
    Timeout(&'static str),
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    #[error("connection closed")]
    Closed,
}

/// Polls the feed until the process exits.
pub struct FeedPoller {
    pub url: String,
    pub interval: Duration,
    pub key: IdentityKey,
    pub revocations: Arc<Revocations>,
    pub errors: prometheus::IntCounter,
    /// Notified by [`PubSubListener`]: poll now instead of at the next tick.
    pub wake: Arc<Notify>,
}

impl FeedPoller {
    async fn poll_once(&self, client: &reqwest::Client) -> Result<usize, FeedError> {
        loop {
            let after = self.revocations.after.load(Ordering::Acquire);
            let url = format!("{}?after={after}", self.url);
            let target = url
                .split_once("://")
                .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_owned()))
                .unwrap_or_else(|| "/".to_owned());
            let identity = Identity {
                sub: SERVICE_SUBJECT.into(),
                session_id: None,
                auth_method: None,
                decision_id: None,
                iat: time::OffsetDateTime::now_utc().unix_timestamp(),
                issuer: None,
            };
            let (id, sig) = self.key.sign("GET", &target, &identity);
            let resp = client
                .get(&url)
                .header(IDENTITY_HEADER, id)
                .header(SIGNATURE_HEADER, sig)
                .send()
                .await?;
            if !resp.status().is_success() {
                return Err(FeedError::Status(resp.status()));
            }
            let feed: Feed = resp.json().await?;
            let n = feed.session_ids.len();
            let now = Instant::now();
            self.revocations.add(feed.session_ids, feed.after, now);
            // Bounded below: a zero would forget revocations at once.
            let retain = feed
                .retain_seconds
                .map_or(DEFAULT_RETAIN, |s| Duration::from_secs(s.max(60)));
            self.revocations.prune(retain, now);
            // A full page means there may be more.
            if n < FEED_PAGE {
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
            tokio::select! {
                () = tokio::time::sleep(self.interval) => {}
                () = self.wake.notified() => {}
            }
        }
    }
}

/// How often a quiet subscription is checked with a `PING`: a connection that
/// died without a reset would otherwise wait for messages forever.
const PUBSUB_PING_INTERVAL: Duration = Duration::from_secs(15);
/// Bound on connecting, subscribing and each `PING`.
const PUBSUB_TIMEOUT: Duration = Duration::from_secs(2);
/// Wait before reconnecting after a failure.
const PUBSUB_RETRY: Duration = Duration::from_secs(1);

/// Subscribes to the backend's revocation channel in Redis and wakes the
/// [`FeedPoller`] on every message (see the module documentation).
pub struct PubSubListener {
    pub client: redis::Client,
    pub channel: String,
    pub wake: Arc<Notify>,
    /// 1 while subscribed.
    pub up: prometheus::IntGauge,
}

impl std::fmt::Debug for PubSubListener {
    // The client's URL may hold a password: it is not shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubSubListener")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl PubSubListener {
    /// One subscription, until it fails.
    async fn subscribe_once(&self) -> Result<(), PubSubError> {
        let pubsub = tokio::time::timeout(PUBSUB_TIMEOUT, self.client.get_async_pubsub())
            .await
            .map_err(|_| PubSubError::Timeout("connecting"))??;
        let (mut sink, mut stream) = pubsub.split();
        tokio::time::timeout(PUBSUB_TIMEOUT, sink.subscribe(&self.channel))
            .await
            .map_err(|_| PubSubError::Timeout("subscribing"))??;
        self.up.set(1);
        tracing::info!(channel = %self.channel, "subscribed to session revocations");
        // Revocations published while no subscription existed were missed.
        self.wake.notify_one();
        let mut ping = tokio::time::interval(PUBSUB_PING_INTERVAL);
        ping.reset();
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(_) => self.wake.notify_one(),
                    None => return Err(PubSubError::Closed),
                },
                _ = ping.tick() => {
                    tokio::time::timeout(PUBSUB_TIMEOUT, sink.ping::<redis::Value>())
                        .await
                        .map_err(|_| PubSubError::Timeout("PING"))??;
                }
            }
        }
    }

    /// Subscribes, and re-subscribes after failures, until the process exits.
    pub async fn run(self) {
        let mut failing = false;
        loop {
            if let Err(e) = self.subscribe_once().await {
                // Log the first failure after each working subscription.
                if self.up.get() == 1 {
                    failing = false;
                }
                self.up.set(0);
                if !failing {
                    tracing::warn!(error = %e, channel = %self.channel, "revocation channel unavailable; polling the feed only");
                    failing = true;
                }
            }
            tokio::time::sleep(PUBSUB_RETRY).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoked_ids_are_forgotten_after_the_retention_and_not_before() {
        let r = Revocations::default();
        let t0 = Instant::now();
        r.add(vec!["a".into()], 1, t0);
        r.add(vec!["b".into()], 2, t0 + Duration::from_secs(50));
        // Learning an id again does not extend it.
        r.add(vec!["a".into()], 3, t0 + Duration::from_secs(50));
        let retain = Duration::from_secs(100);
        r.prune(retain, t0 + Duration::from_secs(99));
        assert!(r.is_revoked("a") && r.is_revoked("b"));
        // Pruning runs at most every PRUNE_INTERVAL.
        r.prune(retain, t0 + Duration::from_secs(101));
        assert!(r.is_revoked("a"));
        r.prune(retain, t0 + Duration::from_secs(110));
        assert!(!r.is_revoked("a"), "kept past its retention");
        assert!(r.is_revoked("b"), "forgotten before its retention");
        r.prune(retain, t0 + Duration::from_secs(150));
        assert!(!r.is_revoked("b"));
        assert_eq!(r.after.load(Ordering::Acquire), 3);
    }
}
