//! The compiled (bytecode VM) path of `decide`, and its decision cache, against the
//! interpreter, over the shipped bundle's input matrix (the one `scripts/regopy-diff.py`
//! checks against a second Rego engine) plus malformed inputs: every decision must be
//! identical, including the fail-closed ones, whether it was evaluated or answered from
//! the cache. The VM and the cache are faster; this test is what lets them serve.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::path::Path;
use std::time::Duration;

use portcullis_authz::PolicyBundle;
use serde_json::{Value, json};

const POLICIES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies");

const HTTP: &str = "data.portcullis.http.decision";
const TICKETS: &str = "data.portcullis.tickets.decision";
const DIRECTORY: &str = "data.portcullis.directory.decision";

const ROLES: &[&[&str]] = &[
    &[],
    &["employee"],
    &["technician"],
    &["department_head"],
    &["administrator"],
    &["developer"],
    &["employee", "technician"],
    &["auditor"],
];
const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"];
const PATHS: &[&str] = &[
    "/",
    "/api/tickets",
    "/api/tickets/TCK-2026-000001",
    "/api/tickets/TCK-2026-000001/comments",
    "/api/tickets/TCK-2026-000001/transitions",
    "/api/tickets/TCK-2026-000001/assignment",
    "/api/tickets/TCK-2026-000001/approval",
    "/api/tickets/TCK-2026-000001/history",
    "/api/employees",
    "/api/employees/7",
    "/api/departments",
    "/api/departments/3",
    "/api/openapi.json",
    "/admin/audit/logs",
    "/admin/audit/logs/count",
    "/admin/sessions",
    "/admin/users/7/sessions",
    "/monitoring/health",
    "/monitoring/dashboard",
    "/auth/login",
    "/auth/refresh",
    "/auth/logout",
    "/auth/password",
    "/auth/jwks.json",
    "/auth/mfa/totp/enroll",
    "/auth/oidc/login",
    "/auth/oidc/callback",
    "/.portcullis/csp-report",
    "/api",
    "/api/unknown",
    "/API/TICKETS",
    "/api/tickets/../employees",
];

/// The shipped bundle, with an evaluation time limit far above any decision's cost: these
/// tests compare answers, and on a loaded machine the interpreter can otherwise take
/// longer than the production limit and fail closed (the limit has tests of its own).
fn bundle() -> PolicyBundle {
    PolicyBundle::load(Path::new(POLICIES))
        .unwrap_or_else(|e| panic!("{e}"))
        .with_eval_time_limit(std::time::Duration::from_secs(30))
}

fn http_cases() -> Vec<Value> {
    let mut cases = Vec::new();
    for roles in ROLES {
        for method in METHODS {
            for path in PATHS {
                for (authenticated, mfa) in [(false, false), (true, false), (true, true)] {
                    if !authenticated && !roles.is_empty() {
                        continue;
                    }
                    let subject = if authenticated {
                        json!({"authenticated": true, "sub": "7", "username": "alice",
                               "roles": roles, "auth_method": "password", "session_id": "s",
                               "mfa": mfa, "issuer": "portcullis"})
                    } else {
                        json!({"authenticated": false})
                    };
                    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
                    let route = segments.first().copied().unwrap_or("app");
                    cases.push(json!({
                        "request": {"method": method, "path": path, "segments": segments,
                                    "query": {"page": "2"}, "headers": {"user-agent": "test"}},
                        "subject": subject,
                        "source": {"ip": "192.0.2.1"},
                        "route": route,
                        "time": {"unix_seconds": 1_790_000_000},
                    }));
                }
            }
        }
    }
    cases
}

fn ticket_cases() -> Vec<Value> {
    let actions = [
        "read",
        "update",
        "comment",
        "transition",
        "assign",
        "approve",
        "create",
        "delete",
        "history",
    ];
    let owners = [
        ("7", None, "1"),
        ("8", Some("7"), "1"),
        ("8", None, "1"),
        ("8", Some("9"), "2"),
        ("7", Some("7"), "2"),
    ];
    let transitions = [
        None,
        Some(("resolved", "closed")),
        Some(("open", "in_progress")),
        Some(("closed", "reopened")),
        Some(("open", "approved")),
    ];
    let mut cases = Vec::new();
    for roles in ROLES {
        for action in actions {
            for (reporter, assignee, dept) in owners {
                for status in ["open", "resolved", "closed"] {
                    for tr in transitions {
                        let mut case = json!({
                            "subject": {"id": "7", "roles": roles, "department_id": "1"},
                            "action": action,
                            "ticket": {"reporter_id": reporter, "assignee_id": assignee,
                                       "department_id": dept, "status": status},
                        });
                        if let Some((from, to)) = tr {
                            case["transition"] = json!({"from": from, "to": to});
                        }
                        cases.push(case);
                    }
                }
            }
        }
    }
    cases
}

