//! The middleware that watches every request the backend answers: its duration goes to
//! the per-route [`Timings`](super::performance::Timings), and a 5xx becomes an
//! `http.error` audit event (category `api`, outcome `failure`, level `error`) with the
//! route template, the method, the status and the problem type answered, which
//! `/monitoring/errors` groups. Routes are axum's templates (`MatchedPath`), never raw
//! paths; a request no route matched counts as `unmatched`.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use portcullis_audit::{Category, Level, Outcome};
use portcullis_contract::problem::type_uri;

use crate::AppState;
use crate::audit_log::event;
use crate::http::ProblemSlug;

/// Route label of requests no route matched.
const UNMATCHED: &str = "unmatched";

/// The method as a bounded label: the standard ones, else `other`.
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Times the request; records a 5xx as an `http.error` event (after the handler, so the
/// event follows what the handler recorded; a failure to record it is logged).
pub async fn observe(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
        .to_owned();
    let method = method_label(req.method());
    let resp = next.run(req).await;
    let status = resp.status();
    if status.is_server_error() {
        let slug = resp
            .extensions()
            .get::<ProblemSlug>()
            .map_or("internal", |p| p.0);
        s.audit_logged(
            event(Category::Api, "http.error", Outcome::Failure)
                .level(Level::Error)
                .route(route.as_str())
                .detail("problem", type_uri(slug))
                .detail("status", status.as_u16())
                .detail("method", method),
        )
        .await;
    }
    s.timings.record(
        method,
        &route,
        status.as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}
