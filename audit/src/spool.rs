//! The spool: a folder of append-only, hash-chained JSON-lines segments where every event is
//! written and fsync'd before the caller hears back, and from which sinks read at their own
//! pace.
//!
//! One writer thread per spool owns the files: callers encode their event on their own thread,
//! send it over a channel, and the writer takes whatever has queued up, chains and writes it,
//! and fsyncs once for the whole batch (group commit). Segments are named after the seq of
//! their first line (`00000001.jsonl`, `00004711.jsonl`, …); the newest one is never deleted,
//! so the chain head survives a restart. Sinks read committed lines only.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::{oneshot, watch};

use crate::chain::{self, CheckpointSigner, GENESIS_HASH, KeyError, PublicKey};
use crate::event::{AuditEvent, Category, CheckpointFields, Encoded, Level};
use crate::metrics::Metrics;
use crate::settings::{FullPolicy, SettingsErrors, SpoolSettings};

/// Position of an event in its emitter's chain, from 1.
pub type Seq = u64;

/// Most requests the writer takes into one batch.
const MAX_BATCH: usize = 4096;

/// Longest a writer waits for more appends to share an fsync with (see `Writer::run`).
const GATHER_MAX: Duration = Duration::from_micros(200);

/// How often a writer with spool-full waiters looks for freed space.
const FULL_POLL: Duration = Duration::from_millis(10);

/// How often an idle writer wakes up to delete delivered segments.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

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
    /// The spool holds `max_bytes` and the policy is [`FullPolicy::Reject`].
    #[error("audit spool is full")]
    Full,
    /// The spool stayed full for the whole [`FullPolicy::Block`] timeout.
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
    Settings(#[from] SettingsErrors),
    /// The spool was closed.
    #[error("audit spool is closed")]
    Closed,
}

