//! The proxy ships its audit events to the backend's audit table over this endpoint:
//! NDJSON lines exactly as chained, signed as [`crate::identity::SERVICE_SUBJECT`],
//! with the body's SHA-256 in the signed query so the signature covers the body.

/// `POST` endpoint of the ingest.
pub const PATH: &str = "/internal/audit/ingest";
/// The only kind of emitter whose events the ingest takes (`proxy`, or `proxy-<instance>`).
pub const EMITTER: &str = "proxy";
/// Largest ingest body.
pub const MAX_BODY_BYTES: usize = 16 << 20;
/// Query parameter carrying the hex SHA-256 of the body.
pub const DIGEST_PARAM: &str = "sha256";
