//! The verified-token cache: a token seen before and still unexpired skips
//! parsing and signature verification.
//!
//! Entries are keyed by the SHA-256 of the token, never the token itself, and
//! live until the token's `exp` at the latest. Capacity is fixed; when a shard
//! is full, expired entries go first, then the oldest insertions (FIFO).
//! Entries whose signing key disappears from the issuer's JWKS are purged, so
//! a withdrawn key stops working at once.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};

use super::VerifiedToken;

const SHARDS: usize = 16;

pub(crate) type TokenHash = [u8; 32];

pub(crate) fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

struct Entry {
    token: Arc<VerifiedToken>,
    issuer: usize,
    kid: String,
}

#[derive(Default)]
struct Shard {
    map: HashMap<TokenHash, Entry>,
    /// Insertion order; may hold hashes already removed from `map`.
    order: VecDeque<TokenHash>,
}

pub(crate) struct TokenCache {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
}

impl TokenCache {
    /// A cache holding at most `capacity` tokens (at least one per shard).
    pub fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, hash: &TokenHash) -> std::sync::MutexGuard<'_, Shard> {
        // `shards` has SHARDS entries, so the index is in range. A panic while
        // holding the lock cannot leave a half-written entry that matters.
        self.shards[usize::from(hash[0]) % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached token and its issuer index, if present and `now < exp`.
    pub fn get(&self, hash: &TokenHash, now: i64) -> Option<(Arc<VerifiedToken>, usize)> {
        let mut shard = self.shard(hash);
        match shard.map.get(hash) {
            Some(e) if now < e.token.exp => Some((Arc::clone(&e.token), e.issuer)),
            Some(_) => {
                shard.map.remove(hash);
                None
            }
            None => None,
        }
    }

    pub fn insert(
        &self,
        hash: TokenHash,
        token: Arc<VerifiedToken>,
        issuer: usize,
        kid: &str,
        now: i64,
    ) {
        let per_shard = self.per_shard;
        let mut shard = self.shard(&hash);
        if shard.map.len() >= per_shard {
            shard.map.retain(|_, e| now < e.token.exp);
        }
        while shard.map.len() >= per_shard {
            let Some(oldest) = shard.order.pop_front() else {
                break;
            };
            shard.map.remove(&oldest);
        }
        let entry = Entry {
            token,
            issuer,
            kid: kid.to_owned(),
        };
        if shard.map.insert(hash, entry).is_none() {
            shard.order.push_back(hash);
        }
        if shard.order.len() > 2 * per_shard {
            let Shard { map, order } = &mut *shard;
            order.retain(|h| map.contains_key(h));
        }
    }

    /// Drops every entry of `issuer` signed with one of `kids`.
    pub fn purge(&self, issuer: usize, kids: &[String]) {
        if kids.is_empty() {
            return;
        }
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            shard
                .map
                .retain(|_, e| !(e.issuer == issuer && kids.contains(&e.kid)));
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).map.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(exp: i64) -> Arc<VerifiedToken> {
        Arc::new(VerifiedToken {
            issuer: "i".into(),
            sub: "s".into(),
            sid: None,
            roles: vec![],
            amr: vec![],
            exp,
            claims: serde_json::Value::Null,
        })
    }

    #[test]
    fn expires_at_exp() {
        let c = TokenCache::new(100);
        let h = hash("t");
        c.insert(h, token(100), 0, "k", 0);
        assert!(c.get(&h, 99).is_some());
        assert!(c.get(&h, 100).is_none());
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn bounded_and_purgeable() {
        let c = TokenCache::new(32);
        for i in 0..10_000 {
            c.insert(hash(&i.to_string()), token(1_000), 0, "k", 0);
        }
        assert!(c.len() <= 32, "{}", c.len());
        let h = hash("x");
        c.insert(h, token(1_000), 1, "gone", 0);
        c.purge(1, &["gone".to_owned()]);
        assert!(c.get(&h, 0).is_none());
    }
}
