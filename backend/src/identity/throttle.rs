//! Failed sign-in throttling: per-key failure counts in a window, lockouts (an audit
//! event each) and the progressive delay before a failed answer.

use std::time::Duration;

use super::store;
use super::tokens::at;
use crate::AppState;
use crate::audit_log::{Category, Level, Outcome, event};
use crate::http::ApiError;

// ------------------------------------------------------------- throttling

impl AppState {
    /// Seconds of lockout left for a key, if locked.
    pub(super) async fn locked(&self, key: &str, now: i64) -> Result<bool, ApiError> {
        Ok(match store::failures(&self.db, key).await? {
            Some((_, _, Some(until))) => until > at(now),
            _ => false,
        })
    }

    /// Counts a failure; returns the failures in the current window. Reaching `max` locks
    /// the key and is an audit event (`lockout`).
    pub(super) async fn record_failure(
        &self,
        key: &str,
        kind: &str,
        username: &str,
        max: i64,
        now: i64,
    ) -> Result<i64, ApiError> {
        let t = &self.identity.settings.throttle;
        let locked_until = at(now + t.lockout_seconds);
        let failures = store::count_failure(
            &self.db,
            key,
            &at(now),
            &at(now - t.window_seconds),
            max,
            &locked_until,
        )
        .await?;
        let locked_until = (failures >= max).then_some(locked_until);
        if failures == max {
            self.identity
                .metrics
                .lockouts
                .with_label_values(&[kind])
                .inc();
            self.audit(
                event(Category::Auth, "lockout", Outcome::Failure)
                    .level(Level::Warning)
                    .user_id(username)
                    .detail("kind", kind)
                    .detail("failures", failures)
                    .detail("locked_until", locked_until.clone().unwrap_or_default()),
            )
            .await?;
        }
        Ok(failures)
    }

    /// Slows down repeated failures (see [`penalty_delay`]).
    pub(super) async fn penalty(&self, failures: i64) {
        let delay = penalty_delay(failures, self.identity.settings.throttle.delay_after);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
}

/// The delay before answering a failed sign-in: none up to `delay_after`
/// failures in the window, then 250 ms doubling with each further failure,
/// at most 4 s (lockout follows at the configured count).
fn penalty_delay(failures: i64, delay_after: i64) -> Duration {
    let over = failures.saturating_sub(delay_after);
    if over <= 0 {
        return Duration::ZERO;
    }
    let doublings = u32::try_from((over - 1).min(4)).unwrap_or(4);
    Duration::from_millis(250u64 << doublings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_sign_ins_are_slowed_progressively_up_to_four_seconds() {
        let ms = |failures| penalty_delay(failures, 3).as_millis();
        assert_eq!(
            (0..=10).map(ms).collect::<Vec<_>>(),
            [0, 0, 0, 0, 250, 500, 1000, 2000, 4000, 4000, 4000]
        );
        assert_eq!(penalty_delay(i64::MAX, i64::MIN).as_millis(), 4000);
    }
}
