//! [`SpoolReader`]: how a sink reads committed events in order, across segment rotations,
//! deletions and the writer's recoveries.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::spool::segment::{list_segments, segment_path};
use crate::spool::shared::Shared;
use crate::spool::spooled::{Seq, SpooledEvent};

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
            if event.seq() > committed {
                self.pending = Some(event);
                return Ok(out);
            }
            self.next_seq = event.seq() + 1;
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
            if event.seq() < self.next_seq {
                continue;
            }
            if event.seq() > committed {
                self.pending = Some(event);
                break;
            }
            if event.seq() > self.next_seq {
                tracing::warn!(
                    from = self.next_seq,
                    to = event.seq() - 1,
                    "audit events missing from the spool"
                );
            }
            self.next_seq = event.seq() + 1;
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
