//! Segment files: how they are named and listed, and how recovery scans one for its valid
//! prefix and last chain link.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::spool::error::{SpoolError, io_error};
use crate::spool::spooled::Seq;

/// A segment on disk.
#[derive(Debug)]
pub(super) struct Segment {
    pub(super) first_seq: Seq,
    pub(super) bytes: u64,
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

/// Reads a segment: returns the length of its valid prefix and the seq and hash of its last
/// valid line. Stops at the first line that is incomplete, not an event, or out of sequence.
pub(super) fn scan_segment(
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
