//! `GET /monitoring/health`: whether the backend is up and reaches its database, and
//! the digest of the policy bundle it enforces (the proxy shows its own at
//! `/health/ready`, so an operator can see that both layers agree).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::AppState;

#[utoipa::path(get, path = "/monitoring/health", tag = "monitoring",
    responses((status = 200, description = "The backend is up", body = serde_json::Value)))]
pub(crate) async fn health(State(s): State<AppState>) -> Response {
    let db_ok = sqlx::query("select 1").execute(s.db.pool()).await.is_ok();
    let status = if db_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if db_ok { "ok" } else { "degraded" },
        "service": "portcullis-backend",
        "version": env!("CARGO_PKG_VERSION"),
        "checks": { "database": if db_ok { "ok" } else { "unreachable" } },
        "policy": { "digest": s.authz.current().digest() },
    });
    (status, Json(body)).into_response()
}
