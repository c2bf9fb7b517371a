//! Envelope encryption of attachment content.
//!
//! Every version of an attachment gets a fresh random 256-bit data key. Its content is
//! encrypted with AES-256-GCM in the STREAM construction (`aead::stream`, big-endian
//! 32-bit counter and a last-chunk flag in the nonce) in [`CHUNK_BYTES`] chunks, so
//! uploads and downloads never hold a whole file, and a chunk that was changed,
//! reordered, dropped or cut off fails to decrypt. The data key is wrapped with
//! AES-256-GCM under a key-encryption key (KEK) named by its id. Both layers bind the
//! object's identity as associated data: the content to (ticket, attachment, version),
//! the wrapped key to the same plus the KEK id, so a wrapped key or ciphertext moved to
//! another object does not open.
//!
//! KEKs are files `<kek_dir>/<kek_id>.key` (32 random bytes, mode 0600); the file
//! `current` names the one new versions are wrapped under ([`Keks`]).

use std::collections::HashMap;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::stream::{DecryptorBE32, EncryptorBE32};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use secrecy::{ExposeSecret, SecretBox};

/// Plaintext bytes per encrypted chunk.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// GCM tag added to every chunk.
pub const TAG_BYTES: usize = 16;
/// The stream nonce prefix (12-byte GCM nonce less the 4-byte counter and 1-byte flag).
pub const NONCE_PREFIX_BYTES: usize = 7;
const KEY_BYTES: usize = 32;
const WRAP_NONCE_BYTES: usize = 12;

/// What went wrong with keys or ciphertext. Never says more than which step failed.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("key-encryption key {0} is not available")]
    UnknownKek(String),
    #[error("key-encryption key file {path}: {reason}")]
    KekFile { path: String, reason: String },
    #[error("the wrapped data key does not open under key {0} for this object")]
    Unwrap(String),
    #[error("the stored content failed its integrity check")]
    Integrity,
    #[error("the stored record is malformed: {0}")]
    Malformed(&'static str),
}

/// A 256-bit key held in memory that is zeroed when dropped.
pub type SecretKey = SecretBox<[u8; KEY_BYTES]>;

fn random_key() -> SecretKey {
    SecretBox::new(Box::new(rand::random::<[u8; KEY_BYTES]>()))
}

/// Who an encrypted object is: bound into both layers as associated data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectIdentity {
    /// The ticket's public id (`TCK-…`).
    pub ticket_id: String,
    pub attachment_id: String,
    pub version: i64,
}

impl ObjectIdentity {
    fn content_aad(&self) -> Vec<u8> {
        format!(
            "portcullis-attachment-content-v1\0{}\0{}\0{}",
            self.ticket_id, self.attachment_id, self.version
        )
        .into_bytes()
    }

    fn key_aad(&self, kek_id: &str) -> Vec<u8> {
        format!(
            "portcullis-attachment-key-v1\0{}\0{}\0{}\0{kek_id}",
            self.ticket_id, self.attachment_id, self.version
        )
        .into_bytes()
    }
}

/// The key-encryption keys in a folder. Keys are read when first needed, so a key a
/// `keys rotate` added while this process runs is found; `current` is read on every
/// new object for the same reason.
#[derive(Debug, Clone)]
pub struct Keks {
    dir: PathBuf,
    loaded: Arc<RwLock<HashMap<String, Arc<SecretKey>>>>,
}

