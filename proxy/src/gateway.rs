//! The HTTPS gateway: pingora's `ProxyHttp` phases for one request.
//!
//! `request_filter` does the guard work (request id, client address, header
//! hygiene, path normalisation, routing, the CSP report collector) and answers
//! locally when it refuses; `upstream_request_filter` rewrites the request to
//! the canonical path and adds the forwarding headers; `response_filter`
//! decorates upstream responses; `fail_to_proxy` answers upstream failures;
//! `logging` records metrics and the access log line.
//!
//! Responses the proxy writes itself skip `response_filter` (pingora issues
//! #381, #498, #766), so they all go through [`Gateway::respond`], which
//! applies the same security headers.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};

use portcullis_audit::{AuditEvent, AuditLog, Category, Level, Outcome};

use crate::audit::RequestInfo;
use crate::csp_report;
use crate::drain::{Drain, InFlight};
use crate::enforce::{Enforcement, Passed, Refusal, RequestFacts};
use crate::forwarded::{HOP_HEADERS, IDENTITY_PREFIX, TrustedProxies, valid_request_id};
use crate::headers::{CSP_REPORT_PATH, CspHeader, SecurityHeaders};
use crate::metrics::{Metrics, method_label, status_class};
use crate::path::{NormalisedPath, normalise_bytes};
use crate::problem::{PROBLEM_JSON, Problem};
use crate::routes::{Route, RouteTable};

/// Route label for requests answered before a route was chosen.
const NO_ROUTE: &str = "none";
/// Route label of the CSP report collector.
const CSP_ROUTE: &str = "csp-report";

/// What the gateway needs, shared by all requests.
pub struct Gateway {
    pub(crate) routes: RouteTable,
    pub(crate) headers: SecurityHeaders,
    pub(crate) trusted: TrustedProxies,
    pub(crate) metrics: Metrics,
    pub(crate) drain: Arc<Drain>,
    pub(crate) csp_report_max_body_bytes: usize,
    pub(crate) enforcement: Arc<Enforcement>,
    /// The proxy's audit log; events are emitted in `logging`.
    pub(crate) audit: AuditLog,
}

/// The sign-in endpoint whose body names the account for its rate limit.
const LOGIN_PATH: &str = "/auth/login";
/// Largest sign-in body the proxy reads to find the account name.
const MAX_LOGIN_BODY_BYTES: usize = 16 * 1024;

/// State shared by the phases of one request.
pub struct RequestCtx {
    start: Instant,
    _in_flight: InFlight,
    request_id: String,
    peer_trusted: bool,
    client_ip: Option<IpAddr>,
    path: Option<NormalisedPath>,
    route: Option<Arc<Route>>,
    /// Metric label when no route applies (`none`, `csp-report`).
    label: &'static str,
    /// Status of a response the proxy wrote itself.
    local_status: Option<u16>,
    /// What enforcement established for a request that passed.
    passed: Option<Passed>,
    /// The buffered sign-in body, for the per-account rate limit.
    login_body: Option<BytesMut>,
    /// A refusal decided after the request was already on its way upstream.
    late_refusal: Option<Refusal>,
    /// Audit events of this request, emitted in `logging` once the response is out.
    audit: Vec<AuditEvent>,
}

impl RequestCtx {
    fn route_label(&self) -> &str {
        self.route.as_ref().map_or(self.label, |r| r.name.as_str())
    }
}

fn peer_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

impl Gateway {
    fn csp_for<'a>(&'a self, ctx: &'a RequestCtx) -> &'a CspHeader {
        ctx.route
            .as_ref()
            .map_or(self.headers.default_csp(), |r| &r.csp)
    }

