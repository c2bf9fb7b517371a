//! JWT verification cost: an EdDSA token against a JWKS served on loopback,
//! first seen (signature checked) and repeated (verified-token cache hit).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark setup")]

use std::hint::black_box;

use base64::Engine as _;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use portcullis_proxy::jwt::{IssuerConfig, IssuerSettings, JwtMetrics, JwtVerifier};
use prometheus::Registry;
use serde_json::json;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key_raw());
    let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k1", "alg": "EdDSA", "use": "sig"}]});
    let addr = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || async move { axum::Json(jwks) }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    });
    let config = IssuerConfig::with_jwks_url(
        "bench",
        "bench",
        vec!["portcullis".into()],
        format!("http://{addr}/jwks.json"),
    );
    let verifier = JwtVerifier::new(
        vec![IssuerSettings::try_new(&config).unwrap()],
        JwtMetrics::try_new(&Registry::new()).unwrap(),
        None,
    )
    .unwrap();
    rt.block_on(verifier.refresh_all()).unwrap();
    let key = jsonwebtoken::EncodingKey::from_ed_der(&pair.serialize_der());
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some("k1".into());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut n = 0u64;
    let mut token = || {
        n += 1;
        let claims = json!({"iss": "bench", "aud": "portcullis", "sub": "42", "sid": "s", "roles": ["employee"],
                            "amr": ["pwd"], "iat": now, "exp": now + 3600, "jti": n.to_string()});
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    };
    let repeated = token();
    assert!(rt.block_on(verifier.verify(&repeated)).is_ok());

    let mut g = c.benchmark_group("jwt");
    g.bench_function("verify_eddsa_first_seen", |b| {
        b.iter_batched(
            &mut token,
            |t| rt.block_on(verifier.verify(black_box(&t))).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("verify_eddsa_cached", |b| {
        b.iter(|| rt.block_on(verifier.verify(black_box(&repeated))).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
