//! The rate-limit guards over the configured [`Rules`]: before
//! authentication by client IP and route ([`ClientLimit`]), after it by
//! subject ([`SubjectLimit`]), after the policy decision the rules of the class it
//! named ([`ClassLimit`]), and for a sign-in by the account its body
//! names ([`LoginAccountLimit`]). Over the limit is a 429 with the
//! `RateLimit-*` and `Retry-After` headers, or an audit event only when the
//! route's rate-limit mode is `report_only`.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use portcullis_audit::{AuditEvent, Category, Level};

use super::{RequestGuard, Verdict};
use crate::context::{RequestCtx, RequestFacts, RequestInfo, outcome};
use crate::mode::Mode;
use crate::problem::{Problem, Refusal};
use crate::ratelimit::{KeyContext, KeyKind, RateLimitHeaders, RuleHit, Rules};

/// The 429 for a rule's headers.
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

/// A rate-limit hit (`rate_limit.reject`): outcome failure when enforced, success (the
/// request passed) in report-only mode.
fn rate_event(info: &RequestInfo<'_>, hit: &RuleHit, mode: Mode, key: &str) -> AuditEvent {
    info.event(
        Category::Security,
        "rate_limit.reject",
        outcome(mode.enforced()),
    )
    .level(Level::Warning)
    .detail("rule", hit.rule.to_string())
    .detail("key", key)
    .detail("mode", mode.label())
    .detail("store_error", hit.store_error)
}

/// Records a hit's audit event; the 429 when the route enforces rate limits, else
/// `None` (report-only: the request goes on, the would-be refusal is logged).
fn over_limit(ctx: &mut RequestCtx, hit: &RuleHit, event: AuditEvent) -> Option<Verdict> {
    ctx.audit.push(event);
    if ctx.modes.rate_limit.enforced() {
        return Some(Verdict::Refuse(rate_limited(hit.headers())));
    }
    tracing::warn!(target: "portcullis::decision", request_id = ctx.request_id.as_str(), rule = %hit.rule, route = ctx.route_label(), "rate limit exceeded (report only)");
    None
}

/// Pre-auth: the rules keyed by client IP or route.
pub struct ClientLimit {
    pub rules: Arc<Rules>,
}

impl RequestGuard for ClientLimit {
    async fn check(&self, req: &RequestFacts<'_>, ctx: &mut RequestCtx) -> Verdict {
        let pre = self
            .rules
            .check_all(
                &KeyContext {
                    route: ctx.route_label(),
                    client_ip: ctx.client_ip,
                    subject: None,
                    login_account: None,
                    class: None,
                },
                &[KeyKind::ClientIp, KeyKind::Route],
            )
            .await;
        if let Some(hit) = &pre.denied {
            let mode = ctx.modes.rate_limit;
            let event = rate_event(&ctx.info(req.user_agent()), hit, mode, "client_ip_or_route");
            if let Some(refused) = over_limit(ctx, hit, event) {
                return refused;
            }
        }
        ctx.rate_limit = pre.into_advertised();
        Verdict::Continue
    }
}

/// Post-auth: the rules keyed by the verified subject.
pub struct SubjectLimit {
    pub rules: Arc<Rules>,
}

impl RequestGuard for SubjectLimit {
    async fn check(&self, req: &RequestFacts<'_>, ctx: &mut RequestCtx) -> Verdict {
        let Some(p) = &ctx.principal else {
            return Verdict::Continue;
        };
        let post = self
            .rules
            .check_all(
                &KeyContext {
                    route: ctx.route_label(),
                    client_ip: ctx.client_ip,
                    subject: Some(&p.token.sub),
                    login_account: None,
                    class: None,
                },
                &[KeyKind::Subject],
            )
            .await;
        if let Some(hit) = &post.denied {
            let mode = ctx.modes.rate_limit;
            let event = p.annotate(rate_event(
                &ctx.info(req.user_agent()),
                hit,
                mode,
                "subject",
            ));
            if let Some(refused) = over_limit(ctx, hit, event) {
                return refused;
            }
        }
        if post.tightest.is_some() {
            ctx.rate_limit = post.into_advertised().or(ctx.rate_limit.take());
        }
        Verdict::Continue
    }
}

/// After the policy: the rules of the `rate_limit_class` its decision named (the
/// obligation in `data.yaml`), by client address, route or subject.
pub struct ClassLimit {
    pub rules: Arc<Rules>,
}

impl RequestGuard for ClassLimit {
    async fn check(&self, req: &RequestFacts<'_>, ctx: &mut RequestCtx) -> Verdict {
        let Some(class) = ctx.rate_limit_class.as_deref() else {
            return Verdict::Continue;
        };
        let d = self
            .rules
            .check_all(
                &KeyContext {
                    route: ctx.route_label(),
                    client_ip: ctx.client_ip,
                    subject: ctx.principal.as_ref().map(|p| p.token.sub.as_str()),
                    login_account: None,
                    class: Some(class),
                },
                &[KeyKind::ClientIp, KeyKind::Route, KeyKind::Subject],
            )
            .await;
        if let Some(hit) = &d.denied {
            let mode = ctx.modes.rate_limit;
            let event = rate_event(&ctx.info(req.user_agent()), hit, mode, "class")
                .detail("class", class.to_owned());
            let event = match &ctx.principal {
                Some(p) => p.annotate(event),
                None => event,
            };
            if let Some(refused) = over_limit(ctx, hit, event) {
                return refused;
            }
        }
        if d.tightest.is_some() {
            ctx.rate_limit = d.into_advertised().or(ctx.rate_limit.take());
        }
        Verdict::Continue
    }
}

/// The account a sign-in body names (its JSON `username`), for [`LoginAccountLimit`];
/// `None` when the body is not JSON or names none.
pub fn login_account(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("username")
                .and_then(|u| u.as_str())
                .map(str::to_owned)
        })
}

/// The sign-in account's limit, checked once the sign-in body has been read
/// (in `request_body_filter`, so not a [`RequestGuard`]).
pub struct LoginAccountLimit {
    pub rules: Arc<Rules>,
}

impl LoginAccountLimit {
    /// Counts a sign-in for `account`; its audit event goes to `ctx.audit`.
    pub async fn check(
        &self,
        ctx: &mut RequestCtx,
        user_agent: Option<&str>,
        account: &str,
    ) -> Verdict {
        let d = self
            .rules
            .check_all(
                &KeyContext {
                    route: ctx.route_label(),
                    client_ip: ctx.client_ip,
                    subject: None,
                    login_account: Some(account),
                    class: None,
                },
                &[KeyKind::LoginAccount],
            )
            .await;
        let Some(hit) = d.denied else {
            return Verdict::Continue;
        };
        // The modes this request started with (set by `Guards::check`).
        let mode = ctx.modes.rate_limit;
        let event = rate_event(&ctx.info(user_agent), &hit, mode, "login_account").user_id(account);
        ctx.audit.push(event);
        if mode.enforced() {
            Verdict::Refuse(rate_limited(hit.headers()))
        } else {
            Verdict::Continue
        }
    }
}
