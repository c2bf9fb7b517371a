//! Bearer-token verification (`JwtVerifier::verify`), whose first steps parse the
//! untrusted token (`jwt::parse`: its parts, the protected header, the claims) before
//! any key is looked at. The verifier trusts one issuer whose JWKS (an Ed25519 and a
//! P-256 key, fixed so that the seed corpus can carry validly signed tokens: see
//! `fuzz/make-seeds.py`) is served from loopback by this target.
#![no_main]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use portcullis_proxy::jwt::{
    IssuerConfig, IssuerSettings, JwtMetrics, JwtVerifier, MAX_TOKEN_BYTES,
};
use serde_json::Value;

const ISSUER: &str = "portcullis";
const AUDIENCE: &str = "portcullis";
const LEEWAY_SECONDS: i64 = 30;
/// Public halves of the seed corpus' signing keys (Ed25519 seed `[7; 32]`, P-256 scalar
/// `0x1234567890abcdef`).
const JWKS: &str = r#"{"keys":[
 {"kty":"OKP","crv":"Ed25519","kid":"fuzz-ed","use":"sig","alg":"EdDSA","x":"6kpsY-KcUgq-9VB7Ey7F-ZVHdq6-vnuSQh7qaRRG0iw"},
 {"kty":"EC","crv":"P-256","kid":"fuzz-ec","use":"sig","alg":"ES256","x":"n62Erq4Iu-9_AQAU2CzvagneKwz4cbXODE8dE6WaWTQ","y":"B8tFdp8QcOLCRw_lsb_mMTPAsM3GTqS_N5Go7CoH_U8"}
]}"#;

struct Harness {
    runtime: tokio::runtime::Runtime,
    verifier: JwtVerifier,
}

/// Answers every request with the key set.
fn serve_jwks() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{JWKS}",
                JWKS.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    format!("http://{addr}/auth/jwks.json")
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut config =
            IssuerConfig::with_jwks_url(ISSUER, "backend", vec![AUDIENCE.to_owned()], serve_jwks());
        config.algorithms = vec!["EdDSA".to_owned(), "ES256".to_owned()];
        config.leeway_seconds = LEEWAY_SECONDS as u64;
        let issuer = IssuerSettings::try_new(&config).expect("issuer settings");
        let metrics = JwtMetrics::try_new(&prometheus::Registry::new()).expect("metrics");
        let verifier = JwtVerifier::new(vec![issuer], metrics, None).expect("verifier");
        runtime
            .block_on(verifier.refresh_all())
            .expect("the key set loads");
        Harness { runtime, verifier }
    })
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The token's header or payload as JSON, decoded without any check.
fn part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).unwrap_or_default();
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .expect("an accepted part is base64url");
    serde_json::from_slice(&bytes).expect("an accepted part is JSON")
}

fuzz_target!(|data: &[u8]| {
    // The bearer credential comes from a header value read as text.
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let h = harness();
    let first = h.runtime.block_on(h.verifier.verify(token));
    // Verifying again (now from the verified-token cache when accepted) agrees.
    let second = h.runtime.block_on(h.verifier.verify(token));
    match (&first, &second) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        _ => panic!("verifying twice disagreed: {first:?} then {second:?}"),
    }
    let Ok(verified) = first else {
        return;
    };
    // Only a well-formed token of the configured issuer, with an allowed algorithm, a
    // published key, a subject and a current expiry, is accepted.
    assert!(token.len() <= MAX_TOKEN_BYTES);
    let header = part(token, 0);
    let claims = part(token, 1);
    let (alg, kid) = (header["alg"].as_str(), header["kid"].as_str());
    assert!(
        matches!(
            (alg, kid),
            (Some("EdDSA"), Some("fuzz-ed")) | (Some("ES256"), Some("fuzz-ec"))
        ),
        "accepted {header}"
    );
    for forbidden in ["jku", "x5u", "jwk", "crit", "b64"] {
        assert!(header.get(forbidden).is_none(), "accepted {header}");
    }
    assert_eq!(verified.issuer, ISSUER);
    assert_eq!(claims["iss"].as_str(), Some(ISSUER));
    assert!(!verified.sub.is_empty());
    assert_eq!(claims["sub"].as_str(), Some(verified.sub.as_str()));
    assert!(
        verified.exp + LEEWAY_SECONDS > now(),
        "accepted an expired token"
    );
    assert_eq!(verified.claims, claims);
});
