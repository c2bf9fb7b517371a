//! Identity at the boundary between proxy and backend. The backend believes who the caller is only
//! from the proxy: the proxy sends the verified identity in
//! `X-Portcullis-Identity` (base64url JSON) and binds it to the request with
//! `X-Portcullis-Signature`, an HMAC-SHA256 over the method, the path and
//! query, and the identity, keyed by a secret that only proxy and backend
//! read (a 0600 file in the state folder). A direct caller cannot forge it;
//! a captured pair is useless for another request and expires after
//! [`MAX_SKEW_SECONDS`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use thiserror::Error;

pub use crate::headers::{IDENTITY_HEADER, SIGNATURE_HEADER};

/// The subject the proxy signs its own calls as (revocation feed, audit ingest). A
/// subject starting with `@` never comes from a token: the backend treats it as a
/// service, never as an employee.
pub const SERVICE_SUBJECT: &str = "@proxy";
/// How far `iat` may be from the backend's clock.
pub const MAX_SKEW_SECONDS: i64 = 60;
const KEY_BYTES: usize = 32;

/// The verified identity the proxy forwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// The employee id.
    pub sub: String,
    pub session_id: Option<String>,
    /// `password`, `oidc`, `backup_code`, …
    pub auth_method: Option<String>,
    /// The proxy's policy decision for this request.
    pub decision_id: Option<String>,
    /// Unix seconds when the proxy signed it.
    pub iat: i64,
    /// The `iss` of the token the subject was verified from; `None` only for the
    /// proxy's own calls ([`SERVICE_SUBJECT`]), so no token can name the service.
    #[serde(default)]
    pub issuer: Option<String>,
}

impl Identity {
    /// Whether this is the proxy itself calling (its service subject, from no token).
    #[must_use]
    pub fn is_service(&self) -> bool {
        self.sub == SERVICE_SUBJECT && self.issuer.is_none()
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("no identity headers")]
    Missing,
    #[error("malformed identity")]
    Malformed,
    #[error("bad signature")]
    BadSignature,
    #[error("identity too old or from the future")]
    Stale,
}

#[derive(Debug, Error)]
pub enum KeyError {
    #[error("identity key {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("identity key {0} must hold exactly 32 bytes")]
    Length(String),
}

/// Reads a 32-byte secret key file, creating it (mode 0600, random) if it is
/// missing. Used for the proxy↔backend HMAC key and the backend's other
/// local keys.
pub fn load_or_create_key_file(path: &Path) -> Result<[u8; KEY_BYTES], KeyError> {
    let io = |e: std::io::Error| KeyError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    match std::fs::read(path) {
        Ok(bytes) => {
            let arr: [u8; KEY_BYTES] = bytes
                .try_into()
                .map_err(|_| KeyError::Length(path.display().to_string()))?;
            Ok(arr)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            let key: [u8; KEY_BYTES] = rand::random();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io)?;
            f.write_all(&key).map_err(io)?;
            f.sync_all().map_err(io)?;
            Ok(key)
        }
        Err(e) => Err(io(e)),
    }
}

/// The file a rotation stages the next identity key in, beside `file`: while it exists,
/// verifiers accept it; nothing signs with it yet.
pub fn staged_key_file(file: &Path) -> PathBuf {
    sibling(file, "next")
}

/// The file a rotation keeps the old identity key in, beside `file`: while it exists,
/// verifiers still accept it (a process that has not re-read the files yet signs with it).
pub fn previous_key_file(file: &Path) -> PathBuf {
    sibling(file, "previous")
}

/// Rotation, step 1: a new random key in the staged file.
pub fn stage_key(file: &Path) -> Result<(), KeyError> {
    let key: [u8; KEY_BYTES] = rand::random();
    replace_key_file(&staged_key_file(file), &key)
}

/// Rotation, step 2: the current key moves to the previous file (still accepted), the
/// staged one becomes current (signing).
pub fn activate_staged_key(file: &Path) -> Result<(), KeyError> {
    let current = read_key_file(file)?;
    replace_key_file(&previous_key_file(file), &current)?;
    let io = key_io(file);
    std::fs::rename(staged_key_file(file), file).map_err(&io)?;
    sync_parent(file).map_err(io)
}

/// Rotation, step 3: the previous key is deleted, so it is refused from each process's
/// next re-read. `Ok(false)` when there was none.
pub fn retire_previous_key(file: &Path) -> Result<bool, KeyError> {
    let previous = previous_key_file(file);
    let io = key_io(&previous);
    match std::fs::remove_file(&previous) {
        Ok(()) => sync_parent(&previous).map(|()| true).map_err(io),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io(e)),
    }
}

