//! End-to-end enforcement: real proxy + backend (`portcullis up`), the
//! shipped policy bundle, tokens issued by the backend and tokens crafted to
//! attack the verifier.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod support;

use portcullis_testkit::assert_eventually;

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::pki::raw_request;
use support::upstream::start_echo;
use support::{Portcullis, portcullis};

const PW: &str = "a long enough password";

async fn started() -> Portcullis {
    let p = portcullis().start().await;
    p.add_users(&[
        ("alice", "employee", PW),
        ("root", "administrator", PW),
        ("tom", "technician", PW),
    ]);
    p
}

fn api(
    p: &Portcullis,
    token: &str,
    method: reqwest::Method,
    path: &str,
) -> reqwest::RequestBuilder {
    p.client().request(method, p.url(path)).bearer_auth(token)
}

/// The backend's current signing key, read from its keyring (0600 files).
fn signing_key(p: &Portcullis) -> (String, jsonwebtoken::EncodingKey, String) {
    let dir = p.state_dir().join("keys/jwt");
    let ring: Value =
        serde_json::from_slice(&std::fs::read(dir.join("keyring.json")).unwrap()).unwrap();
    let current = ring
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["state"] == "current")
        .unwrap();
    let kid = current["kid"].as_str().unwrap().to_owned();
    let der = std::fs::read(dir.join(format!("{kid}.pk8"))).unwrap();
    (
        kid,
        jsonwebtoken::EncodingKey::from_ed_der(&der),
        current["public_x"].as_str().unwrap().to_owned(),
    )
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

