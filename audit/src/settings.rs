//! Validated settings. The binary maps its YAML onto these; [`AuditSettings::validate`]
//! reports every problem with its path (`sinks[1].url: …`).

use portcullis_contract::problems::Problems;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything [`crate::AuditLog::start`] needs.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditSettings {
    /// Where events are written before delivery, and how the chain is kept.
    pub spool: SpoolSettings,
    /// Extra detail keys whose values are replaced by `[redacted]` (exact match,
    /// case-insensitive, at any depth). Secret-looking keys are always redacted
    /// (see [`crate::is_secret_key`]).
    pub redacted_keys: Vec<String>,
    /// Where events are delivered; at least one (counting sinks given to
    /// [`crate::AuditLog::start_with_sinks`]).
    pub sinks: Vec<SinkSettings>,
}

impl AuditSettings {
    /// Defaults for `emitter` spooling into `spool_dir` (see [`SpoolSettings::new`]), no extra
    /// redacted keys and no sinks.
    pub fn new(emitter: impl Into<String>, spool_dir: impl Into<PathBuf>) -> Self {
        Self {
            spool: SpoolSettings::new(emitter, spool_dir),
            redacted_keys: Vec::new(),
            sinks: Vec::new(),
        }
    }

    /// Checks every field; returns all problems found, each with its path.
    pub fn validate(&self) -> Result<(), Problems> {
        let Self {
            spool,
            redacted_keys,
            sinks,
        } = self;
        let mut errors = Problems::default();
        if let Err(e) = spool.validate() {
            errors.extend_under("spool", e);
        }
        for (i, key) in redacted_keys.iter().enumerate() {
            if key.trim().is_empty() {
                errors.push(format!("redacted_keys[{i}]"), "must not be empty");
            }
        }
        for (i, sink) in sinks.iter().enumerate() {
            sink.validate(&format!("sinks[{i}]"), &mut errors);
            if sinks[..i].iter().any(|s| s.name == sink.name) {
                errors.push(
                    format!("sinks[{i}].name"),
                    format!("{:?} is used by an earlier sink", sink.name),
                );
            }
        }
        errors.into_result(|| ())
    }
}

/// The spool and its hash chain.
#[derive(Debug, Clone, PartialEq)]
pub struct SpoolSettings {
    /// Name of the chain (`proxy`, `backend`): 1–64 of `a-z 0-9 _ -`. A spool folder belongs
    /// to one emitter.
    pub emitter: String,
    /// The spool folder (created 0700 if missing).
    pub dir: PathBuf,
    /// Most bytes the spool may hold before [`FullPolicy`] applies. Default 1 GiB; at least
    /// twice `segment_bytes`.
    pub max_bytes: u64,
    /// Size at which a new segment file is started. Default 16 MiB; at least 64 KiB. An event
    /// line larger than this is refused.
    pub segment_bytes: u64,
    /// What an append does when the spool is full. Default: block for 5 s.
    pub full_policy: FullPolicy,
    /// Signed checkpoints; `None` turns them off. Default: key `<dir>/checkpoint.key`,
    /// every 1000 events or 60 s.
    pub checkpoint: Option<CheckpointSettings>,
}

impl SpoolSettings {
    /// The defaults listed on each field.
    pub fn new(emitter: impl Into<String>, dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        Self {
            emitter: emitter.into(),
            checkpoint: Some(CheckpointSettings {
                key_file: dir.join("checkpoint.key"),
                every_events: 1000,
                interval: Duration::from_secs(60),
            }),
            dir,
            max_bytes: 1 << 30,
            segment_bytes: 16 << 20,
            full_policy: FullPolicy::Block {
                timeout: Duration::from_secs(5),
            },
        }
    }

