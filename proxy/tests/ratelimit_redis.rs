//! The Redis store against the real Redis at 127.0.0.1:6379 (override with
//! `PORTCULLIS_TEST_REDIS_URL`), and against an unreachable one.
//!
//! Tests that need Redis skip (with a note) when it is unreachable, except
//! when `CI` is set: then they fail.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]
#![allow(
    clippy::disallowed_methods,
    reason = "the test's Redis URL and the CI flag come from the environment, not secrets"
)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use portcullis_proxy::ratelimit::{
    FailMode, KeyContext, KeyKind, Mode, RateLimit, RateLimitMetrics, RedisStore, Rule, Rules,
    Store, StoreError,
};
use prometheus::Registry;

fn redis_url() -> String {
    std::env::var("PORTCULLIS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A key prefix no other test (or test run) uses.
fn prefix(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("portcullis-test:{test}:{}:{nanos}:", std::process::id())
}

async fn raw_connection() -> Option<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(redis_url()).ok()?;
    let conn = tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await
    .ok()?
    .ok()?;
    Some(conn)
}

/// A connection to the test Redis, or `None` (skip) — never `None` under CI.
async fn require_redis(test: &str) -> Option<redis::aio::MultiplexedConnection> {
    match raw_connection().await {
        Some(conn) => Some(conn),
        None if std::env::var_os("CI").is_some() => {
            panic!(
                "{test}: Redis at {} is unreachable and CI is set",
                redis_url()
            )
        }
        None => {
            eprintln!("{test}: SKIPPED, Redis at {} is unreachable", redis_url());
            None
        }
    }
}

fn store(prefix: &str) -> RedisStore {
    RedisStore::try_new(&redis_url(), None, prefix, Duration::from_millis(500)).unwrap()
}

#[tokio::test]
async fn two_proxies_share_one_limit() {
    let Some(_) = require_redis("two_proxies_share_one_limit").await else {
        return;
    };
    let prefix = prefix("share");
    // Two stores, as two proxies would have.
    let (a, b) = (store(&prefix), store(&prefix));
    let limit = RateLimit::try_new(1, 60, 5).unwrap();
    let mut remaining = Vec::new();
    let mut allowed = 0;
    for i in 0..10 {
        let s = if i % 2 == 0 { &a } else { &b };
        let v = s.check("client", &limit, Instant::now()).await.unwrap();
        if v.allowed {
            allowed += 1;
            remaining.push(v.remaining);
        } else {
            let retry = v.retry_after.unwrap();
            assert!(retry > Duration::from_secs(55) && retry <= Duration::from_secs(60));
        }
    }
    assert_eq!(allowed, 5);
    assert_eq!(remaining, vec![4, 3, 2, 1, 0]);
    // Another key is untouched.
    assert!(
        b.check("other", &limit, Instant::now())
            .await
            .unwrap()
            .allowed
    );
}

#[tokio::test]
async fn concurrent_checks_are_atomic() {
    let Some(_) = require_redis("concurrent_checks_are_atomic").await else {
        return;
    };
    let prefix = prefix("atomic");
    let stores = [Arc::new(store(&prefix)), Arc::new(store(&prefix))];
    let limit = RateLimit::try_new(1, 60, 20).unwrap();
    let mut tasks = Vec::new();
    for i in 0..100 {
        let s = Arc::clone(&stores[i % 2]);
        tasks.push(tokio::spawn(async move {
            s.check("hot", &limit, Instant::now())
                .await
                .unwrap()
                .allowed
        }));
    }
    let mut allowed = 0;
    for t in tasks {
        allowed += usize::from(t.await.unwrap());
    }
    assert_eq!(allowed, 20);
}

#[tokio::test]
async fn retry_after_is_honest() {
    let Some(_) = require_redis("retry_after_is_honest").await else {
        return;
    };
    let s = store(&prefix("retry"));
    let limit = RateLimit::try_new(10, 1, 1).unwrap(); // one per 100 ms
    assert!(s.check("k", &limit, Instant::now()).await.unwrap().allowed);
    let denied = s.check("k", &limit, Instant::now()).await.unwrap();
    assert!(!denied.allowed);
    let retry = denied.retry_after.unwrap();
    assert!(retry <= Duration::from_millis(100), "{retry:?}");
    tokio::time::sleep(retry).await;
    assert!(s.check("k", &limit, Instant::now()).await.unwrap().allowed);
}

#[tokio::test]
async fn keys_expire_and_the_script_survives_a_flush() {
    let Some(mut conn) = require_redis("keys_expire").await else {
        return;
    };
    let prefix = prefix("ttl");
    let s = store(&prefix);
    let limit = RateLimit::try_new(1, 10, 3).unwrap();
    assert!(s.check("k", &limit, Instant::now()).await.unwrap().allowed);
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{prefix}k"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 9_000 && ttl <= 10_000, "{ttl}");

    // EVALSHA falls back to loading the script when Redis forgot it.
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    let v = s.check("k", &limit, Instant::now()).await.unwrap();
    assert!(v.allowed);
    assert_eq!(v.remaining, 1);
}

fn rules(store: Arc<dyn Store>, fail_mode: FailMode, registry: &Registry) -> Rules {
    let metrics = RateLimitMetrics::try_new(registry).unwrap();
    let rule = Rule::new(
        "login",
        KeyKind::ClientIp,
        &[],
        RateLimit::try_new(5, 60, 5).unwrap(),
        Mode::Enforce,
        fail_mode,
    );
    Rules::new(vec![rule], store, metrics)
}

fn store_errors(registry: &Registry) -> u64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == "portcullis_ratelimit_store_errors_total")
        .flat_map(|f| f.get_metric())
        .filter(|m| {
            m.get_label()
                .iter()
                .any(|l| l.name() == "store" && l.value() == "redis")
        })
        .map(|m| m.get_counter().value() as u64)
        .sum()
}