impl SpoolError {
    /// A copy for each of several waiters (`io::Error` is not `Clone`).
    fn duplicate(&self) -> Self {
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

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// An event as stored in the spool, handed to sinks.
#[derive(Debug, Clone, PartialEq)]
pub struct SpooledEvent {
    seq: Seq,
    id: String,
    timestamp: String,
    level: Level,
    category: Category,
    emitter: String,
    line: String,
}

impl SpooledEvent {
    /// Parses a stored line (without its newline).
    pub(crate) fn parse(line: String) -> Result<Self, serde_json::Error> {
        let head: LineHead = serde_json::from_str(&line)?;
        Ok(Self {
            seq: head.seq,
            id: head.id,
            timestamp: head.timestamp,
            level: head.level,
            category: head.category,
            emitter: head.emitter,
            line,
        })
    }

    /// Position in the emitter's chain.
    pub fn seq(&self) -> Seq {
        self.seq
    }

    /// `event.id`.
    pub fn event_id(&self) -> &str {
        &self.id
    }

    /// `@timestamp`, RFC 3339 in UTC with microseconds.
    pub fn timestamp(&self) -> &str {
        &self.timestamp
    }

    /// `log.level`.
    pub fn level(&self) -> Level {
        self.level
    }

    /// `event.category`.
    pub fn category(&self) -> Category {
        self.category
    }

    /// `portcullis.emitter`.
    pub fn emitter(&self) -> &str {
        &self.emitter
    }

    /// The event's JSON exactly as stored (canonical, chain fields included, no newline).
    /// Forward it unchanged: the hash covers these bytes' meaning.
    pub fn json(&self) -> &str {
        &self.line
    }
}

#[derive(Deserialize)]
struct LineHead {
    #[serde(rename = "portcullis.chain.seq")]
    seq: Seq,
    #[serde(rename = "event.id")]
    id: String,
    #[serde(rename = "@timestamp")]
    timestamp: String,
    #[serde(rename = "log.level")]
    level: Level,
    #[serde(rename = "event.category")]
    category: Category,
    #[serde(rename = "portcullis.emitter")]
    emitter: String,
}

#[derive(Deserialize)]
struct ChainHead {
    #[serde(rename = "portcullis.chain.seq")]
    seq: Seq,
    #[serde(rename = "portcullis.chain.hash")]
    hash: String,
    #[serde(rename = "portcullis.emitter")]
    emitter: String,
}

/// A handle to an open spool; clones share the writer. The writer stops when the last
/// handle is dropped or [`Spool::close`] is called.
#[derive(Debug, Clone)]
pub struct Spool {
    inner: Arc<SpoolInner>,
}

#[derive(Debug)]
struct SpoolInner {
    tx: mpsc::Sender<Msg>,
    emitter: String,
    shared: Arc<Shared>,
    public_key: Option<PublicKey>,
}

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

enum Reply {
    Async(oneshot::Sender<Result<Seq, SpoolError>>),
    Blocking(mpsc::SyncSender<Result<Seq, SpoolError>>),
}

impl Reply {
    fn send(self, result: Result<Seq, SpoolError>) {
        // A caller that gave up waiting is not an error.
        match self {
            Self::Async(tx) => {
                let _ = tx.send(result);
            }
            Self::Blocking(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

struct Request {
    encoded: Encoded,
    submitted: Instant,
    reply: Reply,
}

enum Msg {
    Append(Request),
    Close(oneshot::Sender<()>),
}

impl Spool {
    /// Opens (creating if needed) the spool folder, recovers the chain head from the newest
    /// segment (cutting off a torn final line), loads or creates the checkpoint key, and
    /// starts the writer thread.
    pub fn open(settings: &SpoolSettings) -> Result<Self, SpoolError> {
        let metrics = Metrics::new(&settings.emitter).map_err(|e| SpoolError::Io {
            path: settings.dir.clone(),
            source: io::Error::other(e.to_string()),
        })?;
        Self::open_with_metrics(settings, metrics)
    }

    pub(crate) fn open_with_metrics(
        settings: &SpoolSettings,
        metrics: Metrics,
    ) -> Result<Self, SpoolError> {
        settings.validate()?;
        let SpoolSettings {
            emitter,
            dir,
            max_bytes,
            segment_bytes,
            full_policy,
            checkpoint,
        } = settings;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_error(dir))?;
        let signer = match checkpoint {
            Some(cp) => Some(CheckpointSigner::load_or_generate(&cp.key_file)?),
            None => None,
        };
        let public_key = signer.as_ref().map(|s| s.public_key().clone());
        let (committed_tx, committed_rx) = watch::channel(0);
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            trim_to: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            committed: committed_rx,
        });
        let mut writer = Writer {
            dir: dir.clone(),
            emitter: emitter.clone(),
            max_bytes: *max_bytes,
            segment_bytes: *segment_bytes,
            policy: *full_policy,
            segments: VecDeque::new(),
            active: None,
            total_bytes: 0,
            last_seq: 0,
            last_hash: GENESIS_HASH.to_owned(),
            needs_recovery: false,
            signer,
            every_events: checkpoint.as_ref().map_or(u64::MAX, |c| c.every_events),
            interval: checkpoint.as_ref().map_or(Duration::MAX, |c| c.interval),
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            shared: shared.clone(),
            committed: committed_tx,
            metrics,
        };
        writer.recover()?;
        writer.publish();
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("audit-spool-{emitter}"))
            .spawn(move || writer.run(&rx))
            .map_err(io_error(dir))?;
        Ok(Self {
            inner: Arc::new(SpoolInner {
                tx,
                emitter: emitter.clone(),
                shared,
                public_key,
            }),
        })
    }

    /// Chains and writes `event`; returns its seq once the line is fsync'd. Waits or fails
    /// when the spool is full, as the [`FullPolicy`] says.
    pub async fn append(&self, event: AuditEvent) -> Result<Seq, SpoolError> {
        let (tx, rx) = oneshot::channel();
        self.submit(&event, Reply::Async(tx))?;
        rx.await.map_err(|_| SpoolError::Closed)?
    }

    /// [`Spool::append`] for threads outside the async runtime; blocks the calling thread.
    pub fn append_blocking(&self, event: AuditEvent) -> Result<Seq, SpoolError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(&event, Reply::Blocking(tx))?;
        rx.recv().map_err(|_| SpoolError::Closed)?
    }

    fn submit(&self, event: &AuditEvent, reply: Reply) -> Result<(), SpoolError> {
        let request = Request {
            encoded: event.encode(&self.inner.emitter),
            submitted: Instant::now(),
            reply,
        };
        self.inner
            .tx
            .send(Msg::Append(request))
            .map_err(|_| SpoolError::Closed)
    }

    /// Writes what is queued and a final checkpoint, then stops the writer; later appends
    /// fail with [`SpoolError::Closed`].
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.tx.send(Msg::Close(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// The checkpoint public key, when checkpoints are on.
    pub fn public_key(&self) -> Option<&PublicKey> {
        self.inner.public_key.as_ref()
    }

    /// The emitter name.
    pub fn emitter(&self) -> &str {
        &self.inner.emitter
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }
}

/// A segment on disk.
#[derive(Debug)]
struct Segment {
    first_seq: Seq,
    bytes: u64,
}

/// Lines staged for one group commit.
struct Batch {
    /// Byte runs, each for the active segment or for a new one starting at the given seq.
    chunks: Vec<(Option<Seq>, Vec<u8>)>,
    seq: Seq,
    hash: String,
    active_len: u64,
    total_bytes: u64,
    since_checkpoint: u64,
    checkpointed: bool,
    acks: Vec<(Reply, Seq)>,
    categories: Vec<Category>,
}

enum Staged {
    Ok(Seq),
    Full,
    TooLarge(u64),
}

struct Writer {
    dir: PathBuf,
    emitter: String,
    max_bytes: u64,
    segment_bytes: u64,
    policy: FullPolicy,
    segments: VecDeque<Segment>,
    active: Option<File>,
    total_bytes: u64,
    last_seq: Seq,
    last_hash: String,
    needs_recovery: bool,
    signer: Option<CheckpointSigner>,
    every_events: u64,
    interval: Duration,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    shared: Arc<Shared>,
    committed: watch::Sender<Seq>,
    metrics: Metrics,
}

impl Writer {
    fn run(mut self, rx: &mpsc::Receiver<Msg>) {
        let mut waiting: VecDeque<Request> = VecDeque::new();
        let mut close: Option<oneshot::Sender<()>> = None;
        let mut stop = false;
        let mut last_round = 0;
        while !stop {
            let mut incoming = Vec::new();
            let take = |msg: Msg, incoming: &mut Vec<Request>, close: &mut Option<_>| match msg {
                Msg::Append(r) => incoming.push(r),
                Msg::Close(tx) => *close = Some(tx),
            };
            match rx.recv_timeout(self.wakeup(&waiting)) {
                Ok(msg) => take(msg, &mut incoming, &mut close),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => stop = true,
            }
            while incoming.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(msg) => take(msg, &mut incoming, &mut close),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        stop = true;
                        break;
                    }
                }
            }
            // Group commit: appenders that were acknowledged together send their next event
            // a few microseconds apart; wait (briefly) for as many as last time so they share
            // one fsync instead of alternating between a small and a large batch. A single
            // appender never waits.
            let gather_until = Instant::now() + GATHER_MAX;
            while !stop && close.is_none() && !incoming.is_empty() && incoming.len() < last_round {
                let left = gather_until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match rx.recv_timeout(left) {
                    Ok(msg) => take(msg, &mut incoming, &mut close),
                    Err(mpsc::RecvTimeoutError::Timeout) => break,
                    Err(mpsc::RecvTimeoutError::Disconnected) => stop = true,
                }
            }
            last_round = incoming.len();
            stop |= close.is_some();
            self.trim();
            self.round(&mut waiting, incoming, stop);
            self.publish();
        }
        for request in waiting {
            request.reply.send(Err(SpoolError::Closed));
        }
        if let Some(tx) = close {
            let _ = tx.send(());
        }
    }