/// A KEK id: `kek-` then lower-case letters, digits and `-` (it names a file).
pub fn valid_kek_id(id: &str) -> bool {
    id.len() <= 64
        && id.starts_with("kek-")
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl Keks {
    /// Opens `dir`, creating it and a first key (made current) when there is none.
    pub fn open(dir: &Path) -> Result<Self, CryptoError> {
        let keks = Self {
            dir: dir.to_owned(),
            loaded: Arc::default(),
        };
        if !keks.current_file().exists() {
            let id = keks.create()?;
            keks.set_current(&id)?;
            tracing::info!(kek_id = %id, dir = %dir.display(), "created the first key-encryption key");
        }
        keks.current_id()?;
        Ok(keks)
    }

    fn current_file(&self) -> PathBuf {
        self.dir.join("current")
    }

    fn key_file(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.key"))
    }

    fn io(path: &Path) -> impl Fn(std::io::Error) -> CryptoError + '_ {
        move |e| CryptoError::KekFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        }
    }

    /// The id new objects are wrapped under.
    pub fn current_id(&self) -> Result<String, CryptoError> {
        let path = self.current_file();
        let id = std::fs::read_to_string(&path).map_err(Self::io(&path))?;
        let id = id.trim().to_owned();
        if !valid_kek_id(&id) {
            return Err(CryptoError::KekFile {
                path: path.display().to_string(),
                reason: "does not name a key id".into(),
            });
        }
        Ok(id)
    }

    /// Ids of every key file in the folder, sorted.
    pub fn ids(&self) -> Result<Vec<String>, CryptoError> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(Self::io(&self.dir))? {
            let entry = entry.map_err(Self::io(&self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".key")
                && valid_kek_id(id)
            {
                ids.push(id.to_owned());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Writes a new random key (0600) and returns its id; it is not current yet.
    pub fn create(&self) -> Result<String, CryptoError> {
        std::fs::create_dir_all(&self.dir).map_err(Self::io(&self.dir))?;
        let now = time::OffsetDateTime::now_utc();
        let id = format!(
            "kek-{:04}{:02}{:02}t{:02}{:02}{:02}-{}",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second(),
            hex::encode(rand::random::<[u8; 3]>())
        );
        let path = self.key_file(&id);
        let key = random_key();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(Self::io(&path))?;
        f.write_all(key.expose_secret()).map_err(Self::io(&path))?;
        f.sync_all().map_err(Self::io(&path))?;
        Ok(id)
    }

    /// Makes `id` the key new objects are wrapped under (atomically: a temporary file
    /// renamed over `current`).
    pub fn set_current(&self, id: &str) -> Result<(), CryptoError> {
        self.key(id)?;
        let tmp = self.dir.join("current.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(Self::io(&tmp))?;
        f.write_all(format!("{id}\n").as_bytes())
            .map_err(Self::io(&tmp))?;
        f.sync_all().map_err(Self::io(&tmp))?;
        let current = self.current_file();
        std::fs::rename(&tmp, &current).map_err(Self::io(&current))?;
        Ok(())
    }

    /// Deletes key `id` (the caller checked that nothing uses it). The current key is
    /// never deleted.
    pub fn remove(&self, id: &str) -> Result<(), CryptoError> {
        if self.current_id()? == id {
            return Err(CryptoError::KekFile {
                path: self.key_file(id).display().to_string(),
                reason: "is the current key".into(),
            });
        }
        let path = self.key_file(id);
        std::fs::remove_file(&path).map_err(Self::io(&path))?;
        if let Ok(mut loaded) = self.loaded.write() {
            loaded.remove(id);
        }
        Ok(())
    }

    /// Key `id`, from memory or its file. A file readable by group or others, or of
    /// the wrong length, is refused.
    pub fn key(&self, id: &str) -> Result<Arc<SecretKey>, CryptoError> {
        if !valid_kek_id(id) {
            return Err(CryptoError::UnknownKek(id.to_owned()));
        }
        if let Some(k) = self.loaded.read().ok().and_then(|m| m.get(id).cloned()) {
            return Ok(k);
        }
        let path = self.key_file(id);
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CryptoError::UnknownKek(id.to_owned()));
            }
            Err(e) => return Err(Self::io(&path)(e)),
        };
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(CryptoError::KekFile {
                path: path.display().to_string(),
                reason: "is readable by group or others; chmod 600 it".into(),
            });
        }
        let bytes = zeroize::Zeroizing::new(std::fs::read(&path).map_err(Self::io(&path))?);
        let arr: [u8; KEY_BYTES] =
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| CryptoError::KekFile {
                    path: path.display().to_string(),
                    reason: format!("must hold exactly {KEY_BYTES} bytes"),
                })?;
        let key = Arc::new(SecretBox::new(Box::new(arr)));
        if let Ok(mut loaded) = self.loaded.write() {
            loaded.insert(id.to_owned(), Arc::clone(&key));
        }
        Ok(key)
    }
}

