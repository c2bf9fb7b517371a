//! CSP violation reports (`POST /.portcullis/csp-report`), parsed by
//! `csp_report::parse` from an unauthenticated body. Input: the `Content-Type` on the
//! first line, the body after it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_proxy::fuzzing::{ReportError, parse_csp_report};

/// `csp_report::MAX_REPORTS_PER_BATCH`, and the longest URL kept.
const MAX_REPORTS: usize = 100;
const MAX_URL: usize = 256;

fuzz_target!(|data: &[u8]| {
    let (content_type, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    // A header value pingora handed over as text.
    let Ok(content_type) = std::str::from_utf8(content_type) else {
        return;
    };
    match parse_csp_report(content_type, body) {
        Ok(violations) => {
            assert!(!violations.is_empty() && violations.len() <= MAX_REPORTS);
            for v in &violations {
                // Metric labels come from a fixed set.
                assert!(
                    !v.directive.is_empty()
                        && v.directive
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b == b'-'),
                    "{:?}",
                    v.directive
                );
                assert!(v.disposition == "enforce" || v.disposition == "report");
                // Logged URLs: no query or fragment (tokens), no control characters, bounded.
                for url in [&v.document_url, &v.blocked_url] {
                    assert!(url.len() <= MAX_URL, "{url:?}");
                    assert!(!url.contains(['?', '#']), "{url:?}");
                    assert!(!url.chars().any(char::is_control), "{url:?}");
                }
                // What the collector does next: find the page's route.
                if let Some(path) = v.document_path() {
                    assert!(path.starts_with('/'), "{path:?}");
                    let _ = portcullis_proxy::path::normalise(path);
                }
            }
        }
        Err(ReportError::UnsupportedMediaType) => {
            let media = content_type.split(';').next().unwrap_or("").trim();
            assert!(
                !media.eq_ignore_ascii_case("application/csp-report")
                    && !media.eq_ignore_ascii_case("application/reports+json")
            );
        }
        Err(ReportError::Malformed(_)) => {}
    }
});
