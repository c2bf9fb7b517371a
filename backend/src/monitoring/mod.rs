//! Monitoring and discovery: `GET /monitoring/health` and the OpenAPI document
//! (`GET /api/openapi.json`).

mod health;
mod openapi;

use axum::Router;
use axum::routing::get;

pub use self::openapi::openapi;
use crate::AppState;

/// Routes of health and the API description.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/monitoring/health", get(health::health))
        .route("/api/openapi.json", get(openapi::openapi_json))
}