fn directory_cases() -> Vec<Value> {
    let mut cases = Vec::new();
    for roles in ROLES {
        for action in ["read", "create", "update", "delete", "purge"] {
            for resource in ["employee", "department", "ticket", "session"] {
                cases.push(json!({
                    "subject": {"id": "7", "roles": roles, "department_id": "1"},
                    "action": action,
                    "resource": resource,
                }));
            }
        }
    }
    cases
}

/// Inputs a buggy or hostile caller could produce: each must fail closed the same way.
fn malformed_cases() -> Vec<Value> {
    vec![
        json!({}),
        json!(null),
        json!([]),
        json!("GET /"),
        json!({"request": null, "subject": null}),
        json!({"request": {"method": 7, "path": ["x"], "segments": "api"}, "subject": {"authenticated": "yes"}}),
        json!({"request": {"method": "GET", "path": "/api/tickets", "segments": ["api", "tickets"]},
               "subject": {"authenticated": true, "roles": "administrator"}}),
        json!({"request": {"method": "GET", "path": "/api/tickets", "segments": ["api", "tickets"]},
               "subject": {"authenticated": true, "roles": [1, null, {"a": 1}]}}),
        json!({"subject": {"id": 7, "roles": ["technician"]}, "action": "update",
               "ticket": {"reporter_id": 7, "assignee_id": [], "status": 1}}),
        json!({"subject": {"roles": ["administrator"]}, "action": ["delete"], "resource": {"x": 1}}),
    ]
}

fn assert_same(bundle: &PolicyBundle, rule: &str, cases: &[Value]) -> usize {
    assert!(
        bundle.is_compiled(rule),
        "{rule} is not compiled to bytecode"
    );
    let mut allowed = 0;
    for input in cases {
        let fast = bundle.decide(rule, input);
        let reference = bundle.decide_interpreted(rule, input);
        assert_eq!(fast, reference, "{rule} differs for input {input}");
        assert_eq!(
            bundle.decide_uncached(rule, input),
            reference,
            "{rule} for {input}"
        );
        allowed += usize::from(fast.allow);
    }
    // Every input again: now answered from the cache where the rule is cached.
    for input in cases {
        assert_eq!(
            bundle.decide(rule, input),
            bundle.decide_interpreted(rule, input),
            "{rule} from the cache differs for input {input}"
        );
    }
    allowed
}

#[test]
fn the_compiled_decisions_match_the_interpreter_on_every_input() {
    let bundle = bundle();
    let http = http_cases();
    let allowed = assert_same(&bundle, HTTP, &http);
    // The matrix exercises both outcomes, or agreement would prove little.
    assert!(
        allowed > 100 && allowed < http.len() - 100,
        "{allowed} of {}",
        http.len()
    );
    let tickets = ticket_cases();
    let allowed = assert_same(&bundle, TICKETS, &tickets);
    assert!(
        allowed > 50 && allowed < tickets.len() - 50,
        "{allowed} of {}",
        tickets.len()
    );
    let directory = directory_cases();
    let allowed = assert_same(&bundle, DIRECTORY, &directory);
    assert!(allowed > 5 && allowed < directory.len() - 5, "{allowed}");
    for rule in [HTTP, TICKETS, DIRECTORY] {
        assert_same(&bundle, rule, &malformed_cases());
    }
}

