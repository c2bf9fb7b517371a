//! Monitoring and discovery for administrators and developers: `GET /monitoring/health`
//! (public), `/monitoring/errors` (recent failures of the audit trail, grouped),
//! `/monitoring/performance` (latency percentiles per route), the middleware that feeds
//! them ([`observe`]), the OpenAPI document (`GET /api/openapi.json`), and the admin
//! listener's routes ([`admin_router`]). `/monitoring/dashboard` is a page of the web
//! application ([`crate::web`]) that draws these figures.

mod admin;
mod errors;
mod health;
mod observe;
mod openapi;
mod performance;

pub use self::admin::admin_router;
pub use self::observe::observe;
pub use self::performance::Timings;

use axum::Router;
use axum::routing::get;

pub use self::openapi::openapi;
use crate::AppState;

/// Routes of monitoring and the API description.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/monitoring/health", get(health::health))
        .route("/monitoring/errors", get(errors::errors))
        .route("/monitoring/performance", get(performance::performance))
        .route("/api/openapi.json", get(openapi::openapi_json))
}
