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
    /// Set when both policy folders are the default `policies` and it does not exist: the
    /// built-in bundle is written here on first start ([`Settings::prepare_policy`]).
    pub builtin_policy_dir: Option<PathBuf>,
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

/// Most structural mistakes reported from one file; past this the rest is not read.
const MAX_STRUCTURAL_PROBLEMS: usize = 50;

#[cfg(test)]
/// Parses YAML text, reporting the path of every structural mistake (unknown keys,
/// wrong types) at once.
///
/// serde stops at the first mistake, so each one found is recorded, the offending key
/// is taken out of the document and the rest is parsed again: a misspelt key no longer
/// hides the problems after it. The value problems of [`validate`] are then checked on
/// what remains (with defaults where keys were taken out), and [`load`] reports both.
pub fn parse(text: &str) -> Result<PortcullisConfig, ConfigError> {
    let (config, problems) = parse_collecting(text)?;
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

/// What [`parse`] does, returning the structural problems beside the configuration
/// parsed without them.
fn parse_collecting(text: &str) -> Result<(PortcullisConfig, Vec<String>), ConfigError> {
    let mut value: yaml_serde::Value = yaml_serde::from_str(text)
        .map_err(|e| ConfigError::Syntax(format!("not valid YAML: {e}")))?;
    if value.is_null() {
        return Ok((PortcullisConfig::default(), Vec::new()));
    }
    let mut problems = Vec::new();
    loop {
        match serde_path_to_error::deserialize::<_, PortcullisConfig>(value.clone()) {
            Ok(config) => return Ok((config, problems)),
            Err(e) => {
                let path = e.path().to_string();
                let inner = e.into_inner().to_string();
                // serde_path_to_error's path of an unknown field ends with the field;
                // a structural error's path is the key that holds the bad value.
                let path = match unknown_field(&inner) {
                    Some(key) if path != key && !path.ends_with(&format!(".{key}")) => {
                        join(&path, key)
                    }
                    _ => path,
                };
                problems.push(structural_problem(&path, &inner));
                let removed = remove_at(&mut value, &path);
                if !removed || problems.len() >= MAX_STRUCTURAL_PROBLEMS {
                    return Err(ConfigError::Invalid(problems));
                }
            }
        }
    }
}

/// The key named by serde's "unknown field `x`, expected …" message.
fn unknown_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(key, _)| key)
}

fn join(path: &str, key: &str) -> String {
    if path == "." || path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn structural_problem(path: &str, message: &str) -> String {
    if path == "." {
        message.to_owned()
    } else {
        format!("{path}: {message}")
    }
}

/// Removes the entry at a serde path (`a.b[2].c`) from `value`; returns whether it
/// removed one (the root, `.`, cannot be removed).
fn remove_at(value: &mut yaml_serde::Value, path: &str) -> bool {
    let mut steps: Vec<Step> = Vec::new();
    if path != "." {
        for part in path.split('.') {
            let (name, mut rest) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            if !name.is_empty() {
                steps.push(Step::Key(name.to_owned()));
            }
            while let Some(end) = rest.find(']') {
                match rest[1..end].parse() {
                    Ok(i) => steps.push(Step::Index(i)),
                    Err(_) => return false,
                }
                rest = &rest[end + 1..];
            }
        }
    }
    let Some(last) = steps.pop() else {
        return false;
    };
    let mut node = value;
    for step in &steps {
        let next = match (step, node) {
            (Step::Key(k), yaml_serde::Value::Mapping(m)) => m.get_mut(k.as_str()),
            (Step::Index(i), yaml_serde::Value::Sequence(s)) => s.get_mut(*i),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => return false,
        }
    }
    match (last, node) {
        (Step::Key(k), yaml_serde::Value::Mapping(m)) => m.remove(k.as_str()).is_some(),
        (Step::Index(i), yaml_serde::Value::Sequence(s)) if i < s.len() => {
            s.remove(i);
            true
        }
        _ => false,
    }
}

enum Step {
    Key(String),
    Index(usize),
}

/// Reads and validates a configuration file, or the embedded defaults when
/// `file` is `None`. Relative paths in the file are resolved from its folder.
pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
    let (config, base) = match file {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.to_owned(), e))?;
            let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
            let (config, structural) = parse_collecting(&text)?;
            if !structural.is_empty() {
                // Value problems of what could be read, reported together.
                let mut all = structural;
                if let Err(ConfigError::Invalid(more)) = validate(config, &base) {
                    all.extend(more);
                }
                return Err(ConfigError::Invalid(all));
            }
            (config, base)
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
    // The default bundle folder, `policies` next to the file, may be absent (a fresh
    // installation, or a process started from another folder): then the built-in
    // bundle serves, written to the state folder on first start. Any other folder must
    // exist. (A file that spells out the default is treated as the default.)
    let default_policy = Path::new(DEFAULT_POLICY_DIR);
    let configured =
        config.proxy.policy.dir != default_policy || config.backend.policy_dir != default_policy;
    let builtin_policy_dir = if !configured && !resolve(base, default_policy).is_dir() {
        let dir = state_dir.join(DEFAULT_POLICY_DIR);
        config.proxy.policy.dir.clone_from(&dir);
        config.backend.policy_dir.clone_from(&dir);
        (!dir.is_dir()).then_some(dir)
    } else {
        for (path, dir) in [
            ("proxy.policy.dir", &config.proxy.policy.dir),
            ("backend.policy_dir", &config.backend.policy_dir),
        ] {
            let dir = resolve(base, dir);
            if !dir.is_dir() {
                problems.push(format!("{path}: {} is not a folder", dir.display()));
            }
        }
        None
    };
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
                builtin_policy_dir,
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

/// The policy folder used when none is configured.
const DEFAULT_POLICY_DIR: &str = "policies";

impl Settings {
    /// Writes the built-in policy bundle when the configuration relies on it and it
    /// is not there yet; says so in the log.
    pub fn prepare_policy(&self) -> Result<(), portcullis_authz::embedded::WriteError> {
        if let Some(dir) = &self.builtin_policy_dir
            && portcullis_authz::embedded::write_default_bundle(dir)?
        {
            tracing::warn!(dir = %dir.display(),
                "no policy folder configured and none at ./policies: wrote the built-in bundle here; edit it there");
        }
        Ok(())
    }
}

/// JSON Schema of the configuration file.
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(PortcullisConfig)).unwrap_or_default()
}

#[cfg(test)]
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
        let Err(ConfigError::Invalid(lines)) = parse("proxy:\n  listen:\n    htps: x\n") else {
            panic!("unknown field accepted")
        };
        let msg = lines.join("\n");
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
    fn unknown_keys_do_not_hide_the_problems_after_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("portcullis.yaml");
        std::fs::write(
            &file,
            "proxy:\n  listen: {htps: x, https: nope}\n  routez: []\nbackend:\n  listen: [1]\nlog: {level: 'info,[[['}\nbogus: 1\n",
        )
        .unwrap();
        let Err(ConfigError::Invalid(lines)) = load(Some(&file)) else {
            panic!("invalid config accepted")
        };
        let joined = lines.join("\n");
        for path in [
            "proxy.listen.htps:",
            "proxy.routez:",
            "backend.listen:",
            "bogus:",
            "proxy.listen.https:",
            "log.level:",
        ] {
            assert!(joined.contains(path), "{path} missing from:\n{joined}");
        }
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
