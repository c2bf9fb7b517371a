//! The spool and delivery: round trip, full-spool policies, restart recovery, segment
//! deletion, redaction, metrics.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod support;

use std::time::{Duration, Instant};

use portcullis_audit::{
    AuditError, AuditEvent, AuditLog, Category, FullPolicy, Level, Outcome, REDACTED, SpoolError,
    TrustedKeys, verify_file,
};
use serde_json::json;
use support::{Memory, event, eventually, file_sink, read_records, settings};

fn metric(registry: &prometheus::Registry, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    for family in registry.gather() {
        if family.name() != name {
            continue;
        }
        for m in family.get_metric() {
            let matches = labels.iter().all(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            });
            if matches {
                return Some(if m.get_counter().is_some() {
                    m.get_counter().value()
                } else {
                    m.get_gauge().value()
                });
            }
        }
    }
    None
}

#[tokio::test]
async fn events_reach_the_file_sink_with_ecs_fields_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out/audit.jsonl");
    let mut settings = settings(dir.path(), "proxy");
    settings.sinks.push(file_sink("file", &out));
    let registry = prometheus::Registry::new();
    let log = AuditLog::start(settings.clone(), &registry).unwrap();

    let full = AuditEvent::new(Category::Auth, "login", Outcome::Failure)
        .level(Level::Warning)
        .user_id("alice")
        .roles(["employee", "technician"])
        .session_id("s-1")
        .auth_method("password+totp")
        .source_ip("2001:db8::7".parse().unwrap())
        .user_agent("curl/8")
        .request_id("req-1")
        .decision_id("dec-1")
        .policy_digest("sha256:abc")
        .route("/auth/login")
        .detail("reason", "bad_totp");
    let id = full.id();
    assert_eq!(log.emit(full).await.unwrap(), 1);
    for n in 1..50 {
        log.emit(event(n)).await.unwrap();
    }
    let public_key = TrustedKeys::from(log.public_key().cloned().unwrap());
    log.clone().shutdown(Duration::from_secs(5)).await;

    let text = std::fs::read_to_string(&out).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let expected = json!({
        "ecs.version": "8.11.0",
        "event.id": id.to_string(),
        "event.category": "auth",
        "event.action": "login",
        "event.outcome": "failure",
        "log.level": "warning",
        "user.id": "alice",
        "user.roles": ["employee", "technician"],
        "portcullis.session.id": "s-1",
        "portcullis.auth.method": "password+totp",
        "source.ip": "2001:db8::7",
        "user_agent.original": "curl/8",
        "http.request.id": "req-1",
        "portcullis.decision.id": "dec-1",
        "portcullis.policy.digest": "sha256:abc",
        "portcullis.route": "/auth/login",
        "portcullis.details": {"reason": "bad_totp"},
        "portcullis.emitter": "proxy",
        "portcullis.chain.seq": 1,
        "portcullis.chain.prev_hash": portcullis_audit::GENESIS_HASH,
    });
    for (key, value) in expected.as_object().unwrap() {
        assert_eq!(&first[key], value, "{key}");
    }
    assert_eq!(first["portcullis.chain.hash"].as_str().unwrap().len(), 64);
    assert!(first["@timestamp"].as_str().unwrap().ends_with('Z'));

    let records = read_records(&out);
    assert_eq!(records.len(), 51, "50 events and the final checkpoint");
    assert_eq!(
        records.last().unwrap().action,
        portcullis_audit::CHECKPOINT_ACTION
    );
    let report = verify_file(&out, Some(&public_key)).unwrap();
    assert_eq!(report.events, 51);
    assert_eq!(report.chains[0].checkpoints_verified, 1);
    verify_file(&settings.spool.dir, Some(&public_key)).unwrap();

    assert_eq!(
        metric(
            &registry,
            "portcullis_audit_events_total",
            &[("emitter", "proxy"), ("category", "api")]
        ),
        Some(49.0)
    );
    assert_eq!(
        metric(
            &registry,
            "portcullis_audit_sink_lag_events",
            &[("emitter", "proxy"), ("sink", "file")]
        ),
        Some(0.0)
    );
    assert!(metric(&registry, "portcullis_audit_spool_bytes", &[]).unwrap() > 0.0);
    assert_eq!(
        metric(&registry, "portcullis_audit_spool_events", &[]),
        Some(51.0)
    );
    assert!(log.emit(event(99)).await.is_err(), "closed after shutdown");
}

