//! Loading, reloading, testing and fail-closed evaluation of policy bundles.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::path::Path;
use std::time::Duration;

use portcullis_authz::{Authorizer, BundleError, Decision, EvalError, PolicyBundle};
use serde_json::json;
use tempfile::TempDir;

/// A policy directory holding `files` (name, contents).
fn bundle_dir(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, contents) in files {
        std::fs::write(dir.path().join(name), contents).unwrap();
    }
    dir
}

fn load(files: &[(&str, &str)]) -> (TempDir, PolicyBundle) {
    let dir = bundle_dir(files);
    let bundle = PolicyBundle::load(dir.path()).unwrap_or_else(|err| panic!("{err}"));
    (dir, bundle)
}

const ALLOW_ALL: &str = r#"package app
decision := {"allow": true, "reason": "ok", "rule": "allow_all"}
"#;

const ALLOW_ALL_TEST: &str = r#"package app_test
import data.app
test_allows if app.decision.allow
"#;

fn decide(bundle: &PolicyBundle) -> Decision {
    bundle.decide("data.app.decision", &json!({}))
}

// ---------------------------------------------------------------- load errors

#[test]
fn syntax_error_names_file_and_line() {
    let dir = bundle_dir(&[
        ("good.rego", ALLOW_ALL),
        (
            "broken.rego",
            "package broken\n\nallow if {\n\tinput.x == \n}\n",
        ),
    ]);
    let err = PolicyBundle::load(dir.path()).unwrap_err();
    let BundleError::Policy { path, line, .. } = &err else {
        panic!("expected a policy error, got {err:?}");
    };
    assert_eq!(path, &dir.path().join("broken.rego"));
    assert!(matches!(line, Some(4 | 5)), "line {line:?}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("{}:", dir.path().join("broken.rego").display())),
        "{text}"
    );
    assert!(text.contains("error"), "{text}");
}

#[test]
fn syntax_error_in_test_file_is_reported_at_load() {
    let dir = bundle_dir(&[
        ("app.rego", ALLOW_ALL),
        ("app_test.rego", "package app_test\ntest_x if {\n"),
    ]);
    let err = PolicyBundle::load(dir.path()).unwrap_err();
    let BundleError::Policy { path, line, .. } = &err else {
        panic!("expected a policy error, got {err:?}");
    };
    assert_eq!(path, &dir.path().join("app_test.rego"));
    assert!(line.is_some(), "{err}");
}

#[test]
fn rego_v0_syntax_is_refused() {
    let dir = bundle_dir(&[("old.rego", "package old\nallow { true }\n")]);
    let err = PolicyBundle::load(dir.path()).unwrap_err();
    assert!(
        matches!(err, BundleError::Policy { line: Some(2), .. }),
        "{err}"
    );
}

#[test]
fn compile_error_names_file_and_line() {
    // Parses, but `y` is unsafe (unbound): caught by the analysis at load time.
    let dir = bundle_dir(&[(
        "unsafe.rego",
        "package u\n\nallow if {\n\tinput.x == y\n}\n",
    )]);
    let err = PolicyBundle::load(dir.path()).unwrap_err();
    let BundleError::Policy { path, line, .. } = &err else {
        panic!("expected a policy error, got {err:?}");
    };
    assert_eq!(path, &dir.path().join("unsafe.rego"), "{err}");
    assert_eq!(*line, Some(4), "{err}");
}

#[test]
fn bad_data_yaml_is_refused_with_its_path() {
    let dir = bundle_dir(&[("app.rego", ALLOW_ALL), ("data.yaml", "a: [1, 2\nb: c\n")]);
    let err = PolicyBundle::load(dir.path()).unwrap_err();
    assert!(
        matches!(&err, BundleError::Data { path, .. } if path.ends_with("data.yaml")),
        "{err:?}"
    );
    assert!(err.to_string().contains("line"), "{err}");

    let dir = bundle_dir(&[("app.rego", ALLOW_ALL), ("data.yaml", "- 1\n- 2\n")]);
    assert!(matches!(
        PolicyBundle::load(dir.path()),
        Err(BundleError::Data { .. })
    ));
}