#[tokio::test]
async fn signed_in_users_reach_the_api_and_anonymous_ones_do_not() {
    let p = started().await;
    let r = p.client().get(p.url("/api/tickets")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "urn:portcullis:problem:unauthenticated");
    assert!(body["decision_id"].is_string());

    let token = p.login("alice", PW).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = api(&p, &token, reqwest::Method::POST, "/api/tickets")
        .json(&json!({"title": "Lamp broken"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    let r = api(&p, &token, reqwest::Method::GET, "/api/tickets")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // The advertised rule's quota and its state for this request, under one name.
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{name} advertised"))
            .to_owned()
    };
    let (policy, state) = (header("ratelimit-policy"), header("ratelimit"));
    let rule = |value: &str| value.split(';').next().unwrap_or_default().to_owned();
    assert!(rule(&policy).starts_with('"') && rule(&policy) == rule(&state));
    let params = |value: &str| -> Vec<String> {
        value
            .split(';')
            .skip(1)
            .map(|p| p.split('=').next().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(params(&policy), ["q", "w"], "{policy}");
    assert_eq!(params(&state), ["r", "t"], "{state}");
    // An employee is not an administrator: the route policy says 403, with the decision id.
    let r = api(&p, &token, reqwest::Method::GET, "/admin/sessions")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: Value = r.json().await.unwrap();
    assert!(body["decision_id"].is_string(), "{body}");
    let m = p.metrics().await;
    assert!(
        m.contains(
            r#"portcullis_policy_decisions_total{decision="deny",mode="enforce",rule="role_not_permitted"} 1"#
        ),
        "{m}"
    );
    // Allowed requests count under the route that admitted them.
    assert!(
        m.contains(r#"portcullis_policy_decisions_total{decision="allow",mode="enforce",rule="tickets_collection"}"#),
        "{m}"
    );
    // One subject's enforced denials in the trailing five minutes.
    assert!(m.contains("portcullis_policy_denials_top_subject 1"), "{m}");
    assert!(m.contains("portcullis_policy_evaluation_duration_seconds_bucket"));
}

/// How many tokens the proxy has refused as naming a revoked session.
async fn revoked_refusals(p: &Portcullis) -> u64 {
    let m = p.metrics().await;
    m.lines()
        .find_map(|l| {
            l.strip_prefix("portcullis_authentication_failures_total{reason=\"session_revoked\"} ")
        })
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// Polls with `token` until the proxy itself refuses it as a revoked session
/// (the backend checks its session table too, so it may refuse even
/// earlier, with another reason); fails if that takes 1 s from `started`.
async fn refused_by_the_proxy_within_one_second(
    p: &Portcullis,
    token: &str,
    started: Instant,
    what: &str,
) {
    let before = revoked_refusals(p).await;
    loop {
        let r = api(p, token, reqwest::Method::GET, "/api/tickets")
            .send()
            .await
            .unwrap();
        assert!(
            r.status() == StatusCode::OK || r.status() == StatusCode::UNAUTHORIZED,
            "{}",
            r.status()
        );
        // The client is not told why (no oracle); the proxy's own count says it was
        // the revocation that refused the token, not the backend.
        if r.status() == StatusCode::UNAUTHORIZED && revoked_refusals(p).await > before {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{what}: the proxy still accepts the token after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("{what}: refused by the proxy after {:?}", started.elapsed());
}

#[tokio::test]
async fn logout_and_admin_revocation_are_refused_by_the_proxy_within_one_second() {
    let p = started().await;
    for how in ["logout", "admin"] {
        let login = p.login("alice", PW).await;
        let token = login["access_token"].as_str().unwrap().to_owned();
        assert_eq!(
            api(&p, &token, reqwest::Method::GET, "/api/tickets")
                .send()
                .await
                .unwrap()
                .status(),
            StatusCode::OK
        );
        let started = Instant::now();
        if how == "logout" {
            let r = api(&p, &token, reqwest::Method::POST, "/auth/logout")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::NO_CONTENT);
        } else {
            let admin = p.login("root", PW).await["access_token"]
                .as_str()
                .unwrap()
                .to_owned();
            let sid: Value = {
                let payload = token.split('.').nth(1).unwrap();
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
            };
            let r = api(
                &p,
                &admin,
                reqwest::Method::DELETE,
                &format!("/admin/sessions/{}", sid["sid"].as_str().unwrap()),
            )
            .send()
            .await
            .unwrap();
            assert_eq!(
                r.status(),
                StatusCode::NO_CONTENT,
                "{}",
                r.text().await.unwrap()
            );
        }
        refused_by_the_proxy_within_one_second(&p, &token, started, how).await;
    }
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

/// `portcullis keys rotate` while traffic flows: the next key is published
/// first, signs after the overlap, and tokens of both keys pass the proxy
/// during the overlap; each step is an audit event. (Retirement, which
/// follows one token lifetime later, is covered by the keyring's unit test
/// and the verifier's `rotation_is_picked_up_and_withdrawn_keys_stop_working`.)
#[tokio::test]
async fn key_rotation_keeps_old_and_new_tokens_valid_through_the_proxy() {
    let p = portcullis()
        // The loop below signs in repeatedly: room for its sessions.
        .backend_yaml("  identity: {key_overlap_seconds: 2, max_sessions_per_user: 100}\n")
        .start()
        .await;
    p.add_users(&[("alice", "employee", PW)]);
    let first = p.login("alice", PW).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let old_kid = kid_of(&first);
    let (ok, out) = p.cli(&["keys", "rotate"]);
    assert!(ok && out.contains("added signing key"), "{out}");
    // The backend re-reads its keyring every second and publishes the next key.
    let published = || async {
        let jwks: Value = p
            .client()
            .get(p.url("/auth/jwks.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        jwks["keys"].as_array().unwrap().len()
    };
    assert_eventually!(
        published().await == 2,
        Duration::from_secs(10),
        "the next key was not published"
    );
    // After the overlap the backend signs with the new key.
    let deadline = Instant::now() + Duration::from_secs(15);
    let second = loop {
        let t = p.login("alice", PW).await["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        if kid_of(&t) != old_kid {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "the new key never started signing"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for (name, token) in [("before", &first), ("after", &second)] {
        let r = api(&p, token, reqwest::Method::GET, "/api/tickets")
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "token signed {name} the rotation"
        );
    }
    // Each step is an audit event (the CLI's `added`, the backend's `activated`);
    // the file sink writes them shortly after.
    let steps = || {
        ["cli", "backend"]
            .iter()
            .map(|e| {
                std::fs::read_to_string(p.state_dir().join(format!("audit/{e}.jsonl")))
                    .unwrap_or_default()
            })
            .flat_map(|f| f.lines().map(str::to_owned).collect::<Vec<_>>())
            .filter(|l| l.contains("\"keys.rotate\""))
            .collect::<Vec<_>>()
    };
    assert_eventually!(
        {
            let s = steps();
            s.iter().any(|e| e.contains("\"added\""))
                && s.iter().any(|e| e.contains("\"activated\""))
        },
        Duration::from_secs(10),
        "rotation steps not audited: {:?}",
        steps()
    );
}

/// With the proxy's own polling slowed to once a minute, only the backend's
/// announcement on Redis can make the proxy refuse a logged-out token
/// within a second.
#[tokio::test]
async fn a_revocation_announced_on_redis_reaches_the_proxy_within_one_second() {
    if !support::redis_available().await {
        eprintln!("skipped: no Redis at 127.0.0.1:6379");
        return;
    }
    let channel = format!("portcullis-test-{}-{}", std::process::id(), now());
    let p = portcullis()
        .revocation_poll_milliseconds(60_000)
        .shared_yaml(&format!(
            "  revocation_pubsub: {{url: 'redis://127.0.0.1:6379', channel: '{channel}'}}\n"
        ))
        .start()
        .await;
    p.add_users(&[("alice", "employee", PW)]);
    assert_eventually!(
        p.metrics()
            .await
            .contains("portcullis_revocation_pubsub_up 1"),
        Duration::from_secs(10),
        "the proxy did not subscribe to the revocation channel"
    );
    for round in 0..3 {
        let token = p.login("alice", PW).await["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let r = api(&p, &token, reqwest::Method::GET, "/api/tickets")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let started = Instant::now();
        let r = api(&p, &token, reqwest::Method::POST, "/auth/logout")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        refused_by_the_proxy_within_one_second(&p, &token, started, &format!("round {round}"))
            .await;
    }
}

#[tokio::test]
async fn crafted_tokens_are_refused_with_a_reason_code_kept_from_the_client() {
    let p = started().await;
    // A token the backend issued, to compare against.
    let good = p.login("alice", PW).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        api(&p, &good, reqwest::Method::GET, "/api/tickets")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let (kid, key, public_x) = signing_key(&p);
    let claims = |patch: Value| {
        let mut c = json!({"iss": "portcullis", "aud": "portcullis", "sub": "2", "sid": "x", "roles": ["administrator"],
                            "amr": ["pwd"], "iat": now(), "exp": now() + 120});
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let sign =
        |header: jsonwebtoken::Header, c: &Value| jsonwebtoken::encode(&header, c, &key).unwrap();
    let eddsa = |kid: &str| {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        h.kid = Some(kid.to_owned());
        h
    };
    let valid_claims = claims(json!({}));
    let parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let hs256_with_public_key = {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some(kid.clone());
        let secret = URL_SAFE_NO_PAD.decode(&public_x).unwrap();
        jsonwebtoken::encode(
            &h,
            &valid_claims,
            &jsonwebtoken::EncodingKey::from_secret(&secret),
        )
        .unwrap()
    };
    let with_header = |extra: Value| {
        let mut h = json!({"alg": "EdDSA", "typ": "JWT", "kid": kid});
        for (k, v) in extra.as_object().unwrap() {
            h[k] = v.clone();
        }
        // Header changed: the signature of the original no longer matters, the header check comes first.
        format!("{}.{}.{}", b64(&h), b64(&valid_claims), parts[2])
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "kid": kid})),
                b64(&valid_claims)
            ),
            "algorithm_not_allowed",
        ),
        (
            "alg None",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "None", "kid": kid})),
                b64(&valid_claims)
            ),
            "algorithm_not_allowed",
        ),
        (
            "HS256 keyed with the public key",
            hs256_with_public_key,
            "algorithm_not_allowed",
        ),
        (
            "unknown kid",
            sign(eddsa("0000000000000000"), &valid_claims),
            "unknown_kid",
        ),
        (
            "kid with path characters",
            sign(eddsa("../../keys/jwt/x"), &valid_claims),
            "bad_kid",
        ),
        (
            "jku header",
            with_header(json!({"jku": "https://evil.example/jwks.json"})),
            "forbidden_header",
        ),
        (
            "x5u header",
            with_header(json!({"x5u": "https://evil.example/cert.pem"})),
            "forbidden_header",
        ),
        (
            "expired",
            sign(
                eddsa(&kid),
                &claims(json!({"exp": now() - 3600, "iat": now() - 7200})),
            ),
            "expired",
        ),
        (
            "not yet valid",
            sign(eddsa(&kid), &claims(json!({"nbf": now() + 3600}))),
            "not_yet_valid",
        ),
        (
            "wrong issuer",
            sign(eddsa(&kid), &claims(json!({"iss": "https://evil.example"}))),
            "unknown_issuer",
        ),
        (
            "wrong audience",
            sign(eddsa(&kid), &claims(json!({"aud": "someone-else"}))),
            "wrong_audience",
        ),
        (
            "bad signature",
            format!(
                "{}.{}.{}",
                parts[0],
                b64(&claims(json!({"roles": ["administrator"]}))),
                parts[2]
            ),
            "bad_signature",
        ),
        ("truncated", parts[..2].join("."), "malformed"),
        (
            "zero-length signature",
            format!("{}.{}.", parts[0], parts[1]),
            "bad_signature",
        ),
        (
            "oversized",
            format!("{}.{}.{}", parts[0], "A".repeat(20_000), parts[2]),
            "oversized",
        ),
        (
            "missing kid",
            sign(
                jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
                &valid_claims,
            ),
            "missing_kid",
        ),
    ];
    let mut details = std::collections::BTreeSet::new();
    for (label, token, reason) in &cases {
        let r = api(&p, token, reqwest::Method::GET, "/api/tickets")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{label}");
        let body: Value = r.json().await.unwrap();
        // One answer for every failure: the reason is no oracle for a forger.
        let detail = body["detail"].as_str().unwrap().to_owned();
        assert!(!detail.contains(reason), "{label}: {body}");
        details.insert(detail);
    }
    assert_eq!(details.len(), 1, "{details:?}");
    let m = p.metrics().await;
    for (label, _, reason) in &cases {
        assert!(
            m.contains(&format!(
                "portcullis_jwt_rejections_total{{reason=\"{reason}\"}}"
            )),
            "{label}: no metric for {reason}"
        );
    }
    // A correctly signed token naming the proxy's own service subject is refused by the
    // proxy itself (reason kept from the client), never forwarded as the service.
    let service = sign(eddsa(&kid), &claims(json!({"sub": "@proxy"})));
    let r = api(&p, &service, reqwest::Method::GET, "/api/tickets")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        p.metrics()
            .await
            .contains("portcullis_authentication_failures_total{reason=\"reserved_subject\"} 1")
    );
    // A correctly signed token for another subject still meets the policy and the backend.
    let forged_ok = sign(eddsa(&kid), &claims(json!({})));
    let r = api(&p, &forged_ok, reqwest::Method::GET, "/api/tickets")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "a signed token with an unknown session is refused by the backend"
    );
}

#[tokio::test]
async fn path_spellings_cannot_reach_a_denied_route() {
    let p = started().await;
    let token = p.login("alice", PW).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    for target in [
        "/admin/sessions",
        "/admin/../admin/sessions",
        "/api/%2e%2e/admin/sessions",
        "//admin/sessions",
        "/ADMIN/sessions",
        "/Admin/Sessions",
        "/admin;x=1/sessions",
        "/admin./sessions",
        "/api/..%2fadmin/sessions",
        "/api/%2e%2e%2fadmin/sessions",
        "/%61dmin/sessions",
    ] {
        let req = format!(
            "GET {target} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        );
        let (status, text) = raw_request(&p.pki.ca_pem, p.https, req.as_bytes()).await;
        assert!(
            status == 400 || status == 403 || status == 404,
            "{target} reached {status}: {text}"
        );
    }
}

/// alice signs in as a browser: her cookies (`name=value` each) and the CSRF token.
async fn browser_sign_in(p: &Portcullis) -> (Vec<String>, String) {
    let r = p
        .client()
        .post(p.url("/auth/login"))
        .json(&json!({"username": "alice", "password": PW}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let cookies: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .collect();
    let csrf = r.json::<Value>().await.unwrap()["csrf_token"]
        .as_str()
        .unwrap()
        .to_owned();
    (cookies, csrf)
}

#[tokio::test]
async fn cross_site_form_post_with_the_cookie_is_refused_and_the_spa_passes() {
    let p = started().await;
    let (cookies, csrf) = browser_sign_in(&p).await;
    let cookie = cookies.join("; ");
    let host = format!("localhost:{}", p.https);
    let post = |headers: Vec<(&str, String)>| {
        let mut req = p
            .client()
            .post(format!("https://localhost:{}/api/tickets", p.https))
            .header("cookie", &cookie)
            .json(&json!({"title": "t"}));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send()
    };
    // A form on another site: the browser attaches the cookie, nothing else.
    let r = post(vec![
        ("sec-fetch-site", "cross-site".into()),
        ("origin", "https://evil.example".into()),
    ])
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        r.json::<Value>().await.unwrap()["type"],
        "urn:portcullis:problem:csrf"
    );
    // Same origin but without the token (e.g. an older browser without Fetch Metadata).
    let r = post(vec![]).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // The SPA: same origin, token echoed from the cookie.
    let r = post(vec![
        ("sec-fetch-site", "same-origin".into()),
        ("origin", format!("https://{host}")),
        ("x-csrf-token", csrf),
    ])
    .await
    .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    // API clients with a bearer token are exempt.
    let token = p.login("alice", PW).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = api(&p, &token, reqwest::Method::POST, "/api/tickets")
        .header("sec-fetch-site", "cross-site")
        .json(&json!({"title": "t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(
        p.metrics()
            .await
            .contains(r#"portcullis_csrf_rejections_total{mode="enforce",reason="cross_site"}"#)
    );
}

/// Once the access cookie has expired, a browser still holds the refresh cookie: another
/// site must not be able to use it to end (or refresh) the session, nor to log the user
/// out through the OIDC logout navigation.
#[tokio::test]
async fn sessions_cannot_be_ended_or_refreshed_by_another_site() {
    let p = started().await;
    // The access cookie has expired: the browser holds the refresh and CSRF cookies.
    let (cookies, csrf) = browser_sign_in(&p).await;
    let cookies: Vec<String> = cookies
        .into_iter()
        .filter(|c| !c.starts_with("__Host-portcullis-access="))
        .collect();
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("__Host-portcullis-refresh="))
    );
    let refresh_only = cookies.join("; ");
    for path in ["/auth/logout", "/auth/refresh"] {
        let r = p
            .client()
            .post(p.url(path))
            .header("cookie", &refresh_only)
            .header("sec-fetch-site", "cross-site")
            .header("origin", "https://evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
        assert_eq!(
            r.json::<Value>().await.unwrap()["type"],
            "urn:portcullis:problem:csrf",
            "{path}"
        );
    }
    let r = p
        .client()
        .get(p.url("/auth/oidc/logout"))
        .header("cookie", &refresh_only)
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // The session survived all three: it still refreshes from the application itself.
    let r = p
        .client()
        .post(p.url("/auth/refresh"))
        .header("cookie", &refresh_only)
        .header("sec-fetch-site", "same-origin")
        .header("x-csrf-token", csrf)
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), StatusCode::FORBIDDEN);
    assert_ne!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn brute_force_on_one_account_from_many_addresses_and_from_one_address_is_blocked() {
    let p = portcullis()
        .trusted_proxies(&["127.0.0.0/8"])
        .proxy_yaml(
            "  rate_limits:\n    rules:\n      - {name: login_account, key: login_account, routes: [auth], requests_per_period: 5, period_seconds: 600}\n      - {name: login_ip, key: client_ip, routes: [auth], requests_per_period: 8, period_seconds: 600}\n",
        )
        .start()
        .await;
    p.add_users(&[("victim", "employee", PW), ("bystander", "employee", PW)]);
    let attempt = |user: &str, ip: String| {
        p.client()
            .post(p.url("/auth/login"))
            .header("x-forwarded-for", ip)
            .json(&json!({"username": user, "password": "guess"}))
            .send()
    };
    // Many addresses, one account.
    let mut statuses = Vec::new();
    for i in 0..8 {
        statuses.push(
            attempt("victim", format!("198.51.100.{i}"))
                .await
                .unwrap()
                .status(),
        );
    }
    assert!(
        statuses[..5].iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    assert!(
        statuses[5..]
            .iter()
            .all(|s| *s == StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    // One address, many accounts.
    let mut statuses = Vec::new();
    for i in 0..10 {
        let r = attempt(&format!("user{i}"), "203.0.113.9".into())
            .await
            .unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(r.headers().get("retry-after").is_some());
            assert!(r.headers().get("ratelimit-policy").is_some());
        }
        statuses.push(r.status());
    }
    assert!(
        statuses[8..]
            .iter()
            .all(|s| *s == StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    // A legitimate user elsewhere is unaffected.
    let r = p
        .client()
        .post(p.url("/auth/login"))
        .header("x-forwarded-for", "192.0.2.44")
        .json(&json!({"username": "bystander", "password": PW, "client": "api"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(p.metrics().await.contains(
        "portcullis_ratelimit_rejections_total{mode=\"enforce\",rule=\"login_account\"}"
    ));
}

#[tokio::test]
async fn two_proxies_sharing_redis_enforce_one_limit() {
    let echo = start_echo().await;
    let prefix = format!("portcullis-test-{}-{}:", std::process::id(), now());
    let yaml = format!(
        "  rate_limits:\n    store: {{kind: redis, url: 'redis://127.0.0.1:6379', key_prefix: '{prefix}'}}\n    rules: [{{name: shared, key: route, requests_per_period: 10, period_seconds: 60}}]\n"
    );
    let a = portcullis()
        .proxy_to(echo)
        .routes("[{name: api, path_prefix: /api}]")
        .proxy_yaml(&yaml)
        .start()
        .await;
    let b = portcullis()
        .proxy_to(echo)
        .routes("[{name: api, path_prefix: /api}]")
        .proxy_yaml(&yaml)
        .start()
        .await;
    let mut allowed = 0;
    for i in 0..16 {
        let p = if i % 2 == 0 { &a } else { &b };
        let r = p.client().get(p.url("/api/x")).send().await.unwrap();
        match r.status() {
            StatusCode::OK => allowed += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!(allowed, 10, "the two proxies share one budget of 10");
}

#[tokio::test]
async fn a_broken_policy_edit_is_rejected_while_traffic_flows() {
    let policies = copy_of_shipped_policies();
    let p = portcullis()
        .policy(policies.path().to_str().unwrap())
        .proxy_yaml("  rate_limits: {rules: [{name: per_ip, key: client_ip, requests_per_period: 100000, burst_requests: 100000}]}\n")
        .start()
        .await;
    let client = p.client();
    let url = p.url("/monitoring/health");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == StatusCode::OK => ok += 1,
                    _ => failed += 1,
                }
            }
            (ok, failed)
        })
    };
    let http = policies.path().join("http.rego");
    let original = std::fs::read_to_string(&http).unwrap();
    // A syntax error, then a policy whose own tests fail: both rejected.
    std::fs::write(&http, format!("{original}\nbroken := {{\n")).unwrap();
    assert_eventually!(
        p.metrics()
            .await
            .contains(r#"portcullis_reloads_total{kind="policy",result="failure"} 1"#),
        Duration::from_secs(10),
        "broken policy not rejected:\n{}",
        p.log()
    );
    std::fs::write(
        &http,
        original.replace("\"unauthenticated\"", "\"anonymous_now\""),
    )
    .unwrap();
    assert_eventually!(
        p.metrics()
            .await
            .contains(r#"portcullis_reloads_total{kind="policy",result="failure"} 2"#),
        Duration::from_secs(10),
        "policy failing its tests not rejected:\n{}",
        p.log()
    );
    let r = p.client().get(p.url("/api/tickets")).send().await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "the old bundle still decides"
    );
    // A valid edit is taken (SIGHUP works too).
    std::fs::write(&http, format!("{original}\n# reviewed\n")).unwrap();
    p.signal("HUP");
    assert_eventually!(
        p.metrics()
            .await
            .contains(r#"portcullis_reloads_total{kind="policy",result="success"} 1"#),
        Duration::from_secs(10),
        "valid policy not reloaded:\n{}",
        p.log()
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = load.await.unwrap();
    assert_eq!(
        failed, 0,
        "{failed} requests failed during the reloads ({ok} succeeded)"
    );
    assert!(ok > 20, "only {ok} requests were made");
    let log = p.log();
    assert!(
        log.contains("policy.reload_rejected") && log.contains("http.rego:"),
        "rejection names the file and line"
    );
    // Each reload is an audit event with the digests (the proxy's file sink).
    let reloads = || {
        std::fs::read_to_string(p.state_dir().join("audit/proxy.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["event.action"] == "policy.reload")
            .collect::<Vec<_>>()
    };
    assert_eventually!(
        reloads().len() == 3,
        Duration::from_secs(10),
        "policy reloads not audited: {:?}",
        reloads()
    );
    let events = reloads();
    let outcomes: Vec<&str> = events
        .iter()
        .map(|e| e["event.outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["failure", "failure", "success"]);
    assert!(
        events[0]["portcullis.details"]["error"]
            .as_str()
            .unwrap()
            .contains("http.rego:")
    );
    assert_eq!(events[0]["log.level"], "error");
    assert!(events[2]["portcullis.policy.digest"].is_string());
    assert_eq!(
        events[2]["portcullis.details"]["previous_digest"],
        events[0]["portcullis.policy.digest"]
    );
}

/// A folder holding a copy of the shipped bundle, for tests that edit it.
fn copy_of_shipped_policies() -> tempfile::TempDir {
    let policies = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(support::policy_dir()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), policies.path().join(e.file_name())).unwrap();
    }
    policies
}

/// Appends `rule` to the bundle's `tickets.rego` (as first shipped) and waits until
/// the proxy's metrics show `expected`.
async fn edit_tickets_rego(p: &Portcullis, policies: &Path, rule: &str, expected: &str) {
    let tickets = policies.join("tickets.rego");
    let original =
        std::fs::read_to_string(Path::new(support::policy_dir()).join("tickets.rego")).unwrap();
    std::fs::write(&tickets, format!("{original}\n{rule}\n")).unwrap();
    assert_eventually!(
        p.metrics().await.contains(expected),
        Duration::from_secs(20),
        "no {expected} after adding {rule}:\n{}",
        p.log()
    );
}

/// The digests of the bundle the backend enforces (`/monitoring/health`) and the one the
/// proxy enforces (`/health/ready`).
async fn enforced_digests(p: &Portcullis) -> (String, String) {
    let backend: Value = p
        .client()
        .get(p.url("/monitoring/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let proxy: Value = p
        .client()
        .get(p.admin_url("/health/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        backend["policy"]["digest"].as_str().unwrap().to_owned(),
        proxy["checks"]["policy"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn an_edit_of_tickets_rego_changes_the_backends_decisions_without_a_restart() {
    let policies = copy_of_shipped_policies();
    let p = portcullis()
        .policy(policies.path().to_str().unwrap())
        .start()
        .await;
    p.add_users(&[("alice", "employee", PW), ("bob", "employee", PW)]);
    let alice = p.login("alice", PW).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let bob = p.login("bob", PW).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = api(&p, &alice, reqwest::Method::POST, "/api/tickets")
        .json(&json!({"title": "Leaking tap"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let ticket: Value = r.json().await.unwrap();
    let (id, department) = (
        ticket["id"].as_str().unwrap().to_owned(),
        ticket["department_id"].to_string(),
    );
    // The bundle's own tests use departments 7 and 8; a rule for this one is untested.
    assert!(!["7", "8"].contains(&department.as_str()), "{department}");
    let read_as_bob = || async {
        api(
            &p,
            &bob,
            reqwest::Method::GET,
            &format!("/api/tickets/{id}"),
        )
        .send()
        .await
        .unwrap()
        .status()
    };
    assert_eq!(
        read_as_bob().await,
        StatusCode::NOT_FOUND,
        "another reporter's ticket"
    );
    let (backend, proxy) = enforced_digests(&p).await;
    assert_eq!(backend, proxy, "both layers enforce one bundle");

    // Every employee reads every ticket of their department: the bundle's own matrix
    // test fails, so the edit is refused and both layers keep the old bundle.
    edit_tickets_rego(
        &p,
        policies.path(),
        "grants contains \"department_read\" if {\n\taction == \"read\"\n\thas_role(\"employee\")\n\tin_department\n}",
        r#"portcullis_reloads_total{kind="policy",result="failure"} 1"#,
    )
    .await;
    assert_eq!(
        read_as_bob().await,
        StatusCode::NOT_FOUND,
        "the old bundle still decides"
    );
    assert_eq!(
        enforced_digests(&p).await,
        (backend.clone(), backend.clone())
    );

    // A rule for this department only: no test of the bundle covers it, so it is taken,
    // and the backend's object-level decision changes at once.
    edit_tickets_rego(
        &p,
        policies.path(),
        &format!(
            "grants contains \"facilities_read\" if {{\n\taction == \"read\"\n\thas_role(\"employee\")\n\tticket.department_id == \"{department}\"\n}}"
        ),
        r#"portcullis_reloads_total{kind="policy",result="success"} 1"#,
    )
    .await;
    assert_eq!(
        read_as_bob().await,
        StatusCode::OK,
        "the new bundle decides"
    );
    let (after_backend, after_proxy) = enforced_digests(&p).await;
    assert_ne!(after_backend, backend, "the backend reports the new digest");
    assert_eq!(after_backend, after_proxy, "both layers enforce one bundle");
}

/// Audit events of `action` in the proxy's file sink.
fn proxy_events(p: &Portcullis, action: &str) -> Vec<Value> {
    std::fs::read_to_string(p.state_dir().join("audit/proxy.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event.action"] == action)
        .collect()
}

#[tokio::test]
async fn floods_of_sign_ins_and_reports_are_limited_folded_and_do_not_slow_a_real_sign_in() {
    // Clients behind a trusted load balancer, so each flood has its own address.
    let p = portcullis().trusted_proxies(&["127.0.0.0/8"]).start().await;
    p.add_users(&[("bystander", "employee", PW)]);
    // Both floods at once, for a few seconds, each keeping requests in flight (one
    // client each: its requests share a connection, as a scripted flood's would).
    let flood = |path: &str, address: &'static str, in_flight: usize| {
        let (client, url) = (p.client(), p.url(path));
        let report = path.contains("csp-report");
        tokio::spawn(async move {
            let until = Instant::now() + Duration::from_secs(5);
            let mut requests = tokio::task::JoinSet::new();
            let mut statuses = Vec::new();
            let mut i = 0;
            while Instant::now() < until {
                while requests.len() < in_flight {
                    i += 1;
                    let request = client.post(&url).header("x-forwarded-for", address);
                    let request = if report {
                        request
                            .header("content-type", "application/csp-report")
                            .body(r#"{"csp-report":{"document-uri":"https://localhost/api/x","violated-directive":"script-src-elem","effective-directive":"script-src-elem","blocked-uri":"https://evil.example/x.js","disposition":"enforce"}}"#)
                    } else {
                        request
                            .json(&json!({"username": format!("made-up-{i}"), "password": "guess"}))
                    };
                    requests.spawn(async move { request.send().await.unwrap().status() });
                }
                if let Some(done) = requests.join_next().await {
                    statuses.push(done.unwrap());
                }
            }
            statuses.extend(requests.join_all().await);
            statuses
        })
    };
    let sign_ins = flood("/auth/login", "203.0.113.7", 24);
    let reports = flood("/.portcullis/csp-report", "203.0.113.8", 4);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // A real user elsewhere signs in while both floods run.
    let sign_in = || {
        p.client()
            .post(p.url("/auth/login"))
            .header("x-forwarded-for", "192.0.2.44")
            .json(&json!({"username": "bystander", "password": PW, "client": "api"}))
            .send()
    };
    let started = Instant::now();
    let r = sign_in().await.unwrap();
    let took = started.elapsed();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        !sign_ins.is_finished() && !reports.is_finished(),
        "a flood ended early"
    );
    let (sign_ins, reports) = (sign_ins.await.unwrap(), reports.await.unwrap());
    assert!(
        took < Duration::from_secs(1),
        "the real sign-in took {took:?}"
    );

    // Each flood met its class's limit (the policy's `rate_limit_class`) in front of
    // the hashing: 10 sign-ins at once and one per 2 s after; 20 reports at once and
    // one per second after.
    let passed = |s: &[StatusCode]| {
        s.iter()
            .filter(|s| **s != StatusCode::TOO_MANY_REQUESTS)
            .count()
    };
    assert!(
        sign_ins.len() > 100,
        "only {} sign-ins were tried",
        sign_ins.len()
    );
    assert!(
        reports.len() > 100,
        "only {} reports were sent",
        reports.len()
    );
    let hashed = passed(&sign_ins);
    assert!(
        hashed <= 16,
        "{hashed} of {} made-up sign-ins reached the backend",
        sign_ins.len()
    );
    let taken = passed(&reports);
    assert!(
        taken <= 30,
        "{taken} of {} reports were taken",
        reports.len()
    );
    let m = p.metrics().await;
    for rule in ["sign_in_client", "csp_reports_client"] {
        let series =
            format!(r#"portcullis_ratelimit_rejections_total{{mode="enforce",rule="{rule}"}}"#);
        assert!(m.contains(&series), "{series}\n{m}");
    }

    // The trail holds the first of each kind at once, not one event per request: the
    // rest is counted (metrics) and summarised when the window ends.
    assert_eventually!(
        !proxy_events(&p, "rate_limit.reject").is_empty()
            && !proxy_events(&p, "csp.violation").is_empty(),
        Duration::from_secs(10),
        "the floods left no audit event"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rejects = proxy_events(&p, "rate_limit.reject");
    let keys: Vec<String> = rejects
        .iter()
        .map(|e| format!("{} {}", e["source.ip"], e["portcullis.details"]))
        .collect();
    // One per address and rule that refused it (the class rule, the per-address rule).
    assert!(
        rejects.len() <= 4,
        "{} rate-limit events: {keys:#?}",
        rejects.len()
    );
    let violations = proxy_events(&p, "csp.violation");
    assert!(
        violations.len() <= 3,
        "{} violation events",
        violations.len()
    );
    let folded: f64 = m
        .lines()
        .filter(|l| l.starts_with("portcullis_audit_events_folded_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(folded >= 100.0, "folded {folded}:\n{m}");

    // At shutdown the open windows are summarised with their counts.
    let mut p = p;
    p.signal("TERM");
    if p.wait_exit(Duration::from_secs(15)).await.is_none() {
        let log = p.log();
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        panic!(
            "no exit within 15 s of SIGTERM; the log ends:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let summary = proxy_events(&p, "rate_limit.reject").into_iter().find(|e| {
        e["portcullis.details"]["aggregate"]["repeats"]
            .as_u64()
            .is_some_and(|n| n > 50)
    });
    assert!(
        summary.is_some(),
        "{:?}",
        proxy_events(&p, "rate_limit.reject")
    );
}

/// The session id (`sid`) an access token names.
fn sid_of(token: &str) -> String {
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["sid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn users_see_who_they_are_and_end_only_their_own_sessions() {
    let p = started().await;
    p.add_users(&[("bob", "employee", PW)]);
    let token = |v: Value| v["access_token"].as_str().unwrap().to_owned();
    let (phone, laptop) = (
        token(p.login("alice", PW).await),
        token(p.login("alice", PW).await),
    );
    let bob = token(p.login("bob", PW).await);

    // Asking is never an error: anonymous callers learn they are anonymous.
    let r = p.client().get(p.url("/auth/session")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"authenticated": false})
    );
    let me: Value = api(&p, &phone, reqwest::Method::GET, "/auth/session")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["authenticated"], true, "{me}");
    assert_eq!(me["username"], "alice");
    assert_eq!(me["roles"], json!(["employee"]));
    assert_eq!(me["session_id"], sid_of(&phone));
    assert_eq!(me["auth_method"], "password");
    assert_eq!(
        (me["mfa"].clone(), me["mfa_enrolled"].clone()),
        (json!(false), json!(false))
    );

    // Her own sessions, this one marked; nobody else's.
    let list = |t: &str| {
        let r = api(&p, t, reqwest::Method::GET, "/auth/sessions");
        async move { r.send().await.unwrap().json::<Vec<Value>>().await.unwrap() }
    };
    let mine = list(&phone).await;
    let sids: Vec<&str> = mine
        .iter()
        .map(|s| s["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(sids.len(), 2, "{mine:?}");
    assert!(sids.contains(&sid_of(&laptop).as_str()) && !sids.contains(&sid_of(&bob).as_str()));
    let current: Vec<&Value> = mine.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["session_id"], sid_of(&phone));

    // Ending a session, as the holder of `token`.
    let end = |token: &str, victim: &str| {
        api(
            &p,
            token,
            reqwest::Method::DELETE,
            &format!("/auth/sessions/{}", sid_of(victim)),
        )
        .send()
    };

    // Someone else's session is "not found", and stays alive.
    let r = end(&phone, &bob).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let tickets = |t: &str| api(&p, t, reqwest::Method::GET, "/api/tickets").send();
    assert_eq!(tickets(&bob).await.unwrap().status(), StatusCode::OK);

    // Ending her laptop's session from her phone: the laptop is refused, the phone is not.
    let r = end(&phone, &laptop).await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(
        r.headers().get("set-cookie").is_none(),
        "another session's end clears no cookie here"
    );
    assert_eventually!(
        tickets(&laptop).await.unwrap().status() == StatusCode::UNAUTHORIZED,
        Duration::from_secs(5),
        "the ended session still works"
    );
    assert_eq!(tickets(&phone).await.unwrap().status(), StatusCode::OK);
    assert_eq!(list(&phone).await.len(), 1);
    // Ended once is ended: a second attempt finds nothing.
    let again = end(&phone, &laptop).await.unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND);

    // The trail says who ended it and why.
    let root = token(p.login("root", PW).await);
    let page: Value = api(
        &p,
        &root,
        reqwest::Method::GET,
        &format!(
            "/admin/audit/logs?action=session.revoke&session_id={}",
            sid_of(&laptop)
        ),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let events = page["items"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{page}");
    assert_eq!(events[0]["portcullis.details"]["reason"], "user", "{page}");

    // The sign-in page's providers: none configured here, and asking is public.
    let r = p
        .client()
        .get(p.url("/auth/oidc/providers"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"providers": []}));
}

/// The `portcullis_*` series of a metrics page (name and labels), without values.
fn series(page: &str) -> std::collections::BTreeSet<String> {
    page.lines()
        .filter(|l| l.starts_with("portcullis_"))
        .filter_map(|l| l.rsplit_once(' ').map(|(s, _)| s.to_owned()))
        .collect()
}

#[tokio::test]
async fn each_layer_serves_its_own_metrics_with_sign_in_timings() {
    let p = started().await;
    let r = p
        .client()
        .post(p.url("/auth/login"))
        .json(&json!({"username": "alice", "password": "not her password", "client": "api"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    p.login("alice", PW).await;

    let (proxy, backend) = (p.metrics().await, p.backend_metrics().await);
    for line in [
        r#"portcullis_auth_logins_total{method="password",result="success"} 1"#,
        r#"portcullis_auth_logins_total{method="password",result="failure"} 1"#,
        r#"portcullis_auth_login_failures_total{method="password",reason="invalid_credentials"} 1"#,
        r#"portcullis_auth_login_duration_seconds_count{method="password",result="success"} 1"#,
        r#"portcullis_auth_login_duration_seconds_count{method="password",result="failure"} 1"#,
        // Known label values start at zero.
        r#"portcullis_auth_login_failures_total{method="backup_code",reason="mfa_failed"} 0"#,
        r#"portcullis_auth_lockouts_total{kind="account"} 0"#,
    ] {
        assert!(backend.contains(line), "backend lacks `{line}`:\n{backend}");
    }
    for (name, page) in [("proxy", &proxy), ("backend", &backend)] {
        assert!(
            page.contains("process_resident_memory_bytes") && page.contains("process_open_fds"),
            "{name} has no process metrics"
        );
    }
    assert!(proxy.contains("portcullis_http_requests_total"));
    assert!(!proxy.contains("portcullis_auth_logins_total"));
    assert!(!backend.contains("portcullis_http_requests_total"));
    // No series on both pages: a sum over both scrape targets would count it twice.
    let twice: Vec<String> = series(&proxy)
        .intersection(&series(&backend))
        .cloned()
        .collect();
    assert!(twice.is_empty(), "exposed by both: {twice:#?}");
}
