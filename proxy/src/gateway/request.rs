//! `request_filter` and `request_body_filter`: the request path up to the
//! upstream. In order: request id and client address (trusted-proxy list
//! only) → the framing headers ([`crate::framing`]) → strip inbound identity and hop
//! headers → normalise the path → the
//! CSP report collector → route match → the guards ([`crate::guards`]) → for
//! a sign-in, the account's rate limit once its body is read.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::HeaderName;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};
use portcullis_contract::headers::{REQUEST_ID_HEADER, RESERVED_PREFIX, valid_request_id};

use super::service::{Gateway, peer_ip};
use crate::context::{CSP_ROUTE, RequestCtx, RequestFacts};
use crate::forwarded::HOP_HEADERS;
use crate::guards::Verdict;
use crate::headers::CSP_REPORT_PATH;
use crate::path::{NormalisedPath, normalise_bytes};
use crate::problem::{Problem, Refusal};
use crate::routes::Route;

/// The sign-in endpoint whose body names the account for its rate limit.
/// Largest sign-in body the proxy reads to find the account name.
const MAX_LOGIN_BODY_BYTES: usize = 16 * 1024;

/// Which guards a request passes ([`crate::guards::Guards`]).
#[derive(Clone, Copy)]
enum Chain {
    /// Every guard: requests going upstream.
    Full,
    /// Limits and policy for an anonymous caller: the proxy's own collector.
    Anonymous,
}

/// Drops every `X-Portcullis-*` header, and the hop headers unless the peer
/// is a trusted proxy, before anything reads the request further.
fn strip_inbound_headers(session: &mut Session, peer_trusted: bool) {
    let strip: Vec<HeaderName> = session
        .req_header()
        .headers
        .keys()
        .filter(|name| {
            let n = name.as_str();
            n.starts_with(RESERVED_PREFIX) || (!peer_trusted && HOP_HEADERS.contains(&n))
        })
        .cloned()
        .collect();
    for name in &strip {
        session.req_header_mut().remove_header(name);
    }
}

