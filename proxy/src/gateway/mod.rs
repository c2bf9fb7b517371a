//! The HTTPS gateway: pingora's `ProxyHttp` phases for one request, each in
//! the module named after it.
//!
//! `request_filter` ([`request`]) does the guard work (request id, client
//! address, header hygiene, path normalisation, routing, the CSP report
//! collector, then the [`crate::guards`] in request order) and answers
//! locally when it refuses; `upstream_request_filter` ([`upstream`])
//! rewrites the request to the canonical path and adds the forwarding and
//! identity headers; `response_filter`, `fail_to_proxy` and `logging`
//! ([`response`]) decorate, answer failures, and record metrics, the access
//! log line and the audit events. Every locally written response goes
//! through one helper ([`service`]).

mod csp_reports;
mod request;
mod response;
mod service;
mod upstream;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, Result};

pub use service::Gateway;

use crate::context::RequestCtx;

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(self.drain.enter())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        crate::head_deadline::head_read(session);
        self.filter_request(session, ctx).await
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.filter_request_body(session, body, end_of_stream, ctx)
            .await
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        self.peer_for(ctx)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.filter_upstream_request(session, upstream, ctx)
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.decorate_response(upstream_response, ctx)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        self.answer_failure(session, e, ctx).await
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        self.record(session, e, ctx).await;
        crate::head_deadline::exchange_done(session);
    }
}