/// A data key wrapped under a KEK: `nonce || ciphertext || tag`.
pub fn wrap(
    kek: &SecretKey,
    kek_id: &str,
    data_key: &SecretKey,
    who: &ObjectIdentity,
) -> Result<Vec<u8>, CryptoError> {
    let cipher = Aes256Gcm::new(GenericArray::from_slice(kek.expose_secret()));
    let nonce: [u8; WRAP_NONCE_BYTES] = rand::random();
    let aad = who.key_aad(kek_id);
    let sealed = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: data_key.expose_secret(),
                aad: &aad,
            },
        )
        .map_err(|_| CryptoError::Malformed("key wrap"))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens a data key [`wrap`]ped for `who` under `kek_id`.
pub fn unwrap(
    kek: &SecretKey,
    kek_id: &str,
    wrapped: &[u8],
    who: &ObjectIdentity,
) -> Result<SecretKey, CryptoError> {
    if wrapped.len() != WRAP_NONCE_BYTES + KEY_BYTES + TAG_BYTES {
        return Err(CryptoError::Unwrap(kek_id.to_owned()));
    }
    let (nonce, sealed) = wrapped.split_at(WRAP_NONCE_BYTES);
    let cipher = Aes256Gcm::new(GenericArray::from_slice(kek.expose_secret()));
    let aad = who.key_aad(kek_id);
    let plain = zeroize::Zeroizing::new(
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::Unwrap(kek_id.to_owned()))?,
    );
    let arr: [u8; KEY_BYTES] = plain
        .as_slice()
        .try_into()
        .map_err(|_| CryptoError::Unwrap(kek_id.to_owned()))?;
    Ok(SecretBox::new(Box::new(arr)))
}

/// The content encryption of one new version: its data key and nonce prefix, and the
/// chunk encryptor (feed it with [`ContentEncryptor::push`], end with
/// [`ContentEncryptor::finish`]).
pub struct ContentEncryptor {
    data_key: SecretKey,
    nonce_prefix: [u8; NONCE_PREFIX_BYTES],
    aad: Vec<u8>,
    stream: Option<EncryptorBE32<Aes256Gcm>>,
    pending: Vec<u8>,
}

impl ContentEncryptor {
    /// A fresh data key and nonce prefix for `who`.
    pub fn new(who: &ObjectIdentity) -> Self {
        let data_key = random_key();
        let nonce_prefix: [u8; NONCE_PREFIX_BYTES] = rand::random();
        let cipher = Aes256Gcm::new(GenericArray::from_slice(data_key.expose_secret()));
        let stream = EncryptorBE32::from_aead(cipher, GenericArray::from_slice(&nonce_prefix));
        Self {
            data_key,
            nonce_prefix,
            aad: who.content_aad(),
            stream: Some(stream),
            pending: Vec::with_capacity(CHUNK_BYTES * 2),
        }
    }

    pub fn data_key(&self) -> &SecretKey {
        &self.data_key
    }

    pub fn nonce_prefix(&self) -> [u8; NONCE_PREFIX_BYTES] {
        self.nonce_prefix
    }

    /// Takes plaintext; returns the ciphertext of every chunk that is complete. The
    /// last full chunk is held back until more data or [`Self::finish`] says whether it
    /// is the last one.
    pub fn push(&mut self, plain: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.pending.extend_from_slice(plain);
        let mut out = Vec::new();
        while self.pending.len() > CHUNK_BYTES {
            let stream = self
                .stream
                .as_mut()
                .ok_or(CryptoError::Malformed("stream finished"))?;
            let ct = stream
                .encrypt_next(Payload {
                    msg: &self.pending[..CHUNK_BYTES],
                    aad: &self.aad,
                })
                .map_err(|_| CryptoError::Malformed("too many chunks"))?;
            out.extend_from_slice(&ct);
            self.pending.drain(..CHUNK_BYTES);
        }
        Ok(out)
    }

