//! Backup and restore of the backend's data (docs/runbooks/disaster-recovery.md).
//!
//! [`backup`] takes a consistent copy while the service keeps serving: SQLite with
//! `VACUUM INTO` (one read transaction, so one point in time), PostgreSQL with `pg_dump`
//! (one snapshot); then the attachments folder (`<state_dir>/attachments`), the public
//! halves of the audit checkpoint keys and the key-encryption keys' metadata
//! (`<state_dir>/keys/kek/*.json`), or every key file with `include_keys`. Each file can
//! be encrypted to an age recipient. `manifest.json`, with the SHA-256 of every file, is
//! written last: a folder without it is a partial backup.
//!
//! [`restore`] verifies the manifest first and refuses a corrupt or partial backup; it
//! refuses to overwrite a database that holds data or is in use, or files that exist,
//! unless forced.

pub mod manifest;

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::Row;

pub use self::manifest::{BackupError, BackupFile, Manifest};
use self::manifest::{FORMAT, MANIFEST, PARTIAL_MARKER, hash_file, io_at};
use crate::db::{Db, DbKind, now_text};

/// Told about a backup's or restore's progress.
pub trait Progress: Send + Sync {
    /// Steps (files) the command expects.
    fn planned(&self, _steps: u64) {}
    /// One more step done.
    fn advanced(&self, _what: &str) {}
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;
impl Progress for NoProgress {}

/// What to back up, and where.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// The database URL as configured (no password in it).
    pub database_url: String,
    /// The database password file, if any (PostgreSQL).
    pub database_password_file: Option<PathBuf>,
    /// The state folder (attachments and keys below it).
    pub state_dir: PathBuf,
    /// The backup folder: created, or empty, or a partial backup to redo.
    pub out: PathBuf,
    /// age recipient (`age1…`) every file is encrypted to.
    pub age_recipient: Option<String>,
    /// Copy key material too.
    pub include_keys: bool,
}

/// What a backup wrote.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub out: PathBuf,
    pub engine: String,
    pub created_at: String,
    pub files: u64,
    pub bytes: u64,
    pub encrypted: bool,
    pub duration_ms: u64,
}

