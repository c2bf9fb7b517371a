//! [`JwtVerifier`]: the issuers' key state, the verified-token cache and the
//! checks of the module documentation, in order.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use prometheus::IntCounter;
use serde_json::Value;

use super::cache::{self, TokenCache};
use super::claims::check_claims;
use super::keys::{KeySet, StoredKey};
use super::{
    IssuerSettings, JwtError, JwtMetrics, JwtSetupError, KeySetChange, KeySetObserver,
    MAX_TOKEN_BYTES, RefreshError, TOKEN_CACHE_CAPACITY, VerifiedToken, fetch, parse,
};

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
    /// `portcullis_jwt_accepted_total{issuer}` for this issuer, resolved once: looking
    /// the series up per token hashes the label and writes to the vector's lock and
    /// the series' reference count, memory every worker thread shares.
    accepted: IntCounter,
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
                accepted: metrics
                    .accepted
                    .with_label_values(&[settings.label.as_str()]),
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
    /// The verified token is shared with the cache, not copied: its claims are a map
    /// of their own, and a copy per request cost some twenty allocations.
    pub async fn verify(&self, token: &str) -> Result<Arc<VerifiedToken>, JwtError> {
        let inner = &self.inner;
        match inner.verify(token, unix_now()).await {
            Ok((token, issuer)) => {
                issuer.accepted.inc();
                Ok(token)
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
