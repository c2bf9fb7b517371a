//! Password hashing: Argon2id with OWASP's parameters (19 MiB, t=2, p=1),
//! PHC strings with a per-hash salt, constant-time verification, and a
//! dummy hash so that an unknown username costs the same time as a wrong
//! password.
//!
//! Imported legacy hashes are never stored as they are: the legacy hash is
//! itself hashed with Argon2id ("wrapped") and only its public parameters
//! (scheme, bcrypt cost and salt) are kept beside it. At the next sign-in the
//! password is run through the legacy scheme, the result checked against the
//! wrapper, and the credential replaced by a plain Argon2id hash.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum PasswordError {
    #[error("hashing failed: {0}")]
    Hash(String),
    #[error("unsupported legacy password format `{0}`")]
    UnsupportedLegacy(String),
    #[error("malformed legacy hash")]
    MalformedLegacy,
}

/// A stored credential as read from the `credentials` table.
#[derive(Debug, Clone)]
pub struct StoredPassword {
    pub hash: String,
    pub legacy_scheme: Option<String>,
    pub legacy_params: Option<String>,
}

/// What a successful verification asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// Correct; nothing to do.
    Current,
    /// Correct; store a fresh Argon2id hash (legacy wrapper or old parameters).
    Upgrade,
}

/// A password as found in an import file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportedPassword {
    Plaintext(String),
    /// `$2a$`/`$2b$`/`$2y$` bcrypt string.
    Bcrypt(String),
    /// Unsalted SHA-256, hex.
    Sha256Hex(String),
}

pub struct Passwords {
    argon: Argon2<'static>,
    dummy: String,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passwords")
    }
}

/// OWASP Password Storage Cheat Sheet: Argon2id, m = 19 MiB, t = 2, p = 1.
fn owasp_params() -> Result<Params, PasswordError> {
    Params::new(19 * 1024, 2, 1, None).map_err(|e| PasswordError::Hash(e.to_string()))
}

impl Passwords {
    pub fn try_new() -> Result<Self, PasswordError> {
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, owasp_params()?);
        let salt = SaltString::generate(&mut OsRng);
        let dummy = argon
            .hash_password(b"portcullis-dummy-password", &salt)
            .map_err(|e| PasswordError::Hash(e.to_string()))?
            .to_string();
        Ok(Self { argon, dummy })
    }

    /// A new Argon2id PHC string with a fresh salt.
    pub fn hash(&self, password: &str) -> Result<String, PasswordError> {
        let salt = SaltString::generate(&mut OsRng);
        self.argon
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| PasswordError::Hash(e.to_string()))
    }

    fn argon_matches(&self, input: &[u8], phc: &str) -> bool {
        PasswordHash::new(phc)
            .is_ok_and(|parsed| self.argon.verify_password(input, &parsed).is_ok())
    }

    /// Spends the same work as a real verification; always false.
    pub fn verify_dummy(&self, password: &str) -> bool {
        let _ = self.argon_matches(password.as_bytes(), &self.dummy);
        false
    }

    /// [`Self::verify`], or [`Self::verify_dummy`] without a credential, padded
    /// so that every path costs the same while imported bcrypt credentials
    /// remain: those pay a bcrypt check on top of Argon2id, so without the
    /// padding an imported account that has not signed in since would answer
    /// measurably slower than an unknown or upgraded one. `legacy_bcrypt_cost`
    /// is the highest cost among them (`None` when there are none).
    pub fn verify_padded(
        &self,
        password: &str,
        stored: Option<&StoredPassword>,
        legacy_bcrypt_cost: Option<u32>,
    ) -> Option<Verified> {
        let pays_bcrypt = stored.is_some_and(|s| s.legacy_scheme.as_deref() == Some("bcrypt"));
        if let Some(cost) = legacy_bcrypt_cost.filter(|_| !pays_bcrypt) {
            // Same work as a real check; the result is not used.
            let _ = bcrypt::hash_with_salt(password, cost.clamp(4, 31), [0u8; 16]);
        }
        match stored {
            Some(s) => self.verify(password, s),
            None => {
                self.verify_dummy(password);
                None
            }
        }
    }

    /// Checks `password` against a stored credential.
    pub fn verify(&self, password: &str, stored: &StoredPassword) -> Option<Verified> {
        match stored.legacy_scheme.as_deref() {
            None => {
                if !self.argon_matches(password.as_bytes(), &stored.hash) {
                    return None;
                }
                // Parameters older than today's are upgraded at sign-in.
                let current = PasswordHash::new(&stored.hash).is_ok_and(|h| {
                    h.algorithm.as_str() == "argon2id"
                        && Params::try_from(&h)
                            .is_ok_and(|p| p.m_cost() >= 19 * 1024 && p.t_cost() >= 2)
                });
                Some(if current {
                    Verified::Current
                } else {
                    Verified::Upgrade
                })
            }
            Some("sha256") => {
                let legacy = hex::encode(Sha256::digest(password.as_bytes()));
                self.argon_matches(legacy.as_bytes(), &stored.hash)
                    .then_some(Verified::Upgrade)
            }
            Some("bcrypt") => {
                let legacy = bcrypt_with_setting(password, stored.legacy_params.as_deref()?)?;
                self.argon_matches(legacy.as_bytes(), &stored.hash)
                    .then_some(Verified::Upgrade)
            }
            Some(_) => {
                self.verify_dummy(password);
                None
            }
        }
    }

    /// Turns an imported password into what is stored: `(argon2id, scheme, params)`.
    pub fn import(&self, imported: &ImportedPassword) -> Result<StoredPassword, PasswordError> {
        Ok(match imported {
            ImportedPassword::Plaintext(p) => StoredPassword {
                hash: self.hash(p)?,
                legacy_scheme: None,
                legacy_params: None,
            },
            ImportedPassword::Sha256Hex(h) => {
                let h = h.to_ascii_lowercase();
                if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(PasswordError::MalformedLegacy);
                }
                StoredPassword {
                    hash: self.hash(&h)?,
                    legacy_scheme: Some("sha256".into()),
                    legacy_params: None,
                }
            }
            ImportedPassword::Bcrypt(b) => {
                // `$2b$12$` + 22 salt characters + 31 hash characters.
                let ok = b.len() == 60
                    && (b.starts_with("$2a$") || b.starts_with("$2b$") || b.starts_with("$2y$"))
                    && b.as_bytes()[6] == b'$';
                if !ok {
                    return Err(PasswordError::MalformedLegacy);
                }
                StoredPassword {
                    hash: self.hash(b)?,
                    legacy_scheme: Some("bcrypt".into()),
                    legacy_params: Some(b[..29].to_owned()),
                }
            }
        })
    }
}

