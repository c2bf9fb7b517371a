//! Parsing of CSP violation reports (`POST /.portcullis/csp-report`).
//!
//! Two wire formats exist: the legacy `application/csp-report` body sent for
//! `report-uri`, and the Reporting API's `application/reports+json` batch sent
//! for `report-to`. Both become [`Violation`]s. Browsers add fields over time,
//! so unknown fields are ignored; missing required ones are a 400.

use serde::Deserialize;
use thiserror::Error;

/// Most reports accepted in one Reporting API batch.
pub const MAX_REPORTS_PER_BATCH: usize = 100;
/// Longest URL kept in a log line.
const MAX_LOGGED_URL: usize = 256;

/// Directive names used as metric labels; anything else is `other`, so a
/// client cannot create label values at will.
const KNOWN_DIRECTIVES: &[&str] = &[
    "default-src",
    "script-src",
    "script-src-elem",
    "script-src-attr",
    "style-src",
    "style-src-elem",
    "style-src-attr",
    "img-src",
    "font-src",
    "connect-src",
    "media-src",
    "object-src",
    "frame-src",
    "child-src",
    "worker-src",
    "manifest-src",
    "frame-ancestors",
    "form-action",
    "base-uri",
    "require-trusted-types-for",
    "trusted-types",
    "upgrade-insecure-requests",
    "sandbox",
    "fenced-frame-src",
    "prefetch-src",
];

/// Why a report body was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ReportError {
    #[error("send application/csp-report or application/reports+json")]
    UnsupportedMediaType,
    #[error("the report is not valid: {0}")]
    Malformed(String),
}

impl ReportError {
    /// Stable reason label for metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnsupportedMediaType => "csp_report_media_type",
            Self::Malformed(_) => "csp_report_malformed",
        }
    }
}

/// One violation, reduced to what is logged and counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// A known directive name or `other`.
    pub directive: &'static str,
    /// The page's URL without query or fragment.
    pub document_url: String,
    /// The blocked resource without query or fragment (or a keyword such as `inline`).
    pub blocked_url: String,
    /// `enforce` or `report`.
    pub disposition: String,
}

impl Violation {
    /// Path of the document URL, for finding the route the page came from.
    pub fn document_path(&self) -> Option<&str> {
        let rest = self.document_url.split_once("://").map(|(_, r)| r)?;
        Some(rest.find('/').map_or("/", |i| &rest[i..]))
    }
}

#[derive(Deserialize)]
struct LegacyEnvelope {
    #[serde(rename = "csp-report")]
    report: LegacyReport,
}

#[derive(Deserialize)]
struct LegacyReport {
    #[serde(rename = "document-uri")]
    document_uri: String,
    #[serde(rename = "violated-directive")]
    violated_directive: Option<String>,
    #[serde(rename = "effective-directive")]
    effective_directive: Option<String>,
    #[serde(rename = "blocked-uri", default)]
    blocked_uri: String,
    #[serde(default)]
    disposition: Option<String>,
}

#[derive(Deserialize)]
struct ApiReport {
    #[serde(rename = "type")]
    kind: String,
    body: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiCspBody {
    #[serde(rename = "documentURL")]
    document_url: String,
    effective_directive: String,
    #[serde(rename = "blockedURL", default)]
    blocked_url: String,
    #[serde(default)]
    disposition: Option<String>,
}

fn directive_label(raw: &str) -> &'static str {
    let name = raw
        .split_ascii_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    KNOWN_DIRECTIVES
        .iter()
        .copied()
        .find(|d| *d == name)
        .unwrap_or("other")
}

