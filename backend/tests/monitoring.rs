//! `/monitoring/*` on both engines, against a real backend on a loopback port:
//! health lists the database, the audit spool, every sink (a syslog sink whose
//! receiver is gone shows as failing, by kind) and the upstreams; a real internal
//! failure (the tickets table renamed away) answered twice with a 500 shows up in
//! `/monitoring/errors` as one group for its problem type and route, with the proxy's
//! folded refusals beside it and older events outside the window; requests to a route
//! show up in `/monitoring/performance` and in the duration histogram.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

#[macro_use]
mod support;

use std::time::Duration;

use portcullis_audit::{SinkKind, SinkSettings};
use portcullis_backend::db::format_time;
use portcullis_backend::directory::repo;
use portcullis_backend::model::{NewEmployee, Role};
use portcullis_backend::{AppState, IdentityKey};
use portcullis_contract::identity::{IDENTITY_HEADER, Identity, SIGNATURE_HEADER};
use portcullis_testkit::assert_eventually;
use portcullis_testkit::pg::TestDatabase;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::Engine;

struct App {
    base: String,
    key: IdentityKey,
    client: reqwest::Client,
    state: AppState,
    registry: prometheus::Registry,
    admin: i64,
    dev: i64,
    alice: i64,
    _dir: tempfile::TempDir,
    pg_db: Option<TestDatabase>,
}

impl App {
    /// A backend with an administrator, a developer and an employee; `extra_sinks`
    /// besides the default ones.
    async fn start(engine: Engine, extra_sinks: Vec<SinkSettings>) -> App {
        let dir = tempfile::tempdir().unwrap();
        let (url, pg_db) = support::database(engine, dir.path(), "portcullis_mon").await;
        let mut settings = support::settings(dir.path(), url, Default::default());
        settings.audit.sinks.extend(extra_sinks);
        let registry = prometheus::Registry::new();
        let state = portcullis_backend::open(&settings, None, &registry)
            .await
            .unwrap();
        let key = IdentityKey::load_or_create(&settings.identity_key_file).unwrap();
        let dept = repo::create_department(&state.db, "Facilities")
            .await
            .unwrap()
            .id;
        let mk = |name: &str, roles: Vec<Role>| NewEmployee {
            username: name.to_owned(),
            email: format!("{name}@example.org"),
            display_name: name.to_owned(),
            department_id: Some(dept),
            roles,
        };
        let mut ids = Vec::new();
        for e in [
            mk("ada", vec![Role::Administrator]),
            mk("dev", vec![Role::Developer]),
            mk("alice", vec![Role::Employee]),
        ] {
            let id = repo::create_employee(&state.db, &e, false)
                .await
                .unwrap()
                .id;
            // A session the signed identity names (the backend checks it is live).
            support::live_session(&state, id, &session_of(id)).await;
            ids.push(id);
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
            base,
            key,
            client: reqwest::Client::new(),
            state,
            registry,
            admin: ids[0],
            dev: ids[1],
            alice: ids[2],
            _dir: dir,
            pg_db,
        }
    }

    /// A request signed as the proxy would sign it for employee `as_user`.
    fn req(&self, method: Method, path: &str, as_user: i64) -> reqwest::RequestBuilder {
        let identity = Identity {
            sub: as_user.to_string(),
            session_id: Some(session_of(as_user)),
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

    async fn get_json(&self, path: &str, as_user: i64) -> Value {
        let r = self.req(Method::GET, path, as_user).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        r.json().await.unwrap()
    }

    async fn health(&self) -> (StatusCode, Value) {
        let r = self
            .client
            .get(format!("{}/monitoring/health", self.base))
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap())
    }

    async fn finish(self) {
        let pg_db = self.pg_db.clone();
        drop(self);
        if let Some(db) = pg_db {
            db.drop().await;
        }
    }
}

fn session_of(employee: i64) -> String {
    format!("test-session-{employee}")
}

fn sink<'a>(health: &'a Value, name: &str) -> &'a Value {
    health["audit"]["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no sink {name}: {health}"))
}

