//! The problem `type` of every error answer (RFC 9457), from proxy and backend alike.

/// Every problem `type` starts with this; the slug after it is stable.
pub const TYPE_PREFIX: &str = "urn:portcullis:problem:";

/// The stable `type` URI for a slug such as `not-found`.
#[must_use]
pub fn type_uri(slug: &str) -> String {
    format!("{TYPE_PREFIX}{slug}")
}

/// The media type of a problem document.
pub const CONTENT_TYPE: &str = "application/problem+json";
