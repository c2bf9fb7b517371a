//! Validated rate-limit rules and their evaluation.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{
    FailMode, RateLimit, RateLimitHeaders, RateLimitMetrics, Store, StoreError, Verdict,
    policy_value, rate_limit_value,
};
use crate::mode::Mode;

/// What a rule counts requests by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    /// The client IP (from the trusted-proxy logic); IPv6 clients are
    /// grouped by /64, since one host usually holds a whole /64.
    ClientIp,
    /// The verified token's subject. Skipped for anonymous requests.
    Subject,
    /// The route: one budget shared by every client of the route.
    Route,
    /// The account named in a login request (trimmed, lower-cased), whoever
    /// sends it: stops password guessing against one account from many IPs.
    /// Skipped when the caller found no account.
    LoginAccount,
}

impl KeyKind {
    fn label(self) -> &'static str {
        match self {
            Self::ClientIp => "ip",
            Self::Subject => "sub",
            Self::Route => "route",
            Self::LoginAccount => "acct",
        }
    }
}

/// One validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    name: Arc<str>,
    key: KeyKind,
    /// `<name>:<kind>:`, how every store key of the rule starts.
    key_prefix: Box<str>,
    /// `None`: every route.
    routes: Option<BTreeSet<String>>,
    limit: RateLimit,
    mode: Mode,
    fail_mode: FailMode,
    /// The policy's `rate_limit_class` obligation this rule belongs to; `None`: the
    /// rule is checked for every request (before the policy decides).
    class: Option<Arc<str>>,
}

impl Rule {
    /// A rule; `routes` empty means every route.
    pub fn new(
        name: &str,
        key: KeyKind,
        routes: &[&str],
        limit: RateLimit,
        mode: Mode,
        fail_mode: FailMode,
    ) -> Self {
        Self {
            name: Arc::from(name),
            key,
            key_prefix: format!("{name}:{}:", key.label()).into(),
            routes: (!routes.is_empty()).then(|| routes.iter().map(|r| (*r).to_owned()).collect()),
            limit,
            mode,
            fail_mode,
            class: None,
        }
    }

    /// The rule applies only to requests whose policy decision names this
    /// `rate_limit_class`, once the policy has decided.
    #[must_use]
    pub fn with_class(mut self, class: &str) -> Self {
        self.class = Some(Arc::from(class));
        self
    }

    /// The rule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The rule's limit.
    pub fn limit(&self) -> &RateLimit {
        &self.limit
    }
}

/// What the caller knows about a request. Fields left `None` skip the rules
/// keyed by them.
#[derive(Debug, Clone, Copy)]
pub struct KeyContext<'a> {
    /// The matched route's name.
    pub route: &'a str,
    /// The client IP as established by the trusted-proxy logic.
    pub client_ip: Option<IpAddr>,
    /// The verified subject (`sub`).
    pub subject: Option<&'a str>,
    /// The account name from a login request body.
    pub login_account: Option<&'a str>,
    /// The policy's `rate_limit_class` for the request: only the rules of exactly this
    /// class are checked (`None`: only the rules without a class).
    pub class: Option<&'a str>,
}

/// One rule's verdict for a request.
#[derive(Debug, Clone)]
pub struct RuleHit {
    /// The rule's name (configured, safe as a label).
    pub rule: Arc<str>,
    pub mode: Mode,
    pub limit: RateLimit,
    pub verdict: Verdict,
    /// The store failed and the rule's fail mode produced this verdict.
    pub store_error: bool,
}

impl RuleHit {
    /// The response headers for this rule.
    pub fn headers(&self) -> RateLimitHeaders {
        RateLimitHeaders::render(&self.rule, &self.limit, &self.verdict)
    }

    /// The `RateLimit-Policy` value, for a response the request got through to.
    pub fn policy_value(&self) -> String {
        policy_value(&self.rule, &self.limit)
    }

    /// The `RateLimit` value, for a response the request got through to.
    pub fn rate_limit_value(&self) -> String {
        rate_limit_value(&self.rule, &self.verdict)
    }
}

/// The combined outcome of every applicable rule.
#[derive(Debug, Clone, Default)]
pub struct Decision {
    /// The enforce-mode denial with the longest `retry_after`, if any: the
    /// request must be refused (429 with its headers).
    pub denied: Option<RuleHit>,
    /// Report-only rules the request exceeded (it is let through).
    pub report_only: Vec<RuleHit>,
    /// When allowed, the enforced rule with the fewest remaining requests:
    /// the one to advertise in `RateLimit` headers.
    pub tightest: Option<RuleHit>,
    /// Whether any rule's store failed (settled by its fail mode).
    pub store_error: bool,
}

impl Decision {
    /// Whether the request may proceed.
    pub fn allowed(&self) -> bool {
        self.denied.is_none()
    }

