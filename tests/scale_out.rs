//! Scale-out: two instances of `portcullis up` (a proxy and a backend each) on loopback,
//! sharing one PostgreSQL database, Redis (rate limits and the revocation channel) and
//! the key files (copied, as a secret manager delivers them to every host). A session
//! revoked through one backend is refused by both proxies within a second; a rate limit
//! is one budget across both proxies; the audit events of all four processes arrive in
//! the shared table once each, four chains (`proxy-a`, `backend-a`, `proxy-b`,
//! `backend-b`) that verify.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use portcullis_testkit::assert_eventually;
use portcullis_testkit::pg::TestDatabase;
use reqwest::StatusCode;
use sqlx::Row;
use support::{Portcullis, portcullis};

const PW: &str = "a long enough password";

async fn metric(p: &Portcullis, prefix: &str) -> u64 {
    p.metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .map_or(0, |n| n.trim().parse().unwrap())
}

async fn get(p: &Portcullis, token: &str) -> StatusCode {
    p.client()
        .get(p.url("/api/tickets"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

/// Per emitter: events stored, distinct seqs, and the lowest and highest seq.
async fn chains(db: &sqlx::AnyPool) -> BTreeMap<String, (i64, i64, i64, i64)> {
    sqlx::query(
        "select emitter, count(*), count(distinct seq), min(seq), max(seq) \
         from audit_events group by emitter",
    )
    .fetch_all(db)
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.try_get::<String, _>(0).unwrap(),
            (
                r.try_get(1).unwrap(),
                r.try_get(2).unwrap(),
                r.try_get(3).unwrap(),
                r.try_get(4).unwrap(),
            ),
        )
    })
    .collect()
}

/// Events an emitter's file sink holds (every event it spooled, in order).
fn file_events(p: &Portcullis, emitter: &str) -> i64 {
    std::fs::read_to_string(p.state_dir().join(format!("audit/{emitter}.jsonl")))
        .unwrap_or_default()
        .lines()
        .count() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_and_two_backends_share_revocations_limits_and_the_audit_table() {
    if !support::redis_available().await {
        eprintln!("skipped: no Redis at 127.0.0.1:6379");
        return;
    }
    let db = TestDatabase::create("scaleout").await;
    let unique = portcullis_testkit::unique();
    let shared = format!(
        "  revocation_pubsub: {{url: 'redis://127.0.0.1:6379', channel: 'portcullis-scaleout-{unique}'}}\n"
    );
    // One budget of 12 API requests per subject across both proxies; everything else
    // generous (also kept in Redis, so shared too).
    let limits = format!(
        "  rate_limits:\n    store: {{kind: redis, url: 'redis://127.0.0.1:6379', key_prefix: 'portcullis-scaleout-{unique}:'}}\n    rules:\n      - {{name: per_ip, key: client_ip, requests_per_period: 100000, burst_requests: 100000}}\n      - {{name: api_per_subject, key: subject, routes: [api], requests_per_period: 12, period_seconds: 600}}\n"
    );
    let instance = |name: &str| {
        portcullis()
            // Only the announcement on Redis can make a proxy refuse within a second.
            .revocation_poll_milliseconds(60_000)
            .shared_yaml(&shared)
            .proxy_yaml(&limits)
            .backend_yaml(&format!("  database_url: '{}'\n", db.url))
            .audit_yaml(&format!("  instance: {name}\n"))
    };
    let a = instance("a").start().await;
    a.add_users(&[("alice", "employee", PW), ("bob", "employee", PW)]);
    // The second host gets the first one's keys (token signing, identity, MFA).
    let b = instance("b")
        .seed_keys(&a.state_dir().join("keys"))
        .start()
        .await;
    for p in [&a, &b] {
        assert_eventually!(
            p.metrics()
                .await
                .contains("portcullis_revocation_pubsub_up 1"),
            Duration::from_secs(10),
            "a proxy did not subscribe to the revocation channel"
        );
    }

    // A token issued through one instance works through both.
    let token = a.login("alice", PW).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(get(&a, &token).await, StatusCode::OK);
    assert_eq!(get(&b, &token).await, StatusCode::OK);

    // Signed out through the other instance: both proxies refuse it within a second,
    // each by its own revocation list (its counter says so, not only the backend).
    let before = [
        metric(
            &a,
            "portcullis_authentication_failures_total{reason=\"session_revoked\"} ",
        )
        .await,
        metric(
            &b,
            "portcullis_authentication_failures_total{reason=\"session_revoked\"} ",
        )
        .await,
    ];
    let started = Instant::now();
    let r = b
        .client()
        .post(b.url("/auth/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    for (i, p) in [&a, &b].into_iter().enumerate() {
        loop {
            let status = get(p, &token).await;
            let revoked = metric(
                p,
                "portcullis_authentication_failures_total{reason=\"session_revoked\"} ",
            )
            .await;
            if status == StatusCode::UNAUTHORIZED && revoked > before[i] {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "proxy {i} still accepts the signed-out token after 1 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // One rate-limit budget across the two proxies.
    let bob = b.login("bob", PW).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut allowed = 0;
    for i in 0..20 {
        match get(if i % 2 == 0 { &a } else { &b }, &bob).await {
            StatusCode::OK => allowed += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!(allowed, 12, "the two proxies share one budget of 12");

    // Every process's events reach the shared table once each: four chains, each
    // without a gap or a repeat, and as many events as its file sink holds.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
    let emitters = ["proxy-a", "backend-a", "proxy-b", "backend-b"];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stored = chains(&pool).await;
        let complete = emitters.iter().all(|e| {
            let p = if e.ends_with("-a") { &a } else { &b };
            stored
                .get(*e)
                .is_some_and(|(n, _, _, _)| *n > 0 && *n == file_events(p, e))
        });
        if complete {
            for e in emitters {
                let (n, distinct, min, max) = stored[e];
                assert_eq!((n, distinct, min, max), (n, n, 1, n), "{e}: {stored:?}");
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every emitter's events arrived once each: {stored:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (ok, out) = a.cli(&["audit", "verify", "--database"]);
    assert!(ok, "{out}");
    for e in emitters {
        assert!(out.contains(&format!("audit_events ({e}): ok")), "{out}");
    }
    pool.close().await;
    drop(a);
    drop(b);
    db.drop().await;
}
