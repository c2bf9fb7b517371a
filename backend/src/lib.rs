//! Portcullis backend: the ticket service the proxy guards.
//!
//! It listens on loopback (`127.0.0.1:8081` by default) and is reached only
//! through the proxy. At this stage it serves its health endpoint; tickets,
//! identity and the admin API build on it.

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use schemars::JsonSchema;
use serde::Deserialize;

/// The `backend:` section of the configuration file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BackendConfig {
    /// Listening address. Default `127.0.0.1:8081`: keep it on loopback, the
    /// proxy is the only client.
    pub listen: String,
}

impl Default for BackendConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8081".to_owned(),
        }
    }
}

/// Validated backend settings.
#[derive(Debug, Clone)]
pub struct BackendSettings {
    pub listen: SocketAddr,
}

impl BackendConfig {
    /// Validates the section; every problem comes back as `path: message`.
    pub fn validate(&self, prefix: &str) -> Result<BackendSettings, Vec<String>> {
        let Self { listen } = self;
        match listen.parse::<SocketAddr>() {
            Ok(listen) => Ok(BackendSettings { listen }),
            Err(_) => Err(vec![format!(
                "{prefix}.listen: `{listen}` is not an IP:port address"
            )]),
        }
    }
}

/// A problem+json response with a stable `type`.
fn problem(status: StatusCode, kind: &str, detail: &str) -> Response {
    let body = serde_json::json!({
        "type": format!("urn:portcullis:problem:{kind}"),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

async fn health() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({
            "status": "ok",
            "service": "portcullis-backend",
            "version": env!("CARGO_PKG_VERSION"),
        })
        .to_string(),
    )
        .into_response()
}

/// The backend's routes.
pub fn router() -> Router {
    Router::new()
        .route("/monitoring/health", get(health))
        .fallback(|| async { problem(StatusCode::NOT_FOUND, "not-found", "No such resource") })
}

/// Serves until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router())
        .with_graceful_shutdown(shutdown)
        .await
}
