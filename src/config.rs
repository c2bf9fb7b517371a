//! `portcullis.yaml`: the file's structure and its validation into
//! [`Settings`]. Each crate owns its section; this module composes them, so
//! `check-config` and every command that starts a service run the same code.

use std::path::{Path, PathBuf};

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use portcullis_audit::{AuditConfig, AuditTemplate};
use portcullis_backend::{BackendConfig, BackendSettings};
use portcullis_contract::problems::Problems;
use portcullis_contract::revocation::FEED_PATH;
use portcullis_contract::shared::{DEFAULT_POLICY_DIR, SharedConfig, resolve_path};
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
    /// What proxy and backend share: the policy bundle, the identity key, the
    /// revocation channel. Configured once here, handed to both.
    pub shared: SharedConfig,
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
    /// `auto` (default: `text` on a terminal, `json` otherwise), `json` or `text`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `debug,portcullis::access=info`. Default
    /// `info`. Unless the filter names them, pingora's own targets log from `warn` (its
    /// start-up and shutdown chatter is not for operators) and the per-request line
    /// (`portcullis::access`) is off: requests that matter are in the audit trail, and
    /// the metrics count the rest.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Auto,
            level: "info".to_owned(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Auto,
    Json,
    Text,
}

/// Quiet defaults added to the configured filter for the targets it does not name.
const QUIET_TARGETS: [(&str, &str); 2] = [("pingora", "warn"), ("portcullis::access", "off")];

/// The tracing filter for `level`: the configured directives, plus [`QUIET_TARGETS`]
/// for each target they leave unnamed.
pub fn log_filter(level: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    let mut directives = level.trim().to_owned();
    for (target, quiet) in QUIET_TARGETS {
        if !level.contains(target) {
            if !directives.is_empty() {
                directives.push(',');
            }
            directives.push_str(&format!("{target}={quiet}"));
        }
    }
    tracing_subscriber::EnvFilter::try_new(&directives).map_err(|e| e.to_string())
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
    /// The file is not YAML.
    Syntax(String),
    /// Keys or values are wrong: every problem found, each with its path.
    Invalid(Problems),
}

impl ConfigError {
    /// One line per problem, for the operator.
    pub fn lines(&self) -> Vec<String> {
        match self {
            Self::Read(path, e) => vec![format!("cannot read {}: {e}", path.display())],
            Self::Syntax(msg) => vec![msg.clone()],
            Self::Invalid(problems) => problems.clone().into_lines(),
        }
    }
}

/// Keys that moved: each is refused with a message naming its new place, so an old
/// file fails loudly instead of configuring one side only.
const MOVED: &[(&str, &str)] = &[
    ("proxy.policy.dir", "shared.policy_dir"),
    ("backend.policy_dir", "shared.policy_dir"),
    ("proxy.auth.identity_key_file", "shared.identity_key_file"),
    ("backend.identity_key_file", "shared.identity_key_file"),
    ("proxy.auth.revocation_pubsub", "shared.revocation_pubsub"),
    (
        "backend.identity.revocation_pubsub",
        "shared.revocation_pubsub",
    ),
];

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
    problems
        .into_result(|| config)
        .map_err(ConfigError::Invalid)
}

/// What [`parse`] does, returning the structural problems beside the configuration
/// parsed without them.
fn parse_collecting(text: &str) -> Result<(PortcullisConfig, Problems), ConfigError> {
    let mut value: yaml_serde::Value = yaml_serde::from_str(text)
        .map_err(|e| ConfigError::Syntax(format!("not valid YAML: {e}")))?;
    if value.is_null() {
        return Ok((PortcullisConfig::default(), Problems::default()));
    }
    let mut problems = Problems::default();
    for (old, new) in MOVED {
        if remove_at(&mut value, old) {
            problems.push(*old, format!("moved to `{new}`"));
        }
    }
    passwords_in_urls(&value, "", &mut problems);
    let follows = FollowsBackend::absent_in(&value);
    loop {
        match serde_path_to_error::deserialize::<_, PortcullisConfig>(value.clone()) {
            Ok(mut config) => {
                follows.apply(&mut config);
                return Ok((config, problems));
            }
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
                let message = match unknown_field(&inner) {
                    Some(key) if looks_like_a_secret(key) => format!(
                        "secrets are never written in the configuration: put the value in a \
                         file (mode 0600) and name that file with a `*_file` setting, or a \
                         systemd credential as `credential:NAME` ({inner})"
                    ),
                    _ => inner,
                };
                problems.push(structural_path(&path), message);
                let removed = remove_at(&mut value, &path);
                if !removed || problems.len() >= MAX_STRUCTURAL_PROBLEMS {
                    return Err(ConfigError::Invalid(problems));
                }
            }
        }
    }
}

