//! Rule evaluation over the local store: which rules apply, report-only
//! mode, the most restrictive denial, headers and metrics.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_proxy::ratelimit::{
    FailMode, KeyContext, KeyKind, LocalStore, Mode, RateLimit, RateLimitConfig, RateLimitHeaders,
    RateLimitMetrics, Rule, Rules, Store,
};
use prometheus::Registry;

const PRE_AUTH: &[KeyKind] = &[KeyKind::ClientIp, KeyKind::Route];
const POST_AUTH: &[KeyKind] = &[KeyKind::Subject, KeyKind::LoginAccount];

fn rule(
    name: &str,
    key: KeyKind,
    routes: &[&str],
    per_minute: u32,
    burst: u32,
    mode: Mode,
) -> Rule {
    Rule::new(
        name,
        key,
        routes,
        RateLimit::try_new(per_minute, 60, burst).unwrap(),
        mode,
        FailMode::Closed,
    )
}

fn rules(list: Vec<Rule>) -> (Rules, Registry) {
    let registry = Registry::new();
    let metrics = RateLimitMetrics::try_new(&registry).unwrap();
    (
        Rules::new(list, Arc::new(LocalStore::new(10_000)), metrics),
        registry,
    )
}

fn rejections(registry: &Registry, rule: &str, mode: &str) -> u64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == "portcullis_ratelimit_rejections_total")
        .flat_map(|f| f.get_metric())
        .filter(|m| {
            let label = |n: &str| {
                m.get_label()
                    .iter()
                    .find(|l| l.name() == n)
                    .map(|l| l.value().to_owned())
            };
            label("rule").as_deref() == Some(rule) && label("mode").as_deref() == Some(mode)
        })
        .map(|m| m.get_counter().value() as u64)
        .sum()
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

fn ctx<'a>(
    route: &'a str,
    client: &str,
    subject: Option<&'a str>,
    account: Option<&'a str>,
) -> KeyContext<'a> {
    KeyContext {
        route,
        client_ip: ip(client),
        subject,
        login_account: account,
        class: None,
    }
}

#[tokio::test]
async fn stages_check_only_their_kinds() {
    let (rules, _) = rules(vec![
        rule("ip", KeyKind::ClientIp, &[], 1, 2, Mode::Enforce),
        rule("sub", KeyKind::Subject, &[], 1, 1, Mode::Enforce),
    ]);
    let c = ctx("api", "192.0.2.1", Some("alice"), None);
    // Pre-auth counts only the IP rule, post-auth only the subject rule, so
    // one request is counted once by each.
    assert!(rules.check_all(&c, PRE_AUTH).await.allowed());
    assert!(rules.check_all(&c, POST_AUTH).await.allowed());
    assert!(
        rules.check_all(&c, PRE_AUTH).await.allowed(),
        "IP burst is 2"
    );
    let d = rules.check_all(&c, POST_AUTH).await;
    assert_eq!(d.denied.as_ref().map(|h| &*h.rule), Some("sub"));
    // An anonymous request skips the subject rule.
    let anon = ctx("api", "192.0.2.2", None, None);
    assert!(rules.check_all(&anon, POST_AUTH).await.allowed());
}

#[tokio::test]
async fn route_filters_apply() {
    let (rules, _) = rules(vec![rule(
        "auth_ip",
        KeyKind::ClientIp,
        &["auth"],
        1,
        1,
        Mode::Enforce,
    )]);
    for _ in 0..5 {
        assert!(
            rules
                .check_all(&ctx("api", "192.0.2.1", None, None), PRE_AUTH)
                .await
                .allowed()
        );
    }
    assert!(
        rules
            .check_all(&ctx("auth", "192.0.2.1", None, None), PRE_AUTH)
            .await
            .allowed()
    );
    assert!(
        !rules
            .check_all(&ctx("auth", "192.0.2.1", None, None), PRE_AUTH)
            .await
            .allowed()
    );
}

#[tokio::test]
async fn login_account_is_limited_across_addresses() {
    let (rules, _) = rules(vec![rule(
        "acct",
        KeyKind::LoginAccount,
        &["auth"],
        3,
        3,
        Mode::Enforce,
    )]);
    let mut allowed = 0;
    for (i, spelling) in ["alice", "Alice", " ALICE ", "alice", "aLiCe"]
        .iter()
        .enumerate()
    {
        let client = format!("198.51.100.{i}");
        let c = ctx("auth", &client, None, Some(spelling));
        allowed += usize::from(rules.check_all(&c, POST_AUTH).await.allowed());
    }
    assert_eq!(allowed, 3);
    // Another account is unaffected; a request without an account skips it.
    assert!(
        rules
            .check_all(&ctx("auth", "198.51.100.1", None, Some("bob")), POST_AUTH)
            .await
            .allowed()
    );
    assert!(
        rules
            .check_all(&ctx("auth", "198.51.100.1", None, None), POST_AUTH)
            .await
            .allowed()
    );
}

