//! The links of the hash chain: the genesis `prev_hash` and how an event's hash is computed
//! from the previous hash and the event's canonical JSON.

use sha2::{Digest as _, Sha256};

/// `prev_hash` of the first event of a chain.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// hex SHA-256 of `prev_hash` followed by the unhashed canonical event.
pub(crate) fn chain_hash(prev_hash: &str, unhashed: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(unhashed);
    hex::encode(hasher.finalize())
}
