//! Identity at the boundary between proxy and backend. The backend believes who the caller is only
//! from the proxy: the proxy sends the verified identity in
//! `X-Portcullis-Identity` (base64url JSON) and binds it to the request with
//! `X-Portcullis-Signature`, an HMAC-SHA256 over the method, the path and
//! query, and the identity, keyed by a secret that only proxy and backend
//! read (a 0600 file in the state folder). A direct caller cannot forge it;
//! a captured pair is useless for another request and expires after
//! [`MAX_SKEW_SECONDS`].

use std::path::Path;

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

/// The shared HMAC key.
#[derive(Clone)]
pub struct IdentityKey([u8; KEY_BYTES]);

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentityKey(..)")
    }
}

impl IdentityKey {
    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> Self {
        Self(bytes)
    }

    pub fn random() -> Self {
        Self(rand::random())
    }

    /// Reads the key file, creating it (mode 0600, random) if it is missing.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        load_or_create_key_file(path).map(Self)
    }

    fn mac(&self, method: &str, path_and_query: &str, encoded: &str) -> Hmac<Sha256> {
        // HMAC accepts keys of any length; 32 bytes cannot fail.
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable_key());
        mac.update(b"portcullis-identity-v1\n");
        mac.update(method.as_bytes());
        mac.update(b"\n");
        mac.update(path_and_query.as_bytes());
        mac.update(b"\n");
        mac.update(encoded.as_bytes());
        mac
    }

    /// The two header values for `identity` on this request.
    pub fn sign(
        &self,
        method: &str,
        path_and_query: &str,
        identity: &Identity,
    ) -> (String, String) {
        let encoded = URL_SAFE_NO_PAD.encode(serde_json::to_vec(identity).unwrap_or_default());
        let tag = self
            .mac(method, path_and_query, &encoded)
            .finalize()
            .into_bytes();
        (encoded, format!("v1={}", hex::encode(tag)))
    }

    /// Verifies the headers of a request (constant-time comparison).
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
        self.mac(method, path_and_query, encoded)
            .verify_slice(&tag)
            .map_err(|_| IdentityError::BadSignature)?;
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

    #[test]
    fn key_file_is_created_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/identity.key");
        let a = IdentityKey::load_or_create(&path).unwrap();
        let b = IdentityKey::load_or_create(&path).unwrap();
        assert_eq!(a.0, b.0);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
