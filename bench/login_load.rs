//! Login under load: `portcullis up` (release build) on loopback, 50
//! sign-ins per second at a constant rate for 60 s (override with
//! `PORTCULLIS_BENCH_SECONDS` / `PORTCULLIS_BENCH_RPS`), through the proxy
//! (TLS, policy, rate limits) to the backend (Argon2id at OWASP cost, session
//! and token issue). Prints p50/p95/p99 latency and the error rate; fails if
//! p95 ≥ 300 ms or errors ≥ 2 %.
//!
//! Run: `cargo bench --bench login_load` (see BENCHMARKS.md).
//! `PORTCULLIS_BENCH_BIN=/path/to/portcullis` measures another build of the
//! binary with the same harness, for A/B comparisons in one sitting.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    reason = "benchmark harness; its run length, rate and binary come from the environment"
)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use portcullis_testkit::free_port;

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let seconds: u64 = std::env::var("PORTCULLIS_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let rps: u64 = std::env::var("PORTCULLIS_BENCH_RPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    // Another build of the binary can be measured in the same run (A/B).
    let bin = std::env::var("PORTCULLIS_BENCH_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_portcullis").to_owned());
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    let (https, admin, backend) = (free_port(), free_port(), free_port());
    let config = dir.path().join("portcullis.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {state}\nlog: {{format: text, level: warn}}\nproxy:\n  listen: {{https: '127.0.0.1:{https}', http: null, admin: '127.0.0.1:{admin}'}}\n  rate_limits: {{rules: [{{name: per_ip, key: client_ip, requests_per_period: 100000, burst_requests: 100000}}]}}\nshared:\n  policy_dir: '{root}/policies'\nbackend:\n  listen: '127.0.0.1:{backend}'\n  admin_listen: null\n  identity: {{max_sessions_per_user: 1000}}\n",
            state = dir.path().join("var").display()
        ),
    )
    .unwrap();
    let users = 20;
    let mut csv =
        String::from("username,email,display_name,department,roles,password_format,password\n");
    for i in 0..users {
        csv.push_str(&format!("load{i},load{i}@example.org,Load {i},Facilities,employee,plaintext,load-password-{i}-xyz\n"));
    }
    let import = dir.path().join("users.csv");
    std::fs::write(&import, csv).unwrap();
    let ok = Command::new(&bin)
        .arg("--config")
        .arg(&config)
        .args(["user", "import"])
        .arg(&import)
        .status()
        .unwrap();
    assert!(ok.success());
    let mut child = Command::new(&bin)
        .arg("--config")
        .arg(&config)
        .arg("up")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let result = rt.block_on(async move {
        let ready = format!("http://127.0.0.1:{admin}/health/ready");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !reqwest::get(&ready).await.is_ok_and(|r| r.status() == 200) {
            assert!(Instant::now() < deadline, "portcullis did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let ca = std::fs::read(dir.path().join("var/tls/self-signed.crt")).unwrap();
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let url = format!("https://localhost:{https}/auth/login");
        let total = seconds * rps;
        let interval = Duration::from_micros(1_000_000 / rps);
        let start = tokio::time::Instant::now();
        let mut tasks = Vec::with_capacity(total as usize);
        for n in 0..total {
            // Constant arrival rate: request n is due at n × interval,
            // whether or not earlier ones have finished (no coordinated omission).
            tokio::time::sleep_until(start + interval * n as u32).await;
            let i = n % users;
            let req = client.post(&url).json(&serde_json::json!({
                "username": format!("load{i}"), "password": format!("load-password-{i}-xyz"), "client": "api"
            }));
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                let ok = req.send().await.is_ok_and(|r| r.status() == 200);
                (t.elapsed(), ok)
            }));
        }
        let mut latencies = Vec::with_capacity(tasks.len());
        let mut errors = 0usize;
        for t in tasks {
            let (d, ok) = t.await.unwrap();
            latencies.push(d);
            errors += usize::from(!ok);
        }
        (latencies, errors, dir)
    });
    let _ = child.kill();
    let _ = child.wait();
    let (mut latencies, errors, _dir) = result;
    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize)
            .saturating_sub(1)
            .min(latencies.len() - 1)]
    };
    let error_rate = errors as f64 / latencies.len() as f64 * 100.0;
    println!(
        "login_load: {} requests at {rps}/s for {seconds}s: p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms, errors {errors} ({error_rate:.2} %)",
        latencies.len(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.95).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3,
    );
    assert!(pct(0.95) < Duration::from_millis(300), "p95 over 300 ms");
    assert!(error_rate < 2.0, "error rate over 2 %");
}
