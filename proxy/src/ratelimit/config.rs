//! The rate-limit section of the file (`proxy.rate_limits`): rules and store
//! as written, validated into [`RateLimitSettings`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use super::rules::{KeyKind, Rule};
use super::{FailMode, LocalStore, RateLimit, RedisStore, Store, StoreError};
use crate::mode::Mode;
use portcullis_contract::problems::Problems;
use portcullis_contract::redis_client::{self, RedisConfigError};
use portcullis_contract::shared::resolve_path;

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
    /// The policy's `rate_limit_class` obligation (`auth`, `reports`, `admin`,
    /// `export` in the shipped `data.yaml`) the rule belongs to: it is then checked
    /// only for requests the policy gave that class, after the policy decision.
    /// Default: none, the rule is checked for every request, before authentication
    /// (`client_ip`, `route`) or after it (`subject`).
    #[serde(default)]
    pub class: Option<String>,
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
        /// `redis://[user@]host:port[/db]`, without a password.
        url: String,
        /// File holding the Redis password (or `credential:NAME`), when the server
        /// asks for one. Default none.
        #[serde(default)]
        password_file: Option<PathBuf>,
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
    /// Local store, fail closed, and these rules: 20 requests/s per client
    /// IP (burst 40) everywhere; 10 login attempts per minute per account on
    /// the `auth` route; 50 requests/s per subject (burst 100); and one rule per
    /// `rate_limit_class` of the shipped policy (`auth`: 30 sign-in requests a minute
    /// per address, burst 10; `reports`: 60 CSP reports a minute per address, burst
    /// 20; `export`: 10 a minute per subject, burst 5; `admin`: 20/s per subject).
    fn default() -> Self {
        let rule = |name: &str, key, routes: &[&str], requests, period, burst| RuleConfig {
            name: name.to_owned(),
            key,
            routes: routes.iter().map(|r| (*r).to_owned()).collect(),
            class: None,
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
                // Per class of the shipped policy: sign-in gets its own budget per
                // address (/64), in front of the password hashing; the CSP collector
                // one per address; exports and administration one per subject.
                RuleConfig {
                    class: Some("auth".to_owned()),
                    ..rule("sign_in_client", KeyKind::ClientIp, &[], 30, 60, 10)
                },
                RuleConfig {
                    class: Some("reports".to_owned()),
                    ..rule("csp_reports_client", KeyKind::ClientIp, &[], 60, 60, 20)
                },
                RuleConfig {
                    class: Some("export".to_owned()),
                    ..rule("export_subject", KeyKind::Subject, &[], 10, 60, 5)
                },
                RuleConfig {
                    class: Some("admin".to_owned()),
                    ..rule("admin_subject", KeyKind::Subject, &[], 20, 1, 40)
                },
            ],
        }
    }
}

/// The validated store choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSettings {
    /// [`LocalStore`] with at most `max_keys` keys.
    Local { max_keys: usize },
    /// [`RedisStore`]; the password, if any, is read from `password_file` when built.
    Redis {
        url: String,
        password_file: Option<PathBuf>,
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
                password_file,
                key_prefix,
                timeout,
            } => Arc::new(RedisStore::try_new(
                url,
                password_file.as_deref(),
                key_prefix,
                *timeout,
            )?),
        })
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
    /// rule's `routes` may name, `base` the folder relative file names are taken from.
    /// Returns every problem found, with paths relative to the section
    /// (`rules[2].burst_requests`).
    pub fn validate(
        &self,
        known_routes: &[&str],
        base: &Path,
    ) -> Result<RateLimitSettings, Problems> {
        let Self {
            store,
            fail_mode,
            rules,
        } = self;
        let mut errors = Problems::default();
        let mut problem = |field: String, message: String| errors.push(field, message);

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
                password_file,
                key_prefix,
                timeout_milliseconds,
            } => {
                let password_file = password_file.as_deref().map(|f| resolve_path(base, f));
                match redis_client::client(url, password_file.as_deref()) {
                    Ok(_) => {}
                    Err(RedisConfigError::Url) => {
                        problem("store.url".into(), RedisConfigError::Url.to_string());
                    }
                    Err(e) => problem("store.password_file".into(), e.to_string()),
                }
                if !(1..=10_000).contains(timeout_milliseconds) {
                    problem(
                        "store.timeout_milliseconds".into(),
                        "must be between 1 and 10000".into(),
                    );
                }
                StoreSettings::Redis {
                    url: url.clone(),
                    password_file,
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
            if let Some(class) = &r.class
                && !(1..=64).contains(&class.len())
            {
                problem(at("class"), "a class name is 1-64 characters".into());
            }
            if r.class.is_some() && r.key == KeyKind::LoginAccount {
                problem(
                    at("class"),
                    "login_account rules are checked before the policy's class is known: \
                     use `routes` instead"
                        .into(),
                );
            }
            let burst = r.burst_requests.unwrap_or(r.requests_per_period);
            match RateLimit::try_new(r.requests_per_period, r.period_seconds, burst) {
                Ok(limit) => {
                    let routes: Vec<&str> = r.routes.iter().map(String::as_str).collect();
                    let rule = Rule::new(
                        &r.name,
                        r.key,
                        &routes,
                        limit,
                        r.mode,
                        r.fail_mode.unwrap_or(*fail_mode),
                    );
                    parsed.push(match &r.class {
                        Some(class) => rule.with_class(class),
                        None => rule,
                    });
                }
                Err(e) => problem(at("requests_per_period"), e.to_string()),
            }
        }

        errors.into_result(|| RateLimitSettings {
            store,
            rules: parsed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn default_config_is_valid() {
        let s = RateLimitConfig::default()
            .validate(&["auth", "api"], Path::new(""))
            .unwrap();
        assert_eq!(s.rules.len(), 7);
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
            .validate(&["api"], Path::new(""))
            .unwrap_err()
            .into_iter()
            .map(|e| e.path)
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
        let settings = ok.validate(&[], Path::new("")).unwrap();
        assert_eq!(settings.rules[0].limit().burst(), 5);
    }
}