#[tokio::test]
async fn two_emitters_share_a_registry() {
    let dir = tempfile::tempdir().unwrap();
    let registry = prometheus::Registry::new();
    let mut logs = Vec::new();
    for emitter in ["proxy", "backend"] {
        let mut settings = settings(&dir.path().join(emitter), emitter);
        settings.sinks.push(file_sink(
            "file",
            &dir.path().join(format!("{emitter}.jsonl")),
        ));
        logs.push(AuditLog::start(settings, &registry).unwrap());
    }
    let mut again = settings(&dir.path().join("again"), "proxy");
    again
        .sinks
        .push(file_sink("file", &dir.path().join("again.jsonl")));
    assert!(matches!(
        AuditLog::start(again, &registry),
        Err(AuditError::Metrics(_))
    ));
}

#[tokio::test]
async fn reject_policy_refuses_when_full_and_drops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings(dir.path(), "proxy");
    settings.spool.max_bytes = 128 * 1024;
    settings.spool.full_policy = FullPolicy::Reject;
    settings.spool.checkpoint = None;
    let memory = Memory::default();
    memory.set_down(true);
    let registry = prometheus::Registry::new();
    let log = AuditLog::start_with_sinks(settings, vec![memory.sink("mem")], &registry).unwrap();
    // The refusals are counted by reason, the bound is exported.
    let gauge = |name: &str, labels: &[(&str, &str)]| -> f64 {
        registry
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric().iter())
            .find(|m| {
                labels.iter().all(|(k, v)| {
                    m.get_label()
                        .iter()
                        .any(|l| l.name() == *k && l.value() == *v)
                })
            })
            .map_or(-1.0, |m| {
                if m.get_counter().has_value() {
                    m.get_counter().value()
                } else {
                    m.get_gauge().value()
                }
            })
    };
    let refused = |r: &'static str| {
        gauge(
            "portcullis_audit_emit_failures_total",
            &[("emitter", "proxy"), ("reason", r)],
        )
    };
    assert_eq!(
        refused("spool_full"),
        0.0,
        "exported at zero from the start"
    );
    assert_eq!(
        gauge("portcullis_audit_spool_max_bytes", &[("emitter", "proxy")]),
        (128 * 1024) as f64
    );

    let mut acked = Vec::new();
    let full_after = loop {
        match log.emit(event(acked.len())).await {
            Ok(seq) => acked.push(seq),
            Err(AuditError::Spool(SpoolError::Full)) => break acked.len(),
            Err(e) => panic!("unexpected error {e}"),
        }
        assert!(acked.len() < 10_000, "the spool never filled up");
    };
    assert!(full_after > 100);
    // Still full, still refused at once.
    let started = Instant::now();
    assert!(matches!(
        log.emit(event(0)).await,
        Err(AuditError::Spool(SpoolError::Full))
    ));
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(refused("spool_full"), 2.0, "both refusals counted");
    assert_eq!(refused("io"), 0.0);

    memory.set_down(false);
    eventually(
        Duration::from_secs(20),
        "delivery of every acknowledged event",
        || memory.len() == full_after,
    )
    .await;
    assert_eq!(
        memory.seqs(),
        acked,
        "every acknowledged event delivered, in order"
    );
    // Delivered segments are deleted, so there is room again.
    let mut seq = None;
    for _ in 0..100 {
        if let Ok(s) = log.emit(event(1)).await {
            seq = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seq, Some(full_after as u64 + 1));
}

