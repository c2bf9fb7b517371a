//! Policy evaluation cost per request: the shipped bundle, the route decision
//! (allow, public route, deny) and the ticket object decision: as served (a cache hit
//! after the first call), on the compiled (bytecode VM) path without the cache (a miss),
//! and on the interpreter, side by side in one run.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "benchmark setup; the bundle to measure comes from the environment"
)]

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis_authz::PolicyBundle;
use serde_json::json;

fn http_input(method: &str, path: &str, roles: &[&str], authenticated: bool) -> serde_json::Value {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let subject = if authenticated {
        json!({"authenticated": true, "sub": "42", "roles": roles, "auth_method": "password", "session_id": "s", "mfa": false})
    } else {
        json!({"authenticated": false})
    };
    json!({
        "request": {"method": method, "path": path, "segments": segments, "query": {}, "headers": {"user-agent": "bench"}},
        "subject": subject,
        "source": {"ip": "192.0.2.1"},
        "route": segments.first().copied().unwrap_or("app"),
        "time": {"unix_seconds": 1_790_000_000},
    })
}

fn bench(c: &mut Criterion) {
    // Another bundle can be measured the same way (its decisions must agree on the
    // inputs below): PORTCULLIS_BENCH_POLICIES=dir.
    let dir = std::env::var_os("PORTCULLIS_BENCH_POLICIES").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies"),
        std::path::PathBuf::from,
    );
    let bundle = PolicyBundle::load(&dir).unwrap();
    let allow = http_input("GET", "/api/tickets/TCK-2026-000001", &["employee"], true);
    let public = http_input("POST", "/auth/login", &[], false);
    let deny = http_input("DELETE", "/admin/sessions/abc", &["technician"], true);
    assert!(bundle.decide("data.portcullis.http.decision", &allow).allow);
    assert!(
        bundle
            .decide("data.portcullis.http.decision", &public)
            .allow
    );
    assert!(!bundle.decide("data.portcullis.http.decision", &deny).allow);
    let ticket = json!({
        "subject": {"id": "42", "roles": ["technician"], "department_id": "7"},
        "action": "update",
        "ticket": {"reporter_id": "9", "assignee_id": "42", "department_id": "7", "status": "in_progress"},
    });
    assert!(
        bundle
            .decide("data.portcullis.tickets.decision", &ticket)
            .allow
    );

    let mut g = c.benchmark_group("policy");
    g.bench_function("http_allow_employee_ticket", |b| {
        b.iter(|| bundle.decide("data.portcullis.http.decision", black_box(&allow)))
    });
    g.bench_function("http_public_login", |b| {
        b.iter(|| bundle.decide("data.portcullis.http.decision", black_box(&public)))
    });
    g.bench_function("http_deny_admin_route", |b| {
        b.iter(|| bundle.decide("data.portcullis.http.decision", black_box(&deny)))
    });
    g.bench_function("tickets_assignee_update", |b| {
        b.iter(|| bundle.decide("data.portcullis.tickets.decision", black_box(&ticket)))
    });
    g.bench_function("uncached/http_allow_employee_ticket", |b| {
        b.iter(|| bundle.decide_uncached("data.portcullis.http.decision", black_box(&allow)))
    });
    g.bench_function("uncached/http_deny_admin_route", |b| {
        b.iter(|| bundle.decide_uncached("data.portcullis.http.decision", black_box(&deny)))
    });
    g.bench_function("uncached/tickets_assignee_update", |b| {
        b.iter(|| bundle.decide_uncached("data.portcullis.tickets.decision", black_box(&ticket)))
    });
    g.bench_function("interpreter/http_allow_employee_ticket", |b| {
        b.iter(|| bundle.decide_interpreted("data.portcullis.http.decision", black_box(&allow)))
    });
    g.bench_function("interpreter/http_deny_admin_route", |b| {
        b.iter(|| bundle.decide_interpreted("data.portcullis.http.decision", black_box(&deny)))
    });
    g.bench_function("interpreter/tickets_assignee_update", |b| {
        b.iter(|| bundle.decide_interpreted("data.portcullis.tickets.decision", black_box(&ticket)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
