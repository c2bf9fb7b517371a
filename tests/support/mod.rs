//! Test harness: starts the real `portcullis` binary on ephemeral ports with a
//! generated test PKI, and offers clients that trust it.
#![allow(
    dead_code,
    unused_imports,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test support: a failed setup step should abort the test loudly"
)]

pub mod pki;
pub mod recorder;
pub mod upstream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub use pki::TestPki;

pub use portcullis_testkit::{free_port, port_is_free};

/// Which subcommand to start.
#[derive(Clone, Copy)]
pub enum Mode {
    Up,
    Proxy,
}

pub struct Builder {
    mode: Mode,
    upstream: Option<SocketAddr>,
    trusted_proxies: Vec<String>,
    grace_seconds: u64,
    routes_yaml: Option<String>,
    policy_dir: Option<String>,
    extra_proxy_yaml: String,
    extra_auth_yaml: String,
    extra_backend_yaml: String,
    extra_audit_yaml: String,
    extra_shared_yaml: String,
    revocation_poll_milliseconds: u64,
    /// Extra environment variables of the child (never secrets: e.g. where systemd
    /// credentials are).
    env: Vec<(String, String)>,
    /// A `keys/` folder copied into the new state folder before start: another
    /// instance's keys, as a secret manager would deliver them to a second host.
    seed_keys: Option<PathBuf>,
}

/// A running `portcullis` process.
pub struct Portcullis {
    child: Option<Child>,
    pub dir: TempDir,
    pub pki: TestPki,
    pub https: u16,
    pub http: u16,
    pub admin: u16,
    pub backend: u16,
    /// The backend's admin listener (its `/metrics`); under `proxy` mode unused.
    pub backend_admin: u16,
}

pub fn portcullis() -> Builder {
    Builder {
        mode: Mode::Up,
        upstream: None,
        trusted_proxies: Vec::new(),
        grace_seconds: 10,
        routes_yaml: None,
        policy_dir: None,
        extra_proxy_yaml: String::new(),
        extra_auth_yaml: String::new(),
        extra_backend_yaml: String::new(),
        extra_audit_yaml: String::new(),
        extra_shared_yaml: String::new(),
        revocation_poll_milliseconds: 200,
        env: Vec::new(),
        seed_keys: None,
    }
}

/// Copies the files of `from` (and its sub-folders) into `to`, keeping their modes.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The shipped policy bundle.
pub fn policy_dir() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/policies")
}

/// A bundle that allows everything, for tests of the gateway itself.
pub fn allow_all_policy_dir() -> &'static str {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/allow-all-policy"
    )
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_portcullis")
}

impl Builder {
    /// Run `portcullis proxy` in front of this upstream instead of `up`,
    /// with the allow-all test policy (these tests are about the gateway,
    /// not the policy) unless another is set.
    pub fn proxy_to(mut self, upstream: SocketAddr) -> Self {
        self.mode = Mode::Proxy;
        self.upstream = Some(upstream);
        self.policy_dir
            .get_or_insert_with(|| allow_all_policy_dir().to_owned());
        self
    }
    /// Use this policy bundle folder, for the proxy and the backend alike.
    pub fn policy(mut self, dir: &str) -> Self {
        self.policy_dir = Some(dir.to_owned());
        self
    }
    /// Extra YAML lines inside `proxy:` (indented two spaces).
    pub fn proxy_yaml(mut self, yaml: &str) -> Self {
        self.extra_proxy_yaml.push_str(yaml);
        self
    }
    /// Extra YAML lines inside `proxy.auth:` (indented four spaces).
    pub fn auth_yaml(mut self, yaml: &str) -> Self {
        self.extra_auth_yaml.push_str(yaml);
        self
    }
    /// Extra YAML lines inside `backend:` (indented two spaces).
    pub fn backend_yaml(mut self, yaml: &str) -> Self {
        self.extra_backend_yaml.push_str(yaml);
        self
    }
    /// How often the proxy polls the revocation feed (default 200 ms).
    pub fn revocation_poll_milliseconds(mut self, ms: u64) -> Self {
        self.revocation_poll_milliseconds = ms;
        self
    }
    /// Extra YAML lines inside `shared:` (indented two spaces).
    pub fn shared_yaml(mut self, yaml: &str) -> Self {
        self.extra_shared_yaml.push_str(yaml);
        self
    }
    /// Extra YAML lines inside `audit:` (indented two spaces).
    pub fn audit_yaml(mut self, yaml: &str) -> Self {
        self.extra_audit_yaml.push_str(yaml);
        self
    }
    /// Starts with a copy of `keys` (another instance's `<state_dir>/keys`).
    pub fn seed_keys(mut self, keys: &Path) -> Self {
        self.seed_keys = Some(keys.to_owned());
        self
    }
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
    pub fn trusted_proxies(mut self, cidrs: &[&str]) -> Self {
        self.trusted_proxies = cidrs.iter().map(|s| (*s).to_owned()).collect();
        self
    }
    pub fn grace_seconds(mut self, s: u64) -> Self {
        self.grace_seconds = s;
        self
    }
    /// YAML for `proxy.routes` (a flow sequence). The default rate-limit
    /// rules name the default routes, so a per-IP rule replaces them.
    pub fn routes(mut self, yaml: &str) -> Self {
        self.routes_yaml = Some(yaml.to_owned());
        self
    }