/// Writes `key` to `path` (mode 0600) through a temporary file and a rename, so a
/// process re-reading it sees the old key or the new one, never part of one.
fn replace_key_file(path: &Path, key: &[u8; KEY_BYTES]) -> Result<(), KeyError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = key_io(path);
    let tmp = sibling(path, "tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(&io)?;
    f.write_all(key).map_err(&io)?;
    f.sync_all().map_err(&io)?;
    std::fs::rename(&tmp, path).map_err(&io)?;
    sync_parent(path).map_err(io)
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

fn key_io(path: &Path) -> impl Fn(std::io::Error) -> KeyError + '_ {
    move |e| KeyError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

fn sibling(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

/// The keys in force: the one that signs, and the others verification accepts.
#[derive(PartialEq, Eq)]
struct Keys {
    signing: Key,
    also: Vec<Key>,
}

impl Keys {
    fn new(signing: [u8; KEY_BYTES], also: Vec<[u8; KEY_BYTES]>) -> Self {
        Self {
            signing: Key::new(signing),
            also: also.into_iter().map(Key::new).collect(),
        }
    }
}

/// One key, with its HMAC state after the key block: HMAC hashes the key, padded, into
/// both its inner and its outer hash before any message byte. Every sign and verify
/// starts from a copy of that state, two SHA-256 blocks fewer per request.
struct Key {
    bytes: [u8; KEY_BYTES],
    keyed: Hmac<Sha256>,
}

impl Key {
    fn new(bytes: [u8; KEY_BYTES]) -> Self {
        // HMAC accepts keys of any length; 32 bytes cannot fail.
        let keyed =
            <Hmac<Sha256> as Mac>::new_from_slice(&bytes).unwrap_or_else(|_| unreachable_key());
        Self { bytes, keyed }
    }
}

/// Compares the key bytes (a reload's "did anything change"); the states follow from them.
impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for Key {}

/// The shared HMAC key of proxy and backend. Loaded from a file, it is the key of that
/// file plus, during a rotation (`portcullis keys rotate --kind identity`), the staged
/// and the previous keys beside it, which verification also accepts. Clones share the
/// keys: [`IdentityKey::reload`] changes them for every holder, without a restart.
#[derive(Clone)]
pub struct IdentityKey {
    // Read on every request (sign, verify), replaced only by a rotation: a lock-free
    // load, no lock shared by the worker threads.
    keys: Arc<ArcSwap<Keys>>,
    file: Option<PathBuf>,
}

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentityKey(..)")
    }
}

impl IdentityKey {
    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> Self {
        Self {
            keys: Arc::new(ArcSwap::from_pointee(Keys::new(bytes, Vec::new()))),
            file: None,
        }
    }

    pub fn random() -> Self {
        Self::from_bytes(rand::random())
    }

    /// Reads the key file, creating it (mode 0600, random) if it is missing, and the
    /// staged and previous keys beside it if a rotation left them there.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        let signing = load_or_create_key_file(path)?;
        let also = rotation_keys(path)?;
        Ok(Self {
            keys: Arc::new(ArcSwap::from_pointee(Keys::new(signing, also))),
            file: Some(path.to_owned()),
        })
    }

    /// Re-reads the files this key was loaded from. `Ok(true)` when the keys changed
    /// (every clone sees the new ones), `Ok(false)` when they did not; on an error the
    /// keys in force stay.
    pub fn reload(&self) -> Result<bool, KeyError> {
        let Some(path) = &self.file else {
            return Ok(false);
        };
        let fresh = Keys::new(read_key_file(path)?, rotation_keys(path)?);
        if **self.keys.load() == fresh {
            return Ok(false);
        }
        self.keys.store(Arc::new(fresh));
        Ok(true)
    }

    /// How many keys verification accepts now (1 outside a rotation).
    pub fn accepted(&self) -> usize {
        1 + self.read().also.len()
    }

    fn read(&self) -> arc_swap::Guard<Arc<Keys>> {
        self.keys.load()
    }

    /// The two header values for `identity` on this request.
    pub fn sign(
        &self,
        method: &str,
        path_and_query: &str,
        identity: &Identity,
    ) -> (String, String) {
        let encoded = URL_SAFE_NO_PAD.encode(serde_json::to_vec(identity).unwrap_or_default());
        let tag = mac(&self.read().signing, method, path_and_query, &encoded)
            .finalize()
            .into_bytes();
        // `v1=` and the tag in hex, written in place (`hex::encode` goes a character
        // at a time, and `format!` would copy its result once more).
        let mut hex = [0u8; 64];
        // 32 bytes always fill exactly the 64 digits: this cannot fail.
        let _ = hex::encode_to_slice(tag, &mut hex);
        let mut signature = String::with_capacity(3 + hex.len());
        signature.push_str("v1=");
        signature.extend(hex.iter().map(|&digit| char::from(digit)));
        (encoded, signature)
    }

    /// Verifies the headers of a request (constant-time comparison) against every key
    /// accepted now.
    pub fn verify(
        &self,
        method: &str,
        path_and_query: &str,
        identity: Option<&str>,
        signature: Option<&str>,
        now_unix: i64,
    ) -> Result<Identity, IdentityError> {
        let (Some(encoded), Some(signature)) = (identity, signature) else {
            return Err(IdentityError::Missing);
        };
        let tag = signature
            .strip_prefix("v1=")
            .and_then(|h| hex::decode(h).ok())
            .ok_or(IdentityError::Malformed)?;
        let signed_by_one = {
            let keys = self.read();
            std::iter::once(&keys.signing).chain(&keys.also).any(|k| {
                mac(k, method, path_and_query, encoded)
                    .verify_slice(&tag)
                    .is_ok()
            })
        };
        if !signed_by_one {
            return Err(IdentityError::BadSignature);
        }
        let json = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| IdentityError::Malformed)?;
        let identity: Identity =
            serde_json::from_slice(&json).map_err(|_| IdentityError::Malformed)?;
        if (now_unix - identity.iat).abs() > MAX_SKEW_SECONDS {
            return Err(IdentityError::Stale);
        }
        Ok(identity)
    }
}

