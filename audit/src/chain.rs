//! Tamper evidence: the hash chain, signed checkpoints and verification.
//!
//! Every event of an emitter carries `portcullis.chain.seq` (1, 2, 3…),
//! `portcullis.chain.prev_hash` (the previous event's hash; 64 zeros before seq 1) and
//! `portcullis.chain.hash` = hex SHA-256 of `prev_hash` (as its 64 ASCII hex digits) followed
//! by the canonical JSON of the event without its `portcullis.chain.hash` field.
//!
//! Canonical JSON: no whitespace, object keys sorted by their UTF-8 bytes at every depth,
//! strings escaped as `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t` and `\u00xx` (lower-case hex)
//! for other control characters, everything else (including non-ASCII) written as is,
//! numbers as serde_json prints them. The spool writes lines in exactly this form.
//!
//! Every N events or T seconds the spool appends a checkpoint event (action
//! `audit-checkpoint`) whose `portcullis.checkpoint.signature` is an Ed25519 signature, hex,
//! over `portcullis-audit-checkpoint-v1\n{emitter}\n{seq}\n{hash}` where seq and hash are
//! those of the event just before the checkpoint. Rewriting history then needs the signing
//! key, not just a SHA-256 implementation.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject as _;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::event::field;

/// `prev_hash` of the first event of a chain.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const CHECKPOINT_DOMAIN: &str = "portcullis-audit-checkpoint-v1";

/// How far [`verify_file`] looks ahead after a sequence gap to tell a reordered event from a
/// deleted one.
const LOOKAHEAD_EVENTS: usize = 100_000;

/// Writes `value` as canonical JSON (see the module docs).
pub(crate) fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => write_json_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => write_canonical_object(map, out),
    }
}

/// Writes an object as canonical JSON.
pub(crate) fn write_canonical_object(map: &serde_json::Map<String, Value>, out: &mut Vec<u8>) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.push(b'{');
    for (i, (key, item)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_string(key, out);
        out.push(b':');
        write_canonical(item, out);
    }
    out.push(b'}');
}

/// Writes a JSON string literal with the canonical escapes.
pub(crate) fn write_json_string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// hex SHA-256 of `prev_hash` followed by the unhashed canonical event.
pub(crate) fn chain_hash(prev_hash: &str, unhashed: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(unhashed);
    hex::encode(hasher.finalize())
}

fn checkpoint_message(emitter: &str, seq: u64, hash: &str) -> Vec<u8> {
    format!("{CHECKPOINT_DOMAIN}\n{emitter}\n{seq}\n{hash}").into_bytes()
}

/// Why a checkpoint key could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Reading or writing the key file failed.
    #[error("checkpoint key {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The private key file is readable by group or others.
    #[error("checkpoint key {path}: mode {mode:o} lets others read it; chmod 600 it")]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file does not hold an Ed25519 PKCS#8 key, or a public key is not 32 bytes of hex.
    #[error("checkpoint key {what}: {reason}")]
    Invalid {
        /// The file or value.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// An Ed25519 public key that checks checkpoint signatures.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Parses 64 hex digits (surrounding whitespace ignored).
    pub fn from_hex(hex_key: &str) -> Result<Self, KeyError> {
        let invalid = |reason: &str| KeyError::Invalid {
            what: "public key".to_owned(),
            reason: reason.to_owned(),
        };
        let bytes = hex::decode(hex_key.trim()).map_err(|_| invalid("not hex"))?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| invalid("not 32 bytes"))?;
        Ok(Self(bytes))
    }

    /// Reads a key written by the spool next to its private key (`<key_file>.pub`: 64 hex
    /// digits).
    pub fn read_file(path: &Path) -> Result<Self, KeyError> {
        let text = fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_hex(&text).map_err(|e| match e {
            KeyError::Invalid { reason, .. } => KeyError::Invalid {
                what: path.display().to_string(),
                reason,
            },
            other => other,
        })
    }

    /// The key as 64 lower-case hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    fn verify(&self, message: &[u8], signature_hex: &str) -> bool {
        let Ok(signature) = hex::decode(signature_hex) else {
            return false;
        };
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(message, &signature)
            .is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The checkpoint signing key.
