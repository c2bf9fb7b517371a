//! The `backend.attachments` section: size and type limits of ticket attachments and
//! where their encrypted objects are stored ([`AttachmentsConfig`] in the file,
//! [`AttachmentsSettings`] validated).

use std::path::{Path, PathBuf};

use portcullis_contract::problems::Problems;
use portcullis_contract::shared::resolve_path;
use schemars::JsonSchema;
use serde::Deserialize;

/// Largest attachment accepted by default: 25 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 25 * 1024 * 1024;

/// Content types accepted by default (as sniffed from the bytes, never as claimed).
pub const DEFAULT_ALLOWED_TYPES: &[&str] = &[
    "application/pdf",
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "text/plain",
];

/// The `backend.attachments:` section.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AttachmentsConfig {
    /// Largest upload, in bytes (1 to 1 GiB). Default 26214400 (25 MiB). Routes of the
    /// proxy that carry uploads (`proxy.routes[].max_body_bytes`) must allow the same.
    pub max_bytes: u64,
    /// Content types accepted, as sniffed from the content's first bytes (`text/plain`
    /// is UTF-8 text without NUL bytes). Default: PDF, PNG, JPEG, GIF, WebP, plain text.
    pub allowed_types: Vec<String>,
    /// Where the encrypted objects go. Default: the filesystem under
    /// `<state_dir>/attachments`.
    pub storage: StorageConfig,
}

impl Default for AttachmentsConfig {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_BYTES,
            allowed_types: DEFAULT_ALLOWED_TYPES
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            storage: StorageConfig::Filesystem { dir: None },
        }
    }
}

/// The object store holding encrypted attachments (content only: names, sizes and
/// wrapped keys live in the database).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StorageConfig {
    /// Files under `dir` (default `<state_dir>/attachments`).
    Filesystem { dir: Option<PathBuf> },
    /// Any S3-compatible store.
    S3 {
        /// e.g. `https://s3.eu-west-1.amazonaws.com` or `http://127.0.0.1:9000`.
        endpoint: String,
        bucket: String,
        /// Default `us-east-1`.
        #[serde(default = "default_region")]
        region: String,
        /// File with `aws_access_key_id = …` and `aws_secret_access_key = …` lines
        /// (the shared-credentials format; `[section]` lines are ignored).
        credentials_file: PathBuf,
        /// Object names start with this prefix. Default none.
        #[serde(default)]
        prefix: Option<String>,
    },
}

impl StorageConfig {
    /// Validates a store's settings (`at` names it in problems); `default_dir` is the
    /// folder of a `filesystem` store without one.
    pub fn validate(
        &self,
        at: &str,
        base: &Path,
        default_dir: PathBuf,
        problems: &mut Problems,
    ) -> StorageSettings {
        match self {
            StorageConfig::Filesystem { dir } => StorageSettings::Filesystem {
                dir: dir
                    .as_deref()
                    .map_or(default_dir, |d| resolve_path(base, d)),
            },
            StorageConfig::S3 {
                endpoint,
                bucket,
                region,
                credentials_file,
                prefix,
            } => {
                if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
                    problems.push(
                        format!("{at}.endpoint"),
                        "must be an http:// or https:// URL",
                    );
                }
                if bucket.len() < 3
                    || !bucket
                        .bytes()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b".-".contains(&c))
                {
                    problems.push(
                        format!("{at}.bucket"),
                        "must be 3 or more lower-case letters, digits, `.` or `-`",
                    );
                }
                StorageSettings::S3 {
                    endpoint: endpoint.clone(),
                    bucket: bucket.clone(),
                    region: region.clone(),
                    credentials_file: resolve_path(base, credentials_file),
                    prefix: prefix.clone(),
                }
            }
        }
    }
}

fn default_region() -> String {
    "us-east-1".to_owned()
}

/// Validated storage location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageSettings {
    Filesystem {
        dir: PathBuf,
    },
    S3 {
        endpoint: String,
        bucket: String,
        region: String,
        credentials_file: PathBuf,
        prefix: Option<String>,
    },
}

/// Validated attachment settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentsSettings {
    pub max_bytes: u64,
    pub allowed_types: Vec<String>,
    pub storage: StorageSettings,
    /// Key-encryption keys (`<state_dir>/keys/kek/`).
    pub kek_dir: PathBuf,
}

impl AttachmentsSettings {
    /// Defaults with storage and keys under `state_dir` (tests and tools).
    pub fn under(state_dir: &Path) -> Self {
        Self {
            max_bytes: DEFAULT_MAX_BYTES,
            allowed_types: DEFAULT_ALLOWED_TYPES
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            storage: StorageSettings::Filesystem {
                dir: state_dir.join("attachments"),
            },
            kek_dir: state_dir.join("keys/kek"),
        }
    }
}

impl AttachmentsConfig {
    pub fn validate(
        &self,
        prefix: &str,
        base: &Path,
        state_dir: &Path,
        problems: &mut Problems,
    ) -> Option<AttachmentsSettings> {
        let Self {
            max_bytes,
            allowed_types,
            storage,
        } = self;
        let before = problems.len();
        if *max_bytes == 0 || *max_bytes > 1 << 30 {
            problems.push(
                format!("{prefix}.max_bytes"),
                "must be 1 to 1073741824 (1 GiB)",
            );
        }
        for (i, t) in allowed_types.iter().enumerate() {
            let ok = t.split_once('/').is_some_and(|(a, b)| {
                !a.is_empty()
                    && !b.is_empty()
                    && t.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || b"/.+-".contains(&c))
            });
            if !ok {
                problems.push(
                    format!("{prefix}.allowed_types[{i}]"),
                    format!("`{t}` is not a media type such as image/png"),
                );
            }
        }
        let storage = storage.validate(
            &format!("{prefix}.storage"),
            base,
            state_dir.join("attachments"),
            problems,
        );
        (problems.len() == before).then(|| AttachmentsSettings {
            max_bytes: *max_bytes,
            allowed_types: allowed_types.clone(),
            storage,
            kek_dir: state_dir.join("keys/kek"),
        })
    }
}
