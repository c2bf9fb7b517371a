//! Checkpoint keys: the Ed25519 signing key the spool loads or generates on disk
//! ([`CheckpointSigner`]), the [`PublicKey`] verifiers check signatures with, and the
//! statement a checkpoint signs.

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