    fn wakeup(&self, waiting: &VecDeque<Request>) -> Duration {
        let mut wait = if waiting.is_empty() {
            HOUSEKEEPING
        } else {
            FULL_POLL
        };
        if self.signer.is_some() && self.since_checkpoint > 0 {
            let due = self.interval.saturating_sub(self.last_checkpoint.elapsed());
            wait = wait.min(due);
        }
        wait
    }

    /// Stages and commits one round: the waiters first (in order), then new requests.
    fn round(&mut self, waiting: &mut VecDeque<Request>, incoming: Vec<Request>, closing: bool) {
        if waiting.is_empty() && incoming.is_empty() && !self.checkpoint_due(closing) {
            return;
        }
        if self.needs_recovery
            && let Err(e) = self.recover()
        {
            tracing::error!(error = %e, "audit spool recovery failed");
            for request in waiting.drain(..).chain(incoming) {
                request.reply.send(Err(e.duplicate()));
            }
            return;
        }
        let mut batch = Batch {
            chunks: Vec::new(),
            seq: self.last_seq,
            hash: self.last_hash.clone(),
            active_len: self.segments.back().map_or(0, |s| s.bytes),
            total_bytes: self.total_bytes,
            since_checkpoint: self.since_checkpoint,
            checkpointed: false,
            acks: Vec::new(),
            categories: Vec::new(),
        };
        let mut still_waiting = VecDeque::new();
        for request in waiting.drain(..).chain(incoming) {
            let expired = match self.policy {
                FullPolicy::Block { timeout } => request.submitted.elapsed() >= timeout,
                FullPolicy::Reject => true,
            };
            if !still_waiting.is_empty() {
                // Keep arrival order: nobody overtakes an append that waits for space.
                if expired {
                    fail_full(request, self.policy);
                } else {
                    still_waiting.push_back(request);
                }
                continue;
            }
            match self.stage(&mut batch, &request.encoded) {
                Staged::Ok(seq) => {
                    batch.categories.push(request.encoded.category);
                    batch.acks.push((request.reply, seq));
                    batch.since_checkpoint += 1;
                    if batch.since_checkpoint >= self.every_events {
                        self.stage_checkpoint(&mut batch);
                    }
                }
                Staged::TooLarge(bytes) => request.reply.send(Err(SpoolError::TooLarge {
                    bytes,
                    segment_bytes: self.segment_bytes,
                })),
                Staged::Full if expired => fail_full(request, self.policy),
                Staged::Full => still_waiting.push_back(request),
            }
        }
        *waiting = still_waiting;
        let timed = batch.since_checkpoint > 0
            && (closing || self.last_checkpoint.elapsed() >= self.interval);
        if timed {
            self.stage_checkpoint(&mut batch);
        }
        self.commit(batch);
    }

