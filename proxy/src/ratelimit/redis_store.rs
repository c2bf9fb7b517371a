//! GCRA state in Redis, shared by every proxy that points at the same
//! server and key prefix.

use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{RateLimit, Store, StoreError, Verdict};

/// After a failure, checks fail fast for this long instead of each waiting
/// for a timeout against a server that is down.
const DOWN_BACKOFF: Duration = Duration::from_millis(500);

/// The GCRA step of `gcra.rs`, atomically in Redis. Time is the server's
/// (`TIME`), so proxies with skewed clocks still share one schedule. Values
/// are µs; [`RateLimit::try_new`] bounds them so that doubles stay exact,
/// and the TAT is written with `%.0f` because Lua's default number-to-string
/// conversion keeps only 14 digits. The key expires when its TAT passes,
/// i.e. when it would be indistinguishable from a fresh key.
///
/// KEYS[1] = key; ARGV[1] = emission interval, ARGV[2] = capacity.
/// Returns {allowed (0/1), remaining, reset_after_us, retry_after_us}.
const GCRA_LUA: &str = r"
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then
  tat = now
end
local new_tat = tat + interval
local diff = new_tat - now
if diff > capacity then
  return {0, 0, tat - now, diff - capacity}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil(diff / 1000))
return {1, math.floor((capacity - diff) / interval), diff, 0}
";

/// A [`Store`] in Redis (`redis://` URLs; the TLS scheme `rediss://` is not
/// compiled in). The connection is opened on first use and re-established
/// by the connection manager after failures; every check is bounded by
/// `timeout`, and after a failure checks fail fast for 500 ms. Keys are
/// `key_prefix` + the rule's key and expire on their own.
pub struct RedisStore {
    client: redis::Client,
    manager: tokio::sync::OnceCell<ConnectionManager>,
    key_prefix: String,
    timeout: Duration,
    script: redis::Script,
    down_until: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for RedisStore {
    // The URL may carry a password: it is not shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store for the server at `url` (not contacted yet), authenticating with the
    /// password in `password_file` when given. Errors on a malformed URL or an
    /// unreadable password file.
    pub fn try_new(
        url: &str,
        password_file: Option<&Path>,
        key_prefix: &str,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let client = portcullis_contract::redis_client::client(url, password_file)
            .map_err(|e| StoreError::Config(e.to_string()))?;
        Ok(Self {
            client,
            manager: tokio::sync::OnceCell::new(),
            key_prefix: key_prefix.to_owned(),
            timeout,
            script: redis::Script::new(GCRA_LUA),
            down_until: Mutex::new(None),
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        self.manager
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(DOWN_BACKOFF);
                // Lazy: returns at once; must run inside a tokio runtime,
                // which it does here (first check).
                ConnectionManager::new_lazy_with_config(self.client.clone(), config)
                    .map_err(|e| StoreError::Unavailable(e.to_string()))
            })
            .await
            .cloned()
    }

    fn mark_down(&self) {
        *self
            .down_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now() + DOWN_BACKOFF);
    }

    fn recently_down(&self) -> bool {
        self.down_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|until| Instant::now() < until)
    }
}

#[async_trait]
impl Store for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn check(
        &self,
        key: &str,
        limit: &RateLimit,
        _now: Instant,
    ) -> Result<Verdict, StoreError> {
        if self.recently_down() {
            return Err(StoreError::Unavailable(
                "unreachable moments ago; not retried yet".to_owned(),
            ));
        }
        let full_key = format!("{}{key}", self.key_prefix);
        let call = async {
            let mut conn = self.connection().await?;
            let mut invocation = self.script.key(&full_key);
            invocation.arg(limit.interval_us).arg(limit.capacity_us());
            invocation
                .invoke_async::<(i64, i64, i64, i64)>(&mut conn)
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))
        };
        let reply = match tokio::time::timeout(self.timeout, call).await {
            Ok(reply) => reply,
            Err(_) => Err(StoreError::Unavailable("timed out".to_owned())),
        };
        let (allowed, remaining, reset_after_us, retry_after_us) = match reply {
            Ok(reply) => reply,
            Err(e) => {
                self.mark_down();
                return Err(e);
            }
        };
        let micros = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
        let allowed = allowed == 1;
        Ok(Verdict {
            allowed,
            limit: limit.burst(),
            remaining: u32::try_from(remaining).unwrap_or(0),
            reset_after: micros(reset_after_us),
            retry_after: (!allowed).then(|| micros(retry_after_us)),
        })
    }
}
