//! The object store that holds encrypted attachment content: local files by default,
//! any S3-compatible store by configuration (credentials from a file, never the
//! environment).

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use secrecy::{ExposeSecret, SecretString};

use crate::settings::StorageSettings;

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("attachment folder {path}: {reason}")]
    Folder { path: String, reason: String },
    #[error("S3 credentials file {path}: {reason}")]
    Credentials { path: String, reason: String },
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
}

/// Opens the configured store.
pub fn open(settings: &StorageSettings) -> Result<Arc<dyn ObjectStore>, StoreError> {
    match settings {
        StorageSettings::Filesystem { dir } => {
            let folder = |e: std::io::Error| StoreError::Folder {
                path: dir.display().to_string(),
                reason: e.to_string(),
            };
            {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(folder)?;
            }
            Ok(Arc::new(LocalFileSystem::new_with_prefix(dir)?))
        }
        StorageSettings::S3 {
            endpoint,
            bucket,
            region,
            credentials_file,
            prefix,
        } => {
            let (key_id, secret) = read_credentials(credentials_file)?;
            // reqwest is built without a TLS provider of its own (see Cargo.toml): it uses
            // the process default, ring. Already installed is fine.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let s3 = AmazonS3Builder::new()
                .with_endpoint(endpoint)
                .with_bucket_name(bucket)
                .with_region(region)
                .with_access_key_id(key_id)
                .with_secret_access_key(secret.expose_secret())
                // Path-style requests: what S3-compatible servers expect.
                .with_virtual_hosted_style_request(false)
                .with_allow_http(endpoint.starts_with("http://"))
                .build()?;
            Ok(match prefix.as_deref().filter(|p| !p.is_empty()) {
                Some(p) => Arc::new(PrefixStore::new(s3, p)),
                None => Arc::new(s3),
            })
        }
    }
}

/// `aws_access_key_id = …` and `aws_secret_access_key = …` from the shared-credentials
/// format (other keys and `[section]` lines are ignored).
fn read_credentials(path: &std::path::Path) -> Result<(String, SecretString), StoreError> {
    let err = |reason: String| StoreError::Credentials {
        path: path.display().to_string(),
        reason,
    };
    let text =
        zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?);
    let mut id = None;
    let mut secret = None;
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k.trim() {
            "aws_access_key_id" => id = Some(v.trim().to_owned()),
            "aws_secret_access_key" => secret = Some(SecretString::from(v.trim().to_owned())),
            _ => {}
        }
    }
    match (id, secret) {
        (Some(i), Some(s)) if !i.is_empty() && !s.expose_secret().is_empty() => Ok((i, s)),
        _ => Err(err(
            "needs aws_access_key_id = … and aws_secret_access_key = … lines".into(),
        )),
    }
}
