//! The web application's files (`backend.web_dir`, built by `make web` into `web/dist`):
//! `GET /` is its `index.html`, `GET /assets/…` its scripts, styles and images.
//!
//! The proxy adds the security headers and the CSP; here only caching differs:
//! `GET /monitoring/dashboard` is the same `index.html`: the application draws the
//! monitoring dashboard when it is loaded at that path (its data come from
//! `/monitoring/*`, which check the caller).
//!
//! `index.html` is revalidated on every load (it names the current bundle and its
//! Subresource Integrity hashes), the bundle's files have content-hashed names and are
//! cached for a year. Paths are resolved by `tower_http::services::ServeDir`, which
//! refuses `..` and absolute components; the application uses hash routes, so no other
//! path falls back to `index.html`.

use std::path::Path;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use tower_http::services::{ServeDir, ServeFile};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::AppState;
use crate::http::ApiError;

/// The monitoring dashboard's address: a page of the application.
pub const DASHBOARD_PATH: &str = "/monitoring/dashboard";

/// Routes serving the application from `dir`. When `dir` holds no `index.html` at
/// start, `/` answers 503 with how to build it (and the start-up log says so).
pub fn router(dir: &Path) -> Router<AppState> {
    let index = dir.join("index.html");
    if !index.is_file() {
        tracing::warn!(
            dir = %dir.display(),
            "web application not built (run `make web`): / answers 503"
        );
        return Router::new()
            .route("/", axum::routing::get(not_built))
            .route(DASHBOARD_PATH, axum::routing::get(not_built));
    }
    let page = Router::new()
        .route_service("/", ServeFile::new(index.clone()))
        .route_service(DASHBOARD_PATH, ServeFile::new(index))
        .layer(cache(HeaderValue::from_static("no-cache")));
    let assets = Router::new()
        .nest_service("/assets", ServeDir::new(dir.join("assets")))
        .layer(cache(HeaderValue::from_static(
            "public, max-age=31536000, immutable",
        )));
    page.merge(assets)
}

fn cache(value: HeaderValue) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::overriding(header::CACHE_CONTROL, value)
}

async fn not_built() -> ApiError {
    ApiError::Custom {
        status: StatusCode::SERVICE_UNAVAILABLE,
        kind: "web-app-not-built",
        detail: "The web application is not built on this server (run `make web`)".to_owned(),
    }
}
