//! JSON-lines file sink with size-based rotation.
//!
//! Appends each event line to `path` and fsyncs after every batch. When the file would pass
//! `max_bytes` it is renamed `<stem>.<NNNNNNNN>.jsonl` (numbers ascending, so a natural sort
//! of the folder is chronological and the active file comes last) and a new one is started.
//! On (re)open a torn final line is cut and the last seq in the file is remembered, so events
//! delivered again after a crash are not written twice.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::delivery::{Sink, SinkError};
use crate::fsutil::sync_parent;
use crate::spool::spooled::{Seq, SpooledEvent};

/// How far back from the end of a file to look for its last line.
const TAIL_WINDOW: u64 = 1 << 20;

pub(crate) struct FileSink {
    name: String,
    path: PathBuf,
    max_bytes: u64,
    emitter: String,
    state: Option<FileState>,
}

impl FileSink {
    pub(crate) fn new(name: String, path: PathBuf, max_bytes: u64, emitter: String) -> Self {
        Self {
            name,
            path,
            max_bytes,
            emitter,
            state: None,
        }
    }
}

#[async_trait]
impl Sink for FileSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&mut self, batch: &[SpooledEvent]) -> Result<(), SinkError> {
        let lines: Vec<(Seq, String)> = batch
            .iter()
            .map(|e| (e.seq(), e.json().to_owned()))
            .collect();
        let state = self.state.take();
        let path = self.path.clone();
        let emitter = self.emitter.clone();
        let max_bytes = self.max_bytes;
        let (state, result) = tokio::task::spawn_blocking(move || {
            let mut state = match state {
                Some(state) => state,
                None => match FileState::open(&path, &emitter) {
                    Ok(state) => state,
                    Err(e) => return (None, Err(e)),
                },
            };
            match state.write(&path, max_bytes, &lines) {
                Ok(()) => (Some(state), Ok(())),
                // Re-open next time: that cuts a torn line and re-reads the last seq.
                Err(e) => (None, Err(e)),
            }
        })
        .await
        .map_err(|e| SinkError::Other(Box::new(e)))?;
        self.state = state;
        result.map_err(SinkError::io(format!("audit file {}", self.path.display())))
    }
}

struct FileState {
    file: File,
    size: u64,
    /// Highest seq already in the file (for this emitter).
    last_seq: Option<Seq>,
}

impl FileState {
    fn open(path: &Path, emitter: &str) -> io::Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)?;
        }
        let file = open_append(path)?;
        let len = file.metadata()?.len();
        let (valid_len, last) = last_line(&file, len)?;
        if valid_len < len {
            tracing::warn!(path = %path.display(), cut = len - valid_len, "cutting a torn write off the audit file");
            file.set_len(valid_len)?;
            file.sync_all()?;
        }
        let mut last_seq = last.and_then(|l| seq_of(&l, emitter));
        if valid_len == 0
            && let Some(rotated) = newest_rotated(path)?
        {
            let file = File::open(&rotated)?;
            let len = file.metadata()?.len();
            last_seq = last_line(&file, len)?.1.and_then(|l| seq_of(&l, emitter));
        }
        Ok(Self {
            file,
            size: valid_len,
            last_seq,
        })
    }

    fn write(&mut self, path: &Path, max_bytes: u64, lines: &[(Seq, String)]) -> io::Result<()> {
        let mut buf = Vec::new();
        let mut last = self.last_seq;
        for (seq, line) in lines {
            if last.is_some_and(|l| *seq <= l) {
                continue;
            }
            let len = line.len() as u64 + 1;
            let pending = self.size + buf.len() as u64;
            if pending > 0 && pending + len > max_bytes {
                self.append(&buf)?;
                buf.clear();
                self.last_seq = last;
                self.rotate(path)?;
            }
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
            last = Some(*seq);
        }
        if !buf.is_empty() {
            self.append(&buf)?;
        }
        self.last_seq = last;
        Ok(())
    }

    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)?;
        self.file.sync_data()?;
        self.size += buf.len() as u64;
        Ok(())
    }

    fn rotate(&mut self, path: &Path) -> io::Result<()> {
        let number = rotated_files(path)?
            .into_iter()
            .map(|(n, _)| n)
            .max()
            .unwrap_or(0)
            + 1;
        fs::rename(path, rotated_path(path, number))?;
        self.file = open_append(path)?;
        sync_parent(path)?;
        self.size = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

/// `<dir>/audit.jsonl` → `(<dir>, "audit")`.
fn stem(path: &Path) -> (PathBuf, String) {
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".jsonl").unwrap_or(&name).to_owned();
    (dir, stem)
}

fn rotated_path(path: &Path, number: u64) -> PathBuf {
    let (dir, stem) = stem(path);
    dir.join(format!("{stem}.{number:08}.jsonl"))
}

fn rotated_files(path: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let (dir, stem) = stem(path);
    let dir_to_read = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir.as_path()
    };
    let prefix = format!("{stem}.");
    let mut found = Vec::new();
    for entry in fs::read_dir(dir_to_read)? {
        let name = entry?.file_name();
        let Some(number) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|n| n.strip_suffix(".jsonl"))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        found.push((number, dir.join(name)));
    }
    Ok(found)
}

fn newest_rotated(path: &Path) -> io::Result<Option<PathBuf>> {
    Ok(rotated_files(path)?
        .into_iter()
        .max_by_key(|(n, _)| *n)
        .map(|(_, p)| p))
}

/// The length of the file up to its last newline, and its last complete line.
fn last_line(file: &File, len: u64) -> io::Result<(u64, Option<Vec<u8>>)> {
    if len == 0 {
        return Ok((0, None));
    }
    let start = len.saturating_sub(TAIL_WINDOW);
    let mut tail = vec![0; usize::try_from(len - start).unwrap_or(0)];
    file.read_exact_at(&mut tail, start)?;
    let Some(end) = tail.iter().rposition(|&b| b == b'\n') else {
        // No newline near the end: all torn if the file is small, else leave it alone.
        return Ok((if start == 0 { 0 } else { len }, None));
    };
    let line_start = tail[..end]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    if line_start == 0 && start > 0 {
        return Ok((start + end as u64 + 1, None));
    }
    Ok((start + end as u64 + 1, Some(tail[line_start..end].to_vec())))
}

fn seq_of(line: &[u8], emitter: &str) -> Option<Seq> {
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(rename = "portcullis.chain.seq")]
        seq: Seq,
        #[serde(rename = "portcullis.emitter")]
        emitter: String,
    }
    let head: Head = serde_json::from_slice(line).ok()?;
    (head.emitter == emitter).then_some(head.seq)
}