    fn checkpoint_due(&self, closing: bool) -> bool {
        self.signer.is_some()
            && self.since_checkpoint > 0
            && (closing || self.last_checkpoint.elapsed() >= self.interval)
    }

    /// Chains one event into the batch.
    fn stage(&self, batch: &mut Batch, encoded: &Encoded) -> Staged {
        let seq = batch.seq + 1;
        let mut unhashed = Vec::with_capacity(encoded.head.len() + encoded.tail.len() + 128);
        encoded.unhashed(&batch.hash, seq, &mut unhashed);
        let hash = chain::chain_hash(&batch.hash, &unhashed);
        let mut line = unhashed;
        line.clear();
        encoded.line(&batch.hash, seq, &hash, &mut line);
        let len = line.len() as u64;
        if len > self.segment_bytes {
            return Staged::TooLarge(len);
        }
        if batch.total_bytes + len > self.max_bytes {
            return Staged::Full;
        }
        let rotate = batch.active_len > 0 && batch.active_len + len > self.segment_bytes;
        match batch.chunks.last_mut() {
            Some(chunk) if !rotate => chunk.1.extend_from_slice(&line),
            _ => {
                let new_segment = (rotate || self.segments.is_empty()).then_some(seq);
                batch.chunks.push((new_segment, line));
            }
        }
        if rotate {
            batch.active_len = 0;
        }
        batch.active_len += len;
        batch.total_bytes += len;
        batch.seq = seq;
        batch.hash = hash;
        Staged::Ok(seq)
    }

    fn stage_checkpoint(&self, batch: &mut Batch) {
        let Some(signer) = &self.signer else {
            return;
        };
        let event = AuditEvent::checkpoint(CheckpointFields {
            seq: batch.seq,
            hash: batch.hash.clone(),
            signature: signer.sign(&self.emitter, batch.seq, &batch.hash),
            public_key: signer.public_key().to_hex(),
        });
        // A full spool skips the checkpoint; the next round tries again.
        if let Staged::Ok(_) = self.stage(batch, &event.encode(&self.emitter)) {
            batch.since_checkpoint = 0;
            batch.checkpointed = true;
        }
    }

