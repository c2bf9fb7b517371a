//! Helpers shared by the audit integration tests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]
#![allow(
    dead_code,
    unused_imports,
    reason = "each test file uses a different subset"
)]

pub mod rsyslog;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use portcullis_audit::{
    AuditEvent, AuditRecord, AuditSettings, Category, Outcome, Sink, SinkError, SinkKind,
    SinkSettings, SpooledEvent,
};

pub use portcullis_testkit::{eventually, free_port};

/// Settings with a small spool in `dir/spool` and no sinks.
pub fn settings(dir: &Path, emitter: &str) -> AuditSettings {
    let mut settings = AuditSettings::new(emitter, dir.join("spool"));
    settings.spool.segment_bytes = 64 * 1024;
    settings.spool.max_bytes = 64 << 20;
    settings
}

pub fn file_sink(name: &str, path: &Path) -> SinkSettings {
    SinkSettings {
        name: name.to_owned(),
        kind: SinkKind::File {
            path: path.to_owned(),
            max_bytes: 1 << 30,
        },
    }
}

/// A test event numbered `n`.
pub fn event(n: usize) -> AuditEvent {
    AuditEvent::new(Category::Api, "ticket.read", Outcome::Success)
        .user_id(format!("user-{n}"))
        .roles(["employee"])
        .source_ip("203.0.113.7".parse().unwrap())
        .request_id(format!("req-{n}"))
        .route("/api/tickets/{id}")
        .detail("n", n)
}

/// Complete event lines of a JSON-lines file, or of every `*.jsonl` file of a folder in name
/// order.
pub fn read_records(path: &Path) -> Vec<AuditRecord> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        files.sort();
        files
    } else if path.exists() {
        vec![path.to_owned()]
    } else {
        Vec::new()
    };
    let mut records = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        // Only complete lines: a writer may be in the middle of the last one.
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        for line in complete.lines() {
            records.push(AuditRecord::parse(line).unwrap());
        }
    }
    records
}

/// Counts lines of a file (0 if missing).
pub fn count_lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

/// An in-memory sink that can be switched off.
#[derive(Clone, Default)]
pub struct Memory {
    pub events: Arc<Mutex<Vec<SpooledEvent>>>,
    pub down: Arc<AtomicBool>,
    pub batches: Arc<Mutex<usize>>,
}

impl Memory {
    pub fn sink(&self, name: &str) -> Box<dyn Sink> {
        Box::new(MemorySink {
            name: name.to_owned(),
            memory: self.clone(),
        })
    }

    pub fn len(&self) -> usize {
        self.events.lock().unwrap().len()
    }

    pub fn seqs(&self) -> Vec<u64> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(SpooledEvent::seq)
            .collect()
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

struct MemorySink {
    name: String,
    memory: Memory,
}

#[async_trait]
impl Sink for MemorySink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&mut self, batch: &[SpooledEvent]) -> Result<(), SinkError> {
        if self.memory.down.load(Ordering::SeqCst) {
            return Err(SinkError::Other("sink is down".into()));
        }
        *self.memory.batches.lock().unwrap() += 1;
        self.memory.events.lock().unwrap().extend_from_slice(batch);
        Ok(())
    }
}

/// Test PKI made with rcgen: a CA, a server certificate for `localhost`/127.0.0.1 and a client
/// certificate, written as PEM files into `dir`.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    pub fn generate(dir: &Path) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "portcullis test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);

        let leaf = |names: Vec<String>, cn: &str, client: bool| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = vec![if client {
                rcgen::ExtendedKeyUsagePurpose::ClientAuth
            } else {
                rcgen::ExtendedKeyUsagePurpose::ServerAuth
            }];
            let cert = params.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_pem, server_key) = leaf(
            vec!["localhost".into(), "127.0.0.1".into()],
            "localhost",
            false,
        );
        let (client_pem, client_key) = leaf(vec!["audit-client".into()], "audit-client", true);
        let write = |name: &str, contents: &str| {
            let path = dir.join(name);
            std::fs::write(&path, contents).unwrap();
            path
        };
        Self {
            ca: write("ca.pem", &ca_cert.pem()),
            server_cert: write("server.pem", &server_pem),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_pem),
            client_key: write("client.key", &client_key),
        }
    }
}
