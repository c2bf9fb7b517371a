//! JWT verification against a JWKS served by a real HTTP server on an
//! ephemeral port: valid tokens of every key type, crafted attack tokens,
//! endpoint outages, key rotation and refetch rate limiting.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RSA_PKCS1_SHA256,
    RSA_PSS_SHA256, RsaKeyPair, RsaPublicKeyComponents,
};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis_proxy::jwt::{
    IssuerConfig, IssuerSettings, JwtError, JwtMetrics, JwtVerifier, KeySetChange, KeySetObserver,
    MAX_TOKEN_BYTES,
};
use prometheus::Registry;
use serde_json::{Value, json};

const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "portcullis";

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

// ---------------------------------------------------------------- keys

enum Signer {
    Ed(Ed25519KeyPair),
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

struct TestKey {
    kid: String,
    signer: Signer,
}

impl TestKey {
    fn ed25519(kid: &str) -> Self {
        Self {
            kid: kid.into(),
            signer: Signer::Ed(Ed25519KeyPair::generate().unwrap()),
        }
    }
    fn p256(kid: &str) -> Self {
        Self {
            kid: kid.into(),
            signer: Signer::Ec(EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap()),
        }
    }
    fn rsa(kid: &str) -> Self {
        Self {
            kid: kid.into(),
            signer: Signer::Rsa(RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap()),
        }
    }

    /// The bytes an attacker would feed to HMAC in an algorithm-confusion
    /// attack: the raw public key.
    fn public_bytes(&self) -> Vec<u8> {
        match &self.signer {
            Signer::Ed(k) => k.public_key().as_ref().to_vec(),
            Signer::Ec(k) => k.public_key().as_ref().to_vec(),
            Signer::Rsa(k) => k.public_key().as_ref().to_vec(),
        }
    }

    fn jwk(&self) -> Value {
        match &self.signer {
            Signer::Ed(k) => {
                json!({"kty":"OKP","crv":"Ed25519","kid":self.kid,"use":"sig","x":b64(k.public_key())})
            }
            Signer::Ec(k) => {
                let p = k.public_key().as_ref();
                json!({"kty":"EC","crv":"P-256","kid":self.kid,"x":b64(&p[1..33]),"y":b64(&p[33..65])})
            }
            Signer::Rsa(k) => {
                let c = RsaPublicKeyComponents::<Vec<u8>>::from(k.public_key());
                json!({"kty":"RSA","kid":self.kid,"n":b64(&c.n),"e":b64(&c.e)})
            }
        }
    }

    fn sign(&self, alg: &str, input: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.signer {
            Signer::Ed(k) => k.sign(input).as_ref().to_vec(),
            Signer::Ec(k) => k.sign(&rng, input).unwrap().as_ref().to_vec(),
            Signer::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                let padding = if alg == "PS256" {
                    &RSA_PSS_SHA256
                } else {
                    &RSA_PKCS1_SHA256
                };
                k.sign(padding, &rng, input, &mut sig).unwrap();
                sig
            }
        }
    }

    fn default_alg(&self) -> &'static str {
        match self.signer {
            Signer::Ed(_) => "EdDSA",
            Signer::Ec(_) => "ES256",
            Signer::Rsa(_) => "RS256",
        }
    }

    /// A valid token for `claims` (merged over the default claims).
    fn token(&self, claims: Value) -> String {
        let header = json!({"alg": self.default_alg(), "typ": "JWT", "kid": self.kid});
        self.token_with(&header, &merged(claims))
    }

    /// A token with exactly this header and these claims, signed with this
    /// key (using the header's `alg` for RSA padding).
    fn token_with(&self, header: &Value, claims: &Value) -> String {
        let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
        let alg = header["alg"].as_str().unwrap_or("");
        format!("{input}.{}", b64(self.sign(alg, input.as_bytes())))
    }
}

fn default_claims() -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1",
        "sid": "session-1",
        "roles": ["employee", "technician"],
        "amr": ["pwd", "otp"],
        "iat": now(),
        "exp": now() + 300,
    })
}