    /// Writes a complete local response with the security headers.
    async fn respond(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        status: u16,
        content_type: Option<&'static str>,
        body: Bytes,
        extra: &[(HeaderName, HeaderValue)],
    ) -> Result<()> {
        let mut resp = ResponseHeader::build(status, Some(8))?;
        if let Some(ct) = content_type {
            resp.insert_header(http::header::CONTENT_TYPE, ct)?;
        }
        resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
        resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
        resp.insert_header("x-request-id", ctx.request_id.as_str())?;
        for (name, value) in extra {
            resp.insert_header(name.clone(), value.clone())?;
        }
        self.headers.apply(&mut resp, self.csp_for(ctx));
        ctx.local_status = Some(status);
        let head_only = body.is_empty() || session.req_header().method == http::Method::HEAD;
        session
            .write_response_header(Box::new(resp), head_only)
            .await?;
        if !head_only {
            session.write_response_body(Some(body), true).await?;
        }
        Ok(())
    }

    async fn respond_problem(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        problem: Problem,
        extra: &[(HeaderName, HeaderValue)],
    ) -> Result<()> {
        let body = problem.to_body(&ctx.request_id);
        self.respond(
            session,
            ctx,
            problem.status,
            Some(PROBLEM_JSON),
            body,
            extra,
        )
        .await
    }

