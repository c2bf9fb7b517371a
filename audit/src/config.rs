//! The `audit:` section of `portcullis.yaml`: serde structs that mirror the file
//! ([`AuditConfig`]) and their validation into an [`AuditTemplate`], which gives the
//! [`AuditSettings`] of each emitter (`proxy`, `backend`, `cli`).
//!
//! One section configures every emitter. Paths may contain `{emitter}`, replaced by the
//! emitter's name, so each emitter gets its own spool, key and file: the defaults are
//! `<state_dir>/audit/{emitter}/` (spool), `<state_dir>/keys/audit-checkpoint-{emitter}.key`
//! (checkpoint key) and `<state_dir>/audit/{emitter}.jsonl` (file sink).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use portcullis_contract::problems::Problems;
use portcullis_contract::shared::resolve_path;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::settings::{
    AuditSettings, CheckpointSettings, FullPolicy, HttpFormat, SinkKind, SinkSettings, SyslogTls,
};

/// The placeholder replaced by the emitter's name in configured paths.
pub const EMITTER_PLACEHOLDER: &str = "{emitter}";

/// Every emitter name the binary uses, in the order their settings are checked.
pub const EMITTERS: [&str; 3] = ["proxy", "backend", "cli"];

/// The `audit:` section: spool, checkpoints, redaction and delivery of audit events.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Where events wait (fsync'd) until every sink has them.
    pub spool: SpoolConfig,
    /// Signed checkpoints in the hash chain.
    pub checkpoint: CheckpointConfig,
    /// Detail keys whose values are replaced by `[redacted]` besides the built-in
    /// secret-looking ones (exact name, case-insensitive). Default none.
    pub redacted_keys: Vec<String>,
    /// Where events are delivered. Default: one `file` sink at
    /// `<state_dir>/audit/{emitter}.jsonl`. The backend also writes its events to the
    /// database table `audit_events`, and the proxy ships its events to `ingest_url`.
    pub sinks: Vec<SinkConfig>,
    /// The backend's ingest endpoint the proxy ships its events to (NDJSON, signed with the
    /// proxy↔backend identity key), so the admin view shows them. Default
    /// `http://127.0.0.1:8081/internal/audit/ingest`; `null` disables it.
    pub ingest_url: Option<String>,
    /// This instance's name, when several instances share one database or SIEM: its
    /// emitters are then `proxy-<instance>`, `backend-<instance>` and `cli-<instance>`,
    /// each with its own hash chain (two processes must never write one chain under one
    /// name). 1 to 32 lower-case letters, digits or `-`. Default none: `proxy`,
    /// `backend`, `cli`.
    pub instance: Option<String>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            spool: SpoolConfig::default(),
            checkpoint: CheckpointConfig::default(),
            redacted_keys: Vec::new(),
            sinks: vec![SinkConfig::File {
                name: default_file_name(),
                path: None,
                max_bytes: default_file_max_bytes(),
            }],
            ingest_url: Some("http://127.0.0.1:8081/internal/audit/ingest".to_owned()),
            instance: None,
        }
    }
}

/// The spool.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Spool folder, one per emitter: must contain `{emitter}`. Default
    /// `<state_dir>/audit/{emitter}`.
    pub dir: Option<PathBuf>,
    /// Most bytes the spool holds before `full_policy` applies. Default 1073741824 (1 GiB).
    pub max_bytes: u64,
    /// Size of one segment file. Default 16777216 (16 MiB); at least 65536.
    pub segment_bytes: u64,
    /// What an event does when the spool is full: `{kind: block, timeout_seconds: N}`
    /// (default, 5 s: wait for delivery to free space, then fail) or `{kind: reject}` (fail
    /// at once; new sign-ins are then refused). Events are never dropped.
    pub full_policy: FullPolicyConfig,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            dir: None,
            max_bytes: 1 << 30,
            segment_bytes: 16 << 20,
            full_policy: FullPolicyConfig::Block { timeout_seconds: 5 },
        }
    }
}

/// What an append does when the spool is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FullPolicyConfig {
    /// Wait up to `timeout_seconds` for delivery to free space, then fail (fail closed).
    Block {
        /// 1 to 3600. Default 5.
        #[serde(default = "default_block_seconds")]
        timeout_seconds: u64,
    },
    /// Fail at once.
    Reject,
}