    /// Encrypts what is left as the last chunk.
    pub fn finish(&mut self) -> Result<Vec<u8>, CryptoError> {
        let stream = self
            .stream
            .take()
            .ok_or(CryptoError::Malformed("stream finished"))?;
        let ct = stream
            .encrypt_last(Payload {
                msg: &self.pending,
                aad: &self.aad,
            })
            .map_err(|_| CryptoError::Malformed("last chunk"))?;
        zeroize::Zeroize::zeroize(&mut self.pending);
        Ok(ct)
    }
}

/// Chunks of a `size`-byte plaintext: at least one (an empty content is one empty
/// last chunk).
pub fn chunk_count(size: u64) -> u64 {
    size.div_ceil(CHUNK_BYTES as u64).max(1)
}

/// Bytes of the stored object for a `size`-byte plaintext.
pub fn ciphertext_len(size: u64) -> u64 {
    size + chunk_count(size) * TAG_BYTES as u64
}

/// Decrypts a stored object chunk by chunk. Each chunk is authenticated before any of
/// it is returned; the last one carries the STREAM's last-chunk flag, so a cut-off
/// object fails too.
pub struct ContentDecryptor {
    aad: Vec<u8>,
    stream: Option<DecryptorBE32<Aes256Gcm>>,
    remaining_chunks: u64,
    last_chunk_len: usize,
    pending: Vec<u8>,
}

impl ContentDecryptor {
    /// For the object of `who` holding `size` plaintext bytes under `data_key`.
    pub fn new(
        data_key: &SecretKey,
        nonce_prefix: &[u8],
        who: &ObjectIdentity,
        size: u64,
    ) -> Result<Self, CryptoError> {
        if nonce_prefix.len() != NONCE_PREFIX_BYTES {
            return Err(CryptoError::Malformed("nonce prefix"));
        }
        let cipher = Aes256Gcm::new(GenericArray::from_slice(data_key.expose_secret()));
        let chunks = chunk_count(size);
        let last = size - (chunks - 1) * CHUNK_BYTES as u64;
        Ok(Self {
            aad: who.content_aad(),
            stream: Some(DecryptorBE32::from_aead(
                cipher,
                GenericArray::from_slice(nonce_prefix),
            )),
            remaining_chunks: chunks,
            last_chunk_len: usize::try_from(last).map_err(|_| CryptoError::Integrity)?,
            pending: Vec::with_capacity(CHUNK_BYTES + TAG_BYTES),
        })
    }

    /// Takes ciphertext; returns the plaintext of every chunk now complete.
    pub fn push(&mut self, ct: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.pending.extend_from_slice(ct);
        let mut out = Vec::new();
        loop {
            if self.remaining_chunks == 0 {
                if self.pending.is_empty() {
                    return Ok(out);
                }
                return Err(CryptoError::Integrity);
            }
            let want = if self.remaining_chunks == 1 {
                self.last_chunk_len + TAG_BYTES
            } else {
                CHUNK_BYTES + TAG_BYTES
            };
            if self.pending.len() < want {
                return Ok(out);
            }
            let chunk: Vec<u8> = self.pending.drain(..want).collect();
            let payload = Payload {
                msg: &chunk,
                aad: &self.aad,
            };
            let plain = if self.remaining_chunks == 1 {
                self.stream
                    .take()
                    .ok_or(CryptoError::Integrity)?
                    .decrypt_last(payload)
            } else {
                self.stream
                    .as_mut()
                    .ok_or(CryptoError::Integrity)?
                    .decrypt_next(payload)
            }
            .map_err(|_| CryptoError::Integrity)?;
            self.remaining_chunks -= 1;
            out.extend_from_slice(&plain);
        }
    }