/// A key that would hold a secret inline (`password`, `client_secret`, `token`, …).
/// There is no such key: secrets come from files; the refusal says so.
fn looks_like_a_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    !key.ends_with("_file")
        && [
            "password",
            "secret",
            "token",
            "private_key",
            "api_key",
            "passphrase",
        ]
        .iter()
        .any(|s| key.contains(s))
}

/// Records every string value that is a URL with a password in it
/// (`postgres://user:secret@host/db`): a secret written inline. The message names the
/// place, never the value.
fn passwords_in_urls(value: &yaml_serde::Value, path: &str, problems: &mut Problems) {
    match value {
        yaml_serde::Value::String(s)
            if s.contains("://")
                && url::Url::parse(s)
                    .is_ok_and(|u| u.password().is_some_and(|p| !p.is_empty())) =>
        {
            problems.push(
                structural_path(path),
                "a password written in a URL: secrets are never written in the \
                     configuration; leave it out of the URL and put it in a file named by the \
                     matching `*_file` setting (e.g. `backend.database_password_file`), or a \
                     systemd credential as `credential:NAME`",
            );
        }
        yaml_serde::Value::Mapping(m) => {
            for (k, v) in m {
                if let Some(k) = k.as_str() {
                    passwords_in_urls(v, &join(path, k), problems);
                }
            }
        }
        yaml_serde::Value::Sequence(items) => {
            for (i, v) in items.iter().enumerate() {
                passwords_in_urls(v, &format!("{}[{i}]", structural_path(path)), problems);
            }
        }
        _ => {}
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

fn structural_path(path: &str) -> &str {
    if path == "." { "" } else { path }
}

/// The proxy's ways to the backend (upstream, JWKS, revocation feed, audit ingest)
/// default to the backend's own address: under `portcullis up`, moving `backend.listen`
/// moves them too. Only keys the file leaves out follow it.
#[derive(Default)]
struct FollowsBackend {
    upstream: bool,
    jwks: bool,
    feed: bool,
    ingest: bool,
}

impl FollowsBackend {
    fn absent_in(doc: &yaml_serde::Value) -> Self {
        let absent = |path: &str| lookup(doc, path).is_none();
        Self {
            upstream: absent("proxy.upstreams"),
            jwks: absent("proxy.auth.issuers"),
            feed: absent("proxy.auth.revocation_feed_url"),
            ingest: absent("audit.ingest_url"),
        }
    }

    fn apply(&self, config: &mut PortcullisConfig) {
        // A wrong address is reported by the backend's own validation.
        let Ok(listen) = config.backend.listen.parse::<SocketAddr>() else {
            return;
        };
        let addr = reachable(listen);
        let origin = format!("http://{addr}");
        if self.upstream
            && let Some(backend) = config.proxy.upstreams.get_mut("backend")
        {
            backend.address = addr.to_string();
        }
        if self.jwks {
            for issuer in &mut config.proxy.auth.issuers {
                issuer.jwks_url = Some(format!("{origin}/auth/jwks.json"));
            }
        }
        if self.feed {
            config.proxy.auth.revocation_feed_url = Some(format!("{origin}{FEED_PATH}"));
        }
        if self.ingest && config.audit.ingest_url.is_some() {
            config.audit.ingest_url = Some(format!(
                "{origin}{}",
                portcullis_contract::audit_ingest::PATH
            ));
        }
    }
}

/// Where a client reaches a listener: an unspecified address (`0.0.0.0`, `::`) is
/// reached on loopback.
fn reachable(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// The node at a dotted key path (`a.b.c`), if the document has one.
fn lookup<'a>(doc: &'a yaml_serde::Value, path: &str) -> Option<&'a yaml_serde::Value> {
    path.split('.').try_fold(doc, |node, key| match node {
        yaml_serde::Value::Mapping(m) => m.get(key),
        _ => None,
    })
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
                    all.append(more);
                }
                return Err(ConfigError::Invalid(all));
            }
            (config, base)
        }
        None => (PortcullisConfig::default(), PathBuf::new()),
    };
    validate(config, &base)
}

