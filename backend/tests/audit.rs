//! The backend's audit trail: it fails closed (when its spool is full with the policy
//! `reject`, a sign-in cannot be recorded, so it is refused with a 503 problem and no
//! session is left behind), and the `audit_events` table's SQL works on both engines.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod support;

use portcullis_audit::{
    AuditError, AuditEvent, Category, FullPolicy, Outcome, SinkKind, SinkSettings, SpoolError,
};
use portcullis_backend::BackendSettings;
use portcullis_backend::model::{NewEmployee, Role};
use portcullis_testkit::pg::TestDatabase;
use serde_json::{Value, json};

#[tokio::test]
async fn a_full_spool_refuses_sign_ins_instead_of_dropping_their_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut audit = portcullis_audit::AuditConfig::default()
        .validate("audit", dir.path(), dir.path())
        .unwrap()
        .settings("backend");
    audit.spool.segment_bytes = 64 * 1024;
    audit.spool.max_bytes = 128 * 1024;
    audit.spool.full_policy = FullPolicy::Reject;
    // A SIEM that is down: nothing is acknowledged, so the spool only grows.
    audit.sinks.push(SinkSettings {
        name: "siem".into(),
        kind: SinkKind::Syslog {
            addr: "127.0.0.1:9".into(),
            tls: None,
        },
    });
    let settings = BackendSettings {
        audit,
        ..support::settings(
            dir.path(),
            format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display()),
            Default::default(),
        )
    };
    let state = portcullis_backend::open(&settings, None, &prometheus::Registry::new())
        .await
        .unwrap();
    let e = portcullis_backend::directory::repo::create_employee(
        &state.db,
        &NewEmployee {
            username: "pia".into(),
            email: "pia@example.org".into(),
            display_name: "Pia".into(),
            department_id: None,
            roles: vec![Role::Employee],
        },
        false,
    )
    .await
    .unwrap();
    let hash = state.identity.passwords.hash("pias long password").unwrap();
    portcullis_backend::identity::store::set_credential(
        &state.db,
        e.id,
        &portcullis_backend::identity::password::StoredPassword {
            hash,
            legacy_scheme: None,
            legacy_params: None,
        },
        false,
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(portcullis_backend::serve(
        listener,
        state.clone(),
        std::future::pending(),
    ));
    let login = || async {
        reqwest::Client::new()
            .post(format!("{base}/auth/login"))
            .json(&json!({"username": "pia", "password": "pias long password", "client": "api"}))
            .send()
            .await
            .unwrap()
    };
    assert_eq!(login().await.status(), 200, "a sign-in works at first");

    // Fill the spool: large events, then the smallest there are, until not even those fit.
    for padding in [900, 0] {
        let mut filled = false;
        for _ in 0..10_000 {
            let mut event = AuditEvent::new(Category::System, "f", Outcome::Success);
            if padding > 0 {
                event = event.detail("padding", "x".repeat(padding));
            }
            match state.audit.log().emit(event).await {
                Ok(_) => {}
                Err(AuditError::Spool(SpoolError::Full)) => {
                    filled = true;
                    break;
                }
                Err(e) => panic!("unexpected: {e}"),
            }
        }
        assert!(filled, "the spool never filled up");
    }

    let sessions_before =
        portcullis_backend::identity::store::active_sessions(&state.db, Some(e.id))
            .await
            .unwrap()
            .len();
    let r = login().await;
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["type"], "urn:portcullis:problem:audit-unavailable");
    let sessions_after =
        portcullis_backend::identity::store::active_sessions(&state.db, Some(e.id))
            .await
            .unwrap()
            .len();
    assert_eq!(sessions_before, sessions_after, "no session was granted");
    // A failed sign-in cannot be recorded either: refused the same way, not a silent 401.
    let r = reqwest::Client::new()
        .post(format!("{base}/auth/login"))
        .json(&json!({"username": "pia", "password": "wrong", "client": "api"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    state
        .audit
        .shutdown(std::time::Duration::from_millis(200))
        .await;
}

/// The audit table's SQL on both engines: the database sink's inserts (duplicates
/// skipped), the view's filters and keyset pages in both orders, and chain order.
#[tokio::test]
async fn the_audit_table_works_on_sqlite_and_postgresql() {
    use portcullis_backend::audit_log::store::{self, AuditFilter, Order};
    let dir = tempfile::tempdir().unwrap();
    let pg = TestDatabase::create("portcullis_audit").await;
    for url in [
        format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display()),
        pg.url.clone(),
    ] {
        let db = portcullis_backend::Db::connect(&url).await.unwrap();
        db.migrate().await.unwrap();
        let line = |i: u64, action: &str, user: &str| {
            json!({
                "@timestamp": format!("2026-03-01T12:00:{:02}.000000Z", i), "ecs.version": "8.11.0",
                "event.id": format!("id-{i}"), "event.category": "auth", "event.action": action,
                "event.outcome": "success", "log.level": "info", "user.id": user,
                "portcullis.emitter": "backend", "portcullis.chain.seq": i,
                "portcullis.chain.prev_hash": "0".repeat(64), "portcullis.chain.hash": "0".repeat(64),
            })
            .to_string()
        };
        let lines: Vec<String> = (1..=7)
            .map(|i| line(i, if i % 2 == 0 { "logout" } else { "login" }, "u1"))
            .collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        assert_eq!(store::insert_lines(&db, &refs).await.unwrap(), 7, "{url}");
        // Redelivery stores nothing twice.
        assert_eq!(
            store::insert_lines(&db, &refs[5..]).await.unwrap(),
            0,
            "{url}"
        );
        let logins = AuditFilter {
            action: Some("login".into()),
            from: Some("2026-03-01T12:00:02.000000Z".into()),
            ..AuditFilter::default()
        };
        assert_eq!(store::count(&db, &logins).await.unwrap(), 3, "{url}");
        let all = AuditFilter::default();
        let first = store::page(&db, &all, Order::NewestFirst, None, 3)
            .await
            .unwrap();
        let seqs = |rows: &[store::StoredEvent]| -> Vec<u64> {
            rows.iter()
                .map(|r| portcullis_audit::AuditRecord::parse(&r.line).unwrap().seq)
                .collect()
        };
        assert_eq!(seqs(&first), [7, 6, 5], "{url}");
        let next = store::page(&db, &all, Order::NewestFirst, Some(&first[2].position), 3)
            .await
            .unwrap();
        assert_eq!(seqs(&next), [4, 3, 2], "{url}");
        let up = store::page(&db, &all, Order::OldestFirst, Some(&first[1].position), 10)
            .await
            .unwrap();
        assert_eq!(seqs(&up), [7], "{url}");
        let chain = store::chain(&db, "backend").await.unwrap();
        assert_eq!(chain.len(), 7, "{url}");
        assert_eq!(store::emitters(&db).await.unwrap(), ["backend"], "{url}");
        // Another emitter's event is refused where only the proxy may write.
        let foreign = store::insert_lines_from(&db, &refs[..1], Some("proxy")).await;
        assert!(foreign.is_err(), "{url}");
    }
    pg.drop().await;
}
