//! Delivery to a real rsyslogd over TCP, TLS and mutual TLS, and through an rsyslog outage.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use portcullis_audit::{
    AuditLog, AuditSettings, CHECKPOINT_ACTION, SinkKind, SinkSettings, SyslogTls, TrustedKeys,
    verify_events,
};
use support::rsyslog::{self, Received, Rsyslog};
use support::{event, eventually, settings};

fn syslog_sink(name: &str, port: u16, tls: Option<SyslogTls>) -> SinkSettings {
    SinkSettings {
        name: name.to_owned(),
        kind: SinkKind::Syslog {
            addr: format!("127.0.0.1:{port}"),
            tls,
        },
    }
}

fn audit_events(received: &[Received]) -> impl Iterator<Item = &Received> {
    received
        .iter()
        .filter(|r| r.json["event.action"] != CHECKPOINT_ACTION)
}

/// Checks the received stream: distinct ids, order, chain. Returns (distinct audit events,
/// duplicates).
fn check_stream(received: &[Received], settings: &AuditSettings, log: &AuditLog) -> (usize, usize) {
    let mut seen = HashSet::new();
    let mut first_occurrences = Vec::new();
    for r in received {
        assert_eq!(r.app_name, "portcullis");
        assert_eq!(
            r.json["event.id"],
            r.event_id.as_str(),
            "SD eventId matches the JSON"
        );
        assert_eq!(r.json["portcullis.chain.seq"], r.seq);
        assert_eq!(
            r.json["portcullis.emitter"],
            settings.spool.emitter.as_str()
        );
        if seen.insert(r.event_id.clone()) {
            first_occurrences.push(r);
        }
    }
    let seqs: Vec<u64> = first_occurrences.iter().map(|r| r.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] + 1 == w[1]),
        "events arrive in order, none missing"
    );
    let lines: Vec<String> = first_occurrences
        .iter()
        .map(|r| r.json.to_string())
        .collect();
    let keys = log.public_key().cloned().map(TrustedKeys::from);
    let report = verify_events(&lines, keys.as_ref()).unwrap();
    assert_eq!(report.events as usize, lines.len());
    let audit = audit_events(
        &first_occurrences
            .into_iter()
            .map(clone_received)
            .collect::<Vec<_>>(),
    )
    .count();
    (audit, received.len() - seen.len())
}

fn clone_received(r: &Received) -> Received {
    Received {
        pri: r.pri,
        timestamp: r.timestamp.clone(),
        hostname: r.hostname.clone(),
        app_name: r.app_name.clone(),
        msg_id: r.msg_id.clone(),
        event_id: r.event_id.clone(),
        seq: r.seq,
        json: r.json.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsyslog_receives_every_event_over_tcp_tls_and_mtls() {
    let Some(binary) = rsyslog::find() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rsyslog = Rsyslog::start(binary, &dir.path().join("rsyslog"));
    let tls = SyslogTls {
        ca_file: rsyslog.pki.ca.clone(),
        client_cert_file: None,
        client_key_file: None,
        server_name: None,
    };
    let mtls = SyslogTls {
        client_cert_file: Some(rsyslog.pki.client_cert.clone()),
        client_key_file: Some(rsyslog.pki.client_key.clone()),
        server_name: Some("localhost".into()),
        ..tls.clone()
    };
    let cases = [
        (
            "tcp",
            syslog_sink("siem", rsyslog.tcp_port, None),
            &rsyslog.tcp_log,
        ),
        (
            "tls",
            syslog_sink("siem", rsyslog.tls_port, Some(tls)),
            &rsyslog.tls_log,
        ),
        (
            "mtls",
            syslog_sink("siem", rsyslog.mtls_port, Some(mtls)),
            &rsyslog.mtls_log,
        ),
    ];
    const N: usize = 300;
    for (label, sink, out) in cases {
        let mut settings = settings(&dir.path().join(label), "proxy");
        settings.sinks.push(sink);
        let log = AuditLog::start(settings.clone(), &prometheus::Registry::new()).unwrap();
        let mut ids = HashSet::new();
        for n in 0..N {
            let e = event(n);
            ids.insert(e.id().to_string());
            log.emit(e).await.unwrap();
        }
        eventually(
            Duration::from_secs(30),
            &format!("{N} events over {label}"),
            || audit_events(&rsyslog::received(out)).count() >= N,
        )
        .await;
        let received = rsyslog::received(out);
        for r in audit_events(&received) {
            assert!(ids.contains(&r.event_id), "unknown event {}", r.event_id);
            assert_eq!(r.pri, 13 * 8 + 6, "facility log audit, severity info");
            assert_eq!(r.msg_id, "api");
            assert!(r.json["user.id"].as_str().unwrap().starts_with("user-"));
        }
        let (distinct, duplicates) = check_stream(&received, &settings, &log);
        assert_eq!(distinct, N, "{label}: N emitted = N received");
        eprintln!("{label}: {N} events emitted, {distinct} received, {duplicates} duplicates");
        log.shutdown(Duration::from_secs(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsyslog_outage_loses_nothing() {
    let Some(binary) = rsyslog::find() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut rsyslog = Rsyslog::start(binary, &dir.path().join("rsyslog"));
    let mut settings = settings(dir.path(), "proxy");
    settings
        .sinks
        .push(syslog_sink("siem-tcp", rsyslog.tcp_port, None));
    settings.sinks.push(syslog_sink(
        "siem-tls",
        rsyslog.tls_port,
        Some(SyslogTls {
            ca_file: rsyslog.pki.ca.clone(),
            client_cert_file: None,
            client_key_file: None,
            server_name: None,
        }),
    ));
    let log = AuditLog::start(settings.clone(), &prometheus::Registry::new()).unwrap();

    // Connections up and idle, then the receiver goes away.
    for n in 0..5 {
        log.emit(event(n)).await.unwrap();
    }
    for out in [&rsyslog.tcp_log, &rsyslog.tls_log] {
        eventually(Duration::from_secs(20), "warm-up events", || {
            audit_events(&rsyslog::received(out)).count() == 5
        })
        .await;
    }
    rsyslog.stop();

    const N: usize = 10_000;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..50 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..N / 50 {
                log.emit(event(5 + t * (N / 50) + i)).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let emitted_in = started.elapsed();

    let restarted = Instant::now();
    rsyslog.restart();
    for out in [&rsyslog.tcp_log, &rsyslog.tls_log] {
        eventually(
            Duration::from_secs(120),
            "all events after the outage",
            || {
                let received = rsyslog::received(out);
                audit_events(&received)
                    .map(|r| r.event_id.as_str())
                    .collect::<HashSet<_>>()
                    .len()
                    >= N + 5
            },
        )
        .await;
    }
    let drained_in = restarted.elapsed();
    for (label, out) in [("tcp", &rsyslog.tcp_log), ("tls", &rsyslog.tls_log)] {
        let received = rsyslog::received(out);
        let (distinct, duplicates) = check_stream(&received, &settings, &log);
        assert_eq!(distinct, N + 5);
        eprintln!(
            "outage over {label}: {N} events spooled in {emitted_in:?} while rsyslog was down; \
             all {distinct} delivered in order {drained_in:?} after restart; {duplicates} duplicates (at-least-once redelivery)"
        );
    }
    log.shutdown(Duration::from_secs(5)).await;
}
