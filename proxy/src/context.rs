//! What the phases of one request share: [`RequestCtx`] (start time, client,
//! route, modes, the verified [`Principal`], the decision, the audit events),
//! the [`RequestFacts`] guards read, and the [`RequestInfo`] every audit event
//! of the request carries. Guards, the gateway and the audit trail all import
//! this module; it imports none of them.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use portcullis_audit::{AuditEvent, Category, Outcome};
use portcullis_contract::amr;

use crate::drain::InFlight;
use crate::jwt::VerifiedToken;
use crate::mode::Modes;
use crate::path::NormalisedPath;
use crate::problem::Refusal;
use crate::ratelimit::RuleHit;
use crate::routes::Route;

/// Route label for requests answered before a route was chosen.
pub const NO_ROUTE: &str = "none";
/// Route label of the CSP report collector.
pub const CSP_ROUTE: &str = "csp-report";
/// Every route label a request can have without a route.
pub const ROUTELESS_LABELS: [&str; 2] = [NO_ROUTE, CSP_ROUTE];

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub token: Arc<VerifiedToken>,
    pub via_cookie: bool,
}

impl Principal {
    /// `password`, `oidc` or `token`, from `amr`.
    pub fn auth_method(&self) -> &'static str {
        amr::auth_method(&self.token.amr)
    }

    /// Whether the sign-in used a second factor, from `amr`.
    pub fn used_second_factor(&self) -> bool {
        amr::used_second_factor(&self.token.amr)
    }

    /// How the credential came: `cookie` or `bearer`.
    pub fn credential(&self) -> &'static str {
        credential(self.via_cookie)
    }

    /// Sets the verified caller's fields on an audit event.
    pub fn annotate(&self, mut e: AuditEvent) -> AuditEvent {
        e = e
            .user_id(self.token.sub.clone())
            .roles(self.token.roles.iter().cloned())
            .auth_method(self.credential())
            .detail("login_method", self.auth_method());
        if let Some(sid) = &self.token.sid {
            e = e.session_id(sid.clone());
        }
        e
    }
}

/// Sets the verified caller's fields, if there is one.
pub fn with_principal(e: AuditEvent, p: Option<&Principal>) -> AuditEvent {
    match p {
        Some(p) => p.annotate(e),
        None => e,
    }
}

/// What every audit event of one request carries.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    pub request_id: &'a str,
    pub client_ip: Option<IpAddr>,
    pub route: &'a str,
    pub user_agent: Option<&'a str>,
}

impl RequestInfo<'_> {
    /// A new event about this request.
    pub fn event(&self, category: Category, action: &str, outcome: Outcome) -> AuditEvent {
        let mut e = AuditEvent::new(category, action, outcome)
            .request_id(self.request_id)
            .route(self.route);
        if let Some(ip) = self.client_ip {
            e = e.source_ip(ip);
        }
        if let Some(ua) = self.user_agent {
            e = e.user_agent(ua);
        }
        e
    }
}

/// The audit outcome of a control's finding: a failure when the control
/// refused the request, a success (it went through) in report-only mode.
pub fn outcome(enforced: bool) -> Outcome {
    if enforced {
        Outcome::Failure
    } else {
        Outcome::Success
    }
}

/// What the guards read of the request.
pub struct RequestFacts<'a> {
    pub method: &'a Method,
    /// The normalised path.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// The authority as the client sent it (`Host`, else the URI's).
    pub host: Option<&'a str>,
}

impl RequestFacts<'_> {
    pub fn user_agent(&self) -> Option<&str> {
        user_agent(self.headers)
    }
}

/// The request's `User-Agent`, when it is text (for audit events).
pub fn user_agent(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
}

/// How a credential came: `cookie` or `bearer` (the audit event's `auth_method`).
pub fn credential(via_cookie: bool) -> &'static str {
    if via_cookie { "cookie" } else { "bearer" }
}

/// State shared by the phases of one request.
pub struct RequestCtx {
    pub start: Instant,
    _in_flight: InFlight,
    pub request_id: String,
    pub peer_trusted: bool,
    pub client_ip: Option<IpAddr>,
    pub path: Option<NormalisedPath>,
    pub route: Option<Arc<Route>>,
    /// Metric label when no route applies (`none`, `csp-report`).
    pub label: &'static str,
    /// Status of a response the proxy wrote itself.
    pub local_status: Option<u16>,
    /// The route's modes, read once when the guards start.
    pub modes: Modes,
    /// The verified caller, once authentication found one.
    pub principal: Option<Principal>,
    /// The rule the response's `RateLimit-Policy` / `RateLimit` headers describe.
    pub rate_limit: Option<RuleHit>,
    /// The policy decision's id.
    pub decision_id: Option<String>,
    /// Headers the policy's obligations add to the response.
    pub obligations: Vec<(HeaderName, HeaderValue)>,
    /// The policy's `rate_limit_class` obligation: which class rules apply.
    pub rate_limit_class: Option<String>,
    /// Every guard let the request through: it goes upstream.
    pub passed: bool,
    /// The buffered sign-in body, for the per-account rate limit.
    pub login_body: Option<BytesMut>,
    /// A refusal decided after the request was already on its way upstream.
    pub late_refusal: Option<Refusal>,
    /// The route's body limit and the body bytes seen so far.
    pub body_limit: Option<u64>,
    pub body_seen: u64,
    /// Audit events of this request, emitted in `logging` once the response is out.
    pub audit: Vec<AuditEvent>,
}

impl RequestCtx {
    pub fn new(in_flight: InFlight) -> Self {
        Self {
            start: Instant::now(),
            _in_flight: in_flight,
            request_id: String::new(),
            peer_trusted: false,
            client_ip: None,
            path: None,
            route: None,
            label: NO_ROUTE,
            local_status: None,
            modes: Modes::default(),
            principal: None,
            rate_limit: None,
            decision_id: None,
            obligations: Vec::new(),
            rate_limit_class: None,
            passed: false,
            login_body: None,
            late_refusal: None,
            body_limit: None,
            body_seen: 0,
            audit: Vec::new(),
        }
    }

    /// The route's name, or the label of a request without one.
    pub fn route_label(&self) -> &str {
        self.route.as_ref().map_or(self.label, |r| r.name.as_str())
    }

    /// What this request's audit events carry; `user_agent` from its headers.
    pub fn info<'a>(&'a self, user_agent: Option<&'a str>) -> RequestInfo<'a> {
        RequestInfo {
            request_id: &self.request_id,
            client_ip: self.client_ip,
            route: self.route_label(),
            user_agent,
        }
    }
}
