//! The backend's audit trail: it fails closed (when its spool is full with the policy
//! `reject`, a sign-in cannot be recorded, so it is refused with a 503 problem and no
//! session is left behind; a change whose event cannot be recorded is not stored), and the
//! `audit_events` table's SQL works on both engines.
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
use portcullis_backend::model::{NewEmployee, Role};
use portcullis_backend::{BackendSettings, IdentityKey};
use portcullis_contract::identity::{IDENTITY_HEADER, Identity, SIGNATURE_HEADER};
use portcullis_testkit::pg::TestDatabase;
use reqwest::Method;
use serde_json::{Value, json};

/// A backend on SQLite in `dir` whose audit spool is small, refuses when full (`reject`)
/// and delivers to a SIEM that is down, so it only grows.
async fn backend_with_a_spool_that_fills(dir: &std::path::Path) -> portcullis_backend::AppState {
    let mut audit = portcullis_audit::AuditConfig::default()
        .validate("audit", dir, dir)
        .unwrap()
        .settings("backend");
    audit.spool.segment_bytes = 64 * 1024;
    audit.spool.max_bytes = 128 * 1024;
    audit.spool.full_policy = FullPolicy::Reject;
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
            dir,
            format!("sqlite://{}?mode=rwc", dir.join("t.db").display()),
            Default::default(),
        )
    };
    portcullis_backend::open(&settings, None, &prometheus::Registry::new())
        .await
        .unwrap()
}

/// An employee `username` with `roles` in department `department_id` and the password
/// "<username>s long password".
async fn employee(
    state: &portcullis_backend::AppState,
    username: &str,
    roles: Vec<Role>,
    department_id: Option<i64>,
) -> i64 {
    let e = portcullis_backend::directory::repo::create_employee(
        &state.db,
        &NewEmployee {
            username: username.into(),
            email: format!("{username}@example.org"),
            display_name: username.into(),
            department_id,
            roles,
        },
        false,
    )
    .await
    .unwrap();
    let hash = state
        .identity
        .passwords
        .hash(&format!("{username}s long password"))
        .unwrap();
    portcullis_backend::identity::store::set_credential(
        state.db.pool(),
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
    e.id
}

/// Serves `state` on a free port; the base URL.
async fn serve(state: &portcullis_backend::AppState) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(portcullis_backend::serve(
        listener,
        state.clone(),
        std::future::pending(),
    ));
    base
}

/// Every file under `dir`, sorted.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Emits events into the spool until not even the smallest fits.
async fn fill_the_spool(state: &portcullis_backend::AppState) {
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
}

