//! The HTTP sink: NDJSON and Splunk HEC bodies, token from a file (re-read when it is
//! replaced), retries in order.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use portcullis_audit::{AuditLog, HttpFormat, SinkKind, SinkSettings, verify_events};
use support::{event, eventually, settings};

#[derive(Clone, Default)]
struct Receiver {
    requests: Arc<Mutex<Vec<(HeaderMap, String)>>>,
    fail_first: Arc<AtomicUsize>,
}

async fn serve(receiver: Receiver) -> String {
    let app = axum::Router::new()
        .route(
            "/ingest",
            axum::routing::post(
                |axum::extract::State(r): axum::extract::State<Receiver>,
                 headers: HeaderMap,
                 body: String| async move {
                    if r.fail_first.load(Ordering::SeqCst) > 0 {
                        r.fail_first.fetch_sub(1, Ordering::SeqCst);
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    r.requests.lock().unwrap().push((headers, body));
                    StatusCode::OK
                },
            ),
        )
        .with_state(receiver);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/ingest")
}

fn lines(receiver: &Receiver) -> Vec<serde_json::Value> {
    receiver
        .requests
        .lock()
        .unwrap()
        .iter()
        .flat_map(|(_, body)| {
            body.lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn ndjson_batches_with_bearer_token_and_retries() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::default();
    receiver.fail_first.store(3, Ordering::SeqCst);
    let url = serve(receiver.clone()).await;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cr3t-token\n").unwrap();
    let mut settings = settings(dir.path(), "backend");
    settings.spool.checkpoint = None;
    settings.sinks.push(SinkSettings {
        name: "siem".into(),
        kind: SinkKind::Http {
            url,
            format: HttpFormat::Ndjson,
            token_file: Some(token_file),
            ca_file: None,
            batch_max_events: 50,
        },
    });
    let registry = prometheus::Registry::new();
    let log = AuditLog::start(settings, &registry).unwrap();
    for n in 0..200 {
        log.emit(event(n)).await.unwrap();
    }
    eventually(Duration::from_secs(20), "200 events", || {
        lines(&receiver).len() >= 200
    })
    .await;
    log.shutdown(Duration::from_secs(5)).await;

    let requests = receiver.requests.lock().unwrap().clone();
    for (headers, body) in &requests {
        assert_eq!(headers["content-type"], "application/x-ndjson");
        assert_eq!(headers["authorization"], "Bearer s3cr3t-token");
        assert!(body.lines().count() <= 50);
    }
    let events = lines(&receiver);
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e["portcullis.chain.seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (1..=200).collect::<Vec<_>>(),
        "in order, after three refused requests"
    );
    let texts: Vec<String> = requests
        .iter()
        .flat_map(|(_, b)| b.lines().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    verify_events(&texts, None).unwrap();
    let errors: f64 = registry
        .gather()
        .iter()
        .filter(|f| f.name() == "portcullis_audit_delivery_errors_total")
        .flat_map(|f| {
            f.get_metric()
                .iter()
                .map(|m| m.get_counter().value())
                .collect::<Vec<_>>()
        })
        .sum();
    assert_eq!(errors, 3.0);
}

#[tokio::test]
async fn splunk_hec_lines() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::default();
    let url = serve(receiver.clone()).await;
    let token_file = dir.path().join("hec.token");
    std::fs::write(&token_file, "0000-hec").unwrap();
    let mut settings = settings(dir.path(), "proxy");
    settings.sinks.push(SinkSettings {
        name: "splunk".into(),
        kind: SinkKind::Http {
            url,
            format: HttpFormat::SplunkHec,
            token_file: Some(token_file),
            ca_file: None,
            batch_max_events: 100,
        },
    });
    let log = AuditLog::start(settings, &prometheus::Registry::new()).unwrap();
    for n in 0..10 {
        log.emit(event(n)).await.unwrap();
    }
    log.shutdown(Duration::from_secs(5)).await;
    let requests = receiver.requests.lock().unwrap().clone();
    assert_eq!(requests[0].0["authorization"], "Splunk 0000-hec");
    let events = lines(&receiver);
    assert_eq!(events.len(), 11, "10 events and the final checkpoint");
    for e in &events {
        assert_eq!(e["sourcetype"], "portcullis:audit");
        assert_eq!(e["source"], "portcullis:proxy");
        let time = e["time"].as_f64().unwrap();
        let event_time = time::OffsetDateTime::parse(
            e["event"]["@timestamp"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert!((time - event_time.unix_timestamp() as f64).abs() < 1.0);
        assert!(e["event"]["event.id"].is_string());
    }
}

#[tokio::test]
async fn a_rotated_token_file_is_used_from_the_next_batch_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::default();
    let url = serve(receiver.clone()).await;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "old-token\n").unwrap();
    let mut settings = settings(dir.path(), "backend");
    settings.spool.checkpoint = None;
    settings.sinks.push(SinkSettings {
        name: "siem".into(),
        kind: SinkKind::Http {
            url,
            format: HttpFormat::Ndjson,
            token_file: Some(token_file.clone()),
            ca_file: None,
            batch_max_events: 50,
        },
    });
    let log = AuditLog::start(settings, &prometheus::Registry::new()).unwrap();
    log.emit(event(1)).await.unwrap();
    eventually(Duration::from_secs(20), "the first event", || {
        !lines(&receiver).is_empty()
    })
    .await;
    // Replaced the way Vault Agent and secret volumes do: a new file renamed over it.
    let next = dir.path().join("token.new");
    std::fs::write(&next, "new-token\n").unwrap();
    std::fs::rename(&next, &token_file).unwrap();
    // An unusable replacement (empty) keeps the last good token.
    log.emit(event(2)).await.unwrap();
    eventually(Duration::from_secs(20), "the second event", || {
        lines(&receiver).len() >= 2
    })
    .await;
    std::fs::write(&token_file, "").unwrap();
    log.emit(event(3)).await.unwrap();
    eventually(Duration::from_secs(20), "the third event", || {
        lines(&receiver).len() >= 3
    })
    .await;
    log.shutdown(Duration::from_secs(5)).await;
    let auth: Vec<String> = receiver
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|(h, _)| h["authorization"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(auth.first().map(String::as_str), Some("Bearer old-token"));
    assert!(
        auth[1..].iter().all(|a| a == "Bearer new-token"),
        "{auth:?}"
    );
}