/// Signed checkpoints.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Default true. Without checkpoints, someone who can write the files can rewrite
    /// history undetected.
    pub enabled: bool,
    /// Ed25519 key (PKCS#8 PEM, 0600, generated if missing; public key in `<file>.pub`).
    /// Default `<state_dir>/keys/audit-checkpoint-{emitter}.key`.
    pub key_file: Option<PathBuf>,
    /// A checkpoint after this many events. Default 1000.
    pub every_events: u64,
    /// … or after this many seconds with events. Default 60.
    pub interval_seconds: u64,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            key_file: None,
            every_events: 1000,
            interval_seconds: 60,
        }
    }
}

/// One delivery target.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkConfig {
    /// JSON lines in a local file, rotated by size.
    File {
        /// Unique sink name (a-z, 0-9, `_`, `-`). Default `file`.
        #[serde(default = "default_file_name")]
        name: String,
        /// The file, ending in `.jsonl` and containing `{emitter}`. Default
        /// `<state_dir>/audit/{emitter}.jsonl`.
        #[serde(default)]
        path: Option<PathBuf>,
        /// Rotation size. Default 67108864 (64 MiB).
        #[serde(default = "default_file_max_bytes")]
        max_bytes: u64,
    },
    /// RFC 5424 syslog over TCP (RFC 5425 framing), optionally TLS.
    Syslog {
        /// Unique sink name. Default `syslog`.
        #[serde(default = "default_syslog_name")]
        name: String,
        /// `host:port` of the receiver.
        addr: String,
        /// TLS settings; plain TCP without.
        #[serde(default)]
        tls: Option<SyslogTlsConfig>,
    },
    /// HTTP POST per batch: NDJSON or Splunk HTTP Event Collector.
    Http {
        /// Unique sink name. Default `http`.
        #[serde(default = "default_http_name")]
        name: String,
        /// `https://…` endpoint (for Splunk: `…/services/collector/event`).
        url: String,
        /// `ndjson` (default) or `splunk_hec`.
        #[serde(default)]
        format: HttpFormatConfig,
        /// File holding the token (`Bearer` for NDJSON, `Splunk` for HEC; required for HEC).
        #[serde(default)]
        token_file: Option<PathBuf>,
        /// Extra CA certificates (PEM) to trust.
        #[serde(default)]
        ca_file: Option<PathBuf>,
        /// Most events per request, 1 to 10000. Default 500.
        #[serde(default = "default_batch")]
        batch_max_events: usize,
    },
}

/// TLS for the syslog sink.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SyslogTlsConfig {
    /// CA certificates (PEM) that sign the receiver's certificate; only these are trusted.
    pub ca_file: PathBuf,
    /// Client certificate chain (PEM) for mutual TLS.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// Client private key (PEM).
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// Name to verify the receiver's certificate against. Default: the host of `addr`.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// Body format of the HTTP sink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HttpFormatConfig {
    /// One event per line, `application/x-ndjson`.
    #[default]
    Ndjson,
    /// Splunk HTTP Event Collector.
    SplunkHec,
}

fn default_block_seconds() -> u64 {
    5
}
fn default_file_name() -> String {
    "file".to_owned()
}
fn default_syslog_name() -> String {
    "syslog".to_owned()
}
fn default_http_name() -> String {
    "http".to_owned()
}
fn default_file_max_bytes() -> u64 {
    64 << 20
}
fn default_batch() -> usize {
    500
}

/// The validated `audit:` section: [`AuditTemplate::settings`] gives each emitter's
/// [`AuditSettings`].
#[derive(Debug, Clone, PartialEq)]
pub struct AuditTemplate {
    /// Settings with `{emitter}` still in the paths.
    template: AuditSettings,
    /// Where the proxy ships its events, if anywhere.
    pub ingest_url: Option<String>,
    /// The instance name qualifying every emitter, if any.
    instance: Option<String>,
}

/// The kind of an emitter name: `proxy` for `proxy` and `proxy-eu-1`.
pub fn emitter_kind(emitter: &str) -> &str {
    emitter.split_once('-').map_or(emitter, |(kind, _)| kind)
}

