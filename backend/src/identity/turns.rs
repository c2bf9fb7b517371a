//! Sign-in password checks taking turns per client network (see [`NetworkTurns`]).
//! A leaf: the identity service holds one, the sign-in handler takes turns.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;

use crate::http::ApiError;

/// How long a sign-in waits for its turn (and for a hashing slot) before it is
/// answered 503 (never counted as a failed sign-in).
pub(super) const TURN_WAIT: Duration = Duration::from_secs(10);

/// Password checks take turns per client network (an IPv6 client by its /64, as the
/// proxy's limits and the lockouts count it): one check at a time per network, the
/// others of that network waiting without holding a hashing slot. A flood of made-up
/// sign-ins from one address then holds one slot at most, and everyone else's checks
/// keep the rest. Entries live only while a check of their network is in flight.
#[derive(Debug, Default)]
pub(super) struct NetworkTurns {
    turns: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Semaphore>>>,
}

/// A network's turn at password checking; the next one waiting goes when it drops.
pub(super) struct NetworkTurn<'a> {
    turns: &'a NetworkTurns,
    network: String,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl NetworkTurns {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Arc<tokio::sync::Semaphore>>>
    {
        self.turns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits (at most [`TURN_WAIT`]) for `network`'s turn.
    pub(super) async fn take(&self, network: &str) -> Result<NetworkTurn<'_>, ApiError> {
        let semaphore = Arc::clone(
            self.lock()
                .entry(network.to_owned())
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(1))),
        );
        let mut turn = NetworkTurn {
            turns: self,
            network: network.to_owned(),
            permit: None,
        };
        turn.permit = Some(
            tokio::time::timeout(TURN_WAIT, semaphore.acquire_owned())
                .await
                .map_err(|_| busy())?
                .map_err(|_| busy())?,
        );
        Ok(turn)
    }
}

impl Drop for NetworkTurn<'_> {
    fn drop(&mut self) {
        drop(self.permit.take());
        let mut turns = self.turns.lock();
        // Only the map holds it: nobody of this network is checking or waiting.
        if turns
            .get(&self.network)
            .is_some_and(|s| Arc::strong_count(s) == 1)
        {
            turns.remove(&self.network);
        }
    }
}

/// The answer when no turn or hashing slot came in time.
pub(super) fn busy() -> ApiError {
    ApiError::Custom {
        status: StatusCode::SERVICE_UNAVAILABLE,
        kind: "busy",
        detail: "Too many sign-ins at once; try again in a moment".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_check_at_a_time_per_network_and_none_left_behind() {
        let turns = NetworkTurns::default();
        let first = turns.take("203.0.113.7").await.unwrap();
        // Another network goes at once; the same network waits for the first.
        let other = turns.take("2001:db8:1:2::/64").await.unwrap();
        let same = tokio::time::timeout(Duration::from_millis(50), turns.take("203.0.113.7"));
        assert!(
            same.await.is_err(),
            "a second check of one network ran at once"
        );
        drop(other);
        drop(first);
        let again = tokio::time::timeout(Duration::from_millis(50), turns.take("203.0.113.7"));
        let again = again.await.expect("the turn was not handed on").unwrap();
        drop(again);
        assert!(turns.lock().is_empty(), "entries outlive their checks");
    }
}
