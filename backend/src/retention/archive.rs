//! The archive of one retention run: gzip-compressed JSON-lines files, each written
//! completely and fsync'd (temporary name, then rename) before the rows in it are
//! deleted, and a `manifest.json` listing every file with its SHA-256 and line count.
//! [`verify`] checks an archive folder against its manifest. With an archive store
//! configured, each file and the manifest are also copied there ([`upload`]) before the
//! rows go, and [`verify_store`] checks that copy.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The manifest's file name inside a run's folder.
pub const MANIFEST: &str = "manifest.json";

/// One archived file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// File name inside the run's folder.
    pub name: String,
    /// `audit_events`, `tickets` or `sessions`.
    pub category: String,
    /// Hex SHA-256 of the file's bytes (compressed).
    pub sha256: String,
    /// JSON lines in the file once decompressed.
    pub rows: u64,
}

/// `manifest.json` of a run's archive folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// `portcullis-retention-archive-v1`.
    pub format: String,
    pub retention_run_id: i64,
    /// The clock expiry was judged by.
    pub as_of: String,
    pub files: Vec<ManifestFile>,
}

/// The manifest format name.
pub const FORMAT: &str = "portcullis-retention-archive-v1";

/// Why an archive could not be written or does not verify.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{0}")]
    Invalid(String),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `lines` (one JSON document each, without newlines) gzip-compressed to
/// `dir/name`, atomically and durably; returns the file's hex SHA-256. An existing file
/// of that name (left by an interrupted run that never recorded it) is replaced.
pub fn write_lines(dir: &Path, name: &str, lines: &[String]) -> Result<String, ArchiveError> {
    fs::create_dir_all(dir).map_err(io_at(dir))?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let file = File::create(&tmp).map_err(io_at(&tmp))?;
    let mut gz = GzEncoder::new(file, Compression::default());
    for line in lines {
        gz.write_all(line.as_bytes()).map_err(io_at(&tmp))?;
        gz.write_all(b"\n").map_err(io_at(&tmp))?;
    }
    let file = gz.finish().map_err(io_at(&tmp))?;
    file.sync_all().map_err(io_at(&tmp))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(io_at(&path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))?;
    sha256_file(&path)
}

