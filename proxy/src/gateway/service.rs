//! What the gateway needs, shared by all requests, and [`Gateway::respond`],
//! the one helper every locally written response goes through: responses the
//! proxy writes itself skip `response_filter` (pingora issues #381, #498,
//! #766), so it applies the same security headers and ends the stream.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::Result;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use portcullis_contract::headers::REQUEST_ID_HEADER;
use portcullis_contract::identity::IdentityKey;

use crate::audit::RequestAudit;
use crate::context::RequestCtx;
use crate::drain::Drain;
use crate::forwarded::TrustedProxies;
use crate::guards::Guards;
use crate::guards::rate_limit::LoginAccountLimit;
use crate::headers::{CspHeader, SecurityHeaders};
use crate::metrics::Metrics;
use crate::problem::{PROBLEM_JSON, Problem};
use crate::routes::RouteTable;

/// What the gateway needs, shared by all requests.
pub struct Gateway {
    pub(crate) routes: RouteTable,
    pub(crate) headers: SecurityHeaders,
    pub(crate) trusted: TrustedProxies,
    pub(crate) metrics: Metrics,
    pub(crate) drain: Arc<Drain>,
    pub(crate) csp_report_max_body_bytes: usize,
    /// The controls of `request_filter`, in request order.
    pub(crate) guards: Guards,
    /// The sign-in account's limit, checked in `request_body_filter`.
    pub(crate) login_limit: LoginAccountLimit,
    /// Signs the verified identity forwarded upstream.
    pub(crate) identity_key: IdentityKey,
    /// The proxy's request-path audit (see [`crate::audit`]).
    pub(crate) audit: RequestAudit,
    /// Idle time after which a keep-alive connection is closed (pingora keeps an
    /// HTTP/1.1 connection forever unless told per request).
    pub(crate) keepalive_idle_seconds: u64,
    /// Header fields one request may carry (`proxy.limits.max_request_headers`).
    pub(crate) max_request_headers: usize,
}

/// Request body read and thrown away, at most, after an early answer.
const DISCARD_BYTES: usize = 1 << 20;
const DISCARD_TIME: Duration = Duration::from_secs(2);

/// After answering a request whose body is still arriving (a refusal, a 413): reads and
/// drops what the client keeps sending, up to a bound. Over HTTP/2, dropping the stream
/// at once resets it, and the reset can overtake the queued answer. Over HTTP/1 the
/// connection closes after such an answer, and closing a socket with unread data makes
/// the kernel send a reset that can destroy the answer before the client reads it (the
/// client then sees a broken pipe instead of the status and problem body). Past the
/// bound the stream is reset, or the connection closed, anyway.
async fn discard_request_body(session: &mut Session) {
    let drain = async {
        let mut read = 0;
        while read <= DISCARD_BYTES {
            match session.read_request_body().await {
                Ok(Some(chunk)) => read += chunk.len(),
                Ok(None) | Err(_) => break,
            }
        }
    };
    let _ = tokio::time::timeout(DISCARD_TIME, drain).await;
}

pub(super) fn peer_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

impl Gateway {
    pub(super) fn csp_for<'a>(&'a self, ctx: &'a RequestCtx) -> &'a CspHeader {
        ctx.route
            .as_ref()
            .map_or(self.headers.default_csp(), |r| &r.csp)
    }

    /// Writes a complete local response with the security headers.
    pub(super) async fn respond(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        status: u16,
        content_type: Option<&'static str>,
        body: Bytes,
        extra: &[(HeaderName, HeaderValue)],
    ) -> Result<()> {
        // What this request found is spooled before the client hears the answer.
        if !ctx.audit.is_empty() {
            self.audit.record(std::mem::take(&mut ctx.audit)).await;
        }
        let mut resp = ResponseHeader::build(status, Some(8))?;
        if let Some(ct) = content_type {
            resp.insert_header(http::header::CONTENT_TYPE, ct)?;
        }
        resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
        resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
        resp.insert_header(REQUEST_ID_HEADER, ctx.request_id.as_str())?;
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
        if !session.as_downstream_mut().is_body_done() {
            discard_request_body(session).await;
        }
        Ok(())
    }

    /// [`Gateway::respond`] with a problem document.
    pub(super) async fn respond_problem(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        problem: Problem,
        extra: &[(HeaderName, HeaderValue)],
    ) -> Result<()> {
        // Every refusal this request recorded names the problem it was answered with,
        // so that `/monitoring/errors` can group them by it.
        if !ctx.audit.is_empty() {
            let kind = portcullis_contract::problem::type_uri(problem.kind);
            ctx.audit = std::mem::take(&mut ctx.audit)
                .into_iter()
                .map(|e| {
                    if e.outcome() == portcullis_audit::Outcome::Failure
                        && !e.details_map().contains_key("problem")
                    {
                        e.detail("problem", kind.clone())
                            .detail("status", problem.status)
                    } else {
                        e
                    }
                })
                .collect();
        }
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
}
