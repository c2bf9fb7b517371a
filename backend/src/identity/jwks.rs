//! Signing keys in service: `GET /auth/jwks.json` and the task that keeps the
//! keyring current (rotations by another process, timed steps, each an audit event).

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::keys;
use crate::AppState;
use crate::http::ApiError;

pub(super) async fn jwks(State(s): State<AppState>) -> Result<Response, ApiError> {
    let body = s
        .identity
        .keyring
        .read()
        .map_err(|_| ApiError::Internal("keyring lock poisoned".into()))?
        .jwks();
    Ok(([(header::CACHE_CONTROL, "public, max-age=60")], Json(body)).into_response())
}

/// How often the keyring is re-read and its time-based steps taken.
const KEYRING_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps the signing keys current: picks up rotations started by
/// `portcullis keys rotate` (another process) and takes the timed steps
/// (next → current after the overlap, previous → retired once no token it
/// signed can still be valid). Each step is an audit event.
pub async fn keyring_maintenance(state: AppState) {
    let retire_after = state.identity.settings.access_ttl_seconds + 60;
    loop {
        tokio::time::sleep(KEYRING_TICK).await;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        // The guard must not live across an await: take the steps in a block.
        let steps = {
            let Ok(mut ring) = state.identity.keyring.write() else {
                tracing::error!("keyring lock poisoned");
                return;
            };
            if let Err(e) = ring.reload() {
                tracing::warn!(error = %e, "cannot re-read the keyring; keeping the keys in memory");
                continue;
            }
            match ring.advance(now, retire_after) {
                Ok(events) => events,
                Err(e) => {
                    tracing::error!(error = %e, "keyring step failed");
                    continue;
                }
            }
        };
        for step in steps {
            state.audit_logged(keys::rotation_event(&step)).await;
        }
    }
}
