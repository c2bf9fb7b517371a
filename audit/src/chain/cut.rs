//! Chain cuts: when retention deletes the oldest events of an emitter's chain, the seq and
//! hash of the last deleted event become the chain's new anchor ([`ChainCut`]). The cut is
//! signed with an audit checkpoint key ([`CutSigner`]) over
//! `portcullis-audit-cut-v1\n{emitter}\n{seq}\n{hash}`, so verification can start at the cut
//! ([`verify_events_after`](crate::chain::verify::verify_events_after)): the first event kept
//! must be seq + 1 and link to the anchor's hash, and a forged anchor needs the signing key.

use std::path::Path;

use crate::chain::checkpoint::{CheckpointSigner, KeyError, PublicKey, TrustedKeys};

const CUT_DOMAIN: &str = "portcullis-audit-cut-v1";

/// The statement a cut signs.
fn cut_message(emitter: &str, seq: u64, hash: &str) -> Vec<u8> {
    format!("{CUT_DOMAIN}\n{emitter}\n{seq}\n{hash}").into_bytes()
}

/// Where an emitter's chain starts after retention deleted its oldest events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainCut {
    /// The emitter whose chain was cut.
    pub emitter: String,
    /// Seq of the last deleted event: the first kept event must be `seq + 1`.
    pub seq: u64,
    /// `portcullis.chain.hash` of the last deleted event: the first kept event's `prev_hash`.
    pub hash: String,
    /// Hex Ed25519 signature over the cut statement (see the module documentation).
    pub signature: String,
}

impl ChainCut {
    /// Whether one of `keys` signed this cut.
    pub fn verify_signature(&self, keys: &TrustedKeys) -> bool {
        keys.verify(
            &cut_message(&self.emitter, self.seq, &self.hash),
            &self.signature,
        )
    }
}

/// Signs chain cuts with an emitter's checkpoint key.
#[derive(Debug)]
pub struct CutSigner(CheckpointSigner);

impl CutSigner {
    /// Loads the checkpoint key at `key_file` (generated there, 0600, if missing, as the
    /// spool does).
    pub fn load(key_file: &Path) -> Result<Self, KeyError> {
        CheckpointSigner::load_or_generate(key_file).map(Self)
    }

    /// The public key that verifies this signer's cuts.
    pub fn public_key(&self) -> &PublicKey {
        self.0.public_key()
    }

    /// The signed cut of `emitter`'s chain after the event `seq` whose hash is `hash`.
    pub fn sign(&self, emitter: &str, seq: u64, hash: &str) -> ChainCut {
        ChainCut {
            emitter: emitter.to_owned(),
            seq,
            hash: hash.to_owned(),
            signature: self.0.sign_message(&cut_message(emitter, seq, hash)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_verifies_with_its_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let signer = CutSigner::load(&dir.path().join("k.key")).unwrap();
        let other = CutSigner::load(&dir.path().join("o.key")).unwrap();
        let cut = signer.sign("backend", 41, &"ab".repeat(32));
        let keys = |s: &CutSigner| TrustedKeys::from(s.public_key().clone());
        assert!(cut.verify_signature(&keys(&signer)));
        assert!(!cut.verify_signature(&keys(&other)));
        let moved = ChainCut {
            seq: 42,
            ..cut.clone()
        };
        assert!(!moved.verify_signature(&keys(&signer)));
    }
}