#[tokio::test]
async fn unreachable_redis_fails_open_or_closed_as_configured() {
    // Nothing listens on port 1.
    let dead = || -> Arc<dyn Store> {
        Arc::new(
            RedisStore::try_new(
                "redis://127.0.0.1:1",
                None,
                "x:",
                Duration::from_millis(300),
            )
            .unwrap(),
        )
    };
    let ctx = KeyContext {
        route: "auth",
        client_ip: Some("192.0.2.7".parse().unwrap()),
        subject: None,
        login_account: None,
        class: None,
    };

    let started = Instant::now();
    let err = dead()
        .check("k", &RateLimit::try_new(1, 1, 1).unwrap(), Instant::now())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));

    let registry = Registry::new();
    let open = rules(dead(), FailMode::Open, &registry);
    for _ in 0..3 {
        let d = open.check_all(&ctx, &[KeyKind::ClientIp]).await;
        assert!(d.allowed());
        assert!(d.store_error);
        assert!(d.headers().is_none(), "no made-up numbers are advertised");
    }
    assert_eq!(store_errors(&registry), 3);

    let registry = Registry::new();
    let closed = rules(dead(), FailMode::Closed, &registry);
    let d = closed.check_all(&ctx, &[KeyKind::ClientIp]).await;
    assert!(!d.allowed());
    assert!(d.store_error);
    let denied = d.denied.as_ref().unwrap();
    assert_eq!(&*denied.rule, "login");
    assert_eq!(d.headers().unwrap().retry_after.as_deref(), Some("1"));
    assert_eq!(store_errors(&registry), 1);
}