    /// Checks every field; paths are relative to the spool (`max_bytes`).
    pub fn validate(&self) -> Result<(), Problems> {
        let Self {
            emitter,
            dir,
            max_bytes,
            segment_bytes,
            full_policy,
            checkpoint,
        } = self;
        let mut errors = Problems::default();
        if let Err(message) = check_name(emitter) {
            errors.push("emitter", message);
        }
        if dir.as_os_str().is_empty() {
            errors.push("dir", "must not be empty");
        }
        if *segment_bytes < MIN_SEGMENT_BYTES {
            errors.push(
                "segment_bytes",
                format!("must be at least {MIN_SEGMENT_BYTES}"),
            );
        }
        if *max_bytes < segment_bytes.saturating_mul(2) {
            errors.push(
                "max_bytes",
                "must be at least twice segment_bytes (the segment being written is never freed)",
            );
        }
        if let FullPolicy::Block { timeout } = full_policy
            && (timeout.is_zero() || *timeout > Duration::from_secs(3600))
        {
            errors.push("full_policy.timeout", "must be between 1 ms and 1 hour");
        }
        if let Some(CheckpointSettings {
            key_file,
            every_events,
            interval,
        }) = checkpoint
        {
            if key_file.as_os_str().is_empty() {
                errors.push("checkpoint.key_file", "must not be empty");
            }
            if *every_events == 0 {
                errors.push("checkpoint.every_events", "must be at least 1");
            }
            if *interval < Duration::from_secs(1) {
                errors.push("checkpoint.interval", "must be at least 1 s");
            }
        }
        errors.into_result(|| ())
    }
}

/// Smallest allowed [`SpoolSettings::segment_bytes`].
pub const MIN_SEGMENT_BYTES: u64 = 64 * 1024;

/// What an append does when the spool holds `max_bytes`. Events are never dropped: either the
/// caller waits or it gets an error and must refuse the action it wanted to audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullPolicy {
    /// Wait for delivery to free space, at most `timeout`, then fail with
    /// [`crate::SpoolError::FullTimeout`] (fail closed).
    Block {
        /// How long an append may wait, counted from when it was submitted.
        timeout: Duration,
    },
    /// Fail at once with [`crate::SpoolError::Full`], so the caller can refuse new sessions.
    Reject,
}

/// Signed checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointSettings {
    /// Ed25519 private key, PKCS#8 PEM, mode 0600; generated if missing. Its public key is
    /// written to `<key_file>.pub` for `portcullis audit verify`.
    pub key_file: PathBuf,
    /// Write a checkpoint after this many events.
    pub every_events: u64,
    /// … or when this much time has passed and events were written since the last one.
    pub interval: Duration,
}

/// One delivery target.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkSettings {
    /// 1–64 of `a-z 0-9 _ -`, unique: names the offset file `<spool>/<name>.offset` and the
    /// `sink` metric label.
    pub name: String,
    /// What kind of sink.
    pub kind: SinkKind,
}

/// The built-in sinks.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SinkKind {
    /// JSON lines appended to `path` (must end in `.jsonl`); when it reaches `max_bytes` it is
    /// renamed `<stem>.<NNNNNNNN>.jsonl` (ascending) and a new file is started.
    File {
        /// The active file.
        path: PathBuf,
        /// Rotation size; at least 4 KiB.
        max_bytes: u64,
    },
    /// RFC 5424 syslog over TCP, RFC 5425 octet-counted framing, optionally TLS.
    Syslog {
        /// `host:port`.
        addr: String,
        /// TLS, or plain TCP when `None`.
        tls: Option<SyslogTls>,
    },
    /// HTTP POST of batches.
    Http {
        /// `http://` or `https://` endpoint (for Splunk: `…/services/collector/event`).
        url: String,
        /// Body format.
        format: HttpFormat,
        /// File holding the token (`Authorization: Bearer <token>` for NDJSON,
        /// `Splunk <token>` for HEC). Required for HEC.
        token_file: Option<PathBuf>,
        /// Extra CA certificates (PEM) to trust besides the public roots.
        ca_file: Option<PathBuf>,
        /// Most events per request, 1–10000.
        batch_max_events: usize,
    },
}

/// TLS for the syslog sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogTls {
    /// CA certificates (PEM) that sign the receiver's certificate. Only these are trusted.
    pub ca_file: PathBuf,
    /// Client certificate chain (PEM) for mutual TLS; needs `client_key_file`.
    pub client_cert_file: Option<PathBuf>,
    /// Client private key (PEM).
    pub client_key_file: Option<PathBuf>,
    /// Name to verify the receiver's certificate against; default: the host of `addr`.
    pub server_name: Option<String>,
}

/// Body format of the HTTP sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpFormat {
    /// One event JSON per line, `Content-Type: application/x-ndjson`.
    Ndjson,
    /// Splunk HTTP Event Collector: one `{"event": …, "time": …, "sourcetype":
    /// "portcullis:audit"}` per line.
    SplunkHec,
}