#[tokio::test]
async fn block_policy_waits_then_fails_closed_and_resumes_when_space_frees() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings(dir.path(), "proxy");
    settings.spool.max_bytes = 128 * 1024;
    // Longer than the delivery backoff reached by then, so the blocked append in the second
    // half outlives the sink's next retry.
    settings.spool.full_policy = FullPolicy::Block {
        timeout: Duration::from_secs(2),
    };
    settings.spool.checkpoint = None;
    let memory = Memory::default();
    memory.set_down(true);
    let log = AuditLog::start_with_sinks(
        settings,
        vec![memory.sink("mem")],
        &prometheus::Registry::new(),
    )
    .unwrap();

    let mut acked = Vec::new();
    let (waited, error) = loop {
        let started = Instant::now();
        match log.emit(event(acked.len())).await {
            Ok(seq) => acked.push(seq),
            Err(e) => break (started.elapsed(), e),
        }
        assert!(acked.len() < 10_000, "the spool never filled up");
    };
    assert!(
        matches!(error, AuditError::Spool(SpoolError::FullTimeout { .. })),
        "{error}"
    );
    assert!(waited >= Duration::from_secs(2), "waited {waited:?}");
    assert!(waited < Duration::from_secs(4), "waited {waited:?}");

    // A blocked append goes through as soon as delivery frees a segment.
    let blocked = tokio::spawn({
        let log = log.clone();
        async move { log.emit(event(0)).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    memory.set_down(false);
    let seq = blocked.await.unwrap().unwrap();
    acked.push(seq);
    eventually(
        Duration::from_secs(20),
        "delivery of every acknowledged event",
        || memory.len() == acked.len(),
    )
    .await;
    assert_eq!(memory.seqs(), acked, "nothing dropped, nothing reordered");
}

#[tokio::test]
async fn delivered_segments_are_deleted_only_when_every_sink_has_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings(dir.path(), "proxy");
    settings.spool.checkpoint = None;
    let spool_dir = settings.spool.dir.clone();
    let (fast, slow) = (Memory::default(), Memory::default());
    slow.set_down(true);
    let log = AuditLog::start_with_sinks(
        settings,
        vec![fast.sink("fast"), slow.sink("slow")],
        &prometheus::Registry::new(),
    )
    .unwrap();
    let segments = || {
        std::fs::read_dir(&spool_dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".jsonl")
            })
            .count()
    };
    for n in 0..1000 {
        log.emit(event(n)).await.unwrap();
    }
    eventually(Duration::from_secs(10), "fast sink", || fast.len() == 1000).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = segments();
    assert!(
        before >= 8,
        "about 600 bytes per event in 64 KiB segments: {before}"
    );
    slow.set_down(false);
    eventually(Duration::from_secs(10), "slow sink", || slow.len() == 1000).await;
    eventually(Duration::from_secs(5), "segments deleted", || {
        segments() == 1
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(spool_dir.join("slow.offset"))
            .unwrap()
            .trim(),
        "1000"
    );
}

#[tokio::test]
async fn restart_continues_the_chain_after_a_torn_write() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("audit.jsonl");
    let mut settings = settings(dir.path(), "backend");
    settings.sinks.push(file_sink("file", &out));
    let log = AuditLog::start(settings.clone(), &prometheus::Registry::new()).unwrap();
    for n in 0..10 {
        log.emit(event(n)).await.unwrap();
    }
    log.shutdown(Duration::from_secs(5)).await;
    // A crash in the middle of a write leaves half a line behind.
    let segment = settings.spool.dir.join("00000001.jsonl");
    let mut data = std::fs::read(&segment).unwrap();
    data.extend_from_slice(br#"{"@timestamp":"2026-01-01T00:00:00.000000Z","event.act"#);
    std::fs::write(&segment, data).unwrap();

    let log = AuditLog::start(settings.clone(), &prometheus::Registry::new()).unwrap();
    assert_eq!(
        log.emit(event(10)).await.unwrap(),
        12,
        "10 events, a checkpoint, then this"
    );
    let public_key = log.public_key().cloned().map(TrustedKeys::from);
    log.shutdown(Duration::from_secs(5)).await;
    let report = verify_file(&out, public_key.as_ref()).unwrap();
    assert_eq!(report.chains[0].last_seq, 13);
    assert_eq!(report.chains[0].checkpoints_verified, 2);
    verify_file(&settings.spool.dir, public_key.as_ref()).unwrap();
}

