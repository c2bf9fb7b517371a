//! The backend's admin listener (`backend.admin_listen`): `GET /metrics`, the
//! backend's own registry in the Prometheus text format, and `GET /health/live`.
//! Apart from the API listener, so metrics are never reachable through the proxy.

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{Encoder, Registry, TextEncoder};

/// Routes of the admin listener.
pub fn admin_router(registry: Registry) -> Router {
    Router::new()
        .route("/metrics", get(move || metrics(registry.clone())))
        .route("/health/live", get(|| async { "ok\n" }))
        .fallback(|| async { StatusCode::NOT_FOUND })
}

async fn metrics(registry: Registry) -> Response {
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    if let Err(e) = encoder.encode(&registry.gather(), &mut body) {
        tracing::error!(error = %e, "cannot encode metrics");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}