#[test]
fn directory_without_policies_is_refused() {
    let dir = bundle_dir(&[("only_test.rego", ALLOW_ALL_TEST)]);
    assert!(matches!(
        PolicyBundle::load(dir.path()),
        Err(BundleError::NoPolicies { .. })
    ));
    assert!(matches!(
        PolicyBundle::load(&dir.path().join("missing")),
        Err(BundleError::ReadDir { .. })
    ));
}

#[test]
fn hidden_files_other_files_and_subdirectories_are_ignored() {
    let (dir, bundle) = load(&[
        ("app.rego", ALLOW_ALL),
        (".swap.rego", "not rego at all"),
        ("README.md", "# notes"),
    ]);
    std::fs::create_dir(dir.path().join("nested")).unwrap();
    std::fs::write(dir.path().join("nested/x.rego"), "broken").unwrap();
    let reloaded = PolicyBundle::load(dir.path()).unwrap();
    assert_eq!(bundle.digest(), reloaded.digest());
    assert_eq!(bundle.policy_files(), [dir.path().join("app.rego")]);
}

// ---------------------------------------------------------------- data and digest

#[test]
fn data_yaml_becomes_data() {
    let (_dir, bundle) = load(&[
        (
            "app.rego",
            "package app\ndecision := {\"allow\": input.role in data.config.admins, \"reason\": \"r\", \"rule\": \"x\"}\n",
        ),
        ("data.yaml", "config:\n  admins: [root]\n"),
    ]);
    assert!(
        bundle
            .decide("data.app.decision", &json!({"role": "root"}))
            .allow
    );
    assert!(
        !bundle
            .decide("data.app.decision", &json!({"role": "bob"}))
            .allow
    );
}

#[test]
fn route_lists_are_indexed_under_data_derived() {
    let (_dir, bundle) = load(&[
        ("app.rego", ALLOW_ALL),
        (
            "data.yaml",
            "config:\n  http:\n    routes:\n      - {id: a, path: [api, x, \"*\"]}\n      - {id: b, path: [api, \"**\"]}\n      - {id: root, path: []}\n",
        ),
    ]);
    let index = bundle
        .eval_value("data.derived.http.routes", &json!({}))
        .unwrap();
    assert_eq!(index["api"]["by_length"][3][0]["id"], "a");
    assert_eq!(index["api"]["open"][0]["id"], "b");
    assert_eq!(index[""]["by_length"][0][0]["id"], "root");
    // data.yaml itself is served as written.
    let routes = bundle
        .eval_value("data.config.http.routes", &json!({}))
        .unwrap();
    assert_eq!(routes.as_array().map(Vec::len), Some(3));
}

#[test]
fn a_route_the_index_cannot_place_refuses_the_bundle() {
    for (yaml, expected) in [
        (
            "config:\n  http:\n    routes:\n      - {id: ok, path: [a]}\n      - {id: wild, path: [\"*\", b]}\n",
            "config.http.routes[1] (id wild)",
        ),
        (
            "config:\n  http:\n    public_routes:\n      - {id: mid, path: [a, \"**\", b]}\n",
            "config.http.public_routes[0] (id mid)",
        ),
        ("derived:\n  http: {}\n", "reserved"),
    ] {
        let dir = bundle_dir(&[("app.rego", ALLOW_ALL), ("data.yaml", yaml)]);
        let err = PolicyBundle::load(dir.path()).unwrap_err();
        assert!(
            matches!(&err, BundleError::Data { path, .. } if path.ends_with("data.yaml")),
            "{err:?}"
        );
        assert!(err.to_string().contains(expected), "{expected}: {err}");
    }
}

#[test]
fn digest_is_content_addressed() {
    let files = [("app.rego", ALLOW_ALL), ("data.yaml", "config: {a: 1}\n")];
    let (_a, first) = load(&files);
    let (_b, second) = load(&files);
    assert_eq!(
        first.digest(),
        second.digest(),
        "directory path must not matter"
    );
    assert_eq!(first.digest().len(), 64);

    let (_c, changed_data) = load(&[("app.rego", ALLOW_ALL), ("data.yaml", "config: {a: 2}\n")]);
    assert_ne!(first.digest(), changed_data.digest());
    let (_d, with_test) = load(&[
        ("app.rego", ALLOW_ALL),
        ("data.yaml", "config: {a: 1}\n"),
        ("app_test.rego", ALLOW_ALL_TEST),
    ]);
    assert_ne!(first.digest(), with_test.digest());
}

