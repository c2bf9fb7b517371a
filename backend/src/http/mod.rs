//! Shared HTTP plumbing, below every resource: extractors ([`Caller`], [`ApiJson`],
//! [`ApiQuery`]), [`ApiError`] as problem documents, ETags, field checks, the
//! request-id/client middleware and the policy glue for object-level checks.
//! Nothing here knows any resource.

pub mod error;
pub mod etag;
pub mod extract;
pub mod meta;
pub mod policy;
pub mod validate;

pub use error::{ApiError, Problem, ProblemSlug};
pub use extract::{ApiJson, ApiQuery, Caller, ServiceRefusal, verify_identity, verify_service};

/// Largest accepted JSON body.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
