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
mod fetch;
mod keys;
mod metrics;
mod parse;
mod settings;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde_json::{Map, Value};
use thiserror::Error;

pub use metrics::JwtMetrics;
pub use parse::{MAX_KID_CHARS, MAX_TOKEN_BYTES};
pub use settings::{
    IssuerConfig, IssuerSettings, JwsAlgorithm, JwtConfigError, MAX_LEEWAY_SECONDS,
};

use cache::TokenCache;
use keys::{KeySet, StoredKey};

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

/// Verifies bearer tokens. Cheap to clone; clones share keys, cache and
/// metrics.
#[derive(Clone)]
pub struct JwtVerifier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field(
                "issuers",
                &self
                    .inner
                    .issuers
                    .iter()
                    .map(|i| i.settings.label.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

struct Inner {
    issuers: Vec<IssuerKeys>,
    by_issuer: HashMap<String, usize>,
    /// Normalised `iss` (lower case, no trailing `/`) → issuer, to tell a
    /// near miss (`WrongIssuer`) from a stranger (`UnknownIssuer`).
    by_normalised: HashMap<String, usize>,
    client: reqwest::Client,
    metrics: JwtMetrics,
    observer: Option<KeySetObserver>,
    cache: TokenCache,
    background_started: AtomicBool,
}

/// One issuer's key state.
struct IssuerKeys {
    settings: IssuerSettings,
    keys: ArcSwap<KeySet>,
    loaded: AtomicBool,
    /// Completed fetch attempts; lets waiters see that a fetch happened
    /// while they queued for the lock.
    generation: AtomicU64,
    /// Single flight: held for the duration of a fetch. Holds the time of
    /// the last fetch attempt.
    fetch: tokio::sync::Mutex<Option<Instant>>,
}

fn normalise(iss: &str) -> String {
    iss.trim_end_matches('/').to_ascii_lowercase()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl JwtVerifier {
    /// Builds a verifier for `issuers`. No key is fetched yet: call
    /// [`JwtVerifier::refresh_all`] (startup, readiness) and
    /// [`JwtVerifier::start_background_refresh`]; until then tokens are
    /// refused with `keys_unavailable`, or fetch keys on first use.
    /// `observer` hears of every key-set change.
    pub fn new(
        issuers: Vec<IssuerSettings>,
        metrics: JwtMetrics,
        observer: Option<KeySetObserver>,
    ) -> Result<Self, JwtSetupError> {
        // Select the crypto backend explicitly: with the provider chosen by
        // crate features alone, a second feature enabled anywhere in the
        // build would make every verification panic. Err means a provider
        // is already installed, which is as good.
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();

        let mut by_issuer = HashMap::new();
        let mut by_normalised = HashMap::new();
        let mut labels = BTreeSet::new();
        for (i, s) in issuers.iter().enumerate() {
            if by_issuer.insert(s.issuer.clone(), i).is_some()
                || by_normalised.insert(normalise(&s.issuer), i).is_some()
            {
                return Err(JwtSetupError::DuplicateIssuer(s.issuer.clone()));
            }
            if !labels.insert(s.label.clone()) {
                return Err(JwtSetupError::DuplicateLabel(s.label.clone()));
            }
        }
        let issuers = issuers
            .into_iter()
            .map(|settings| IssuerKeys {
                settings,
                keys: ArcSwap::from_pointee(KeySet::default()),
                loaded: AtomicBool::new(false),
                generation: AtomicU64::new(0),
                fetch: tokio::sync::Mutex::new(None),
            })
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                issuers,
                by_issuer,
                by_normalised,
                client: fetch::client().map_err(JwtSetupError::HttpClient)?,
                metrics,
                observer,
                cache: TokenCache::new(TOKEN_CACHE_CAPACITY),
                background_started: AtomicBool::new(false),
            }),
        })
    }

    /// Verifies `token` (the bearer credential, without `Bearer `). Counts
    /// the outcome in the metrics: callers need not count rejections again.
    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, JwtError> {
        let inner = &self.inner;
        match inner.verify(token, unix_now()).await {
            Ok((token, issuer)) => {
                inner
                    .metrics
                    .accepted
                    .with_label_values(&[issuer.settings.label.as_str()])
                    .inc();
                Ok((*token).clone())
            }
            Err(e) => {
                inner
                    .metrics
                    .rejections
                    .with_label_values(&[e.reason()])
                    .inc();
                Err(e)
            }
        }
    }

    /// Fetches every issuer's key set now, regardless of the refetch
    /// interval. Issuers that fail keep their previous keys.
    pub async fn refresh_all(&self) -> Result<(), RefreshError> {
        let mut failed = Vec::new();
        for (idx, issuer) in self.inner.issuers.iter().enumerate() {
            if !self.inner.refresh(idx, true).await {
                failed.push(issuer.settings.label.clone());
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(RefreshError { failed })
        }
    }

    /// Whether every issuer has a key set (for `/health/ready`).
    pub fn keys_loaded(&self) -> bool {
        self.inner
            .issuers
            .iter()
            .all(|i| i.loaded.load(Ordering::Acquire))
    }

    /// Spawns, on the current tokio runtime, one task per issuer that
    /// refetches its key set every `refresh_interval_seconds` (every
    /// `min_refetch_interval_seconds` while none has loaded yet). The tasks
    /// end when the last clone of the verifier is dropped. A second call does
    /// nothing.
    pub fn start_background_refresh(&self) -> Result<(), JwtSetupError> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| JwtSetupError::NoRuntime)?;
        if self.inner.background_started.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        for idx in 0..self.inner.issuers.len() {
            let weak: Weak<Inner> = Arc::downgrade(&self.inner);
            runtime.spawn(async move {
                loop {
                    let pause = match weak.upgrade() {
                        Some(inner) => inner.pause_before_refresh(idx),
                        None => return,
                    };
                    tokio::time::sleep(pause).await;
                    let Some(inner) = weak.upgrade() else {
                        return;
                    };
                    inner.refresh(idx, false).await;
                }
            });
        }
        Ok(())
    }
}

