//! Ticket attachments: the endpoints under `/api/tickets/{id}/attachments` ([`router`]),
//! their object-level authorization (`data.portcullis.attachments.decision`), their
//! SQL ([`repo`]), the envelope encryption of their content ([`crypto`]), the object
//! store it lives in ([`store`]), type sniffing and file names ([`sniff`]) and the
//! re-wrapping of data keys under a new key-encryption key ([`rotation`]).

pub mod crypto;
pub(crate) mod handlers;
mod policy;
pub mod repo;
pub mod rotation;
pub mod sniff;
pub mod store;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use object_store::ObjectStore;

use crate::AppState;
use crate::settings::AttachmentsSettings;

pub use self::crypto::{CryptoError, Keks};

/// What the attachment endpoints share: limits, the store, the KEKs.
#[derive(Clone)]
pub struct Attachments {
    pub settings: AttachmentsSettings,
    pub store: Arc<dyn ObjectStore>,
    pub keks: Keks,
}

impl std::fmt::Debug for Attachments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachments")
            .field("settings", &self.settings)
            .field("store", &self.store.to_string())
            .finish_non_exhaustive()
    }
}

/// Why attachments could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AttachmentsError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Keys(#[from] CryptoError),
}

impl Attachments {
    /// Opens the store and the KEK folder (creating a first KEK when there is none).
    pub fn open(settings: &AttachmentsSettings) -> Result<Self, AttachmentsError> {
        Ok(Self {
            store: store::open(&settings.storage)?,
            keks: Keks::open(&settings.kek_dir)?,
            settings: settings.clone(),
        })
    }
}

/// Routes of the attachment API.
pub fn router() -> Router<AppState> {
    use handlers::{delete_attachment, download, list_attachments, upload, upload_version};
    Router::new()
        .route(
            "/api/tickets/{id}/attachments",
            get(list_attachments).post(upload),
        )
        .route(
            "/api/tickets/{id}/attachments/{aid}",
            get(download).delete(delete_attachment),
        )
        .route(
            "/api/tickets/{id}/attachments/{aid}/versions",
            post(upload_version),
        )
}
