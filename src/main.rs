//! `portcullis`: one binary, one CLI. See `portcullis --help`.

mod admin_cli;
mod audit_cli;
mod backup_cli;
mod config;
mod keys_cli;
mod progress;
mod retention_cli;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use portcullis_authz::Authorizer;
use portcullis_reload::{ReloadMetrics, ReloadService};
use prometheus::Registry;

use crate::config::{ConfigError, LogFormat, Settings};

/// Exit status for a configuration the tool refuses (BSD `EX_USAGE`).
const EXIT_CONFIG: u8 = 64;
/// Exit status for a failure while starting or running.
const EXIT_FAILURE: u8 = 1;
/// How long the audit sinks get at shutdown to take the last events.
const AUDIT_DRAIN: Duration = Duration::from_secs(2);
/// How often reload targets that can change without a file event (certificates
/// behind a swapped symlink) are checked.
const RELOAD_POLL_INTERVAL: Duration = Duration::from_secs(10);
/// The configuration file used when `--config` is not given and it exists.
const DEFAULT_CONFIG: &str = "portcullis.yaml";

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Policy-as-data security sidecar: TLS gateway and ticket backend"
)]
struct Cli {
    /// Configuration file. Default: ./portcullis.yaml if it exists, otherwise
    /// the embedded defaults.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run proxy and backend together in one process.
    Up,
    /// Run only the proxy (sidecar deployment).
    Proxy,
    /// Run only the backend.
    Backend,
    /// Validate a configuration file; print every problem with its path.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
        /// Also print the effective settings: every default filled in, every path
        /// resolved. Secrets never appear (they are files, named by path).
        #[arg(long)]
        print: bool,
    },
    /// Print the JSON Schema of the configuration file.
    ConfigSchema,
    /// Database administration.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// User administration.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Token signing keys and the key-encryption keys of attachments.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The Rego policy bundle.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Data retention: archive, then delete what expired (docs/retention.md).
    Retention {
        #[command(subcommand)]
        command: RetentionCommand,
    },
    /// Legal holds: what they name is kept from retention.
    Hold {
        #[command(subcommand)]
        command: HoldCommand,
    },
    /// Consistent online copy of the database, attachments and key metadata, with a
    /// SHA-256 manifest (docs/runbooks/disaster-recovery.md).
    Backup {
        /// The backup folder (created; must be empty if it exists).
        #[arg(long)]
        out: PathBuf,
        /// Encrypt every file to this age recipient (`age1…`, or a file of recipients).
        #[arg(long)]
        age_recipient: Option<String>,
        /// Also copy key material (`<state_dir>/keys/`); by default only the key-encryption
        /// keys' metadata. Use with --age-recipient.
        #[arg(long)]
        include_keys: bool,
        /// Machine-readable summary.
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup made by `portcullis backup` after verifying its manifest.
    Restore {
        /// The backup folder.
        #[arg(long)]
        from: PathBuf,
        /// age identity file, for an encrypted backup.
        #[arg(long)]
        identity: Option<PathBuf>,
        /// Overwrite a database that already holds data.
        #[arg(long)]
        force: bool,
        /// Machine-readable summary.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum RetentionCommand {
    /// Archive (gzip JSON lines + SHA-256 manifest), then delete, what expired under
    /// `backend.retention`; resumes a run that was interrupted. Exit 130 when interrupted.
    Run {
        /// Judge expiry as of this time (RFC 3339) instead of now (tests, drills).
        #[arg(long)]
        now: Option<String>,
        /// Machine-readable summary.
        #[arg(long)]
        json: bool,
    },
    /// Check a run's archive folder against its manifest, or with --store the run's copy
    /// in `backend.retention.archive_store`.
    Verify {
        /// The run's archive folder (holds manifest.json); with --store, the folder's name
        /// (such as `2026-12-05-run-000001`) names the run in the store.
        dir: PathBuf,
        /// Check the copy in the configured archive store instead of the folder.
        #[arg(long)]
        store: bool,
        /// Machine-readable summary.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct HoldTargetArgs {
    /// A ticket, by its public id (tck-…).
    #[arg(long)]
    ticket: Option<String>,
    /// A subject: an employee's user name or id (audit events' `user.id`).
    #[arg(long)]
    subject: Option<String>,
}

#[derive(Subcommand)]
enum HoldCommand {
    /// Place a legal hold.
    Add {
        #[command(flatten)]
        target: HoldTargetArgs,
        /// Why (case number, request).
        #[arg(long)]
        reason: String,
    },
    /// Release the hold in force on a ticket or subject.
    Remove {
        #[command(flatten)]
        target: HoldTargetArgs,
    },
    /// List holds in force (--all: released ones too).
    List {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain and signed checkpoints of audit events: a JSON-lines file or a
    /// folder of them (spool, file sink), or the `audit_events` table with --database.
    /// Reports the first bad event; exits 2 when events were tampered with.
    Verify {
        /// File or folder of `*.jsonl` audit events.
        path: Option<PathBuf>,
        /// The trusted checkpoint public keys: a file with one key per line (64 hex
        /// digits), such as the checkpoint key's `.pub` file, which lists the current key
        /// and those used before each rotation. Every checkpoint must verify with one of
        /// them. With --database the default is each emitter's configured key file.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Verify the database table `audit_events`, each emitter's chain in seq order.
        #[arg(long, conflicts_with = "path")]
        database: bool,
        /// With --database: only this emitter (`proxy`, `backend`, `cli`).
        #[arg(long, requires = "database")]
        emitter: Option<String>,
        /// One JSON object on standard output (each target's result); the exit status
        /// is the same.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user with a one-time password (printed once).
    Create {
        username: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        display_name: String,
        /// employee, technician, department_head, administrator, developer (repeatable).
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// Department name (created if missing).
        #[arg(long)]
        department: Option<String>,
    },
    /// Import users from CSV (header: username,email,display_name,department,roles,password_format,password)
    /// or a JSON array of the same fields. Passwords may be plaintext, bcrypt or sha256;
    /// only Argon2id is stored.
    ///
    /// Every row is checked before anything is stored. A progress bar on a terminal;
    /// Ctrl-C stops between users (exit 130) and a second run imports the rest (users that
    /// exist are skipped).
    Import {
        file: PathBuf,
        /// One JSON object on standard output: total, created, skipped, interrupted.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// `--kind jwt` (default): add a signing key, published at once, signing after the
    /// overlap, the old key retired later. `--kind kek`: make a new key-encryption key
    /// current and re-wrap every attachment's data key under it (content is not
    /// re-encrypted); interrupted, it resumes with `--resume`. `--kind identity`: stage a
    /// new proxy↔backend identity key (accepted, not yet signing); run again after
    /// `--settle-seconds` to make it sign; `keys retire --kind identity` ends the old one.
    /// `--kind audit-checkpoint`: a new checkpoint signing key per emitter; the old public
    /// key stays in the `.pub` file, so `audit verify` accepts both.
    Rotate {
        #[arg(long, value_enum, default_value_t = KeyKind::Jwt)]
        kind: KeyKind,
        /// Say what would be done; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// One JSON object on standard output.
        #[arg(long)]
        json: bool,
        /// `kek` only: no new key; finish re-wrapping under the current one.
        #[arg(long)]
        resume: bool,
        /// `kek` only: stop after re-wrapping this many data keys (resume later).
        #[arg(long)]
        max_objects: Option<u64>,
        /// `identity` only: how long a staged key must have been in place before it may
        /// sign, so that every process accepts it first (raise it when a secret manager
        /// carries the key files to other hosts).
        #[arg(long, default_value_t = 20)]
        settle_seconds: u64,
    },
    /// Delete a key-encryption key (refused while any attachment still uses it), or the
    /// previous identity key after a rotation.
    Retire {
        #[arg(long, value_enum)]
        kind: RetireKind,
        /// `kek`: the key id (`kek-…`, a file name in `<state_dir>/keys/kek/`).
        #[arg(long, required_if_eq("kind", "kek"))]
        id: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum KeyKind {
    /// Token signing keys (`<state_dir>/keys/jwt/`).
    Jwt,
    /// Key-encryption keys of attachments (`<state_dir>/keys/kek/`).
    Kek,
    /// The proxy↔backend identity key (`shared.identity_key_file`).
    Identity,
    /// The audit checkpoint signing keys (`audit.checkpoint.key_file`, one per emitter).
    AuditCheckpoint,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum RetireKind {
    Kek,
    Identity,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Run the `test_*` rules of `*_test.rego` files (like `opa test`).
    Test {
        /// Bundle folder. Default: `policies`.
        #[arg(default_value = "policies")]
        dir: PathBuf,
        /// Report per-line coverage.
        #[arg(long)]
        coverage: bool,
        /// Fail below this coverage percentage (implies --coverage).
        #[arg(long)]
        threshold: Option<f64>,
        /// Machine-readable report.
        #[arg(long)]
        json: bool,
    },
    /// Evaluate a query, e.g. `data.portcullis.http.decision`.
    Eval {
        query: String,
        /// JSON input document.
        #[arg(long)]
        input: Option<PathBuf>,
        /// Bundle folder. Default: `policies`.
        #[arg(long, default_value = "policies")]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum DbCommand {
    /// Apply pending migrations (they also run at start-up).
    Migrate {
        /// Only list the migrations that would be applied.
        #[arg(long)]
        dry_run: bool,
    },
}

fn main() -> ExitCode {
    // One crypto provider for the whole process, before anything uses TLS.
    let _ = portcullis_proxy::crypto_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file, print } => match config::load(Some(&file)) {
            Ok(settings) => {
                if print {
                    println!("{settings:#?}");
                }
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => config_failure(&file, &e),
        },
        Command::Policy { command } => match run_policy(command) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(EXIT_FAILURE),
            Err(e) => {
                eprintln!("portcullis: {e:#}");
                ExitCode::from(EXIT_FAILURE)
            }
        },
        Command::ConfigSchema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&config::schema()).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        command => {
            let file = cli.config.or_else(|| {
                Path::new(DEFAULT_CONFIG)
                    .is_file()
                    .then(|| PathBuf::from(DEFAULT_CONFIG))
            });
            let settings = match config::load(file.as_deref()) {
                Ok(s) => s,
                Err(e) => {
                    return config_failure(file.as_deref().unwrap_or(Path::new("(defaults)")), &e);
                }
            };
            init_logging(&settings);
            if matches!(
                command,
                Command::Up
                    | Command::Proxy
                    | Command::Backend
                    | Command::User { .. }
                    | Command::Keys { .. }
                    | Command::Retention {
                        command: RetentionCommand::Run { .. }
                    }
                    | Command::Hold { .. }
            ) && let Err(e) = settings.prepare_policy()
            {
                eprintln!("portcullis: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
            if let Command::Audit {
                command:
                    AuditCommand::Verify {
                        path,
                        key,
                        database,
                        emitter,
                        json,
                    },
            } = command
            {
                return audit_cli::verify(
                    &settings,
                    path.as_deref(),
                    key.as_deref(),
                    database,
                    emitter.as_deref(),
                    json,
                );
            }
            let result = match command {
                Command::Retention {
                    command: RetentionCommand::Run { now, json },
                } => retention_run(&settings, now.as_deref(), json),
                Command::Retention {
                    command: RetentionCommand::Verify { dir, store, json },
                } => {
                    if store {
                        retention_cli::verify_store(&settings, &dir, json)
                    } else {
                        retention_cli::verify(&dir, json)
                    }
                }
                Command::Hold { command } => hold(&settings, command),
                Command::Backup {
                    out,
                    age_recipient,
                    include_keys,
                    json,
                } => backup_cli::backup(
                    &settings,
                    &out,
                    age_recipient.as_deref(),
                    include_keys,
                    json,
                ),
                Command::Restore {
                    from,
                    identity,
                    force,
                    json,
                } => backup_cli::restore(&settings, &from, identity.as_deref(), force, json),
                Command::Up => up(settings),
                Command::Proxy => proxy(settings),
                Command::Backend => backend(settings),
                Command::Db {
                    command: DbCommand::Migrate { dry_run },
                } => db_migrate(&settings, dry_run),
                Command::User { command } => user(&settings, command),
                Command::Keys { command } => keys(&settings, command),
                Command::CheckConfig { .. }
                | Command::ConfigSchema
                | Command::Policy { .. }
                | Command::Audit { .. } => Ok(()),
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.is::<progress::Interrupted>() => {
                    eprintln!("portcullis: {e}");
                    ExitCode::from(progress::EXIT_INTERRUPTED)
                }
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("portcullis: {e:#}");
                    ExitCode::from(EXIT_FAILURE)
                }
            }
        }
    }
}

fn config_failure(file: &Path, e: &ConfigError) -> ExitCode {
    eprintln!("{}: configuration refused", file.display());
    for line in e.lines() {
        eprintln!("  {line}");
    }
    ExitCode::from(EXIT_CONFIG)
}

fn init_logging(settings: &Settings) {
    use std::io::IsTerminal;
    let terminal = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(settings.log_filter.clone())
        .with_writer(std::io::stderr)
        // Colours for people at a terminal only: a log file keeps plain text.
        .with_ansi(terminal);
    match (settings.log_format, terminal) {
        (LogFormat::Json, _) | (LogFormat::Auto, false) => {
            builder.json().flatten_event(true).init();
        }
        (LogFormat::Text, _) | (LogFormat::Auto, true) => builder.compact().init(),
    }
}

fn print_urls(settings: &Settings, with_backend: bool) {
    let p = &settings.proxy;
    let shown = |a: std::net::SocketAddr| {
        if a.ip().is_unspecified() {
            format!("127.0.0.1:{}", a.port())
        } else {
            a.to_string()
        }
    };
    println!("Portcullis is starting:");
    println!(
        "  https   https://{}/  (TLS 1.2/1.3, h2 + http/1.1)",
        shown(p.https_addr)
    );
    if let Some(a) = p.http_addr {
        println!(
            "  http    http://{}/  (308 redirects to HTTPS only)",
            shown(a)
        );
    }
    println!(
        "  admin   http://{}/metrics  /health/live  /health/ready",
        shown(p.admin_addr)
    );
    if with_backend {
        println!(
            "  backend http://{}/  (reached only through the proxy)",
            settings.backend.listen
        );
        if let Some(a) = settings.backend.admin_listen {
            println!("  backend admin http://{}/metrics", shown(a));
        }
    }
    println!(
        "  health  https://{}/monitoring/health",
        shown(p.https_addr)
    );
    println!("  state   {}/", settings.state_dir.display());
}

/// The process's one reload service; each part adds what it can reload.
fn reload_service(registry: &Registry) -> anyhow::Result<ReloadService> {
    let metrics = ReloadMetrics::try_new(registry)?;
    Ok(ReloadService::new(metrics).poll_every(RELOAD_POLL_INTERVAL))
}

/// A runtime for the backend, apart from pingora's own runtimes.
fn backend_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .thread_name("backend")
        .enable_all()
        .build()?)
}

/// The backend's listeners, bound before anything serves.
struct BackendListeners {
    api: tokio::net::TcpListener,
    /// `backend.admin_listen`: the backend's `/metrics`.
    admin: Option<tokio::net::TcpListener>,
}

async fn bind(addr: std::net::SocketAddr, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for the {what}: {e}"))
}

/// Opens the backend (database, migrations, policy, key) and binds its
/// listeners, failing fast before anything serves. Its metrics go to `registry`,
/// which its admin listener serves.
fn start_backend(
    rt: &tokio::runtime::Runtime,
    settings: &Settings,
    authorizer: Option<Arc<Authorizer>>,
    registry: &Registry,
) -> anyhow::Result<(BackendListeners, portcullis_backend::AppState)> {
    rt.block_on(async {
        let state = portcullis_backend::open(&settings.backend, authorizer, registry).await?;
        let api = bind(settings.backend.listen, "backend").await?;
        let admin = match settings.backend.admin_listen {
            Some(a) => Some(bind(a, "backend's admin listener").await?),
            None => None,
        };
        Ok((BackendListeners { api, admin }, state))
    })
}

/// Serves the backend's `/metrics` on its admin listener, if it has one.
fn spawn_backend_admin(
    rt: &tokio::runtime::Runtime,
    admin: Option<tokio::net::TcpListener>,
    registry: Registry,
) {
    if let Some(listener) = admin {
        rt.spawn(async move {
            if let Err(e) =
                portcullis_backend::serve_admin(listener, registry, std::future::pending()).await
            {
                tracing::error!(error = %e, "backend admin listener stopped");
            }
        });
    }
}

/// Process metrics (`process_*`: CPU, memory, file descriptors, start time) in
/// `registry`. Under `portcullis up` both admin listeners show them, for one process.
fn register_process_metrics(registry: &Registry) -> anyhow::Result<()> {
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    Ok(())
}

/// Proxy and backend in one process. The backend runs on its own runtime
/// and keeps serving while the proxy drains, so requests in flight through
/// the proxy can complete; it stops when the proxy has exited.
///
/// Both layers enforce one bundle (`shared.policy_dir`): it is loaded (and its tests
/// run) once, and the proxy's reload target swaps it for both, so the route decisions
/// and the backend's object-level decisions never come from different versions.
fn up(settings: Settings) -> anyhow::Result<()> {
    let authorizer = Arc::new(Authorizer::load_tested(
        &settings.proxy.policy_dir,
        settings.proxy.policy_time_limit,
    )?);
    // One registry per layer, each served by that layer's admin listener, so no
    // series is scraped twice.
    let (registry, backend_registry) = (Registry::new(), Registry::new());
    register_process_metrics(&registry)?;
    register_process_metrics(&backend_registry)?;
    let mut reload = reload_service(&registry)?;
    let rt = backend_runtime()?;
    let (listeners, state) = start_backend(
        &rt,
        &settings,
        Some(Arc::clone(&authorizer)),
        &backend_registry,
    )?;
    // The backend's copy of the identity key (the proxy adds its own).
    if let Some(target) = portcullis_contract::identity::reload_target(&state.identity_key) {
        reload.add(target);
    }
    spawn_backend_admin(&rt, listeners.admin, backend_registry);
    spawn_retention(&rt, &settings, &state);
    let state_for_audit = state.clone();
    rt.spawn(async move {
        if let Err(e) =
            portcullis_backend::serve(listeners.api, state, std::future::pending()).await
        {
            tracing::error!(error = %e, "backend stopped");
        }
    });
    print_urls(&settings, true);
    let audit = state_for_audit.audit;
    let ran = portcullis_proxy::run(settings.proxy, reload, Some(authorizer), registry);
    rt.block_on(audit.shutdown(AUDIT_DRAIN));
    rt.shutdown_timeout(Duration::from_secs(1));
    ran?;
    Ok(())
}

fn proxy(settings: Settings) -> anyhow::Result<()> {
    print_urls(&settings, false);
    let registry = Registry::new();
    register_process_metrics(&registry)?;
    portcullis_proxy::run(settings.proxy, reload_service(&registry)?, None, registry)?;
    Ok(())
}

/// The backend alone: SIGTERM or SIGINT stop accepting, in-flight requests
/// get up to 10 seconds.
fn backend(settings: Settings) -> anyhow::Result<()> {
    let rt = backend_runtime()?;
    let registry = Registry::new();
    register_process_metrics(&registry)?;
    let (listeners, state) = start_backend(&rt, &settings, None, &registry)?;
    let mut reload = reload_service(&registry)?;
    reload.add(portcullis_backend::policy_target(
        &state,
        settings.backend.policy_dir.clone(),
    ));
    if let Some(target) = portcullis_contract::identity::reload_target(&state.identity_key) {
        reload.add(target);
    }
    reload.start()?;
    spawn_backend_admin(&rt, listeners.admin, registry);
    spawn_retention(&rt, &settings, &state);
    let audit = state.audit.clone();
    println!(
        "Portcullis backend listening on http://{}/",
        settings.backend.listen
    );
    if let Some(a) = settings.backend.admin_listen {
        println!("  admin http://{a}/metrics");
    }
    rt.block_on(async {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(portcullis_backend::serve(listeners.api, state, async {
            let _ = rx.await;
        }));
        shutdown_signal().await;
        let _ = tx.send(());
        let served = match tokio::time::timeout(Duration::from_secs(10), server).await {
            Ok(Ok(r)) => r.map_err(anyhow::Error::from),
            Ok(Err(e)) => Err(anyhow::anyhow!("backend task failed: {e}")),
            Err(_) => {
                tracing::warn!("drain took longer than 10 s; exiting");
                Ok(())
            }
        };
        audit.shutdown(AUDIT_DRAIN).await;
        served
    })
}

fn run_policy(command: PolicyCommand) -> anyhow::Result<bool> {
    match command {
        PolicyCommand::Test {
            dir,
            coverage,
            threshold,
            json,
        } => admin_cli::policy_test(&dir, coverage, threshold, json),
        PolicyCommand::Eval { query, input, dir } => {
            admin_cli::policy_eval(&dir, input.as_deref(), &query).map(|()| true)
        }
    }
}

/// The backend's state for an administrative command: its events go to the `cli`
/// emitter's chain, so the command never competes with a running service for the
/// `backend` spool.
async fn cli_state(settings: &Settings) -> anyhow::Result<portcullis_backend::AppState> {
    let mut backend = settings.backend.clone();
    backend.audit = settings.audit.settings("cli");
    // A command serves no metrics: its registry is its own.
    Ok(portcullis_backend::open(&backend, None, &Registry::new()).await?)
}

/// Runs `work` on the command's state, then closes its audit log (a final checkpoint;
/// the database sink gets a few seconds to take the events).
fn with_cli_state<F>(settings: &Settings, work: F) -> anyhow::Result<()>
where
    F: AsyncFnOnce(&portcullis_backend::AppState) -> anyhow::Result<()>,
{
    let rt = backend_runtime()?;
    rt.block_on(async {
        let state = cli_state(settings).await?;
        let result = work(&state).await;
        state.audit.shutdown(AUDIT_DRAIN).await;
        result
    })
}

/// `portcullis retention run`: interrupted (Ctrl-C) between batches, it exits 130 and
/// the next run resumes.
fn retention_run(settings: &Settings, now: Option<&str>, json: bool) -> anyhow::Result<()> {
    let now = now.map(retention_cli::parse_now).transpose()?;
    let stop = progress::interrupt_flag()?;
    with_cli_state(settings, async move |state| {
        if retention_cli::run(state, settings, now, json, &stop).await? {
            Ok(())
        } else {
            Err(progress::Interrupted("retention run").into())
        }
    })
}

fn hold(settings: &Settings, command: HoldCommand) -> anyhow::Result<()> {
    with_cli_state(settings, async move |state| match command {
        HoldCommand::Add { target, reason } => {
            let target = retention_cli::target(state, target.ticket, target.subject).await?;
            retention_cli::hold_add(state, target, &reason).await
        }
        HoldCommand::Remove { target } => {
            let target = retention_cli::target(state, target.ticket, target.subject).await?;
            retention_cli::hold_remove(state, target).await
        }
        HoldCommand::List { all, json } => retention_cli::hold_list(state, all, json).await,
    })
}

/// The retention schedule of a serving process (`backend.retention.interval_seconds`),
/// signing chain cuts with the backend emitter's checkpoint key.
fn spawn_retention(
    rt: &tokio::runtime::Runtime,
    settings: &Settings,
    state: &portcullis_backend::AppState,
) {
    let retention = settings.backend.retention.clone();
    if !retention.enabled {
        return;
    }
    let audit = &settings.backend.audit;
    let signer = match audit
        .spool
        .checkpoint
        .as_ref()
        .map(|cp| portcullis_audit::CutSigner::load(&cp.key_file))
        .transpose()
    {
        Ok(s) => s.map(Arc::new),
        Err(e) => {
            tracing::error!(error = %e, "retention: the checkpoint key cannot sign chain cuts; audit events are kept");
            None
        }
    };
    rt.spawn(portcullis_backend::retention::run_periodically(
        state.clone(),
        retention,
        signer,
        audit.spool.emitter.clone(),
    ));
}

/// `portcullis keys rotate|retire`.
fn keys(settings: &Settings, command: KeysCommand) -> anyhow::Result<()> {
    let dir = settings.backend.keyring_dir.clone();
    let overlap = settings.backend.identity.key_overlap_seconds;
    let identity_file = settings.backend.identity_key_file.clone();
    let audit = settings.audit.clone();
    with_cli_state(settings, async move |state| match command {
        KeysCommand::Rotate {
            kind,
            dry_run,
            json,
            resume,
            max_objects,
            settle_seconds,
        } => {
            if kind != KeyKind::Kek && (resume || max_objects.is_some()) {
                anyhow::bail!("--resume and --max-objects apply to --kind kek only");
            }
            match kind {
                KeyKind::Jwt => admin_cli::rotate_keys(state, &dir, overlap, dry_run, json).await,
                KeyKind::Kek => {
                    keys_cli::rotate_kek(state, dry_run, json, resume, max_objects).await
                }
                KeyKind::Identity => {
                    let settle = Duration::from_secs(settle_seconds);
                    keys_cli::rotate_identity(state, &identity_file, settle, dry_run, json).await
                }
                KeyKind::AuditCheckpoint => {
                    keys_cli::rotate_audit_checkpoint(state, &audit, dry_run, json).await
                }
            }
        }
        KeysCommand::Retire { kind, id, json } => match (kind, id) {
            (RetireKind::Kek, Some(id)) => keys_cli::retire_kek(state, &id, json).await,
            (RetireKind::Kek, None) => anyhow::bail!("--kind kek needs --id"),
            (RetireKind::Identity, _) => {
                keys_cli::retire_identity(state, &identity_file, json).await
            }
        },
    })
}

fn user(settings: &Settings, command: UserCommand) -> anyhow::Result<()> {
    with_cli_state(settings, async move |state| match command {
        UserCommand::Create {
            username,
            email,
            display_name,
            roles,
            department,
        } => {
            admin_cli::create_user(
                state,
                &username,
                &email,
                &display_name,
                &roles,
                department.as_deref(),
            )
            .await
        }
        UserCommand::Import { file, json } => {
            let stop = progress::interrupt_flag()?;
            let report = admin_cli::import_users(state, &file, json, &stop).await?;
            if report.interrupted {
                return Err(progress::Interrupted("user import").into());
            }
            Ok(())
        }
    })
}

/// `portcullis db migrate [--dry-run]`.
fn db_migrate(settings: &Settings, dry_run: bool) -> anyhow::Result<()> {
    let rt = backend_runtime()?;
    rt.block_on(async {
        let db =
            portcullis_backend::Db::connect(&portcullis_backend::connect_url(&settings.backend)?)
                .await?;
        let pending = db.pending_migrations().await?;
        if pending.is_empty() {
            println!("database is up to date");
            return Ok(());
        }
        for m in &pending {
            println!(
                "{} {:>4} {}",
                if dry_run { "would apply" } else { "applying" },
                m.version,
                m.description
            );
        }
        if !dry_run {
            db.migrate().await?;
            println!("applied {} migration(s)", pending.len());
        }
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