/// Validates a parsed configuration, collecting every problem.
pub fn validate(mut config: PortcullisConfig, base: &Path) -> Result<Settings, ConfigError> {
    let mut problems = Problems::default();
    let state_dir = resolve_path(
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
        *file = resolve_path(base, file);
    }
    // The default bundle folder, `policies` next to the file, may be absent (a fresh
    // installation, or a process started from another folder): then the built-in
    // bundle serves, written to the state folder on first start. Any other folder must
    // exist. (A file that spells out the default is treated as the default.)
    let default_policy = Path::new(DEFAULT_POLICY_DIR);
    let builtin_policy_dir = if config.shared.policy_dir == default_policy
        && !resolve_path(base, default_policy).is_dir()
    {
        let dir = state_dir.join(DEFAULT_POLICY_DIR);
        config.shared.policy_dir.clone_from(&dir);
        (!dir.is_dir()).then_some(dir)
    } else {
        let dir = resolve_path(base, &config.shared.policy_dir);
        if !dir.is_dir() {
            problems.push(
                "shared.policy_dir",
                format!("{} is not a folder", dir.display()),
            );
        }
        None
    };
    let shared = config
        .shared
        .validate("shared", base, &state_dir, &mut problems);
    let log_filter = match log_filter(&config.log.level) {
        Ok(f) => Some(f),
        Err(e) => {
            problems.push("log.level", e);
            None
        }
    };
    let proxy = config
        .proxy
        .validate("proxy", base, &state_dir, &shared)
        .map_err(|e| problems.append(e))
        .ok();
    let backend = config
        .backend
        .validate("backend", base, &state_dir, &shared)
        .map_err(|e| problems.append(e))
        .ok();
    let audit = config
        .audit
        .validate("audit", base, &state_dir)
        .map_err(|e| problems.append(e))
        .ok();
    if let (Some(p), Some(b)) = (&proxy, &backend) {
        for (name, addr) in [
            ("https", Some(p.https_addr)),
            ("http", p.http_addr),
            ("admin", Some(p.admin_addr)),
        ] {
            if addr == Some(b.listen) {
                problems.push(
                    "backend.listen",
                    format!("same address as proxy.listen.{name}"),
                );
            }
        }
    }
    if let (Some(p), Some(b)) = (&proxy, &backend) {
        upload_limits_agree(p, b, &mut problems);
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

/// A path the attachment uploads take through the proxy.
const UPLOAD_PATH: &str = "/api/tickets/TCK-2026-000001/attachments";

/// The proxy route that carries attachment uploads must let through the bodies the
/// backend accepts (`max_body_bytes` unset, or at least `backend.attachments.max_bytes`);
/// otherwise an upload the backend allows fails at the proxy with 413.
fn upload_limits_agree(
    proxy: &portcullis_proxy::ProxySettings,
    backend: &portcullis_backend::BackendSettings,
    problems: &mut Problems,
) {
    let want = backend.attachments.max_bytes;
    if let Some(route) = proxy.routes.find(UPLOAD_PATH)
        && let Some(max) = route.max_body_bytes
        && max < want
    {
        problems.push(
            "proxy.routes",
            format!(
                "route `{}` (which carries attachment uploads) has max_body_bytes {max}, below backend.attachments.max_bytes {want}: raise it to at least {want}",
                route.name
            ),
        );
    }
}

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
    fn pingora_and_the_request_line_are_quiet_unless_named() {
        let shown = |level: &str| log_filter(level).unwrap().to_string();
        let plain = shown("info");
        assert!(
            plain.contains("pingora=warn") && plain.contains("portcullis::access=off"),
            "{plain}"
        );
        // Naming a target is the operator's choice: no quiet default is added for it.
        let asked = shown("info,portcullis::access=info,pingora_core=debug");
        assert!(
            !asked.contains("portcullis::access=off") && !asked.contains("pingora=warn"),
            "{asked}"
        );
        assert!(log_filter("info,=[").is_err());
    }

    #[test]
    fn upload_limits_of_proxy_and_backend_must_agree() {
        let refused = |yaml: &str| match parse(yaml).and_then(|c| validate(c, Path::new(""))) {
            Err(ConfigError::Invalid(lines)) => Some(lines.to_string()),
            _ => None,
        };
        let low = "proxy:\n  routes:\n    - {name: api, path_prefix: /api, max_body_bytes: 1000}\n    - {name: auth, path_prefix: /auth}\n    - {name: admin, path_prefix: /admin}\n    - {name: monitoring, path_prefix: /monitoring}\n    - {name: app, path_prefix: /}\n";
        let msg = refused(low).unwrap_or_default();
        assert!(
            msg.contains("max_body_bytes 1000") && msg.contains("26214400"),
            "{msg}"
        );
        let agreed = format!("{low}backend:\n  attachments: {{max_bytes: 1000}}\n");
        assert_eq!(refused(&agreed), None);
        let s = validate(parse("{}").unwrap(), Path::new("")).unwrap();
        let api = s.proxy.routes.find(UPLOAD_PATH).unwrap();
        assert_eq!(api.max_body_bytes, Some(s.backend.attachments.max_bytes));
    }

    #[test]
    fn empty_file_is_the_defaults() {
        let c = parse("# nothing but a comment\n").unwrap();
        let s = validate(c, Path::new("")).unwrap();
        assert_eq!(s.proxy.https_addr.to_string(), "0.0.0.0:8443");
        assert_eq!(s.backend.listen.to_string(), "127.0.0.1:8081");
    }

    #[test]
    fn a_secret_written_inline_is_refused_without_echoing_it() {
        let yaml = "backend:\n  database_password: hunter2-inline\naudit:\n  sinks:\n    - {type: http, name: siem, url: \"https://siem.example/\", token: s3cr3t-inline}\n";
        let Err(ConfigError::Invalid(lines)) = parse(yaml) else {
            panic!("an inline secret was accepted")
        };
        let msg = lines.to_string();
        assert!(msg.contains("backend.database_password"), "{msg}");
        assert!(
            msg.contains("secrets are never written in the configuration"),
            "{msg}"
        );
        assert!(
            !msg.contains("hunter2-inline") && !msg.contains("s3cr3t-inline"),
            "{msg}"
        );
        assert!(looks_like_a_secret("client_secret") && !looks_like_a_secret("client_secret_file"));
        assert!(!looks_like_a_secret("htps"));
    }

    #[test]
    fn a_password_in_a_url_is_refused_without_echoing_it() {
        let yaml = "backend:\n  database_url: 'postgres://app:pw-in-url-7f3@db.example/portcullis'\nproxy:\n  rate_limits:\n    store: {kind: redis, url: 'redis://:redis-pw-91c@127.0.0.1:6379/0'}\n";
        let Err(ConfigError::Invalid(lines)) = parse(yaml) else {
            panic!("a password in a URL was accepted")
        };
        let msg = lines.to_string();
        assert!(msg.contains("backend.database_url"), "{msg}");
        assert!(msg.contains("proxy.rate_limits.store.url"), "{msg}");
        assert!(msg.contains("database_password_file"), "{msg}");
        assert!(
            !msg.contains("pw-in-url-7f3") && !msg.contains("redis-pw-91c"),
            "{msg}"
        );
        // A user name alone is no secret.
        let fine = "backend:\n  database_url: 'postgres://app@db.example/portcullis'\n";
        assert!(parse(fine).is_ok());
    }

    #[test]
    fn structural_errors_name_their_path() {
        let Err(ConfigError::Invalid(lines)) = parse("proxy:\n  listen:\n    htps: x\n") else {
            panic!("unknown field accepted")
        };
        let msg = lines.to_string();
        assert!(msg.starts_with("proxy.listen"), "{msg}");
        assert!(msg.contains("htps"), "{msg}");
    }

    #[test]
    fn the_revocation_channel_is_validated_once_and_reaches_both_sides() {
        let c = parse("shared:\n  revocation_pubsub: {url: 'not a url', channel: ''}\n").unwrap();
        let Err(ConfigError::Invalid(lines)) = validate(c, Path::new("")) else {
            panic!("invalid revocation channel accepted")
        };
        let joined = lines.to_string();
        for path in [
            "shared.revocation_pubsub.url:",
            "shared.revocation_pubsub.channel:",
        ] {
            assert!(joined.contains(path), "{path} missing from:\n{joined}");
        }
        assert!(
            !joined.contains("not a url"),
            "the URL may hold a password: {joined}"
        );
        // Announcements only make proxies poll: without a feed they are refused.
        let c = parse(
            "proxy:\n  auth: {revocation_feed_url: null}\nshared:\n  revocation_pubsub: {url: 'redis://127.0.0.1:6379'}\n",
        )
        .unwrap();
        let Err(ConfigError::Invalid(lines)) = validate(c, Path::new("")) else {
            panic!("a channel without a feed accepted")
        };
        assert!(
            lines
                .to_string()
                .contains("proxy.auth.revocation_feed_url:"),
            "{lines}"
        );
        // One channel, the same for both sides.
        let c = parse("shared:\n  revocation_pubsub: {url: 'redis://127.0.0.1:6379'}\n").unwrap();
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
    fn shared_settings_are_one_value_for_both_sides() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bundle")).unwrap();
        let c = parse("shared: {policy_dir: bundle, identity_key_file: /etc/p/identity.key}\n")
            .unwrap();
        let s = validate(c, dir.path()).unwrap();
        assert_eq!(s.proxy.policy_dir, dir.path().join("bundle"));
        assert_eq!(s.backend.policy_dir, s.proxy.policy_dir);
        assert_eq!(s.proxy.identity_key_file, Path::new("/etc/p/identity.key"));
        assert_eq!(s.backend.identity_key_file, s.proxy.identity_key_file);
        assert!(s.builtin_policy_dir.is_none());
    }

    #[test]
    fn moved_keys_are_refused_with_their_new_place() {
        let Err(ConfigError::Invalid(lines)) = parse(
            "proxy:\n  policy: {dir: p, evaluation_time_limit_milliseconds: 50}\n  auth: {identity_key_file: k, revocation_pubsub: {url: 'redis://x'}}\nbackend:\n  policy_dir: p\n  identity_key_file: k\n  identity: {revocation_pubsub: {url: 'redis://x'}}\n",
        ) else {
            panic!("moved keys accepted")
        };
        let joined = lines.to_string();
        for (old, new) in MOVED {
            assert!(
                joined.contains(&format!("{old}: moved to `{new}`")),
                "{old} missing from:\n{joined}"
            );
        }
        assert_eq!(lines.len(), MOVED.len(), "{joined}");
    }

    #[test]
    fn the_ways_to_the_backend_follow_its_listen_address() {
        let c = parse("backend: {listen: '0.0.0.0:9181'}\n").unwrap();
        assert_eq!(
            c.proxy.auth.issuers[0].jwks_url.as_deref(),
            Some("http://127.0.0.1:9181/auth/jwks.json")
        );
        let s = validate(c, Path::new("")).unwrap();
        let upstream = s.proxy.routes.iter().map(|r| r.upstream.address).next();
        assert_eq!(upstream, Some("127.0.0.1:9181".parse().unwrap()));
        assert_eq!(
            s.proxy.revocation_feed_url.as_deref(),
            Some("http://127.0.0.1:9181/auth/revocations")
        );
        assert_eq!(
            s.audit.ingest_url.as_deref(),
            Some("http://127.0.0.1:9181/internal/audit/ingest")
        );
        // What the file spells out stays as written.
        let c = parse(
            "backend: {listen: '127.0.0.1:9181'}\nproxy:\n  auth: {revocation_feed_url: 'http://10.0.0.5:8081/auth/revocations'}\naudit: {ingest_url: null}\n",
        )
        .unwrap();
        let s = validate(c, Path::new("")).unwrap();
        assert_eq!(
            s.proxy.revocation_feed_url.as_deref(),
            Some("http://10.0.0.5:8081/auth/revocations")
        );
        assert_eq!(s.audit.ingest_url, None);
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
        let joined = lines.to_string();
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
        let joined = lines.to_string();
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
