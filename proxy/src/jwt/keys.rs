//! A parsed JWK Set: the verification keys of one issuer, by `kid`.
//!
//! Only public signature keys are kept: RSA (at least 2048 bits), EC P-256
//! and P-384, and Ed25519. Symmetric (`oct`) keys, encryption keys and
//! anything malformed are skipped, so a key set can never hand out an HMAC
//! secret.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::parse::valid_kid;
use super::settings::JwsAlgorithm;

/// Most keys kept from one JWK Set.
const MAX_KEYS: usize = 64;
/// Smallest accepted RSA modulus.
const MIN_RSA_BITS: usize = 2048;

/// The kind of public key, which decides the algorithms it may verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

/// One verification key.
#[derive(Debug)]
pub(crate) struct StoredKey {
    pub key: DecodingKey,
    pub kind: KeyKind,
    /// The JWK's own `alg`, when it names one.
    pub alg: Option<JwsAlgorithm>,
    /// SHA-256 over the public key parameters: tells a replaced key (same
    /// `kid`, other material) from an unchanged one.
    pub fingerprint: [u8; 32],
}

impl StoredKey {
    /// Whether this key may verify a signature made with `alg`: the key type
    /// must match the algorithm family (and curve), and a JWK that names its
    /// algorithm is used for that algorithm only.
    pub fn fits(&self, alg: JwsAlgorithm) -> bool {
        use JwsAlgorithm as A;
        if self.alg.is_some_and(|own| own != alg) {
            return false;
        }
        matches!(
            (alg, self.kind),
            (
                A::Rs256 | A::Rs384 | A::Rs512 | A::Ps256 | A::Ps384 | A::Ps512,
                KeyKind::Rsa
            ) | (A::Es256, KeyKind::EcP256)
                | (A::Es384, KeyKind::EcP384)
                | (A::EdDsa, KeyKind::Ed25519)
        )
    }
}

/// The usable keys of one JWK Set.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    keys: HashMap<String, Arc<StoredKey>>,
}

/// Why a JWK Set document was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum KeySetError {
    #[error("not a JSON object with a `keys` array")]
    NotAKeySet,
    #[error("no usable signature key")]
    NoUsableKeys,
}

impl KeySet {
    /// Parses a JWK Set document. Unusable keys are skipped (and counted in
    /// the second value); a document without any usable key is an error, so
    /// that a broken endpoint cannot wipe out the last good key set.
    pub fn parse(body: &[u8]) -> Result<(Self, usize), KeySetError> {
        let doc: Value = serde_json::from_slice(body).map_err(|_| KeySetError::NotAKeySet)?;
        let Some(Value::Array(entries)) = doc.get("keys") else {
            return Err(KeySetError::NotAKeySet);
        };
        let mut keys = HashMap::new();
        let mut skipped = 0;
        for entry in entries {
            let parsed = entry.as_object().and_then(parse_jwk);
            match parsed {
                // The first key with a given kid wins; a duplicate is ambiguous
                // and dropped.
                Some((kid, key)) if keys.len() < MAX_KEYS && !keys.contains_key(&kid) => {
                    keys.insert(kid, Arc::new(key));
                }
                _ => skipped += 1,
            }
        }
        if keys.is_empty() {
            return Err(KeySetError::NoUsableKeys);
        }
        Ok((Self { keys }, skipped))
    }

    pub fn get(&self, kid: &str) -> Option<Arc<StoredKey>> {
        self.keys.get(kid).cloned()
    }

    /// Key ids with the fingerprint of their key.
    pub fn fingerprints(&self) -> BTreeMap<String, [u8; 32]> {
        self.keys
            .iter()
            .map(|(kid, key)| (kid.clone(), key.fingerprint))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }
}

fn text<'a>(jwk: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    jwk.get(name).and_then(Value::as_str)
}

fn decoded_len(b64: &str) -> Option<usize> {
    URL_SAFE_NO_PAD.decode(b64).ok().map(|v| v.len())
}

