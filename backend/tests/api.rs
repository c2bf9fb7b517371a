//! The backend's API suite, run on SQLite and on the PostgreSQL at
//! 127.0.0.1:5432 (each test gets a fresh database). A missing PostgreSQL is
//! a failure, not a skip.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::collections::HashSet;
use std::path::PathBuf;

use portcullis_backend::directory::repo;
use portcullis_backend::model::{NewEmployee, Role};
use portcullis_backend::tickets::repo as ticket_repo;
use portcullis_backend::{AppState, IdentityKey};
use portcullis_contract::identity::{IDENTITY_HEADER, Identity, SIGNATURE_HEADER};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[macro_use]
mod support;

use portcullis_testkit::pg::TestDatabase;
use support::Engine;

struct Users {
    admin: i64,
    alice: i64,
    bob: i64,
    tom: i64,
    tina: i64,
    hank: i64,
    hilda: i64,
    dev: i64,
    dept_a: i64,
    dept_b: i64,
}

struct App {
    dir_path: PathBuf,
    sessions: std::collections::HashMap<i64, String>,
    base: String,
    key: IdentityKey,
    client: reqwest::Client,
    state: AppState,
    users: Users,
    _dir: tempfile::TempDir,
    pg_db: Option<TestDatabase>,
}

impl App {
    async fn start(engine: Engine) -> App {
        Self::start_with(engine, Default::default()).await
    }