fn merged(overrides: Value) -> Value {
    let mut claims = default_claims();
    if let (Some(c), Value::Object(o)) = (claims.as_object_mut(), overrides) {
        for (k, v) in o {
            if v.is_null() {
                c.remove(&k);
            } else {
                c.insert(k, v);
            }
        }
    }
    claims
}

fn unsigned(header: &Value, claims: &Value) -> String {
    format!("{}.{}.", b64(header.to_string()), b64(claims.to_string()))
}

fn hmac_token(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", b64(tag))
}

// ------------------------------------------------------------- JWKS server

#[derive(Clone)]
struct ServerState {
    jwks: Arc<Mutex<Value>>,
    healthy: Arc<AtomicBool>,
    jwks_fetches: Arc<AtomicUsize>,
    discovery_issuer: Arc<Mutex<String>>,
    addr: Arc<Mutex<Option<SocketAddr>>>,
    /// Hits on any other path (a `jku`/`x5u` target, for instance).
    other_hits: Arc<AtomicUsize>,
}

struct JwksServer {
    addr: SocketAddr,
    state: ServerState,
}

impl JwksServer {
    async fn start(keys: &[&TestKey]) -> Self {
        let state = ServerState {
            jwks: Arc::new(Mutex::new(jwks(keys))),
            healthy: Arc::new(AtomicBool::new(true)),
            jwks_fetches: Arc::new(AtomicUsize::new(0)),
            discovery_issuer: Arc::new(Mutex::new(ISSUER.to_owned())),
            addr: Arc::new(Mutex::new(None)),
            other_hits: Arc::new(AtomicUsize::new(0)),
        };
        async fn serve_jwks(State(s): State<ServerState>) -> Response {
            s.jwks_fetches.fetch_add(1, Ordering::SeqCst);
            if !s.healthy.load(Ordering::SeqCst) {
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
            let body = s.jwks.lock().unwrap().clone();
            Json(body).into_response()
        }
        async fn discovery(State(s): State<ServerState>) -> Response {
            let addr = s.addr.lock().unwrap().unwrap();
            let issuer = s.discovery_issuer.lock().unwrap().clone();
            Json(json!({"issuer": issuer, "jwks_uri": format!("http://{addr}/jwks.json")}))
                .into_response()
        }
        async fn other(State(s): State<ServerState>) -> Response {
            s.other_hits.fetch_add(1, Ordering::SeqCst);
            StatusCode::NOT_FOUND.into_response()
        }
        let app = axum::Router::new()
            .route("/jwks.json", get(serve_jwks))
            .route("/.well-known/openid-configuration", get(discovery))
            .fallback(other)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        *state.addr.lock().unwrap() = Some(addr);
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, state }
    }

    fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    fn set_keys(&self, keys: &[&TestKey]) {
        *self.state.jwks.lock().unwrap() = jwks(keys);
    }

    fn set_healthy(&self, healthy: bool) {
        self.state.healthy.store(healthy, Ordering::SeqCst);
    }

    fn fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }
}

fn jwks(keys: &[&TestKey]) -> Value {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()})
}

// ---------------------------------------------------------------- verifier

struct Harness {
    verifier: JwtVerifier,
    registry: Registry,
    changes: Arc<Mutex<Vec<KeySetChange>>>,
}

fn config(url: &str) -> IssuerConfig {
    let mut c = IssuerConfig::with_jwks_url(ISSUER, "idp", vec![AUDIENCE.into()], url);
    c.algorithms = vec![
        "EdDSA".into(),
        "ES256".into(),
        "RS256".into(),
        "PS256".into(),
    ];
    c.min_refetch_interval_seconds = 1;
    c.refresh_interval_seconds = 10;
    c.leeway_seconds = 5;
    c
}

async fn harness(config: IssuerConfig, load: bool) -> Harness {
    let registry = Registry::new();
    let metrics = JwtMetrics::try_new(&registry).unwrap();
    let changes = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&changes);
    let observer: KeySetObserver = Arc::new(move |c: &KeySetChange| {
        sink.lock().unwrap().push(c.clone());
    });
    let settings = IssuerSettings::try_new(&config).unwrap();
    let verifier = JwtVerifier::new(vec![settings], metrics, Some(observer)).unwrap();
    if load {
        verifier.refresh_all().await.unwrap();
    }
    Harness {
        verifier,
        registry,
        changes,
    }
}