impl Inner {
    async fn verify(
        &self,
        token: &str,
        now: i64,
    ) -> Result<(Arc<VerifiedToken>, &IssuerKeys), JwtError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtError::Oversized);
        }
        let hash = cache::hash(token);
        if let Some((hit, idx)) = self.cache.get(&hash, now)
            && let Some(issuer) = self.issuers.get(idx)
        {
            return Ok((hit, issuer));
        }

        let parts = parse::split(token)?;
        let header = parse::header(parts.header)?;
        let claims = parse::object(parts.payload)?;
        let iss = claims.get("iss").and_then(Value::as_str);
        let (idx, exact) = match iss {
            Some(iss) => match self.by_issuer.get(iss) {
                Some(idx) => (*idx, true),
                None => match self.by_normalised.get(&normalise(iss)) {
                    Some(idx) => (*idx, false),
                    None => return Err(JwtError::UnknownIssuer),
                },
            },
            None => return Err(JwtError::UnknownIssuer),
        };
        let issuer = self.issuers.get(idx).ok_or(JwtError::UnknownIssuer)?;
        let settings = &issuer.settings;
        if !settings.algorithms.contains(&header.alg) {
            return Err(JwtError::AlgorithmNotAllowed);
        }
        let exp = check_claims(settings, &claims, now, exact)?;
        if parts.signature.is_empty() {
            return Err(JwtError::BadSignature);
        }

        let key = self.key_for(issuer, idx, &header.kid).await?;
        if !key.fits(header.alg) {
            return Err(JwtError::KeyMismatch);
        }
        let verified = jsonwebtoken::crypto::verify(
            parts.signature,
            parts.signing_input.as_bytes(),
            &key.key,
            header.alg.to_jwt(),
        );
        if !matches!(verified, Ok(true)) {
            return Err(JwtError::BadSignature);
        }

        let token_data = Arc::new(VerifiedToken {
            issuer: settings.issuer.clone(),
            sub: claims
                .get("sub")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            sid: claims.get("sid").and_then(Value::as_str).map(str::to_owned),
            roles: parse::string_list(&claims, &settings.roles_claim),
            amr: parse::string_list(&claims, "amr"),
            exp,
            claims: Value::Object(claims),
        });
        // Only while the key is still published: a key withdrawn during this
        // verification must not leave tokens in the cache.
        if issuer.keys.load().get(&header.kid).is_some() {
            self.cache
                .insert(hash, Arc::clone(&token_data), idx, &header.kid, now);
        }
        Ok((token_data, issuer))
    }

    /// The key `kid` of `issuer`, refetching the key set at most once
    /// (single flight, rate-limited) when it is not cached.
    async fn key_for(
        &self,
        issuer: &IssuerKeys,
        idx: usize,
        kid: &str,
    ) -> Result<Arc<StoredKey>, JwtError> {
        if let Some(key) = issuer.keys.load().get(kid) {
            return Ok(key);
        }
        let seen = issuer.generation.load(Ordering::Acquire);
        let mut last = issuer.fetch.lock().await;
        let fetched_meanwhile = issuer.generation.load(Ordering::Acquire) != seen;
        let too_soon = last.is_some_and(|t| t.elapsed() < issuer.settings.min_refetch_interval);
        if !fetched_meanwhile && !too_soon {
            self.fetch_locked(issuer, idx, &mut last).await;
        }
        drop(last);
        match issuer.keys.load().get(kid) {
            Some(key) => Ok(key),
            None if !issuer.loaded.load(Ordering::Acquire) => Err(JwtError::KeysUnavailable),
            None => Err(JwtError::UnknownKid),
        }
    }

    /// Refetches one issuer's keys; `force` ignores the refetch interval.
    /// Returns whether the issuer's keys are fresh from this call (or from a
    /// fetch within the refetch interval, when not forced).
    async fn refresh(&self, idx: usize, force: bool) -> bool {
        let Some(issuer) = self.issuers.get(idx) else {
            return false;
        };
        let mut last = issuer.fetch.lock().await;
        if !force && last.is_some_and(|t| t.elapsed() < issuer.settings.min_refetch_interval) {
            return issuer.loaded.load(Ordering::Acquire);
        }
        self.fetch_locked(issuer, idx, &mut last).await
    }

    fn pause_before_refresh(&self, idx: usize) -> Duration {
        match self.issuers.get(idx) {
            Some(i) if i.loaded.load(Ordering::Acquire) => i.settings.refresh_interval,
            Some(i) => i.settings.min_refetch_interval,
            None => Duration::from_secs(3600),
        }
    }

    /// Fetches while holding the issuer's fetch lock (`last` is its guarded
    /// value). Keeps the old key set on failure.
    async fn fetch_locked(
        &self,
        issuer: &IssuerKeys,
        idx: usize,
        last: &mut Option<Instant>,
    ) -> bool {
        *last = Some(Instant::now());
        let label = issuer.settings.label.as_str();
        let outcome = fetch::key_set(&self.client, &issuer.settings).await;
        let ok = match outcome {
            Ok((set, skipped)) => {
                self.metrics.fetches.with_label_values(&[label, "ok"]).inc();
                if skipped > 0 {
                    tracing::debug!(issuer = label, skipped, "JWKS entries skipped as unusable");
                }
                self.install(issuer, idx, set);
                true
            }
            Err(error) => {
                self.metrics
                    .fetches
                    .with_label_values(&[label, "error"])
                    .inc();
                tracing::warn!(
                    issuer = label,
                    %error,
                    stale_keys = issuer.loaded.load(Ordering::Acquire),
                    "JWKS fetch failed; keeping the cached key set"
                );
                false
            }
        };
        issuer.generation.fetch_add(1, Ordering::AcqRel);
        ok
    }

    fn install(&self, issuer: &IssuerKeys, idx: usize, set: KeySet) {
        let label = issuer.settings.label.as_str();
        let old = issuer.keys.load().fingerprints();
        let new = set.fingerprints();
        let added: Vec<String> = new
            .keys()
            .filter(|k| !old.contains_key(*k))
            .cloned()
            .collect();
        let removed: Vec<String> = old
            .keys()
            .filter(|k| !new.contains_key(*k))
            .cloned()
            .collect();
        let replaced: Vec<String> = new
            .iter()
            .filter(|(k, fp)| old.get(*k).is_some_and(|o| o != *fp))
            .map(|(k, _)| k.clone())
            .collect();
        let first = !issuer.loaded.load(Ordering::Acquire);
        let key_count = set.len();
        self.metrics
            .keys
            .with_label_values(&[label])
            .set(i64::try_from(key_count).unwrap_or(i64::MAX));
        issuer.keys.store(Arc::new(set));
        issuer.loaded.store(true, Ordering::Release);
        if first || !added.is_empty() || !removed.is_empty() || !replaced.is_empty() {
            let gone: Vec<String> = removed.iter().chain(&replaced).cloned().collect();
            self.cache.purge(idx, &gone);
            self.metrics.changes.with_label_values(&[label]).inc();
            tracing::info!(
                issuer = label,
                ?added,
                ?removed,
                ?replaced,
                key_count,
                "JWKS key set changed"
            );
            if let Some(observer) = &self.observer {
                observer(&KeySetChange {
                    issuer_label: label.to_owned(),
                    added,
                    removed,
                    replaced,
                    key_count,
                });
            }
        }
    }
}