    /// Reads a request body of at most `limit` bytes; `None` when larger.
    async fn read_bounded_body(session: &mut Session, limit: usize) -> Result<Option<Bytes>> {
        if let Some(len) = session
            .req_header()
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            && len > limit
        {
            return Ok(None);
        }
        let mut buf = BytesMut::new();
        while let Some(chunk) = session.read_request_body().await? {
            if buf.len() + chunk.len() > limit {
                return Ok(None);
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(Some(buf.freeze()))
    }

    /// `POST /.portcullis/csp-report`: count and log each violation, 204.
    async fn collect_csp_report(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        if session.req_header().method != http::Method::POST {
            let allow = [(http::header::ALLOW, HeaderValue::from_static("POST"))];
            let p = Problem::new(
                405,
                "method-not-allowed",
                "Method not allowed",
                "CSP reports are sent with POST",
            );
            return self.respond_problem(session, ctx, p, &allow).await;
        }
        let content_type = session
            .req_header()
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let Some(body) = Self::read_bounded_body(session, self.csp_report_max_body_bytes).await?
        else {
            self.metrics
                .rejections
                .with_label_values(&["csp_report_too_large"])
                .inc();
            let p = Problem::new(
                413,
                "csp-report-too-large",
                "Report too large",
                format!(
                    "CSP reports are limited to {} bytes",
                    self.csp_report_max_body_bytes
                ),
            );
            return self.respond_problem(session, ctx, p, &[]).await;
        };
        match csp_report::parse(&content_type, &body) {
            Ok(violations) => {
                for v in &violations {
                    let route = v
                        .document_path()
                        .and_then(|p| crate::path::normalise(p).ok())
                        .and_then(|p| self.routes.find(p.as_str()).map(|r| r.name.clone()))
                        .unwrap_or_else(|| "unknown".to_owned());
                    self.metrics
                        .csp_violations
                        .with_label_values(&[v.directive, route.as_str()])
                        .inc();
                    let info = RequestInfo {
                        request_id: &ctx.request_id,
                        client_ip: ctx.client_ip,
                        route: &route,
                        user_agent: session
                            .req_header()
                            .headers
                            .get(http::header::USER_AGENT)
                            .and_then(|v| v.to_str().ok()),
                    };
                    ctx.audit.push(
                        info.event(Category::Security, "csp.violation", Outcome::Unknown)
                            .level(Level::Warning)
                            .detail("directive", v.directive)
                            .detail("document_url", v.document_url.clone())
                            .detail("blocked_url", v.blocked_url.clone())
                            .detail("disposition", v.disposition.clone()),
                    );
                    tracing::warn!(
                        target: "portcullis::csp",
                        event = "csp_violation",
                        request_id = %ctx.request_id,
                        source_ip = ?ctx.client_ip,
                        directive = v.directive,
                        route = %route,
                        document_url = %v.document_url,
                        blocked_url = %v.blocked_url,
                        disposition = %v.disposition,
                        "CSP violation reported"
                    );
                }
                self.respond(session, ctx, 204, None, Bytes::new(), &[])
                    .await
            }
            Err(e) => {
                self.metrics.rejections.with_label_values(&[e.code()]).inc();
                let (status, kind) = match e {
                    csp_report::ReportError::UnsupportedMediaType => (415, "csp-report-media-type"),
                    csp_report::ReportError::Malformed(_) => (400, "csp-report-malformed"),
                };
                let p = Problem::new(status, kind, "Invalid CSP report", e.to_string());
                self.respond_problem(session, ctx, p, &[]).await
            }
        }
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            start: Instant::now(),
            _in_flight: self.drain.enter(),
            request_id: String::new(),
            peer_trusted: false,
            client_ip: None,
            path: None,
            route: None,
            label: NO_ROUTE,
            local_status: None,
            passed: None,
            login_body: None,
            late_refusal: None,
            audit: Vec::new(),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        self.metrics.in_flight.inc();
        if self.drain.is_draining() {
            // Finish this request, then let the client reconnect elsewhere.
            session.set_keepalive(None);
        }
        let peer = peer_ip(session);
        ctx.peer_trusted = peer.is_some_and(|ip| self.trusted.contains(ip));

        let req = session.req_header();
        ctx.request_id = req
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|id| ctx.peer_trusted && valid_request_id(id))
            .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
        ctx.client_ip = peer.map(|ip| {
            let xff = req
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok());
            self.trusted.client_ip(ip, xff)
        });

        // Header hygiene before anything reads the request further.
        let strip: Vec<HeaderName> = session
            .req_header()
            .headers
            .keys()
            .filter(|name| {
                let n = name.as_str();
                n.starts_with(IDENTITY_PREFIX) || (!ctx.peer_trusted && HOP_HEADERS.contains(&n))
            })
            .cloned()
            .collect();
        for name in &strip {
            session.req_header_mut().remove_header(name);
        }

        let raw = session.req_header().raw_path();
        let raw_path = raw.split(|b| *b == b'?').next().unwrap_or_default();
        let path = match normalise_bytes(raw_path) {
            Ok(p) => p,
            Err(e) => {
                self.metrics.rejections.with_label_values(&[e.code()]).inc();
                let p = Problem::new(400, "invalid-path", "Invalid request path", e.to_string());
                self.respond_problem(session, ctx, p, &[]).await?;
                return Ok(true);
            }
        };

        if path.as_str() == CSP_REPORT_PATH {
            ctx.label = CSP_ROUTE;
            ctx.path = Some(path);
            self.collect_csp_report(session, ctx).await?;
            return Ok(true);
        }

        let Some(route) = self.routes.find(path.as_str()) else {
            self.metrics
                .rejections
                .with_label_values(&["no_route"])
                .inc();
            let p = Problem::new(404, "not-found", "Not found", "No route serves this path");
            self.respond_problem(session, ctx, p, &[]).await?;
            return Ok(true);
        };
        ctx.route = Some(Arc::clone(route));
        let req = session.req_header();
        let raw = req.raw_path();
        let query = raw
            .iter()
            .position(|b| *b == b'?')
            .and_then(|i| std::str::from_utf8(&raw[i + 1..]).ok());
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri.authority().map(|a| a.as_str()));
        let facts = RequestFacts {
            method: &req.method,
            path: path.as_str(),
            query,
            headers: &req.headers,
            host,
            route: route.name.as_str(),
            client_ip: ctx.client_ip,
            request_id: &ctx.request_id,
        };
        let outcome = self.enforcement.check(&facts, &mut ctx.audit).await;
        let is_login = req.method == http::Method::POST && path.as_str() == LOGIN_PATH;
        ctx.path = Some(path);
        match outcome {
            Ok(passed) => {
                ctx.passed = Some(passed);
                if is_login {
                    ctx.login_body = Some(BytesMut::new());
                }
                Ok(false)
            }
            Err(refusal) => {
                self.respond_problem(session, ctx, refusal.problem, &refusal.headers)
                    .await?;
                Ok(true)
            }
        }
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(buf) = ctx.login_body.as_mut() else {
            return Ok(());
        };
        // Hold the sign-in body back until the account's limit is checked.
        if let Some(chunk) = body.take() {
            if buf.len() + chunk.len() > MAX_LOGIN_BODY_BYTES {
                ctx.late_refusal = Some(Refusal {
                    problem: Problem::new(
                        413,
                        "body-too-large",
                        "Body too large",
                        "Sign-in requests are small",
                    ),
                    headers: Vec::new(),
                });
                return Error::e_explain(ErrorType::HTTPStatus(413), "sign-in body too large");
            }
            buf.extend_from_slice(&chunk);
        }
        if !end_of_stream {
            return Ok(());
        }
        let whole = ctx.login_body.take().unwrap_or_default().freeze();
        let account = serde_json::from_slice::<serde_json::Value>(&whole)
            .ok()
            .and_then(|v| {
                v.get("username")
                    .and_then(|u| u.as_str())
                    .map(str::to_owned)
            });
        if let Some(account) = account {
            let route = ctx.route.as_ref().map_or(NO_ROUTE, |r| r.name.as_str());
            let info = RequestInfo {
                request_id: &ctx.request_id,
                client_ip: ctx.client_ip,
                route,
                user_agent: session
                    .req_header()
                    .headers
                    .get(http::header::USER_AGENT)
                    .and_then(|v| v.to_str().ok()),
            };
            if let Err(refusal) = self
                .enforcement
                .check_login_account(&info, &account, &mut ctx.audit)
                .await
            {
                ctx.late_refusal = Some(refusal);
                return Error::e_explain(ErrorType::HTTPStatus(429), "sign-in rate limit");
            }
        }
        *body = Some(whole);
        Ok(())
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let Some(route) = ctx.route.as_ref() else {
            return Error::e_explain(ErrorType::InternalError, "no route chosen");
        };
        let up = &route.upstream;
        let mut peer = HttpPeer::new(up.address, false, String::new());
        peer.options.connection_timeout = Some(up.connect_timeout);
        peer.options.total_connection_timeout = Some(up.connect_timeout);
        peer.options.read_timeout = Some(up.read_timeout);
        peer.options.write_timeout = Some(up.read_timeout);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(path) = ctx.path.as_ref() else {
            return Error::e_explain(ErrorType::InternalError, "no normalised path");
        };
        // Forward exactly the spelling that was routed on.
        let raw = session.req_header().raw_path();
        let query = raw.iter().position(|b| *b == b'?').map(|i| &raw[i..]);
        let mut target = Vec::with_capacity(path.encoded().len() + query.map_or(0, <[u8]>::len));
        target.extend_from_slice(path.encoded().as_bytes());
        if let Some(q) = query {
            target.extend_from_slice(q);
        }
        upstream.set_raw_path(&target)?;