pub(crate) struct CheckpointSigner {
    key: Ed25519KeyPair,
    public: PublicKey,
}

impl fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl CheckpointSigner {
    /// Loads the PKCS#8 PEM key at `path`, or generates one there (mode 0600, written
    /// atomically so two processes sharing the file agree on one key). Writes the public key
    /// as hex to `<path>.pub` if that file is missing. A key file readable by group or others
    /// is refused.
    pub(crate) fn load_or_generate(path: &Path) -> Result<Self, KeyError> {
        let io_err = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        if !path.exists() {
            generate(path).map_err(io_err)?;
        }
        let mode = fs::metadata(path).map_err(io_err)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.to_owned(),
                mode: mode & 0o777,
            });
        }
        let der = PrivatePkcs8KeyDer::from_pem_file(path).map_err(|e| KeyError::Invalid {
            what: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let key =
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der()).map_err(|e| {
                KeyError::Invalid {
                    what: path.display().to_string(),
                    reason: format!("not an Ed25519 key: {e}"),
                }
            })?;
        let public = PublicKey::from_hex(&hex::encode(key.public_key().as_ref()))?;
        let pub_path = public_key_path(path);
        if !pub_path.exists() {
            let tmp = tmp_name(&pub_path);
            write_new(&tmp, format!("{public}\n").as_bytes(), 0o644)
                .and_then(|()| fs::rename(&tmp, &pub_path))
                .map_err(|source| KeyError::Io {
                    path: pub_path.clone(),
                    source,
                })?;
        }
        Ok(Self { key, public })
    }

    pub(crate) fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Hex signature over the checkpoint statement.
    pub(crate) fn sign(&self, emitter: &str, seq: u64, hash: &str) -> String {
        hex::encode(
            self.key
                .sign(&checkpoint_message(emitter, seq, hash))
                .as_ref(),
        )
    }
}

/// Where the public half of `key_file` is written: `<key_file>.pub`.
pub fn public_key_path(key_file: &Path) -> PathBuf {
    let mut name = key_file.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

fn tmp_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".tmp.{}", std::process::id()));
    PathBuf::from(name)
}

fn generate(path: &Path) -> io::Result<()> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| io::Error::other("could not generate an Ed25519 key"))?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    let tmp = tmp_name(path);
    write_new(&tmp, pem.as_bytes(), 0o600)?;
    // hard_link fails if `path` exists: whoever links first wins, the others load its key.
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => crate::spool::sync_parent(path),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// What a successful verification saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Files read (0 for [`verify_events`]).
    pub files: u64,
    /// Events checked, checkpoints included.
    pub events: u64,
    /// One summary per emitter, by name.
    pub chains: Vec<ChainSummary>,
}

/// One emitter's chain as verified.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChainSummary {
    /// The emitter (`proxy`, `backend`).
    pub emitter: String,
    /// First seq seen; greater than 1 when older events were rotated away (their removal can
    /// not be detected from this data alone).
    pub first_seq: u64,
    /// Last seq seen (removal of events after it can only be detected against a copy held
    /// elsewhere, such as the SIEM, or a later checkpoint).
    pub last_seq: u64,
    /// Hash of the last event.
    pub last_hash: String,
    /// Checkpoint events seen.
    pub checkpoints: u64,
    /// Checkpoints whose signature verified against the given public key (0 without a key).
    pub checkpoints_verified: u64,
}

/// What kind of damage verification found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Tamper {
    /// Not a JSON object with the chain fields (or a torn final line).
    Malformed,
    /// The event's content does not match its hash.
    Edited,
    /// A sequence gap, or `prev_hash` does not match the previous event: events are missing
    /// (or were rewritten together with their hashes).
    Deleted,
    /// An event appears before one with a lower seq.
    Reordered,
    /// A checkpoint does not match the chain, or its signature does not verify.
    BadCheckpoint,
}

impl fmt::Display for Tamper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Malformed => "malformed",
            Self::Edited => "edited",
            Self::Deleted => "deleted",
            Self::Reordered => "reordered",
            Self::BadCheckpoint => "bad checkpoint",
        })
    }
}