async fn health_lists_database_spool_sinks_and_upstreams(engine: Engine) {
    // A syslog receiver that is not there: its sink fails to connect.
    let gone = portcullis_testkit::free_port();
    let app = App::start(
        engine,
        vec![SinkSettings {
            name: "siem".into(),
            kind: SinkKind::Syslog {
                addr: format!("127.0.0.1:{gone}"),
                tls: None,
            },
        }],
    )
    .await;
    // Something to deliver: an audited change.
    let r = app
        .req(Method::POST, "/api/tickets", app.alice)
        .json(&json!({"title": "Printer on fire"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    let mut last: Value;
    assert_eventually!(
        {
            last = app.health().await.1;
            sink(&last, "database")["last_delivery_at"].is_string()
                && sink(&last, "database")["lag_events"] == 0
                && sink(&last, "siem")["status"] == "failing"
        },
        Duration::from_secs(20),
        "the database sink delivers and the syslog sink fails: {last}"
    );
    let (status, h) = app.health().await;
    // The database works: 200, but degraded by the failing sink.
    assert_eq!(status, StatusCode::OK, "{h}");
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["checks"]["database"], "ok");
    assert_eq!(h["checks"]["audit"], "failing");
    assert_eq!(h["database"]["status"], "ok");
    assert_eq!(h["database"]["engine"], engine.tag());
    assert!(h["database"]["latency_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(h["audit"]["emitter"], "backend");
    let spool = &h["audit"]["spool"];
    assert!(spool["events"].as_u64().unwrap() >= 1, "{spool}");
    assert!(spool["bytes"].as_u64().unwrap() > 0, "{spool}");
    assert!(spool["max_bytes"].as_u64().unwrap() >= spool["bytes"].as_u64().unwrap());
    let siem = sink(&h, "siem");
    assert!(siem["lag_events"].as_u64().unwrap() >= 1, "{siem}");
    assert!(siem["delivery_errors"].as_u64().unwrap() >= 1, "{siem}");
    assert_eq!(siem["last_error"]["kind"], "io", "{siem}");
    assert!(siem["last_delivery_at"].is_null(), "{siem}");
    // The message (which names the address) is not on this public page.
    assert!(!h.to_string().contains(&format!(":{gone}")), "{h}");
    // Delivering: an event recorded since the check above may still be on its way
    // ("behind"), but the database sink never failed.
    let database = sink(&h, "database");
    assert!(
        database["status"] == "ok" || database["status"] == "behind",
        "{database}"
    );
    assert_eq!(database["delivery_errors"], 0, "{database}");
    let upstreams = h["upstreams"].as_array().unwrap();
    assert_eq!(upstreams[0], json!({"name": "database", "status": "ok"}));
    assert_eq!(h["proxy"]["upstream_errors"], 0);
    assert_eq!(h["proxy"]["window_minutes"], 15);
    assert_eq!(
        h["policy"]["digest"],
        app.state.authz.current().digest().to_string()
    );
    app.finish().await;
}

/// An audit row as the database sink stores the proxy's events (the proxy's own chain
/// is tested in the audit crate; here only what `/monitoring/errors` reads matters).
async fn insert_proxy_event(state: &AppState, seq: i64, ago_minutes: i64, line: Value) {
    let when = format_time(time::OffsetDateTime::now_utc() - time::Duration::minutes(ago_minutes));
    let mut line = line;
    line["@timestamp"] = json!(when);
    line["portcullis.emitter"] = json!("proxy");
    sqlx::query(
        "insert into audit_events (event_id, emitter, seq, occurred_at, category, action, outcome, \
         level, user_id, session_id, request_id, line, received_at) \
         values ($1, 'proxy', $2, $3, 'api', $4, 'failure', 'warning', null, null, null, $5, $6)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(seq)
    .bind(when.clone())
    .bind(line["event.action"].as_str().unwrap().to_owned())
    .bind(line.to_string())
    .bind(when)
    .execute(state.db.pool())
    .await
    .unwrap();
}

fn group<'a>(errors: &'a Value, problem: &str, route: &str) -> Option<&'a Value> {
    errors["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["problem_type"] == problem && g["route"] == route)
}

async fn errors_are_grouped_by_problem_type_and_route(engine: Engine) {
    let app = App::start(engine, Vec::new()).await;
    // Folded refusals of the proxy (7 repeats in one summary), an upstream failure it
    // answered, and one refusal two hours ago.
    insert_proxy_event(
        &app.state,
        1,
        5,
        json!({"event.action": "policy.deny", "event.outcome": "failure", "portcullis.route": "admin",
               "portcullis.details": {"problem": "urn:portcullis:problem:forbidden", "status": 403,
                                      "aggregate": {"repeats": 7}}}),
    )
    .await;
    insert_proxy_event(
        &app.state,
        2,
        3,
        json!({"event.action": "http.error", "event.outcome": "failure", "portcullis.route": "api",
               "portcullis.details": {"problem": "urn:portcullis:problem:bad-gateway", "status": 502,
                                      "cause": "upstream"}}),
    )
    .await;
    insert_proxy_event(
        &app.state,
        3,
        120,
        json!({"event.action": "policy.deny", "event.outcome": "failure", "portcullis.route": "admin",
               "portcullis.details": {"problem": "urn:portcullis:problem:forbidden", "status": 403}}),
    )
    .await;

    // A real internal failure: the table the ticket list reads is gone.
    sqlx::query("alter table tickets rename to tickets_gone")
        .execute(app.state.db.pool())
        .await
        .unwrap();
    let mut request_ids = Vec::new();
    for _ in 0..2 {
        let r = app
            .req(Method::GET, "/api/tickets", app.admin)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        request_ids.push(r.headers()["x-request-id"].to_str().unwrap().to_owned());
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["type"], "urn:portcullis:problem:internal");
    }

    let mut errors: Value;
    assert_eventually!(
        {
            errors = app.get_json("/monitoring/errors", app.dev).await;
            group(&errors, "urn:portcullis:problem:internal", "/api/tickets")
                .is_some_and(|g| g["count"] == 2)
        },
        Duration::from_secs(20),
        "the two 500s grouped: {errors}"
    );
    let internal = group(&errors, "urn:portcullis:problem:internal", "/api/tickets").unwrap();
    assert_eq!(internal["statuses"], json!([500]));
    assert_eq!(internal["actions"], json!(["http.error"]));
    assert_eq!(internal["emitters"], json!(["backend"]));
    assert_eq!(internal["last_request_id"], request_ids[1].as_str());
    assert!(internal["first_seen"].as_str().unwrap() <= internal["last_seen"].as_str().unwrap());
    // The last hour: the folded refusals count as their 7 repeats and come first; the
    // refusal of two hours ago is outside the window.
    assert_eq!(errors["minutes"], 60);
    assert_eq!(errors["truncated"], false);
    let denied = group(&errors, "urn:portcullis:problem:forbidden", "admin").unwrap();
    assert_eq!(denied["count"], 7, "{errors}");
    assert_eq!(errors["groups"][0], *denied);
    let gateway = group(&errors, "urn:portcullis:problem:bad-gateway", "api").unwrap();
    assert_eq!(gateway["count"], 1);
    assert_eq!(gateway["statuses"], json!([502]));
    // Three hours: the older refusal is in.
    let wider = app
        .get_json("/monitoring/errors?minutes=180", app.admin)
        .await;
    let denied = group(&wider, "urn:portcullis:problem:forbidden", "admin").unwrap();
    assert_eq!(denied["count"], 8, "{wider}");
    // And what the proxy recorded about its upstream shows on the health page.
    let (_, h) = app.health().await;
    assert_eq!(h["proxy"]["upstream_errors"], 1, "{h}");
    assert!(h["proxy"]["last_error_at"].is_string(), "{h}");

    // The window is bounded; only operators may look.
    for (query, status) in [
        ("minutes=0", StatusCode::UNPROCESSABLE_ENTITY),
        ("minutes=10081", StatusCode::UNPROCESSABLE_ENTITY),
        ("minutes=ten", StatusCode::BAD_REQUEST),
        ("limit=5", StatusCode::BAD_REQUEST),
    ] {
        let r = app
            .req(Method::GET, &format!("/monitoring/errors?{query}"), app.dev)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{query}");
    }
    for path in ["/monitoring/errors", "/monitoring/performance"] {
        let r = app.req(Method::GET, path, app.alice).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
        let r = app
            .client
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    app.finish().await;
}

async fn performance_shows_percentiles_per_route(engine: Engine) {
    let app = App::start(engine, Vec::new()).await;
    let r = app
        .req(Method::POST, "/api/tickets", app.alice)
        .json(&json!({"title": "Door sticks"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..25 {
        let r = app
            .req(Method::GET, &format!("/api/tickets/{id}"), app.alice)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let p = app.get_json("/monitoring/performance", app.admin).await;
    assert_eq!(p["ring_requests"], 1024);
    let routes = p["routes"].as_array().unwrap();
    let one = routes
        .iter()
        .find(|r| r["route"] == "/api/tickets/{id}" && r["method"] == "GET")
        .unwrap_or_else(|| panic!("no GET /api/tickets/{{id}}: {p}"));
    assert_eq!(one["window_requests"], 25, "{one}");
    assert_eq!(one["total_requests"], 25, "{one}");
    let f = |k: &str| one[k].as_f64().unwrap();
    assert!(f("p50_ms") > 0.0, "{one}");
    assert!(
        f("p50_ms") <= f("p90_ms") && f("p90_ms") <= f("p95_ms"),
        "{one}"
    );
    assert!(
        f("p95_ms") <= f("p99_ms") && f("p99_ms") <= f("max_ms"),
        "{one}"
    );
    assert!(
        routes
            .iter()
            .any(|r| r["route"] == "/api/tickets" && r["method"] == "POST"),
        "{p}"
    );
    // No raw path became a route.
    assert!(!p.to_string().contains(&id), "{p}");
    // The histogram counts the same requests.
    let families = app.registry.gather();
    let family = families
        .iter()
        .find(|f| f.name() == "portcullis_backend_request_duration_seconds")
        .expect("histogram registered");
    let count: u64 = family
        .get_metric()
        .iter()
        .filter(|m| {
            m.get_label()
                .iter()
                .any(|l| l.name() == "route" && l.value() == "/api/tickets/{id}")
        })
        .map(|m| m.get_histogram().get_sample_count())
        .sum();
    assert_eq!(count, 25);
    app.finish().await;
}

on_both_engines!(
    health_lists_database_spool_sinks_and_upstreams,
    errors_are_grouped_by_problem_type_and_route,
    performance_shows_percentiles_per_route,
);
