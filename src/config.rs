//! `portcullis.yaml`: the file's structure and its validation into
//! [`Settings`]. Each crate owns its section; this module composes them, so
//! `check-config` and every command that starts a service run the same code.

use std::path::{Path, PathBuf};

use portcullis_audit::{AuditConfig, AuditTemplate};
use portcullis_backend::{BackendConfig, BackendSettings};
use portcullis_proxy::{ProxyConfig, ProxySettings};
use schemars::JsonSchema;
use serde::Deserialize;

/// The whole configuration file. Every field has a default: an empty file
/// (or none) gives the embedded defaults.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PortcullisConfig {
    /// Folder for state: SQLite database, generated certificate, keys, audit
    /// spool. Relative paths are taken from the configuration file's folder.
    /// Default `var`.
    pub state_dir: Option<PathBuf>,
    /// Log output.
    pub log: LogConfig,
    /// The gateway.
    pub proxy: ProxyConfig,
    /// The ticket backend.
    pub backend: BackendConfig,
    /// Audit events of proxy, backend and CLI: spool, checkpoints, sinks.
    pub audit: AuditConfig,
}

/// Log output on standard error.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `json` (default) or `text`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `info,portcullis::access=warn`.
    /// Default `info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            level: "info".to_owned(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Json,
    Text,
}

/// Everything validated.
#[derive(Debug)]
pub struct Settings {
    pub state_dir: PathBuf,
    pub log_format: LogFormat,
    pub log_filter: tracing_subscriber::EnvFilter,
    pub proxy: ProxySettings,
    pub backend: BackendSettings,
    /// Each emitter's audit settings (`proxy`, `backend`, `cli`).
    pub audit: AuditTemplate,
}

/// Why a configuration was refused.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read(PathBuf, std::io::Error),
    /// The file is not a configuration of the expected shape.
    Syntax(String),
    /// The values are wrong; one line each, `path: message`.
    Invalid(Vec<String>),
}

impl ConfigError {
    /// One line per problem, for the operator.
    pub fn lines(&self) -> Vec<String> {
        match self {
            Self::Read(path, e) => vec![format!("cannot read {}: {e}", path.display())],
            Self::Syntax(msg) => vec![msg.clone()],
            Self::Invalid(lines) => lines.clone(),
        }
    }
}

/// Parses YAML text, reporting the path of a structural mistake.
pub fn parse(text: &str) -> Result<PortcullisConfig, ConfigError> {
    let value: yaml_serde::Value = yaml_serde::from_str(text)
        .map_err(|e| ConfigError::Syntax(format!("not valid YAML: {e}")))?;
    if value.is_null() {
        return Ok(PortcullisConfig::default());
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        ConfigError::Syntax(if path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        })
    })
}

/// Reads and validates a configuration file, or the embedded defaults when
/// `file` is `None`. Relative paths in the file are resolved from its folder.
pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
    let (config, base) = match file {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.to_owned(), e))?;
            let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
            (parse(&text)?, base)
        }
        None => (PortcullisConfig::default(), PathBuf::new()),
    };
    validate(config, &base)
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() || base.as_os_str().is_empty() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

/// Validates a parsed configuration, collecting every problem.
pub fn validate(mut config: PortcullisConfig, base: &Path) -> Result<Settings, ConfigError> {
    let mut problems = Vec::new();
    let state_dir = resolve(
        base,
        config.state_dir.as_deref().unwrap_or(Path::new("var")),
    );
    for file in [
        &mut config.proxy.tls.certificate_file,
        &mut config.proxy.tls.private_key_file,
    ]
    .into_iter()
    .flatten()
    {
        *file = resolve(base, file);
    }
    let log_filter = match tracing_subscriber::EnvFilter::try_new(&config.log.level) {
        Ok(f) => Some(f),
        Err(e) => {
            problems.push(format!("log.level: {e}"));
            None
        }
    };
    let proxy = config
        .proxy
        .validate("proxy", base, &state_dir)
        .map_err(|e| problems.extend(e))
        .ok();
    let backend = config
        .backend
        .validate("backend", base, &state_dir)
        .map_err(|e| problems.extend(e))
        .ok();
    let audit = config
        .audit
        .validate("audit", base, &state_dir)
        .map_err(|e| problems.extend(e))
        .ok();
    if let (Some(p), Some(b)) = (&proxy, &backend) {
        for (name, addr) in [
            ("https", Some(p.https_addr)),
            ("http", p.http_addr),
            ("admin", Some(p.admin_addr)),
        ] {
            if addr == Some(b.listen) {
                problems.push(format!(
                    "backend.listen: same address as proxy.listen.{name}"
                ));
            }
        }
    }
    match (proxy, backend, audit, log_filter) {
        (Some(mut proxy), Some(mut backend), Some(audit), Some(log_filter))
            if problems.is_empty() =>
        {
            proxy.audit = audit.settings("proxy");
            proxy.audit_ingest_url = audit.ingest_url.clone();
            backend.audit = audit.settings("backend");
            Ok(Settings {
                state_dir,
                log_format: config.log.format,
                log_filter,
                proxy,
                backend,
                audit,
            })
        }
        _ => Err(ConfigError::Invalid(problems)),
    }
}

