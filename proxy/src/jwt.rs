//! Bearer-token (JWT) verification against the JWKS of configured issuers.
//!
//! [`JwtVerifier::verify`] accepts a compact JWS only when all of this holds,
//! checked in this order (the first failure is the [`JwtError`]):
//!
//! 1. at most [`MAX_TOKEN_BYTES`], three base64url parts, JSON header and
//!    claims without duplicate members;
//! 2. `alg` is an asymmetric algorithm (every spelling of `none` and every
//!    `HS*` is refused before anything else is looked at);
//! 3. no `jku`, `x5u`, `jwk`, `crit` or `b64` header: the token never chooses
//!    its key, and nothing it names is fetched (`x5c` is ignored);
//! 4. a plain `kid` (see [`MAX_KID_CHARS`]);
//! 5. the unverified `iss` names a configured issuer, and `alg` is in that
//!    issuer's allow-list;
//! 6. claims: `exp` present and not past, `nbf`/`iat` not in the future (each
//!    with the issuer's bounded leeway), `iss` exactly the configured string,
//!    `aud` naming a configured audience, `sub` present — checked before any
//!    key lookup, so that only otherwise-valid tokens can cause a JWKS fetch;
//! 7. the `kid` is in the issuer's cached JWKS, after at most one
//!    single-flight, rate-limited refetch;
//! 8. the key's type fits `alg` (an RSA key never verifies ES256; HMAC keys
//!    are never loaded), and the signature verifies.
//!
//! Accepted tokens are cached by SHA-256 until their `exp`. Each issuer's key
//! set is fetched at start ([`JwtVerifier::refresh_all`]), refreshed in the
//! background ([`JwtVerifier::start_background_refresh`]) and kept when the
//! endpoint fails (stale keys beat no keys; fetch failures are counted).
//!
//! Session revocation (`sid`) is not checked here: the caller checks the
//! returned `sid` on every request, cached or not.

mod cache;
mod claims;
mod fetch;
mod keys;
mod metrics;
mod parse;
mod settings;
mod verifier;

use std::sync::Arc;

use serde_json::Value;
use thiserror::Error;

pub use metrics::JwtMetrics;
pub use parse::{MAX_KID_CHARS, MAX_TOKEN_BYTES};
pub use settings::{IssuerConfig, IssuerSettings, JwsAlgorithm, MAX_LEEWAY_SECONDS};

pub use verifier::JwtVerifier;

/// Most tokens kept in the verified-token cache.
pub const TOKEN_CACHE_CAPACITY: usize = 4096;

/// Why a token was refused. [`JwtError::reason`] is the stable code used as
/// the `reason` label of `portcullis_jwt_rejections_total` and in audit
/// events. Messages never contain token data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum JwtError {
    #[error("token larger than {MAX_TOKEN_BYTES} bytes")]
    Oversized,
    #[error("token is not a well-formed compact JWS")]
    Malformed,
    #[error("signature algorithm not allowed")]
    AlgorithmNotAllowed,
    #[error("token header has no `kid`")]
    MissingKid,
    #[error("token `kid` is not a plain key id")]
    BadKid,
    #[error("token header carries forbidden parameter `{0}`")]
    ForbiddenHeader(&'static str),
    #[error("token issuer is not configured")]
    UnknownIssuer,
    #[error("no key with the token's `kid` in the issuer's key set")]
    UnknownKid,
    #[error("the issuer's key set has not been loaded")]
    KeysUnavailable,
    #[error("the key's type does not fit the token's algorithm")]
    KeyMismatch,
    #[error("signature does not verify")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token `iss` is not exactly the configured issuer")]
    WrongIssuer,
    #[error("token is not meant for this audience")]
    WrongAudience,
    #[error("token lacks the `{0}` claim")]
    MissingClaim(&'static str),
}

impl JwtError {
    /// Stable snake_case code of this rejection.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Oversized => "oversized",
            Self::Malformed => "malformed",
            Self::AlgorithmNotAllowed => "algorithm_not_allowed",
            Self::MissingKid => "missing_kid",
            Self::BadKid => "bad_kid",
            Self::ForbiddenHeader(_) => "forbidden_header",
            Self::UnknownIssuer => "unknown_issuer",
            Self::UnknownKid => "unknown_kid",
            Self::KeysUnavailable => "keys_unavailable",
            Self::KeyMismatch => "key_mismatch",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::MissingClaim(_) => "missing_claim",
        }
    }
}

/// A token whose signature and claims were verified.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    /// The configured issuer (`iss`).
    pub issuer: String,
    /// `sub`.
    pub sub: String,
    /// `sid`, the session id, when present.
    pub sid: Option<String>,
    /// The issuer's roles claim (`roles_claim`), empty when absent.
    pub roles: Vec<String>,
    /// `amr`, authentication methods, empty when absent.
    pub amr: Vec<String>,
    /// `exp`, seconds since the Unix epoch.
    pub exp: i64,
    /// Every claim, for the policy input.
    pub claims: Value,
}

/// A change in an issuer's key set, for the audit log. The first successful
/// load is reported too (every key `added`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySetChange {
    /// The issuer's configured label.
    pub issuer_label: String,
    /// Key ids that appeared.
    pub added: Vec<String>,
    /// Key ids that disappeared; tokens cached under them are dropped.
    pub removed: Vec<String>,
    /// Key ids whose key material changed; tokens cached under them are
    /// dropped.
    pub replaced: Vec<String>,
    /// Usable keys in the new set.
    pub key_count: usize,
}

/// Called on every [`KeySetChange`], from the task that fetched the keys.
/// Keep it short and non-blocking (e.g. hand the event to the audit queue).
pub type KeySetObserver = Arc<dyn Fn(&KeySetChange) + Send + Sync>;

/// Why a verifier could not be built or started.
#[derive(Debug, Error)]
pub enum JwtSetupError {
    #[error("issuer `{0}` is configured twice")]
    DuplicateIssuer(String),
    #[error("issuer label `{0}` is used twice")]
    DuplicateLabel(String),
    #[error("HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    #[error("no tokio runtime to run the background refresh on")]
    NoRuntime,
}

/// Some issuers' key sets could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("JWKS fetch failed for issuer(s) {}", failed.join(", "))]
pub struct RefreshError {
    /// Labels of the issuers whose fetch failed (details are in the log).
    pub failed: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn reasons_are_distinct_snake_case() {
        use JwtError as E;
        let all = [
            E::Oversized,
            E::Malformed,
            E::AlgorithmNotAllowed,
            E::MissingKid,
            E::BadKid,
            E::ForbiddenHeader("jku"),
            E::UnknownIssuer,
            E::UnknownKid,
            E::KeysUnavailable,
            E::KeyMismatch,
            E::BadSignature,
            E::Expired,
            E::NotYetValid,
            E::WrongIssuer,
            E::WrongAudience,
            E::MissingClaim("exp"),
        ];
        let reasons: BTreeSet<&str> = all.iter().map(JwtError::reason).collect();
        assert_eq!(reasons.len(), all.len());
        assert!(
            reasons
                .iter()
                .all(|r| r.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        );
    }
}