#[tokio::test]
async fn another_emitters_spool_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut proxy = settings(dir.path(), "proxy");
    proxy
        .sinks
        .push(file_sink("file", &dir.path().join("a.jsonl")));
    let log = AuditLog::start(proxy.clone(), &prometheus::Registry::new()).unwrap();
    log.emit(event(0)).await.unwrap();
    log.shutdown(Duration::from_secs(5)).await;
    let mut backend = proxy;
    backend.spool.emitter = "backend".into();
    let error = AuditLog::start(backend, &prometheus::Registry::new()).unwrap_err();
    assert!(
        matches!(error, AuditError::Spool(SpoolError::EmitterMismatch { .. })),
        "{error}"
    );
}

#[tokio::test]
async fn secret_looking_and_configured_keys_are_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("audit.jsonl");
    let mut settings = settings(dir.path(), "backend");
    settings.redacted_keys = vec!["SSN".into()];
    settings.sinks.push(file_sink("file", &out));
    let log = AuditLog::start(settings, &prometheus::Registry::new()).unwrap();
    let secret = "hunter2-must-never-appear";
    let event = AuditEvent::new(Category::User, "user.update", Outcome::Success)
        .detail("password", secret)
        .detail("newPassword", secret)
        .detail("access_token", secret)
        .detail("client_secret", secret)
        .detail("Authorization", format!("Bearer {secret}"))
        .detail("cookie", secret)
        .detail("otp", secret)
        .detail("code_verifier", secret)
        .detail("request_body", secret)
        .detail("ssn", secret)
        .detail(
            "headers",
            json!({"set-cookie": secret, "x-api-key": secret, "accept": "text/html"}),
        )
        .detail("changes", json!([{"field": "email", "ssn": secret}]))
        .detail("reason", "profile edit");
    log.emit(event).await.unwrap();
    log.shutdown(Duration::from_secs(5)).await;
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        !text.contains("hunter2"),
        "a secret reached the audit file: {text}"
    );
    let record = &read_records(&out)[0];
    let d = &record.details;
    for key in [
        "password",
        "newPassword",
        "access_token",
        "client_secret",
        "Authorization",
        "cookie",
        "otp",
        "code_verifier",
        "request_body",
        "ssn",
    ] {
        assert_eq!(d[key], REDACTED, "{key}");
    }
    assert_eq!(d["headers"]["set-cookie"], REDACTED);
    assert_eq!(d["headers"]["x-api-key"], REDACTED);
    assert_eq!(d["headers"]["accept"], "text/html");
    assert_eq!(d["changes"][0]["ssn"], REDACTED);
    assert_eq!(d["changes"][0]["field"], "email");
    assert_eq!(d["reason"], "profile edit");
}

#[test]
fn emit_blocking_works_outside_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("audit.jsonl");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut settings = settings(dir.path(), "proxy");
    settings.sinks.push(file_sink("file", &out));
    let log = runtime
        .block_on(async { AuditLog::start(settings, &prometheus::Registry::new()) })
        .unwrap();
    let seqs: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let log = log.clone();
                s.spawn(move || log.emit_blocking(event(t)).unwrap())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, [1, 2, 3, 4]);
    runtime.block_on(log.shutdown(Duration::from_secs(5)));
    assert_eq!(read_records(&out).len(), 5);
}