    pub async fn start(mut self) -> Portcullis {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::generate(dir.path());
        let (https, http, admin) = (free_port(), free_port(), free_port());
        let (backend, backend_admin) = (free_port(), free_port());
        let upstream = self
            .upstream
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], backend)));
        let trusted = format!("[{}]", self.trusted_proxies.join(", "));
        let routes = self
            .routes_yaml
            .as_ref()
            .map(|r| format!("  routes: {r}\n"))
            .unwrap_or_default();
        // The default rate-limit rules name the default routes; with custom
        // routes (and no rules given) one generous per-IP rule replaces them.
        if self.routes_yaml.is_some() && !self.extra_proxy_yaml.contains("rate_limits:") {
            self.extra_proxy_yaml
                .push_str("  rate_limits: {rules: [{name: per_ip, key: client_ip, requests_per_period: 1000, burst_requests: 2000}]}\n");
        }
        let feed = match self.mode {
            Mode::Up => format!("'http://127.0.0.1:{backend}/auth/revocations'"),
            Mode::Proxy => "null".to_owned(),
        };
        let ingest = match self.mode {
            Mode::Up => format!("'http://127.0.0.1:{backend}/internal/audit/ingest'"),
            Mode::Proxy => "null".to_owned(),
        };
        let auth = format!(
            "  auth:\n    issuers: [{{issuer: portcullis, label: backend, audiences: [portcullis], jwks_url: 'http://127.0.0.1:{backend}/auth/jwks.json', algorithms: [EdDSA], refresh_interval_seconds: 60, min_refetch_interval_seconds: 1}}]\n    revocation_feed_url: {feed}\n    revocation_poll_milliseconds: {poll}\n{auth_extra}{}",
            self.extra_proxy_yaml,
            poll = self.revocation_poll_milliseconds,
            auth_extra = self.extra_auth_yaml,
        );
        let yaml = format!(
            "state_dir: {state}\nlog: {{format: text, level: info}}\nproxy:\n  listen: {{https: 127.0.0.1:{https}, http: 127.0.0.1:{http}, admin: 127.0.0.1:{admin}}}\n  tls: {{certificate_file: {cert}, private_key_file: {key}}}\n  trusted_proxies: {trusted}\n  shutdown: {{grace_seconds: {grace}}}\n  worker_threads: 2\n  upstreams:\n    backend: {{address: '{upstream}', connect_timeout_seconds: 1, read_timeout_seconds: 10}}\n{routes}{auth}shared:\n  policy_dir: '{policies}'\n{shared_extra}backend:\n  listen: 127.0.0.1:{backend}\n  admin_listen: 127.0.0.1:{backend_admin}\n{backend_extra}audit:\n  ingest_url: {ingest}\n{audit}",
            state = dir.path().join("var").display(),
            cert = pki.cert_path.display(),
            key = pki.key_path.display(),
            grace = self.grace_seconds,
            policies = self.policy_dir.as_deref().unwrap_or(policy_dir()),
            audit = self.extra_audit_yaml,
            backend_extra = self.extra_backend_yaml,
            shared_extra = self.extra_shared_yaml,
        );
        let config = dir.path().join("portcullis.yaml");
        std::fs::write(&config, yaml).unwrap();
        if let Some(keys) = &self.seed_keys {
            copy_dir(keys, &dir.path().join("var/keys"));
        }
        let sub = match self.mode {
            Mode::Up => "up",
            Mode::Proxy => "proxy",
        };
        let log = std::fs::File::create(dir.path().join("portcullis.log")).unwrap();
        let child = Command::new(binary())
            .arg("--config")
            .arg(&config)
            .arg(sub)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let p = Portcullis {
            child: Some(child),
            dir,
            pki,
            https,
            http,
            admin,
            backend,
            backend_admin,
        };
        p.wait_live().await;
        p
    }
}