/// The first bad event found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BadPosition {
    /// The file, for [`verify_file`].
    pub file: Option<PathBuf>,
    /// 1-based line in `file`, or 1-based position in the input of [`verify_events`].
    pub line: u64,
    /// The event's emitter, when it could be read.
    pub emitter: Option<String>,
    /// The event's seq, when it could be read.
    pub seq: Option<u64>,
    /// What is wrong.
    pub tamper: Tamper,
    /// Explanation for a human.
    pub detail: String,
}

impl fmt::Display for BadPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{}:{}", file.display(), self.line)?,
            None => write!(f, "event {}", self.line)?,
        }
        if let (Some(emitter), Some(seq)) = (&self.emitter, self.seq) {
            write!(f, " ({emitter} seq {seq})")?;
        }
        write!(f, ": {}: {}", self.tamper, self.detail)
    }
}

/// Why verification failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A file or folder could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The chain is damaged; the first bad event is named.
    #[error("{0}")]
    Tampered(Box<BadPosition>),
}

impl VerifyError {
    /// The bad position, for [`VerifyError::Tampered`].
    pub fn position(&self) -> Option<&BadPosition> {
        match self {
            Self::Tampered(pos) => Some(pos),
            Self::Io { .. } => None,
        }
    }
}

/// Verifies a JSON-lines file, or every `*.jsonl` file of a folder (a spool, or a file sink's
/// folder with its rotated files) in natural name order as one stream.
///
/// Each emitter's chain is checked separately: every line's hash, seq continuity, `prev_hash`
/// links and checkpoints. With `public_key`, every checkpoint signature must verify against
/// it; without, checkpoints are checked for consistency only. Stops at the first bad line.
/// A spool that is being written may end in a torn line, reported as malformed.
pub fn verify_file(
    path: &Path,
    public_key: Option<&PublicKey>,
) -> Result<VerifyReport, VerifyError> {
    let io_err = |source| VerifyError::Io {
        path: path.to_owned(),
        source,
    };
    let files = if fs::metadata(path).map_err(io_err)?.is_dir() {
        let mut files = Vec::new();
        for entry in fs::read_dir(path).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".jsonl") && entry.file_type().map_err(io_err)?.is_file() {
                files.push(name);
            }
        }
        files.sort_by(|a, b| natural_cmp(a, b));
        files.into_iter().map(|name| path.join(name)).collect()
    } else {
        vec![path.to_owned()]
    };
    let count = files.len() as u64;
    let mut report = run(FileLines::new(files), public_key)?;
    report.files = count;
    Ok(report)
}

/// Verifies events given as their JSON text, in the order stored (for events read back from
/// a database table; store the line exactly as delivered). Positions in errors are 1-based
/// indexes into `events`. See [`verify_file`] for what is checked.
pub fn verify_events<I, S>(
    events: I,
    public_key: Option<&PublicKey>,
) -> Result<VerifyReport, VerifyError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let items = events.into_iter().enumerate().map(|(i, text)| {
        Ok(Item {
            file: None,
            line: i as u64 + 1,
            text: Ok(text.as_ref().to_owned()),
        })
    });
    run(items, public_key)
}

/// Compares names so that digit runs compare as numbers (`9.jsonl` < `10.jsonl`, and
/// `audit.00000001.jsonl` < `audit.jsonl`).
pub(crate) fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (trim_zeros(&a[..da]), trim_zeros(&b[..db]));
                let ord = na
                    .len()
                    .cmp(&nb.len())
                    .then_with(|| na.cmp(nb))
                    .then(da.cmp(&db));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[da..];
                b = &b[db..];
            }
            (Some(x), Some(y)) => {
                // Digits sort before everything else.
                let ord = match (x.is_ascii_digit(), y.is_ascii_digit()) {
                    (true, false) => Ordering::Less,
                    (false, true) => Ordering::Greater,
                    _ => x.cmp(y),
                };
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|&&c| c == b'0').count();
    &digits[zeros..]
}