impl AuditTemplate {
    /// The emitter name of `kind` (`proxy`, `backend`, `cli`) on this instance.
    pub fn emitter(&self, kind: &str) -> String {
        match &self.instance {
            Some(instance) => format!("{kind}-{instance}"),
            None => kind.to_owned(),
        }
    }

    /// The settings of the emitter of `kind` on this instance (paths with `{emitter}`
    /// replaced by its name).
    pub fn settings(&self, kind: &str) -> AuditSettings {
        self.settings_of(&self.emitter(kind))
    }

    /// The settings of the emitter named `emitter` (as it appears in events).
    fn settings_of(&self, emitter: &str) -> AuditSettings {
        let mut s = self.template.clone();
        s.spool.emitter = emitter.to_owned();
        s.spool.dir = substitute(&s.spool.dir, emitter);
        if let Some(cp) = &mut s.spool.checkpoint {
            cp.key_file = substitute(&cp.key_file, emitter);
        }
        for sink in &mut s.sinks {
            if let SinkKind::File { path, .. } = &mut sink.kind {
                *path = substitute(path, emitter);
            }
        }
        s
    }

    /// The checkpoint public key file of the emitter named `emitter` (as in its events:
    /// `<key_file>.pub`), when checkpoints are on.
    pub fn public_key_file(&self, emitter: &str) -> Option<PathBuf> {
        self.settings_of(emitter)
            .spool
            .checkpoint
            .map(|cp| crate::chain::checkpoint::public_key_path(&cp.key_file))
    }
}

fn substitute(path: &Path, emitter: &str) -> PathBuf {
    match path.to_str() {
        Some(text) => PathBuf::from(text.replace(EMITTER_PLACEHOLDER, emitter)),
        None => path.to_owned(),
    }
}

fn has_placeholder(path: &Path) -> bool {
    path.to_str()
        .is_some_and(|p| p.contains(EMITTER_PLACEHOLDER))
}