    /// Writes and fsyncs the batch, then acknowledges it. On failure nobody is acknowledged
    /// and the next round first re-reads the chain head from disk.
    fn commit(&mut self, batch: Batch) {
        if batch.chunks.is_empty() {
            for (reply, _) in batch.acks {
                reply.send(Err(SpoolError::Closed));
            }
            return;
        }
        match self.write_chunks(&batch.chunks) {
            Ok(()) => {
                self.last_seq = batch.seq;
                self.last_hash = batch.hash;
                self.total_bytes = batch.total_bytes;
                self.since_checkpoint = batch.since_checkpoint;
                if batch.checkpointed {
                    self.last_checkpoint = Instant::now();
                }
                for category in batch.categories {
                    self.metrics
                        .events
                        .with_label_values(&[category.as_str()])
                        .inc();
                }
                self.committed.send_replace(self.last_seq);
                for (reply, seq) in batch.acks {
                    reply.send(Ok(seq));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "audit spool write failed; events not acknowledged");
                self.needs_recovery = true;
                self.active = None;
                for (reply, _) in batch.acks {
                    reply.send(Err(e.duplicate()));
                }
            }
        }
    }

    fn write_chunks(&mut self, chunks: &[(Option<Seq>, Vec<u8>)]) -> Result<(), SpoolError> {
        let mut created = false;
        for (new_segment, bytes) in chunks {
            if let Some(first_seq) = new_segment {
                if let (Some(file), Some(seg)) = (&self.active, self.segments.back()) {
                    file.sync_data()
                        .map_err(io_error(&segment_path(&self.dir, seg.first_seq)))?;
                }
                let path = segment_path(&self.dir, *first_seq);
                let file = OpenOptions::new()
                    .append(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io_error(&path))?;
                self.active = Some(file);
                self.segments.push_back(Segment {
                    first_seq: *first_seq,
                    bytes: 0,
                });
                created = true;
            }
            let (Some(file), Some(seg)) = (&mut self.active, self.segments.back_mut()) else {
                return Err(SpoolError::Io {
                    path: self.dir.clone(),
                    source: io::Error::other("no active segment"),
                });
            };
            let path = segment_path(&self.dir, seg.first_seq);
            file.write_all(bytes).map_err(io_error(&path))?;
            seg.bytes += bytes.len() as u64;
        }
        if let (Some(file), Some(seg)) = (&self.active, self.segments.back()) {
            file.sync_data()
                .map_err(io_error(&segment_path(&self.dir, seg.first_seq)))?;
        }
        if created {
            sync_dir(&self.dir).map_err(io_error(&self.dir))?;
        }
        Ok(())
    }

    /// Deletes segments every sink has acknowledged, except the newest.
    fn trim(&mut self) {
        if self.needs_recovery {
            return;
        }
        let trim_to = self.shared.trim_to.load(Ordering::Acquire);
        while self.segments.len() > 1 {
            let last_of_first = self.segments[1].first_seq - 1;
            if last_of_first > trim_to {
                break;
            }
            let Some(seg) = self.segments.pop_front() else {
                break;
            };
            let path = segment_path(&self.dir, seg.first_seq);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "could not delete a delivered audit segment");
                    self.segments.push_front(seg);
                    return;
                }
            }
            self.total_bytes = self.total_bytes.saturating_sub(seg.bytes);
        }
    }

    fn publish(&self) {
        self.metrics
            .spool_bytes
            .set(i64::try_from(self.total_bytes).unwrap_or(i64::MAX));
        let events = self
            .segments
            .front()
            .map_or(0, |s| (self.last_seq + 1).saturating_sub(s.first_seq));
        self.metrics
            .spool_events
            .set(i64::try_from(events).unwrap_or(i64::MAX));
    }

    /// Rebuilds the segment list and chain head from disk, cutting a torn tail off the
    /// newest segment.
    fn recover(&mut self) -> Result<(), SpoolError> {
        self.active = None;
        let firsts = list_segments(&self.dir).map_err(io_error(&self.dir))?;
        let mut segments = VecDeque::new();
        let mut total = 0;
        for first_seq in &firsts {
            let path = segment_path(&self.dir, *first_seq);
            let bytes = fs::metadata(&path).map_err(io_error(&path))?.len();
            total += bytes;
            segments.push_back(Segment {
                first_seq: *first_seq,
                bytes,
            });
        }
        let mut head: Option<(Seq, String)> = None;
        // Newest segment first; an empty newest one (crash right after it was created) defers
        // to the one before.
        for (i, seg) in segments.iter_mut().enumerate().rev() {
            let path = segment_path(&self.dir, seg.first_seq);
            let newest = i + 1 == firsts.len();
            let (valid_len, last) = scan_segment(&path, seg.first_seq, &self.emitter, &self.dir)?;
            if valid_len < seg.bytes {
                if !newest {
                    return Err(SpoolError::Corrupt {
                        path,
                        reason: format!("invalid data after byte {valid_len}"),
                    });
                }
                tracing::warn!(path = %path.display(), kept = valid_len, cut = seg.bytes - valid_len, "cutting a torn write off the audit spool");
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_error(&path))?;
                file.set_len(valid_len).map_err(io_error(&path))?;
                file.sync_all().map_err(io_error(&path))?;
                total -= seg.bytes - valid_len;
                seg.bytes = valid_len;
            }
            if let Some(last) = last {
                head = Some(last);
                break;
            }
            if !newest {
                return Err(SpoolError::Corrupt {
                    path,
                    reason: "empty segment before the newest one".to_owned(),
                });
            }
        }
        let (last_seq, last_hash) = match (head, segments.front()) {
            (Some(head), _) => head,
            (None, None) => (0, GENESIS_HASH.to_owned()),
            (None, Some(seg)) if seg.first_seq == 1 => (0, GENESIS_HASH.to_owned()),
            (None, Some(seg)) => {
                return Err(SpoolError::Corrupt {
                    path: segment_path(&self.dir, seg.first_seq),
                    reason: "the only segment is empty and does not start at seq 1, so the chain head is lost".to_owned(),
                });
            }
        };
        if let Some(newest) = segments.back() {
            if newest.bytes == 0 && newest.first_seq != last_seq + 1 {
                return Err(SpoolError::Corrupt {
                    path: segment_path(&self.dir, newest.first_seq),
                    reason: format!("empty segment does not follow seq {last_seq}"),
                });
            }
            let path = segment_path(&self.dir, newest.first_seq);
            let file = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(io_error(&path))?;
            self.active = Some(file);
        }
        self.segments = segments;
        self.total_bytes = total;
        self.last_seq = last_seq;
        self.last_hash = last_hash;
        self.needs_recovery = false;
        self.shared.generation.fetch_add(1, Ordering::AcqRel);
        self.committed.send_replace(last_seq);
        Ok(())
    }
}