/// One event to verify and where it came from.
struct Item {
    file: Option<std::sync::Arc<PathBuf>>,
    line: u64,
    /// The text, or why it is not text.
    text: Result<String, String>,
}

/// The lines of several files, in order.
struct FileLines {
    files: std::vec::IntoIter<PathBuf>,
    current: Option<(std::sync::Arc<PathBuf>, BufReader<File>, u64)>,
}

impl FileLines {
    fn new(files: Vec<PathBuf>) -> Self {
        Self {
            files: files.into_iter(),
            current: None,
        }
    }
}

impl Iterator for FileLines {
    type Item = Result<Item, VerifyError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let Some((path, reader, line)) = &mut self.current else {
                let path = self.files.next()?;
                match File::open(&path) {
                    Ok(file) => {
                        self.current = Some((std::sync::Arc::new(path), BufReader::new(file), 0));
                    }
                    Err(source) => return Some(Err(VerifyError::Io { path, source })),
                }
                continue;
            };
            let mut buf = Vec::new();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) => {
                    self.current = None;
                }
                Ok(_) => {
                    *line += 1;
                    let torn = buf.last() != Some(&b'\n');
                    if !torn {
                        buf.pop();
                    }
                    let text = match String::from_utf8(buf) {
                        Ok(_) if torn => Err("the last line is incomplete (torn write)".to_owned()),
                        Ok(text) => Ok(text),
                        Err(_) => Err("not UTF-8".to_owned()),
                    };
                    return Some(Ok(Item {
                        file: Some(path.clone()),
                        line: *line,
                        text,
                    }));
                }
                Err(source) => {
                    let path = path.as_ref().clone();
                    self.current = None;
                    return Some(Err(VerifyError::Io { path, source }));
                }
            }
        }
    }
}

/// Per-emitter state while verifying.
#[derive(Debug)]
struct ChainState {
    first_seq: u64,
    last_seq: u64,
    last_hash: String,
    checkpoints: u64,
    checkpoints_verified: u64,
}

/// The chain fields of one event.
struct Parsed {
    emitter: String,
    seq: u64,
    prev_hash: String,
    hash: String,
    object: serde_json::Map<String, Value>,
}

enum Finding {
    Bad {
        tamper: Tamper,
        emitter: Option<String>,
        seq: Option<u64>,
        detail: String,
    },
    Gap {
        emitter: String,
        expected: u64,
        found: u64,
    },
}

fn bad(tamper: Tamper, parsed: Option<&Parsed>, detail: String) -> Finding {
    Finding::Bad {
        tamper,
        emitter: parsed.map(|p| p.emitter.clone()),
        seq: parsed.map(|p| p.seq),
        detail,
    }
}

fn parse(text: &str) -> Result<Parsed, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(object) = value else {
        return Err("not a JSON object".to_owned());
    };
    let string = |name: &str| {
        object
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("no string field {name}"))
    };
    let emitter = string(field::EMITTER)?;
    let prev_hash = string(field::CHAIN_PREV_HASH)?;
    let hash = string(field::CHAIN_HASH)?;
    let seq = object
        .get(field::CHAIN_SEQ)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("no integer field {}", field::CHAIN_SEQ))?;
    Ok(Parsed {
        emitter,
        seq,
        prev_hash,
        hash,
        object,
    })
}

/// Emitter and seq only, for the look-ahead.
fn peek(text: &str) -> Option<(String, u64)> {
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(rename = "portcullis.emitter")]
        emitter: String,
        #[serde(rename = "portcullis.chain.seq")]
        seq: u64,
    }
    let head: Head = serde_json::from_str(text).ok()?;
    Some((head.emitter, head.seq))
}

struct Verifier<'k> {
    key: Option<&'k PublicKey>,
    chains: BTreeMap<String, ChainState>,
    events: u64,
}

