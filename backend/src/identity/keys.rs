//! The token signing keyring: Ed25519 keys in `<state_dir>/keys/jwt/`, each
//! private key in its own 0600 file, their states in `keyring.json`
//! (replaced atomically). Rotation moves keys through
//! `next → current → previous → retired`:
//!
//! * `portcullis keys rotate` adds a `next` key, published in the JWKS at
//!   once (so verifiers learn it) but not yet signing;
//! * after the overlap it becomes `current` (signing) and the old current
//!   key becomes `previous`, still published so its tokens keep verifying;
//! * once the longest token lifetime has passed it is `retired`: no longer
//!   published, its tokens refused.
//!
//! The time-based steps are taken by [`Keyring::advance`], which the backend
//! calls periodically; each step is returned so the caller can audit it.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{EncodingKey, Header};
use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum KeyringError {
    #[error("keyring {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("keyring is malformed: {0}")]
    Malformed(String),
    #[error("cannot generate a key: {0}")]
    Generate(String),
    #[error("a rotation is already in progress (key {0} is waiting to become current)")]
    RotationPending(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    Next,
    Current,
    Previous,
    Retired,
}

/// One key's record in `keyring.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    pub kid: String,
    pub state: KeyState,
    /// Base64url Ed25519 public key (the JWK `x`).
    pub public_x: String,
    pub created_at: i64,
    /// `next`: when it starts signing. `previous`: when it retires.
    pub transition_at: Option<i64>,
}

/// A rotation step taken by [`Keyring::advance`] or [`Keyring::rotate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyEvent {
    Added { kid: String },
    Activated { kid: String },
    Retired { kid: String },
}

/// The audit event of a rotation step (`keys.rotate`, category `system`): `step` is
/// `added` (published, not yet signing), `activated` (now signing) or `retired`.
pub fn rotation_event(step: &KeyEvent) -> portcullis_audit::AuditEvent {
    let (name, kid) = match step {
        KeyEvent::Added { kid } => ("added", kid),
        KeyEvent::Activated { kid } => ("activated", kid),
        KeyEvent::Retired { kid } => ("retired", kid),
    };
    portcullis_audit::AuditEvent::new(
        portcullis_audit::Category::System,
        "keys.rotate",
        portcullis_audit::Outcome::Success,
    )
    .level(portcullis_audit::Level::Warning)
    .detail("step", name)
    .detail("kid", kid.clone())
}

/// The keyring on disk plus the signing key in memory.
pub struct Keyring {
    dir: PathBuf,
    records: Vec<KeyRecord>,
    signing: Option<(String, EncodingKey)>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("records", &self.records)
            .finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyringError + '_ {
    move |e| KeyringError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), KeyringError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(data).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

impl Keyring {
    fn manifest(&self) -> PathBuf {
        self.dir.join("keyring.json")
    }