impl Harness {
    async fn reason(&self, token: &str) -> &'static str {
        match self.verifier.verify(token).await {
            Ok(t) => panic!("token accepted: {t:?}"),
            Err(e) => e.reason(),
        }
    }

    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        for family in self.registry.gather() {
            if family.name() != name {
                continue;
            }
            for m in family.get_metric() {
                let all = labels.iter().all(|(k, v)| {
                    m.get_label()
                        .iter()
                        .any(|l| l.name() == *k && l.value() == *v)
                });
                if all {
                    return m.get_counter().value() as u64;
                }
            }
        }
        0
    }
}

/// Waits up to `timeout` for `cond`.
async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

// ------------------------------------------------------------------- tests

#[tokio::test]
async fn valid_tokens_of_every_key_type_pass() {
    let ed = TestKey::ed25519("ed-1");
    let ec = TestKey::p256("ec-1");
    let rsa = TestKey::rsa("rsa-1");
    let server = JwksServer::start(&[&ed, &ec, &rsa]).await;
    let h = harness(config(&server.url()), true).await;
    assert!(h.verifier.keys_loaded());

    for key in [&ed, &ec, &rsa] {
        let t = h.verifier.verify(&key.token(json!({}))).await.unwrap();
        assert_eq!(t.issuer, ISSUER);
        assert_eq!(t.sub, "user-1");
        assert_eq!(t.sid.as_deref(), Some("session-1"));
        assert_eq!(t.roles, vec!["employee", "technician"]);
        assert_eq!(t.amr, vec!["pwd", "otp"]);
        assert!(t.exp > now());
        assert_eq!(t.claims["aud"], AUDIENCE);
    }
    let pss = rsa.token_with(&json!({"alg":"PS256","kid":"rsa-1"}), &default_claims());
    assert!(h.verifier.verify(&pss).await.is_ok());
    // aud as an array naming us among others.
    let multi = ed.token(json!({"aud": ["other", AUDIENCE]}));
    assert!(h.verifier.verify(&multi).await.is_ok());
    // Verified again (cache hit) with the same result.
    let token = ed.token(json!({}));
    let first = h.verifier.verify(&token).await.unwrap();
    assert_eq!(h.verifier.verify(&token).await.unwrap(), first);
    assert_eq!(
        h.counter("portcullis_jwt_accepted_total", &[("issuer", "idp")]),
        7
    );
    assert_eq!(server.fetches(), 1);

    let changes = h.changes.lock().unwrap().clone();
    assert_eq!(changes.len(), 1, "the first load is reported");
    assert_eq!(changes[0].added, vec!["ec-1", "ed-1", "rsa-1"]);
    assert_eq!(changes[0].issuer_label, "idp");
}