/// The reload target of a key loaded from a file (`None` for one made in memory): the
/// key file and its rotation siblings are watched, and polled for secrets swapped by a
/// symlink; a change is taken at once, a broken file is refused and the keys in force
/// stay (counted in `portcullis_reloads_total{kind="identity-key"}`).
pub fn reload_target(key: &IdentityKey) -> Option<portcullis_reload::Target> {
    let file = key.file.clone()?;
    let key = key.clone();
    let target = portcullis_reload::Target::new("identity-key", move |_| match key.reload() {
        Ok(false) => Ok(portcullis_reload::Outcome::Unchanged),
        Ok(true) => Ok(portcullis_reload::Outcome::Reloaded {
            version: format!("{} key(s) accepted", key.accepted()),
        }),
        Err(e) => Err(portcullis_reload::Rejected(e.to_string())),
    });
    Some(
        target
            .watch_files(&[
                file.clone(),
                staged_key_file(&file),
                previous_key_file(&file),
            ])
            .polled(),
    )
}

fn mac(key: &Key, method: &str, path_and_query: &str, encoded: &str) -> Hmac<Sha256> {
    let mut mac = key.keyed.clone();
    mac.update(b"portcullis-identity-v1\n");
    mac.update(method.as_bytes());
    mac.update(b"\n");
    mac.update(path_and_query.as_bytes());
    mac.update(b"\n");
    mac.update(encoded.as_bytes());
    mac
}

