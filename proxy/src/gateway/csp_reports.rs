//! `POST /.portcullis/csp-report`: the CSP violation report collector. Each
//! violation is counted by directive and route, logged and audited; the
//! answer is 204, or a problem for a wrong method, media type, size or body.

use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use pingora::Result;
use pingora::proxy::Session;
use portcullis_audit::{Category, Level, Outcome};

use super::service::Gateway;
use crate::context::{RequestCtx, RequestInfo};
use crate::csp_report;
use crate::problem::Problem;

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

impl Gateway {
    /// Count and log each violation, 204.
    pub(super) async fn collect_csp_report(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
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
        let Some(body) = read_bounded_body(session, self.csp_report_max_body_bytes).await? else {
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
                    self.record_violation(session, ctx, v);
                }
                self.respond(session, ctx, 204, None, Bytes::new(), &[])
                    .await
            }
            Err(e) => {
                self.metrics.rejections.with_label_values(&[e.code()]).inc();
                // A fixed detail per kind: the parser's message quotes the input.
                let (status, kind, detail) = match e {
                    csp_report::ReportError::UnsupportedMediaType => (
                        415,
                        "csp-report-media-type",
                        "Send application/csp-report or application/reports+json",
                    ),
                    csp_report::ReportError::Malformed(_) => (
                        400,
                        "csp-report-malformed",
                        "The body is not a CSP violation report",
                    ),
                };
                tracing::debug!(error = %e, "CSP report refused");
                let p = Problem::new(status, kind, "Invalid CSP report", detail);
                self.respond_problem(session, ctx, p, &[]).await
            }
        }
    }

    /// Counts, audits and logs one violation under the route its page came from.
    fn record_violation(&self, session: &Session, ctx: &mut RequestCtx, v: &csp_report::Violation) {
        let route = v
            .document_path()
            .and_then(|p| crate::path::normalise(p).ok())
            .and_then(|p| self.routes.find(p.as_str()).map(|r| r.name.clone()))
            .unwrap_or_else(|| "unknown".to_owned());
        self.metrics
            .csp_violations
            .with_label_values(&[v.directive, route.as_str(), v.disposition.as_str()])
            .inc();
        let info = RequestInfo {
            request_id: &ctx.request_id,
            client_ip: ctx.client_ip,
            route: &route,
            user_agent: crate::context::user_agent(&session.req_header().headers),
        };
        let event = info
            .event(Category::Security, "csp.violation", Outcome::Unknown)
            .level(Level::Warning)
            .detail("directive", v.directive)
            .detail("document_url", v.document_url.clone())
            .detail("blocked_url", v.blocked_url.clone())
            .detail("disposition", v.disposition.clone());
        ctx.audit.push(event);
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
}