impl Verifier<'_> {
    fn check(&mut self, text: &str) -> Result<(), Finding> {
        let mut parsed = parse(text).map_err(|reason| bad(Tamper::Malformed, None, reason))?;
        parsed.object.remove(field::CHAIN_HASH);
        let mut unhashed = Vec::with_capacity(text.len());
        write_canonical_object(&parsed.object, &mut unhashed);
        let computed = chain_hash(&parsed.prev_hash, &unhashed);
        if computed != parsed.hash {
            return Err(bad(
                Tamper::Edited,
                Some(&parsed),
                "the content does not match portcullis.chain.hash".to_owned(),
            ));
        }
        match self.chains.get(&parsed.emitter) {
            None => {
                if parsed.seq == 1 && parsed.prev_hash != GENESIS_HASH {
                    return Err(bad(
                        Tamper::Deleted,
                        Some(&parsed),
                        "seq 1 does not start from the genesis hash".to_owned(),
                    ));
                }
            }
            Some(state) => {
                let expected = state.last_seq + 1;
                if parsed.seq > expected {
                    return Err(Finding::Gap {
                        emitter: parsed.emitter.clone(),
                        expected,
                        found: parsed.seq,
                    });
                }
                if parsed.seq < expected {
                    return Err(bad(
                        Tamper::Reordered,
                        Some(&parsed),
                        format!("seq {} comes after seq {}", parsed.seq, state.last_seq),
                    ));
                }
                if parsed.prev_hash != state.last_hash {
                    return Err(bad(
                        Tamper::Deleted,
                        Some(&parsed),
                        format!(
                            "prev_hash does not match the hash of seq {}: an event before this one was removed or rewritten",
                            state.last_seq
                        ),
                    ));
                }
            }
        }
        let checkpoint = self.check_checkpoint(&parsed)?;
        let state = self
            .chains
            .entry(parsed.emitter.clone())
            .or_insert_with(|| ChainState {
                first_seq: parsed.seq,
                last_seq: 0,
                last_hash: String::new(),
                checkpoints: 0,
                checkpoints_verified: 0,
            });
        state.last_seq = parsed.seq;
        state.last_hash = parsed.hash;
        if let Some(verified) = checkpoint {
            state.checkpoints += 1;
            state.checkpoints_verified += u64::from(verified);
        }
        self.events += 1;
        Ok(())
    }

    /// `None` if not a checkpoint, else whether its signature was verified.
    fn check_checkpoint(&self, parsed: &Parsed) -> Result<Option<bool>, Finding> {
        let event = &parsed.object;
        let Some(signature) = event.get(field::CHECKPOINT_SIGNATURE) else {
            return Ok(None);
        };
        let broken = |detail: &str| bad(Tamper::BadCheckpoint, Some(parsed), detail.to_owned());
        let signature = signature
            .as_str()
            .ok_or_else(|| broken("signature is not a string"))?;
        let seq = event
            .get(field::CHECKPOINT_SEQ)
            .and_then(Value::as_u64)
            .ok_or_else(|| broken("no checkpoint seq"))?;
        let hash = event
            .get(field::CHECKPOINT_HASH)
            .and_then(Value::as_str)
            .ok_or_else(|| broken("no checkpoint hash"))?;
        if seq + 1 != parsed.seq || hash != parsed.prev_hash {
            return Err(broken(
                "the checkpoint does not describe the event before it",
            ));
        }
        match self.key {
            None => Ok(Some(false)),
            Some(key) if key.verify(&checkpoint_message(&parsed.emitter, seq, hash), signature) => {
                Ok(Some(true))
            }
            Some(_) => Err(broken(
                "the signature does not verify with the given public key",
            )),
        }
    }

    fn report(self) -> VerifyReport {
        VerifyReport {
            files: 0,
            events: self.events,
            chains: self
                .chains
                .into_iter()
                .map(|(emitter, s)| ChainSummary {
                    emitter,
                    first_seq: s.first_seq,
                    last_seq: s.last_seq,
                    last_hash: s.last_hash,
                    checkpoints: s.checkpoints,
                    checkpoints_verified: s.checkpoints_verified,
                })
                .collect(),
        }
    }
}