// ---------------------------------------------------------------- fail closed

fn assert_fail_closed(policy: &str, reason: &str) {
    let (_dir, bundle) = load(&[("app.rego", policy)]);
    let decision = decide(&bundle);
    assert!(!decision.allow, "{policy} → {decision:?}");
    assert_eq!(decision.reason, reason, "{policy}");
    assert_eq!(decision.rule, portcullis_authz::FAIL_CLOSED_RULE);
    assert!(!decision.public_reason);
}

#[test]
fn undefined_decision_fails_closed() {
    assert_fail_closed(
        "package app\ndecision := {\"allow\": true, \"reason\": \"r\", \"rule\": \"x\"} if input.never\n",
        "undefined",
    );
}

#[test]
fn non_object_decision_fails_closed() {
    assert_fail_closed("package app\ndecision := true\n", "malformed_decision");
    assert_fail_closed("package app\ndecision := [true]\n", "malformed_decision");
}

#[test]
fn malformed_decision_objects_fail_closed() {
    for body in [
        r#"{"allow": "true", "reason": "r", "rule": "x"}"#,
        r#"{"allow": 1, "reason": "r", "rule": "x"}"#,
        r#"{"reason": "r", "rule": "x"}"#,
        r#"{"allow": true, "rule": "x"}"#,
        r#"{"allow": true, "reason": "r"}"#,
        r#"{"allow": true, "reason": "r", "rule": "x", "public_reason": "yes"}"#,
        r#"{"allow": true, "reason": "r", "rule": "x", "obligations": {"headers": {"x": 1}}}"#,
        r#"{"allow": true, "reason": "r", "rule": "x", "obligations": {"rate_limit": "a"}}"#,
        r#"{"allow": true, "reason": "r", "rule": "x", "obligations": "none"}"#,
    ] {
        assert_fail_closed(
            &format!("package app\ndecision := {body}\n"),
            "malformed_decision",
        );
    }
}

#[test]
fn evaluation_error_fails_closed() {
    // Conflicting values of a complete rule are an evaluation error.
    assert_fail_closed(
        "package app\ndecision := {\"allow\": true, \"reason\": \"a\", \"rule\": \"a\"}\ndecision := {\"allow\": false, \"reason\": \"b\", \"rule\": \"b\"}\n",
        "policy_error",
    );
    // A query that is not a rule.
    let (_dir, bundle) = load(&[("app.rego", ALLOW_ALL)]);
    let decision = bundle.decide("data.app.nope", &json!({}));
    assert!(!decision.allow);
    assert_eq!(decision.reason, "policy_error");
}

#[test]
fn time_limit_is_a_deny() {
    let policy = r#"package app
decision := {"allow": n > 0, "reason": "r", "rule": "slow"} if {
	n := count([1 | some i in numbers.range(1, 3000); some j in numbers.range(1, 3000)])
}
"#;
    let (_dir, bundle) = load(&[("app.rego", policy)]);
    let bundle = bundle.with_eval_time_limit(Duration::from_millis(5));
    assert_eq!(bundle.eval_time_limit(), Duration::from_millis(5));
    let decision = bundle.decide("data.app.decision", &json!({}));
    assert!(!decision.allow);
    assert_eq!(decision.reason, "timeout");
    assert_eq!(
        bundle.eval_value("data.app.decision", &json!({})),
        Err(EvalError::TimeLimitExceeded)
    );
}

#[test]
fn well_formed_decision_carries_obligations() {
    let (_dir, bundle) = load(&[(
        "app.rego",
        r#"package app
decision := {"allow": true, "reason": "ok", "rule": "r1", "public_reason": true,
	"obligations": {"headers": {"cache-control": "no-store"}, "rate_limit_class": "auth"}}
"#,
    )]);
    let decision = decide(&bundle);
    assert!(decision.allow);
    assert_eq!(decision.rule, "r1");
    assert!(decision.public_reason);
    assert_eq!(
        decision
            .obligations
            .headers
            .get("cache-control")
            .map(String::as_str),
        Some("no-store")
    );
    assert_eq!(
        decision.obligations.rate_limit_class.as_deref(),
        Some("auth")
    );
}

// ---------------------------------------------------------------- eval_value

