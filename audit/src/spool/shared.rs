//! The state the writer shares with the sinks' readers and the acknowledgement board.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;

use tokio::sync::watch;

use crate::spool::spooled::Seq;

/// What sinks' readers share with the writer.
#[derive(Debug)]
pub(crate) struct Shared {
    pub dir: PathBuf,
    /// Highest seq every sink has acknowledged: segments wholly at or below it are deleted.
    pub trim_to: AtomicU64,
    /// Bumped whenever the writer re-reads the spool after a failed write (it may have cut
    /// uncommitted lines that readers already buffered).
    pub generation: AtomicU64,
    /// Highest seq on disk and fsync'd; closed when the writer stops.
    pub committed: watch::Receiver<Seq>,
}