fn run<I>(mut items: I, key: Option<&PublicKey>) -> Result<VerifyReport, VerifyError>
where
    I: Iterator<Item = Result<Item, VerifyError>>,
{
    let mut verifier = Verifier {
        key,
        chains: BTreeMap::new(),
        events: 0,
    };
    while let Some(item) = items.next() {
        let item = item?;
        let finding = match &item.text {
            Ok(text) => verifier.check(text),
            Err(reason) => Err(bad(Tamper::Malformed, None, reason.clone())),
        };
        let (tamper, emitter, seq, detail) = match finding {
            Ok(()) => continue,
            Err(Finding::Bad {
                tamper,
                emitter,
                seq,
                detail,
            }) => (tamper, emitter, seq, detail),
            Err(Finding::Gap {
                emitter,
                expected,
                found,
            }) => {
                // Is the missing event further on (reordered) or gone (deleted)?
                let mut later = None;
                for next in items.by_ref().take(LOOKAHEAD_EVENTS) {
                    let next = next?;
                    let hit = next
                        .text
                        .as_deref()
                        .ok()
                        .and_then(peek)
                        .is_some_and(|(e, s)| e == emitter && s == expected);
                    if hit {
                        later = Some(next);
                        break;
                    }
                }
                match later {
                    Some(later) => (
                        Tamper::Reordered,
                        Some(emitter),
                        Some(found),
                        format!(
                            "seq {found} comes before seq {expected}, which is at {}",
                            describe(&later)
                        ),
                    ),
                    None => (
                        Tamper::Deleted,
                        Some(emitter),
                        Some(found),
                        if found == expected + 1 {
                            format!("seq {expected} is missing")
                        } else {
                            format!("seqs {expected} to {} are missing", found - 1)
                        },
                    ),
                }
            }
        };
        return Err(VerifyError::Tampered(Box::new(BadPosition {
            file: item.file.map(|f| f.as_ref().clone()),
            line: item.line,
            emitter,
            seq,
            tamper,
            detail,
        })));
    }
    Ok(verifier.report())
}

fn describe(item: &Item) -> String {
    match &item.file {
        Some(file) => format!("{}:{}", file.display(), item.line),
        None => format!("event {}", item.line),
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]
mod tests {
    use super::*;

    #[test]
    fn canonical_sorts_and_escapes() {
        let value: Value = serde_json::from_str(
            r#"{"b":1,"a":{"y":[true,null,1.5],"x":"q\"\\\n\u0001é/"},"A":-3}"#,
        )
        .unwrap();
        let mut out = Vec::new();
        write_canonical(&value, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"A":-3,"a":{"x":"q\"\\\n\u0001é/","y":[true,null,1.5]},"b":1}"#
        );
    }

    #[test]
    fn canonical_string_matches_serde_json() {
        let s: String = (0u8..=0x7f).map(char::from).chain("é✓😀".chars()).collect();
        let mut out = Vec::new();
        write_json_string(&s, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            serde_json::to_string(&s).unwrap()
        );
    }

    #[test]
    fn natural_order() {
        let mut names = vec![
            "audit.jsonl",
            "audit.00000002.jsonl",
            "100000000.jsonl",
            "audit.00000001.jsonl",
            "00000002.jsonl",
            "00000010.jsonl",
        ];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            names,
            [
                "00000002.jsonl",
                "00000010.jsonl",
                "100000000.jsonl",
                "audit.00000001.jsonl",
                "audit.00000002.jsonl",
                "audit.jsonl"
            ]
        );
    }

    #[test]
    fn signatures_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/checkpoint.key");
        let signer = CheckpointSigner::load_or_generate(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = CheckpointSigner::load_or_generate(&path).unwrap();
        assert_eq!(signer.public_key(), again.public_key());
        let public = PublicKey::read_file(&public_key_path(&path)).unwrap();
        assert_eq!(&public, signer.public_key());
        let sig = signer.sign("proxy", 7, GENESIS_HASH);
        assert!(public.verify(&checkpoint_message("proxy", 7, GENESIS_HASH), &sig));
        assert!(!public.verify(&checkpoint_message("proxy", 8, GENESIS_HASH), &sig));

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            CheckpointSigner::load_or_generate(&path),
            Err(KeyError::Permissions { .. })
        ));
    }
}
