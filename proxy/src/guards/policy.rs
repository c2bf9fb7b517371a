//! The policy guard: builds the policy input (documented in
//! `policies/README.md`), asks the current bundle for
//! `data.portcullis.http.decision`, logs and counts the decision, and
//! refuses with 401/403 (carrying the decision id) unless the route's policy
//! mode is `report_only`. An allowed request gets the decision id and the
//! obligations' headers.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderName, HeaderValue};
use percent_encoding::percent_decode_str;
use portcullis_audit::{Category, Level};
use portcullis_authz::{Authorizer, Decision, PolicyInput};
use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts, Registry};
use serde_json::{Map, Value, json};

use super::{RequestGuard, Verdict};
use crate::context::{Principal, RequestCtx, RequestFacts, outcome, with_principal};
use crate::problem::{Problem, Refusal};

/// The rule the policy guard asks for.
pub(crate) const HTTP_DECISION: &str = "data.portcullis.http.decision";

/// Policy metrics.
#[derive(Clone)]
pub struct PolicyMetrics {
    /// `portcullis_policy_decisions_total{decision,mode,rule}`.
    pub decisions: IntCounterVec,
    /// `portcullis_policy_evaluation_duration_seconds`.
    pub evaluation: Histogram,
    /// `portcullis_policy_denials_top_subject`.
    top_subject: Arc<DenialsBySubject>,
}

impl PolicyMetrics {
    pub fn try_new(registry: &Registry) -> prometheus::Result<Self> {
        let decisions = IntCounterVec::new(
            Opts::new(
                "portcullis_policy_decisions_total",
                "Policy decisions, by decision, mode and the rule that decided (a data.yaml route id or a deny rule).",
            ),
            &["decision", "mode", "rule"],
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
        let top_subject = Arc::new(DenialsBySubject::try_new()?);
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(evaluation.clone()))?;
        registry.register(Box::new(SharedCollector(Arc::clone(&top_subject))))?;
        Ok(Self {
            decisions,
            evaluation,
            top_subject,
        })
    }
}

/// The `rule` label: the policy's rule name when it looks like one (route ids and
/// rule names are short identifiers), else `other`, so a policy that put request
/// data into its rule could not grow the label set without bound.
fn rule_label(rule: &str) -> &str {
    let identifier = !rule.is_empty()
        && rule.len() <= 64
        && rule
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b));
    if identifier { rule } else { "other" }
}

/// How many subjects the denial window tracks; past that, new subjects share one
/// entry (the gauge can then only overstate, never hide a subject).
const TRACKED_SUBJECTS: usize = 10_000;
/// Minutes in the trailing window.
const WINDOW_MINUTES: usize = 5;
const OVERFLOW_SUBJECT: &str = "\0overflow";

/// Enforced policy denials per subject in the trailing five minutes, in one-minute
/// buckets; exported as the largest count (`portcullis_policy_denials_top_subject`),
/// computed when scraped. The subjects themselves stay out of the metrics (labels
/// are bounded); the `policy.deny` audit events name them.
struct DenialsBySubject {
    window: std::sync::Mutex<Window>,
    gauge: prometheus::IntGauge,
}

#[derive(Default)]
struct Window {
    /// The minute (Unix time / 60) the current bucket counts.
    minute: u64,
    counts: std::collections::HashMap<String, [u32; WINDOW_MINUTES]>,
}

impl Window {
    /// Moves the window to `minute`, emptying the buckets of the minutes passed.
    fn advance(&mut self, minute: u64) {
        if minute <= self.minute {
            return;
        }
        let passed = (minute - self.minute).min(WINDOW_MINUTES as u64);
        for step in 1..=passed {
            let slot = ((self.minute + step) % WINDOW_MINUTES as u64) as usize;
            for buckets in self.counts.values_mut() {
                buckets[slot] = 0;
            }
        }
        self.counts.retain(|_, b| b.iter().any(|n| *n > 0));
        self.minute = minute;
    }