#[tokio::test]
async fn a_full_spool_refuses_sign_ins_instead_of_dropping_their_events() {
    let dir = tempfile::tempdir().unwrap();
    let state = backend_with_a_spool_that_fills(dir.path()).await;
    let pia = employee(&state, "pia", vec![Role::Employee], None).await;
    let base = serve(&state).await;
    let login = || async {
        reqwest::Client::new()
            .post(format!("{base}/auth/login"))
            .json(&json!({"username": "pia", "password": "pias long password", "client": "api"}))
            .send()
            .await
            .unwrap()
    };
    assert_eq!(login().await.status(), 200, "a sign-in works at first");

    fill_the_spool(&state).await;

    let sessions_before =
        portcullis_backend::identity::store::active_sessions(&state.db, Some(pia))
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
    let sessions_after = portcullis_backend::identity::store::active_sessions(&state.db, Some(pia))
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

/// A change and its event succeed or fail together: with the spool full, every kind of
/// change answers 503 `audit-unavailable` and leaves the database as it was.
#[tokio::test]
async fn a_change_whose_event_cannot_be_recorded_is_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let state = backend_with_a_spool_that_fills(dir.path()).await;
    let dept = portcullis_backend::directory::repo::create_department(&state.db, "Plant")
        .await
        .unwrap();
    let ada = employee(&state, "ada", vec![Role::Administrator], Some(dept.id)).await;
    let pia = employee(&state, "pia", vec![Role::Employee], Some(dept.id)).await;
    // Nothing refers to these two, so they could be deleted.
    let cyd = employee(&state, "cyd", vec![Role::Employee], None).await;
    let spare = portcullis_backend::directory::repo::create_department(&state.db, "Spare")
        .await
        .unwrap();
    let base = serve(&state).await;
    let http = reqwest::Client::new();
    let key = IdentityKey::load_or_create(&dir.path().join("identity.key")).unwrap();
    for id in [ada, pia] {
        let session = portcullis_backend::identity::store::NewSession {
            employee_id: id,
            auth_method: "password".into(),
            expires_at: "2999-01-01T00:00:00.000000Z".into(),
            absolute_expires_at: "2999-01-01T00:00:00.000000Z".into(),
            ..Default::default()
        };
        portcullis_backend::identity::store::create_session(&state.db, &format!("s{id}"), &session)
            .await
            .unwrap();
    }
    // A request as the proxy signs it for employee `as_user` in their session.
    let req = |method: Method, path: &str, as_user: i64| {
        let identity = Identity {
            sub: as_user.to_string(),
            session_id: Some(format!("s{as_user}")),
            auth_method: Some("password".into()),
            decision_id: None,
            iat: time::OffsetDateTime::now_utc().unix_timestamp(),
            issuer: None,
        };
        let (id, sig) = key.sign(method.as_str(), path, &identity);
        http.request(method, format!("{base}{path}"))
            .header(IDENTITY_HEADER, id)
            .header(SIGNATURE_HEADER, sig)
    };
    // A ticket stored while the trail still works, to change later.
    let r = req(Method::POST, "/api/tickets", pia)
        .json(&json!({"title": "pump leaks", "description": "water on the floor", "priority": "medium"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let ticket: Value = r.json().await.unwrap();
    let tid = ticket["id"].as_str().unwrap().to_owned();
    let upload = |name: &str, body: &'static str| {
        req(
            Method::POST,
            &format!("/api/tickets/{tid}/attachments?filename={name}"),
            pia,
        )
        .body(body)
    };
    let r = upload("notes.txt", "valve 3 was replaced\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let aid = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The encrypted objects in the store, to show a refused upload leaves none behind.
    let objects = || walk(&dir.path().join("attachments"));
    let objects_before = objects();
    assert!(!objects_before.is_empty());

    // Everything a reader can see of the stored data, to compare before and after.
    let snapshot = || {
        let tid = tid.clone();
        let req = &req;
        async move {
            let mut all = Vec::new();
            for path in [
                "/api/departments".to_owned(),
                "/api/employees".to_owned(),
                format!("/api/tickets/{tid}"),
                format!("/api/tickets/{tid}/comments"),
                format!("/api/tickets/{tid}/history"),
                format!("/api/tickets/{tid}/attachments"),
                "/api/tickets".to_owned(),
            ] {
                let r = req(Method::GET, &path, ada).send().await.unwrap();
                assert_eq!(r.status(), 200, "GET {path}");
                all.push(r.json::<Value>().await.unwrap());
            }
            all
        }
    };
    let before = snapshot().await;
    // Pia has a confirmed second factor and a password; neither may change unrecorded.
    use portcullis_backend::identity::store;
    store::start_totp(&state.db, pia, "sealed-secret")
        .await
        .unwrap();
    let mut tx = state.db.begin().await.unwrap();
    store::confirm_totp(&mut tx, pia).await.unwrap();
    tx.commit().await.unwrap();
    let password_before = store::credential(&state.db, pia)
        .await
        .unwrap()
        .unwrap()
        .password
        .hash;

    fill_the_spool(&state).await;
    let version = ticket["version"].as_i64().unwrap();
    let changes: Vec<(&str, reqwest::RequestBuilder)> = vec![
        (
            "create a department",
            req(Method::POST, "/api/departments", ada)
                .json(&json!({"name": "Stores"})),
        ),
        (
            "rename a department",
            req(Method::PATCH, &format!("/api/departments/{}", dept.id), ada)
                .json(&json!({"name": "Works"})),
        ),
        (
            "create an employee",
            req(Method::POST, "/api/employees", ada)
                .json(&json!({"username": "bob", "email": "bob@example.org", "display_name": "Bob", "roles": ["employee"]})),
        ),
        (
            "change an employee's roles",
            req(Method::PATCH, &format!("/api/employees/{pia}"), ada)
                .json(&json!({"roles": ["employee", "technician"]})),
        ),
        (
            "create a ticket",
            req(Method::POST, "/api/tickets", pia)
                .json(&json!({"title": "valve sticks", "description": "found on the round", "priority": "low"})),
        ),
        (
            "edit a ticket",
            req(Method::PATCH, &format!("/api/tickets/{tid}"), pia)
                .header("If-Match", format!("\"{version}\""))
                .json(&json!({"title": "pump leaks badly"})),
        ),
        (
            "comment on a ticket",
            req(Method::POST, &format!("/api/tickets/{tid}/comments"), pia)
                .json(&json!({"body": "still leaking"})),
        ),
        (
            "delete an employee",
            req(Method::DELETE, &format!("/api/employees/{cyd}"), ada),
        ),
        ("upload an attachment", upload("report.txt", "pressure 4 bar\n")),
        (
            "upload a new version of an attachment",
            req(
                Method::POST,
                &format!("/api/tickets/{tid}/attachments/{aid}/versions"),
                pia,
            )
            .body("valve 3 and 4 were replaced\n"),
        ),
        (
            "delete an attachment",
            req(
                Method::DELETE,
                &format!("/api/tickets/{tid}/attachments/{aid}"),
                pia,
            ),
        ),
        (
            "change one's password",
            req(Method::POST, "/auth/password", pia).json(&json!({
                "current_password": "pias long password",
                "new_password": "a much longer new password 42"
            })),
        ),
        (
            "reset an employee's second factor",
            req(Method::POST, &format!("/admin/users/{pia}/mfa/reset"), ada),
        ),
        (
            "delete a department",
            req(Method::DELETE, &format!("/api/departments/{}", spare.id), ada),
        ),
    ];
    for (what, request) in changes {
        let r = request.send().await.unwrap();
        let status = r.status();
        let problem: Value = r.json().await.unwrap();
        assert_eq!(status, 503, "{what}: refused, not {problem}");
        assert_eq!(
            problem["type"], "urn:portcullis:problem:audit-unavailable",
            "{what}"
        );
    }
    assert_eq!(snapshot().await, before, "nothing unrecorded was stored");
    assert_eq!(objects(), objects_before, "no orphaned or deleted object");
    let credential = store::credential(&state.db, pia).await.unwrap().unwrap();
    assert_eq!(
        credential.password.hash, password_before,
        "the password is unchanged"
    );
    assert_eq!(
        store::totp(&state.db, pia)
            .await
            .unwrap()
            .map(|(_, confirmed)| confirmed),
        Some(true),
        "the second factor is still there"
    );
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