/// One JWK → (kid, key), or `None` when it is not a usable public signature
/// key.
fn parse_jwk(jwk: &Map<String, Value>) -> Option<(String, StoredKey)> {
    let kid = text(jwk, "kid").filter(|k| valid_kid(k))?.to_owned();
    if jwk.get("use").is_some_and(|u| u.as_str() != Some("sig")) {
        return None;
    }
    if let Some(ops) = jwk.get("key_ops") {
        let verify = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|o| o.as_str() == Some("verify")));
        if !verify {
            return None;
        }
    }
    // A private key published by mistake is not used either: whoever
    // published it has leaked it.
    if ["d", "p", "q", "k"].iter().any(|p| jwk.contains_key(*p)) {
        return None;
    }
    let alg = match jwk.get("alg") {
        None => None,
        Some(Value::String(name)) => Some(JwsAlgorithm::from_name(name)?),
        Some(_) => return None,
    };
    let mut fingerprint = Sha256::new();
    let (key, kind) = match (text(jwk, "kty")?, text(jwk, "crv")) {
        ("RSA", _) => {
            let (n, e) = (text(jwk, "n")?, text(jwk, "e")?);
            let n_bytes = URL_SAFE_NO_PAD.decode(n).ok()?;
            let significant = n_bytes.iter().skip_while(|b| **b == 0).count();
            if significant * 8 < MIN_RSA_BITS || !(1..=8).contains(&decoded_len(e)?) {
                return None;
            }
            fingerprint.update(format!("RSA|{n}|{e}"));
            (DecodingKey::from_rsa_components(n, e).ok()?, KeyKind::Rsa)
        }
        ("EC", Some(crv @ ("P-256" | "P-384"))) => {
            let (x, y) = (text(jwk, "x")?, text(jwk, "y")?);
            let (size, kind) = if crv == "P-256" {
                (32, KeyKind::EcP256)
            } else {
                (48, KeyKind::EcP384)
            };
            if decoded_len(x)? != size || decoded_len(y)? != size {
                return None;
            }
            fingerprint.update(format!("EC|{crv}|{x}|{y}"));
            (DecodingKey::from_ec_components(x, y).ok()?, kind)
        }
        ("OKP", Some("Ed25519")) => {
            let x = text(jwk, "x")?;
            if decoded_len(x)? != 32 {
                return None;
            }
            fingerprint.update(format!("OKP|Ed25519|{x}"));
            (DecodingKey::from_ed_components(x).ok()?, KeyKind::Ed25519)
        }
        _ => return None,
    };
    Some((
        kid,
        StoredKey {
            key,
            kind,
            alg,
            fingerprint: fingerprint.finalize().into(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(len: usize) -> String {
        URL_SAFE_NO_PAD.encode(vec![7u8; len])
    }

    fn set(keys: Value) -> Result<(KeySet, usize), KeySetError> {
        KeySet::parse(serde_json::json!({ "keys": keys }).to_string().as_bytes())
    }

    #[test]
    fn keeps_only_public_signature_keys() {
        let (set, skipped) = set(serde_json::json!([
            {"kty":"OKP","crv":"Ed25519","kid":"ed","x":b64(32)},
            {"kty":"EC","crv":"P-256","kid":"ec","x":b64(32),"y":b64(32),"alg":"ES256","use":"sig"},
            {"kty":"RSA","kid":"rsa","n":b64(256),"e":"AQAB"},
            {"kty":"RSA","kid":"rsa-small","n":b64(128),"e":"AQAB"},
            {"kty":"oct","kid":"hmac","k":b64(32)},
            {"kty":"OKP","crv":"X25519","kid":"x","x":b64(32)},
            {"kty":"EC","crv":"P-256","kid":"enc","x":b64(32),"y":b64(32),"use":"enc"},
            {"kty":"EC","crv":"P-256","kid":"short","x":b64(31),"y":b64(32)},
            {"kty":"EC","crv":"P-256","kid":"priv","x":b64(32),"y":b64(32),"d":b64(32)},
            {"kty":"EC","crv":"P-256","kid":"../x","x":b64(32),"y":b64(32)},
            {"kty":"EC","crv":"P-256","x":b64(32),"y":b64(32)},
            {"kty":"EC","crv":"P-256","kid":"hs","x":b64(32),"y":b64(32),"alg":"HS256"},
            {"kty":"OKP","crv":"Ed25519","kid":"ed","x":b64(32)},
            "garbage"
        ]))
        .unwrap();
        assert_eq!(
            set.fingerprints().into_keys().collect::<Vec<_>>(),
            vec!["ec", "ed", "rsa"]
        );
        assert_eq!(skipped, 11);
    }

    #[test]
    fn key_type_must_match_algorithm() {
        let (set, _) = set(serde_json::json!([
            {"kty":"OKP","crv":"Ed25519","kid":"ed","x":b64(32)},
            {"kty":"EC","crv":"P-256","kid":"ec","x":b64(32),"y":b64(32),"alg":"ES256"},
            {"kty":"RSA","kid":"rsa","n":b64(256),"e":"AQAB","alg":"PS256"}
        ]))
        .unwrap();
        let ed = set.get("ed").unwrap();
        assert!(ed.fits(JwsAlgorithm::EdDsa));
        assert!(!ed.fits(JwsAlgorithm::Es256));
        let ec = set.get("ec").unwrap();
        assert!(ec.fits(JwsAlgorithm::Es256));
        assert!(!ec.fits(JwsAlgorithm::Es384));
        assert!(!ec.fits(JwsAlgorithm::Rs256));
        let rsa = set.get("rsa").unwrap();
        assert!(rsa.fits(JwsAlgorithm::Ps256));
        assert!(!rsa.fits(JwsAlgorithm::Rs256), "the JWK names PS256");
    }

    #[test]
    fn empty_or_invalid_documents_are_errors() {
        assert_eq!(
            set(serde_json::json!([])).err(),
            Some(KeySetError::NoUsableKeys)
        );
        assert_eq!(
            set(serde_json::json!([{"kty":"oct","kid":"h","k":"AAAA"}])).err(),
            Some(KeySetError::NoUsableKeys)
        );
        assert_eq!(KeySet::parse(b"[]").err(), Some(KeySetError::NotAKeySet));
        assert_eq!(
            KeySet::parse(b"<html>").err(),
            Some(KeySetError::NotAKeySet)
        );
    }
}
