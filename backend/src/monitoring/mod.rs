//! Monitoring and discovery: `GET /monitoring/health`, the OpenAPI document
//! (`GET /api/openapi.json`), and the admin listener's routes ([`admin_router`]).

mod admin;
mod health;
mod openapi;

pub use self::admin::admin_router;

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
