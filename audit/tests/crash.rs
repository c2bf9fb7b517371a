//! Crash safety: a child process appends events and prints each acknowledged seq; it is
//! killed with SIGKILL mid-burst; reopening the spool delivers every acknowledged event.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use portcullis_audit::{AuditLog, AuditSettings, verify_file};
use support::{event, eventually, file_sink, read_records, settings};

const CHILD_ENV: &str = "PORTCULLIS_AUDIT_CRASH_CHILD";

fn crash_settings(dir: &Path) -> AuditSettings {
    let mut settings = settings(dir, "proxy");
    settings.spool.segment_bytes = 256 * 1024;
    settings
        .sinks
        .push(file_sink("file", &dir.join("out/audit.jsonl")));
    settings
}

/// The child: appends from 8 tasks until killed, printing `ACK <seq> <event id>` for every
/// acknowledged event. Started by `acknowledged_events_survive_kill_9` only; alone it fails.
#[allow(
    clippy::disallowed_methods,
    reason = "the child process learns its role from its environment"
)]
// Not a test of its own: the crash test runs it in a child process (`--ignored`), so it
// is ignored in the normal run instead of passing there without doing anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of the crash test, started by it"]
async fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        panic!("crash_child runs only as the crash test's child ({CHILD_ENV} unset)");
    };
    let log = AuditLog::start(
        crash_settings(Path::new(&dir)),
        &prometheus::Registry::new(),
    )
    .unwrap();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0.. {
                let e = event(t * 1_000_000 + n);
                let id = e.id();
                let seq = log.emit(e).await.unwrap();
                let mut out = std::io::stdout().lock();
                writeln!(out, "ACK {seq} {id}").unwrap();
                out.flush().unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (killed_tx, killed_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut acked = BTreeMap::new();
        let mut at_kill = None;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let Some(rest) = line.strip_prefix("ACK ") else {
                continue;
            };
            let (seq, id) = rest.split_once(' ').unwrap();
            acked.insert(seq.parse::<u64>().unwrap(), id.to_owned());
            if at_kill.is_none() && acked.len() >= 3000 {
                at_kill = Some(acked.len());
                killed_tx.send(()).unwrap();
            }
        }
        (acked, at_kill)
    });
    let started = Instant::now();
    killed_rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the child acknowledged 3000 events");
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success());
    let (acked, at_kill) = reader.join().unwrap();
    let burst = started.elapsed();

    // Reopen the spool (recovering the chain head, cutting a torn line) and deliver.
    let settings = crash_settings(dir.path());
    let out = dir.path().join("out/audit.jsonl");
    let log = AuditLog::start(settings.clone(), &prometheus::Registry::new()).unwrap();
    let max_acked = *acked.keys().next_back().unwrap();
    eventually(
        Duration::from_secs(60),
        "delivery of every acknowledged event",
        || {
            read_records(&out)
                .last()
                .is_some_and(|r| r.seq >= max_acked)
        },
    )
    .await;
    let after_restart = log.emit(event(0)).await.unwrap();
    let key = log
        .public_key()
        .cloned()
        .map(portcullis_audit::TrustedKeys::from);
    log.shutdown(Duration::from_secs(10)).await;

    let delivered: BTreeMap<u64, String> = read_records(&out)
        .into_iter()
        .map(|r| (r.seq, r.id))
        .collect();
    for (seq, id) in &acked {
        assert_eq!(
            delivered.get(seq),
            Some(id),
            "acknowledged seq {seq} delivered with its id"
        );
    }
    // The sink file is one clean chain: no duplicates, no gap, across the crash.
    let report = verify_file(&out, key.as_ref()).unwrap();
    assert_eq!(report.chains[0].first_seq, 1);
    assert!(report.chains[0].last_seq > after_restart);
    verify_file(&settings.spool.dir, key.as_ref()).unwrap();
    eprintln!(
        "crash: child killed after {} acks ({burst:?}); {} acknowledged in total, highest seq {max_acked}; \
         {} events on disk before the restart, all acknowledged ones delivered; first seq after restart {after_restart}",
        at_kill.unwrap_or(0),
        acked.len(),
        after_restart - 1,
    );
}
