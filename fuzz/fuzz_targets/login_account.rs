//! The sign-in account the proxy reads out of a `POST /auth/login` body
//! (`guards::rate_limit::login_account`), and the per-account rate-limit key made from
//! it (`ratelimit::Rules`, over a store that records the keys it is asked about).
//!
//! A body the backend accepts as a sign-in (the shape of `LoginRequest` in
//! backend/src/identity/login.rs, mirrored below) must have its account counted:
//! otherwise a spelling the backend reads but the proxy does not would escape the
//! per-account limit.
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use async_trait::async_trait;
use libfuzzer_sys::fuzz_target;
use portcullis_proxy::fuzzing::login_account;
use portcullis_proxy::ratelimit::{
    FailMode, KeyContext, KeyKind, Mode, RateLimit, RateLimitMetrics, Rule, Rules, Store,
    StoreError, Verdict,
};
use serde::Deserialize;

/// The backend's sign-in body (`identity::login::LoginRequest`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "only the shape matters")]
struct LoginRequest {
    username: String,
    password: String,
    totp_code: Option<String>,
    backup_code: Option<String>,
    new_password: Option<String>,
    client: Option<String>,
}

/// Allows everything and remembers the keys.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

#[async_trait]
impl Store for Recorder {
    fn kind(&self) -> &'static str {
        "recorder"
    }

    async fn check(
        &self,
        key: &str,
        limit: &RateLimit,
        _now: Instant,
    ) -> Result<Verdict, StoreError> {
        self.0.lock().expect("recorder lock").push(key.to_owned());
        Ok(Verdict {
            allowed: true,
            limit: limit.burst(),
            remaining: limit.burst(),
            reset_after: std::time::Duration::ZERO,
            retry_after: None,
        })
    }
}

struct Harness {
    runtime: tokio::runtime::Runtime,
    recorder: Arc<Recorder>,
    rules: Rules,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let recorder = Arc::new(Recorder::default());
        let limit = RateLimit::try_new(10, 60, 10).expect("limit");
        let rule = Rule::new(
            "login",
            KeyKind::LoginAccount,
            &[],
            limit,
            Mode::Enforce,
            FailMode::Closed,
        );
        let metrics =
            RateLimitMetrics::try_new(&prometheus::Registry::new()).expect("rate-limit metrics");
        let store: Arc<dyn Store> = recorder.clone();
        Harness {
            runtime: tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime"),
            recorder,
            rules: Rules::new(vec![rule], store, metrics),
        }
    })
}

fuzz_target!(|body: &[u8]| {
    let account = login_account(body);
    // Known, reported in issue 12 (the ignored test in backend/src/identity/login.rs): the
    // backend also reads a sign-in written as a JSON array, in field order; the proxy finds
    // no account in it.
    let array = body.trim_ascii_start().starts_with(b"[");
    if let Ok(request) = serde_json::from_slice::<LoginRequest>(body)
        && !array
    {
        assert_eq!(
            account.as_deref(),
            Some(request.username.as_str()),
            "a sign-in the backend reads is not counted under its account"
        );
    }
    let Some(account) = account else {
        return;
    };
    let h = harness();
    h.recorder.0.lock().expect("recorder lock").clear();
    let ctx = KeyContext {
        route: "auth",
        client_ip: None,
        subject: None,
        login_account: Some(&account),
        class: None,
    };
    let decision = h
        .runtime
        .block_on(h.rules.check_all(&ctx, &[KeyKind::LoginAccount]));
    assert!(decision.allowed());
    let keys = std::mem::take(&mut *h.recorder.0.lock().expect("recorder lock"));
    // The backend's account: trimmed, lower-cased; empty is no account.
    let canonical = account.trim().to_lowercase();
    if canonical.is_empty() {
        assert!(keys.is_empty(), "an empty account was counted: {keys:?}");
        return;
    }
    let [key] = keys.as_slice() else {
        panic!("expected one key, got {keys:?}");
    };
    // The store never holds the account in clear, and keys stay short.
    let hash = key.strip_prefix("login:acct:").expect("key prefix");
    assert!(
        hash.len() == 32
            && hash
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "{key:?}"
    );
});
