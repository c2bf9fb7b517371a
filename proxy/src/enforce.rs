//! Enforcement on the request path, in the order of DESIGN.md: pre-auth
//! rate limit (client IP, route) → authentication (bearer JWT or session
//! cookie, revoked sessions refused) → CSRF for cookie-authenticated unsafe
//! methods → post-auth rate limit (subject) → policy decision (regorus).
//! Each control has a per-route `enforce | report_only` mode read from the
//! policy bundle's data, so it hot-reloads with the bundle.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use percent_encoding::percent_decode_str;
use portcullis_authz::identity::IdentityKey;
use portcullis_authz::{Authorizer, Decision, PolicyBundle};
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use portcullis_audit::{AuditEvent, Category, Level, Outcome};

use crate::audit::{RequestInfo, with_principal};
use crate::csrf::{CsrfSettings, cookie, unsafe_method};
use crate::jwt::{JwtVerifier, VerifiedToken};
use crate::problem::Problem;
use crate::ratelimit::{KeyContext, KeyKind, RateLimitHeaders, Rules};
use crate::revocation::Revocations;

/// A control's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Enforce,
    ReportOnly,
}

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::ReportOnly => "report_only",
        }
    }
}

/// The modes of one route.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default)]
pub struct Modes {
    pub policy: Mode,
    pub rate_limit: Mode,
    pub csrf: Mode,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct PartialModes {
    policy: Option<Mode>,
    rate_limit: Option<Mode>,
    csrf: Option<Mode>,
}

/// Per-route modes from `data.config.modes` of the policy bundle.
#[derive(Debug, Clone, Default)]
pub struct RouteModes {
    default: Modes,
    routes: HashMap<String, Modes>,
}

impl RouteModes {
    /// Reads the modes from a bundle; anything malformed means `enforce`.
    pub fn from_bundle(bundle: &PolicyBundle) -> Self {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Doc {
            default: Modes,
            routes: HashMap<String, PartialModes>,
        }
        let doc: Doc = bundle
            .eval_value("data.config.modes", &json!({}))
            .ok()
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        let routes = doc
            .routes
            .into_iter()
            .map(|(name, p)| {
                (
                    name,
                    Modes {
                        policy: p.policy.unwrap_or(doc.default.policy),
                        rate_limit: p.rate_limit.unwrap_or(doc.default.rate_limit),
                        csrf: p.csrf.unwrap_or(doc.default.csrf),
                    },
                )
            })
            .collect();
        Self {
            default: doc.default,
            routes,
        }
    }

