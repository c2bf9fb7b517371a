//! Rate limiting: GCRA limits over a pluggable [`Store`], evaluated as named
//! [`Rules`].
//!
//! - [`RateLimit`]: `requests_per_period` per `period_seconds` with a burst
//!   of `burst_requests` (GCRA, see `gcra.rs` for the math and its
//!   guarantees).
//! - [`Store`]: where per-key state lives. [`LocalStore`] keeps it in memory
//!   (one proxy); [`RedisStore`] keeps it in Redis with an atomic Lua script,
//!   so several proxies share one limit.
//! - [`Rules`]: the configured rules, each keyed by client IP, subject, route
//!   or login account, enforcing or report-only ([`Mode`]). [`Rules::check_all`] returns
//!   one [`Decision`]; a store failure is settled by the rule's [`FailMode`].
//! - [`RateLimitHeaders`]: `RateLimit-Policy`, `RateLimit` (IETF draft
//!   httpapi-ratelimit-headers) and `Retry-After` values for a response.

mod config;
mod gcra;
mod local;
mod metrics;
mod redis_store;
mod rules;

use std::borrow::Cow;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;
use thiserror::Error;

pub use crate::mode::Mode;
pub use config::{RateLimitConfig, RateLimitSettings, RuleConfig, StoreConfig, StoreSettings};
pub use local::LocalStore;
pub use metrics::RateLimitMetrics;
pub use redis_store::RedisStore;
pub use rules::{Decision, KeyContext, KeyKind, Rule, RuleHit, Rules};

/// Longest accepted period.
pub const MAX_PERIOD_SECONDS: u64 = 86_400;
/// Largest accepted burst.
pub const MAX_BURST_REQUESTS: u32 = 100_000;
/// Upper bound on `burst × period / requests` (about 35 years, in µs): keeps
/// every value the Redis script computes exact in a Lua double.
const MAX_CAPACITY_US: u64 = 1 << 50;

/// Why a [`RateLimit`] was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RateLimitError {
    #[error("requests_per_period must be at least 1")]
    ZeroRequests,
    #[error("period_seconds must be between 1 and {MAX_PERIOD_SECONDS}")]
    Period,
    #[error("burst_requests must be between 1 and {MAX_BURST_REQUESTS}")]
    Burst,
    #[error("requests_per_period must not exceed one per microsecond")]
    TooFast,
    #[error("burst_requests × period_seconds / requests_per_period is too large")]
    TooLong,
}

/// A GCRA limit: on average `requests_per_period` requests per period, and
/// up to `burst_requests` at once from a rested key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    requests: u32,
    period_seconds: u64,
    burst: u32,
    /// Emission interval `T` in µs: period / requests, rounded up (so the
    /// enforced rate never exceeds the configured one).
    interval_us: u64,
}

impl RateLimit {
    /// `requests_per_period` (≥ 1) per `period_seconds` (1..=86400), bursts
    /// of up to `burst_requests` (1..=100000).
    pub fn try_new(
        requests_per_period: u32,
        period_seconds: u64,
        burst_requests: u32,
    ) -> Result<Self, RateLimitError> {
        if requests_per_period == 0 {
            return Err(RateLimitError::ZeroRequests);
        }
        if !(1..=MAX_PERIOD_SECONDS).contains(&period_seconds) {
            return Err(RateLimitError::Period);
        }
        if !(1..=MAX_BURST_REQUESTS).contains(&burst_requests) {
            return Err(RateLimitError::Burst);
        }
        let period_us = period_seconds * 1_000_000;
        if u64::from(requests_per_period) > period_us {
            return Err(RateLimitError::TooFast);
        }
        let interval_us = period_us.div_ceil(u64::from(requests_per_period));
        if interval_us * u64::from(burst_requests) > MAX_CAPACITY_US {
            return Err(RateLimitError::TooLong);
        }
        Ok(Self {
            requests: requests_per_period,
            period_seconds,
            burst: burst_requests,
            interval_us,
        })
    }