impl Gateway {
    pub(super) async fn filter_request(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        self.metrics.in_flight.inc();
        if self.drain.is_draining() {
            // Finish this request, then let the client reconnect elsewhere.
            session.set_keepalive(None);
        } else {
            session.set_keepalive(Some(self.keepalive_idle_seconds));
        }
        self.identify_client(session, ctx);
        if let Err(e) =
            crate::framing::check(session.req_header().version, &session.req_header().headers)
        {
            // Where this request ends is in doubt: answer, then close the connection.
            self.metrics.rejections.with_label_values(&[e.code()]).inc();
            tracing::debug!(request_id = %ctx.request_id, reason = %e, "request framing refused");
            session.set_keepalive(None);
            let p = Problem::new(
                400,
                "bad-framing",
                "Bad request",
                "The request's length is not given exactly once, as a plain number or chunked",
            );
            self.respond_problem(session, ctx, p, &[]).await?;
            return Ok(true);
        }
        let fields = session.req_header().headers.len();
        if fields > self.max_request_headers {
            // HTTP/2 has no bound of its own on the count (only on the list's size).
            self.metrics
                .rejections
                .with_label_values(&["too_many_headers"])
                .inc();
            let p = Problem::new(
                431,
                "too-many-headers",
                "Request header fields too large",
                format!(
                    "A request may carry at most {} header fields",
                    self.max_request_headers
                ),
            );
            self.respond_problem(session, ctx, p, &[]).await?;
            return Ok(true);
        }
        if session.req_header().version < http::Version::HTTP_2
            && session
                .req_header()
                .headers
                .contains_key(http::header::TRANSFER_ENCODING)
        {
            // Chunk syntax is where parsers in a chain disagree most (extensions, bare
            // LF): whatever a front proxy made of this body, nothing after it on this
            // connection is read as a request of ours.
            session.set_keepalive(None);
        }
        strip_inbound_headers(session, ctx.peer_trusted);

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
            // Answered here, without looking at credentials (browsers send reports
            // without a CSRF token), but limited like any request: the pre-auth limit
            // and the limits of the class the policy gives the collector (`reports`).
            // (Other methods get the collector's 405 at once, unaudited.)
            ctx.label = CSP_ROUTE;
            let post = session.req_header().method == http::Method::POST;
            if post
                && let Err(refusal) = self.run_guards(session, &path, ctx, Chain::Anonymous).await
            {
                ctx.path = Some(path);
                self.respond_problem(session, ctx, refusal.problem, &refusal.headers)
                    .await?;
                return Ok(true);
            }
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
        let route: Arc<Route> = Arc::clone(route);
        ctx.route = Some(route);

        let outcome = self.run_guards(session, &path, ctx, Chain::Full).await;
        let is_login = session.req_header().method == http::Method::POST
            && path.as_str() == portcullis_contract::paths::LOGIN;
        ctx.path = Some(path);
        match outcome {
            Ok(()) => {
                if let Some(max) = ctx.route.as_ref().and_then(|r| r.max_body_bytes) {
                    let declared = session
                        .req_header()
                        .headers
                        .get(http::header::CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok());
                    if declared.is_some_and(|n| n > max) {
                        self.respond_problem(session, ctx, body_too_large(max), &[])
                            .await?;
                        return Ok(true);
                    }
                    ctx.body_limit = Some(max);
                }
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

    /// The request id (a trusted peer's, if valid, else a new UUIDv7) and the
    /// client address (from `X-Forwarded-For` only through trusted proxies).
    fn identify_client(&self, session: &Session, ctx: &mut RequestCtx) {
        let peer = peer_ip(session);
        ctx.peer_trusted = peer.is_some_and(|ip| self.trusted.contains(ip));
        let req = session.req_header();
        ctx.request_id = req
            .headers
            .get(REQUEST_ID_HEADER)
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
    }

    /// Runs the guards on the routed request.
    async fn run_guards(
        &self,
        session: &Session,
        path: &NormalisedPath,
        ctx: &mut RequestCtx,
        chain: Chain,
    ) -> std::result::Result<(), Refusal> {
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
        };
        match chain {
            Chain::Full => self.guards.check(&facts, ctx).await,
            Chain::Anonymous => self.guards.check_anonymous(&facts, ctx).await,
        }
    }

    /// Holds a sign-in body back until the account's limit is checked.
    pub(super) async fn filter_request_body(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let (Some(max), Some(chunk)) = (ctx.body_limit, body.as_ref()) {
            ctx.body_seen += chunk.len() as u64;
            if ctx.body_seen > max {
                // A body without a declared length (or a lying one) that outgrows the
                // route's limit: stopped here, the upstream never sees its end.
                *body = None;
                ctx.late_refusal = Some(Refusal::new(body_too_large(max)));
                return Error::e_explain(ErrorType::HTTPStatus(413), "request body too large");
            }
        }
        let Some(buf) = ctx.login_body.as_mut() else {
            return Ok(());
        };
        if let Some(chunk) = body.take() {
            if buf.len() + chunk.len() > MAX_LOGIN_BODY_BYTES {
                ctx.late_refusal = Some(Refusal::new(Problem::new(
                    413,
                    "body-too-large",
                    "Body too large",
                    "Sign-in requests are small",
                )));
                return Error::e_explain(ErrorType::HTTPStatus(413), "sign-in body too large");
            }
            buf.extend_from_slice(&chunk);
        }
        if !end_of_stream {
            // Nothing goes upstream yet. To pingora an empty chunk means "no data now";
            // `None` would end the upstream body here, before the rest arrives.
            *body = Some(Bytes::new());
            return Ok(());
        }
        let whole = ctx.login_body.take().unwrap_or_default().freeze();
        let Some(account) = crate::guards::rate_limit::login_account(&whole) else {
            // Fail closed: a sign-in whose account this limit cannot read must not reach
            // the backend uncounted (a JSON array in field order, `["alice","guess"]`,
            // was one: the backend's parser accepts it, the limit saw no `username`).
            ctx.late_refusal = Some(Refusal::new(Problem::new(
                400,
                "bad-request",
                "Bad request",
                "A sign-in is a JSON object with a username",
            )));
            return Error::e_explain(
                ErrorType::HTTPStatus(400),
                "sign-in body without an account",
            );
        };
        let user_agent = crate::context::user_agent(&session.req_header().headers);
        if let Verdict::Refuse(refusal) = self.login_limit.check(ctx, user_agent, &account).await {
            ctx.late_refusal = Some(refusal);
            return Error::e_explain(ErrorType::HTTPStatus(429), "sign-in rate limit");
        }
        // An empty body ends as `None`: an empty chunk at the end would make pingora
        // write a chunked upstream body's terminator twice.
        *body = (!whole.is_empty()).then_some(whole);
        Ok(())
    }
}

/// The 413 for a body past its route's `max_body_bytes`.
fn body_too_large(max: u64) -> Problem {
    Problem::new(
        413,
        "body-too-large",
        "Body too large",
        format!("Request bodies on this route are at most {max} bytes"),
    )
}