    fn top(&self) -> u32 {
        self.counts
            .values()
            .map(|b| b.iter().sum::<u32>())
            .max()
            .unwrap_or(0)
    }
}

fn unix_minute() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

impl DenialsBySubject {
    fn try_new() -> prometheus::Result<Self> {
        Ok(Self {
            window: std::sync::Mutex::default(),
            gauge: prometheus::IntGauge::new(
                "portcullis_policy_denials_top_subject",
                "Enforced policy denials in the trailing 5 minutes of the subject with the most of them.",
            )?,
        })
    }

    fn record(&self, subject: &str, minute: u64) {
        let Ok(mut w) = self.window.lock() else {
            return;
        };
        w.advance(minute);
        let slot = (minute % WINDOW_MINUTES as u64) as usize;
        // A subject already tracked costs no allocation.
        if let Some(buckets) = w.counts.get_mut(subject) {
            buckets[slot] += 1;
            return;
        }
        let key = if w.counts.len() < TRACKED_SUBJECTS {
            subject
        } else {
            OVERFLOW_SUBJECT
        };
        w.counts.entry(key.to_owned()).or_default()[slot] += 1;
    }

    fn top(&self, minute: u64) -> u32 {
        self.window.lock().map_or(0, |mut w| {
            w.advance(minute);
            w.top()
        })
    }
}

/// Registers an `Arc`-shared collector (the guard keeps recording into it).
struct SharedCollector(Arc<DenialsBySubject>);

impl prometheus::core::Collector for SharedCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.0.gauge.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.0.gauge.set(i64::from(self.0.top(unix_minute())));
        self.0.gauge.collect()
    }
}

/// The policy guard.
pub struct PolicyGuard {
    pub authorizer: Arc<Authorizer>,
    pub metrics: PolicyMetrics,
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

/// The path's segments, as `input.request.segments` lists them.
fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

/// The policy input: request, subject, source, route, time.
pub(crate) fn policy_input(req: &RequestFacts<'_>, ctx: &RequestCtx) -> Value {
    let segments: Vec<&str> = segments(req.path).collect();
    let mut headers = Map::new();
    for name in [
        "user-agent",
        "origin",
        "sec-fetch-site",
        "sec-fetch-mode",
        "content-type",
        "accept",
    ] {
        if let Some(v) = req.headers.get(name).and_then(|v| v.to_str().ok()) {
            headers.insert(name.to_owned(), Value::String(v.to_owned()));
        }
    }
    json!({
        "request": {
            "method": req.method.as_str(),
            "path": req.path,
            "segments": segments,
            "query": query_map(req.query),
            "headers": headers,
        },
        "subject": subject(ctx.principal.as_ref()),
        "source": { "ip": ctx.client_ip.map(|ip| ip.to_string()) },
        "route": ctx.route_label(),
        "time": { "unix_seconds": time::OffsetDateTime::now_utc().unix_timestamp() },
    })
}

/// One request's policy input as the decision cache reads it: the fields a decision
/// usually depends on are written straight from the request, and the whole document
/// ([`policy_input`]) is built only for an evaluation or for a field not written here.
/// A cache hit, most requests, builds no JSON at all.
pub(crate) struct HttpInput<'r, 'a> {
    req: &'r RequestFacts<'a>,
    ctx: &'r RequestCtx,
    document: std::cell::OnceCell<Value>,
}

impl<'r, 'a> HttpInput<'r, 'a> {
    pub(crate) fn new(req: &'r RequestFacts<'a>, ctx: &'r RequestCtx) -> Self {
        Self {
            req,
            ctx,
            document: std::cell::OnceCell::new(),
        }
    }