/// Recomputes a bcrypt string from its setting (`$2b$12$<salt>`).
fn bcrypt_with_setting(password: &str, setting: &str) -> Option<String> {
    let version = match &setting[..4.min(setting.len())] {
        "$2a$" => bcrypt::Version::TwoA,
        "$2b$" => bcrypt::Version::TwoB,
        "$2y$" => bcrypt::Version::TwoY,
        _ => return None,
    };
    let cost: u32 = setting.get(4..6)?.parse().ok()?;
    let salt_text = setting.get(7..29)?;
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::BCRYPT,
        base64::engine::GeneralPurposeConfig::new()
            .with_encode_padding(false)
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone),
    );
    let salt: [u8; 16] = engine.decode(salt_text).ok()?.get(..16)?.try_into().ok()?;
    bcrypt::hash_with_salt(password, cost, salt)
        .ok()
        .map(|parts| parts.format_for_version(version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_round_trip_with_owasp_parameters() {
        let p = Passwords::try_new().unwrap();
        let h = p.hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        let stored = StoredPassword {
            hash: h.clone(),
            legacy_scheme: None,
            legacy_params: None,
        };
        assert_eq!(p.verify("correct horse", &stored), Some(Verified::Current));
        assert_eq!(p.verify("wrong", &stored), None);
        assert_ne!(h, p.hash("correct horse").unwrap(), "salts differ");
        assert!(!p.verify_dummy("anything"));
    }

    #[test]
    fn legacy_hashes_are_wrapped_and_verified() {
        let p = Passwords::try_new().unwrap();
        let bcrypt_hash = bcrypt::hash("hunter2", 4).unwrap();
        let stored = p
            .import(&ImportedPassword::Bcrypt(bcrypt_hash.clone()))
            .unwrap();
        assert!(stored.hash.starts_with("$argon2id$"));
        assert!(
            !stored.hash.contains(&bcrypt_hash[29..]),
            "the legacy hash is not stored"
        );
        assert_eq!(p.verify("hunter2", &stored), Some(Verified::Upgrade));
        assert_eq!(p.verify("hunter3", &stored), None);

        let sha = hex::encode(Sha256::digest(b"letmein"));
        let stored = p.import(&ImportedPassword::Sha256Hex(sha)).unwrap();
        assert_eq!(p.verify("letmein", &stored), Some(Verified::Upgrade));
        assert_eq!(p.verify("letmeout", &stored), None);
        assert!(
            p.import(&ImportedPassword::Bcrypt("$2b$nope".into()))
                .is_err()
        );
    }
}