/// JSON Schema of the configuration file.
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(PortcullisConfig)).unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults() {
        let c = parse("# nothing but a comment\n").unwrap();
        let s = validate(c, Path::new("")).unwrap();
        assert_eq!(s.proxy.https_addr.to_string(), "0.0.0.0:8443");
        assert_eq!(s.backend.listen.to_string(), "127.0.0.1:8081");
    }

    #[test]
    fn structural_errors_name_their_path() {
        let Err(ConfigError::Syntax(msg)) = parse("proxy:\n  listen:\n    htps: x\n") else {
            panic!("unknown field accepted")
        };
        assert!(msg.starts_with("proxy.listen"), "{msg}");
        assert!(msg.contains("htps"), "{msg}");
    }

    #[test]
    fn revocation_channels_are_validated_on_both_sides() {
        let c = parse(
            "proxy:\n  auth: {revocation_feed_url: null, revocation_pubsub: {url: 'not a url', channel: ''}}\nbackend:\n  identity: {revocation_pubsub: {url: 'http://x', channel: ''}}\n",
        )
        .unwrap();
        let Err(ConfigError::Invalid(lines)) = validate(c, Path::new("")) else {
            panic!("invalid revocation channels accepted")
        };
        let joined = lines.join("\n");
        for path in [
            "proxy.auth.revocation_pubsub.url:",
            "proxy.auth.revocation_pubsub.channel:",
            "proxy.auth.revocation_pubsub:",
            "backend.identity.revocation_pubsub.url:",
            "backend.identity.revocation_pubsub.channel:",
        ] {
            assert!(joined.contains(path), "{path} missing from:\n{joined}");
        }
        assert!(
            !joined.contains("not a url"),
            "the URL may hold a password: {joined}"
        );
        // The channel defaults to the same name on both sides.
        let c = parse(
            "proxy:\n  auth: {revocation_pubsub: {url: 'redis://127.0.0.1:6379'}}\nbackend:\n  identity: {revocation_pubsub: {url: 'redis://127.0.0.1:6379'}}\n",
        )
        .unwrap();
        let s = validate(c, Path::new("")).unwrap();
        assert_eq!(
            s.proxy.revocation_pubsub.unwrap().channel,
            "portcullis:revocations"
        );
        assert_eq!(
            s.backend.identity.revocation_pubsub.unwrap().channel,
            "portcullis:revocations"
        );
    }

    #[test]
    fn every_value_error_is_reported() {
        let c = parse(
            "proxy:\n  listen: {https: nope, admin: 127.0.0.1:1}\n  trusted_proxies: [10.0.0.0/33]\n  routes:\n    - {name: a, path_prefix: /a/, upstream: missing}\nlog: {level: 'info,[[['}\naudit: {spool: {max_bytes: 1}, sinks: [{kind: file}, {kind: http, name: siem, url: 'ftp://x'}]}\n",
        )
        .unwrap();
        let Err(ConfigError::Invalid(lines)) = validate(c, Path::new("")) else {
            panic!("invalid config accepted")
        };
        let joined = lines.join("\n");
        for path in [
            "proxy.listen.https:",
            "proxy.trusted_proxies[0]:",
            "proxy.routes[0].path_prefix:",
            "proxy.routes[0].upstream:",
            "log.level:",
            "audit.sinks[1].url:",
            "audit.spool.max_bytes:",
        ] {
            assert!(joined.contains(path), "{path} missing from:\n{joined}");
        }
    }
}