    /// Opens the keyring, creating it with one current key if empty.
    pub fn open(dir: &Path, now: i64) -> Result<Self, KeyringError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut ring = Self {
            dir: dir.to_owned(),
            records: Vec::new(),
            signing: None,
        };
        let manifest = ring.manifest();
        match std::fs::read(&manifest) {
            Ok(bytes) => {
                ring.records = serde_json::from_slice(&bytes)
                    .map_err(|e| KeyringError::Malformed(e.to_string()))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&manifest)(e)),
        }
        if !ring.records.iter().any(|r| r.state == KeyState::Current) {
            let rec = ring.generate(KeyState::Current, now, None)?;
            ring.records.push(rec);
            ring.save()?;
        }
        ring.load_signing()?;
        Ok(ring)
    }

    fn generate(
        &self,
        state: KeyState,
        now: i64,
        transition_at: Option<i64>,
    ) -> Result<KeyRecord, KeyringError> {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .map_err(|e| KeyringError::Generate(e.to_string()))?;
        let public = pair.public_key_raw().to_vec();
        // kid: a short, path-safe digest of the public key.
        let kid = hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(&public)[..8]);
        write_private(&self.dir.join(format!("{kid}.pk8")), &pair.serialize_der())?;
        Ok(KeyRecord {
            kid,
            state,
            public_x: URL_SAFE_NO_PAD.encode(public),
            created_at: now,
            transition_at,
        })
    }

    fn save(&self) -> Result<(), KeyringError> {
        let tmp = self.dir.join("keyring.json.tmp");
        let data = serde_json::to_vec_pretty(&self.records)
            .map_err(|e| KeyringError::Malformed(e.to_string()))?;
        let _ = std::fs::remove_file(&tmp);
        write_private(&tmp, &data)?;
        std::fs::rename(&tmp, self.manifest()).map_err(io(&tmp))
    }

    fn load_signing(&mut self) -> Result<(), KeyringError> {
        let current = self
            .records
            .iter()
            .find(|r| r.state == KeyState::Current)
            .ok_or_else(|| KeyringError::Malformed("no current key".into()))?;
        let path = self.dir.join(format!("{}.pk8", current.kid));
        let der = std::fs::read(&path).map_err(io(&path))?;
        self.signing = Some((current.kid.clone(), EncodingKey::from_ed_der(&der)));
        Ok(())
    }

    /// Re-reads `keyring.json` (another process may have rotated).
    pub fn reload(&mut self) -> Result<(), KeyringError> {
        let manifest = self.manifest();
        let bytes = std::fs::read(&manifest).map_err(io(&manifest))?;
        self.records =
            serde_json::from_slice(&bytes).map_err(|e| KeyringError::Malformed(e.to_string()))?;
        self.load_signing()
    }

    /// Starts a rotation: adds a `next` key that starts signing `overlap`
    /// seconds from now.
    pub fn rotate(&mut self, now: i64, overlap_seconds: i64) -> Result<KeyEvent, KeyringError> {
        if let Some(next) = self.records.iter().find(|r| r.state == KeyState::Next) {
            return Err(KeyringError::RotationPending(next.kid.clone()));
        }
        let rec = self.generate(KeyState::Next, now, Some(now + overlap_seconds))?;
        let kid = rec.kid.clone();
        self.records.push(rec);
        self.save()?;
        Ok(KeyEvent::Added { kid })
    }

    /// Takes the steps whose time has come; `retire_after` is how long a
    /// previous key stays published (at least the longest token lifetime).
    pub fn advance(
        &mut self,
        now: i64,
        retire_after_seconds: i64,
    ) -> Result<Vec<KeyEvent>, KeyringError> {
        let mut events = Vec::new();
        let activate = self
            .records
            .iter()
            .position(|r| r.state == KeyState::Next && r.transition_at.is_some_and(|t| t <= now));
        if let Some(i) = activate {
            for r in &mut self.records {
                if r.state == KeyState::Current {
                    r.state = KeyState::Previous;
                    r.transition_at = Some(now + retire_after_seconds);
                }
            }
            self.records[i].state = KeyState::Current;
            self.records[i].transition_at = None;
            events.push(KeyEvent::Activated {
                kid: self.records[i].kid.clone(),
            });
        }
        for r in &mut self.records {
            if r.state == KeyState::Previous && r.transition_at.is_some_and(|t| t <= now) {
                r.state = KeyState::Retired;
                events.push(KeyEvent::Retired { kid: r.kid.clone() });
                // The private key of a retired key is no longer needed.
                let _ = std::fs::remove_file(self.dir.join(format!("{}.pk8", r.kid)));
            }
        }
        if !events.is_empty() {
            self.save()?;
            self.load_signing()?;
        }
        Ok(events)
    }

    pub fn records(&self) -> &[KeyRecord] {
        &self.records
    }

    /// The JWKS: every key that is next, current or previous.
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<_> = self
            .records
            .iter()
            .filter(|r| r.state != KeyState::Retired)
            .map(|r| {
                serde_json::json!({
                    "kty": "OKP", "crv": "Ed25519", "x": r.public_x,
                    "kid": r.kid, "alg": "EdDSA", "use": "sig",
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }

    /// Signs claims with the current key (`alg: EdDSA`, `kid`).
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, KeyringError> {
        let (kid, key) = self
            .signing
            .as_ref()
            .ok_or_else(|| KeyringError::Malformed("no signing key".into()))?;
        let mut header = Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(kid.clone());
        jsonwebtoken::encode(&header, claims, key)
            .map_err(|e| KeyringError::Generate(e.to_string()))
    }

    /// Verifies a token this backend issued (used by logout and refresh).
    pub fn verify<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
    ) -> Option<T> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        if header.alg != jsonwebtoken::Algorithm::EdDSA {
            return None;
        }
        let kid = header.kid?;
        let rec = self
            .records
            .iter()
            .find(|r| r.kid == kid && r.state != KeyState::Retired)?;
        let key = jsonwebtoken::DecodingKey::from_ed_components(&rec.public_x).ok()?;
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
        v.set_issuer(&[issuer]);
        v.set_audience(&[audience]);
        v.leeway = 30;
        jsonwebtoken::decode::<T>(token, &key, &v)
            .ok()
            .map(|d| d.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct C {
        iss: String,
        aud: String,
        sub: String,
        exp: i64,
    }

    fn claims(now: i64) -> C {
        C {
            iss: "i".into(),
            aud: "a".into(),
            sub: "1".into(),
            exp: now + 60,
        }
    }

    #[test]
    fn rotation_overlaps_then_retires() {
        let dir = tempfile::tempdir().unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut ring = Keyring::open(dir.path(), now).unwrap();
        let old_token = ring.sign(&claims(now)).unwrap();
        assert_eq!(ring.jwks()["keys"].as_array().unwrap().len(), 1);

        let KeyEvent::Added { kid: new_kid } = ring.rotate(now, 10).unwrap() else {
            unreachable!()
        };
        assert!(ring.rotate(now, 10).is_err(), "one rotation at a time");
        assert_eq!(
            ring.jwks()["keys"].as_array().unwrap().len(),
            2,
            "next key published early"
        );
        assert!(ring.advance(now + 5, 100).unwrap().is_empty());

        let events = ring.advance(now + 10, 100).unwrap();
        assert_eq!(
            events,
            vec![KeyEvent::Activated {
                kid: new_kid.clone()
            }]
        );
        let new_token = ring.sign(&claims(now)).unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&new_token)
                .unwrap()
                .kid
                .unwrap(),
            new_kid
        );
        // During the overlap, both verify.
        assert!(ring.verify::<C>(&old_token, "i", "a").is_some());
        assert!(ring.verify::<C>(&new_token, "i", "a").is_some());

        let events = ring.advance(now + 110, 100).unwrap();
        assert!(matches!(events.as_slice(), [KeyEvent::Retired { .. }]));
        assert!(
            ring.verify::<C>(&old_token, "i", "a").is_none(),
            "retired key refused"
        );
        assert!(ring.verify::<C>(&new_token, "i", "a").is_some());
        assert_eq!(ring.jwks()["keys"].as_array().unwrap().len(), 1);

        // Another process sees the same state.
        let other = Keyring::open(dir.path(), now + 200).unwrap();
        assert!(other.verify::<C>(&new_token, "i", "a").is_some());
    }
}