/// What to restore, and where.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The backup folder.
    pub from: PathBuf,
    /// The database URL to restore into (as configured).
    pub database_url: String,
    pub database_password_file: Option<PathBuf>,
    /// The state folder to restore attachments and keys into.
    pub state_dir: PathBuf,
    /// age identity file, for an encrypted backup.
    pub identity: Option<PathBuf>,
    /// Overwrite a database with data, or files that exist.
    pub force: bool,
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub from: PathBuf,
    pub engine: String,
    /// When the backup was taken: everything written after it is not in the restore.
    pub backup_created_at: String,
    pub files: u64,
    pub duration_ms: u64,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn kind_of(url: &str) -> Result<DbKind, BackupError> {
    if url.starts_with("sqlite:") {
        Ok(DbKind::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(DbKind::Postgres)
    } else {
        Err(BackupError::Refused(
            "unsupported database URL (use sqlite:// or postgres://)".to_owned(),
        ))
    }
}

/// The file of a `sqlite://FILE?…` URL.
fn sqlite_path(url: &str) -> PathBuf {
    let path = url.trim_start_matches("sqlite:").trim_start_matches("//");
    PathBuf::from(path.split('?').next().unwrap_or_default())
}

fn interrupted(stop: &AtomicBool) -> Result<(), BackupError> {
    if stop.load(Ordering::SeqCst) {
        Err(BackupError::Refused(
            "interrupted; the folder is a partial backup (no manifest): run the backup again"
                .to_owned(),
        ))
    } else {
        Ok(())
    }
}

/// Takes a backup (see the module documentation). `stop` is checked between files; an
/// interrupted backup leaves a partial folder that restore refuses and that the next
/// backup to the same folder starts over.
pub async fn backup(
    options: &BackupOptions,
    stop: &AtomicBool,
    progress: &dyn Progress,
) -> Result<BackupReport, BackupError> {
    let started = Instant::now();
    let out = &options.out;
    prepare_out(out)?;
    let recipient = options
        .age_recipient
        .as_deref()
        .map(|r| {
            age::x25519::Recipient::from_str(r.trim())
                .map_err(|e| BackupError::Crypto(format!("age recipient: {e}")))
        })
        .transpose()?;
    let kind = kind_of(&options.database_url)?;
    let extra = extra_files(&options.state_dir, options.include_keys)?;
    progress.planned(1 + extra.len() as u64);

    let created_at = now_text();
    let (engine, db_name) = match kind {
        DbKind::Sqlite => ("sqlite", "database.sqlite"),
        DbKind::Postgres => ("postgres", "database.pgdump"),
    };
    let staging = out.join(format!(".{db_name}.tmp"));
    match kind {
        DbKind::Sqlite => {
            let db = Db::connect(&crate::settings::url_with_password(
                &options.database_url,
                options.database_password_file.as_deref(),
            )?)
            .await
            .map_err(|e| BackupError::Tool(e.to_string()))?;
            // One read transaction: a consistent copy while writers go on.
            sqlx::query("vacuum into $1")
                .bind(staging.display().to_string())
                .execute(db.pool())
                .await?;
            db.pool().close().await;
        }
        DbKind::Postgres => pg_dump(options, &staging)?,
    }
    let mut files = Vec::new();
    files.push(store(out, &staging, db_name, recipient.as_ref(), true)?);
    progress.advanced(db_name);
    for (source, rel) in &extra {
        interrupted(stop)?;
        files.push(store(out, source, rel, recipient.as_ref(), false)?);
        progress.advanced(rel);
    }
    interrupted(stop)?;
    let bytes = files.iter().map(|f| f.bytes).sum();
    let manifest = Manifest {
        format: FORMAT.to_owned(),
        created_at: created_at.clone(),
        engine: engine.to_owned(),
        database: files.first().map(|f| f.path.clone()).unwrap_or_default(),
        encrypted: recipient.is_some(),
        include_keys: options.include_keys,
        files,
    };
    manifest::write(out, &manifest)?;
    Ok(BackupReport {
        out: out.clone(),
        engine: engine.to_owned(),
        created_at,
        files: manifest.files.len() as u64,
        bytes,
        encrypted: manifest.encrypted,
        duration_ms: millis(started.elapsed()),
    })
}

/// The backup folder must be new, empty, or a partial backup (which is cleared).
fn prepare_out(out: &Path) -> Result<(), BackupError> {
    if out.exists() {
        let partial = out.join(PARTIAL_MARKER).exists();
        let empty = fs::read_dir(out).map_err(io_at(out))?.next().is_none();
        if partial {
            fs::remove_dir_all(out).map_err(io_at(out))?;
        } else if !empty {
            return Err(BackupError::Refused(format!(
                "{}: not empty; give a new folder",
                out.display()
            )));
        }
    }
    fs::create_dir_all(out).map_err(io_at(out))?;
    File::create(out.join(PARTIAL_MARKER)).map_err(io_at(out))?;
    Ok(())
}

/// Files besides the database: attachments, the audit checkpoint public keys, the
/// key-encryption keys' metadata (`*.json`), and with `include_keys` every key file.
fn extra_files(
    state_dir: &Path,
    include_keys: bool,
) -> Result<Vec<(PathBuf, String)>, BackupError> {
    let mut out = Vec::new();
    let attachments = state_dir.join("attachments");
    if attachments.is_dir() {
        let mut rels = Vec::new();
        manifest::list_files(&attachments, &attachments, &mut rels)?;
        for rel in rels {
            out.push((attachments.join(&rel), format!("files/attachments/{rel}")));
        }
    }
    let keys = state_dir.join("keys");
    if keys.is_dir() {
        let mut rels = Vec::new();
        manifest::list_files(&keys, &keys, &mut rels)?;
        for rel in rels {
            let metadata =
                rel.ends_with(".pub") || (rel.starts_with("kek/") && rel.ends_with(".json"));
            if include_keys || metadata {
                out.push((keys.join(&rel), format!("files/keys/{rel}")));
            }
        }
    }
    Ok(out)
}

/// Copies (or encrypts) `source` to `out/rel[.age]`, fsync'd; `consume` moves a staging
/// file instead of copying it.
fn store(
    out: &Path,
    source: &Path,
    rel: &str,
    recipient: Option<&age::x25519::Recipient>,
    consume: bool,
) -> Result<BackupFile, BackupError> {
    let (plain_sha256, _) = hash_file(source)?;
    let path = match recipient {
        Some(_) => format!("{rel}.age"),
        None => rel.to_owned(),
    };
    let target = out.join(&path);
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(io_at(parent))?;
    }
    match recipient {
        None if consume => fs::rename(source, &target).map_err(io_at(&target))?,
        None => {
            fs::copy(source, &target).map_err(io_at(&target))?;
        }
        Some(r) => {
            let encryptor =
                age::Encryptor::with_recipients(std::iter::once(r as &dyn age::Recipient))
                    .map_err(|e| BackupError::Crypto(e.to_string()))?;
            let file = File::create(&target).map_err(io_at(&target))?;
            let mut writer = encryptor.wrap_output(file).map_err(io_at(&target))?;
            let mut input = File::open(source).map_err(io_at(source))?;
            io::copy(&mut input, &mut writer).map_err(io_at(&target))?;
            writer.finish().map_err(io_at(&target))?;
            if consume {
                fs::remove_file(source).map_err(io_at(source))?;
            }
        }
    }
    File::open(&target)
        .and_then(|f| f.sync_all())
        .map_err(io_at(&target))?;
    let (sha256, bytes) = hash_file(&target)?;
    Ok(BackupFile {
        path,
        sha256,
        bytes,
        plain_sha256,
    })
}

