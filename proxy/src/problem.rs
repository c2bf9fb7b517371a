//! RFC 9457 problem documents for the responses the proxy writes itself.

use bytes::Bytes;
use serde::Serialize;

/// Media type of problem documents.
pub const PROBLEM_JSON: &str = "application/problem+json";

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
    request_id: &'a str,
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

    /// The stable `type` URI for a slug.
    pub fn type_uri(kind: &str) -> String {
        format!("urn:portcullis:problem:{kind}")
    }

    /// Serialises the document; `request_id` ties it to the logs.
    pub fn to_body(&self, request_id: &str) -> Bytes {
        let body = Body {
            kind: Self::type_uri(self.kind),
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