#[test]
fn the_compiled_decisions_match_from_many_threads() {
    // Each thread keeps its own VM; the answers must not depend on which one ran.
    let bundle = std::sync::Arc::new(bundle());
    let cases = std::sync::Arc::new(http_cases());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (bundle, cases) = (bundle.clone(), cases.clone());
            std::thread::spawn(move || {
                for input in cases.iter().skip(t).step_by(7) {
                    assert_eq!(
                        bundle.decide(HTTP, input),
                        bundle.decide_interpreted(HTTP, input)
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn a_compiled_rule_that_runs_too_long_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("slow.rego"),
        "package slow\n\ndecision := {\"allow\": true, \"reason\": \"ok\", \"rule\": \"slow\"} if {\n  count([x | some x in numbers.range(1, 3000000); x % 7 == 0]) > 0\n}\n",
    )
    .unwrap();
    let bundle = PolicyBundle::load(dir.path())
        .unwrap()
        .with_eval_time_limit(Duration::from_millis(5));
    assert!(bundle.is_compiled("data.slow.decision"));
    let d = bundle.decide("data.slow.decision", &json!({}));
    assert!(!d.allow);
    assert_eq!(d.reason, "timeout");
    assert_eq!(d.rule, portcullis_authz::FAIL_CLOSED_RULE);
}

#[test]
fn a_rule_the_compiler_refuses_still_serves_on_the_interpreter() {
    let dir = tempfile::tempdir().unwrap();
    // `with` is not supported by the bytecode compiler.
    std::fs::write(
        dir.path().join("withs.rego"),
        "package withs\n\ninner := {\"allow\": input.n > 2, \"reason\": \"counted\", \"rule\": \"withs\"}\n\ndecision := d if {\n  d := inner with input.n as count(input.items)\n}\n",
    )
    .unwrap();
    let bundle = PolicyBundle::load(dir.path()).unwrap();
    assert!(!bundle.is_compiled("data.withs.decision"));
    let decide = |items| bundle.decide("data.withs.decision", &json!({ "items": items }));
    assert!(decide(json!([1, 2, 3])).allow);
    assert!(!decide(json!([1])).allow);
}

/// regorus 0.14.1's VM ends an `else` chain undefined when an earlier branch iterates
/// and finds nothing. Such rules are found at load and served by the interpreter.
#[test]
fn an_else_chain_that_iterates_is_left_to_the_interpreter() {
    let dir = tempfile::tempdir().unwrap();
    let variants = [
        (
            true,
            "r := \"one\" if { some y in input.l; y == 9 } else := \"three\"",
        ),
        (
            true,
            "r := \"one\" if { input.l[_] == 9 } else := \"three\"",
        ),
        (
            true,
            "r := \"one\" if { false } else := \"two\" if { some y in input.l; y == 9 } else := \"three\"",
        ),
        (
            false,
            "r := \"one\" if { every y in input.l { y == 9 } } else := \"three\"",
        ),
        (
            false,
            "r := \"one\" if { count([y | some y in input.l; y == 9]) > 0 } else := \"three\"",
        ),
    ];
    for (i, (_, rule)) in variants.iter().enumerate() {
        std::fs::write(
            dir.path().join(format!("d{i}.rego")),
            format!("package d{i}\n{rule}\ndecision := {{\"allow\": false, \"reason\": \"x\", \"rule\": r}}\n"),
        )
        .unwrap();
    }
    let bundle = PolicyBundle::load(dir.path()).unwrap();
    let input = json!({"l": [1, 2]});
    for (i, (iterates, rule)) in variants.iter().enumerate() {
        let query = format!("data.d{i}.decision");
        assert_eq!(bundle.is_compiled(&query), !iterates, "{rule}");
        let d = bundle.decide(&query, &input);
        assert_eq!(d, bundle.decide_interpreted(&query, &input), "{rule}");
        assert_eq!(d.rule, "three", "{rule}");
    }
}

/// A cached decision is keyed by every input field the policy reads: inputs that differ
/// only there get their own decisions, and a policy calling a clock is never cached.
#[test]
fn the_cache_keys_on_what_the_policy_reads_and_skips_non_deterministic_rules() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("keyed.rego"),
        "package keyed\n\nimport data.keyed_helpers\n\ndecision := {\"allow\": keyed_helpers.ok(input.who), \"reason\": \"r\", \"rule\": \"keyed\"}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("helpers.rego"),
        "package keyed_helpers\n\nok(who) if { who == \"alice\"; input.flags.on == true }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("clock.rego"),
        "package clock\n\ndecision := {\"allow\": time.now_ns() % 2 == 0, \"reason\": \"r\", \"rule\": \"clock\"}\n",
    )
    .unwrap();
    let bundle = PolicyBundle::load(dir.path()).unwrap();
    let q = "data.keyed.decision";
    // The field read only in the imported helper package is part of the key.
    let on = json!({"who": "alice", "flags": {"on": true}, "noise": 1});
    let off = json!({"who": "alice", "flags": {"on": false}, "noise": 1});
    for _ in 0..3 {
        assert!(bundle.decide(q, &on).allow);
        assert!(!bundle.decide(q, &off).allow);
        assert!(
            !bundle
                .decide(q, &json!({"who": "bob", "flags": {"on": true}}))
                .allow
        );
    }
    // A field the policy does not read does not split the cache, and changes nothing.
    assert!(
        bundle
            .decide(
                q,
                &json!({"who": "alice", "flags": {"on": true}, "noise": 2})
            )
            .allow
    );
    // The clock is read on every evaluation: both outcomes occur.
    let outcomes: std::collections::BTreeSet<bool> = (0..200)
        .map(|_| bundle.decide("data.clock.decision", &json!({})).allow)
        .collect();
    assert_eq!(outcomes.len(), 2, "a non-deterministic decision was cached");
}
