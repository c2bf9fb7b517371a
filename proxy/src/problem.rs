//! RFC 9457 problem documents for the responses the proxy writes itself, and
//! [`Refusal`], a guard's decision to answer locally with one.

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use portcullis_contract::problem::type_uri;
use serde::Serialize;

/// Media type of problem documents.
pub use portcullis_contract::problem::CONTENT_TYPE as PROBLEM_JSON;

/// A problem the proxy answers with. `kind` is the stable slug behind `type`.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: u16,
    pub kind: &'static str,
    pub title: &'static str,
    pub detail: String,
    /// The policy decision that refused the request, if one did.
    pub decision_id: Option<String>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    decision_id: Option<&'a str>,
}

impl Problem {
    pub fn new(
        status: u16,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            title,
            detail: detail.into(),
            decision_id: None,
        }
    }

    /// Serialises the document; `request_id` ties it to the logs.
    pub fn to_body(&self, request_id: &str) -> Bytes {
        self.serialise(Some(request_id))
    }

    /// Serialises the document for an answer that has no request id (the
    /// clear-text redirect listener).
    pub fn to_body_without_request_id(&self) -> Bytes {
        self.serialise(None)
    }

    fn serialise(&self, request_id: Option<&str>) -> Bytes {
        let body = Body {
            kind: type_uri(self.kind),
            title: self.title,
            status: self.status,
            detail: &self.detail,
            request_id,
            decision_id: self.decision_id.as_deref(),
        };
        // Serialising plain strings and integers cannot fail.
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }
}

/// A refusal to answer locally: the problem and any extra response headers
/// (`WWW-Authenticate`, `Retry-After`, …).
#[derive(Debug, Clone)]
pub struct Refusal {
    pub problem: Problem,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Refusal {
    /// A refusal with no extra headers.
    pub fn new(problem: Problem) -> Self {
        Self {
            problem,
            headers: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_fields_keep_their_order() {
        let p = Problem::new(400, "bad-request", "Bad request", "Use HTTPS");
        assert_eq!(
            &p.to_body_without_request_id()[..],
            br#"{"type":"urn:portcullis:problem:bad-request","title":"Bad request","status":400,"detail":"Use HTTPS"}"#
        );
        assert_eq!(
            &p.to_body("r1")[..],
            br#"{"type":"urn:portcullis:problem:bad-request","title":"Bad request","status":400,"detail":"Use HTTPS","request_id":"r1"}"#
        );
    }
}