/// A passfile for `pg_dump`/`pg_restore` (0600, removed when dropped): the password
/// never goes on a command line or into the environment (only the file's path does).
struct PassFile(Option<PathBuf>);

impl PassFile {
    fn new(password_file: Option<&Path>, near: &Path) -> Result<Self, BackupError> {
        let Some(pw_file) = password_file else {
            return Ok(Self(None));
        };
        let password = fs::read_to_string(pw_file).map_err(io_at(pw_file))?;
        let escaped = password.trim().replace('\\', "\\\\").replace(':', "\\:");
        let path = near.join(format!(".pgpass-{}", std::process::id()));
        let mut file = {
            use std::os::unix::fs::OpenOptionsExt;
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(io_at(&path))?
        };
        file.write_all(format!("*:*:*:*:{escaped}\n").as_bytes())
            .map_err(io_at(&path))?;
        Ok(Self(Some(path)))
    }

    fn apply(&self, command: &mut Command) {
        if let Some(p) = &self.0 {
            command.env("PGPASSFILE", p);
        }
    }
}

impl Drop for PassFile {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = fs::remove_file(p);
        }
    }
}

fn run_tool(mut command: Command, what: &str) -> Result<(), BackupError> {
    let output = command.output().map_err(|e| {
        BackupError::Tool(format!(
            "{what}: {e} (install the PostgreSQL client tools of the server's version)"
        ))
    })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(BackupError::Tool(format!(
            "{what} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

fn pg_dump(options: &BackupOptions, file: &Path) -> Result<(), BackupError> {
    let pass = PassFile::new(options.database_password_file.as_deref(), &options.out)?;
    let mut command = Command::new("pg_dump");
    command
        .arg("--format=custom")
        .arg("--no-owner")
        .arg("--no-privileges")
        .arg("--file")
        .arg(file)
        .arg("--dbname")
        .arg(&options.database_url);
    pass.apply(&mut command);
    run_tool(command, "pg_dump")
}

/// Restores a backup (see the module documentation).
pub async fn restore(
    options: &RestoreOptions,
    stop: &AtomicBool,
    progress: &dyn Progress,
) -> Result<RestoreReport, BackupError> {
    let started = Instant::now();
    let manifest = manifest::verify(&options.from)?;
    let kind = kind_of(&options.database_url)?;
    let engine = match kind {
        DbKind::Sqlite => "sqlite",
        DbKind::Postgres => "postgres",
    };
    if manifest.engine != engine {
        return Err(BackupError::Refused(format!(
            "the backup is of a {} database; the configured one is {engine}",
            manifest.engine
        )));
    }
    let identities = match (manifest.encrypted, &options.identity) {
        (false, _) => None,
        (true, None) => {
            return Err(BackupError::Refused(
                "the backup is encrypted: give --identity FILE".to_owned(),
            ));
        }
        (true, Some(file)) => Some(
            age::IdentityFile::from_file(file.display().to_string())
                .map_err(io_at(file))?
                .into_identities()
                .map_err(|e| BackupError::Crypto(e.to_string()))?,
        ),
    };
    let url = crate::settings::url_with_password(
        &options.database_url,
        options.database_password_file.as_deref(),
    )?;
    check_target(kind, &url, options).await?;
    progress.planned(manifest.files.len() as u64);

    // Decrypt (or copy) every file to a staging folder next to the state, checking the
    // content hashes, before anything is replaced.
    fs::create_dir_all(&options.state_dir).map_err(io_at(&options.state_dir))?;
    let staging = options.state_dir.join(".restore-staging");
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io_at(&staging))?;
    }
    let mut staged = Vec::new();
    for f in &manifest.files {
        interrupted(stop)?;
        let rel = f
            .path
            .strip_suffix(".age")
            .filter(|_| manifest.encrypted)
            .unwrap_or(f.path.as_str());
        let target = staging.join(rel);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io_at(parent))?;
        }
        let source = options.from.join(&f.path);
        match &identities {
            None => {
                fs::copy(&source, &target).map_err(io_at(&target))?;
            }
            Some(ids) => {
                let input = File::open(&source).map_err(io_at(&source))?;
                let decryptor = age::Decryptor::new_buffered(io::BufReader::new(input))
                    .map_err(|e| BackupError::Crypto(format!("{}: {e}", source.display())))?;
                let mut reader = decryptor
                    .decrypt(ids.iter().map(|i| i.as_ref() as &dyn age::Identity))
                    .map_err(|e| BackupError::Crypto(format!("{}: {e}", source.display())))?;
                let mut out = File::create(&target).map_err(io_at(&target))?;
                io::copy(&mut reader, &mut out).map_err(io_at(&target))?;
            }
        }
        let (plain, _) = hash_file(&target)?;
        if plain != f.plain_sha256 {
            let _ = fs::remove_dir_all(&staging);
            return Err(BackupError::Refused(format!(
                "{}: the content's SHA-256 differs from the manifest's; the backup is corrupt",
                f.path
            )));
        }
        staged.push(rel.to_owned());
    }
    let db_rel = manifest
        .database
        .strip_suffix(".age")
        .filter(|_| manifest.encrypted)
        .unwrap_or(manifest.database.as_str())
        .to_owned();
    match kind {
        DbKind::Sqlite => restore_sqlite(&staging.join(&db_rel), &url)?,
        DbKind::Postgres => restore_postgres(&staging.join(&db_rel), &url, options).await?,
    }
    progress.advanced(&db_rel);
    for rel in staged.iter().filter(|r| **r != db_rel) {
        let Some(inner) = rel.strip_prefix("files/") else {
            continue;
        };
        let target = options.state_dir.join(inner);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io_at(parent))?;
        }
        fs::rename(staging.join(rel), &target).map_err(io_at(&target))?;
        if inner.starts_with("keys/") && !inner.ends_with(".pub") {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&target, fs::Permissions::from_mode(0o600))
                .map_err(io_at(&target))?;
        }
        progress.advanced(rel);
    }
    let _ = fs::remove_dir_all(&staging);
    Ok(RestoreReport {
        from: options.from.clone(),
        engine: engine.to_owned(),
        backup_created_at: manifest.created_at,
        files: manifest.files.len() as u64,
        duration_ms: millis(started.elapsed()),
    })
}

