//! `response_filter`, `fail_to_proxy` and `logging`: upstream responses get
//! the security headers, the request id, the rate-limit headers and the
//! policy's obligations; failures become problem documents (with the same
//! headers, through [`Gateway::respond`]); every request ends in metrics, the
//! access log line and its audit events.

use pingora::http::ResponseHeader;
use pingora::proxy::{FailToProxy, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};
use portcullis_audit::{Category, Level, Outcome};
use portcullis_contract::headers::REQUEST_ID_HEADER;
use portcullis_contract::problem::type_uri;

use super::service::Gateway;
use crate::context::{RequestCtx, user_agent, with_principal};
use crate::metrics::upstream_error_kind;
use crate::problem::Problem;

/// The problem for a failure's status code.
fn failure_problem(code: u16) -> Problem {
    match code {
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
        408 => Problem::new(
            408,
            "request-timeout",
            "Request timeout",
            "The request body did not arrive in time",
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
    }
}

/// The status a failure is answered with; 0 when the client is gone.
fn failure_status(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        // The client declared a body and stopped sending it: its fault, not ours.
        ErrorType::ReadTimedout if e.esource() != &ErrorSource::Upstream => 408,
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

impl Gateway {
    pub(super) fn decorate_response(
        &self,
        upstream_response: &mut ResponseHeader,
        ctx: &RequestCtx,
    ) -> Result<()> {
        self.headers.apply(upstream_response, self.csp_for(ctx));
        upstream_response.insert_header(REQUEST_ID_HEADER, ctx.request_id.as_str())?;
        if ctx.passed {
            if let Some(hit) = &ctx.rate_limit {
                // Rendered once, here; each string becomes its header value without a
                // copy. (A value made once per rule and cloned here would be a reference
                // count that every worker thread bumps on every request.)
                upstream_response.insert_header("ratelimit-policy", hit.policy_value())?;
                upstream_response.insert_header("ratelimit", hit.rate_limit_value())?;
            }
            for (k, v) in &ctx.obligations {
                upstream_response.insert_header(k.clone(), v.clone())?;
            }
        }
        Ok(())
    }

    pub(super) async fn answer_failure(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = failure_status(e);
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
        let unanswered = session.response_written().is_none();
        if code >= 500 {
            // The proxy's own 5xx (or an upstream failure after the answer began) is an
            // `http.error` event, which `/monitoring/errors` groups; it is spooled with
            // the answer below, or in `logging` when the answer was already going.
            let cause = if e.esource() == &ErrorSource::Upstream {
                "upstream"
            } else {
                "internal"
            };
            let ua = user_agent(&session.req_header().headers);
            let mut event = ctx
                .info(ua)
                .event(Category::Api, "http.error", Outcome::Failure)
                .level(Level::Error)
                .detail("status", code)
                .detail("cause", cause)
                .detail("error", e.etype().as_str());
            if unanswered {
                event = event.detail("problem", type_uri(failure_problem(code).kind));
            }
            let event = with_principal(event, ctx.principal.as_ref());
            ctx.audit.push(event);
        }
        if code > 0 && unanswered {
            let problem = failure_problem(code);
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

    pub(super) async fn record(
        &self,
        session: &mut Session,
        e: Option<&Error>,
        ctx: &mut RequestCtx,
    ) {
        if !ctx.request_id.is_empty() {
            self.metrics.in_flight.dec();
        }
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or(ctx.local_status)
            .unwrap_or(0);
        let route = ctx.route_label();
        if let Some(e) = e
            && e.esource() == &ErrorSource::Upstream
        {
            self.metrics
                .upstream_errors
                .with_label_values(&[route, upstream_error_kind(e.etype())])
                .inc();
        }
        let elapsed = ctx.start.elapsed();
        self.metrics
            .record_request(route, &session.req_header().method, status, elapsed);
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
        // A request that went upstream: its findings (report-only) after the response.
        if !ctx.audit.is_empty() {
            self.audit.record(std::mem::take(&mut ctx.audit)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_that_never_arrives_is_the_clients_timeout() {
        assert_eq!(
            failure_status(&Error::new_down(ErrorType::ReadTimedout)),
            408
        );
        assert_eq!(failure_status(&Error::new_in(ErrorType::ReadTimedout)), 408);
        // An upstream that does not answer is still the gateway's problem.
        assert_eq!(failure_status(&Error::new_up(ErrorType::ReadTimedout)), 502);
        assert_eq!(failure_problem(408).status, 408);
    }
}
