//! Why a spool operation failed: [`SpoolError`].

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::chain::checkpoint::KeyError;
use portcullis_contract::problems::Problems;

/// Why an append or open failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// Reading or writing the spool failed. The event may or may not be on disk; it was not
    /// acknowledged.
    #[error("audit spool {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The spool holds `max_bytes` and the policy is
    /// [`FullPolicy::Reject`](crate::FullPolicy::Reject).
    #[error("audit spool is full")]
    Full,
    /// The spool stayed full for the whole [`FullPolicy::Block`](crate::FullPolicy::Block) timeout.
    #[error("audit spool stayed full for {waited:?}")]
    FullTimeout {
        /// How long the append waited.
        waited: Duration,
    },
    /// The event's line is larger than a segment.
    #[error("audit event of {bytes} bytes is larger than a spool segment ({segment_bytes} bytes)")]
    TooLarge {
        /// Size of the event line.
        bytes: u64,
        /// The segment size.
        segment_bytes: u64,
    },
    /// A segment holds something the spool did not write.
    #[error("audit spool {path}: {reason}")]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The spool folder holds another emitter's chain.
    #[error("audit spool {dir} holds the chain of emitter {found:?}, not {expected:?}")]
    EmitterMismatch {
        /// The spool folder.
        dir: PathBuf,
        /// Emitter of the last event on disk.
        found: String,
        /// The configured emitter.
        expected: String,
    },
    /// The checkpoint key could not be loaded or created.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The settings are invalid.
    #[error("invalid audit spool settings:\n{0}")]
    Settings(#[from] Problems),
    /// The spool was closed.
    #[error("audit spool is closed")]
    Closed,
}

impl SpoolError {
    /// Every [`SpoolError::metric_reason`].
    pub(crate) const METRIC_REASONS: [&'static str; 5] =
        ["spool_full", "too_large", "closed", "io", "other"];

    /// The `reason` label of `portcullis_audit_emit_failures_total`.
    pub(crate) fn metric_reason(&self) -> &'static str {
        match self {
            Self::Full | Self::FullTimeout { .. } => "spool_full",
            Self::TooLarge { .. } => "too_large",
            Self::Closed => "closed",
            Self::Io { .. } | Self::Corrupt { .. } => "io",
            Self::EmitterMismatch { .. } | Self::Key(_) | Self::Settings(_) => "other",
        }
    }

    /// A copy for each of several waiters (`io::Error` is not `Clone`).
    pub(super) fn duplicate(&self) -> Self {
        match self {
            Self::Io { path, source } => Self::Io {
                path: path.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
            Self::Full => Self::Full,
            Self::FullTimeout { waited } => Self::FullTimeout { waited: *waited },
            Self::TooLarge {
                bytes,
                segment_bytes,
            } => Self::TooLarge {
                bytes: *bytes,
                segment_bytes: *segment_bytes,
            },
            Self::Corrupt { path, reason } => Self::Corrupt {
                path: path.clone(),
                reason: reason.clone(),
            },
            Self::EmitterMismatch {
                dir,
                found,
                expected,
            } => Self::EmitterMismatch {
                dir: dir.clone(),
                found: found.clone(),
                expected: expected.clone(),
            },
            Self::Key(_) | Self::Settings(_) | Self::Closed => Self::Closed,
        }
    }
}

/// Maps an I/O error on `path` to [`SpoolError::Io`].
pub(super) fn io_error(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}