    /// Headers for the response: the denying rule's, else the tightest's.
    pub fn headers(&self) -> Option<RateLimitHeaders> {
        self.denied
            .as_ref()
            .or(self.tightest.as_ref())
            .map(RuleHit::headers)
    }

    /// The hit [`Decision::headers`] describes: the denying rule, else the tightest.
    pub fn into_advertised(self) -> Option<RuleHit> {
        self.denied.or(self.tightest)
    }
}

/// Logs at most once per interval, counting what it held back.
struct LogLimiter {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

const STORE_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

impl LogLimiter {
    fn new() -> Self {
        Self {
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(held back since the last log)` when a line may be written now.
    fn permit(&self) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_some_and(|t| t.elapsed() < STORE_ERROR_LOG_INTERVAL) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(Instant::now());
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

/// The configured rules over one store.
pub struct Rules {
    rules: Vec<Rule>,
    store: Arc<dyn Store>,
    metrics: RateLimitMetrics,
    error_log: LogLimiter,
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rules")
            .field("rules", &self.rules)
            .field("store", &self.store.kind())
            .finish_non_exhaustive()
    }
}

/// Retry delay of a fail-closed denial.
const FAIL_CLOSED_RETRY: Duration = Duration::from_secs(1);

impl Rules {
    /// The rules, in evaluation order, over `store`; `metrics` must be
    /// registered by the caller.
    pub fn new(rules: Vec<Rule>, store: Arc<dyn Store>, metrics: RateLimitMetrics) -> Self {
        Self {
            rules,
            store,
            metrics,
            error_log: LogLimiter::new(),
        }
    }

    /// Checks the request against every rule whose key kind is in `kinds`,
    /// whose route filter admits `ctx.route` and whose key `ctx` provides —
    /// so a caller can check IP and route rules before authentication and
    /// subject and account rules after it, without counting a request
    /// twice. Every applicable rule counts the request (a denial by one
    /// does not spare the others). Counts rejections and store errors.
    pub async fn check_all(&self, ctx: &KeyContext<'_>, kinds: &[KeyKind]) -> Decision {
        let now = Instant::now();
        let mut decision = Decision::default();
        for rule in &self.rules {
            if !kinds.contains(&rule.key) || rule.class.as_deref() != ctx.class {
                continue;
            }
            if rule
                .routes
                .as_ref()
                .is_some_and(|routes| !routes.contains(ctx.route))
            {
                continue;
            }
            let Some(key) = rule_key(rule, ctx) else {
                continue;
            };
            let hit = match self.store.check(&key, &rule.limit, now).await {
                Ok(verdict) => RuleHit {
                    rule: Arc::clone(&rule.name),
                    mode: rule.mode,
                    limit: rule.limit,
                    verdict,
                    store_error: false,
                },
                Err(error) => {
                    decision.store_error = true;
                    self.store_failed(rule, &error);
                    let allowed = rule.fail_mode == FailMode::Open;
                    RuleHit {
                        rule: Arc::clone(&rule.name),
                        mode: rule.mode,
                        limit: rule.limit,
                        verdict: Verdict {
                            allowed,
                            limit: rule.limit.burst(),
                            remaining: 0,
                            reset_after: FAIL_CLOSED_RETRY,
                            retry_after: (!allowed).then_some(FAIL_CLOSED_RETRY),
                        },
                        store_error: true,
                    }
                }
            };
            if !hit.verdict.allowed {
                self.metrics
                    .rejections
                    .with_label_values(&[&*rule.name, rule.mode.label()])
                    .inc();
            }
            match (hit.mode, hit.verdict.allowed) {
                (Mode::ReportOnly, false) => decision.report_only.push(hit),
                (Mode::ReportOnly, true) => {}
                (Mode::Enforce, false) => {
                    let longer = decision
                        .denied
                        .as_ref()
                        .is_none_or(|d| d.verdict.retry_after < hit.verdict.retry_after);
                    if longer {
                        decision.denied = Some(hit);
                    }
                }
                (Mode::Enforce, true) => {
                    let tighter = !hit.store_error
                        && decision
                            .tightest
                            .as_ref()
                            .is_none_or(|t| hit.verdict.remaining < t.verdict.remaining);
                    if tighter {
                        decision.tightest = Some(hit);
                    }
                }
            }
        }
        decision
    }

    fn store_failed(&self, rule: &Rule, error: &StoreError) {
        let store = self.store.kind();
        self.metrics.store_errors.with_label_values(&[store]).inc();
        if let Some(suppressed) = self.error_log.permit() {
            tracing::warn!(
                store,
                rule = &*rule.name,
                fail_mode = ?rule.fail_mode,
                suppressed,
                %error,
                "rate-limit store failed; the rule's fail mode decides"
            );
        }
    }
}

/// The store key of `rule` for this request: `<rule>:<kind>:<value>`.
/// Subjects and account names are hashed (SHA-256, 128 bits) so that the
/// store — Redis included — never holds them in clear and keys stay short.
/// Written into one string: this runs for every rule on every request.
fn rule_key(rule: &Rule, ctx: &KeyContext<'_>) -> Option<String> {
    let mut key = String::with_capacity(rule.key_prefix.len() + 40);
    key.push_str(&rule.key_prefix);
    match rule.key {
        KeyKind::ClientIp => {
            portcullis_contract::headers::write_client_network(&mut key, ctx.client_ip?);
        }
        KeyKind::Subject => push_hashed(&mut key, ctx.subject.filter(|s| !s.is_empty())?),
        KeyKind::Route => key.push_str(ctx.route),
        KeyKind::LoginAccount => {
            let account = ctx.login_account?.trim().to_lowercase();
            if account.is_empty() {
                return None;
            }
            push_hashed(&mut key, &account);
        }
    }
    Some(key)
}

/// Appends the first 128 bits of `value`'s SHA-256, in hex.
fn push_hashed(key: &mut String, value: &str) {
    let mut hex = [0u8; 32];
    // 16 bytes always fill exactly the 32 digits: this cannot fail.
    let _ = hex::encode_to_slice(&Sha256::digest(value.as_bytes())[..16], &mut hex);
    key.extend(hex.iter().map(|&digit| char::from(digit)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(key: KeyKind) -> Rule {
        Rule::new(
            "r",
            key,
            &[],
            RateLimit::try_new(1, 1, 1).unwrap(),
            Mode::Enforce,
            FailMode::Closed,
        )
    }

    fn ctx<'a>(ip: &str, subject: Option<&'a str>, account: Option<&'a str>) -> KeyContext<'a> {
        KeyContext {
            route: "api",
            client_ip: Some(ip.parse().unwrap()),
            subject,
            login_account: account,
            class: None,
        }
    }

    #[test]
    fn keys() {
        let c = ctx(
            "2001:db8:1:2:3:4:5:6",
            Some("alice"),
            Some("  Alice@Example.ORG "),
        );
        assert_eq!(
            rule_key(&rule(KeyKind::ClientIp), &c).unwrap(),
            "r:ip:2001:db8:1:2::/64"
        );
        let c2 = ctx("2001:db8:1:2:ffff::1", None, Some("alice@example.org"));
        assert_eq!(
            rule_key(&rule(KeyKind::ClientIp), &c),
            rule_key(&rule(KeyKind::ClientIp), &c2)
        );
        assert_eq!(
            rule_key(
                &rule(KeyKind::ClientIp),
                &ctx("::ffff:10.0.0.1", None, None)
            )
            .unwrap(),
            "r:ip:10.0.0.1"
        );
        let sub = rule_key(&rule(KeyKind::Subject), &c).unwrap();
        assert!(sub.starts_with("r:sub:") && !sub.contains("alice"));
        assert_eq!(sub.len(), "r:sub:".len() + 32);
        assert_eq!(rule_key(&rule(KeyKind::Subject), &c2), None);
        assert_eq!(
            rule_key(&rule(KeyKind::LoginAccount), &c),
            rule_key(&rule(KeyKind::LoginAccount), &c2)
        );
        assert_eq!(
            rule_key(
                &rule(KeyKind::LoginAccount),
                &ctx("1.2.3.4", None, Some("  "))
            ),
            None
        );
        assert_eq!(rule_key(&rule(KeyKind::Route), &c).unwrap(), "r:route:api");
        let v4 = rule_key(&rule(KeyKind::ClientIp), &ctx("192.0.2.7", None, None)).unwrap();
        assert_eq!(v4, "r:ip:192.0.2.7");
    }

    /// The values written on a response the request got through to are those of a 429,
    /// for the same hit: the allowed requests' tightest, then the fourth's denial.
    #[tokio::test]
    async fn a_hits_header_values_are_the_rendered_ones() {
        let limit = RateLimit::try_new(100, 60, 3).unwrap();
        let rules = Rules::new(
            vec![Rule::new(
                "we\"ird",
                KeyKind::ClientIp,
                &[],
                limit,
                Mode::Enforce,
                FailMode::Closed,
            )],
            Arc::new(crate::ratelimit::LocalStore::new(16)),
            RateLimitMetrics::try_new(&prometheus::Registry::new()).unwrap(),
        );
        let c = ctx("192.0.2.7", None, None);
        for _ in 0..4 {
            let decision = rules.check_all(&c, &[KeyKind::ClientIp]).await;
            let rendered = decision.headers().unwrap();
            let hit = decision.into_advertised().unwrap();
            assert_eq!(hit.policy_value(), rendered.policy);
            assert_eq!(hit.rate_limit_value(), rendered.rate_limit);
            assert_eq!(rendered.policy, "\"we_ird\";q=100;w=60");
        }
    }
}
