//! Tamper evidence: the hash chain, signed checkpoints and verification.
//!
//! Every event of an emitter carries `portcullis.chain.seq` (1, 2, 3…),
//! `portcullis.chain.prev_hash` (the previous event's hash; 64 zeros before seq 1) and
//! `portcullis.chain.hash` = hex SHA-256 of `prev_hash` (as its 64 ASCII hex digits) followed
//! by the canonical JSON (see [`crate::canonical`]) of the event without its
//! `portcullis.chain.hash` field.
//!
//! Every N events or T seconds the spool appends a checkpoint event (action
//! `audit-checkpoint`) whose `portcullis.checkpoint.signature` is an Ed25519 signature, hex,
//! over `portcullis-audit-checkpoint-v1\n{emitter}\n{seq}\n{hash}` where seq and hash are
//! those of the event just before the checkpoint. Rewriting history then needs the signing
//! key, not just a SHA-256 implementation.
//!
//! Layers, lowest first: [`hash`] (the links), [`checkpoint`] (signing and public keys),
//! [`cut`] (signed anchors where retention cut a chain),
//! [`report`] (what verification returns), `lines` (verification input), [`verify`].

pub(crate) mod checkpoint;
pub(crate) mod cut;
pub(crate) mod hash;
mod lines;
pub(crate) mod report;
pub(crate) mod verify;
