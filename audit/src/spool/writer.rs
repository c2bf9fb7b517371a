//! The writer thread: takes appends off the channel, chains them into a batch (group
//! commit), writes and fsyncs the batch, rotates and trims segments, writes checkpoints, and
//! recovers the chain head from disk at start and after a failed write.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use crate::chain::checkpoint::CheckpointSigner;
use crate::chain::hash::{GENESIS_HASH, chain_hash};
use crate::event::encode::Encoded;
use crate::event::schema::{AuditEvent, Category, CheckpointFields};
use crate::fsutil::sync_dir;
use crate::metrics::Metrics;
use crate::settings::{FullPolicy, SpoolSettings};
use crate::spool::error::{SpoolError, io_error};
use crate::spool::segment::{Segment, list_segments, scan_segment, segment_path};
use crate::spool::shared::Shared;
use crate::spool::spooled::Seq;

/// Most requests the writer takes into one batch.
const MAX_BATCH: usize = 4096;

/// Longest a writer waits for more appends to share an fsync with (see `Writer::run`).
const GATHER_MAX: Duration = Duration::from_micros(200);

/// How often a writer with spool-full waiters looks for freed space.
const FULL_POLL: Duration = Duration::from_millis(10);

/// How often an idle writer wakes up to delete delivered segments.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// How the writer answers an append.
pub(super) enum Reply {
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

/// One append, encoded on the caller's thread.
pub(super) struct Request {
    pub(super) encoded: Encoded,
    pub(super) submitted: Instant,
    pub(super) reply: Reply,
}

/// What the handle sends the writer thread.
pub(super) enum Msg {
    Append(Request),
    Close(oneshot::Sender<()>),
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

/// The writer thread's state: it alone owns the segment files.
pub(super) struct Writer {
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
    key_error_reported: bool,
    every_events: u64,
    interval: Duration,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    shared: Arc<Shared>,
    committed: watch::Sender<Seq>,
    metrics: Metrics,
}

impl Writer {
    /// A writer for `settings`' spool, holding nothing yet: call [`Writer::recover`] before
    /// [`Writer::run`].
    pub(super) fn new(
        settings: &SpoolSettings,
        signer: Option<CheckpointSigner>,
        shared: Arc<Shared>,
        committed: watch::Sender<Seq>,
        metrics: Metrics,
    ) -> Self {
        let SpoolSettings {
            emitter,
            dir,
            max_bytes,
            segment_bytes,
            full_policy,
            checkpoint,
        } = settings;
        Self {
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
            key_error_reported: false,
            every_events: checkpoint.as_ref().map_or(u64::MAX, |c| c.every_events),
            interval: checkpoint.as_ref().map_or(Duration::MAX, |c| c.interval),
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            shared,
            committed,
            metrics,
        }
    }

    pub(super) fn run(mut self, rx: &mpsc::Receiver<Msg>) {
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
        self.refresh_signer();
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

    /// Picks up a checkpoint key file replaced since it was loaded (`keys rotate --kind
    /// audit-checkpoint`): one `stat` per round, which also fsyncs. A replacement that
    /// cannot be loaded keeps the key in use, and is reported once.
    fn refresh_signer(&mut self) {
        let Some(signer) = &mut self.signer else {
            return;
        };
        match signer.reload_if_replaced() {
            Ok(changed) => {
                if changed {
                    tracing::info!(emitter = %self.emitter, public_key = %signer.public_key(), "audit checkpoint key replaced: signing with the new key");
                }
                self.key_error_reported = false;
            }
            Err(e) if !self.key_error_reported => {
                tracing::error!(emitter = %self.emitter, error = %e, "the replaced audit checkpoint key cannot be loaded: still signing with the old key");
                self.key_error_reported = true;
            }
            Err(_) => {}
        }
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
        let hash = chain_hash(&batch.hash, &unhashed);
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

    pub(super) fn publish(&self) {
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
    pub(super) fn recover(&mut self) -> Result<(), SpoolError> {
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
