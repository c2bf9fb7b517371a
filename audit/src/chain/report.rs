//! What verification returns: a [`VerifyReport`] for a good chain, or a [`VerifyError`]
//! naming the first bad event ([`BadPosition`], [`Tamper`]).

use std::fmt;
use std::io;
use std::path::PathBuf;

/// What a successful verification saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Files read (0 for [`verify_events`](crate::verify_events)).
    pub files: u64,
    /// Events checked, checkpoints included.
    pub events: u64,
    /// One summary per emitter, by name.
    pub chains: Vec<ChainSummary>,
}

/// One emitter's chain as verified.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChainSummary {
    /// The emitter (`proxy`, `backend`).
    pub emitter: String,
    /// First seq seen; greater than 1 when older events were rotated away (their removal can
    /// not be detected from this data alone).
    pub first_seq: u64,
    /// Last seq seen (removal of events after it can only be detected against a copy held
    /// elsewhere, such as the SIEM, or a later checkpoint).
    pub last_seq: u64,
    /// Hash of the last event.
    pub last_hash: String,
    /// Checkpoint events seen.
    pub checkpoints: u64,
    /// Checkpoints whose signature verified against the given public key (0 without a key).
    pub checkpoints_verified: u64,
    /// The seq retention cut the chain after, when it starts at a signed chain cut.
    pub cut_seq: Option<u64>,
}

/// What kind of damage verification found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Tamper {
    /// Not a JSON object with the chain fields (or a torn final line).
    Malformed,
    /// The event's content does not match its hash.
    Edited,
    /// A sequence gap, or `prev_hash` does not match the previous event: events are missing
    /// (or were rewritten together with their hashes).
    Deleted,
    /// An event appears before one with a lower seq.
    Reordered,
    /// A checkpoint does not match the chain, or its signature does not verify.
    BadCheckpoint,
}

impl fmt::Display for Tamper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Malformed => "malformed",
            Self::Edited => "edited",
            Self::Deleted => "deleted",
            Self::Reordered => "reordered",
            Self::BadCheckpoint => "bad checkpoint",
        })
    }
}

/// The first bad event found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BadPosition {
    /// The file, for [`verify_file`](crate::verify_file).
    pub file: Option<PathBuf>,
    /// 1-based line in `file`, or 1-based position in the input of
    /// [`verify_events`](crate::verify_events).
    pub line: u64,
    /// The event's emitter, when it could be read.
    pub emitter: Option<String>,
    /// The event's seq, when it could be read.
    pub seq: Option<u64>,
    /// What is wrong.
    pub tamper: Tamper,
    /// Explanation for a human.
    pub detail: String,
}

impl fmt::Display for BadPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{}:{}", file.display(), self.line)?,
            None => write!(f, "event {}", self.line)?,
        }
        if let (Some(emitter), Some(seq)) = (&self.emitter, self.seq) {
            write!(f, " ({emitter} seq {seq})")?;
        }
        write!(f, ": {}: {}", self.tamper, self.detail)
    }
}

/// Why verification failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A file or folder could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The chain is damaged; the first bad event is named.
    #[error("{0}")]
    Tampered(Box<BadPosition>),
}

impl VerifyError {
    /// The bad position, for [`VerifyError::Tampered`].
    pub fn position(&self) -> Option<&BadPosition> {
        match self {
            Self::Tampered(pos) => Some(pos),
            Self::Io { .. } => None,
        }
    }
}