    /// Requests per period.
    pub fn requests_per_period(&self) -> u32 {
        self.requests
    }

    /// The period.
    pub fn period(&self) -> Duration {
        Duration::from_secs(self.period_seconds)
    }

    /// The burst: requests a rested key may make at once.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// Time one request "costs": period / requests, rounded up to a µs.
    pub fn emission_interval(&self) -> Duration {
        Duration::from_micros(self.interval_us)
    }

    /// `T × burst`: how far ahead of real time a key's state may run.
    pub(crate) fn capacity_us(&self) -> u64 {
        self.interval_us * u64::from(self.burst)
    }
}

/// The answer for one request against one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// The most `remaining` can be (the burst).
    pub limit: u32,
    /// Further requests allowed right now.
    pub remaining: u32,
    /// Time until the key is back to a full burst.
    pub reset_after: Duration,
    /// When denied: wait this long and the same request is allowed.
    pub retry_after: Option<Duration>,
}

/// Why a store could not answer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StoreError {
    /// The store is unreachable, timed out or answered nonsense; the rule's
    /// [`FailMode`] decides.
    #[error("rate-limit store unavailable: {0}")]
    Unavailable(String),
    /// The store's settings are unusable (e.g. a malformed Redis URL).
    #[error("rate-limit store misconfigured: {0}")]
    Config(String),
}

/// Where per-key GCRA state lives.
#[async_trait]
pub trait Store: Send + Sync {
    /// The `store` label of `portcullis_ratelimit_store_errors_total`:
    /// `local`, `redis`.
    fn kind(&self) -> &'static str;

    /// Counts one request for `key` against `limit` at `now` and returns the
    /// verdict; a denied request does not change the state. Stores with a
    /// clock of their own (Redis uses the server's `TIME`, shared by every
    /// proxy) may ignore `now`.
    async fn check(
        &self,
        key: &str,
        limit: &RateLimit,
        now: Instant,
    ) -> Result<Verdict, StoreError>;
}

/// What a rule does when its store fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// Allow the request (availability over limiting).
    Open,
    /// Deny the request with `Retry-After: 1` (limiting over availability).
    Closed,
}

/// Header values describing one rule's state, per
/// draft-ietf-httpapi-ratelimit-headers: `RateLimit-Policy:
/// "<name>";q=<quota>;w=<window>` and `RateLimit: "<name>";r=<remaining>;t=<seconds>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitHeaders {
    /// Value of `RateLimit-Policy`.
    pub policy: String,
    /// Value of `RateLimit`.
    pub rate_limit: String,
    /// Value of `Retry-After` (delta-seconds, at least 1), when denied.
    pub retry_after: Option<String>,
}

impl RateLimitHeaders {
    pub const POLICY: &'static str = "RateLimit-Policy";
    pub const RATE_LIMIT: &'static str = "RateLimit";
    pub const RETRY_AFTER: &'static str = "Retry-After";

    /// Renders the headers for rule `name` (a configured rule name: letters,
    /// digits, `_` and `-`; anything else is replaced by `_` so the value
    /// stays a valid structured-field string). The quota is the configured
    /// requests per period and the window its period; `t` and `Retry-After`
    /// are rounded up to whole seconds.
    pub fn render(name: &str, limit: &RateLimit, verdict: &Verdict) -> Self {
        Self {
            policy: policy_value(name, limit),
            rate_limit: rate_limit_value(name, verdict),
            retry_after: verdict
                .retry_after
                .map(|d| ceil_seconds(d).max(1).to_string()),
        }
    }
}

/// `name` as the content of a structured-field string: letters, digits, `_` and `-`
/// kept, anything else replaced by `_`.
fn header_safe(name: &str) -> Cow<'_, str> {
    let safe = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    // Configured names are already safe: the copy is only for the odd one out.
    if name.chars().all(safe) {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(
            name.chars()
                .map(|c| if safe(c) { c } else { '_' })
                .collect(),
        )
    }
}