    pub fn get(&self, route: &str) -> Modes {
        self.routes.get(route).copied().unwrap_or(self.default)
    }
}

/// Enforcement metrics.
#[derive(Clone)]
pub struct EnforceMetrics {
    pub decisions: IntCounterVec,
    pub evaluation: Histogram,
    pub reloads: IntCounterVec,
    pub csrf: IntCounterVec,
    pub revocation_errors: IntCounter,
    pub auth_failures: IntCounterVec,
}

impl EnforceMetrics {
    pub fn try_new(registry: &Registry) -> prometheus::Result<Self> {
        let decisions = IntCounterVec::new(
            Opts::new(
                "portcullis_policy_decisions_total",
                "Policy decisions, by decision and mode.",
            ),
            &["decision", "mode"],
        )?;
        let evaluation = Histogram::with_opts(
            HistogramOpts::new(
                "portcullis_policy_evaluation_duration_seconds",
                "Time to evaluate the route policy.",
            )
            .buckets(vec![
                0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.1,
            ]),
        )?;
        let reloads = IntCounterVec::new(
            Opts::new(
                "portcullis_policy_reloads_total",
                "Policy bundle reloads, by result.",
            ),
            &["result"],
        )?;
        let csrf = IntCounterVec::new(
            Opts::new(
                "portcullis_csrf_rejections_total",
                "Requests failing the CSRF check, by reason and mode.",
            ),
            &["reason", "mode"],
        )?;
        let revocation_errors = IntCounter::new(
            "portcullis_revocation_feed_errors_total",
            "Failed polls of the backend's session revocation feed.",
        )?;
        let auth_failures = IntCounterVec::new(
            Opts::new(
                "portcullis_authentication_failures_total",
                "Requests refused for their credentials, by reason (bad bearer token, revoked session).",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(evaluation.clone()))?;
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(csrf.clone()))?;
        registry.register(Box::new(revocation_errors.clone()))?;
        registry.register(Box::new(auth_failures.clone()))?;
        Ok(Self {
            decisions,
            evaluation,
            reloads,
            csrf,
            revocation_errors,
            auth_failures,
        })
    }
}

/// Everything enforcement needs, shared by all requests.
pub struct Enforcement {
    pub verifier: JwtVerifier,
    pub authorizer: Arc<Authorizer>,
    pub modes: Arc<ArcSwap<RouteModes>>,
    pub revocations: Arc<Revocations>,
    pub rates: Rules,
    pub csrf: CsrfSettings,
    pub identity_key: IdentityKey,
    pub access_cookie: String,
    pub metrics: EnforceMetrics,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub token: VerifiedToken,
    pub via_cookie: bool,
}

impl Principal {
    /// `password`, `oidc` or the like, from `amr`.
    pub fn auth_method(&self) -> &'static str {
        if self.token.amr.iter().any(|m| m == "ext") {
            "oidc"
        } else if self.token.amr.iter().any(|m| m == "pwd") {
            "password"
        } else {
            "token"
        }
    }
}

/// A refusal to answer locally.
pub struct Refusal {
    pub problem: Problem,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// What enforcement decided for a request that may proceed.
#[derive(Default)]
pub struct Passed {
    pub principal: Option<Principal>,
    pub decision_id: String,
    pub rate_headers: Option<RateLimitHeaders>,
    pub obligations: Vec<(HeaderName, HeaderValue)>,
}

fn rate_limited(h: RateLimitHeaders) -> Refusal {
    let mut headers = Vec::new();
    if let Ok(v) = HeaderValue::from_str(&h.policy) {
        headers.push((HeaderName::from_static("ratelimit-policy"), v));
    }
    if let Ok(v) = HeaderValue::from_str(&h.rate_limit) {
        headers.push((HeaderName::from_static("ratelimit"), v));
    }
    if let Some(v) = h
        .retry_after
        .as_deref()
        .and_then(|r| HeaderValue::from_str(r).ok())
    {
        headers.push((http::header::RETRY_AFTER, v));
    }
    Refusal {
        problem: Problem::new(
            429,
            "rate-limited",
            "Too many requests",
            "Slow down and retry after the time in Retry-After",
        ),
        headers,
    }
}

fn unauthenticated(reason: &str) -> Refusal {
    Refusal {
        problem: Problem::new(
            401,
            "unauthenticated",
            "Authentication failed",
            format!("The credentials were refused ({reason})"),
        ),
        headers: vec![(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        )],
    }
}

/// Parses a query string into `name → [values]` (at most 64 pairs).
fn query_map(raw: Option<&str>) -> Value {
    let mut map = Map::new();
    for pair in raw
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .take(64)
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dec = |s: &str| {
            percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        if let Value::Array(a) = map
            .entry(dec(k))
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            a.push(Value::String(dec(v)));
        }
    }
    Value::Object(map)
}

/// What the gateway knows about the request.
pub struct RequestFacts<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub host: Option<&'a str>,
    pub route: &'a str,
    pub client_ip: Option<IpAddr>,
    pub request_id: &'a str,
}

impl RequestFacts<'_> {
    /// What every audit event of this request carries.
    pub fn audit_info(&self) -> RequestInfo<'_> {
        RequestInfo {
            request_id: self.request_id,
            client_ip: self.client_ip,
            route: self.route,
            user_agent: self
                .headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok()),
        }
    }
}