fn fail_full(request: Request, policy: FullPolicy) {
    let error = match policy {
        FullPolicy::Reject => SpoolError::Full,
        FullPolicy::Block { .. } => SpoolError::FullTimeout {
            waited: request.submitted.elapsed(),
        },
    };
    request.reply.send(Err(error));
}

/// Reads a segment: returns the length of its valid prefix and the seq and hash of its last
/// valid line. Stops at the first line that is incomplete, not an event, or out of sequence.
fn scan_segment(
    path: &Path,
    first_seq: Seq,
    emitter: &str,
    dir: &Path,
) -> Result<(u64, Option<(Seq, String)>), SpoolError> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(io_error(path))?;
    let mut valid = 0usize;
    let mut last: Option<(Seq, String)> = None;
    for (expected, line) in (first_seq..).zip(data.split_inclusive(|&b| b == b'\n')) {
        if line.last() != Some(&b'\n') {
            break;
        }
        let Ok(head) = serde_json::from_slice::<ChainHead>(&line[..line.len() - 1]) else {
            break;
        };
        if head.seq != expected {
            break;
        }
        if head.emitter != emitter {
            return Err(SpoolError::EmitterMismatch {
                dir: dir.to_owned(),
                found: head.emitter,
                expected: emitter.to_owned(),
            });
        }
        valid += line.len();
        last = Some((head.seq, head.hash));
    }
    Ok((valid as u64, last))
}

/// `<dir>/<first_seq, 8 digits at least>.jsonl`.
pub(crate) fn segment_path(dir: &Path, first_seq: Seq) -> PathBuf {
    dir.join(format!("{first_seq:08}.jsonl"))
}

/// First seqs of the segments in `dir`, ascending.
pub(crate) fn list_segments(dir: &Path) -> io::Result<Vec<Seq>> {
    let mut firsts = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".jsonl")) else {
            continue;
        };
        if stem.is_empty() || !stem.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(first) = stem.parse::<Seq>()
            && first > 0
        {
            firsts.push(first);
        }
    }
    firsts.sort_unstable();
    Ok(firsts)
}

/// fsyncs a folder, so that files created or renamed in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// fsyncs the folder holding `file`.
pub(crate) fn sync_parent(file: &Path) -> io::Result<()> {
    match file.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => sync_dir(parent),
        None => sync_dir(Path::new(".")),
    }
}