    async fn start_with(
        engine: Engine,
        identity: portcullis_backend::identity::IdentitySettings,
    ) -> App {
        let dir = tempfile::tempdir().unwrap();
        let (url, pg_db) = support::database(engine, dir.path(), "portcullis_t").await;
        let settings = support::settings(dir.path(), url, identity);
        let state = portcullis_backend::open(&settings, None, &prometheus::Registry::new())
            .await
            .unwrap();
        let key = IdentityKey::load_or_create(&settings.identity_key_file).unwrap();
        let users = seed(&state).await;
        let mut sessions = std::collections::HashMap::new();
        for id in [
            users.admin,
            users.alice,
            users.bob,
            users.tom,
            users.tina,
            users.hank,
            users.hilda,
            users.dev,
        ] {
            let sid = format!("test-session-{id}");
            support::live_session(&state, id, &sid).await;
            sessions.insert(id, sid);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let serving = state.clone();
        tokio::spawn(async move {
            portcullis_backend::serve(listener, serving, std::future::pending())
                .await
                .unwrap();
        });
        App {
            dir_path: dir.path().to_owned(),
            sessions,
            base,
            key,
            client: reqwest::Client::new(),
            state,
            users,
            _dir: dir,
            pg_db,
        }
    }

    /// A request signed as the proxy would sign it for employee `as_user`.
    fn req(&self, method: Method, path: &str, as_user: i64) -> reqwest::RequestBuilder {
        self.req_in(method, path, as_user, self.sessions.get(&as_user).cloned())
    }

    /// As [`Self::req`], in the session `sid` (e.g. one a sign-in created).
    fn req_in(
        &self,
        method: Method,
        path: &str,
        as_user: i64,
        sid: Option<String>,
    ) -> reqwest::RequestBuilder {
        let identity = Identity {
            sub: as_user.to_string(),
            session_id: sid,
            auth_method: Some("password".into()),
            decision_id: None,
            iat: time::OffsetDateTime::now_utc().unix_timestamp(),
            issuer: None,
        };
        let (id, sig) = self.key.sign(method.as_str(), path, &identity);
        self.client
            .request(method, format!("{}{path}", self.base))
            .header(IDENTITY_HEADER, id)
            .header(SIGNATURE_HEADER, sig)
    }

    async fn create(&self, as_user: i64, title: &str) -> Value {
        let r = self
            .req(Method::POST, "/api/tickets", as_user)
            .json(&json!({"title": title}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{}",
            r.text().await.unwrap()
        );
        r.json().await.unwrap()
    }

    async fn etag(&self, id: &str) -> String {
        let r = self
            .req(Method::GET, &format!("/api/tickets/{id}"), self.users.admin)
            .send()
            .await
            .unwrap();
        r.headers()["etag"].to_str().unwrap().to_owned()
    }

    async fn assign(&self, id: &str, to: i64) {
        let etag = self.etag(id).await;
        let r = self
            .req(
                Method::PUT,
                &format!("/api/tickets/{id}/assignment"),
                self.users.admin,
            )
            .header("if-match", etag)
            .json(&json!({"assignee_id": to}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    }

    async fn finish(self) {
        let pg_db = self.pg_db.clone();
        drop(self);
        if let Some(db) = pg_db {
            db.drop().await;
        }
    }
}

async fn seed(state: &AppState) -> Users {
    let db = &state.db;
    let a = repo::create_department(db, "Facilities").await.unwrap().id;
    let b = repo::create_department(db, "Laboratories")
        .await
        .unwrap()
        .id;
    let mk = |name: &str, dept: Option<i64>, roles: Vec<Role>| NewEmployee {
        username: name.to_owned(),
        email: format!("{name}@example.org"),
        display_name: name.to_owned(),
        department_id: dept,
        roles,
    };
    let mut ids = Vec::new();
    for e in [
        mk("ada", None, vec![Role::Administrator]),
        mk("alice", Some(a), vec![Role::Employee]),
        mk("bob", Some(a), vec![Role::Employee]),
        mk("tom", Some(a), vec![Role::Technician]),
        mk("tina", Some(b), vec![Role::Technician]),
        mk("hank", Some(a), vec![Role::DepartmentHead]),
        mk("hilda", Some(b), vec![Role::DepartmentHead]),
        mk("dev", Some(b), vec![Role::Developer]),
    ] {
        ids.push(repo::create_employee(db, &e, false).await.unwrap().id);
    }
    Users {
        admin: ids[0],
        alice: ids[1],
        bob: ids[2],
        tom: ids[3],
        tina: ids[4],
        hank: ids[5],
        hilda: ids[6],
        dev: ids[7],
        dept_a: a,
        dept_b: b,
    }
}

// ------------------------------------------------------------------ tests

async fn tickets_get_ids_etags_and_optimistic_concurrency(engine: Engine) {
    let app = App::start(engine).await;
    let u = &app.users;
    let r = app
        .req(Method::POST, "/api/tickets", u.alice)
        .json(&json!({"title": "Leaking tap", "description": "Room 12"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["etag"], "\"1\"");
    let t: Value = r.json().await.unwrap();
    let id = t["id"].as_str().unwrap().to_owned();
    let year = time::OffsetDateTime::now_utc().year();
    assert!(
        id.starts_with(&format!("TCK-{year}-")) && id.len() == 15,
        "{id}"
    );
    assert_eq!(t["status"], "open");
    assert_eq!(t["department_id"], u.dept_a);

    // Clients cannot choose the id.
    let r = app
        .req(Method::POST, "/api/tickets", u.alice)
        .json(&json!({"title": "x", "id": "TCK-2000-000001"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let path = format!("/api/tickets/{id}");
    let r = app
        .req(Method::PATCH, &path, u.alice)
        .json(&json!({"title": "No If-Match"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_REQUIRED);
    // A tag that names no version is no precondition either (and no version is invented).
    for unusable in ["*", "\"1\", \"2\"", "W/\"1\"", "1", "\"x\""] {
        let r = app
            .req(Method::PATCH, &path, u.alice)
            .header("if-match", unusable)
            .json(&json!({"title": "Unusable If-Match"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PRECONDITION_REQUIRED, "{unusable}");
        assert!(r.headers().get("etag").is_none(), "{unusable}");
    }
    let r = app
        .req(Method::PATCH, &path, u.alice)
        .header("if-match", "\"1\"")
        .json(&json!({"title": "Leaking tap, room 12"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["etag"], "\"2\"");
    let r = app
        .req(Method::PATCH, &path, u.alice)
        .header("if-match", "\"1\"")
        .json(&json!({"title": "stale write"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(r.headers()["etag"], "\"2\"");
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["type"], "urn:portcullis:problem:precondition-failed");
    let stored = ticket_repo::get_ticket(&app.state.db, &id).await.unwrap();
    assert_eq!(stored.title, "Leaking tap, room 12");
    assert_eq!(stored.version, 2);
    app.finish().await;
}

async fn two_hundred_concurrent_creations_get_distinct_ids(engine: Engine) {
    let app = App::start(engine).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let req = app
            .req(Method::POST, "/api/tickets", app.users.alice)
            .json(&json!({"title": format!("ticket {i}")}));
        tasks.push(tokio::spawn(async move { req.send().await.unwrap() }));
    }
    let mut ids = HashSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let v: Value = r.json().await.unwrap();
        ids.insert(v["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 200);
    app.finish().await;
}

async fn same_if_match_twice_one_wins_one_gets_412(engine: Engine) {
    let app = App::start(engine).await;
    let t = app.create(app.users.alice, "race").await;
    let path = format!("/api/tickets/{}", t["id"].as_str().unwrap());
    let a = app
        .req(Method::PATCH, &path, app.users.alice)
        .header("if-match", "\"1\"")
        .json(&json!({"title": "A"}))
        .send();
    let b = app
        .req(Method::PATCH, &path, app.users.alice)
        .header("if-match", "\"1\"")
        .json(&json!({"title": "B"}))
        .send();
    let (a, b) = tokio::join!(a, b);
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut statuses = [a.status(), b.status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::PRECONDITION_FAILED]);
    let winner = if a.status() == StatusCode::OK {
        "A"
    } else {
        "B"
    };
    let stored = ticket_repo::get_ticket(&app.state.db, t["id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(stored.title, winner);
    assert_eq!(stored.version, 2);
    app.finish().await;
}

async fn workflow_refuses_invalid_transitions(engine: Engine) {
    let app = App::start(engine).await;
    let u = &app.users;
    let t = app.create(u.alice, "Broken door").await;
    let id = t["id"].as_str().unwrap().to_owned();
    app.assign(&id, u.tom).await;
    let go = |to: &str, etag: String, who: i64| {
        app.req(Method::POST, &format!("/api/tickets/{id}/transitions"), who)
            .header("if-match", etag)
            .json(&json!({"to": to}))
            .send()
    };
    let r = go("resolved", app.etag(&id).await, u.tom).await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["type"], "urn:portcullis:problem:invalid-transition");
    for to in ["in_progress", "resolved"] {
        let r = go(to, app.etag(&id).await, u.tom).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{to}");
    }
    // The reporter may close or reopen their own ticket, not start work.
    let r = go("closed", app.etag(&id).await, u.alice).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = go("in_progress", app.etag(&id).await, u.alice)
        .await
        .unwrap();
    assert!(
        r.status() == StatusCode::FORBIDDEN || r.status() == StatusCode::CONFLICT,
        "{}",
        r.status()
    );
    let r = go("reopened", app.etag(&id).await, u.alice).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let h = ticket_repo::history(&app.state.db, &id).await.unwrap();
    let actions: Vec<&str> = h.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "created",
            "assigned",
            "transitioned",
            "transitioned",
            "transitioned",
            "transitioned"
        ]
    );
    app.finish().await;
}

/// Role × action × ownership. Each row: actor, action, whose ticket
/// (reporter, assignee), expected status.
async fn object_level_authorization_matrix(engine: Engine) {
    let app = App::start(engine).await;
    let u = &app.users;
    // alice's ticket in dept A, assigned to tom; hilda and tina are dept B.
    let t = app.create(u.alice, "Matrix").await;
    let id = t["id"].as_str().unwrap().to_owned();
    app.assign(&id, u.tom).await;
    let path = format!("/api/tickets/{id}");

    let read_cases = [
        (u.alice, "reporter", StatusCode::OK),
        (u.bob, "same-department employee", StatusCode::NOT_FOUND),
        (u.tom, "assigned technician", StatusCode::OK),
        (u.tina, "other technician", StatusCode::NOT_FOUND),
        (u.hank, "head of the department", StatusCode::OK),
        (u.hilda, "head of another department", StatusCode::NOT_FOUND),
        (u.admin, "administrator", StatusCode::OK),
        (u.dev, "developer", StatusCode::NOT_FOUND),
    ];
    for (who, label, want) in read_cases {
        let r = app.req(Method::GET, &path, who).send().await.unwrap();
        assert_eq!(r.status(), want, "read by {label}");
        let r = app
            .req(Method::GET, &format!("{path}/comments"), who)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "comments read by {label}");
    }

    let approve_cases = [
        (u.alice, StatusCode::FORBIDDEN),
        (u.tom, StatusCode::FORBIDDEN),
        (u.hilda, StatusCode::NOT_FOUND),
        (u.hank, StatusCode::OK),
    ];
    for (who, want) in approve_cases {
        let r = app
            .req(Method::POST, &format!("{path}/approval"), who)
            .header("if-match", app.etag(&id).await)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "approval by {who}");
    }
    let r = app
        .req(Method::POST, &format!("{path}/approval"), u.admin)
        .header("if-match", app.etag(&id).await)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT, "approving twice");

    let assign_cases = [
        (u.alice, StatusCode::FORBIDDEN),
        (u.tom, StatusCode::FORBIDDEN),
        (u.hank, StatusCode::OK),
    ];
    for (who, want) in assign_cases {
        let r = app
            .req(Method::PUT, &format!("{path}/assignment"), who)
            .header("if-match", app.etag(&id).await)
            .json(&json!({"assignee_id": u.tom}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "assignment by {who}");
    }
    // Only technicians can be assignees.
    let r = app
        .req(Method::PUT, &format!("{path}/assignment"), u.admin)
        .header("if-match", app.etag(&id).await)
        .json(&json!({"assignee_id": u.bob}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let edit_cases = [
        (u.alice, StatusCode::OK),
        (u.tom, StatusCode::OK),
        (u.hank, StatusCode::OK),
        (u.bob, StatusCode::NOT_FOUND),
        (u.tina, StatusCode::NOT_FOUND),
        (u.dev, StatusCode::NOT_FOUND),
    ];
    for (who, want) in edit_cases {
        let r = app
            .req(Method::PATCH, &path, who)
            .header("if-match", app.etag(&id).await)
            .json(&json!({"priority": "high"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "edit by {who}");
        let r = app
            .req(Method::POST, &format!("{path}/comments"), who)
            .json(&json!({"body": "hello"}))
            .send()
            .await
            .unwrap();
        let want_comment = if want == StatusCode::OK {
            StatusCode::CREATED
        } else {
            want
        };
        assert_eq!(r.status(), want_comment, "comment by {who}");
    }

    // Lists apply the same rules.
    let bobs = app.create(u.bob, "Bob's").await;
    let tinas_dept = app.create(u.hilda, "Lab sink").await;
    let visible = |who: i64| {
        let req = app.req(Method::GET, "/api/tickets?limit=200", who);
        async move {
            let page: Value = req.send().await.unwrap().json().await.unwrap();
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].as_str().unwrap().to_owned())
                .collect::<HashSet<_>>()
        }
    };
    let all: HashSet<String> = [
        &id,
        bobs["id"].as_str().unwrap(),
        tinas_dept["id"].as_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(visible(u.admin).await, all);
    assert_eq!(visible(u.alice).await, HashSet::from([id.clone()]));
    assert_eq!(
        visible(u.bob).await,
        HashSet::from([bobs["id"].as_str().unwrap().to_owned()])
    );
    assert_eq!(visible(u.tom).await, HashSet::from([id.clone()]));
    assert_eq!(
        visible(u.hank).await,
        HashSet::from([id.clone(), bobs["id"].as_str().unwrap().to_owned()])
    );
    assert_eq!(
        visible(u.hilda).await,
        HashSet::from([tinas_dept["id"].as_str().unwrap().to_owned()])
    );
    assert_eq!(visible(u.dev).await, HashSet::new());
    app.finish().await;
}

async fn pagination_is_stable_and_filters_apply(engine: Engine) {
    let app = App::start(engine).await;
    let mut made = Vec::new();
    for i in 0..7 {
        made.push(
            app.create(app.users.alice, &format!("t{i}")).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/api/tickets?limit=3&cursor={c}"),
            None => "/api/tickets?limit=3".to_owned(),
        };
        let page: Value = app
            .req(Method::GET, &q, app.users.admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, made);
    let r = app
        .req(Method::GET, "/api/tickets?status=closed", app.users.admin)
        .send()
        .await
        .unwrap();
    let page: Value = r.json().await.unwrap();
    assert!(page["items"].as_array().unwrap().is_empty());
    for bad in [
        "/api/tickets?limit=0",
        "/api/tickets?status=bogus",
        "/api/tickets?cursor=abc",
        "/api/tickets?unknown=1",
        "/api/tickets?status=%3Cscript%3Eecho-me%3C%2Fscript%3E",
        "/api/tickets?echo-me%3Cb%3E=1",
    ] {
        let r = app
            .req(Method::GET, bad, app.users.admin)
            .send()
            .await
            .unwrap();
        assert!(
            r.status() == StatusCode::BAD_REQUEST || r.status() == StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            r.status()
        );
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        // The parser's message, which quotes the input, stays in the log. The random
        // `request_id` (hex) can itself contain "abc", so it is taken out before looking.
        let mut problem: Value = r.json().await.unwrap();
        let request_id = problem
            .as_object_mut()
            .and_then(|o| o.remove("request_id"))
            .unwrap_or_else(|| panic!("{bad}: the problem names no request_id"));
        assert!(request_id.is_string(), "{bad}: {request_id}");
        let text = problem.to_string();
        for echoed in ["echo-me", "bogus", "unknown", "abc", "variant"] {
            assert!(!text.contains(echoed), "{bad}: {text}");
        }
    }
    app.finish().await;
}

async fn directory_is_for_administrators(engine: Engine) {
    let app = App::start(engine).await;
    let u = &app.users;
    let new = json!({"username": "nina", "email": "nina@example.org", "display_name": "Nina", "department_id": u.dept_b, "roles": ["technician"]});
    for who in [u.alice, u.tom, u.hank, u.dev] {
        let r = app
            .req(Method::POST, "/api/employees", who)
            .json(&new)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::FORBIDDEN,
            "employee creation by {who}"
        );
        let r = app
            .req(Method::POST, "/api/departments", who)
            .json(&json!({"name": "X"}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::FORBIDDEN,
            "department creation by {who}"
        );
    }
    // Department heads may read the directory; employees may not.
    assert_eq!(
        app.req(Method::GET, "/api/employees", u.hank)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.req(Method::GET, "/api/employees", u.alice)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::FORBIDDEN
    );

    let r = app
        .req(Method::POST, "/api/employees", u.admin)
        .json(&new)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let nina: Value = r.json().await.unwrap();
    let r = app
        .req(Method::POST, "/api/employees", u.admin)
        .json(&new)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT, "duplicate username");
    let path = format!("/api/employees/{}", nina["id"]);
    let r = app
        .req(Method::PATCH, &path, u.admin)
        .json(&json!({"roles": ["technician", "department_head"], "department_id": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["roles"], json!(["technician", "department_head"]));
    assert_eq!(v["department_id"], Value::Null);
    let r = app
        .req(Method::PATCH, &path, u.admin)
        .json(&json!({"roles": ["root"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        app.req(Method::DELETE, &path, u.admin)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.req(Method::GET, &path, u.admin)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );

    let r = app
        .req(Method::POST, "/api/departments", u.admin)
        .json(&json!({"name": "Grounds"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let d: Value = r.json().await.unwrap();
    let r = app
        .req(
            Method::PATCH,
            &format!("/api/departments/{}", d["id"]),
            u.admin,
        )
        .json(&json!({"name": "Gardens"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        app.req(
            Method::DELETE,
            &format!("/api/departments/{}", d["id"]),
            u.admin
        )
        .send()
        .await
        .unwrap()
        .status(),
        StatusCode::NO_CONTENT
    );
    // A department still referenced cannot be deleted.
    let r = app
        .req(
            Method::DELETE,
            &format!("/api/departments/{}", u.dept_a),
            u.admin,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    app.finish().await;
}

async fn requests_without_a_proxy_identity_are_refused(engine: Engine) {
    let app = App::start(engine).await;
    let url = format!("{}/api/tickets", app.base);
    let r = app.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["type"], "urn:portcullis:problem:unauthenticated");
    // Forged: signed with another key.
    let other = IdentityKey::random();
    let identity = Identity {
        sub: app.users.admin.to_string(),
        session_id: None,
        auth_method: None,
        decision_id: None,
        iat: time::OffsetDateTime::now_utc().unix_timestamp(),
        issuer: None,
    };
    let (i, s) = other.sign("GET", "/api/tickets", &identity);
    let r = app
        .client
        .get(&url)
        .header(IDENTITY_HEADER, i)
        .header(SIGNATURE_HEADER, s)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Replayed onto another path.
    let (i, s) = app.key.sign("GET", "/api/employees", &identity);
    let r = app
        .client
        .get(&url)
        .header(IDENTITY_HEADER, i)
        .header(SIGNATURE_HEADER, s)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A disabled employee is refused even with a valid identity.
    let patch = json!({"status": "disabled"});
    let r = app
        .req(
            Method::PATCH,
            &format!("/api/employees/{}", app.users.bob),
            app.users.admin,
        )
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .req(Method::GET, "/api/tickets", app.users.bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Public endpoints need no identity.
    assert_eq!(
        app.client
            .get(format!("{}/monitoring/health", app.base))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    app.finish().await;
}

async fn bad_input_gets_clear_problems(engine: Engine) {
    let app = App::start(engine).await;
    let u = app.users.alice;
    let cases: Vec<(reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            app.req(Method::POST, "/api/tickets", u)
                .header("content-type", "application/json")
                .body("{"),
            StatusCode::BAD_REQUEST,
            "bad-request",
        ),
        (
            app.req(Method::POST, "/api/tickets", u)
                .header("content-type", "text/plain")
                .body("{}"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
        ),
        (
            app.req(Method::POST, "/api/tickets", u)
                .json(&json!({"title": "x", "colour": "red"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
        ),
        (
            app.req(Method::POST, "/api/tickets", u)
                .json(&json!({"title": "x".repeat(201)})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
        ),
        (
            app.req(Method::POST, "/api/tickets", u)
                .json(&json!({"title": "   "})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
        ),
        (
            app.req(Method::POST, "/api/tickets", u)
                .json(&json!({"title": "a\u{0}b"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
        ),
        (
            app.req(Method::POST, "/api/tickets", u)
                .json(&json!({"title": "x", "priority": "urgent"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
        ),
        (
            app.req(Method::GET, "/api/tickets/TCK-1", u),
            StatusCode::NOT_FOUND,
            "not-found",
        ),
        (
            app.req(Method::GET, "/api/tickets/TCK-2026-999999", u),
            StatusCode::NOT_FOUND,
            "not-found",
        ),
        (
            app.req(Method::GET, "/api/employees/abc", app.users.admin),
            StatusCode::NOT_FOUND,
            "not-found",
        ),
        (
            app.req(Method::DELETE, "/api/tickets", u),
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
        ),
    ];
    for (req, status, kind) in cases {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), status, "{kind}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["type"], format!("urn:portcullis:problem:{kind}"));
        assert!(p["request_id"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(!p.to_string().to_lowercase().contains("sql"), "{p}");
        // No parser message quoting the input comes back.
        for echoed in ["urgent", "colour", "expected", "line 1"] {
            assert!(!p.to_string().contains(echoed), "{p}");
        }
    }
    app.finish().await;
}

async fn edited_history_is_detected(engine: Engine) {
    let app = App::start(engine).await;
    let t = app.create(app.users.alice, "Chain").await;
    let id = t["id"].as_str().unwrap().to_owned();
    app.assign(&id, app.users.tom).await;
    let r = app
        .req(
            Method::POST,
            &format!("/api/tickets/{id}/comments"),
            app.users.alice,
        )
        .json(&json!({"body": "any news?"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        ticket_repo::verify_history(&app.state.db, &id)
            .await
            .unwrap(),
        Ok(())
    );
    let h: Vec<Value> = app
        .req(
            Method::GET,
            &format!("/api/tickets/{id}/history"),
            app.users.alice,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h.len(), 3);
    assert_eq!(h[1]["prev_hash"], h[0]["hash"]);

    // Rewrite who the ticket was assigned to in the second entry.
    sqlx::query("update ticket_history set snapshot = replace(snapshot, '\"title\":\"Chain\"', '\"title\":\"Forged\"') where sequence = 2")
        .execute(app.state.db.pool())
        .await
        .unwrap();
    let broken = ticket_repo::verify_history(&app.state.db, &id)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(broken.position, 2, "{broken:?}");
    app.finish().await;
}

async fn openapi_document_describes_the_api(engine: Engine) {
    let app = App::start(engine).await;
    let doc: Value = app
        .client
        .get(format!("{}/api/openapi.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    for p in [
        "/api/tickets",
        "/api/tickets/{id}",
        "/api/tickets/{id}/transitions",
        "/api/employees",
        "/api/departments/{id}",
        "/admin/audit/logs",
        "/admin/audit/logs/count",
        "/admin/audit/logs/export",
    ] {
        assert!(doc["paths"].get(p).is_some(), "{p} missing");
    }
    assert!(
        doc["paths"]["/admin/audit/logs/export"]["get"]["responses"]["200"]["content"]
            .get("text/csv")
            .is_some(),
        "{}",
        doc["paths"]["/admin/audit/logs/export"]
    );
    assert!(
        doc["paths"].get("/internal/audit/ingest").is_none(),
        "the proxy's ingest is not part of the public API"
    );
    assert!(
        doc["paths"]["/api/tickets/{id}"]["patch"]["responses"]
            .get("412")
            .is_some()
    );
    app.finish().await;
}

// ---------------------------------------------------------------- identity

impl App {
    async fn set_password(&self, id: i64, pw: &str) {
        let hash = self.state.identity.passwords.hash(pw).unwrap();
        let stored = portcullis_backend::identity::password::StoredPassword {
            hash,
            legacy_scheme: None,
            legacy_params: None,
        };
        portcullis_backend::identity::store::set_credential(
            self.state.db.pool(),
            id,
            &stored,
            false,
        )
        .await
        .unwrap();
    }

    async fn login(&self, body: Value) -> reqwest::Response {
        self.client
            .post(format!("{}/auth/login", self.base))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    fn feed(&self, after: i64) -> reqwest::RequestBuilder {
        let path = format!("/auth/revocations?after={after}");
        let identity = Identity {
            sub: "@proxy".into(),
            session_id: None,
            auth_method: None,
            decision_id: None,
            iat: time::OffsetDateTime::now_utc().unix_timestamp(),
            issuer: None,
        };
        let (i, s) = self.key.sign("GET", &path, &identity);
        self.client
            .get(format!("{}{path}", self.base))
            .header(IDENTITY_HEADER, i)
            .header(SIGNATURE_HEADER, s)
    }

    async fn revoked(&self) -> Vec<String> {
        let v: Value = self.feed(0).send().await.unwrap().json().await.unwrap();
        v["session_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    }
}

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    use base64::Engine as _;
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

async fn browser_login_sets_host_cookies_and_tokens_verify_with_jwks(engine: Engine) {
    let app = App::start(engine).await;
    app.set_password(app.users.alice, "correct horse battery")
        .await;
    let r = app
        .login(json!({"username": "alice", "password": "correct horse battery"}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let cookies: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(cookies.len(), 3, "{cookies:?}");
    for c in &cookies {
        assert!(c.starts_with("__Host-portcullis-"), "{c}");
        assert!(
            c.contains("; Path=/; Secure") && c.contains("SameSite=Strict"),
            "{c}"
        );
    }
    assert!(
        cookies.iter().filter(|c| c.contains("HttpOnly")).count() == 2,
        "access and refresh are HttpOnly"
    );
    let body: Value = r.json().await.unwrap();
    assert!(
        body.get("access_token").is_none(),
        "browser clients never see the token"
    );

    let r = app
        .login(json!({"username": "alice", "password": "correct horse battery", "client": "api"}))
        .await;
    let body: Value = r.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap();
    let header: Value = {
        use base64::Engine as _;
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(token.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(header["alg"], "EdDSA");
    let jwks: Value = app
        .client
        .get(format!("{}/auth/jwks.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .unwrap();
    let key = jsonwebtoken::DecodingKey::from_ed_components(jwk["x"].as_str().unwrap()).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.set_audience(&["portcullis"]);
    v.set_issuer(&["portcullis"]);
    let c = jsonwebtoken::decode::<Value>(token, &key, &v)
        .unwrap()
        .claims;
    assert_eq!(c["sub"], app.users.alice.to_string());
    assert_eq!(c["roles"], json!(["employee"]));
    assert_eq!(c["amr"], json!(["pwd"]));
    assert!(c["sid"].as_str().is_some_and(|s| s.len() >= 40));
    assert!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap() <= 300);
    app.finish().await;
}

async fn failures_are_generic_and_lock_out_without_enumeration(engine: Engine) {
    let mut settings = portcullis_backend::identity::IdentitySettings::default();
    settings.throttle.delay_after = 1000;
    settings.throttle.account_lockout_failures = 5;
    let app = App::start_with(engine, settings).await;
    app.set_password(app.users.bob, "bobs real password").await;
    let wrong = app
        .login(json!({"username": "bob", "password": "nope"}))
        .await;
    let unknown = app
        .login(json!({"username": "nobody", "password": "nope"}))
        .await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    let (w, u): (Value, Value) = (wrong.json().await.unwrap(), unknown.json().await.unwrap());
    assert_eq!(w["type"], u["type"]);
    assert_eq!(w["detail"], u["detail"]);
    for _ in 0..4 {
        app.login(json!({"username": "bob", "password": "nope"}))
            .await;
    }
    // Locked: even the right password is refused, with the same answer.
    let r = app
        .login(json!({"username": "bob", "password": "bobs real password"}))
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let l: Value = r.json().await.unwrap();
    assert_eq!(l["detail"], w["detail"]);
    // The lockout is one audit event (written to the table shortly after).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let n: i64 = sqlx::query_scalar(
            "select count(*) from audit_events where action = 'lockout' and user_id = 'bob'",
        )
        .fetch_one(app.state.db.pool())
        .await
        .unwrap();
        if n == 1 {
            break;
        }
        assert!(
            n == 0 && std::time::Instant::now() < deadline,
            "{n} lockout events"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Another account is not affected.
    app.set_password(app.users.alice, "alice password 1").await;
    assert_eq!(
        app.login(json!({"username": "alice", "password": "alice password 1"}))
            .await
            .status(),
        StatusCode::OK
    );
    app.finish().await;
}

async fn refresh_rotates_and_reuse_ends_the_family(engine: Engine) {
    let app = App::start(engine).await;
    app.set_password(app.users.alice, "correct horse battery")
        .await;
    let body: Value = app
        .login(json!({"username": "alice", "password": "correct horse battery", "client": "api"}))
        .await
        .json()
        .await
        .unwrap();
    let first = body["refresh_token"].as_str().unwrap().to_owned();
    let sid = claims_of(body["access_token"].as_str().unwrap())["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let refresh = |t: &str| {
        app.client
            .post(format!("{}/auth/refresh", app.base))
            .json(&json!({"refresh_token": t}))
            .send()
    };
    let r = refresh(&first).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let second: Value = r.json().await.unwrap();
    let second_refresh = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second_refresh, first);
    assert_eq!(
        claims_of(second["access_token"].as_str().unwrap())["sid"],
        sid.as_str()
    );
    // The rotated token comes back: the whole session ends.
    assert_eq!(
        refresh(&first).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        refresh(&second_refresh).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert!(app.revoked().await.contains(&sid));
    app.finish().await;
}

async fn logout_and_admin_revocation_reach_the_feed(engine: Engine) {
    let app = App::start(engine).await;
    app.set_password(app.users.alice, "correct horse battery")
        .await;
    let login = || {
        app.login(
            json!({"username": "alice", "password": "correct horse battery", "client": "api"}),
        )
    };
    let a: Value = login().await.json().await.unwrap();
    let b: Value = login().await.json().await.unwrap();
    let sid_a = claims_of(a["access_token"].as_str().unwrap())["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let sid_b = claims_of(b["access_token"].as_str().unwrap())["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .client
        .post(format!("{}/auth/logout", app.base))
        .bearer_auth(a["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(app.revoked().await.contains(&sid_a));
    assert!(!app.revoked().await.contains(&sid_b));
    let r = app
        .req(
            Method::DELETE,
            &format!("/admin/sessions/{sid_b}"),
            app.users.admin,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(app.revoked().await.contains(&sid_b));
    // Not an administrator: refused.
    let r = app
        .req(Method::GET, "/admin/sessions", app.users.alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // The feed is the proxy's only: unsigned or user-signed requests are refused.
    assert_eq!(
        app.client
            .get(format!("{}/auth/revocations?after=0", app.base))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.req(Method::GET, "/auth/revocations?after=0", app.users.admin)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::FORBIDDEN
    );
    // Feed paging: `after` moves forward.
    let v: Value = app.feed(0).send().await.unwrap().json().await.unwrap();
    let after = v["after"].as_i64().unwrap();
    let v: Value = app.feed(after).send().await.unwrap().json().await.unwrap();
    assert!(v["session_ids"].as_array().unwrap().is_empty());
    // A revocation older than any token that could name it is not served, and
    // the proxy is told how long to keep ids (access-token lifetime + margin).
    sqlx::query("insert into session_revocations (session_id, revoked_at) values ('ancient', '2020-01-01T00:00:00.000000Z')")
        .execute(app.state.db.pool())
        .await
        .unwrap();
    let v: Value = app.feed(0).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["retain_seconds"], 600);
    let ids = v["session_ids"].as_array().unwrap();
    assert!(ids.iter().all(|id| id != "ancient"), "{v}");
    assert!(ids.iter().any(|id| id == sid_b.as_str()), "{v}");
    app.finish().await;
}

async fn role_change_and_session_limit_end_sessions(engine: Engine) {
    let app = App::start(engine).await;
    app.set_password(app.users.bob, "bobs real password").await;
    let mut sids = Vec::new();
    for _ in 0..6 {
        let v: Value = app
            .login(json!({"username": "bob", "password": "bobs real password", "client": "api"}))
            .await
            .json()
            .await
            .unwrap();
        sids.push(
            claims_of(v["access_token"].as_str().unwrap())["sid"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let revoked = app.revoked().await;
    assert!(
        revoked.contains(&sids[0]),
        "the oldest session ends at the limit of 5"
    );
    assert!(!revoked.contains(&sids[5]));
    let r = app
        .req(
            Method::PATCH,
            &format!("/api/employees/{}", app.users.bob),
            app.users.admin,
        )
        .json(&json!({"roles": ["technician"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let revoked = app.revoked().await;
    assert!(
        sids.iter().all(|s| revoked.contains(s)),
        "a role change ends every session"
    );
    app.finish().await;
}

async fn totp_enrolment_login_replay_and_backup_codes(engine: Engine) {
    let app = App::start(engine).await;
    app.set_password(app.users.hank, "hanks password ok").await;
    // Binding an authenticator needs the current password, not just a session.
    for (body, status) in [
        (json!({}), StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({"password": "not hanks password"}),
            StatusCode::UNAUTHORIZED,
        ),
    ] {
        let r = app
            .req(Method::POST, "/auth/mfa/totp/enroll", app.users.hank)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{body}");
    }
    let r = app
        .req(Method::POST, "/auth/mfa/totp/enroll", app.users.hank)
        .json(&json!({"password": "hanks password ok"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["otpauth_uri"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/Portcullis:hank?secret=")
    );
    assert!(e["qr_svg"].as_str().unwrap().contains("<svg"));
    // At rest the secret is sealed (AES-256-GCM under var/keys/mfa.key).
    let stored: String = sqlx::query_scalar("select secret from mfa_totp where employee_id = $1")
        .bind(app.users.hank)
        .fetch_one(app.state.db.pool())
        .await
        .unwrap();
    assert!(stored.starts_with("v1:"), "{stored}");
    assert!(!stored.contains(e["secret"].as_str().unwrap()));
    let t = portcullis_backend::identity::mfa::totp(
        e["secret"].as_str().unwrap(),
        "Portcullis",
        "hank",
    )
    .unwrap();
    let now = || time::OffsetDateTime::now_utc().unix_timestamp() as u64;
    // Confirm with the previous step's code so the login below can use the current one.
    let r = app
        .req(Method::POST, "/auth/mfa/totp/confirm", app.users.hank)
        .json(&json!({"code": t.generate(now() - 30)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let codes: Vec<String> = r.json::<Value>().await.unwrap()["backup_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 10);

    let r = app
        .login(json!({"username": "hank", "password": "hanks password ok"}))
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.json::<Value>().await.unwrap()["type"],
        "urn:portcullis:problem:mfa-required"
    );
    let code = t.generate(now());
    let r = app.login(json!({"username": "hank", "password": "hanks password ok", "totp_code": code, "client": "api"})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        claims_of(v["access_token"].as_str().unwrap())["amr"],
        json!(["pwd", "otp"])
    );
    // The same code twice is a replay.
    let r = app
        .login(json!({"username": "hank", "password": "hanks password ok", "totp_code": code}))
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A backup code works once.
    let ok = app.login(json!({"username": "hank", "password": "hanks password ok", "backup_code": codes[3].to_uppercase()})).await;
    assert_eq!(ok.status(), StatusCode::OK);
    let again = app
        .login(
            json!({"username": "hank", "password": "hanks password ok", "backup_code": codes[3]}),
        )
        .await;
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    // An administrator can reset it; then the password alone works again.
    let r = app
        .req(
            Method::POST,
            &format!("/admin/users/{}/mfa/reset", app.users.hank),
            app.users.admin,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.login(json!({"username": "hank", "password": "hanks password ok"}))
            .await
            .status(),
        StatusCode::OK
    );
    app.finish().await;
}

/// `mfa_required_roles`: a role listed there is held only by sessions that
/// used a second factor, in the access token (the proxy's decisions) and at
/// the backend (its own checks) alike.
async fn roles_that_need_a_second_factor_wait_for_one(engine: Engine) {
    let app = App::start_with(
        engine,
        portcullis_backend::identity::IdentitySettings {
            mfa_required_roles: vec![Role::Administrator],
            ..Default::default()
        },
    )
    .await;
    let pw = "adas password is long enough";
    app.set_password(app.users.admin, pw).await;
    let as_session = |method: Method, path: &str, sid: &str| {
        app.req_in(method, path, app.users.admin, Some(sid.to_owned()))
    };

    // No authenticator yet: signed in, told to enrol, without the role.
    let r = app
        .login(json!({"username": "ada", "password": pw, "client": "api"}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["mfa_enrollment_required"], true, "{v}");
    assert_eq!(v["withheld_roles"], json!(["administrator"]));
    let claims = claims_of(v["access_token"].as_str().unwrap());
    assert_eq!(claims["roles"], json!([]));
    let sid = claims["sid"].as_str().unwrap().to_owned();
    let r = as_session(Method::GET, "/admin/sessions", &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "the backend holds the rule too"
    );
    // That session may enrol.
    let r = as_session(Method::POST, "/auth/mfa/totp/enroll", &sid)
        .json(&json!({"password": pw}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let secret = r.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let t = portcullis_backend::identity::mfa::totp(&secret, "Portcullis", "ada").unwrap();
    let now = || time::OffsetDateTime::now_utc().unix_timestamp() as u64;
    let r = as_session(Method::POST, "/auth/mfa/totp/confirm", &sid)
        .json(&json!({"code": t.generate(now() - 30)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Still no role in the session that signed in without the second factor.
    let r = as_session(Method::GET, "/admin/sessions", &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // Signed in with the code: the role, in the token and at the backend.
    let r = app
        .login(json!({"username": "ada", "password": pw, "totp_code": t.generate(now()), "client": "api"}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert!(v.get("mfa_enrollment_required").is_none(), "{v}");
    let claims = claims_of(v["access_token"].as_str().unwrap());
    assert_eq!(claims["roles"], json!(["administrator"]));
    assert_eq!(claims["amr"], json!(["pwd", "otp"]));
    let r = as_session(
        Method::GET,
        "/admin/sessions",
        claims["sid"].as_str().unwrap(),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // A refresh keeps it (the session remembers its second factor).
    let r = app
        .client
        .post(format!("{}/auth/refresh", app.base))
        .json(&json!({"refresh_token": v["refresh_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let refreshed: Value = r.json().await.unwrap();
    assert_eq!(
        claims_of(refreshed["access_token"].as_str().unwrap())["roles"],
        json!(["administrator"])
    );

    // Roles not listed are untouched.
    app.set_password(app.users.alice, "alices password is long")
        .await;
    let r = app
        .login(json!({"username": "alice", "password": "alices password is long", "client": "api"}))
        .await;
    let v: Value = r.json().await.unwrap();
    assert!(v.get("mfa_enrollment_required").is_none(), "{v}");
    assert_eq!(
        claims_of(v["access_token"].as_str().unwrap())["roles"],
        json!(["employee"])
    );
    app.finish().await;
}

/// An imported bcrypt hash (stored wrapped in Argon2id) signs in with the old
/// password and is replaced by a plain Argon2id hash; while such credentials
/// remain, every password check is padded to their cost (see
/// `Passwords::verify_padded`), and the padding stops with the last of them.
async fn imported_bcrypt_passwords_are_upgraded_at_sign_in(engine: Engine) {
    use portcullis_backend::identity::password::ImportedPassword;
    use portcullis_backend::identity::store;
    let app = App::start(engine).await;
    assert_eq!(
        store::max_legacy_bcrypt_cost(&app.state.db).await.unwrap(),
        None
    );
    let old = "tom used this in 2019";
    let imported = app
        .state
        .identity
        .passwords
        .import(&ImportedPassword::Bcrypt(bcrypt::hash(old, 5).unwrap()))
        .unwrap();
    store::set_credential(app.state.db.pool(), app.users.tom, &imported, false)
        .await
        .unwrap();
    assert_eq!(
        store::max_legacy_bcrypt_cost(&app.state.db).await.unwrap(),
        Some(5)
    );
    // A wrong password is refused like any other.
    let r = app
        .login(json!({"username": "tom", "password": "tom used this in 2020"}))
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = app.login(json!({"username": "tom", "password": old})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let c = store::credential(&app.state.db, app.users.tom)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.password.legacy_scheme, None);
    assert!(
        c.password.hash.starts_with("$argon2id$"),
        "{}",
        c.password.hash
    );
    assert_eq!(
        store::max_legacy_bcrypt_cost(&app.state.db).await.unwrap(),
        None
    );
    // The same password keeps working on the new hash.
    let r = app.login(json!({"username": "tom", "password": old})).await;
    assert_eq!(r.status(), StatusCode::OK);
    app.finish().await;
}

/// A session past its idle timeout is over: its refresh token is refused and
/// the backend refuses requests in it (the proxy refuses its access tokens by
/// their `exp`, which never outlives the session).
async fn an_expired_session_cannot_be_refreshed_or_used(engine: Engine) {
    let app = App::start(engine).await;
    let pw = "alices password is long";
    app.set_password(app.users.alice, pw).await;
    let v: Value = app
        .login(json!({"username": "alice", "password": pw, "client": "api"}))
        .await
        .json()
        .await
        .unwrap();
    let claims = claims_of(v["access_token"].as_str().unwrap());
    let sid = claims["sid"].as_str().unwrap().to_owned();
    let session_expires = time::OffsetDateTime::parse(
        v["session_expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp();
    assert!(claims["exp"].as_i64().unwrap() <= session_expires);
    let as_session = || {
        app.req_in(
            Method::GET,
            "/api/tickets",
            app.users.alice,
            Some(sid.clone()),
        )
        .send()
    };
    assert_eq!(as_session().await.unwrap().status(), StatusCode::OK);
    // The idle timeout passes.
    sqlx::query(
        "update sessions set expires_at = '2000-01-01T00:00:00.000000Z' where session_id = $1",
    )
    .bind(&sid)
    .execute(app.state.db.pool())
    .await
    .unwrap();
    assert_eq!(
        as_session().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let r = app
        .client
        .post(format!("{}/auth/refresh", app.base))
        .json(&json!({"refresh_token": v["refresh_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    app.finish().await;
}

/// An administrator sets one employee's session timeout; it applies from the
/// next sign-in, out-of-range values are refused, and `null` restores the default.
async fn per_user_session_timeout_is_set_by_an_administrator(engine: Engine) {
    let app = App::start(engine).await;
    let pw = "alices password is long";
    app.set_password(app.users.alice, pw).await;
    let patch = |body: Value| {
        app.req(
            Method::PATCH,
            &format!("/api/employees/{}", app.users.alice),
            app.users.admin,
        )
        .json(&body)
        .send()
    };
    let session_lifetime = || async {
        let r = app
            .login(json!({"username": "alice", "password": pw, "client": "api"}))
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let v: Value = r.json().await.unwrap();
        let expires = time::OffsetDateTime::parse(
            v["session_expires_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        (expires - time::OffsetDateTime::now_utc()).whole_seconds()
    };
    let default = session_lifetime().await;
    assert!((1790..=1800).contains(&default), "{default}");
    for (bad, status) in [
        (json!(59), StatusCode::UNPROCESSABLE_ENTITY),
        (json!(43_201), StatusCode::UNPROCESSABLE_ENTITY),
        (json!("600"), StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let r = patch(json!({"session_timeout_seconds": bad}))
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{bad}");
    }
    let r = patch(json!({"session_timeout_seconds": 600}))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap()["session_timeout_seconds"],
        600
    );
    let short = session_lifetime().await;
    assert!((590..=600).contains(&short), "{short}");
    let r = patch(json!({"session_timeout_seconds": null}))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.json::<Value>().await.unwrap()["session_timeout_seconds"].is_null());
    let back = session_lifetime().await;
    assert!((1790..=1800).contains(&back), "{back}");
    // Not something an employee sets for themselves.
    let r = app
        .req(
            Method::PATCH,
            &format!("/api/employees/{}", app.users.alice),
            app.users.alice,
        )
        .json(&json!({"session_timeout_seconds": 43_200}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    app.finish().await;
}

/// A wrong current password counts towards the account's lockout, so a
/// stolen session cannot try passwords without limit.
async fn password_change_checks_the_current_password_and_counts_failures(engine: Engine) {
    let app = App::start_with(
        engine,
        portcullis_backend::identity::IdentitySettings {
            throttle: portcullis_backend::identity::ThrottleSettings {
                delay_after: 1000,
                account_lockout_failures: 3,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    let pw = "bobs password is long enough";
    app.set_password(app.users.bob, pw).await;
    let change = |current: &str| {
        app.req(Method::POST, "/auth/password", app.users.bob)
            .json(&json!({"current_password": current, "new_password": "a brand new passphrase"}))
            .send()
    };
    for _ in 0..3 {
        let r = change("not the password").await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // Locked now: even the right password is refused, here and at sign-in.
    assert_eq!(change(pw).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.login(json!({"username": "bob", "password": pw}))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    // Unlocked (as after the lockout period), the right one works and ends
    // every session of the account.
    sqlx::query("delete from login_failures")
        .execute(app.state.db.pool())
        .await
        .unwrap();
    assert_eq!(change(pw).await.unwrap().status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.req(Method::GET, "/api/tickets", app.users.bob)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login(json!({"username": "bob", "password": "a brand new passphrase"}))
            .await
            .status(),
        StatusCode::OK
    );
    app.finish().await;
}

async fn first_administrator_must_replace_the_one_time_password(engine: Engine) {
    let app = App::start(engine).await;
    let file = app.dir_path.join("initial-admin.txt");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&file).unwrap();
    let one_time = text
        .lines()
        .find_map(|l| l.strip_prefix("one-time password: "))
        .unwrap()
        .to_owned();
    let r = app
        .login(json!({"username": "admin", "password": one_time}))
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        r.json::<Value>().await.unwrap()["type"],
        "urn:portcullis:problem:password-change-required"
    );
    let r = app
        .login(json!({"username": "admin", "password": one_time, "new_password": "short"}))
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = app.login(json!({"username": "admin", "password": one_time, "new_password": "a much better passphrase"})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        app.login(json!({"username": "admin", "password": one_time}))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login(json!({"username": "admin", "password": "a much better passphrase"}))
            .await
            .status(),
        StatusCode::OK
    );
    app.finish().await;
}

/// The address lockout counts an IPv6 client by its /64, as the proxy's rate limits
/// do: rotating the low 64 bits does not reset it.
async fn the_address_lockout_counts_ipv6_clients_by_their_64(engine: Engine) {
    {
        let mut settings = portcullis_backend::identity::IdentitySettings::default();
        settings.throttle.delay_after = 1000;
        settings.throttle.ip_lockout_failures = 3;
        let app = App::start_with(engine, settings).await;
        app.set_password(app.users.bob, "bobs real password").await;
        let login_from = |ip: String, password: &'static str| {
            app.client
                .post(format!("{}/auth/login", app.base))
                .header(portcullis_contract::headers::CLIENT_IP_HEADER, ip)
                .json(&json!({"username": "bob", "password": password}))
                .send()
        };
        for i in 1..=3 {
            let r = login_from(format!("2001:db8:7:7::{i:x}"), "nope")
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{engine:?}");
        }
        // Another address of the same /64, with the right password: locked.
        let r = login_from("2001:db8:7:7:ffff:1:2:3".to_owned(), "bobs real password")
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{engine:?}");
        // The neighbouring /64 is not.
        let r = login_from("2001:db8:7:8::1".to_owned(), "bobs real password")
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{engine:?}");
        app.finish().await;
    }
}

on_both_engines!(
    tickets_get_ids_etags_and_optimistic_concurrency,
    two_hundred_concurrent_creations_get_distinct_ids,
    same_if_match_twice_one_wins_one_gets_412,
    workflow_refuses_invalid_transitions,
    object_level_authorization_matrix,
    pagination_is_stable_and_filters_apply,
    directory_is_for_administrators,
    requests_without_a_proxy_identity_are_refused,
    bad_input_gets_clear_problems,
    edited_history_is_detected,
    openapi_document_describes_the_api,
    browser_login_sets_host_cookies_and_tokens_verify_with_jwks,
    failures_are_generic_and_lock_out_without_enumeration,
    refresh_rotates_and_reuse_ends_the_family,
    logout_and_admin_revocation_reach_the_feed,
    role_change_and_session_limit_end_sessions,
    totp_enrolment_login_replay_and_backup_codes,
    first_administrator_must_replace_the_one_time_password,
    roles_that_need_a_second_factor_wait_for_one,
    password_change_checks_the_current_password_and_counts_failures,
    per_user_session_timeout_is_set_by_an_administrator,
    imported_bcrypt_passwords_are_upgraded_at_sign_in,
    an_expired_session_cannot_be_refreshed_or_used,
    the_address_lockout_counts_ipv6_clients_by_their_64,
);
