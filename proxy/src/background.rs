//! The enforcement's background work on pingora's runtime: fetching the
//! issuers' key sets, polling the revocation feed and listening for
//! revocation announcements.

use std::sync::Mutex;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::jwt::JwtVerifier;
use crate::revocation::{FeedPoller, PubSubListener};

/// Fetches key sets, polls the revocation feed and listens for revocation
/// announcements on pingora's runtime.
pub struct Background {
    pub verifier: JwtVerifier,
    pub poller: Mutex<Option<FeedPoller>>,
    pub listener: Mutex<Option<PubSubListener>>,
}

#[async_trait]
impl BackgroundService for Background {
    async fn start(&self, _shutdown: ShutdownWatch) {
        if let Err(e) = self.verifier.refresh_all().await {
            tracing::warn!(error = %e, "token issuer keys not loaded yet; retrying in the background");
        }
        if let Err(e) = self.verifier.start_background_refresh() {
            tracing::error!(error = %e, "cannot refresh token issuer keys");
        }
        if let Some(listener) = self.listener.lock().ok().and_then(|mut l| l.take()) {
            tokio::spawn(listener.run());
        }
        let poller = self.poller.lock().ok().and_then(|mut p| p.take());
        if let Some(poller) = poller {
            poller.run().await;
        }
    }
}