/// Reads committed events in order, one reader per sink.
#[derive(Debug)]
pub(crate) struct SpoolReader {
    shared: Arc<Shared>,
    generation: u64,
    next_seq: Seq,
    current: Option<Current>,
    pending: Option<SpooledEvent>,
}

#[derive(Debug)]
struct Current {
    first_seq: Seq,
    reader: BufReader<File>,
    partial: Vec<u8>,
}

impl SpoolReader {
    /// A reader that starts after `acked`.
    pub(crate) fn new(shared: Arc<Shared>, acked: Seq) -> Self {
        Self {
            generation: shared.generation.load(Ordering::Acquire),
            shared,
            next_seq: acked + 1,
            current: None,
            pending: None,
        }
    }

    /// Up to `max` events with seq at most `committed`, in order; empty when there are none
    /// yet.
    pub(crate) fn read(&mut self, committed: Seq, max: usize) -> io::Result<Vec<SpooledEvent>> {
        let generation = self.shared.generation.load(Ordering::Acquire);
        if generation != self.generation {
            // The writer re-read the spool; forget what was buffered beyond the commit point.
            self.generation = generation;
            self.current = None;
            self.pending = None;
        }
        let mut out = Vec::new();
        if let Some(event) = self.pending.take() {
            if event.seq > committed {
                self.pending = Some(event);
                return Ok(out);
            }
            self.next_seq = event.seq + 1;
            out.push(event);
        }
        while out.len() < max && self.next_seq <= committed {
            if self.current.is_none() && !self.locate()? {
                break;
            }
            let Some(cur) = self.current.as_mut() else {
                break;
            };
            let read = cur.reader.read_until(b'\n', &mut cur.partial)?;
            if cur.partial.last() != Some(&b'\n') {
                // End of file, perhaps inside a line the writer is still writing. Committed
                // events are still to come, so if a newer segment exists they are there.
                if read == 0 && cur.partial.is_empty() {
                    let newer = list_segments(&self.shared.dir)?
                        .into_iter()
                        .find(|&first| first > cur.first_seq);
                    if let Some(first_seq) = newer {
                        // The writer finished this segment before creating the next one, so
                        // one more read settles whether anything is left here.
                        if cur.reader.read_until(b'\n', &mut cur.partial)? > 0 {
                            continue;
                        }
                        if !self.open(first_seq)? {
                            self.current = None;
                        }
                        continue;
                    }
                }
                break;
            }
            let mut line = std::mem::take(&mut cur.partial);
            line.pop();
            let parsed = String::from_utf8(line)
                .map_err(|e| e.to_string())
                .and_then(|l| SpooledEvent::parse(l).map_err(|e| e.to_string()));
            let event = match parsed {
                Ok(event) => event,
                Err(e) => {
                    tracing::error!(segment = cur.first_seq, error = %e, "skipping an unreadable audit spool line");
                    continue;
                }
            };
            if event.seq < self.next_seq {
                continue;
            }
            if event.seq > committed {
                self.pending = Some(event);
                break;
            }
            if event.seq > self.next_seq {
                tracing::warn!(
                    from = self.next_seq,
                    to = event.seq - 1,
                    "audit events missing from the spool"
                );
            }
            self.next_seq = event.seq + 1;
            out.push(event);
        }
        Ok(out)
    }

    /// Opens the segment holding `next_seq` (or the oldest one); false if there is none.
    fn locate(&mut self) -> io::Result<bool> {
        let firsts = list_segments(&self.shared.dir)?;
        let Some(&oldest) = firsts.first() else {
            return Ok(false);
        };
        let first_seq = match firsts.iter().rev().find(|&&f| f <= self.next_seq) {
            Some(&f) => f,
            None => {
                tracing::warn!(
                    from = self.next_seq,
                    to = oldest - 1,
                    "audit events were removed from the spool before this sink read them"
                );
                oldest
            }
        };
        self.open(first_seq)
    }

    /// Opens the segment starting at `first_seq`; false if it is gone.
    fn open(&mut self, first_seq: Seq) -> io::Result<bool> {
        match File::open(segment_path(&self.shared.dir, first_seq)) {
            Ok(file) => {
                self.current = Some(Current {
                    first_seq,
                    reader: BufReader::with_capacity(256 * 1024, file),
                    partial: Vec::new(),
                });
                Ok(true)
            }
            // Deleted between listing and opening: look again next time.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}