/// Refuses to overwrite a database that holds data or is in use, and attachment or key
/// files that exist, unless forced.
async fn check_target(
    kind: DbKind,
    url: &str,
    options: &RestoreOptions,
) -> Result<(), BackupError> {
    if !options.force {
        for dir in ["attachments", "keys/kek"] {
            let d = options.state_dir.join(dir);
            if d.is_dir() && fs::read_dir(&d).map_err(io_at(&d))?.next().is_some() {
                return Err(BackupError::Refused(format!(
                    "{}: not empty; restore with --force to overwrite",
                    d.display()
                )));
            }
        }
    }
    match kind {
        DbKind::Sqlite => {
            let path = sqlite_path(url);
            let shm = PathBuf::from(format!("{}-shm", path.display()));
            if options.force {
                return Ok(());
            }
            if shm.exists() {
                return Err(BackupError::Refused(format!(
                    "{}: the database looks in use ({} exists); stop the service, or restore with --force",
                    path.display(),
                    shm.display()
                )));
            }
            if path.exists() && fs::metadata(&path).map_err(io_at(&path))?.len() > 0 {
                return Err(BackupError::Refused(format!(
                    "{}: the database exists; restore with --force to overwrite it",
                    path.display()
                )));
            }
            Ok(())
        }
        DbKind::Postgres => {
            let db = Db::connect(url)
                .await
                .map_err(|e| BackupError::Tool(e.to_string()))?;
            let others: i64 = sqlx::query(
                "select count(*) from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()",
            )
            .fetch_one(db.pool())
            .await?
            .try_get(0)?;
            let tables: i64 = sqlx::query(
                "select count(*) from information_schema.tables where table_schema = current_schema()",
            )
            .fetch_one(db.pool())
            .await?
            .try_get(0)?;
            db.pool().close().await;
            if options.force {
                Ok(())
            } else if others > 0 {
                Err(BackupError::Refused(format!(
                    "the database is in use by {others} other connection(s); stop the service, or restore with --force"
                )))
            } else if tables > 0 {
                Err(BackupError::Refused(
                    "the database holds tables; restore with --force to overwrite it".to_owned(),
                ))
            } else {
                Ok(())
            }
        }
    }
}