/// Drops query and fragment (they can carry tokens) and bounds the length.
fn redact_url(url: &str) -> String {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    let mut out: String = url[..end].chars().filter(|c| !c.is_control()).collect();
    if out.len() > MAX_LOGGED_URL {
        let mut cut = MAX_LOGGED_URL;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

fn disposition(raw: Option<String>) -> String {
    match raw.as_deref() {
        Some("report") => "report".to_owned(),
        _ => "enforce".to_owned(),
    }
}

/// Parses a report body of the given `Content-Type`.
pub fn parse(content_type: &str, body: &[u8]) -> Result<Vec<Violation>, ReportError> {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let malformed = |e: serde_json::Error| ReportError::Malformed(e.to_string());
    match media.as_str() {
        "application/csp-report" => {
            let LegacyEnvelope { report } = serde_json::from_slice(body).map_err(malformed)?;
            let directive = report
                .effective_directive
                .or(report.violated_directive)
                .ok_or_else(|| ReportError::Malformed("no violated-directive".to_owned()))?;
            Ok(vec![Violation {
                directive: directive_label(&directive),
                document_url: redact_url(&report.document_uri),
                blocked_url: redact_url(&report.blocked_uri),
                disposition: disposition(report.disposition),
            }])
        }
        "application/reports+json" => {
            let reports: Vec<ApiReport> = serde_json::from_slice(body).map_err(malformed)?;
            if reports.is_empty() || reports.len() > MAX_REPORTS_PER_BATCH {
                return Err(ReportError::Malformed(format!(
                    "expected 1 to {MAX_REPORTS_PER_BATCH} reports"
                )));
            }
            let mut out = Vec::new();
            for (i, r) in reports.into_iter().enumerate() {
                // Other report types may share the endpoint; they are not ours to count.
                if r.kind != "csp-violation" {
                    continue;
                }
                let body = r
                    .body
                    .ok_or_else(|| ReportError::Malformed(format!("report {i} has no body")))?;
                let b: ApiCspBody = serde_json::from_value(body)
                    .map_err(|e| ReportError::Malformed(format!("report {i}: {e}")))?;
                out.push(Violation {
                    directive: directive_label(&b.effective_directive),
                    document_url: redact_url(&b.document_url),
                    blocked_url: redact_url(&b.blocked_url),
                    disposition: disposition(b.disposition),
                });
            }
            if out.is_empty() {
                return Err(ReportError::Malformed("no csp-violation report".to_owned()));
            }
            Ok(out)
        }
        _ => Err(ReportError::UnsupportedMediaType),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_report_parses() {
        let body = br#"{"csp-report":{"document-uri":"https://app.example/api/x?token=s3cret",
            "violated-directive":"script-src-elem 'self'","blocked-uri":"https://evil.example/x.js?a=1",
            "original-policy":"...","disposition":"report"}}"#;
        let v = parse("application/csp-report; charset=utf-8", body).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].directive, "script-src-elem");
        assert_eq!(v[0].document_url, "https://app.example/api/x");
        assert_eq!(v[0].document_path(), Some("/api/x"));
        assert_eq!(v[0].blocked_url, "https://evil.example/x.js");
        assert_eq!(v[0].disposition, "report");
    }

    #[test]
    fn reporting_api_batch_parses() {
        let body = br#"[{"type":"csp-violation","age":1,"url":"https://a/","user_agent":"x",
            "body":{"documentURL":"https://a/","effectiveDirective":"img-src","blockedURL":"data",
            "disposition":"enforce","statusCode":200}},
            {"type":"deprecation","body":{}}]"#;
        let v = parse("application/reports+json", body).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].directive, "img-src");
    }

    #[test]
    fn bad_reports_are_refused() {
        assert_eq!(
            parse("text/plain", b"{}"),
            Err(ReportError::UnsupportedMediaType)
        );
        for (ct, body) in [
            ("application/csp-report", &b"not json"[..]),
            ("application/csp-report", br#"{"csp-report":{}}"#),
            (
                "application/csp-report",
                br#"{"csp-report":{"document-uri":"https://a/"}}"#,
            ),
            ("application/reports+json", b"[]"),
            ("application/reports+json", br#"{"type":"csp-violation"}"#),
            (
                "application/reports+json",
                br#"[{"type":"csp-violation","body":{"documentURL":1}}]"#,
            ),
            (
                "application/reports+json",
                br#"[{"type":"deprecation","body":{}}]"#,
            ),
        ] {
            assert!(
                matches!(parse(ct, body), Err(ReportError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn directive_labels_are_bounded() {
        assert_eq!(directive_label("made-up-directive"), "other");
        assert_eq!(directive_label("SCRIPT-SRC"), "script-src");
        assert_eq!(directive_label(""), "other");
    }
}