impl SinkSettings {
    fn validate(&self, path: &str, errors: &mut Problems) {
        let Self { name, kind } = self;
        if let Err(message) = check_name(name) {
            errors.push(format!("{path}.name"), message);
        }
        let mut err = |field: &str, message: &str| {
            errors.push(format!("{path}.{field}"), message);
        };
        match kind {
            SinkKind::File {
                path: file,
                max_bytes,
            } => {
                let ok = file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.len() > ".jsonl".len() && n.ends_with(".jsonl"));
                if !ok {
                    err("path", "must name a file ending in .jsonl");
                }
                if *max_bytes < 4096 {
                    err("max_bytes", "must be at least 4096");
                }
            }
            SinkKind::Syslog { addr, tls } => {
                if split_host_port(addr).is_none() {
                    err("addr", "must be host:port");
                }
                if let Some(tls) = tls {
                    if tls.client_cert_file.is_some() != tls.client_key_file.is_some() {
                        err(
                            "tls.client_cert_file",
                            "client_cert_file and client_key_file go together",
                        );
                    }
                    if tls.server_name.as_deref().is_some_and(str::is_empty) {
                        err("tls.server_name", "must not be empty");
                    }
                }
            }
            SinkKind::Http {
                url,
                format,
                token_file,
                ca_file: _,
                batch_max_events,
            } => match reqwest::Url::parse(url) {
                Err(e) => err("url", &format!("not a URL: {e}")),
                Ok(parsed) => {
                    let scheme = parsed.scheme();
                    if scheme != "http" && scheme != "https" {
                        err("url", "must be http:// or https://");
                    }
                    let host = parsed.host_str().unwrap_or_default();
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    let loopback = host == "localhost"
                        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
                    if token_file.is_some() && scheme == "http" && !loopback {
                        err(
                            "url",
                            "a token is only sent over https (or to a loopback address)",
                        );
                    }
                    if *format == HttpFormat::SplunkHec && token_file.is_none() {
                        err("token_file", "Splunk HEC needs a token file");
                    }
                    if !(1..=10_000).contains(batch_max_events) {
                        err("batch_max_events", "must be between 1 and 10000");
                    }
                }
            },
        }
    }
}

/// `host:port` → (host, port); IPv6 hosts in brackets.
pub(crate) fn split_host_port(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().ok().map(|_| (v6, port)),
        None if host.is_empty() || host.contains([':', '[', ']']) => None,
        None if host.contains(char::is_whitespace) => None,
        None => Some((host, port)),
    }
}

fn check_name(name: &str) -> Result<(), &'static str> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err("must be 1 to 64 characters of a-z, 0-9, _ and -")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_once_a_sink_is_named() {
        let mut settings = AuditSettings::new("proxy", "var/audit");
        settings.sinks.push(SinkSettings {
            name: "file".into(),
            kind: SinkKind::File {
                path: "var/audit-out/audit.jsonl".into(),
                max_bytes: 1 << 20,
            },
        });
        settings.validate().unwrap();
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let mut settings = AuditSettings::new("Proxy!", "var/audit");
        settings.spool.max_bytes = 10;
        settings.sinks = vec![
            SinkSettings {
                name: "siem".into(),
                kind: SinkKind::Syslog {
                    addr: "nohost".into(),
                    tls: None,
                },
            },
            SinkSettings {
                name: "siem".into(),
                kind: SinkKind::Http {
                    url: "http://splunk.example:8088/services/collector/event".into(),
                    format: HttpFormat::SplunkHec,
                    token_file: Some("hec.token".into()),
                    ca_file: None,
                    batch_max_events: 0,
                },
            },
        ];
        let errors = settings.validate().unwrap_err();
        let paths: Vec<String> = errors.into_iter().map(|e| e.path).collect();
        assert_eq!(
            paths,
            [
                "spool.emitter",
                "spool.max_bytes",
                "sinks[0].addr",
                "sinks[1].url",
                "sinks[1].batch_max_events",
                "sinks[1].name"
            ]
        );
    }

    #[test]
    fn host_port() {
        assert_eq!(split_host_port("siem:6514"), Some(("siem", 6514)));
        assert_eq!(split_host_port("[::1]:6514"), Some(("::1", 6514)));
        assert_eq!(split_host_port("::1:6514"), None);
        assert_eq!(split_host_port("siem"), None);
        assert_eq!(split_host_port("siem:0"), None);
    }
}