#[tokio::test]
async fn ipv6_clients_share_their_slash_64() {
    let (rules, _) = rules(vec![rule(
        "ip",
        KeyKind::ClientIp,
        &[],
        1,
        2,
        Mode::Enforce,
    )]);
    assert!(
        rules
            .check_all(&ctx("api", "2001:db8::1", None, None), PRE_AUTH)
            .await
            .allowed()
    );
    assert!(
        rules
            .check_all(&ctx("api", "2001:db8::ffff:2", None, None), PRE_AUTH)
            .await
            .allowed()
    );
    assert!(
        !rules
            .check_all(&ctx("api", "2001:db8::3", None, None), PRE_AUTH)
            .await
            .allowed()
    );
    assert!(
        rules
            .check_all(&ctx("api", "2001:db8:0:1::1", None, None), PRE_AUTH)
            .await
            .allowed()
    );
}

#[tokio::test]
async fn report_only_counts_but_lets_through() {
    let (rules, registry) = rules(vec![rule(
        "trial",
        KeyKind::ClientIp,
        &[],
        1,
        1,
        Mode::ReportOnly,
    )]);
    let c = ctx("api", "192.0.2.9", None, None);
    let first = rules.check_all(&c, PRE_AUTH).await;
    assert!(first.allowed() && first.report_only.is_empty());
    assert!(
        first.headers().is_none(),
        "report-only rules are not advertised"
    );
    for _ in 0..3 {
        let d = rules.check_all(&c, PRE_AUTH).await;
        assert!(d.allowed());
        assert_eq!(d.report_only.len(), 1);
        assert_eq!(&*d.report_only[0].rule, "trial");
    }
    assert_eq!(rejections(&registry, "trial", "report_only"), 3);
    assert_eq!(rejections(&registry, "trial", "enforce"), 0);
}

#[tokio::test]
async fn the_most_restrictive_denial_wins() {
    let (rules, registry) = rules(vec![
        // Refills one request per 6 s.
        rule("fast", KeyKind::ClientIp, &[], 10, 1, Mode::Enforce),
        // Refills one request per 60 s.
        rule("slow", KeyKind::Route, &[], 1, 1, Mode::Enforce),
    ]);
    let c = ctx("api", "192.0.2.1", None, None);
    let d = rules.check_all(&c, PRE_AUTH).await;
    assert!(d.allowed());
    // Both at zero: the tightest advertised is one with remaining 0.
    assert_eq!(d.tightest.as_ref().unwrap().verdict.remaining, 0);
    let d = rules.check_all(&c, PRE_AUTH).await;
    let denied = d.denied.as_ref().unwrap();
    assert_eq!(&*denied.rule, "slow");
    let headers = d.headers().unwrap();
    assert_eq!(headers.policy, "\"slow\";q=1;w=60");
    assert_eq!(headers.rate_limit, "\"slow\";r=0;t=60");
    assert_eq!(headers.retry_after.as_deref(), Some("60"));
    assert_eq!(rejections(&registry, "fast", "enforce"), 1);
    assert_eq!(rejections(&registry, "slow", "enforce"), 1);
}

#[tokio::test]
async fn allowed_requests_advertise_the_tightest_rule() {
    let (rules, _) = rules(vec![
        rule("roomy", KeyKind::ClientIp, &[], 100, 100, Mode::Enforce),
        rule("tight", KeyKind::Route, &[], 60, 5, Mode::Enforce),
    ]);
    let d = rules
        .check_all(&ctx("api", "192.0.2.1", None, None), PRE_AUTH)
        .await;
    let h = d.headers().unwrap();
    assert_eq!(h.policy, "\"tight\";q=60;w=60");
    assert_eq!(h.rate_limit, "\"tight\";r=4;t=1");
    assert_eq!(h.retry_after, None);
    assert_eq!(RateLimitHeaders::POLICY, "RateLimit-Policy");
}

#[tokio::test]
async fn default_configuration_builds_and_limits() {
    let settings = RateLimitConfig::default()
        .validate(
            &["api", "auth", "admin", "monitoring", "app"],
            std::path::Path::new(""),
        )
        .unwrap();
    let store = settings.store.build().unwrap();
    assert_eq!(store.kind(), "local");
    let rules = Rules::new(
        settings.rules,
        store,
        RateLimitMetrics::try_new(&Registry::new()).unwrap(),
    );
    let c = ctx("auth", "192.0.2.1", None, Some("admin"));
    let allowed = {
        let mut n = 0;
        for _ in 0..15 {
            n += usize::from(rules.check_all(&c, POST_AUTH).await.allowed());
        }
        n
    };
    assert_eq!(allowed, 10, "10 login attempts per minute per account");
}

#[tokio::test]
async fn local_store_retry_after_is_honest_in_real_time() {
    let store = LocalStore::new(100);
    let limit = RateLimit::try_new(20, 1, 1).unwrap(); // one per 50 ms
    assert!(
        store
            .check("k", &limit, Instant::now())
            .await
            .unwrap()
            .allowed
    );
    let denied = store.check("k", &limit, Instant::now()).await.unwrap();
    let retry = denied.retry_after.unwrap();
    assert!(retry <= Duration::from_millis(50));
    tokio::time::sleep(retry).await;
    assert!(
        store
            .check("k", &limit, Instant::now())
            .await
            .unwrap()
            .allowed
    );
}