        let client = ctx.client_ip.map(|ip| ip.to_string()).unwrap_or_default();
        let xff = match upstream
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(prior) if ctx.peer_trusted => {
                let peer = peer_ip(session)
                    .map(|ip| ip.to_string())
                    .unwrap_or_default();
                format!("{prior}, {peer}")
            }
            _ => client,
        };
        upstream.insert_header("x-forwarded-for", xff)?;
        upstream.insert_header("x-forwarded-proto", "https")?;
        let host = session
            .req_header()
            .headers
            .get(http::header::HOST)
            .cloned()
            .or_else(|| {
                session
                    .req_header()
                    .uri
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            });
        if let Some(host) = host {
            if upstream.headers.get(http::header::HOST).is_none() {
                upstream.insert_header(http::header::HOST, host.clone())?;
            }
            if !ctx.peer_trusted || upstream.headers.get("x-forwarded-host").is_none() {
                upstream.insert_header("x-forwarded-host", host)?;
            }
        }
        upstream.remove_header("forwarded");
        upstream.insert_header("x-request-id", ctx.request_id.as_str())?;
        // The client address as the trusted-proxy logic established it, for
        // the backend's sign-in throttling (inbound copies were stripped).
        if let Some(ip) = ctx.client_ip {
            upstream.insert_header("x-portcullis-client-ip", ip.to_string())?;
        }
        if let Some(passed) = &ctx.passed {
            upstream.insert_header("x-portcullis-decision-id", passed.decision_id.as_str())?;
            if let Some(p) = &passed.principal {
                // The verified identity, bound to this exact request line.
                let identity = portcullis_authz::identity::Identity {
                    sub: p.token.sub.clone(),
                    session_id: p.token.sid.clone(),
                    auth_method: Some(p.auth_method().to_owned()),
                    decision_id: Some(passed.decision_id.clone()),
                    iat: time::OffsetDateTime::now_utc().unix_timestamp(),
                };
                let target = String::from_utf8_lossy(&target).into_owned();
                let method = upstream.method.as_str().to_owned();
                let (id, sig) = self
                    .enforcement
                    .identity_key
                    .sign(&method, &target, &identity);
                upstream.insert_header(portcullis_authz::identity::IDENTITY_HEADER, id)?;
                upstream.insert_header(portcullis_authz::identity::SIGNATURE_HEADER, sig)?;
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.headers.apply(upstream_response, self.csp_for(ctx));
        upstream_response.insert_header("x-request-id", ctx.request_id.as_str())?;
        if let Some(passed) = &ctx.passed {
            if let Some(h) = &passed.rate_headers {
                upstream_response.insert_header("ratelimit-policy", h.policy.as_str())?;
                upstream_response.insert_header("ratelimit", h.rate_limit.as_str())?;
            }
            for (k, v) in &passed.obligations {
                upstream_response.insert_header(k.clone(), v.clone())?;
            }
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        if let Some(refusal) = ctx.late_refusal.take()
            && session.response_written().is_none()
        {
            let status = refusal.problem.status;
            if let Err(write_err) = self
                .respond_problem(session, ctx, refusal.problem, &refusal.headers)
                .await
            {
                tracing::debug!(error = %write_err, "could not send refusal");
            }
            return FailToProxy {
                error_code: status,
                can_reuse_downstream: false,
            };
        }
        if code > 0 && session.response_written().is_none() {
            let problem = match code {
                502 => Problem::new(
                    502,
                    "bad-gateway",
                    "Bad gateway",
                    "The upstream service is unavailable",
                ),
                504 => Problem::new(
                    504,
                    "gateway-timeout",
                    "Gateway timeout",
                    "The upstream service did not answer in time",
                ),
                400 => Problem::new(
                    400,
                    "bad-request",
                    "Bad request",
                    "The request could not be read",
                ),
                c if (400..500).contains(&c) => Problem::new(
                    c,
                    "client-error",
                    "Request refused",
                    "The request was refused",
                ),
                c => Problem::new(
                    c.max(500),
                    "internal-error",
                    "Internal error",
                    "The proxy could not complete the request",
                ),
            };
            // Internal causes go to the log, never to the client.
            tracing::warn!(request_id = %ctx.request_id, error = %e, status = code, "request failed");
            if let Err(write_err) = self.respond_problem(session, ctx, problem, &[]).await {
                tracing::debug!(error = %write_err, "could not send error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if !ctx.request_id.is_empty() {
            self.metrics.in_flight.dec();
        }
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or(ctx.local_status)
            .unwrap_or(0);
        let method = method_label(&session.req_header().method);
        let route = ctx.route_label();
        let class = status_class(status);
        let elapsed = ctx.start.elapsed();
        self.metrics
            .requests
            .with_label_values(&[route, method, class])
            .inc();
        self.metrics
            .request_duration
            .with_label_values(&[route, method, class])
            .observe(elapsed.as_secs_f64());
        tracing::info!(
            target: "portcullis::access",
            request_id = %ctx.request_id,
            source_ip = ?ctx.client_ip,
            method = %session.req_header().method,
            route = route,
            path = ctx.path.as_ref().map_or("", |p| p.as_str()),
            status,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            error = e.map(|e| e.etype().as_str()),
            "request"
        );
        // After the response: auditing never delays it.
        if !ctx.audit.is_empty() {
            crate::audit::emit_all(&self.audit, std::mem::take(&mut ctx.audit)).await;
        }
    }
}
