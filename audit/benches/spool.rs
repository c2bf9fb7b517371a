//! Events per second appended into the spool with the hash chain and checkpoints on, each
//! append waiting for its fsync: one appender, and 8 and 64 concurrent appenders sharing
//! group commits. The spool lives under `target/tmp` (a real disk, unlike a tmpfs `/tmp`).
//!
//! `cargo bench -p portcullis-audit --bench spool`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "bench"
)]

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use portcullis_audit::{AuditEvent, Category, Outcome, Spool, SpoolSettings};

fn event(n: u64) -> AuditEvent {
    AuditEvent::new(Category::Api, "ticket.read", Outcome::Success)
        .user_id(format!("user-{}", n % 1000))
        .roles(["employee"])
        .session_id("3f1c0a9e-6d2b-4a57-9c1e-0b8d7f6a5e43")
        .auth_method("cookie")
        .source_ip("203.0.113.7".parse().unwrap())
        .user_agent("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)")
        .request_id(format!("req-{n}"))
        .decision_id(format!("dec-{n}"))
        .policy_digest("sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")
        .route("/api/tickets/{id}")
        .detail("ticket_id", n)
}

fn settings(dir: &std::path::Path) -> SpoolSettings {
    let mut settings = SpoolSettings::new("bench", dir);
    settings.max_bytes = 64 << 30;
    settings
}

/// Appends `total` events from `appenders` tasks into a fresh spool; returns the time taken.
fn run(runtime: &tokio::runtime::Runtime, appenders: u64, total: u64) -> Duration {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let spool = Spool::open(&settings(dir.path())).unwrap();
    let per_task = total.div_ceil(appenders);
    runtime.block_on(async {
        let started = Instant::now();
        let tasks: Vec<_> = (0..appenders)
            .map(|t| {
                let spool = spool.clone();
                tokio::spawn(async move {
                    for n in 0..per_task {
                        spool.append(event(t * per_task + n)).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let elapsed = started.elapsed();
        spool.close().await;
        elapsed
    })
}

fn spool_append(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("spool_append");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for appenders in [1u64, 8, 64] {
        group.bench_function(format!("{appenders}_appenders"), |b| {
            b.iter_custom(|iters| run(&runtime, appenders, iters));
        });
    }
    group.finish();
}

criterion_group!(benches, spool_append);
criterion_main!(benches);
