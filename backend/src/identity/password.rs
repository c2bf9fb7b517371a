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
use argon2::password_hash::{
    self, Decimal, Ident, Output, ParamsString, PasswordHash, PasswordHasher,
    PasswordVerifier as _, Salt, SaltString,
};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use portcullis_argon2_memory::Blocks;
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
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
    argon: MappedArgon2,
    dummy: String,
}

/// Argon2 whose working memory is a mapping of its own ([`Blocks`]): kept for the next
/// hash and returned to the kernel once idle ([`MemoryPool`]) instead of staying resident
/// in the allocator's arena, and backed by transparent huge pages where the system allows
/// them, which Argon2id needs to keep up with sign-ins (BENCHMARKS.md, "twelfth stop").
/// Verification is `password_hash`'s own, over this hasher: the stored hash's algorithm,
/// version and parameters, and a constant-time comparison of the outputs.
#[derive(Debug, Clone)]
struct MappedArgon2 {
    algorithm: Algorithm,
    version: Version,
    params: Params,
    memory: Arc<MemoryPool>,
}

/// Argon2 working memory between hashes: a burst of sign-ins maps and faults in its
/// 19 MiB once, not once per hash (about 1 ms of kernel time each on an idle machine, the
/// zeroing of fresh pages), and [`Passwords::release_idle_memory`] gives back what has
/// been idle.
#[derive(Debug, Default)]
struct MemoryPool {
    idle: Mutex<Vec<(Blocks, Instant)>>,
}

/// At most this many mappings wait for reuse: the backend hashes at most one job per core
/// at a time, and more would only be memory kept for a burst that has passed.
const POOLED_MAPPINGS: usize = 4;

impl MemoryPool {
    /// A mapping of `count` blocks, the most recently used if one is idle.
    fn take(&self, count: usize) -> std::io::Result<Blocks> {
        let reused = self.idle.lock().ok().and_then(|mut idle| {
            let i = idle.iter().rposition(|(b, _)| b.count() == count)?;
            Some(idle.swap_remove(i).0)
        });
        reused.map_or_else(|| Blocks::new(count), Ok)
    }

    /// Keeps `blocks` for the next hash (or unmaps it when enough are kept). A poisoned
    /// lock only costs the reuse.
    fn give_back(&self, blocks: Blocks) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < POOLED_MAPPINGS
        {
            idle.push((blocks, Instant::now()));
        }
    }

    /// Unmaps every mapping idle for `kept` or longer.
    fn release_idle(&self, kept: Duration) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.retain(|(_, since)| since.elapsed() < kept);
        }
    }
}

impl PasswordHasher for MappedArgon2 {
    type Params = Params;

