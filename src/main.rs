//! `portcullis`: one binary, one CLI. See `portcullis --help`.

mod admin_cli;
mod audit_cli;
mod config;

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
    /// Token signing keys.
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
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain and signed checkpoints of audit events: a JSON-lines file or a
    /// folder of them (spool, file sink), or the `audit_events` table with --database.
    /// Reports the first bad event; exits 2 when events were tampered with.
    Verify {
        /// File or folder of `*.jsonl` audit events.
        path: Option<PathBuf>,
        /// Public key (64 hex digits, the checkpoint key's `.pub` file) that must have
        /// signed every checkpoint. With --database the default is each emitter's
        /// configured key.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Verify the database table `audit_events`, each emitter's chain in seq order.
        #[arg(long, conflicts_with = "path")]
        database: bool,
        /// With --database: only this emitter (`proxy`, `backend`, `cli`).
        #[arg(long, requires = "database")]
        emitter: Option<String>,
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
    Import { file: PathBuf },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Add a signing key: published at once, signing after the overlap, the old key retired later.
    Rotate,
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
        Command::CheckConfig { file } => match config::load(Some(&file)) {
            Ok(_) => {
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
                    },
            } = command
            {
                return audit_cli::verify(
                    &settings,
                    path.as_deref(),
                    key.as_deref(),
                    database,
                    emitter.as_deref(),
                );
            }
            let result = match command {
                Command::Up => up(settings),
                Command::Proxy => proxy(settings),
                Command::Backend => backend(settings),
                Command::Db {
                    command: DbCommand::Migrate { dry_run },
                } => db_migrate(&settings, dry_run),
                Command::User { command } => user(&settings, command),
                Command::Keys {
                    command: KeysCommand::Rotate,
                } => keys_rotate(&settings),
                Command::CheckConfig { .. }
                | Command::ConfigSchema
                | Command::Policy { .. }
                | Command::Audit { .. } => Ok(()),
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
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
    let reload = reload_service(&registry)?;
    let rt = backend_runtime()?;
    let (listeners, state) = start_backend(
        &rt,
        &settings,
        Some(Arc::clone(&authorizer)),
        &backend_registry,
    )?;
    spawn_backend_admin(&rt, listeners.admin, backend_registry);
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
    reload.start()?;
    spawn_backend_admin(&rt, listeners.admin, registry);
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

/// `portcullis keys rotate`.
fn keys_rotate(settings: &Settings) -> anyhow::Result<()> {
    let dir = settings.backend.keyring_dir.clone();
    let overlap = settings.backend.identity.key_overlap_seconds;
    with_cli_state(settings, async move |state| {
        admin_cli::rotate_keys(state, &dir, overlap).await
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
        UserCommand::Import { file } => admin_cli::import_users(state, &file).await,
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
