//! In-memory GCRA state for a single proxy.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use async_trait::async_trait;

use super::{RateLimit, Store, StoreError, Verdict, gcra};

const SHARDS: usize = 32;
/// A full shard sweeps out idle keys at most this often (µs); in between,
/// making room evicts from a small sample, so a flood of new keys costs
/// O(1) per request rather than a scan of the shard.
const SWEEP_EVERY_US: u64 = 1_000_000;
const EVICTION_SAMPLE: usize = 16;

#[derive(Default)]
struct Shard {
    /// Key → TAT (µs since the store's epoch).
    tats: HashMap<Box<str>, u64>,
    last_sweep_us: u64,
}

/// GCRA state in memory: sharded maps behind short critical sections, at
/// most `max_keys` keys. A key whose TAT has passed is idle (equivalent to a
/// fresh key) and is the first to go when a shard is full; if every key is
/// active, the one closest to idle in a small random sample is evicted (its
/// client gets a fresh burst — the price of bounded memory).
pub struct LocalStore {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
    per_shard: usize,
    epoch: Instant,
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore")
            .field("max_keys", &(self.per_shard * SHARDS))
            .finish_non_exhaustive()
    }
}

impl LocalStore {
    /// A store for at most about `max_keys` keys (rounded up to a multiple
    /// of the shard count; at least one per shard).
    pub fn new(max_keys: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
            per_shard: max_keys.div_ceil(SHARDS).max(1),
            epoch: Instant::now(),
        }
    }

    /// Keys currently held.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).tats.len())
            .sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn check_now(&self, key: &str, limit: &RateLimit, now: Instant) -> Verdict {
        let now_us = u64::try_from(now.saturating_duration_since(self.epoch).as_micros())
            .unwrap_or(u64::MAX);
        let index = usize::try_from(self.hasher.hash_one(key)).unwrap_or(0) % SHARDS;
        // `shards` has SHARDS entries. A panic under the lock leaves at worst
        // one stale TAT, so a poisoned lock is used as is.
        let mut shard = self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // A key seen before (the common case) is looked up once.
        if let Some(stored) = shard.tats.get_mut(key) {
            let step = gcra::step(Some(*stored), now_us, limit);
            if step.allowed {
                *stored = step.tat;
            }
            return Verdict::from_step(limit, step);
        }
        let step = gcra::step(None, now_us, limit);
        if step.allowed {
            if shard.tats.len() >= self.per_shard {
                make_room(&mut shard, now_us, self.per_shard);
            }
            shard.tats.insert(key.into(), step.tat);
        }
        Verdict::from_step(limit, step)
    }
}

fn make_room(shard: &mut Shard, now_us: u64, per_shard: usize) {
    if now_us.saturating_sub(shard.last_sweep_us) >= SWEEP_EVERY_US {
        shard.last_sweep_us = now_us;
        shard.tats.retain(|_, tat| *tat > now_us);
    }
    if shard.tats.len() >= per_shard {
        let victim = shard
            .tats
            .iter()
            .take(EVICTION_SAMPLE)
            .min_by_key(|(_, tat)| **tat)
            .map(|(k, _)| k.clone());
        if let Some(victim) = victim {
            shard.tats.remove(&victim);
        }
    }
}

#[async_trait]
impl Store for LocalStore {
    fn kind(&self) -> &'static str {
        "local"
    }

    async fn check(
        &self,
        key: &str,
        limit: &RateLimit,
        now: Instant,
    ) -> Result<Verdict, StoreError> {
        Ok(self.check_now(key, limit, now))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn keys_are_independent() {
        let s = LocalStore::new(1000);
        let l = RateLimit::try_new(1, 60, 2).unwrap();
        let now = Instant::now();
        assert!(s.check_now("a", &l, now).allowed);
        assert!(s.check_now("a", &l, now).allowed);
        assert!(!s.check_now("a", &l, now).allowed);
        assert!(s.check_now("b", &l, now).allowed);
        assert!(!s.check_now("a", &l, now + Duration::from_secs(59)).allowed);
        assert!(s.check_now("a", &l, now + Duration::from_secs(60)).allowed);
    }

    #[test]
    fn memory_is_bounded() {
        let s = LocalStore::new(256);
        let l = RateLimit::try_new(1, 3600, 1).unwrap();
        let now = Instant::now();
        for i in 0..50_000 {
            s.check_now(&format!("client-{i}"), &l, now);
        }
        assert!(s.len() <= 256, "{}", s.len());
    }

    #[test]
    fn idle_keys_are_swept_first() {
        let s = LocalStore::new(SHARDS); // one key per shard
        let l = RateLimit::try_new(1, 1, 1).unwrap();
        let start = Instant::now();
        for i in 0..10_000 {
            s.check_now(&format!("k{i}"), &l, start);
        }
        // Two seconds later every key is idle: a newcomer always fits.
        let later = start + Duration::from_secs(2);
        assert!(s.check_now("newcomer", &l, later).allowed);
        assert!(s.len() <= SHARDS);
    }
}