    fn hash_password<'a>(
        &self,
        password: &[u8],
        salt: impl Into<Salt<'a>>,
    ) -> password_hash::Result<PasswordHash<'a>> {
        let salt = salt.into();
        let mut salt_bytes = [0u8; Salt::MAX_LENGTH];
        let salt_bytes = salt.decode_b64(&mut salt_bytes)?;
        let argon = Argon2::new(self.algorithm, self.version, self.params.clone());
        let mut memory = self
            .memory
            .take(self.params.block_count())
            .map_err(|_| password_hash::Error::Crypto)?;
        let output_len = self
            .params
            .output_len()
            .unwrap_or(Params::DEFAULT_OUTPUT_LEN);
        let hash = Output::init_with(output_len, |out| {
            Ok(argon.hash_password_into_with_memory(password, salt_bytes, out, &mut memory)?)
        });
        self.memory.give_back(memory);
        let hash = hash?;
        Ok(PasswordHash {
            algorithm: self.algorithm.ident(),
            version: Some(self.version.into()),
            params: ParamsString::try_from(&self.params)?,
            salt: Some(salt),
            hash: Some(hash),
        })
    }

    fn hash_password_customized<'a>(
        &self,
        password: &[u8],
        algorithm: Option<Ident<'a>>,
        version: Option<Decimal>,
        params: Params,
        salt: impl Into<Salt<'a>>,
    ) -> password_hash::Result<PasswordHash<'a>> {
        Self {
            algorithm: algorithm
                .map(Algorithm::try_from)
                .transpose()?
                .unwrap_or_default(),
            version: version
                .map(Version::try_from)
                .transpose()?
                .unwrap_or_default(),
            params,
            memory: Arc::clone(&self.memory),
        }
        .hash_password(password, salt)
    }
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
        let argon = MappedArgon2 {
            algorithm: Algorithm::Argon2id,
            version: Version::V0x13,
            params: owasp_params()?,
            memory: Arc::default(),
        };
        let salt = SaltString::generate(&mut OsRng);
        let dummy = argon
            .hash_password(b"portcullis-dummy-password", &salt)
            .map_err(|e| PasswordError::Hash(e.to_string()))?
            .to_string();
        // Nothing may release the start-up hash's memory later: give it back now.
        argon.memory.release_idle(Duration::ZERO);
        Ok(Self { argon, dummy })
    }

    /// Unmaps Argon2 working memory that no hash has used for `kept`.
    pub fn release_idle_memory(&self, kept: Duration) {
        self.argon.memory.release_idle(kept);
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

    fn plain(hash: &str) -> StoredPassword {
        StoredPassword {
            hash: hash.to_owned(),
            legacy_scheme: None,
            legacy_params: None,
        }
    }

    /// Hashing over mapped memory is the argon2 crate's hashing: with the same salt the
    /// PHC strings are identical, each side verifies the other's, and a hash with other
    /// parameters or another variant is checked with its own and asks for an upgrade.
    #[test]
    fn hashes_agree_with_the_argon2_crate() {
        let p = Passwords::try_new().unwrap();
        let reference = Argon2::new(Algorithm::Argon2id, Version::V0x13, owasp_params().unwrap());
        let salt = SaltString::generate(&mut OsRng);
        let theirs = reference
            .hash_password(b"correct horse", &salt)
            .unwrap()
            .to_string();
        let ours = p.argon.hash_password(b"correct horse", &salt).unwrap();
        assert_eq!(ours.to_string(), theirs);
        assert!(reference.verify_password(b"correct horse", &ours).is_ok());
        assert!(reference.verify_password(b"correct horsf", &ours).is_err());
        let fresh = PasswordHash::new(&p.hash("correct horse").unwrap())
            .unwrap()
            .serialize();
        assert!(
            reference
                .verify_password(b"correct horse", &fresh.password_hash())
                .is_ok()
        );

        assert_eq!(
            p.verify("correct horse", &plain(&theirs)),
            Some(Verified::Current)
        );
        for (algorithm, params) in [
            (Algorithm::Argon2id, Params::new(4096, 1, 1, None).unwrap()),
            (Algorithm::Argon2i, owasp_params().unwrap()),
        ] {
            let other = Argon2::new(algorithm, Version::V0x13, params)
                .hash_password(b"correct horse", &salt)
                .unwrap()
                .to_string();
            assert_eq!(
                p.verify("correct horse", &plain(&other)),
                Some(Verified::Upgrade),
                "{other}"
            );
            assert_eq!(p.verify("correct horsf", &plain(&other)), None, "{other}");
        }
    }

    /// A hash keeps its working memory for the next one, which reuses it, until it is
    /// released; the start-up dummy hash keeps none.
    #[test]
    fn working_memory_is_reused_then_released() {
        let p = Passwords::try_new().unwrap();
        let idle = |p: &Passwords| p.argon.memory.idle.lock().unwrap().len();
        assert_eq!(idle(&p), 0, "the dummy hash's memory was kept");
        let h = p.hash("correct horse").unwrap();
        assert_eq!(idle(&p), 1);
        assert_eq!(
            p.verify("correct horse", &plain(&h)),
            Some(Verified::Current)
        );
        assert_eq!(
            idle(&p),
            1,
            "the check mapped new memory instead of reusing"
        );
        p.release_idle_memory(Duration::from_secs(60));
        assert_eq!(idle(&p), 1, "released memory used a moment ago");
        p.release_idle_memory(Duration::ZERO);
        assert_eq!(idle(&p), 0);
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
