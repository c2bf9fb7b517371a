//! Checkpoint keys: the Ed25519 signing key the spool loads or generates on disk
//! ([`CheckpointSigner`]), the [`PublicKey`]s verifiers check signatures with
//! ([`TrustedKeys`]: the current key and those used before a rotation), the statement a
//! checkpoint signs, and [`rotate_key`].

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject as _;

use crate::fsutil::{sync_parent, tmp_name, write_new};

const CHECKPOINT_DOMAIN: &str = "portcullis-audit-checkpoint-v1";

/// The statement a checkpoint signs.
pub(super) fn checkpoint_message(emitter: &str, seq: u64, hash: &str) -> Vec<u8> {
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

    /// The key as 64 lower-case hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Whether `signature_hex` is this key's signature over `message`.
    pub(super) fn verify(&self, message: &[u8], signature_hex: &str) -> bool {
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

/// The public keys whose signatures a verifier accepts: an emitter's current checkpoint
/// key and the keys it signed with before each rotation. `<key_file>.pub` holds them, one
/// per line as 64 hex digits, oldest first; lines starting with `#` are comments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedKeys(Vec<PublicKey>);

impl TrustedKeys {
    /// Reads a key set file (see [`TrustedKeys`]); it must name at least one key.
    pub fn read_file(path: &Path) -> Result<Self, KeyError> {
        let text = fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|reason| KeyError::Invalid {
            what: path.display().to_string(),
            reason,
        })
    }

    fn parse(text: &str) -> Result<Self, String> {
        let mut keys: Vec<PublicKey> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = PublicKey::from_hex(line).map_err(|e| match e {
                KeyError::Invalid { reason, .. } => format!("line {}: {reason}", i + 1),
                other => other.to_string(),
            })?;
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        if keys.is_empty() {
            return Err("names no public key".to_owned());
        }
        Ok(Self(keys))
    }

    /// The keys, oldest first.
    pub fn keys(&self) -> &[PublicKey] {
        &self.0
    }

    /// Whether `key` is one of them.
    pub fn contains(&self, key: &PublicKey) -> bool {
        self.0.contains(key)
    }

    /// Whether one of the keys signed `message`.
    pub(super) fn verify(&self, message: &[u8], signature_hex: &str) -> bool {
        self.0.iter().any(|k| k.verify(message, signature_hex))
    }

    fn to_text(&self) -> String {
        self.0.iter().map(|k| format!("{k}\n")).collect()
    }
}

impl From<PublicKey> for TrustedKeys {
    fn from(key: PublicKey) -> Self {
        Self(vec![key])
    }
}

/// Adds `key` to the key set file `pub_path` (created if missing), atomically; a no-op
/// when it is there already.
fn trust(pub_path: &Path, key: &PublicKey) -> Result<(), KeyError> {
    let keys = match fs::read_to_string(pub_path) {
        Ok(text) => {
            let mut set = TrustedKeys::parse(&text).map_err(|reason| KeyError::Invalid {
                what: pub_path.display().to_string(),
                reason,
            })?;
            if set.contains(key) {
                return Ok(());
            }
            set.0.push(key.clone());
            set
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => TrustedKeys::from(key.clone()),
        Err(source) => {
            return Err(KeyError::Io {
                path: pub_path.to_owned(),
                source,
            });
        }
    };
    let tmp = tmp_name(pub_path);
    write_new(&tmp, keys.to_text().as_bytes(), 0o644)
        .and_then(|()| fs::rename(&tmp, pub_path))
        .and_then(|()| sync_parent(pub_path))
        .map_err(|source| KeyError::Io {
            path: pub_path.to_owned(),
            source,
        })
}

/// What [`rotate_key`] did (or, as a dry run, would do).
#[derive(Debug, Clone)]
pub struct KeyRotation {
    /// The key that signed until now; it stays trusted.
    pub previous: PublicKey,
    /// The new signing key (`None` for a dry run).
    pub current: Option<PublicKey>,
    /// The key set file verifiers read (`<key_file>.pub`).
    pub trusted_file: PathBuf,
}

/// Replaces the checkpoint key at `key_file` with a new one. The new public key is added
/// to `<key_file>.pub` first, so verifiers trust it before anything is signed with it; the
/// old public key stays there (checkpoints it signed keep verifying) while the old private
/// key is overwritten. A running spool picks the new key up at its next write (it notices
/// the replaced file). `dry_run` checks the current key and changes nothing.
pub fn rotate_key(key_file: &Path, dry_run: bool) -> Result<KeyRotation, KeyError> {
    let previous = CheckpointSigner::load(key_file)?;
    let trusted_file = public_key_path(key_file);
    if dry_run {
        return Ok(KeyRotation {
            previous: previous.public,
            current: None,
            trusted_file,
        });
    }
    let pem = new_pem().map_err(|source| KeyError::Io {
        path: key_file.to_owned(),
        source,
    })?;
    let pair = key_pair(key_file, &pem)?;
    let current = public_of(&pair)?;
    trust(&trusted_file, &current)?;
    let io_err = |source| KeyError::Io {
        path: key_file.to_owned(),
        source,
    };
    let tmp = tmp_name(key_file);
    write_new(&tmp, pem.as_bytes(), 0o600).map_err(io_err)?;
    fs::rename(&tmp, key_file)
        .and_then(|()| sync_parent(key_file))
        .map_err(io_err)?;
    Ok(KeyRotation {
        previous: previous.public,
        current: Some(current),
        trusted_file,
    })
}

fn key_pair(what: &Path, pem: &str) -> Result<Ed25519KeyPair, KeyError> {
    let invalid = |reason: String| KeyError::Invalid {
        what: what.display().to_string(),
        reason,
    };
    let der =
        PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| invalid(e.to_string()))?;
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der())
        .map_err(|e| invalid(format!("not an Ed25519 key: {e}")))
}

