//! The policy input document (`guards::policy::policy_input`): what the proxy hands
//! the Rego policy for a request. Input: an HTTP/1.1 request head. Its target is
//! normalised as the gateway does before any guard runs (refused paths end there); a
//! `Bearer` token's claims (read without verification: the signature is the verifier's
//! business) make the request authenticated. The input is then decided by the shipped
//! bundle (`policies/`), as every request is, both through the decision cache (whose key
//! the guard writes from the request's fields) and on the whole document uncached: the
//! two must agree.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use portcullis_authz::{Authorizer, PolicyBundle};
use portcullis_proxy::jwt::VerifiedToken;
use serde_json::{Map, Value};

/// The headers the input may carry (`guards::policy`).
const INPUT_HEADERS: [&str; 6] = [
    "user-agent",
    "origin",
    "sec-fetch-site",
    "sec-fetch-mode",
    "content-type",
    "accept",
];
/// The decision the proxy asks for.
const QUERY: &str = "data.portcullis.http.decision";
/// Most query pairs read.
const MAX_QUERY_PAIRS: usize = 64;

fn authorizer() -> &'static Authorizer {
    static AUTHORIZER: OnceLock<Authorizer> = OnceLock::new();
    AUTHORIZER.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        Authorizer::new(PolicyBundle::load(&dir).expect("the shipped policy bundle loads"))
    })
}

/// The caller a bearer token's payload names, taken as verified.
fn principal(headers: &HeaderMap) -> Option<(VerifiedToken, bool)> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ")?;
    let payload = URL_SAFE_NO_PAD.decode(token.split('.').nth(1)?).ok()?;
    let Value::Object(claims) = serde_json::from_slice(&payload).ok()? else {
        return None;
    };
    let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
    let list = |name: &str| match claims.get(name) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    };
    let token = VerifiedToken {
        issuer: text("iss").unwrap_or_else(|| "portcullis".to_owned()),
        sub: text("sub")?,
        sid: text("sid"),
        roles: list("roles"),
        amr: list("amr"),
        exp: claims.get("exp").and_then(Value::as_i64).unwrap_or(0),
        claims: Value::Object(claims),
    };
    Some((token, headers.contains_key(http::header::COOKIE)))
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let mut request_line = lines.next().unwrap_or_default().split(|&b| b == b' ');
    let (Some(method), Some(target)) = (request_line.next(), request_line.next()) else {
        return;
    };
    let Ok(method) = Method::from_bytes(method) else {
        return;
    };
    // What the gateway does: the path part is normalised, the query is taken as text.
    let (raw_path, query) = match target.iter().position(|&b| b == b'?') {
        Some(i) => (&target[..i], std::str::from_utf8(&target[i + 1..]).ok()),
        None => (target, None),
    };
    let Ok(path) = portcullis_proxy::path::normalise_bytes(raw_path) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for line in lines.take_while(|l| !l.is_empty()) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii();
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    let principal = principal(&headers);
    let authenticated = principal.is_some();
    let client_ip = Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)));

    let (input, decision) = portcullis_proxy::fuzzing::policy_input(
        authorizer(),
        &method,
        path.as_str(),
        query,
        &headers,
        client_ip,
        principal,
    );

    // The document's shape (policies/README.md).
    let request = &input["request"];
    assert_eq!(request["method"], method.as_str());
    assert_eq!(request["path"], path.as_str());
    let segments: Vec<&str> = request["segments"]
        .as_array()
        .expect("segments is an array")
        .iter()
        .map(|s| s.as_str().expect("a segment is a string"))
        .collect();
    assert!(segments.iter().all(|s| !s.is_empty() && !s.contains('/')));
    let mut rebuilt = format!("/{}", segments.join("/"));
    if path.as_str().len() > 1 && path.as_str().ends_with('/') {
        rebuilt.push('/');
    }
    assert_eq!(rebuilt, path.as_str(), "segments do not spell the path");
    let query_map: &Map<String, Value> = request["query"].as_object().expect("query is an object");
    let mut pairs = 0;
    for values in query_map.values() {
        let values = values.as_array().expect("query values are arrays");
        assert!(!values.is_empty() && values.iter().all(Value::is_string));
        pairs += values.len();
    }
    assert!(pairs <= MAX_QUERY_PAIRS, "{pairs} query pairs");
    for (name, value) in request["headers"]
        .as_object()
        .expect("headers is an object")
    {
        assert!(
            INPUT_HEADERS.contains(&name.as_str()),
            "header {name} in the input"
        );
        assert!(value.is_string());
    }
    assert_eq!(input["subject"]["authenticated"], authenticated);
    assert!(input["route"].is_string());
    assert!(input["time"]["unix_seconds"].is_i64());

    // The guard's way (cache key written from the request's fields) decides as the
    // whole document does without the cache.
    assert_eq!(
        decision,
        authorizer().current().decide_uncached(QUERY, &input),
        "cached decision differs for {input}"
    );
});