#[tokio::test]
async fn attack_tokens_are_refused_with_their_reason() {
    let ed = TestKey::ed25519("ed-1");
    let ec = TestKey::p256("ec-1");
    let rsa = TestKey::rsa("rsa-1");
    let server = JwksServer::start(&[&ed, &ec, &rsa]).await;
    let h = harness(config(&server.url()), true).await;
    let claims = default_claims();
    let evil = format!("http://{}/evil-keys.json", server.addr);

    let mut cases: Vec<(&str, String, &str)> = Vec::new();

    // alg none, every spelling, with and without a signature.
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = json!({"alg": alg, "kid": "ed-1"});
        cases.push((
            "alg none",
            unsigned(&header, &claims),
            "algorithm_not_allowed",
        ));
        let forged = format!("{}{}", unsigned(&header, &claims), b64("sig"));
        cases.push(("alg none + sig", forged, "algorithm_not_allowed"));
    }
    // Algorithm confusion: HS256 keyed with the public key, in several
    // encodings an attacker might try.
    for key in [&ed, &ec, &rsa] {
        let header = json!({"alg": "HS256", "kid": key.kid});
        cases.push((
            "HS256 with raw public key",
            hmac_token(&header, &claims, &key.public_bytes()),
            "algorithm_not_allowed",
        ));
        cases.push((
            "HS256 with the JWK",
            hmac_token(&header, &claims, key.jwk().to_string().as_bytes()),
            "algorithm_not_allowed",
        ));
    }
    for alg in ["HS384", "HS512", "es256", "RSA-OAEP", "ES512"] {
        let header = json!({"alg": alg, "kid": "ec-1"});
        cases.push((
            "other algorithms",
            hmac_token(&header, &claims, b"secret"),
            "algorithm_not_allowed",
        ));
    }
    // A real algorithm that is not in this issuer's allow-list.
    let header = json!({"alg": "ES384", "kid": "ec-1"});
    cases.push((
        "ES384 not allowed",
        ec.token_with(&header, &claims),
        "algorithm_not_allowed",
    ));
    // Key confusion between asymmetric key types.
    let header = json!({"alg": "ES256", "kid": "ed-1"});
    cases.push((
        "ES256 with an Ed25519 kid",
        ec.token_with(&header, &claims),
        "key_mismatch",
    ));
    let header = json!({"alg": "RS256", "kid": "ec-1"});
    cases.push((
        "RS256 with an EC kid",
        rsa.token_with(&header, &claims),
        "key_mismatch",
    ));
    let header = json!({"alg": "EdDSA", "kid": "rsa-1"});
    cases.push((
        "EdDSA with an RSA kid",
        ed.token_with(&header, &claims),
        "key_mismatch",
    ));
    // kid problems.
    for kid in [
        "../../../etc/passwd",
        "..",
        "a/b",
        "keys\\1",
        "%2e%2e%2f",
        "k\u{0}1",
    ] {
        let header = json!({"alg": "EdDSA", "kid": kid});
        cases.push(("path-like kid", ed.token_with(&header, &claims), "bad_kid"));
    }
    let header = json!({"alg": "EdDSA", "kid": "k".repeat(129)});
    cases.push(("long kid", ed.token_with(&header, &claims), "bad_kid"));
    let header = json!({"alg": "EdDSA", "kid": 42});
    cases.push(("numeric kid", ed.token_with(&header, &claims), "bad_kid"));
    let header = json!({"alg": "EdDSA"});
    cases.push((
        "missing kid",
        ed.token_with(&header, &claims),
        "missing_kid",
    ));
    // Header parameters that would let the token pick its own key.
    let attacker = TestKey::ed25519("ed-1");
    for (name, value) in [
        ("jku", json!(evil)),
        ("x5u", json!(evil)),
        ("jwk", attacker.jwk()),
        ("crit", json!(["exp"])),
    ] {
        let mut header = json!({"alg": "EdDSA", "kid": "ed-1"});
        header[name] = value;
        cases.push((
            "key-choosing header",
            attacker.token_with(&header, &claims),
            "forbidden_header",
        ));
        cases.push((
            "key-choosing header, right key",
            ed.token_with(&header, &claims),
            "forbidden_header",
        ));
    }
    // Unknown key id, and a key the issuer never published.
    cases.push((
        "unknown kid",
        TestKey::ed25519("ed-9").token(json!({})),
        "unknown_kid",
    ));
    cases.push((
        "same kid, other key",
        attacker.token(json!({})),
        "bad_signature",
    ));
    // Claims.
    cases.push(("expired", ed.token(json!({"exp": now() - 60})), "expired"));
    cases.push((
        "expired within leeway is fine, past it not",
        ed.token(json!({"exp": now() - 6})),
        "expired",
    ));
    cases.push(("no exp", ed.token(json!({"exp": null})), "missing_claim"));
    cases.push((
        "string exp",
        ed.token(json!({"exp": "9999999999"})),
        "malformed",
    ));
    cases.push((
        "not yet valid",
        ed.token(json!({"nbf": now() + 60})),
        "not_yet_valid",
    ));
    cases.push((
        "issued in the future",
        ed.token(json!({"iat": now() + 60})),
        "not_yet_valid",
    ));
    cases.push((
        "stranger issuer",
        ed.token(json!({"iss": "https://evil.test"})),
        "unknown_issuer",
    ));
    cases.push((
        "no issuer",
        ed.token(json!({"iss": null})),
        "unknown_issuer",
    ));
    cases.push((
        "issuer near miss",
        ed.token(json!({"iss": "https://IDP.test/"})),
        "wrong_issuer",
    ));
    cases.push((
        "wrong audience",
        ed.token(json!({"aud": "someone-else"})),
        "wrong_audience",
    ));
    cases.push((
        "no audience",
        ed.token(json!({"aud": null})),
        "wrong_audience",
    ));
    cases.push((
        "no subject",
        ed.token(json!({"sub": null})),
        "missing_claim",
    ));
    // Signature problems.
    let good = ed.token(json!({}));
    let (input, sig) = good.rsplit_once('.').unwrap();
    let mut raw = URL_SAFE_NO_PAD.decode(sig).unwrap();
    raw[0] ^= 1;
    cases.push((
        "flipped signature bit",
        format!("{input}.{}", b64(&raw)),
        "bad_signature",
    ));
    cases.push((
        "zero-length signature",
        format!("{input}."),
        "bad_signature",
    ));
    cases.push((
        "truncated signature",
        format!("{input}.{}", &sig[..20]),
        "bad_signature",
    ));
    let other = ed.token(json!({"sub": "admin"}));
    let (other_input, _) = other.rsplit_once('.').unwrap();
    cases.push((
        "signature from another token",
        format!("{other_input}.{sig}"),
        "bad_signature",
    ));
    // Shape.
    cases.push((
        "truncated token",
        good[..good.len() / 2].to_owned(),
        "malformed",
    ));
    cases.push(("two parts", input.to_owned(), "malformed"));
    cases.push(("four parts", format!("{good}.x"), "malformed"));
    cases.push(("empty", String::new(), "malformed"));
    cases.push(("padding", format!("{good}="), "malformed"));
    let standard =
        base64::engine::general_purpose::STANDARD.encode(URL_SAFE_NO_PAD.decode(sig).unwrap());
    cases.push((
        "standard base64",
        format!("{input}.{standard}"),
        "malformed",
    ));
    cases.push((
        "not JSON",
        format!("{}.{}.{sig}", b64("nope"), b64("{}")),
        "malformed",
    ));
    let dup = format!(
        "{}.{}.{sig}",
        b64(r#"{"alg":"EdDSA","kid":"ed-1","alg":"none"}"#),
        b64(claims.to_string())
    );
    cases.push(("duplicate header member", dup, "malformed"));
    let padded = ed.token(json!({"pad": "x".repeat(MAX_TOKEN_BYTES)}));
    cases.push(("oversized", padded, "oversized"));

    let mut failures = Vec::new();
    for (what, token, want) in &cases {
        match h.verifier.verify(token).await {
            Ok(_) => failures.push(format!("{what}: accepted")),
            Err(e) if e.reason() != *want => {
                failures.push(format!("{what}: {} instead of {want}", e.reason()))
            }
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");

    // Nothing a token named was ever fetched.
    assert_eq!(server.state.other_hits.load(Ordering::SeqCst), 0);
    // Every rejection was counted under its reason.
    let total: u64 = [
        "algorithm_not_allowed",
        "key_mismatch",
        "bad_kid",
        "missing_kid",
        "forbidden_header",
        "unknown_kid",
        "bad_signature",
        "expired",
        "missing_claim",
        "malformed",
        "not_yet_valid",
        "unknown_issuer",
        "wrong_issuer",
        "wrong_audience",
        "oversized",
    ]
    .iter()
    .map(|r| h.counter("portcullis_jwt_rejections_total", &[("reason", r)]))
    .sum();
    assert_eq!(total, cases.len() as u64);
    assert_eq!(
        h.counter(
            "portcullis_jwt_rejections_total",
            &[("reason", "forbidden_header")]
        ),
        8
    );
}

#[tokio::test]
async fn error_reasons_match_variants() {
    assert_eq!(
        JwtError::AlgorithmNotAllowed.reason(),
        "algorithm_not_allowed"
    );
    assert_eq!(JwtError::UnknownKid.reason(), "unknown_kid");
}

#[tokio::test]
async fn stale_keys_keep_working_while_the_endpoint_is_down() {
    let ed = TestKey::ed25519("ed-1");
    let server = JwksServer::start(&[&ed]).await;
    let h = harness(config(&server.url()), true).await;

    server.set_healthy(false);
    let err = h.verifier.refresh_all().await.unwrap_err();
    assert_eq!(err.failed, vec!["idp"]);
    assert_eq!(
        h.counter(
            "portcullis_jwks_fetches_total",
            &[("issuer", "idp"), ("result", "error")]
        ),
        1
    );
    // A token never seen before (so not cached) still verifies.
    let t = ed.token(json!({"sub": "fresh"}));
    assert_eq!(h.verifier.verify(&t).await.unwrap().sub, "fresh");
    assert!(h.verifier.keys_loaded());

    // An empty or broken key set is a failure too, and also keeps the old keys.
    server.set_healthy(true);
    *server.state.jwks.lock().unwrap() = json!({"keys": []});
    assert!(h.verifier.refresh_all().await.is_err());
    *server.state.jwks.lock().unwrap() = json!("<html>");
    assert!(h.verifier.refresh_all().await.is_err());
    assert!(
        h.verifier
            .verify(&ed.token(json!({"sub": "again"})))
            .await
            .is_ok()
    );
    assert_eq!(h.changes.lock().unwrap().len(), 1, "no change reported");
}

#[tokio::test]
async fn no_keys_ever_loaded_is_keys_unavailable() {
    let ed = TestKey::ed25519("ed-1");
    let server = JwksServer::start(&[&ed]).await;
    server.set_healthy(false);
    let h = harness(config(&server.url()), false).await;
    assert!(h.verifier.refresh_all().await.is_err());
    assert!(!h.verifier.keys_loaded());
    assert_eq!(h.reason(&ed.token(json!({}))).await, "keys_unavailable");
}

#[tokio::test]
async fn first_use_loads_keys_when_not_loaded_at_start() {
    let ed = TestKey::ed25519("ed-1");
    let server = JwksServer::start(&[&ed]).await;
    let h = harness(config(&server.url()), false).await;
    assert!(h.verifier.verify(&ed.token(json!({}))).await.is_ok());
    assert_eq!(server.fetches(), 1);
}

#[tokio::test]
async fn rotation_is_picked_up_and_withdrawn_keys_stop_working() {
    let old = TestKey::ed25519("2026-01");
    let new = TestKey::p256("2026-02");
    let server = JwksServer::start(&[&old]).await;
    let h = harness(config(&server.url()), true).await;
    let old_token = old.token(json!({}));
    assert!(h.verifier.verify(&old_token).await.is_ok());

    // The issuer publishes the next key alongside the current one.
    server.set_keys(&[&old, &new]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let new_token = new.token(json!({}));
    assert!(h.verifier.verify(&new_token).await.is_ok());
    assert_eq!(server.fetches(), 2);
    {
        let changes = h.changes.lock().unwrap();
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[1].added, vec!["2026-02"]);
        assert!(changes[1].removed.is_empty());
    }
    assert_eq!(
        h.counter("portcullis_jwks_changes_total", &[("issuer", "idp")]),
        2
    );

    // The old key is withdrawn: its tokens stop working at once, even the
    // one sitting in the verified-token cache.
    server.set_keys(&[&new]);
    h.verifier.refresh_all().await.unwrap();
    assert_eq!(h.reason(&old_token).await, "unknown_kid");
    assert!(h.verifier.verify(&new_token).await.is_ok());
    {
        let changes = h.changes.lock().unwrap();
        assert_eq!(changes[2].removed, vec!["2026-01"]);
    }

    // Same kid, other key material: reported as replaced, cache purged.
    let impostor = TestKey::p256("2026-02");
    server.set_keys(&[&impostor]);
    h.verifier.refresh_all().await.unwrap();
    assert_eq!(h.reason(&new_token).await, "bad_signature");
    assert_eq!(h.changes.lock().unwrap()[3].replaced, vec!["2026-02"]);
}

#[tokio::test]
async fn unknown_kid_refetch_is_single_flight_and_rate_limited() {
    let ed = TestKey::ed25519("ed-1");
    let server = JwksServer::start(&[&ed]).await;
    let h = harness(config(&server.url()), true).await;
    assert_eq!(server.fetches(), 1);

    // The refetch interval has not passed since the initial load: no fetch.
    let stranger = TestKey::ed25519("nobody");
    assert_eq!(h.reason(&stranger.token(json!({}))).await, "unknown_kid");
    assert_eq!(server.fetches(), 1);

    // After the interval, 50 concurrent misses share one fetch.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let v = h.verifier.clone();
        let t = TestKey::ed25519(&format!("nobody-{i}")).token(json!({}));
        tasks.push(tokio::spawn(async move { v.verify(&t).await }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap_err(), JwtError::UnknownKid);
    }
    assert_eq!(server.fetches(), 2);

    // A flood of unknown kids right after: still no new fetch.
    for i in 0..20 {
        let t = TestKey::ed25519(&format!("flood-{i}")).token(json!({}));
        assert_eq!(h.reason(&t).await, "unknown_kid");
    }
    assert_eq!(server.fetches(), 2);
}

#[tokio::test]
async fn discovery_finds_the_jwks_and_checks_the_issuer() {
    let ec = TestKey::p256("ec-1");
    let server = JwksServer::start(&[&ec]).await;
    let mut c = config(&server.url());
    c.jwks_url = None;
    c.discovery_url = Some(format!(
        "http://{}/.well-known/openid-configuration",
        server.addr
    ));
    let h = harness(c.clone(), true).await;
    assert!(h.verifier.verify(&ec.token(json!({}))).await.is_ok());

    // A discovery document naming another issuer is not trusted.
    *server.state.discovery_issuer.lock().unwrap() = "https://evil.test".into();
    let h = harness(c, false).await;
    assert!(h.verifier.refresh_all().await.is_err());
    assert_eq!(h.reason(&ec.token(json!({}))).await, "keys_unavailable");
}

#[tokio::test]
async fn background_refresh_loads_keys_once_the_endpoint_recovers() {
    let ed = TestKey::ed25519("ed-1");
    let server = JwksServer::start(&[&ed]).await;
    server.set_healthy(false);
    let h = harness(config(&server.url()), false).await;
    assert!(h.verifier.refresh_all().await.is_err());
    h.verifier.start_background_refresh().unwrap();
    h.verifier.start_background_refresh().unwrap();
    server.set_healthy(true);
    let v = h.verifier.clone();
    assert!(eventually(Duration::from_secs(5), || v.keys_loaded()).await);
    assert!(h.verifier.verify(&ed.token(json!({}))).await.is_ok());
}

#[test]
fn background_refresh_needs_a_runtime() {
    let metrics = JwtMetrics::try_new(&Registry::new()).unwrap();
    let settings = IssuerSettings::try_new(&config("http://127.0.0.1:1/jwks.json")).unwrap();
    let verifier = JwtVerifier::new(vec![settings], metrics, None).unwrap();
    assert!(verifier.start_background_refresh().is_err());
}

#[test]
fn duplicate_issuers_are_refused() {
    let s = IssuerSettings::try_new(&config("http://127.0.0.1:1/jwks.json")).unwrap();
    let mut other = config("http://127.0.0.1:1/jwks.json");
    other.issuer = format!("{ISSUER}/");
    other.label = "other".into();
    let near = IssuerSettings::try_new(&other).unwrap();
    let metrics = JwtMetrics::try_new(&Registry::new()).unwrap();
    assert!(JwtVerifier::new(vec![s.clone(), s.clone()], metrics.clone(), None).is_err());
    assert!(JwtVerifier::new(vec![s, near], metrics, None).is_err());
}
