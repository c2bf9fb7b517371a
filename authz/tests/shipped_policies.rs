//! The policies in `/policies`: they load, their Rego tests pass with ≥ 90 % coverage, and a
//! few cells of the matrices hold when evaluated from Rust.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::path::Path;
use std::sync::OnceLock;

use portcullis_authz::{Decision, PolicyBundle};
use serde_json::{Value, json};

const POLICIES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies");

fn bundle() -> &'static PolicyBundle {
    static BUNDLE: OnceLock<PolicyBundle> = OnceLock::new();
    BUNDLE.get_or_init(|| PolicyBundle::load(Path::new(POLICIES)).unwrap_or_else(|e| panic!("{e}")))
}

#[test]
fn rego_tests_pass_with_coverage_of_at_least_90_percent() {
    let report = bundle().run_tests(true);
    let text = report.render_text();
    // Visible with `--nocapture`.
    println!("{text}");
    assert!(report.all_passed(), "{text}");
    assert!(report.results.len() >= 50, "{text}");
    let coverage = report.coverage.as_ref().unwrap();
    let names: Vec<String> = coverage
        .files
        .iter()
        .map(|f| {
            Path::new(&f.path)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        names,
        [
            "attachments.rego",
            "directory.rego",
            "http.rego",
            "tickets.rego"
        ],
        "{text}"
    );
    assert!(coverage.percent >= 90.0, "{text}");
    for file in &coverage.files {
        assert!(file.percent >= 90.0, "{text}");
    }
}

fn http(method: &str, segments: &[&str], subject: Value) -> Decision {
    let input = json!({
        "request": {
            "method": method,
            "path": format!("/{}", segments.join("/")),
            "segments": segments,
            "query": {},
            "headers": {"user-agent": "test"},
        },
        "subject": subject,
        "source": {"ip": "127.0.0.1"},
        "route": "api",
        "time": {"unix_seconds": 1_790_000_000},
    });
    bundle().decide("data.portcullis.http.decision", &input)
}

fn user(roles: &[&str]) -> Value {
    json!({
        "authenticated": true, "sub": "42", "username": "alice", "roles": roles,
        "auth_method": "password", "session_id": "s", "mfa": true,
    })
}

#[test]
fn http_route_cells() {
    let anonymous = json!({"authenticated": false});

    let login = http("POST", &["auth", "login"], anonymous.clone());
    assert!(login.allow);
    assert_eq!(login.rule, "auth_login");
    assert_eq!(login.obligations.rate_limit_class.as_deref(), Some("auth"));

    let tickets = http("GET", &["api", "tickets"], anonymous);
    assert!(!tickets.allow);
    assert_eq!(tickets.reason, "unauthenticated");
    assert!(tickets.public_reason);

    assert!(
        http(
            "POST",
            &["api", "tickets", "T-1", "transitions"],
            user(&["employee"])
        )
        .allow
    );
    let approval = http(
        "POST",
        &["api", "tickets", "T-1", "approval"],
        user(&["technician"]),
    );
    assert!(!approval.allow);
    assert_eq!(approval.reason, "forbidden");

    assert!(http("GET", &["monitoring", "errors"], user(&["developer"])).allow);
    assert!(!http("GET", &["admin", "audit", "logs"], user(&["developer"])).allow);
    assert!(!http("GET", &["api", "tickets"], user(&["guest"])).allow);
}

fn ticket(subject: Value, action: &str, ticket: Value) -> Decision {
    bundle().decide(
        "data.portcullis.tickets.decision",
        &json!({"subject": subject, "action": action, "ticket": ticket}),
    )
}

#[test]
fn ticket_object_cells() {
    let technician = json!({"id": "42", "roles": ["technician"], "department_id": "7"});
    let someone_elses =
        json!({"reporter_id": "13", "assignee_id": "9", "department_id": "7", "status": "open"});
    let read = ticket(technician.clone(), "read", someone_elses.clone());
    assert!(!read.allow);
    assert_eq!(read.reason, "forbidden");

    let mine =
        json!({"reporter_id": "13", "assignee_id": "42", "department_id": "8", "status": "open"});
    assert!(ticket(technician, "update", mine).allow);

    let head = json!({"id": "5", "roles": ["department_head"], "department_id": "7"});
    let approve = ticket(head.clone(), "approve", someone_elses);
    assert!(approve.allow);
    assert_eq!(approve.rule, "department_head");
    let other_department =
        json!({"reporter_id": "13", "assignee_id": null, "department_id": "8", "status": "open"});
    assert!(!ticket(head, "approve", other_department).allow);

    let employee = json!({"id": "42", "roles": ["employee"], "department_id": "7"});
    let own = json!({"reporter_id": "42", "assignee_id": null, "department_id": "7", "status": "resolved"});
    let close = bundle().decide(
        "data.portcullis.tickets.decision",
        &json!({"subject": employee, "action": "transition", "ticket": own, "transition": {"from": "resolved", "to": "closed"}}),
    );
    assert!(close.allow);
    let start = bundle().decide(
        "data.portcullis.tickets.decision",
        &json!({"subject": employee, "action": "transition", "ticket": own, "transition": {"from": "open", "to": "in_progress"}}),
    );
    assert!(!start.allow);
}

#[test]
fn ticket_list_scope() {
    let scope = |subject: Value| {
        bundle()
            .eval_value(
                "data.portcullis.tickets.list_scope",
                &json!({"subject": subject}),
            )
            .unwrap()
    };
    assert_eq!(
        scope(json!({"id": "1", "roles": ["administrator"]})),
        json!({"all": true})
    );
    assert_eq!(
        scope(json!({"id": "42", "roles": ["technician"], "department_id": "7"})),
        json!({"all": false, "reporter_id": "42", "assignee_id": "42", "department_id": null})
    );
    assert_eq!(
        scope(json!({"id": "5", "roles": ["department_head"], "department_id": "7"})),
        json!({"all": false, "reporter_id": "5", "assignee_id": null, "department_id": "7"})
    );
}

#[test]
fn directory_cells() {
    let decide = |roles: &[&str], action: &str, resource: &str| {
        bundle().decide(
            "data.portcullis.directory.decision",
            &json!({"subject": {"id": "1", "roles": roles}, "action": action, "resource": resource}),
        )
    };
    assert!(decide(&["department_head"], "read", "employee").allow);
    assert!(!decide(&["department_head"], "delete", "employee").allow);
    assert!(decide(&["administrator"], "delete", "department").allow);
    assert!(!decide(&["technician"], "read", "department").allow);
}