/// Checks the time, issuer, audience and subject claims; returns `exp`.
fn check_claims(
    settings: &IssuerSettings,
    claims: &Map<String, Value>,
    now: i64,
    exact_issuer: bool,
) -> Result<i64, JwtError> {
    let leeway = settings.leeway_seconds;
    let date = |name| parse::numeric_date(claims, name).map_err(|()| JwtError::Malformed);
    let exp = date("exp")?.ok_or(JwtError::MissingClaim("exp"))?;
    if now >= exp.saturating_add(leeway) {
        return Err(JwtError::Expired);
    }
    let future = |t: i64| t > now.saturating_add(leeway);
    if date("nbf")?.is_some_and(future) || date("iat")?.is_some_and(future) {
        return Err(JwtError::NotYetValid);
    }
    if !exact_issuer {
        return Err(JwtError::WrongIssuer);
    }
    let audiences = parse::string_list(claims, "aud");
    if !audiences.iter().any(|a| settings.audiences.contains(a)) {
        return Err(JwtError::WrongAudience);
    }
    match claims.get("sub").and_then(Value::as_str) {
        Some(sub) if !sub.is_empty() => Ok(exp),
        _ => Err(JwtError::MissingClaim("sub")),
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]
mod tests {
    use super::*;

    fn settings() -> IssuerSettings {
        let mut c = IssuerConfig::with_jwks_url(
            "https://idp.example",
            "sso",
            vec!["portcullis".into()],
            "https://idp.example/jwks",
        );
        c.leeway_seconds = 10;
        IssuerSettings::try_new(&c).unwrap()
    }

    fn claims(json: Value) -> Map<String, Value> {
        match json {
            Value::Object(m) => m,
            _ => panic!("object"),
        }
    }

    #[test]
    fn claim_rules() {
        let s = settings();
        let base = serde_json::json!({"sub":"u1","aud":"portcullis","exp":1000});
        let check = |v: Value, now| check_claims(&s, &claims(v), now, true);
        assert_eq!(check(base.clone(), 500), Ok(1000));
        assert_eq!(check(base.clone(), 1009), Ok(1000), "within leeway");
        assert_eq!(check(base.clone(), 1010), Err(JwtError::Expired));
        let mut v = base.clone();
        v["nbf"] = 600.into();
        assert_eq!(check(v.clone(), 589), Err(JwtError::NotYetValid));
        assert_eq!(check(v, 590), Ok(1000));
        let mut v = base.clone();
        v["iat"] = 700.into();
        assert_eq!(check(v, 500), Err(JwtError::NotYetValid));
        let mut v = base.clone();
        v["aud"] = serde_json::json!(["other", "portcullis"]);
        assert_eq!(check(v.clone(), 500), Ok(1000));
        v["aud"] = serde_json::json!(["other"]);
        assert_eq!(check(v, 500), Err(JwtError::WrongAudience));
        let mut v = base.clone();
        v.as_object_mut().unwrap().remove("aud");
        assert_eq!(check(v, 500), Err(JwtError::WrongAudience));
        let mut v = base.clone();
        v.as_object_mut().unwrap().remove("exp");
        assert_eq!(check(v, 500), Err(JwtError::MissingClaim("exp")));
        let mut v = base.clone();
        v["exp"] = "1000".into();
        assert_eq!(check(v, 500), Err(JwtError::Malformed));
        let mut v = base.clone();
        v["sub"] = "".into();
        assert_eq!(check(v, 500), Err(JwtError::MissingClaim("sub")));
        assert_eq!(
            check_claims(&s, &claims(base), 500, false),
            Err(JwtError::WrongIssuer)
        );
    }

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