fn ceil_seconds(d: Duration) -> u128 {
    d.as_micros().div_ceil(1_000_000)
}

/// The `RateLimit-Policy` value of rule `name`.
fn policy_value(name: &str, limit: &RateLimit) -> String {
    let name = header_safe(name);
    format!("\"{name}\";q={};w={}", limit.requests, limit.period_seconds)
}

/// The `RateLimit` value of rule `name` for one request's verdict.
fn rate_limit_value(name: &str, verdict: &Verdict) -> String {
    let name = header_safe(name);
    format!(
        "\"{name}\";r={};t={}",
        verdict.remaining,
        ceil_seconds(verdict.reset_after)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn limit_validation() {
        assert_eq!(
            RateLimit::try_new(0, 1, 1),
            Err(RateLimitError::ZeroRequests)
        );
        assert_eq!(RateLimit::try_new(1, 0, 1), Err(RateLimitError::Period));
        assert_eq!(
            RateLimit::try_new(1, 86_401, 1),
            Err(RateLimitError::Period)
        );
        assert_eq!(RateLimit::try_new(1, 1, 0), Err(RateLimitError::Burst));
        assert_eq!(
            RateLimit::try_new(1, 1, 100_001),
            Err(RateLimitError::Burst)
        );
        assert_eq!(
            RateLimit::try_new(2_000_000, 1, 1),
            Err(RateLimitError::TooFast)
        );
        assert_eq!(
            RateLimit::try_new(1, 86_400, 100_000),
            Err(RateLimitError::TooLong)
        );
        let l = RateLimit::try_new(3, 1, 5).unwrap();
        assert_eq!(l.emission_interval(), Duration::from_micros(333_334));
        assert_eq!(l.burst(), 5);
    }

    #[test]
    fn headers() {
        let limit = RateLimit::try_new(100, 60, 10).unwrap();
        let allowed = Verdict {
            allowed: true,
            limit: 10,
            remaining: 7,
            reset_after: Duration::from_millis(1_800),
            retry_after: None,
        };
        let h = RateLimitHeaders::render("api_ip", &limit, &allowed);
        assert_eq!(h.policy, "\"api_ip\";q=100;w=60");
        assert_eq!(h.rate_limit, "\"api_ip\";r=7;t=2");
        assert_eq!(h.retry_after, None);
        let denied = Verdict {
            allowed: false,
            remaining: 0,
            retry_after: Some(Duration::from_millis(1)),
            ..allowed
        };
        let h = RateLimitHeaders::render("we\"ird name", &limit, &denied);
        assert_eq!(h.policy, "\"we_ird_name\";q=100;w=60");
        assert_eq!(h.retry_after.as_deref(), Some("1"));
    }

    proptest! {
        /// Header values are always valid HTTP header values.
        #[test]
        fn headers_are_valid_values(
            name in ".{0,40}",
            remaining in 0u32..1000,
            reset_ms in 0u64..10_000_000,
            retry_ms in proptest::option::of(0u64..10_000_000),
        ) {
            let limit = RateLimit::try_new(10, 60, 20).unwrap();
            let v = Verdict {
                allowed: retry_ms.is_none(),
                limit: 20,
                remaining,
                reset_after: Duration::from_millis(reset_ms),
                retry_after: retry_ms.map(Duration::from_millis),
            };
            let h = RateLimitHeaders::render(&name, &limit, &v);
            prop_assert!(http::HeaderValue::from_str(&h.policy).is_ok());
            prop_assert!(http::HeaderValue::from_str(&h.rate_limit).is_ok());
            if let Some(r) = h.retry_after {
                prop_assert!(r.parse::<u64>().unwrap() >= 1);
            }
        }
    }
}
