//! The backup manifest (`manifest.json`, written last: a folder without it is a partial
//! backup) and the file hashing both sides use.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";
/// Present while a backup is being written; removed with the manifest's arrival.
pub const PARTIAL_MARKER: &str = ".portcullis-backup-partial";
/// The format name.
pub const FORMAT: &str = "portcullis-backup-v1";

/// One file of the backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupFile {
    /// Path inside the backup folder (`/`-separated; `.age` appended when encrypted).
    pub path: String,
    /// Hex SHA-256 of the file as stored.
    pub sha256: String,
    /// Bytes as stored.
    pub bytes: u64,
    /// Hex SHA-256 of the content before encryption (equal to `sha256` when clear).
    pub plain_sha256: String,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    /// When the database copy was taken (RFC 3339 UTC).
    pub created_at: String,
    /// `sqlite` or `postgres`.
    pub engine: String,
    /// The database file's `path` among `files`.
    pub database: String,
    /// Whether every file is encrypted to an age recipient.
    pub encrypted: bool,
    /// Whether key material is included (`--include-keys`).
    pub include_keys: bool,
    pub files: Vec<BackupFile>,
}

/// Why a backup could not be written, read or restored.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{0}")]
    Refused(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Tool(String),
    #[error("encryption: {0}")]
    Crypto(String),
    #[error(transparent)]
    PasswordFile(#[from] crate::settings::PasswordFileError),
}

pub(super) fn io_at(path: &Path) -> impl FnOnce(io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Hex SHA-256 and length of a file.
pub(super) fn hash_file(path: &Path) -> Result<(String, u64), BackupError> {
    let mut file = File::open(path).map_err(io_at(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io_at(path))?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((hex::encode(hasher.finalize()), bytes))
}

/// Writes the manifest atomically, then removes the partial marker.
pub(super) fn write(dir: &Path, manifest: &Manifest) -> Result<(), BackupError> {
    let path = dir.join(MANIFEST);
    let tmp = dir.join(format!(".{MANIFEST}.tmp"));
    let text = serde_json::to_vec_pretty(manifest)
        .map_err(|e| BackupError::Refused(format!("manifest: {e}")))?;
    let mut file = File::create(&tmp).map_err(io_at(&tmp))?;
    file.write_all(&text).map_err(io_at(&tmp))?;
    file.sync_all().map_err(io_at(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_at(&path))?;
    let _ = std::fs::remove_file(dir.join(PARTIAL_MARKER));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))
}

/// Reads the manifest and checks every file it lists (present, length, SHA-256) and that
/// the folder holds nothing else. Nothing is restored from a backup that fails this.
pub fn verify(dir: &Path) -> Result<Manifest, BackupError> {
    let path = dir.join(MANIFEST);
    if dir.join(PARTIAL_MARKER).exists() || !path.exists() {
        return Err(BackupError::Refused(format!(
            "{}: a partial backup (no {MANIFEST}: the backup did not finish); refused",
            dir.display()
        )));
    }
    let text = std::fs::read(&path).map_err(io_at(&path))?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .map_err(|e| BackupError::Refused(format!("{}: not a manifest: {e}", path.display())))?;
    if manifest.format != FORMAT {
        return Err(BackupError::Refused(format!(
            "{}: unknown format {:?}",
            path.display(),
            manifest.format
        )));
    }
    if !manifest.files.iter().any(|f| f.path == manifest.database) {
        return Err(BackupError::Refused(
            "the manifest lists no database file".to_owned(),
        ));
    }
    for f in &manifest.files {
        if f.path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(BackupError::Refused(format!(
                "the manifest names {:?}, not a path inside the backup",
                f.path
            )));
        }
        let file = dir.join(&f.path);
        if !file.is_file() {
            return Err(BackupError::Refused(format!(
                "{}: missing; the backup is incomplete",
                file.display()
            )));
        }
        let (sha256, bytes) = hash_file(&file)?;
        if bytes != f.bytes || sha256 != f.sha256 {
            return Err(BackupError::Refused(format!(
                "{}: SHA-256 {sha256} ({bytes} bytes) differs from the manifest's {} ({} bytes); the backup is corrupt",
                file.display(),
                f.sha256,
                f.bytes
            )));
        }
    }
    let mut found = Vec::new();
    list_files(dir, dir, &mut found)?;
    for rel in found {
        if rel != MANIFEST && !manifest.files.iter().any(|f| f.path == rel) {
            return Err(BackupError::Refused(format!(
                "{}: not listed in the manifest",
                dir.join(rel).display()
            )));
        }
    }
    Ok(manifest)
}

/// Every file below `dir`, as `/`-separated paths relative to `root`.
pub(super) fn list_files(
    root: &Path,
    dir: &Path,
    out: &mut Vec<String>,
) -> Result<(), BackupError> {
    for entry in std::fs::read_dir(dir).map_err(io_at(dir))? {
        let entry = entry.map_err(io_at(dir))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(io_at(&path))?;
        if kind.is_dir() {
            list_files(root, &path, out)?;
        } else if kind.is_file() {
            let rel = path
                .strip_prefix(root)
                .map_err(|_| BackupError::Refused(format!("{}: outside", path.display())))?;
            out.push(
                rel.components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/"),
            );
        }
    }
    out.sort();
    Ok(())
}