impl AuditConfig {
    /// Validates the section. `prefix` is its path in the file (`audit`), relative paths are
    /// taken from `base`, defaults go below `state_dir`. Returns every problem found.
    pub fn validate(
        &self,
        prefix: &str,
        base: &Path,
        state_dir: &Path,
    ) -> Result<AuditTemplate, Problems> {
        let Self {
            spool,
            checkpoint,
            redacted_keys,
            sinks,
            ingest_url,
            instance,
        } = self;
        let mut problems = Problems::default();
        if let Some(name) = instance
            && (name.is_empty()
                || name.len() > 32
                || !name
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'))
        {
            problems.push(
                format!("{prefix}.instance"),
                "use 1 to 32 lower-case letters, digits or `-`",
            );
        }
        let resolve = |p: &Path| resolve_path(base, p);
        let spool_dir = match &spool.dir {
            Some(dir) => {
                if !has_placeholder(dir) {
                    problems.push(
                        format!("{prefix}.spool.dir"),
                        format!(
                            "must contain {EMITTER_PLACEHOLDER}: every emitter has its own spool"
                        ),
                    );
                }
                resolve(dir)
            }
            None => state_dir.join("audit").join(EMITTER_PLACEHOLDER),
        };
        let mut template = AuditSettings::new("proxy", spool_dir);
        template.spool.max_bytes = spool.max_bytes;
        template.spool.segment_bytes = spool.segment_bytes;
        template.spool.full_policy = match spool.full_policy {
            FullPolicyConfig::Block { timeout_seconds } => FullPolicy::Block {
                timeout: Duration::from_secs(timeout_seconds),
            },
            FullPolicyConfig::Reject => FullPolicy::Reject,
        };
        template.spool.checkpoint = checkpoint.enabled.then(|| CheckpointSettings {
            key_file: checkpoint.key_file.as_deref().map_or_else(
                || {
                    state_dir
                        .join("keys")
                        .join(format!("audit-checkpoint-{EMITTER_PLACEHOLDER}.key"))
                },
                resolve,
            ),
            every_events: checkpoint.every_events,
            interval: Duration::from_secs(checkpoint.interval_seconds),
        });
        template.redacted_keys = redacted_keys.clone();
        let must_exist = |path: String, file: &Path, problems: &mut Problems| {
            let file = resolve(file);
            if !file.is_file() {
                problems.push(path, format!("{} is not a readable file", file.display()));
            }
            file
        };
        for (i, sink) in sinks.iter().enumerate() {
            let at = format!("{prefix}.sinks[{i}]");
            let settings = match sink {
                SinkConfig::File {
                    name,
                    path,
                    max_bytes,
                } => {
                    let path = match path {
                        Some(p) => {
                            if !has_placeholder(p) {
                                problems.push(format!("{at}.path"), format!("must contain {EMITTER_PLACEHOLDER}: give each emitter its own file"));
                            }
                            resolve(p)
                        }
                        None => state_dir
                            .join("audit")
                            .join(format!("{EMITTER_PLACEHOLDER}.jsonl")),
                    };
                    SinkSettings {
                        name: name.clone(),
                        kind: SinkKind::File {
                            path,
                            max_bytes: *max_bytes,
                        },
                    }
                }
                SinkConfig::Syslog { name, addr, tls } => SinkSettings {
                    name: name.clone(),
                    kind: SinkKind::Syslog {
                        addr: addr.clone(),
                        tls: tls.as_ref().map(|t| SyslogTls {
                            ca_file: must_exist(
                                format!("{at}.tls.ca_file"),
                                &t.ca_file,
                                &mut problems,
                            ),
                            client_cert_file: t.client_cert_file.as_deref().map(|f| {
                                must_exist(format!("{at}.tls.client_cert_file"), f, &mut problems)
                            }),
                            client_key_file: t.client_key_file.as_deref().map(|f| {
                                must_exist(format!("{at}.tls.client_key_file"), f, &mut problems)
                            }),
                            server_name: t.server_name.clone(),
                        }),
                    },
                },
                SinkConfig::Http {
                    name,
                    url,
                    format,
                    token_file,
                    ca_file,
                    batch_max_events,
                } => SinkSettings {
                    name: name.clone(),
                    kind: SinkKind::Http {
                        url: url.clone(),
                        format: match format {
                            HttpFormatConfig::Ndjson => HttpFormat::Ndjson,
                            HttpFormatConfig::SplunkHec => HttpFormat::SplunkHec,
                        },
                        token_file: token_file
                            .as_deref()
                            .map(|f| must_exist(format!("{at}.token_file"), f, &mut problems)),
                        ca_file: ca_file
                            .as_deref()
                            .map(|f| must_exist(format!("{at}.ca_file"), f, &mut problems)),
                        batch_max_events: *batch_max_events,
                    },
                },
            };
            template.sinks.push(settings);
        }
        for (i, sink) in template.sinks.iter().enumerate() {
            // Names the binary gives its own sinks.
            if ["database", "ingest"].contains(&sink.name.as_str()) {
                problems.push(
                    format!("{prefix}.sinks[{i}].name"),
                    format!("{:?} is reserved for a built-in sink", sink.name),
                );
            }
        }
        if let Some(url) = ingest_url {
            match reqwest::Url::parse(url) {
                Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.has_host() => {}
                Ok(_) => problems.push(
                    format!("{prefix}.ingest_url"),
                    "must be an http:// or https:// URL",
                ),
                Err(e) => problems.push(format!("{prefix}.ingest_url"), format!("not a URL: {e}")),
            }
        }
        let template = AuditTemplate {
            template,
            ingest_url: ingest_url.clone(),
            instance: instance.clone(),
        };
        // The settings checks are the same for every emitter; report them once.
        if let Err(errors) = template.settings(EMITTERS[0]).validate() {
            for e in errors {
                problems.push(config_path(prefix, &e.path), e.message);
            }
        }
        problems.into_result(|| template)
    }
}

/// The file path of a settings error path (`spool.checkpoint.interval` →
/// `audit.checkpoint.interval_seconds`).
fn config_path(prefix: &str, settings_path: &str) -> String {
    let mapped = match settings_path {
        "spool.full_policy.timeout" => "spool.full_policy.timeout_seconds".to_owned(),
        "spool.checkpoint.interval" => "checkpoint.interval_seconds".to_owned(),
        p => match p.strip_prefix("spool.checkpoint.") {
            Some(rest) => format!("checkpoint.{rest}"),
            None => p.to_owned(),
        },
    };
    format!("{prefix}.{mapped}")
}

/// An exclusive lock on a spool folder, held for as long as the value lives, so that two
/// processes never write one chain (`portcullis up` and a CLI command, or two instances on
/// one state folder). The lock file is `<dir>/spool.lock`; the operating system releases it
/// when the process ends, however it ends.
#[derive(Debug)]
pub struct SpoolLock {
    _file: File,
}

impl SpoolLock {
    /// Takes the lock, waiting up to `wait` while another process holds it.
    pub fn acquire(dir: &Path, wait: Duration) -> io::Result<Self> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let path = dir.join("spool.lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let deadline = Instant::now() + wait;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Self { _file: file }),
                Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(fs::TryLockError::WouldBlock) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        format!("audit spool {} is in use by another process", dir.display()),
                    ));
                }
                Err(fs::TryLockError::Error(e)) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_give_one_folder_key_and_file_per_emitter() {
        let t = AuditConfig::default()
            .validate("audit", Path::new(""), Path::new("var"))
            .unwrap();
        let s = t.settings("backend");
        assert_eq!(s.spool.emitter, "backend");
        assert_eq!(s.spool.dir, Path::new("var/audit/backend"));
        assert_eq!(
            s.spool.checkpoint.unwrap().key_file,
            Path::new("var/keys/audit-checkpoint-backend.key")
        );
        assert_eq!(
            s.sinks[0].kind,
            SinkKind::File {
                path: PathBuf::from("var/audit/backend.jsonl"),
                max_bytes: 64 << 20
            }
        );
        assert_eq!(
            t.ingest_url.as_deref(),
            Some("http://127.0.0.1:8081/internal/audit/ingest")
        );
    }

    #[test]
    fn every_problem_names_its_path() {
        let config = AuditConfig {
            spool: SpoolConfig {
                dir: Some("/tmp/shared".into()),
                segment_bytes: 10,
                full_policy: FullPolicyConfig::Block { timeout_seconds: 0 },
                ..SpoolConfig::default()
            },
            checkpoint: CheckpointConfig {
                interval_seconds: 0,
                ..CheckpointConfig::default()
            },
            redacted_keys: vec![" ".into()],
            sinks: vec![
                SinkConfig::File {
                    name: "file".into(),
                    path: Some("/tmp/a.jsonl".into()),
                    max_bytes: 1,
                },
                SinkConfig::Http {
                    name: "siem".into(),
                    url: "ftp://x".into(),
                    format: HttpFormatConfig::SplunkHec,
                    token_file: Some("/nonexistent/token".into()),
                    ca_file: None,
                    batch_max_events: 0,
                },
            ],
            ingest_url: Some("nope".into()),
            instance: Some("Not Valid".into()),
        };
        let problems = config
            .validate("audit", Path::new(""), Path::new("var"))
            .unwrap_err();
        let joined = problems.to_string();
        for path in [
            "audit.spool.dir:",
            "audit.spool.segment_bytes:",
            "audit.spool.full_policy.timeout_seconds:",
            "audit.checkpoint.interval_seconds:",
            "audit.redacted_keys[0]:",
            "audit.sinks[0].path:",
            "audit.sinks[0].max_bytes:",
            "audit.sinks[1].url:",
            "audit.sinks[1].token_file:",
            "audit.sinks[1].batch_max_events:",
            "audit.ingest_url:",
            "audit.instance:",
        ] {
            assert!(joined.contains(path), "{path} missing from:\n{joined}");
        }
    }

    #[test]
    fn a_spool_is_locked_by_one_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = SpoolLock::acquire(dir.path(), Duration::ZERO).unwrap();
        // flock locks belong to the open file description: a second open conflicts even
        // within one process.
        let second = SpoolLock::acquire(dir.path(), Duration::from_millis(150));
        assert!(second.is_err());
        drop(first);
        SpoolLock::acquire(dir.path(), Duration::ZERO).unwrap();
    }
}