impl Portcullis {
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.https)
    }
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin)
    }

    /// A client that trusts the test CA (h2 negotiated by ALPN).
    pub fn client(&self) -> reqwest::Client {
        self.pki.client_builder().build().unwrap()
    }
    /// A client that speaks only HTTP/1.1.
    pub fn http1_client(&self) -> reqwest::Client {
        self.pki.client_builder().http1_only().build().unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("portcullis.log")).unwrap_or_default()
    }

    async fn wait_live(&self) {
        let client = reqwest::Client::new();
        let url = self.admin_url("/health/live");
        // Generous: under a parallel test run on two cores, start-up (migrations,
        // the policy bundle's own tests) can take a while.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(r) = client.get(&url).send().await
                && r.status() == 200
            {
                // The HTTPS listener starts with the admin one; make sure.
                if tokio::net::TcpStream::connect(("127.0.0.1", self.https))
                    .await
                    .is_ok()
                {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!("portcullis did not start:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(self.admin_url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The backend's own metrics (its admin listener), under `up`.
    pub async fn backend_metrics(&self) -> String {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", self.backend_admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the process to exit; `None` if it is still running at the timeout.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs another `portcullis` command with this instance's configuration.
    pub fn cli(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(binary())
            .arg("--config")
            .arg(self.dir.path().join("portcullis.yaml"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// [`Portcullis::cli`] with the exit code.
    pub fn cli_status(&self, args: &[&str]) -> (Option<i32>, String) {
        let out = Command::new(binary())
            .arg("--config")
            .arg(self.dir.path().join("portcullis.yaml"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Imports users (`username,role,password` triples, plaintext) and
    /// returns nothing; panics when the import fails.
    pub fn add_users(&self, users: &[(&str, &str, &str)]) {
        let mut csv =
            String::from("username,email,display_name,department,roles,password_format,password\n");
        for (name, role, pw) in users {
            csv.push_str(&format!(
                "{name},{name}@example.org,{name},Facilities,{role},plaintext,{pw}\n"
            ));
        }
        let file = self.dir.path().join("users.csv");
        std::fs::write(&file, csv).unwrap();
        let (ok, out) = self.cli(&["user", "import", file.to_str().unwrap()]);
        assert!(ok, "{out}");
    }

    /// Signs in through the proxy as an API client; returns the access token.
    pub async fn login(&self, user: &str, password: &str) -> serde_json::Value {
        let r = self
            .client()
            .post(self.url("/auth/login"))
            .json(&serde_json::json!({"username": user, "password": password, "client": "api"}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            200,
            "login of {user}: {}",
            r.text().await.unwrap_or_default()
        );
        r.json().await.unwrap()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("var")
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Portcullis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Redis at 127.0.0.1:6379 (the machine's): required when `CI` is set.
#[allow(
    clippy::disallowed_methods,
    reason = "a missing Redis fails the run under CI (the CI flag, not configuration)"
)]
pub async fn redis_available() -> bool {
    let up = tokio::net::TcpStream::connect("127.0.0.1:6379")
        .await
        .is_ok();
    assert!(
        up || std::env::var_os("CI").is_none(),
        "Redis is not running at 127.0.0.1:6379"
    );
    up
}