/// Hex SHA-256 of a file's bytes.
pub fn sha256_file(path: &Path) -> Result<String, ArchiveError> {
    let mut file = File::open(path).map_err(io_at(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(io_at(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Writes `manifest.json` into `dir` (atomically).
pub fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), ArchiveError> {
    let path = dir.join(MANIFEST);
    let tmp = dir.join(format!(".{MANIFEST}.tmp"));
    let text = serde_json::to_vec_pretty(manifest)
        .map_err(|e| ArchiveError::Invalid(format!("manifest: {e}")))?;
    let mut file = File::create(&tmp).map_err(io_at(&tmp))?;
    file.write_all(&text).map_err(io_at(&tmp))?;
    file.sync_all().map_err(io_at(&tmp))?;
    fs::rename(&tmp, &path).map_err(io_at(&path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))
}

/// What a verified archive holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchiveReport {
    pub retention_run_id: i64,
    pub as_of: String,
    pub files: u64,
    pub rows: u64,
}

/// Checks an archive folder: the manifest parses, every file it lists is there with its
/// SHA-256, decompresses, and holds the stated number of JSON lines, and no other file
/// is in the folder. The first problem is the error.
pub fn verify(dir: &Path) -> Result<ArchiveReport, ArchiveError> {
    let manifest_path = dir.join(MANIFEST);
    let text = fs::read(&manifest_path).map_err(io_at(&manifest_path))?;
    let manifest = parse_manifest(&text, &manifest_path.display().to_string())?;
    let mut rows = 0;
    for f in &manifest.files {
        let path = dir.join(&f.name);
        let bytes = fs::read(&path).map_err(io_at(&path))?;
        rows += check_file(&path.display().to_string(), &bytes, f)?;
    }
    for entry in fs::read_dir(dir).map_err(io_at(dir))? {
        let name = entry
            .map_err(io_at(dir))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name != MANIFEST && !manifest.files.iter().any(|f| f.name == name) {
            return Err(ArchiveError::Invalid(format!(
                "{}: not listed in the manifest",
                dir.join(&name).display()
            )));
        }
    }
    Ok(ArchiveReport {
        retention_run_id: manifest.retention_run_id,
        as_of: manifest.as_of,
        files: manifest.files.len() as u64,
        rows,
    })
}

/// The manifest in `text` (read from `what`), with file names that stay in the run.
fn parse_manifest(text: &[u8], what: &str) -> Result<Manifest, ArchiveError> {
    let manifest: Manifest = serde_json::from_slice(text)
        .map_err(|e| ArchiveError::Invalid(format!("{what}: not a manifest: {e}")))?;
    if manifest.format != FORMAT {
        return Err(ArchiveError::Invalid(format!(
            "{what}: unknown format {:?}",
            manifest.format
        )));
    }
    if let Some(f) = manifest
        .files
        .iter()
        .find(|f| f.name.contains('/') || f.name.starts_with('.'))
    {
        return Err(ArchiveError::Invalid(format!(
            "manifest names {:?}, not a file of this run",
            f.name
        )));
    }
    Ok(manifest)
}

/// Checks one archived file's bytes against its manifest entry; returns its rows.
fn check_file(what: &str, bytes: &[u8], f: &ManifestFile) -> Result<u64, ArchiveError> {
    let digest = hex::encode(Sha256::digest(bytes));
    if digest != f.sha256 {
        return Err(ArchiveError::Invalid(format!(
            "{what}: SHA-256 {digest} differs from the manifest's {}",
            f.sha256
        )));
    }
    let mut count = 0u64;
    for line in BufReader::new(GzDecoder::new(bytes)).lines() {
        let line = line.map_err(|e| ArchiveError::Invalid(format!("{what}: {e}")))?;
        serde_json::from_str::<serde_json::Value>(&line).map_err(|e| {
            ArchiveError::Invalid(format!("{what} line {}: not JSON: {e}", count + 1))
        })?;
        count += 1;
    }
    if count != f.rows {
        return Err(ArchiveError::Invalid(format!(
            "{what}: {count} line(s), the manifest says {}",
            f.rows
        )));
    }
    Ok(count)
}

/// The object name of `file` of the run archived in `dir`: `<run folder>/<file>`.
fn object_name(dir: &Path, file: &str) -> Result<ObjectPath, ArchiveError> {
    let run = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| ArchiveError::Invalid(format!("{}: no run folder name", dir.display())))?;
    Ok(ObjectPath::from(format!("{run}/{file}")))
}

/// Copies `dir/name` (already written and fsync'd) into `store` as `<run>/<name>`; the
/// put completes before it returns, so the rows may then be deleted. A second copy of
/// the same name (a resumed run) replaces the first.
pub async fn upload(store: &dyn ObjectStore, dir: &Path, name: &str) -> Result<(), ArchiveError> {
    let path = dir.join(name);
    let bytes = fs::read(&path).map_err(io_at(&path))?;
    store
        .put(&object_name(dir, name)?, PutPayload::from(bytes))
        .await
        .map_err(|e| ArchiveError::Invalid(format!("archive store: {}: {e}", path.display())))?;
    Ok(())
}

/// [`verify`] for a run's copy in an object store (`run`: the run folder's name, such as
/// `2026-12-05-run-000001`): the manifest and every file it lists, with their SHA-256 and
/// line counts, and no other object under the run.
pub async fn verify_store(
    store: &dyn ObjectStore,
    run: &str,
) -> Result<ArchiveReport, ArchiveError> {
    use futures_util::TryStreamExt as _;
    if run.is_empty() || run.contains('/') || run.starts_with('.') {
        return Err(ArchiveError::Invalid(format!(
            "{run:?} is not a run folder name"
        )));
    }
    let get = |name: String| async move {
        let location = ObjectPath::from(format!("{run}/{name}"));
        let bytes = store
            .get(&location)
            .await
            .map_err(|e| ArchiveError::Invalid(format!("archive store: {location}: {e}")))?
            .bytes()
            .await
            .map_err(|e| ArchiveError::Invalid(format!("archive store: {location}: {e}")))?;
        Ok::<_, ArchiveError>((location.to_string(), bytes))
    };
    let (what, text) = get(MANIFEST.to_owned()).await?;
    let manifest = parse_manifest(&text, &what)?;
    let mut rows = 0;
    for f in &manifest.files {
        let (what, bytes) = get(f.name.clone()).await?;
        rows += check_file(&what, &bytes, f)?;
    }
    let prefix = ObjectPath::from(run);
    let listed: Vec<object_store::ObjectMeta> = store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| ArchiveError::Invalid(format!("archive store: {prefix}: {e}")))?;
    for meta in listed {
        let name = meta.location.filename().unwrap_or_default();
        if name != MANIFEST && !manifest.files.iter().any(|f| f.name == name) {
            return Err(ArchiveError::Invalid(format!(
                "archive store: {}: not listed in the manifest",
                meta.location
            )));
        }
    }
    Ok(ArchiveReport {
        retention_run_id: manifest.retention_run_id,
        as_of: manifest.as_of,
        files: manifest.files.len() as u64,
        rows,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn an_archive_verifies_and_any_change_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let lines = vec![r#"{"a":1}"#.to_owned(), r#"{"b":2}"#.to_owned()];
        let sha = write_lines(dir.path(), "000001-tickets.jsonl.gz", &lines).unwrap();
        let manifest = Manifest {
            format: FORMAT.to_owned(),
            retention_run_id: 1,
            as_of: "2030-01-01T00:00:00.000000Z".to_owned(),
            files: vec![ManifestFile {
                name: "000001-tickets.jsonl.gz".to_owned(),
                category: "tickets".to_owned(),
                sha256: sha,
                rows: 2,
            }],
        };
        write_manifest(dir.path(), &manifest).unwrap();
        assert_eq!(verify(dir.path()).unwrap().rows, 2);

        let file = dir.path().join("000001-tickets.jsonl.gz");
        let mut bytes = fs::read(&file).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&file, &bytes).unwrap();
        assert!(verify(dir.path()).is_err());

        fs::remove_file(&file).unwrap();
        assert!(verify(dir.path()).is_err());
    }
}
