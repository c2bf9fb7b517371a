//! Configured rate-limit rules and their evaluation.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::{
    FailMode, LocalStore, RateLimit, RateLimitHeaders, RateLimitMetrics, RedisStore, Store,
    StoreError, Verdict,
};

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

/// Whether a rule denies or only reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Requests over the limit are denied (429).
    #[default]
    Enforce,
    /// Requests over the limit are counted and logged, and let through:
    /// for trying a limit on real traffic first.
    ReportOnly,
}

impl Mode {
    /// The `mode` metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::ReportOnly => "report_only",
        }
    }
}

/// One rule, as written in the configuration file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Rule name: the `rule` metric label and the name in the `RateLimit`
    /// headers (letters, digits, `_`, `-`; at most 64).
    pub name: String,
    /// What requests are counted by.
    pub key: KeyKind,
    /// Route names the rule applies to. Default: every route.
    #[serde(default)]
    pub routes: Vec<String>,
    /// Average requests allowed per period.
    pub requests_per_period: u32,
    /// The period. Default 1.
    #[serde(default = "default_period")]
    pub period_seconds: u64,
    /// Requests a rested client may make at once. Default:
    /// `requests_per_period`.
    #[serde(default)]
    pub burst_requests: Option<u32>,
    /// `enforce` (default) or `report_only`.
    #[serde(default)]
    pub mode: Mode,
    /// Overrides the section's `fail_mode` for this rule.
    #[serde(default)]
    pub fail_mode: Option<FailMode>,
}

fn default_period() -> u64 {
    1
}

/// Where rate-limit state lives.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StoreConfig {
    /// In this proxy's memory: limits are per proxy.
    Local {
        /// Most keys held. Default 100000.
        #[serde(default = "default_max_keys")]
        max_keys: usize,
    },
    /// In Redis: every proxy shares the limits.
    Redis {
        /// `redis://[user:password@]host:port[/db]`.
        url: String,
        /// Prefix of every key. Default `portcullis:ratelimit:`.
        #[serde(default = "default_key_prefix")]
        key_prefix: String,
        /// Time limit of one check, after which the fail mode decides.
        /// Default 250.
        #[serde(default = "default_timeout_ms")]
        timeout_milliseconds: u64,
    },
}

fn default_max_keys() -> usize {
    100_000
}
fn default_key_prefix() -> String {
    "portcullis:ratelimit:".to_owned()
}
fn default_timeout_ms() -> u64 {
    250
}

/// The rate-limit section of the configuration file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Default: `{kind: local}`.
    pub store: StoreConfig,
    /// What rules do when the store fails: `closed` (default: deny with
    /// `Retry-After: 1`) or `open` (allow). Rules may override it.
    pub fail_mode: FailMode,
    /// The rules; a request is checked against every rule that applies.
    pub rules: Vec<RuleConfig>,
}

impl Default for RateLimitConfig {
    /// Local store, fail closed, and three rules: 20 requests/s per client
    /// IP (burst 40) everywhere; 10 login attempts per minute per account on
    /// the `auth` route; 50 requests/s per subject (burst 100).
    fn default() -> Self {
        let rule = |name: &str, key, routes: &[&str], requests, period, burst| RuleConfig {
            name: name.to_owned(),
            key,
            routes: routes.iter().map(|r| (*r).to_owned()).collect(),
            requests_per_period: requests,
            period_seconds: period,
            burst_requests: Some(burst),
            mode: Mode::Enforce,
            fail_mode: None,
        };
        Self {
            store: StoreConfig::Local {
                max_keys: default_max_keys(),
            },
            fail_mode: FailMode::Closed,
            rules: vec![
                rule("client_ip", KeyKind::ClientIp, &[], 20, 1, 40),
                rule(
                    "login_account",
                    KeyKind::LoginAccount,
                    &["auth"],
                    10,
                    60,
                    10,
                ),
                rule("subject", KeyKind::Subject, &[], 50, 1, 100),
            ],
        }
    }
}

/// A configuration mistake; `field` is relative to the section
/// (`rules[2].burst_requests`), so the caller prefixes its path.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field}: {message}")]
pub struct RateLimitConfigError {
    pub field: String,
    pub message: String,
}

/// The validated store choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSettings {
    /// [`LocalStore`] with at most `max_keys` keys.
    Local { max_keys: usize },
    /// [`RedisStore`]. `url` may hold a password: never log it.
    Redis {
        url: String,
        key_prefix: String,
        timeout: Duration,
    },
}

impl StoreSettings {
    /// Builds the store. Redis is not contacted yet.
    pub fn build(&self) -> Result<Arc<dyn Store>, StoreError> {
        Ok(match self {
            Self::Local { max_keys } => Arc::new(LocalStore::new(*max_keys)),
            Self::Redis {
                url,
                key_prefix,
                timeout,
            } => Arc::new(RedisStore::try_new(url, key_prefix, *timeout)?),
        })
    }
}

/// One validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    name: Arc<str>,
    key: KeyKind,
    /// `None`: every route.
    routes: Option<BTreeSet<String>>,
    limit: RateLimit,
    mode: Mode,
    fail_mode: FailMode,
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
            routes: (!routes.is_empty()).then(|| routes.iter().map(|r| (*r).to_owned()).collect()),
            limit,
            mode,
            fail_mode,
        }
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

/// The validated section.
#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    /// Build it with [`StoreSettings::build`].
    pub store: StoreSettings,
    /// Hand them to [`Rules::new`].
    pub rules: Vec<Rule>,
}