    /// Checks that the object ended exactly after its last chunk.
    pub fn finish(&self) -> Result<(), CryptoError> {
        if self.remaining_chunks == 0 && self.pending.is_empty() {
            Ok(())
        } else {
            Err(CryptoError::Integrity)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn who(v: i64) -> ObjectIdentity {
        ObjectIdentity {
            ticket_id: "TCK-2026-000001".into(),
            attachment_id: "a1".into(),
            version: v,
        }
    }

    fn roundtrip(size: usize, piece: usize) -> (Vec<u8>, Vec<u8>, SecretKey, [u8; 7]) {
        let plain: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        let mut enc = ContentEncryptor::new(&who(1));
        let mut ct = Vec::new();
        for p in plain.chunks(piece.max(1)) {
            ct.extend(enc.push(p).unwrap());
        }
        ct.extend(enc.finish().unwrap());
        assert_eq!(ct.len() as u64, ciphertext_len(size as u64));
        let key = SecretBox::new(Box::new(*enc.data_key().expose_secret()));
        (plain, ct, key, enc.nonce_prefix())
    }

    #[test]
    fn content_roundtrips_at_chunk_edges() {
        for size in [
            0,
            1,
            CHUNK_BYTES - 1,
            CHUNK_BYTES,
            CHUNK_BYTES + 1,
            3 * CHUNK_BYTES,
        ] {
            for piece in [1000, CHUNK_BYTES, 7 * CHUNK_BYTES] {
                let (plain, ct, key, prefix) = roundtrip(size, piece);
                let mut dec = ContentDecryptor::new(&key, &prefix, &who(1), size as u64).unwrap();
                let mut got = Vec::new();
                for p in ct.chunks(777) {
                    got.extend(dec.push(p).unwrap());
                }
                dec.finish().unwrap();
                assert_eq!(got, plain, "size {size} piece {piece}");
            }
        }
    }

    #[test]
    fn flipped_truncated_or_moved_content_fails() {
        let size = 2 * CHUNK_BYTES + 10;
        let (_, ct, key, prefix) = roundtrip(size, 4096);
        let open = |ct: &[u8], who: &ObjectIdentity| -> Result<Vec<u8>, CryptoError> {
            let mut dec = ContentDecryptor::new(&key, &prefix, who, size as u64)?;
            let out = dec.push(ct)?;
            dec.finish()?;
            Ok(out)
        };
        for i in [0, CHUNK_BYTES + 20, ct.len() - 1] {
            let mut bad = ct.clone();
            bad[i] ^= 1;
            assert!(matches!(open(&bad, &who(1)), Err(CryptoError::Integrity)));
        }
        assert!(open(&ct[..ct.len() - 1], &who(1)).is_err());
        assert!(open(&ct, &who(2)).is_err());
        assert!(open(&ct, &who(1)).is_ok());
    }

    #[test]
    fn wrapped_keys_are_bound_to_object_and_kek() {
        let kek = random_key();
        let dk = random_key();
        let w = wrap(&kek, "kek-a", &dk, &who(1)).unwrap();
        let back = unwrap(&kek, "kek-a", &w, &who(1)).unwrap();
        assert_eq!(back.expose_secret(), dk.expose_secret());
        assert!(unwrap(&kek, "kek-a", &w, &who(2)).is_err());
        assert!(unwrap(&kek, "kek-b", &w, &who(1)).is_err());
        assert!(unwrap(&random_key(), "kek-a", &w, &who(1)).is_err());
    }

    #[test]
    fn keks_are_created_0600_and_group_readable_files_refused() {
        let dir = tempfile::tempdir().unwrap();
        let keks = Keks::open(&dir.path().join("kek")).unwrap();
        let id = keks.current_id().unwrap();
        let path = dir.path().join("kek").join(format!("{id}.key"));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let second = keks.create().unwrap();
        let p2 = dir.path().join("kek").join(format!("{second}.key"));
        std::fs::set_permissions(&p2, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            keks.key(&second),
            Err(CryptoError::KekFile { .. })
        ));
        assert!(
            keks.remove(&id).is_err(),
            "the current key is never removed"
        );
    }
}
