//! Delivery: one task per sink reads the spool in order, hands batches to the sink, retries
//! with backoff until the sink takes them, and then records the sink's acknowledgement
//! offset (`<spool>/<sink>.offset`, fsync'd). Delivery is at least once: a crash between a
//! sink taking a batch and the offset reaching disk delivers that batch again.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::fsutil::sync_dir;
use crate::metrics::Metrics;
use crate::spool::reader::SpoolReader;
use crate::spool::shared::Shared;
use crate::spool::spooled::{Seq, SpooledEvent};
use crate::status::SinkBoard;

/// A destination for audit events.
///
/// `deliver` gets batches in seq order and must either take the whole batch (return `Ok`
/// only once the destination has it, as far as the transport can tell) or fail; a failed
/// batch is offered again, unchanged, after a backoff, for as long as it takes. So a sink
/// must tolerate seeing events again, and should keep its own timeouts so a dead peer turns
/// into an error rather than a hang. At shutdown a `deliver` call may be dropped half-way;
/// the sink must not reuse a half-written connection afterwards.
#[async_trait]
pub trait Sink: Send {
    /// Unique name: names the offset file and the `sink` metric label; 1–64 of
    /// `a-z 0-9 _ -`.
    fn name(&self) -> &str;

    /// Most events per batch. Default 500.
    fn max_batch_events(&self) -> usize {
        500
    }

    /// Delivers one batch, in order.
    async fn deliver(&mut self, batch: &[SpooledEvent]) -> Result<(), SinkError>;

    /// Called once when delivery stops (bounded to 2 s): close connections cleanly. Default:
    /// nothing.
    async fn close(&mut self) {}
}

/// Why a sink could not take a batch (or could not be set up).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// A file or socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: io::Error,
    },
    /// TLS setup or handshake failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// The HTTP request failed.
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    /// The HTTP endpoint answered with a non-success status.
    #[error("HTTP status {status}: {body}")]
    Status {
        /// The status code.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// The peer did not answer in time.
    #[error("{0} timed out")]
    Timeout(String),
    /// Anything else, for sinks defined outside this crate.
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl SinkError {
    /// A stable code for the kind of failure (for status pages; the message, which may
    /// name hosts and paths, is for the log): `io`, `tls`, `http`, `status`, `timeout`
    /// or `other`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Io { .. } => "io",
            Self::Tls(_) => "tls",
            Self::Http(_) => "http",
            Self::Status { .. } => "status",
            Self::Timeout(_) => "timeout",
            Self::Other(_) => "other",
        }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}

/// Acknowledgements of all sinks; their minimum decides what the spool may delete.
#[derive(Debug)]
pub(crate) struct AckBoard {
    acked: Mutex<Vec<Seq>>,
    shared: Arc<Shared>,
}

impl AckBoard {
    pub(crate) fn new(shared: Arc<Shared>, initial: Vec<Seq>) -> Self {
        let board = Self {
            acked: Mutex::new(initial),
            shared,
        };
        board.publish();
        board
    }

    fn ack(&self, sink: usize, seq: Seq) {
        if let Ok(mut acked) = self.acked.lock()
            && let Some(slot) = acked.get_mut(sink)
        {
            *slot = (*slot).max(seq);
        }
        self.publish();
    }

    fn publish(&self) {
        let min = self
            .acked
            .lock()
            .ok()
            .and_then(|acked| acked.iter().copied().min())
            .unwrap_or(0);
        self.shared.trim_to.fetch_max(min, Ordering::AcqRel);
    }
}

/// `<dir>/<sink>.offset`.
fn offset_path(dir: &Path, sink: &str) -> PathBuf {
    dir.join(format!("{sink}.offset"))
}

/// The sink's acknowledged seq, 0 if it has none. An offset beyond the spool's head (the
/// spool was wiped, the offset kept) starts over from the oldest event.
pub(crate) fn read_offset(dir: &Path, sink: &str, head: Seq) -> io::Result<Seq> {
    let path = offset_path(dir, sink);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let offset: Seq = text.trim().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: not a sequence number", path.display()),
        )
    })?;
    if offset > head {
        tracing::warn!(
            sink,
            offset,
            head,
            "audit sink offset is past the spool head; delivering the whole spool again"
        );
        return Ok(0);
    }
    Ok(offset)
}

fn write_offset(dir: &Path, sink: &str, seq: Seq) -> io::Result<()> {
    let path = offset_path(dir, sink);
    let tmp = dir.join(format!("{sink}.offset.tmp"));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(format!("{seq}\n").as_bytes())?;
    file.sync_all()?;
    fs::rename(&tmp, &path)?;
    sync_dir(dir)
}