/// A 32-byte key file that must exist.
fn read_key_file(path: &Path) -> Result<[u8; KEY_BYTES], KeyError> {
    std::fs::read(path)
        .map_err(|e| KeyError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?
        .try_into()
        .map_err(|_| KeyError::Length(path.display().to_string()))
}

/// The staged and previous keys beside `path`, those that exist.
fn rotation_keys(path: &Path) -> Result<Vec<[u8; KEY_BYTES]>, KeyError> {
    [staged_key_file(path), previous_key_file(path)]
        .iter()
        .filter(|f| f.exists())
        .map(|f| read_key_file(f))
        .collect()
}

#[allow(
    clippy::panic,
    reason = "HMAC-SHA256 takes keys of any length; this cannot happen"
)]
fn unreachable_key() -> Hmac<Sha256> {
    panic!("HMAC rejected a 32-byte key")
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_an_identity_from_no_token_is_the_service() {
        let mut service = id(0);
        service.sub = SERVICE_SUBJECT.to_owned();
        assert!(service.is_service());
        service.issuer = Some("portcullis".to_owned());
        assert!(
            !service.is_service(),
            "a token's subject is never the service"
        );
        assert!(!id(0).is_service());
    }

    use super::*;

    fn id(iat: i64) -> Identity {
        Identity {
            sub: "7".into(),
            session_id: Some("s".into()),
            auth_method: Some("password".into()),
            decision_id: None,
            iat,
            issuer: None,
        }
    }

    #[test]
    fn signed_identity_verifies_only_for_its_request() {
        let k = IdentityKey::random();
        let (i, s) = k.sign("GET", "/api/tickets?x=1", &id(100));
        assert_eq!(
            k.verify("GET", "/api/tickets?x=1", Some(&i), Some(&s), 110)
                .unwrap(),
            id(100)
        );
        assert_eq!(
            k.verify("POST", "/api/tickets?x=1", Some(&i), Some(&s), 110),
            Err(IdentityError::BadSignature)
        );
        assert_eq!(
            k.verify("GET", "/api/tickets", Some(&i), Some(&s), 110),
            Err(IdentityError::BadSignature)
        );
        assert_eq!(
            k.verify("GET", "/api/tickets?x=1", Some(&i), Some(&s), 1000),
            Err(IdentityError::Stale)
        );
        let other = IdentityKey::random();
        assert_eq!(
            other.verify("GET", "/api/tickets?x=1", Some(&i), Some(&s), 110),
            Err(IdentityError::BadSignature)
        );
        assert_eq!(
            k.verify("GET", "/", None, Some(&s), 110),
            Err(IdentityError::Missing)
        );
        assert_eq!(
            k.verify("GET", "/api/tickets?x=1", Some(&i), Some("v1=zz"), 110),
            Err(IdentityError::Malformed)
        );
    }

    /// The tag is plain HMAC-SHA256 under the key over the documented message, whatever
    /// state the key set keeps: proxies and backends of other builds must agree on it.
    #[test]
    fn the_tag_is_hmac_sha256_over_method_path_and_identity() {
        let key = [7u8; KEY_BYTES];
        let signer = IdentityKey::from_bytes(key);
        let sign = || signer.sign("PATCH", "/api/tickets/9?x=%20", &id(5));
        let (encoded, signature) = sign();
        let mut expected = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
        expected.update(
            format!("portcullis-identity-v1\nPATCH\n/api/tickets/9?x=%20\n{encoded}").as_bytes(),
        );
        let expected = hex::encode(expected.finalize().into_bytes());
        assert_eq!(signature, format!("v1={expected}"));
        // Each signature starts from the keyed state, not from the previous message.
        let _ = signer.sign("GET", "/other", &id(6));
        assert_eq!(sign().1, signature);
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/identity.key");
        let a = IdentityKey::load_or_create(&path).unwrap();
        let b = IdentityKey::load_or_create(&path).unwrap();
        assert!(**a.read() == **b.read());
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn a_rotation_is_accepted_at_every_step_and_the_old_key_ends_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("identity.key");
        let proxy = IdentityKey::load_or_create(&file).unwrap();
        let backend = IdentityKey::load_or_create(&file).unwrap();
        let signed = |k: &IdentityKey| k.sign("GET", "/api", &id(100));
        let accepts = |k: &IdentityKey, (i, s): &(String, String)| {
            k.verify("GET", "/api", Some(i), Some(s), 100).is_ok()
        };
        let old = signed(&proxy);
        // Staged: the backend accepts the next key before anyone signs with it.
        let next: [u8; KEY_BYTES] = rand::random();
        std::fs::write(staged_key_file(&file), next).unwrap();
        assert!(backend.reload().unwrap() && !backend.reload().unwrap());
        assert_eq!(backend.accepted(), 2);
        assert!(accepts(
            &backend,
            &IdentityKey::from_bytes(next).sign("GET", "/api", &id(100))
        ));
        assert!(accepts(&backend, &old));
        // Activated: the old key moves aside, the next one signs; a proxy that has not
        // re-read yet still gets through, one that has signs with the new key.
        let current = std::fs::read(&file).unwrap();
        std::fs::write(previous_key_file(&file), &current).unwrap();
        std::fs::rename(staged_key_file(&file), &file).unwrap();
        assert!(backend.reload().unwrap());
        assert!(
            accepts(&backend, &signed(&proxy)),
            "a proxy not yet reloaded"
        );
        assert!(proxy.reload().unwrap());
        let new = signed(&proxy);
        assert_ne!(new, old);
        assert!(accepts(&backend, &new));
        // Retired: only the new key is accepted.
        std::fs::remove_file(previous_key_file(&file)).unwrap();
        assert!(backend.reload().unwrap());
        assert_eq!(backend.accepted(), 1);
        assert!(!accepts(&backend, &old));
        assert!(accepts(&backend, &new));
        // A broken file keeps the keys in force.
        std::fs::write(&file, b"short").unwrap();
        assert!(backend.reload().is_err());
        assert!(accepts(&backend, &new));
    }
}
