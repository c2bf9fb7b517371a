//! The adversarial suite: raw bytes over TLS to the real binary, in front of a recording
//! upstream, so every case asserts what reached the upstream as well as what the client
//! was answered. One table, [`CASES`]: a case's name, the exact bytes, the statuses it
//! may get and what the upstream may have seen.
//!
//! Classes: request smuggling and desync (Content-Length and Transfer-Encoding
//! spellings, CL.TE/TE.CL, obs-fold, chunk syntax, requests hidden behind a local
//! refusal or a chunked body), request targets (absolute-form, asterisk-form, CONNECT),
//! hop-by-hop and connection-named headers, and identity/forwarding spoofing (case
//! variants, trailers). Slow and idle connections are in `tests/connections.rs`; floods
//! of reports and refusals against the audit trail in `tests/enforcement.rs`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod support;

use support::portcullis;
use support::recorder::{self, Recorded};

/// What the upstream may have seen for a case.
type Upstream = fn(&[Recorded]) -> Result<(), String>;

struct Case {
    name: &'static str,
    request: &'static [u8],
    /// Statuses the client may get (0: the connection closed without a response).
    status: &'static [u16],
    upstream: Upstream,
    /// Who answers: the gateway (with every security header) or pingora's request-head
    /// parser, before any hook of ours runs (README, "Responses pingora writes itself").
    by: Writer,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Writer {
    Gateway,
    Pingora,
}
use Writer::{Gateway, Pingora};

fn nothing(seen: &[Recorded]) -> Result<(), String> {
    match seen {
        [] => Ok(()),
        _ => Err(format!("reached the upstream: {seen:?}")),
    }
}

/// Exactly one request, `/api/x` with body `hello`, and nothing smuggled after it.
fn only_hello(seen: &[Recorded]) -> Result<(), String> {
    match seen {
        [r] if r.target == "/api/x" && r.body.as_deref() == Ok(b"hello".as_slice()) => Ok(()),
        _ => Err(format!("expected only /api/x with `hello`: {seen:?}")),
    }
}

/// No request the upstream could act on: nothing, or a request whose body never
/// arrived whole.
fn no_complete_request(seen: &[Recorded]) -> Result<(), String> {
    match seen.iter().find(|r| r.body.is_ok()) {
        None => Ok(()),
        Some(r) => Err(format!("a complete request reached the upstream: {r:?}")),
    }
}

/// Nothing named `/smuggled` reached the upstream, and at most the one real request.
fn nothing_smuggled(seen: &[Recorded]) -> Result<(), String> {
    if seen.iter().any(|r| r.target.contains("smuggled")) || seen.len() > 1 {
        return Err(format!("a hidden request reached the upstream: {seen:?}"));
    }
    match seen.first() {
        Some(r)
            if r.body
                .as_ref()
                .is_ok_and(|b| !b.is_empty() && b != b"hello") =>
        {
            Err(format!("the body was read differently: {r:?}"))
        }
        _ => Ok(()),
    }
}

fn one(seen: &[Recorded]) -> Result<&Recorded, String> {
    match seen {
        [r] => Ok(r),
        _ => Err(format!("expected one request upstream: {seen:?}")),
    }
}

fn hop_headers_removed(seen: &[Recorded]) -> Result<(), String> {
    let r = one(seen)?;
    for name in [
        "connection",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-connection",
        "x-secret",
        "http2-settings",
    ] {
        if let Some(v) = r.headers.get(name)
            && !(name == "connection" && v.iter().all(|v| v.eq_ignore_ascii_case("keep-alive")))
        {
            return Err(format!("{name} reached the upstream: {r:?}"));
        }
    }
    match r.header("x-kept") {
        Some("1") => Ok(()),
        _ => Err(format!("an ordinary header was lost: {r:?}")),
    }
}

fn identity_not_spoofed(seen: &[Recorded]) -> Result<(), String> {
    let r = one(seen)?;
    let spoofed = |v: &Vec<String>| v.iter().any(|v| v.contains("forged") || v == "1.2.3.4");
    for (name, values) in &r.headers {
        if (name.starts_with("x-portcullis-") || name.contains("forwarded") || name == "x-real-ip")
            && spoofed(values)
        {
            return Err(format!("{name} carried the client's value upstream: {r:?}"));
        }
    }
    if r.header("x-portcullis-identity").is_some() {
        return Err(format!("an anonymous request carried an identity: {r:?}"));
    }
    Ok(())
}

fn origin_form_only(seen: &[Recorded]) -> Result<(), String> {
    match seen {
        [] => Ok(()),
        [r] if r.target == "/api/x" && r.header("host") != Some("evil.example") => Ok(()),
        _ => Err(format!(
            "the absolute-form target leaked upstream: {seen:?}"
        )),
    }
}

const CASES: &[Case] = &[
    // ---- Content-Length spellings: one header, digits only.
    Case {
        name: "content_length_with_plus_sign",
        request: b"POST /api/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: +5\r\n\r\nhello",
        status: &[400],
        upstream: nothing,
        by: Pingora,
    },
    Case {
        name: "content_length_negative",
        request: b"POST /api/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: -5\r\n\r\nhello",
        status: &[400],
        upstream: nothing,
        by: Pingora,
    },
    Case {
        name: "content_length_repeated_same_value",
        request: b"POST /api/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        status: &[400],
        upstream: nothing,
        by: Gateway,
    },
    Case {
        name: "content_length_repeated_other_value",
        request: b"POST /api/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        status: &[400],
        upstream: nothing,
        by: Pingora,
    },
    Case {
        name: "content_length_list",
        request: b"POST /api/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5, 5\r\n\r\nhello",
        status: &[400],
        upstream: nothing,
        by: Gateway,
    },
    Case {
        name: "content_length_hex",
        request: b"POST /api/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0x5\r\n\r\nhello",
        status: &[400],
        upstream: nothing,
        by: Pingora,
    },
    // ---- Both framings (CL.TE, TE.CL): the classic desync.
    Case {
        name: "cl_te",
        request: b"POST /api/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n",
        // pingora drops the Content-Length (RFC 9112 §6.3: chunked wins) and we close
        // the connection after the response, so the tail is never a request.
        status: &[200, 400],
        upstream: nothing_smuggled,
        by: Gateway,
    },
    Case {
        name: "te_cl",
        request: b"POST /api/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n",
        status: &[200, 400],
        upstream: nothing_smuggled,
        by: Gateway,
    },
    // ---- Transfer-Encoding obfuscations (TE.TE).
    Case {
        name: "te_chunked_then_identity",
        request: b"POST /api/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        status: &[400],
        upstream: nothing,
        by: Pingora,
    },
    Case {
        name: "te_xchunked",
        request: b"POST /api/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        status: &[400],
        upstream: nothing,
        by: Pingora,
    },
    Case {
        name: "te_repeated",
        request: b"POST /api/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        status: &[400],
        upstream: nothing,
        by: Gateway,
    },
    Case {
        name: "te_space_before_colon",
        request: b"POST /api/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding : chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        status: &[400],
        upstream: nothing,
        by: Pingora,
    },
    Case {
        name: "te_chunked_in_capitals_is_chunked",
        request: b"POST /api/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        status: &[200],
        upstream: only_hello,
        by: Gateway,
    },
    // ---- Obsolete line folding and control bytes in a header.
    Case {
        name: "obs_fold",
        request: b"GET /api/x HTTP/1.1\r\nHost: localhost\r\nX-Folded: a\r\n b\r\nConnection: close\r\n\r\n",
        status: &[400],
        upstream: nothing,
        by: Pingora,
    },
    Case {
        name: "nul_in_header_value",
        request: b"GET /api/x HTTP/1.1\r\nHost: localhost\r\nX-A: a\x00b\r\nConnection: close\r\n\r\n",
        status: &[400],
        upstream: nothing,
        by: Pingora,
    },
    Case {
        name: "host_repeated",
        request: b"GET /api/x HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        status: &[400],
        upstream: nothing,
        by: Pingora,
    },
    // ---- Chunk syntax: whatever pingora makes of it, nothing hides behind it.
    Case {
        name: "chunk_size_without_digits",
        // pingora reads an empty size line as the last chunk: the upstream gets an
        // empty body and the rest of the connection is never read.
        request: b"POST /api/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n",
        status: &[200, 400, 0],
        upstream: nothing_smuggled,
        by: Gateway,
    },
    Case {
        name: "chunk_size_not_hex",
        request: b"POST /api/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        status: &[400, 0],
        upstream: no_complete_request,
        by: Gateway,
    },
    Case {
        name: "chunk_extension_with_bare_lf_then_a_pipelined_request",
        request: b"POST /api/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        status: &[200, 400, 0],
        upstream: nothing_smuggled,
        by: Gateway,
    },
    Case {
        name: "a_request_pipelined_after_a_chunked_body_is_not_read",
        request: b"POST /api/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        status: &[200],
        upstream: only_hello,
        by: Gateway,
    },
    Case {
        name: "a_trailer_cannot_add_an_identity",
        request: b"POST /api/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Portcullis-Identity: forged\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
        status: &[200],
        upstream: identity_not_spoofed,
        by: Gateway,
    },
    // ---- A body behind a local refusal is never read as the next request.
    Case {
        name: "a_request_in_the_body_of_a_refused_request",
        request: b"POST /api/..%2fadmin HTTP/1.1\r\nHost: localhost\r\nContent-Length: 51\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: localhost\r\nX: yyyyyyyy\r\n\r\n",
        status: &[400],
        upstream: nothing,
        by: Gateway,
    },
    Case {
        name: "a_request_pipelined_behind_a_refused_one",
        request: b"GET /api/..%2fadmin HTTP/1.1\r\nHost: localhost\r\n\r\nGET /api/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        status: &[400],
        upstream: nothing_smuggled,
        by: Gateway,
    },
    // ---- Request targets other than origin-form.
    Case {
        name: "absolute_form_target",
        request: b"GET https://evil.example/api/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        status: &[200, 400],
        upstream: origin_form_only,
        by: Pingora,
    },
    Case {
        name: "asterisk_form_target",
        request: b"OPTIONS * HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        status: &[400],
        upstream: nothing,
        by: Gateway,
    },
    Case {
        name: "connect_method",
        request: b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
        status: &[400, 405],
        upstream: nothing,
        by: Pingora,
    },
    // ---- Hop-by-hop and identity headers.
    Case {
        name: "connection_named_and_hop_by_hop_headers_stay_here",
        request: b"GET /api/x HTTP/1.1\r\nHost: localhost\r\nConnection: X-Secret, Upgrade, HTTP2-Settings, close\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nX-Kept: 1\r\n\r\n",
        status: &[200],
        upstream: hop_headers_removed,
        by: Gateway,
    },
    Case {
        name: "identity_and_forwarding_headers_in_any_case",
        request: b"GET /api/x HTTP/1.1\r\nHost: localhost\r\nX-PORTCULLIS-Identity: forged\r\nx-portcullis-signature: forged\r\nX-Portcullis-Client-Ip: 1.2.3.4\r\nX-Forwarded-For: 1.2.3.4\r\nFORWARDED: for=1.2.3.4\r\nX-Real-IP: 1.2.3.4\r\nConnection: close\r\n\r\n",
        status: &[200],
        upstream: identity_not_spoofed,
        by: Gateway,
    },
];

#[tokio::test]
async fn hostile_requests_are_refused_and_nothing_hidden_reaches_the_upstream() {
    let (upstream, recorded) = recorder::start().await;
    let p = portcullis()
        .proxy_to(upstream)
        .proxy_yaml("  rate_limits: {rules: [{name: per_ip, key: client_ip, requests_per_period: 1000, burst_requests: 2000}]}\n  limits: {keepalive_idle_seconds: 2}\n")
        .start()
        .await;
    let mut failures = Vec::new();
    for case in CASES {
        recorded.take();
        let (status, text) = support::pki::raw_request(&p.pki.ca_pem, p.https, case.request).await;
        // Let a request the proxy forwarded finish at the upstream.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let seen = recorded.take();
        if !case.status.contains(&status) {
            failures.push(format!(
                "{}: status {status}, expected one of {:?}\n{text}",
                case.name, case.status
            ));
        }
        if let Err(e) = (case.upstream)(&seen) {
            failures.push(format!("{}: {e}", case.name));
        }
        let lower = text.to_ascii_lowercase();
        match case.by {
            // Every answer the gateway wrote carries the security headers.
            Gateway if status != 0 && !lower.contains("strict-transport-security") => {
                failures.push(format!("{}: no security headers\n{text}", case.name));
            }
            // pingora's own refusals: no body to render, and the connection ends.
            Pingora
                if !(lower.contains("content-length: 0")
                    && lower.contains("connection: close")) =>
            {
                failures.push(format!(
                    "{}: not pingora's bodyless refusal\n{text}",
                    case.name
                ));
            }
            _ => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n\n")
    );
}