#[test]
fn eval_value_returns_single_values_and_result_sets() {
    let (_dir, bundle) = load(&[("app.rego", "package app\nx := input.a + 1\n")]);
    assert_eq!(
        bundle.eval_value("data.app.x", &json!({"a": 1})),
        Ok(json!(2))
    );
    assert_eq!(bundle.eval_value("1 + 1", &json!({})), Ok(json!(2)));
    assert_eq!(
        bundle.eval_value("data.app.x", &json!({})),
        Err(EvalError::Undefined)
    );
    let set = bundle.eval_value("some v in [1, 2]", &json!({})).unwrap();
    assert_eq!(set["result"].as_array().map(Vec::len), Some(2), "{set}");
    assert!(matches!(
        bundle.eval_value("data.app.x +", &json!({})),
        Err(EvalError::Evaluation(_))
    ));
}

#[test]
fn test_files_are_not_served() {
    let (_dir, bundle) = load(&[("app.rego", ALLOW_ALL), ("app_test.rego", ALLOW_ALL_TEST)]);
    assert!(
        bundle
            .eval_value("data.app_test.test_allows", &json!({}))
            .is_err()
    );
    assert!(bundle.decide("data.app.decision", &json!({})).allow);
}

// ---------------------------------------------------------------- test runner

#[test]
fn runner_reports_pass_false_undefined_and_error() {
    let tests = r#"package app_test
import data.app
test_passes if app.decision.allow
test_false := false
test_undefined if input.missing
test_error if {
	x := {"a": 1}
	1 / 0 == x.a
}
not_a_test if false
"#;
    let (_dir, bundle) = load(&[("app.rego", ALLOW_ALL), ("app_test.rego", tests)]);
    let report = bundle.run_tests(false);
    let outcome: Vec<(&str, bool)> = report
        .results
        .iter()
        .map(|r| (r.name.as_str(), r.passed))
        .collect();
    assert_eq!(
        outcome,
        [
            ("test_passes", true),
            ("test_false", false),
            ("test_undefined", false),
            ("test_error", false),
        ]
    );
    assert!(report.results.iter().all(|r| r.package == "app_test"));
    assert!(report.results[0].error.is_none());
    assert!(report.results.iter().skip(1).all(|r| r.error.is_some()));
    assert_eq!((report.passed(), report.failed()), (1, 3));
    assert!(!report.all_passed());
    assert!(report.coverage.is_none());

    let text = report.render_text();
    assert!(text.contains("PASS app_test.test_passes\n"), "{text}");
    assert!(text.contains("FAIL app_test.test_false: "), "{text}");
    assert!(text.contains("1 passed, 3 failed\n"), "{text}");

    let json = report.to_json();
    assert_eq!(json["passed"], 1);
    assert_eq!(json["failed"], 3);
    assert_eq!(json["results"][0]["name"], "test_passes");
    assert!(json["coverage"].is_null());
}

#[test]
fn runner_measures_coverage_of_policy_files_only() {
    // regorus evaluates every rule of a package it touches, so the uncovered line is in a
    // function that no test calls.
    let policy = "package app\n\nallow if {\n\tinput.a == 1\n}\n\nis_two(x) if {\n\tx == 2\n}\n";
    let tests =
        "package app_test\nimport data.app\ntest_allow if app.allow with input as {\"a\": 1}\n";
    let untouched = "package other\n\nx if {\n\tinput.c == 3\n}\n";
    let (dir, bundle) = load(&[
        ("app.rego", policy),
        ("app_test.rego", tests),
        ("other.rego", untouched),
    ]);
    let report = bundle.run_tests(true);
    assert!(report.all_passed(), "{}", report.render_text());
    let coverage = report.coverage.as_ref().unwrap();
    let paths: Vec<&str> = coverage.files.iter().map(|f| f.path.as_str()).collect();
    let app = dir.path().join("app.rego").display().to_string();
    let other = dir.path().join("other.rego").display().to_string();
    assert_eq!(paths, [app.as_str(), other.as_str()]);

    let app_coverage = &coverage.files[0];
    assert_eq!(app_coverage.covered, [4]);
    assert_eq!(app_coverage.not_covered, [8]);
    assert!((app_coverage.percent - 50.0).abs() < 1e-9);
    // Never evaluated by any test: all of its lines are uncovered.
    assert_eq!(coverage.files[1].covered, Vec::<u32>::new());
    assert_eq!(coverage.files[1].not_covered, [4]);
    assert_eq!((coverage.covered_lines, coverage.total_lines), (1, 3));

    let text = report.render_text();
    assert!(
        text.contains(&format!("{app} 50.0% (not covered: 8)\n")),
        "{text}"
    );
    assert!(text.contains("total 33.3% (1 of 3 lines)"), "{text}");
    assert_eq!(
        report.to_json()["coverage"]["files"][0]["not_covered"],
        json!([8])
    );
}

