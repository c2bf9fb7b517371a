//! Announces session revocations on a Redis channel, so that every proxy
//! subscribed polls the revocation feed at once instead of at its next tick.
//!
//! The message carries nothing the proxies act on but its arrival: the
//! revoked session ids still travel only through the signed feed (see the
//! proxy's `revocation` module). Publishing is best effort and off the
//! request path: the database is the record, and a proxy that misses a
//! message learns of the revocation at its next poll.

use std::time::Duration;

use portcullis_contract::revocation::RevocationChannel;
use redis::AsyncCommands as _;
use redis::aio::ConnectionManager;

/// Bound on connecting and on each `PUBLISH`.
const PUBLISH_TIMEOUT: Duration = Duration::from_millis(500);

/// Why one announcement was not published (logged, counted, never fatal).
#[derive(Debug, thiserror::Error)]
enum AnnounceError {
    #[error("connecting timed out")]
    ConnectTimeout,
    #[error("PUBLISH timed out")]
    PublishTimeout,
    #[error("{0}")]
    Redis(redis::RedisError),
}

/// Publishes revocation announcements; connects on first use and reconnects
/// after failures.
pub struct Announcer {
    target: RevocationChannel,
    connection: tokio::sync::Mutex<Option<ConnectionManager>>,
    errors: prometheus::IntCounter,
}

impl Announcer {
    pub fn new(target: RevocationChannel, errors: prometheus::IntCounter) -> Self {
        Self {
            target,
            connection: tokio::sync::Mutex::new(None),
            errors,
        }
    }

    async fn publish(&self) -> Result<(), AnnounceError> {
        let mut slot = self.connection.lock().await;
        let mut connection = match slot.as_ref() {
            Some(c) => c.clone(),
            None => {
                let c = tokio::time::timeout(
                    PUBLISH_TIMEOUT,
                    self.target.client.get_connection_manager(),
                )
                .await
                .map_err(|_| AnnounceError::ConnectTimeout)?
                .map_err(AnnounceError::Redis)?;
                slot.insert(c).clone()
            }
        };
        drop(slot);
        tokio::time::timeout(
            PUBLISH_TIMEOUT,
            connection.publish::<_, _, i64>(&self.target.channel, "revoked"),
        )
        .await
        .map_err(|_| AnnounceError::PublishTimeout)?
        .map_err(AnnounceError::Redis)?;
        Ok(())
    }

    /// Whether Redis answers `PING` on the announcer's connection (connecting if needed),
    /// within the publish timeout: what `/monitoring/health` reports.
    pub async fn reachable(&self) -> bool {
        let mut slot = self.connection.lock().await;
        let mut connection = match slot.as_ref() {
            Some(c) => c.clone(),
            None => match tokio::time::timeout(
                PUBLISH_TIMEOUT,
                self.target.client.get_connection_manager(),
            )
            .await
            {
                Ok(Ok(c)) => slot.insert(c).clone(),
                _ => return false,
            },
        };
        drop(slot);
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut connection);
        matches!(tokio::time::timeout(PUBLISH_TIMEOUT, ping).await, Ok(Ok(_)))
    }

    /// Publishes one announcement in the background.
    pub fn announce(self: &std::sync::Arc<Self>) {
        let this = std::sync::Arc::clone(self);
        tokio::spawn(async move {
            if let Err(e) = this.publish().await {
                this.errors.inc();
                tracing::warn!(error = %e, channel = %this.target.channel, "revocation not announced; proxies learn of it at their next poll");
            }
        });
    }
}