fn restore_sqlite(file: &Path, url: &str) -> Result<(), BackupError> {
    let path = sqlite_path(url);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io_at(parent))?;
    }
    // The old write-ahead log must not be replayed into the restored file.
    for suffix in ["-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", path.display()));
        if p.exists() {
            fs::remove_file(&p).map_err(io_at(&p))?;
        }
    }
    File::open(file)
        .and_then(|f| f.sync_all())
        .map_err(io_at(file))?;
    fs::rename(file, &path).map_err(io_at(&path))?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io_at(parent))?;
    }
    Ok(())
}

async fn restore_postgres(
    file: &Path,
    url: &str,
    options: &RestoreOptions,
) -> Result<(), BackupError> {
    let db = Db::connect(url)
        .await
        .map_err(|e| BackupError::Tool(e.to_string()))?;
    // Checked above: empty, or --force. Everything of the schema goes, then pg_restore
    // recreates it from the dump.
    sqlx::query("drop schema if exists public cascade")
        .execute(db.pool())
        .await?;
    sqlx::query("create schema public")
        .execute(db.pool())
        .await?;
    db.pool().close().await;
    let pass = PassFile::new(
        options.database_password_file.as_deref(),
        &options.state_dir,
    )?;
    let mut command = Command::new("pg_restore");
    command
        .arg("--no-owner")
        .arg("--no-privileges")
        .arg("--exit-on-error")
        .arg("--single-transaction")
        .arg("--dbname")
        .arg(&options.database_url)
        .arg(file);
    pass.apply(&mut command);
    run_tool(command, "pg_restore")
}

/// Whether `dir` holds a finished backup (its manifest).
pub fn is_backup(dir: &Path) -> bool {
    dir.join(MANIFEST).is_file()
}