#[tokio::test]
async fn a_server_that_never_answers_is_bounded_by_the_timeout() {
    // A listener that accepts and then says nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let timeout = Duration::from_millis(400);
    let s = RedisStore::try_new(&format!("redis://{addr}"), None, "x:", timeout).unwrap();
    let limit = RateLimit::try_new(1, 1, 1).unwrap();
    let started = Instant::now();
    assert!(s.check("k", &limit, Instant::now()).await.is_err());
    let first = started.elapsed();
    assert!(first >= timeout && first < timeout * 5, "{first:?}");
    // Right after a failure, checks fail fast without waiting for the timeout again. (The
    // bound is half the timeout, not a few milliseconds: a test thread on a loaded
    // two-core CI machine can be descheduled for tens of them.)
    let started = Instant::now();
    assert!(s.check("k", &limit, Instant::now()).await.is_err());
    let second = started.elapsed();
    assert!(second < timeout / 2, "{second:?}");
}

#[tokio::test]
async fn recovers_when_redis_comes_back() {
    let Some(_) = require_redis("recovers_when_redis_comes_back").await else {
        return;
    };
    // A proxy in front of the real Redis that we can cut.
    let upstream: std::net::SocketAddr = redis_url()
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cut2 = Arc::clone(&cut);
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            if cut2.load(std::sync::atomic::Ordering::SeqCst) {
                continue; // dropped: connection closed
            }
            let cut3 = Arc::clone(&cut2);
            tokio::spawn(async move {
                let mut outbound = tokio::net::TcpStream::connect(upstream).await.unwrap();
                let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                let watch = async {
                    while !cut3.load(std::sync::atomic::Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                };
                tokio::select! { _ = copy => {}, () = watch => {} }
            });
        }
    });
    let s = RedisStore::try_new(
        &format!("redis://{addr}"),
        None,
        &prefix("recover"),
        Duration::from_millis(300),
    )
    .unwrap();
    let limit = RateLimit::try_new(100, 1, 100).unwrap();
    assert!(s.check("k", &limit, Instant::now()).await.unwrap().allowed);
    cut.store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(s.check("k", &limit, Instant::now()).await.is_err());
    cut.store(false, std::sync::atomic::Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if s.check("k", &limit, Instant::now()).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the store did not reconnect");
    }
}

/// A Redis that asks for a password (`requirepass`): the store authenticates with the
/// password from its file, and without it (or with a wrong one) every check fails, so
/// the rule's fail mode decides instead of an unauthenticated connection.
#[tokio::test]
async fn a_password_protected_redis_is_reached_with_the_password_file() {
    let binary = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(binary) = binary else {
        assert!(
            std::env::var_os("CI").is_none(),
            "redis-server is missing and CI is set"
        );
        eprintln!("SKIPPED: redis-server not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let password = "redis-test-password-4c1d";
    let mut server = std::process::Command::new(binary)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--requirepass",
            password,
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = format!("redis://127.0.0.1:{port}");
    let file = dir.path().join("redis.password");
    let limit = RateLimit::try_new(10, 1, 10).unwrap();

    std::fs::write(&file, format!("{password}\n")).unwrap();
    let s = RedisStore::try_new(&url, Some(&file), "p:", Duration::from_millis(500)).unwrap();
    let verdict = s.check("k", &limit, Instant::now()).await;
    assert!(
        verdict.unwrap().allowed,
        "the password from the file opens it"
    );

    let none = RedisStore::try_new(&url, None, "p:", Duration::from_millis(500)).unwrap();
    assert!(
        none.check("k", &limit, Instant::now()).await.is_err(),
        "no password, no answer"
    );
    let wrong = dir.path().join("wrong.password");
    std::fs::write(&wrong, "not-it").unwrap();
    let bad = RedisStore::try_new(&url, Some(&wrong), "p:", Duration::from_millis(500)).unwrap();
    assert!(bad.check("k", &limit, Instant::now()).await.is_err());
    // A missing file is a configuration error, not a store that quietly has no password.
    assert!(
        RedisStore::try_new(
            &url,
            Some(&dir.path().join("missing")),
            "p:",
            Duration::from_millis(500)
        )
        .is_err()
    );
    server.kill().unwrap();
    server.wait().unwrap();
}