fn public_of(pair: &Ed25519KeyPair) -> Result<PublicKey, KeyError> {
    PublicKey::from_hex(&hex::encode(pair.public_key().as_ref()))
}

/// The file a signer was loaded from, told apart from a replacement by device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId(u64, u64);

impl FileId {
    fn of(path: &Path) -> io::Result<Self> {
        use std::os::unix::fs::MetadataExt as _;
        let meta = fs::metadata(path)?;
        Ok(Self(meta.dev(), meta.ino()))
    }
}

/// The checkpoint signing key.
pub(crate) struct CheckpointSigner {
    key: Ed25519KeyPair,
    public: PublicKey,
    path: PathBuf,
    file: FileId,
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
        if !path.exists() {
            generate(path).map_err(|source| KeyError::Io {
                path: path.to_owned(),
                source,
            })?;
        }
        let signer = Self::load(path)?;
        trust(&public_key_path(path), &signer.public)?;
        Ok(signer)
    }

    /// Loads the key at `path`, which must exist; refused when group or others may read it.
    fn load(path: &Path) -> Result<Self, KeyError> {
        let io_err = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        // The identity first: a replacement after this is noticed at the next check.
        let file = FileId::of(path).map_err(io_err)?;
        let mode = fs::metadata(path).map_err(io_err)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.to_owned(),
                mode: mode & 0o777,
            });
        }
        let pem = fs::read_to_string(path).map_err(io_err)?;
        let key = key_pair(path, &pem)?;
        let public = public_of(&key)?;
        Ok(Self {
            key,
            public,
            path: path.to_owned(),
            file,
        })
    }

    /// Loads the key file again if it was replaced since (`keys rotate --kind
    /// audit-checkpoint`); `Ok(true)` when the key changed. A missing file keeps the key in
    /// use.
    pub(crate) fn reload_if_replaced(&mut self) -> Result<bool, KeyError> {
        match FileId::of(&self.path) {
            Ok(id) if id == self.file => Ok(false),
            Ok(_) => {
                let fresh = Self::load(&self.path)?;
                trust(&public_key_path(&self.path), &fresh.public)?;
                let changed = fresh.public != self.public;
                *self = fresh;
                Ok(changed)
            }
            Err(_) => Ok(false),
        }
    }

    pub(crate) fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Hex signature over the checkpoint statement.
    pub(crate) fn sign(&self, emitter: &str, seq: u64, hash: &str) -> String {
        self.sign_message(&checkpoint_message(emitter, seq, hash))
    }

    /// Hex signature over any statement of this crate (each with its own domain line).
    pub(crate) fn sign_message(&self, message: &[u8]) -> String {
        hex::encode(self.key.sign(message).as_ref())
    }
}