/// A rate-limit hit (`rate_limit.reject`): outcome failure when enforced, success (the
/// request passed) in report-only mode.
fn rate_event(
    info: &RequestInfo<'_>,
    hit: &crate::ratelimit::RuleHit,
    enforced: bool,
    key: &str,
) -> AuditEvent {
    let outcome = if enforced {
        Outcome::Failure
    } else {
        Outcome::Success
    };
    info.event(Category::Security, "rate_limit.reject", outcome)
        .level(Level::Warning)
        .detail("rule", hit.rule.to_string())
        .detail("key", key)
        .detail("mode", if enforced { "enforce" } else { "report_only" })
        .detail("store_error", hit.store_error)
}

/// Credentials refused (`token.reject`, category `auth`).
fn token_event(info: &RequestInfo<'_>, reason: &str, via_cookie: bool) -> AuditEvent {
    info.event(Category::Auth, "token.reject", Outcome::Failure)
        .level(Level::Warning)
        .auth_method(if via_cookie { "cookie" } else { "bearer" })
        .detail("reason", reason)
}

impl Enforcement {
    /// The current per-route modes.
    pub fn modes_for(&self, route: &str) -> Modes {
        self.modes.load().get(route)
    }

    /// Authenticates: a bearer token that fails is a 401; a cookie that
    /// fails (stale after expiry, say) just means anonymous.
    async fn authenticate(
        &self,
        facts: &RequestFacts<'_>,
        audit: &mut Vec<AuditEvent>,
    ) -> Result<Option<Principal>, Refusal> {
        let info = facts.audit_info();
        let bearer = facts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
                    .ok_or(())
            });
        let (token, via_cookie) = match bearer {
            Some(Ok(t)) => (t, false),
            Some(Err(())) => {
                self.metrics
                    .auth_failures
                    .with_label_values(&["unsupported_scheme"])
                    .inc();
                audit.push(token_event(&info, "unsupported_scheme", false));
                return Err(unauthenticated("use the Bearer scheme"));
            }
            None => match cookie(facts.headers, &self.access_cookie) {
                Some(t) => (t, true),
                None => return Ok(None),
            },
        };
        match self.verifier.verify(token).await {
            Ok(token) => {
                if token
                    .sid
                    .as_deref()
                    .is_some_and(|sid| self.revocations.is_revoked(sid))
                {
                    self.metrics
                        .auth_failures
                        .with_label_values(&["session_revoked"])
                        .inc();
                    let mut e = token_event(&info, "session_revoked", via_cookie)
                        .user_id(token.sub.clone());
                    if let Some(sid) = &token.sid {
                        e = e.session_id(sid.clone());
                    }
                    audit.push(e);
                    if via_cookie {
                        return Ok(None);
                    }
                    return Err(unauthenticated("session_revoked"));
                }
                Ok(Some(Principal { token, via_cookie }))
            }
            Err(e) if via_cookie => {
                tracing::debug!(
                    reason = e.reason(),
                    "session cookie refused; treating as anonymous"
                );
                Ok(None)
            }
            Err(e) => {
                audit.push(token_event(&info, e.reason(), false));
                Err(unauthenticated(e.reason()))
            }
        }
    }

    fn policy_input(&self, facts: &RequestFacts<'_>, principal: Option<&Principal>) -> Value {
        let segments: Vec<&str> = facts.path.split('/').filter(|s| !s.is_empty()).collect();
        let mut headers = Map::new();
        for name in [
            "user-agent",
            "origin",
            "sec-fetch-site",
            "sec-fetch-mode",
            "content-type",
            "accept",
        ] {
            if let Some(v) = facts.headers.get(name).and_then(|v| v.to_str().ok()) {
                headers.insert(name.to_owned(), Value::String(v.to_owned()));
            }
        }
        let subject = match principal {
            Some(p) => json!({
                "authenticated": true,
                "sub": p.token.sub,
                "username": p.token.claims.get("preferred_username").cloned().unwrap_or(Value::Null),
                "roles": p.token.roles,
                "auth_method": p.auth_method(),
                "session_id": p.token.sid,
                "mfa": p.token.amr.iter().any(|m| m == "otp" || m == "mfa"),
                "issuer": p.token.issuer,
            }),
            None => json!({ "authenticated": false }),
        };
        json!({
            "request": {
                "method": facts.method.as_str(),
                "path": facts.path,
                "segments": segments,
                "query": query_map(facts.query),
                "headers": headers,
            },
            "subject": subject,
            "source": { "ip": facts.client_ip.map(|ip| ip.to_string()) },
            "route": facts.route,
            "time": { "unix_seconds": time::OffsetDateTime::now_utc().unix_timestamp() },
        })
    }

    /// Runs every control. `Ok` means the request goes upstream. Refusals (and would-be
    /// refusals of report-only controls) are added to `audit`.
    pub async fn check(
        &self,
        facts: &RequestFacts<'_>,
        audit: &mut Vec<AuditEvent>,
    ) -> Result<Passed, Refusal> {
        let info = facts.audit_info();
        let modes = self.modes_for(facts.route);
        let mut passed = Passed::default();

        // 1. Pre-auth rate limit.
        let pre = self
            .rates
            .check_all(
                &KeyContext {
                    route: facts.route,
                    client_ip: facts.client_ip,
                    subject: None,
                    login_account: None,
                },
                &[KeyKind::ClientIp, KeyKind::Route],
            )
            .await;
        if let Some(hit) = &pre.denied {
            let enforced = modes.rate_limit == Mode::Enforce;
            audit.push(rate_event(&info, hit, enforced, "client_ip_or_route"));
            if enforced {
                return Err(rate_limited(hit.headers()));
            }
            tracing::warn!(target: "portcullis::decision", request_id = facts.request_id, rule = %hit.rule, route = facts.route, "rate limit exceeded (report only)");
        }
        passed.rate_headers = pre.headers();

        // 2. Authentication.
        let principal = self.authenticate(facts, audit).await?;

        // 3. CSRF for cookie sessions.
        if let Some(p) = &principal
            && p.via_cookie
            && unsafe_method(facts.method)
            && let Err(failure) = self.csrf.check(facts.headers, facts.host)
        {
            self.metrics
                .csrf
                .with_label_values(&[failure.code(), modes.csrf.label()])
                .inc();
            tracing::warn!(target: "portcullis::decision", request_id = facts.request_id, reason = failure.code(), mode = modes.csrf.label(), route = facts.route, "CSRF check failed");
            let enforced = modes.csrf == Mode::Enforce;
            let outcome = if enforced {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            audit.push(with_principal(
                info.event(Category::Security, "csrf.reject", outcome)
                    .level(Level::Warning)
                    .detail("reason", failure.code())
                    .detail("mode", modes.csrf.label())
                    .detail("method", facts.method.as_str()),
                Some(p),
            ));
            if enforced {
                return Err(Refusal {
                    problem: Problem::new(
                        403,
                        "csrf",
                        "Cross-site request refused",
                        "The request did not come from this application's pages",
                    ),
                    headers: Vec::new(),
                });
            }
        }

        // 4. Post-auth rate limit.
        if let Some(p) = &principal {
            let post = self
                .rates
                .check_all(
                    &KeyContext {
                        route: facts.route,
                        client_ip: facts.client_ip,
                        subject: Some(&p.token.sub),
                        login_account: None,
                    },
                    &[KeyKind::Subject],
                )
                .await;
            if let Some(hit) = &post.denied {
                let enforced = modes.rate_limit == Mode::Enforce;
                audit.push(with_principal(
                    rate_event(&info, hit, enforced, "subject"),
                    Some(p),
                ));
                if enforced {
                    return Err(rate_limited(hit.headers()));
                }
                tracing::warn!(target: "portcullis::decision", request_id = facts.request_id, rule = %hit.rule, "rate limit exceeded (report only)");
            }
            if post.tightest.is_some() {
                passed.rate_headers = post.headers().or(passed.rate_headers);
            }
        }

        // 5. Policy decision.
        let input = self.policy_input(facts, principal.as_ref());
        let bundle = self.authorizer.current();
        let started = Instant::now();
        let decision: Decision = bundle.decide("data.portcullis.http.decision", &input);
        self.metrics
            .evaluation
            .observe(started.elapsed().as_secs_f64());
        let decision_id = uuid::Uuid::now_v7().to_string();
        let subject = principal.as_ref().map(|p| p.token.sub.as_str());
        tracing::info!(
            target: "portcullis::decision",
            decision_id = %decision_id,
            request_id = facts.request_id,
            bundle_digest = bundle.digest(),
            allow = decision.allow,
            rule = %decision.rule,
            reason = %decision.reason,
            route = facts.route,
            subject,
            mode = modes.policy.label(),
            "policy decision"
        );
        let outcome = if decision.allow { "allow" } else { "deny" };
        self.metrics
            .decisions
            .with_label_values(&[outcome, modes.policy.label()])
            .inc();
        if !decision.allow {
            let enforced = modes.policy == Mode::Enforce;
            let outcome = if enforced {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            audit.push(with_principal(
                info.event(Category::Security, "policy.deny", outcome)
                    .level(Level::Warning)
                    .decision_id(decision_id.clone())
                    .policy_digest(bundle.digest())
                    .detail("rule", decision.rule.clone())
                    .detail("reason", decision.reason.clone())
                    .detail("mode", modes.policy.label())
                    .detail("method", facts.method.as_str())
                    .detail("path", facts.path),
                principal.as_ref(),
            ));
        }
        if !decision.allow && modes.policy == Mode::Enforce {
            let (status, kind, title) = if decision.reason == "unauthenticated" {
                (401, "unauthenticated", "Authentication required")
            } else {
                (403, "forbidden", "Forbidden")
            };
            let detail = if decision.public_reason {
                format!("Refused by policy: {}", decision.reason)
            } else {
                "Refused by policy".to_owned()
            };
            let mut problem = Problem::new(status, kind, title, detail);
            problem.decision_id = Some(decision_id);
            let headers = if status == 401 {
                vec![(
                    http::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer"),
                )]
            } else {
                Vec::new()
            };
            return Err(Refusal { problem, headers });
        }
        for (k, v) in &decision.obligations.headers {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                passed.obligations.push((k, v));
            }
        }
        passed.principal = principal;
        passed.decision_id = decision_id;
        Ok(passed)
    }

    /// The login-account rate limit, once the login body has been read.
    pub async fn check_login_account(
        &self,
        info: &RequestInfo<'_>,
        account: &str,
        audit: &mut Vec<AuditEvent>,
    ) -> Result<(), Refusal> {
        let (route, client_ip) = (info.route, info.client_ip);
        let d = self
            .rates
            .check_all(
                &KeyContext {
                    route,
                    client_ip,
                    subject: None,
                    login_account: Some(account),
                },
                &[KeyKind::LoginAccount],
            )
            .await;
        let Some(hit) = d.denied else {
            return Ok(());
        };
        let enforced = self.modes_for(route).rate_limit == Mode::Enforce;
        audit.push(rate_event(info, &hit, enforced, "login_account").user_id(account));
        if enforced {
            Err(rate_limited(hit.headers()))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_become_arrays() {
        let q = query_map(Some("a=1&a=2&b=x%20y&c&d=e+f"));
        assert_eq!(
            q,
            json!({"a": ["1", "2"], "b": ["x y"], "c": [""], "d": ["e f"]})
        );
        assert_eq!(query_map(None), json!({}));
    }
}