    fn whole(&self) -> &Value {
        self.document
            .get_or_init(|| policy_input(self.req, self.ctx))
    }
}

impl PolicyInput for HttpInput<'_, '_> {
    fn write_at(&self, path: &[String], out: &mut Vec<u8>) -> bool {
        let principal = self.ctx.principal.as_ref();
        match path {
            [field] if field == "route" => write_json(out, self.ctx.route_label()),
            [part, field] => match (part.as_str(), field.as_str()) {
                ("request", "method") => write_json(out, self.req.method.as_str()),
                ("request", "path") => write_json(out, self.req.path),
                ("request", "segments") => {
                    out.push(b'[');
                    for (i, segment) in segments(self.req.path).enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        write_json(out, segment);
                    }
                    out.push(b']');
                }
                ("subject", "authenticated") => write_json(out, &principal.is_some()),
                ("subject", "roles") => match principal {
                    Some(p) => write_json(out, &p.token.roles),
                    None => return false,
                },
                ("subject", "sub") => match principal {
                    Some(p) => write_json(out, &p.token.sub),
                    None => return false,
                },
                _ => return self.whole().write_at(path, out),
            },
            _ => return self.whole().write_at(path, out),
        }
        true
    }

    fn document(&self) -> Cow<'_, Value> {
        Cow::Borrowed(self.whole())
    }
}

/// Appends `value`'s compact JSON, as `serde_json::Value` would write it.
fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Writing to a `Vec` cannot fail.
    let _ = serde_json::to_writer(out, value);
}

fn subject(principal: Option<&Principal>) -> Value {
    match principal {
        Some(p) => json!({
            "authenticated": true,
            "sub": p.token.sub,
            "username": p.token.claims.get("preferred_username").cloned().unwrap_or(Value::Null),
            "roles": p.token.roles,
            "auth_method": p.auth_method(),
            "session_id": p.token.sid,
            "mfa": p.used_second_factor(),
            "issuer": p.token.issuer,
        }),
        None => json!({ "authenticated": false }),
    }
}

/// The 401/403 for an enforced deny.
fn refused(decision: &Decision, decision_id: String) -> Refusal {
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
    Refusal { problem, headers }
}

impl RequestGuard for PolicyGuard {
    async fn check(&self, req: &RequestFacts<'_>, ctx: &mut RequestCtx) -> Verdict {
        let mode = ctx.modes.policy;
        let bundle = self.authorizer.current();
        let started = Instant::now();
        let decision: Decision = bundle.decide(HTTP_DECISION, &HttpInput::new(req, ctx));
        self.metrics
            .evaluation
            .observe(started.elapsed().as_secs_f64());
        let decision_id = uuid::Uuid::now_v7().to_string();
        let subject = ctx.principal.as_ref().map(|p| p.token.sub.as_str());
        // Every decision at debug (allows are the bulk of traffic); a deny is also an
        // audit event below.
        tracing::debug!(
            target: "portcullis::decision",
            decision_id = %decision_id,
            request_id = ctx.request_id.as_str(),
            bundle_digest = bundle.digest(),
            allow = decision.allow,
            rule = %decision.rule,
            reason = %decision.reason,
            route = ctx.route_label(),
            subject,
            mode = mode.label(),
            "policy decision"
        );
        let label = if decision.allow { "allow" } else { "deny" };
        self.metrics
            .decisions
            .with_label_values(&[label, mode.label(), rule_label(&decision.rule)])
            .inc();
        if !decision.allow
            && mode.enforced()
            && let Some(sub) = subject
        {
            self.metrics.top_subject.record(sub, unix_minute());
        }
        if !decision.allow {
            let event = with_principal(
                ctx.info(req.user_agent())
                    .event(Category::Security, "policy.deny", outcome(mode.enforced()))
                    .level(Level::Warning)
                    .decision_id(decision_id.clone())
                    .policy_digest(bundle.digest())
                    .detail("rule", decision.rule.clone())
                    .detail("reason", decision.reason.clone())
                    .detail("mode", mode.label())
                    .detail("method", req.method.as_str())
                    .detail("path", req.path),
                ctx.principal.as_ref(),
            );
            ctx.audit.push(event);
            if mode.enforced() {
                return Verdict::Refuse(refused(&decision, decision_id));
            }
        }
        for (k, v) in &decision.obligations.headers {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                ctx.obligations.push((k, v));
            }
        }
        ctx.rate_limit_class = decision.obligations.rate_limit_class.clone();
        ctx.decision_id = Some(decision_id);
        Verdict::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_top_subject_counts_the_trailing_five_minutes() {
        let d = DenialsBySubject::try_new().unwrap();
        let start = 29_000_000;
        for _ in 0..3 {
            d.record("7", start);
        }
        d.record("8", start + 1);
        d.record("7", start + 2);
        assert_eq!(d.top(start + 2), 4);
        // The first minute's three fall out of the window five minutes later.
        assert_eq!(d.top(start + 5), 1);
        assert_eq!(d.top(start + 7), 0);
        // A long silence empties everything, and the map with it.
        d.record("9", start + 100);
        assert_eq!(d.top(start + 100), 1);
        assert_eq!(d.window.lock().unwrap().counts.len(), 1);
    }

