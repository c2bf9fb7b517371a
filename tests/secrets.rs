//! Secrets stay secret while proxy and backend run: the database password (as a systemd
//! credential, `credential:NAME` from `$CREDENTIALS_DIRECTORY`), the SIEM token, the
//! identity key and the TLS private key appear in none of `/proc/<pid>/environ`, the
//! proxy's and the backend's `/metrics`, the logs, the audit files, `check-config` (and `--print`)'s
//! output or a refusal of an inline secret — while the token is shown to be in use.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use base64::Engine as _;
use portcullis_testkit::pg::TestDatabase;
use support::portcullis;

/// Every Authorization header the SIEM receiver got.
async fn siem() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let app = axum::Router::new().route(
        "/services/collector/event",
        axum::routing::post(move |headers: HeaderMap| {
            let record = Arc::clone(&record);
            async move {
                if let Some(a) = headers.get("authorization") {
                    record
                        .lock()
                        .unwrap()
                        .push(a.to_str().unwrap_or_default().to_owned());
                }
                "{\"text\":\"Success\",\"code\":0}"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/services/collector/event"), seen)
}

#[tokio::test]
async fn secrets_stay_out_of_the_environment_metrics_logs_and_check_config() {
    let db = TestDatabase::create("secrets").await;
    let files = tempfile::tempdir().unwrap();
    let credentials = files.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    let db_password = "canary-db-password-5b1e9c";
    std::fs::write(credentials.join("db-password"), db_password).unwrap();
    let hec_token = "canary-hec-token-0d27aa";
    let token_file = files.path().join("hec.token");
    std::fs::write(&token_file, format!("{hec_token}\n")).unwrap();
    let (url, authorizations) = siem().await;

    let p = portcullis()
        .env("CREDENTIALS_DIRECTORY", credentials.to_str().unwrap())
        .backend_yaml(&format!(
            "  database_url: '{}'\n  database_password_file: 'credential:db-password'\n",
            db.url
        ))
        .audit_yaml(&format!(
            "  sinks:\n    - {{kind: file, name: file}}\n    - {{kind: http, name: siem, url: '{url}', format: splunk_hec, token_file: '{}'}}\n",
            token_file.display()
        ))
        .start()
        .await;

    // Traffic that is logged and audited: a refused sign-in, a health check, a 401.
    let client = p.client();
    let _ = client
        .post(p.url("/auth/login"))
        .json(&serde_json::json!({"username": "nobody", "password": "wrong-password"}))
        .send()
        .await
        .unwrap();
    let _ = client.get(p.url("/api/tickets")).send().await.unwrap();
    // The token is in use: the SIEM got events with it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while authorizations.lock().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "no event reached the SIEM:\n{}",
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        authorizations
            .lock()
            .unwrap()
            .iter()
            .all(|a| a == &format!("Splunk {hec_token}"))
    );

    let identity_key = std::fs::read(p.state_dir().join("keys/identity.key")).unwrap();
    assert_eq!(identity_key.len(), 32);
    let tls_key = std::fs::read_to_string(&p.pki.key_path).unwrap();
    let tls_key_body: String = tls_key
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let secrets = [
        ("database password", db_password.to_owned()),
        ("SIEM token", hec_token.to_owned()),
        ("identity key (hex)", hex::encode(&identity_key)),
        (
            "identity key (base64)",
            base64::engine::general_purpose::STANDARD.encode(&identity_key),
        ),
        (
            "identity key (base64url)",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&identity_key),
        ),
        ("TLS private key", tls_key_body[..40].to_owned()),
    ];

    let environ = std::fs::read(format!("/proc/{}/environ", p.pid())).unwrap();
    let environ = String::from_utf8_lossy(&environ).into_owned();
    assert!(
        environ.contains("CREDENTIALS_DIRECTORY="),
        "the test did not reach the process's environment"
    );
    let (ok, check) = p.cli(&[
        "check-config",
        p.path().join("portcullis.yaml").to_str().unwrap(),
    ]);
    assert!(ok, "{check}");
    let (ok, printed) = p.cli(&[
        "check-config",
        "--print",
        p.path().join("portcullis.yaml").to_str().unwrap(),
    ]);
    assert!(ok, "{printed}");
    // The effective settings are there, secrets named by their files only.
    assert!(
        printed.contains("database_password_file") && printed.contains("token_file"),
        "{printed}"
    );
    // An inline secret is refused, and the refusal does not repeat it.
    let inline = p.path().join("inline.yaml");
    std::fs::write(
        &inline,
        format!("backend:\n  database_password: {db_password}\n"),
    )
    .unwrap();
    let (ok, refused) = p.cli(&["check-config", inline.to_str().unwrap()]);
    assert!(!ok, "{refused}");
    assert!(refused.contains("database_password_file") || refused.contains("*_file"));

    let mut audit = String::new();
    for entry in std::fs::read_dir(p.state_dir().join("audit")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            audit.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
    assert!(!audit.is_empty(), "no audit file to check");
    let places = [
        ("audit trail files", audit),
        ("/proc/<pid>/environ", environ),
        ("proxy /metrics", p.metrics().await),
        ("backend /metrics", p.backend_metrics().await),
        ("check-config", check),
        ("check-config --print", printed),
        ("check-config refusal", refused),
        ("log", p.log()),
    ];
    db.drop().await;
    for (place, text) in &places {
        for (what, secret) in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "the {what} is in the {place}"
            );
        }
    }
}