/// Where the public half of `key_file` is written: `<key_file>.pub`.
pub fn public_key_path(key_file: &Path) -> PathBuf {
    let mut name = key_file.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// A new Ed25519 key as PKCS#8 PEM.
fn new_pem() -> io::Result<String> {
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
    Ok(pem)
}

fn generate(path: &Path) -> io::Result<()> {
    let pem = new_pem()?;
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
        Ok(()) => sync_parent(path),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::hash::GENESIS_HASH;

    #[test]
    fn signatures_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/checkpoint.key");
        let signer = CheckpointSigner::load_or_generate(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = CheckpointSigner::load_or_generate(&path).unwrap();
        assert_eq!(signer.public_key(), again.public_key());
        let trusted = TrustedKeys::read_file(&public_key_path(&path)).unwrap();
        assert_eq!(trusted.keys(), [signer.public_key().clone()]);
        let sig = signer.sign("proxy", 7, GENESIS_HASH);
        assert!(trusted.verify(&checkpoint_message("proxy", 7, GENESIS_HASH), &sig));
        assert!(!trusted.verify(&checkpoint_message("proxy", 8, GENESIS_HASH), &sig));

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            CheckpointSigner::load_or_generate(&path),
            Err(KeyError::Permissions { .. })
        ));
    }

    #[test]
    fn a_rotated_key_signs_and_the_old_one_stays_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.key");
        assert!(matches!(rotate_key(&path, false), Err(KeyError::Io { .. })));
        let mut running = CheckpointSigner::load_or_generate(&path).unwrap();
        let old = running.public_key().clone();
        let old_sig = running.sign("proxy", 1, GENESIS_HASH);

        let dry = rotate_key(&path, true).unwrap();
        assert_eq!(dry.previous, old);
        assert!(dry.current.is_none());
        assert!(
            !running.reload_if_replaced().unwrap(),
            "a dry run changed the key"
        );

        let done = rotate_key(&path, false).unwrap();
        let new = done.current.unwrap();
        assert_ne!(new, old);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let trusted = TrustedKeys::read_file(&done.trusted_file).unwrap();
        assert_eq!(trusted.keys(), [old.clone(), new.clone()]);

        // The running signer notices the replaced file and signs with the new key.
        assert!(running.reload_if_replaced().unwrap());
        assert_eq!(running.public_key(), &new);
        assert!(!running.reload_if_replaced().unwrap());
        let new_sig = running.sign("proxy", 2, GENESIS_HASH);
        let msg = |seq| checkpoint_message("proxy", seq, GENESIS_HASH);
        assert!(trusted.verify(&msg(1), &old_sig));
        assert!(trusted.verify(&msg(2), &new_sig));
        // Either key alone verifies only its own signatures.
        assert!(!TrustedKeys::from(new.clone()).verify(&msg(1), &old_sig));
        assert!(!TrustedKeys::from(old).verify(&msg(2), &new_sig));
        // Loading again (a restart) keeps the set as it is.
        CheckpointSigner::load_or_generate(&path).unwrap();
        assert_eq!(TrustedKeys::read_file(&done.trusted_file).unwrap(), trusted);
    }

    #[test]
    fn a_key_set_file_must_name_keys() {
        let key = "ab".repeat(32);
        let set = TrustedKeys::parse(&format!("# rotated 2026-12-05\n{key}\n\n{key}\n")).unwrap();
        assert_eq!(set.keys().len(), 1);
        assert!(TrustedKeys::parse("# nothing\n").is_err());
        let err = TrustedKeys::parse(&format!("{key}\nnot-a-key\n")).unwrap_err();
        assert!(err.contains("line 2"), "{err}");
    }
}