    #[test]
    fn rule_labels_stay_bounded() {
        assert_eq!(rule_label("ticket_comments"), "ticket_comments");
        assert_eq!(rule_label("method_not_permitted"), "method_not_permitted");
        assert_eq!(rule_label("/api/tickets/TCK-1?x=<script>"), "other");
        assert_eq!(rule_label(&"a".repeat(65)), "other");
        assert_eq!(rule_label(""), "other");
    }

    /// The fields the cache reads straight from the request are, byte for byte, what
    /// the whole document holds at those paths, so a cached decision is the one the
    /// document would get.
    #[test]
    fn fields_written_directly_match_the_document() {
        let token = crate::jwt::VerifiedToken {
            issuer: "portcullis".to_owned(),
            sub: "7\"x".to_owned(),
            sid: Some("s1".to_owned()),
            roles: vec!["agent".to_owned(), "r\u{e9}le \"q\"".to_owned()],
            amr: vec!["pwd".to_owned()],
            exp: 0,
            claims: json!({"preferred_username": "ann"}),
        };
        let drain = Arc::new(crate::drain::Drain::default());
        let mut headers = http::HeaderMap::new();
        headers.insert("origin", HeaderValue::from_static("https://a.test"));
        let fields: &[&[&str]] = &[
            &["route"],
            &["request", "method"],
            &["request", "path"],
            &["request", "segments"],
            &["subject", "authenticated"],
            &["subject", "roles"],
            &["subject", "sub"],
            // Not written directly: read from the document.
            &["subject", "mfa"],
            &["subject", "roles", "0"],
            &["request", "headers"],
            &["request", "query"],
            &["source"],
            &["missing"],
            &["request", "missing"],
        ];
        for principal in [None, Some(Arc::new(token))] {
            for (method, path) in [
                (http::Method::GET, "/"),
                (http::Method::POST, "/api/tickets/TCK-1"),
                (
                    http::Method::from_bytes(b"PURGE").unwrap(),
                    "/a/b%22c/\u{e9}/",
                ),
                (http::Method::DELETE, "/x\"y\\z"),
            ] {
                let mut ctx = RequestCtx::new(drain.enter());
                ctx.principal = principal.clone().map(|token| Principal {
                    token,
                    via_cookie: false,
                });
                let facts = RequestFacts {
                    method: &method,
                    path,
                    query: Some("a=1&b"),
                    headers: &headers,
                    host: None,
                };
                let document = policy_input(&facts, &ctx);
                for field in fields {
                    let field: Vec<String> = field.iter().map(|s| (*s).to_owned()).collect();
                    let (mut direct, mut whole) = (Vec::new(), Vec::new());
                    let present = HttpInput::new(&facts, &ctx).write_at(&field, &mut direct);
                    assert_eq!(present, document.write_at(&field, &mut whole), "{field:?}");
                    assert_eq!(
                        String::from_utf8(direct).unwrap(),
                        String::from_utf8(whole).unwrap(),
                        "{method} {path} {field:?}"
                    );
                }
            }
        }
    }

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