// ---------------------------------------------------------------- reload

#[test]
fn reload_refuses_bundle_with_failing_tests_and_keeps_serving() {
    let good = bundle_dir(&[("app.rego", ALLOW_ALL), ("app_test.rego", ALLOW_ALL_TEST)]);
    let authorizer = Authorizer::new(PolicyBundle::load(good.path()).unwrap());
    let old_digest = authorizer.current().digest().to_owned();

    let deny_all =
        "package app\ndecision := {\"allow\": false, \"reason\": \"no\", \"rule\": \"deny_all\"}\n";
    let bad = bundle_dir(&[("app.rego", deny_all), ("app_test.rego", ALLOW_ALL_TEST)]);
    let err = authorizer.try_reload(bad.path()).unwrap_err();
    let BundleError::TestsFailed {
        failed,
        total,
        first_failures,
    } = &err
    else {
        panic!("expected TestsFailed, got {err:?}");
    };
    assert_eq!((*failed, *total), (1, 1));
    assert_eq!(first_failures, &["app_test.test_allows".to_owned()]);
    assert_eq!(authorizer.current().digest(), old_digest);
    assert!(authorizer.decide("data.app.decision", &json!({})).allow);

    let broken = bundle_dir(&[("app.rego", "package app\ndecision := {\n")]);
    assert!(matches!(
        authorizer.try_reload(broken.path()),
        Err(BundleError::Policy { .. })
    ));
    assert_eq!(authorizer.current().digest(), old_digest);

    let deny_test = "package app_test\nimport data.app\ntest_denies if not app.decision.allow\n";
    let next = bundle_dir(&[("app.rego", deny_all), ("app_test.rego", deny_test)]);
    let new_digest = authorizer.try_reload(next.path()).unwrap();
    assert_ne!(new_digest, old_digest);
    assert_eq!(authorizer.current().digest(), new_digest);
    assert_eq!(authorizer.current().dir(), next.path());
    assert!(!authorizer.decide("data.app.decision", &json!({})).allow);

    // Same content again: accepted without a swap.
    let same = authorizer.current();
    assert_eq!(authorizer.try_reload(next.path()).unwrap(), new_digest);
    assert!(std::sync::Arc::ptr_eq(&same, &authorizer.current()));
}

#[test]
fn reload_keeps_the_time_limit() {
    let first = bundle_dir(&[("app.rego", ALLOW_ALL)]);
    let bundle = PolicyBundle::load(first.path())
        .unwrap()
        .with_eval_time_limit(Duration::from_millis(7));
    let authorizer = Authorizer::new(bundle);
    let second = bundle_dir(&[(
        "app.rego",
        "package app\ndecision := {\"allow\": true, \"reason\": \"ok\", \"rule\": \"v2\"}\n",
    )]);
    authorizer.try_reload(second.path()).unwrap();
    assert_eq!(
        authorizer.current().eval_time_limit(),
        Duration::from_millis(7)
    );
}

#[test]
fn concurrent_decisions_during_reloads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Authorizer>();
    assert_send_sync::<PolicyBundle>();

    let v1 = bundle_dir(&[("app.rego", ALLOW_ALL)]);
    let v2 = bundle_dir(&[(
        "app.rego",
        "package app\ndecision := {\"allow\": true, \"reason\": \"ok\", \"rule\": \"v2\"}\n",
    )]);
    let authorizer = Authorizer::new(PolicyBundle::load(v1.path()).unwrap());
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..50 {
                    let decision = authorizer.decide("data.app.decision", &json!({}));
                    assert!(decision.allow);
                    assert!(decision.rule == "allow_all" || decision.rule == "v2");
                }
            });
        }
        scope.spawn(|| {
            for i in 0..10 {
                let dir: &Path = if i % 2 == 0 { v2.path() } else { v1.path() };
                authorizer.try_reload(dir).unwrap();
            }
        });
    });
}