/// When delivery tasks stop: `None` while running; then the deadline for draining.
pub(crate) type StopSignal = watch::Receiver<Option<Instant>>;

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Runs one sink until the spool's writer has stopped and everything is delivered, or the
/// stop deadline passes.
pub(crate) async fn run_sink(
    mut sink: Box<dyn Sink>,
    index: usize,
    acked: Seq,
    shared: Arc<Shared>,
    sinks: Sinks,
    metrics: Metrics,
    stop: StopSignal,
) {
    deliver_all(&mut sink, index, acked, shared, sinks, metrics, stop).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
}

/// What the delivery tasks share: acknowledgements, and outcomes for the status.
pub(crate) struct Sinks {
    pub(crate) board: Arc<AckBoard>,
    pub(crate) outcomes: Arc<SinkBoard>,
}

async fn deliver_all(
    sink: &mut Box<dyn Sink>,
    index: usize,
    acked: Seq,
    shared: Arc<Shared>,
    Sinks { board, outcomes }: Sinks,
    metrics: Metrics,
    stop: StopSignal,
) {
    let name = sink.name().to_owned();
    let lag = metrics.sink_lag.with_label_values(&[&name]);
    let errors = metrics.delivery_errors.with_label_values(&[&name]);
    let mut committed = shared.committed.clone();
    let mut reader = Some(SpoolReader::new(shared.clone(), acked));
    let mut acked = acked;
    let max = sink.max_batch_events().max(1);
    loop {
        let head = *committed.borrow_and_update();
        lag.set(i64::try_from(head.saturating_sub(acked)).unwrap_or(i64::MAX));
        let Some(mut r) = reader.take() else {
            return;
        };
        let read = tokio::task::spawn_blocking(move || {
            let batch = r.read(head, max);
            (r, batch)
        })
        .await;
        let batch = match read {
            Ok((r, Ok(batch))) => {
                reader = Some(r);
                batch
            }
            Ok((r, Err(e))) => {
                reader = Some(r);
                tracing::error!(sink = %name, error = %e, "reading the audit spool failed");
                errors.inc();
                outcomes.failed(index, "spool-read");
                if sleep_or_stop(BACKOFF_MAX, &stop).await {
                    return;
                }
                continue;
            }
            Err(e) => {
                tracing::error!(sink = %name, error = %e, "audit spool reader task failed");
                reader = Some(SpoolReader::new(shared.clone(), acked));
                errors.inc();
                outcomes.failed(index, "spool-read");
                if sleep_or_stop(BACKOFF_MAX, &stop).await {
                    return;
                }
                continue;
            }
        };
        let Some(last) = batch.last().map(SpooledEvent::seq) else {
            // Caught up: wait for more, or stop once the writer is gone and its last commit
            // is read.
            if committed.has_changed().is_err() {
                if head == *committed.borrow() {
                    return;
                }
                continue;
            }
            tokio::select! {
                _ = committed.changed() => {}
                () = deadline(&stop) => return,
            }
            continue;
        };
        let mut backoff = BACKOFF_START;
        loop {
            let result = tokio::select! {
                result = sink.deliver(&batch) => result,
                () = deadline(&stop) => return,
            };
            match result {
                Ok(()) => {
                    outcomes.delivered(index);
                    break;
                }
                Err(e) => {
                    errors.inc();
                    outcomes.failed(index, e.kind());
                    tracing::warn!(sink = %name, error = %e, retry_in = ?backoff, "audit delivery failed");
                    if sleep_or_stop(backoff, &stop).await {
                        return;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        acked = last;
        let dir = shared.dir.clone();
        let sink_name = name.clone();
        match tokio::task::spawn_blocking(move || write_offset(&dir, &sink_name, last)).await {
            Ok(Ok(())) => board.ack(index, last),
            Ok(Err(e)) => {
                errors.inc();
                outcomes.failed(index, "offset");
                tracing::error!(sink = %name, error = %e, "could not record the audit sink offset; events may be delivered again");
            }
            Err(e) => {
                errors.inc();
                outcomes.failed(index, "offset");
                tracing::error!(sink = %name, error = %e, "audit offset task failed");
            }
        }
    }
}

fn past_deadline(stop: &StopSignal) -> bool {
    stop.borrow().is_some_and(|d| Instant::now() >= d)
}

/// Resolves when the stop deadline passes (never while running).
async fn deadline(stop: &StopSignal) {
    let mut stop = stop.clone();
    loop {
        let current = *stop.borrow_and_update();
        match current {
            Some(at) => {
                tokio::time::sleep_until(at).await;
                return;
            }
            None => {
                if stop.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}

/// Sleeps; true if the stop deadline passed instead.
async fn sleep_or_stop(duration: Duration, stop: &StopSignal) -> bool {
    tokio::select! {
        () = tokio::time::sleep(duration) => past_deadline(stop),
        () = deadline(stop) => true,
    }
}