impl RateLimitConfig {
    /// Validates the section; `known_routes` are the configured route names a
    /// rule's `routes` may name. Returns every problem found.
    pub fn validate(
        &self,
        known_routes: &[&str],
    ) -> Result<RateLimitSettings, Vec<RateLimitConfigError>> {
        let Self {
            store,
            fail_mode,
            rules,
        } = self;
        let mut errors = Vec::new();
        let mut problem = |field: String, message: String| {
            errors.push(RateLimitConfigError { field, message });
        };

        let store = match store {
            StoreConfig::Local { max_keys } => {
                if !(1..=10_000_000).contains(max_keys) {
                    problem(
                        "store.max_keys".into(),
                        "must be between 1 and 10000000".into(),
                    );
                }
                StoreSettings::Local {
                    max_keys: *max_keys,
                }
            }
            StoreConfig::Redis {
                url,
                key_prefix,
                timeout_milliseconds,
            } => {
                if redis::Client::open(url.as_str()).is_err() {
                    // Not echoed: the URL may hold a password.
                    problem(
                        "store.url".into(),
                        "not a valid redis://host:port[/db] URL (TLS, rediss://, is not built in)"
                            .into(),
                    );
                }
                if !(1..=10_000).contains(timeout_milliseconds) {
                    problem(
                        "store.timeout_milliseconds".into(),
                        "must be between 1 and 10000".into(),
                    );
                }
                StoreSettings::Redis {
                    url: url.clone(),
                    key_prefix: key_prefix.clone(),
                    timeout: Duration::from_millis(*timeout_milliseconds),
                }
            }
        };

        let mut names = BTreeSet::new();
        let mut parsed = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            let at = |f: &str| format!("rules[{i}].{f}");
            let name_ok = !r.name.is_empty()
                && r.name.len() <= 64
                && r.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !name_ok {
                problem(
                    at("name"),
                    "use 1-64 of letters, digits, `_` and `-`".into(),
                );
            } else if !names.insert(r.name.clone()) {
                problem(at("name"), format!("`{}` is used twice", r.name));
            }
            for (j, route) in r.routes.iter().enumerate() {
                if !known_routes.contains(&route.as_str()) {
                    problem(
                        format!("rules[{i}].routes[{j}]"),
                        format!("no route named `{route}`"),
                    );
                }
            }
            let burst = r.burst_requests.unwrap_or(r.requests_per_period);
            match RateLimit::try_new(r.requests_per_period, r.period_seconds, burst) {
                Ok(limit) => {
                    let routes: Vec<&str> = r.routes.iter().map(String::as_str).collect();
                    parsed.push(Rule::new(
                        &r.name,
                        r.key,
                        &routes,
                        limit,
                        r.mode,
                        r.fail_mode.unwrap_or(*fail_mode),
                    ));
                }
                Err(e) => problem(at("requests_per_period"), e.to_string()),
            }
        }

        if errors.is_empty() {
            Ok(RateLimitSettings {
                store,
                rules: parsed,
            })
        } else {
            Err(errors)
        }
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
            if !kinds.contains(&rule.key) {
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
fn rule_key(rule: &Rule, ctx: &KeyContext<'_>) -> Option<String> {
    let value = match rule.key {
        KeyKind::ClientIp => ip_key(ctx.client_ip?),
        KeyKind::Subject => hashed(ctx.subject.filter(|s| !s.is_empty())?),
        KeyKind::Route => ctx.route.to_owned(),
        KeyKind::LoginAccount => {
            let account = ctx.login_account?.trim().to_lowercase();
            if account.is_empty() {
                return None;
            }
            hashed(&account)
        }
    };
    Some(format!("{}:{}:{value}", rule.name, rule.key.label()))
}

fn ip_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

fn hashed(value: &str) -> String {
    Sha256::digest(value.as_bytes())
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
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
    }

    #[test]
    fn default_config_is_valid() {
        let s = RateLimitConfig::default()
            .validate(&["auth", "api"])
            .unwrap();
        assert_eq!(s.rules.len(), 3);
        assert_eq!(s.store, StoreSettings::Local { max_keys: 100_000 });
    }

    #[test]
    fn validation_collects_every_problem() {
        let config: RateLimitConfig = serde_json::from_value(serde_json::json!({
            "store": {"kind": "redis", "url": "not a url", "timeout_milliseconds": 0},
            "rules": [
                {"name": "bad name", "key": "client_ip", "requests_per_period": 0},
                {"name": "dup", "key": "subject", "requests_per_period": 5, "routes": ["nowhere"]},
                {"name": "dup", "key": "route", "requests_per_period": 5, "burst_requests": 0}
            ]
        }))
        .unwrap();
        let fields: Vec<String> = config
            .validate(&["api"])
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            vec![
                "store.url",
                "store.timeout_milliseconds",
                "rules[0].name",
                "rules[0].requests_per_period",
                "rules[1].routes[0]",
                "rules[2].name",
                "rules[2].requests_per_period",
            ]
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let parse = |v| serde_json::from_value::<RateLimitConfig>(v);
        assert!(parse(serde_json::json!({"rules": [], "extra": 1})).is_err());
        assert!(
            parse(serde_json::json!({"rules": [
                {"name": "a", "key": "client_ip", "requests_per_period": 1, "burst": 2}
            ]}))
            .is_err()
        );
        assert!(parse(serde_json::json!({"store": {"kind": "local", "url": "x"}})).is_err());
        let ok = parse(serde_json::json!({
            "store": {"kind": "redis", "url": "redis://127.0.0.1:6379"},
            "fail_mode": "open",
            "rules": [{"name": "a", "key": "login_account", "requests_per_period": 5,
                       "period_seconds": 60, "mode": "report_only", "fail_mode": "closed"}]
        }))
        .unwrap();
        let settings = ok.validate(&[]).unwrap();
        assert_eq!(settings.rules[0].limit().burst(), 5);
    }
}
