//! Tamper-evident audit events for Portcullis.
//!
//! [`AuditLog::start`] opens the emitter's spool and starts one delivery task per sink;
//! [`AuditLog::emit`] returns once the event is chained into the spool and fsync'd, so an
//! acknowledged event survives a crash; sinks (JSON-lines file, syslog over TCP/TLS, HTTP
//! NDJSON or Splunk HEC, or any [`Sink`]) get every event at least once, in order, and a
//! sink that is down only makes the spool grow. [`verify_file`] and [`verify_events`] check
//! the hash chain and the signed checkpoints of what was delivered.
//!
//! ```no_run
//! # async fn demo() -> Result<(), portcullis_audit::AuditError> {
//! use portcullis_audit::{AuditEvent, AuditLog, AuditSettings, Category, Outcome, SinkKind, SinkSettings};
//! let mut settings = AuditSettings::new("proxy", "var/audit/proxy");
//! settings.sinks.push(SinkSettings {
//!     name: "file".into(),
//!     kind: SinkKind::File { path: "var/audit/proxy.jsonl".into(), max_bytes: 64 << 20 },
//! });
//! let log = AuditLog::start(settings, &prometheus::Registry::new())?;
//! log.emit(AuditEvent::new(Category::Auth, "login", Outcome::Success).user_id("alice")).await?;
//! log.shutdown(std::time::Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```

// Layers, lowest first; a module uses only modules of lower layers (and its own children),
// never the re-exports below: canonical, fsutil, metrics, settings < event < chain < spool <
// delivery < sinks < config; status sits with metrics, below delivery.
mod canonical;
mod chain;
mod config;
mod delivery;
mod event;
mod fsutil;
mod metrics;
mod settings;
mod sinks;
mod spool;
mod status;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use chain::checkpoint::{
    KeyError, KeyRotation, PublicKey, TrustedKeys, public_key_path, rotate_key,
};
pub use chain::cut::{ChainCut, CutSigner};
pub use chain::hash::GENESIS_HASH;
pub use chain::report::{BadPosition, ChainSummary, Tamper, VerifyError, VerifyReport};
pub use chain::verify::{
    verify_events, verify_events_after, verify_file, verify_file_with_progress,
};
pub use config::{
    AuditConfig, AuditTemplate, CheckpointConfig, EMITTER_PLACEHOLDER, EMITTERS, FullPolicyConfig,
    HttpFormatConfig, SinkConfig, SpoolConfig, SpoolLock, SyslogTlsConfig, emitter_kind,
};
pub use delivery::{Sink, SinkError};
pub use event::aggregate::Aggregator;
pub use event::record::AuditRecord;
pub use event::redact::{REDACTED, is_secret_key};
pub use event::schema::{
    AuditEvent, CHECKPOINT_ACTION, Category, ECS_VERSION, Level, MAX_DETAILS_BYTES,
    MAX_FIELD_BYTES, Outcome,
};
pub use settings::{
    AuditSettings, CheckpointSettings, FullPolicy, HttpFormat, MIN_SEGMENT_BYTES, SinkKind,
    SinkSettings, SpoolSettings, SyslogTls,
};
pub use spool::error::SpoolError;
pub use spool::handle::Spool;
pub use spool::spooled::{Seq, SpooledEvent};
pub use status::{AuditStatus, SinkFailure, SinkStatus};

use event::redact::Redactor;
use metrics::Metrics;
use status::SinkBoard;

/// Why the audit log could not start or take an event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The settings are invalid (every problem is listed).
    #[error("invalid audit settings:\n{0}")]
    Settings(#[from] portcullis_contract::problems::Problems),
    /// No sink is configured.
    #[error("no audit sink configured")]
    NoSinks,
    /// Two sinks share a name.
    #[error("audit sink name {0:?} is used twice")]
    DuplicateSink(String),
    /// The spool failed (on open, or for this event).
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// A sink could not be set up (bad certificate or token file…).
    #[error("audit sink {name}: {source}")]
    Sink {
        /// The sink.
        name: String,
        /// The cause.
        source: SinkError,
    },
    /// A sink's offset file could not be read.
    #[error("audit sink {name} offset: {source}")]
    Offset {
        /// The sink.
        name: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The metrics could not be registered (for example, twice for one emitter).
    #[error("audit metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// Not called inside a Tokio runtime.
    #[error("the audit log must be started inside a Tokio runtime")]
    NoRuntime,
}

/// The audit log of one emitter: a cheap-to-clone handle.
///
/// Dropping every handle stops the writer after it has written what is queued; delivery tasks
/// then finish what is on disk. [`AuditLog::shutdown`] does the same with a deadline.
#[derive(Debug, Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    spool: Spool,
    redactor: Redactor,
    metrics: Metrics,
    emitter: String,
    outcomes: Arc<SinkBoard>,
    stop: watch::Sender<Option<tokio::time::Instant>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl AuditLog {
    /// Validates `settings`, opens the spool (recovering after a crash), builds the sinks,
    /// registers the metrics into `registry` and spawns the delivery tasks on the current
    /// Tokio runtime. Call it at start-up: it does blocking file I/O (reading the newest
    /// segment, loading or generating the checkpoint key, reading certificate and token
    /// files).
    pub fn start(
        settings: AuditSettings,
        registry: &prometheus::Registry,
    ) -> Result<Self, AuditError> {
        Self::start_with_sinks(settings, Vec::new(), registry)
    }

    /// [`AuditLog::start`] with extra sinks built by the caller (such as a database sink),
    /// delivered to after the configured ones.
    pub fn start_with_sinks(
        settings: AuditSettings,
        extra_sinks: Vec<Box<dyn Sink>>,
        registry: &prometheus::Registry,
    ) -> Result<Self, AuditError> {
        settings.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| AuditError::NoRuntime)?;
        let AuditSettings {
            spool: spool_settings,
            redacted_keys,
            sinks: sink_settings,
        } = settings;
        let mut sinks = Vec::with_capacity(sink_settings.len() + extra_sinks.len());
        for sink in &sink_settings {
            let built =
                sinks::build(sink, &spool_settings.emitter).map_err(|source| AuditError::Sink {
                    name: sink.name.clone(),
                    source,
                })?;
            sinks.push(built);
        }
        sinks.extend(extra_sinks);
        if sinks.is_empty() {
            return Err(AuditError::NoSinks);
        }
        for (i, sink) in sinks.iter().enumerate() {
            if sinks[..i].iter().any(|s| s.name() == sink.name()) {
                return Err(AuditError::DuplicateSink(sink.name().to_owned()));
            }
        }
        let metrics = Metrics::new(&spool_settings.emitter)?;
        metrics
            .spool_max_bytes
            .set(i64::try_from(spool_settings.max_bytes).unwrap_or(i64::MAX));
        for reason in SpoolError::METRIC_REASONS {
            metrics.emit_failures.with_label_values(&[reason]);
        }
        let spool = Spool::open_with_metrics(&spool_settings, metrics.clone())?;
        let shared = spool.shared().clone();
        let head = *shared.committed.borrow();
        let mut offsets = Vec::with_capacity(sinks.len());
        for sink in &sinks {
            let offset =
                delivery::read_offset(&shared.dir, sink.name(), head).map_err(|source| {
                    AuditError::Offset {
                        name: sink.name().to_owned(),
                        source,
                    }
                })?;
            offsets.push(offset);
        }
        metrics.register(registry)?;
        let board = Arc::new(delivery::AckBoard::new(shared.clone(), offsets.clone()));
        let outcomes = Arc::new(SinkBoard::new(sinks.iter().map(|s| s.name().to_owned())));
        let (stop_tx, stop_rx) = watch::channel(None);
        let tasks = sinks
            .into_iter()
            .zip(offsets)
            .enumerate()
            .map(|(index, (sink, offset))| {
                runtime.spawn(delivery::run_sink(
                    sink,
                    index,
                    offset,
                    shared.clone(),
                    delivery::Sinks {
                        board: board.clone(),
                        outcomes: outcomes.clone(),
                    },
                    metrics.clone(),
                    stop_rx.clone(),
                ))
            })
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                spool,
                redactor: Redactor::new(&redacted_keys),
                metrics,
                emitter: spool_settings.emitter.clone(),
                outcomes,
                stop: stop_tx,
                tasks: Mutex::new(tasks),
            }),
        })
    }

    /// Redacts, chains and spools `event`; returns its seq once it is fsync'd. An error means
    /// the event is not acknowledged: the caller should refuse the audited action (fail
    /// closed). With [`FullPolicy::Block`] this waits while the spool is full.
    pub async fn emit(&self, mut event: AuditEvent) -> Result<Seq, AuditError> {
        event.redact(&self.inner.redactor);
        let appended = self.inner.spool.append(event).await;
        Ok(self.counted(appended)?)
    }

    /// Counts an event the spool did not take (`portcullis_audit_emit_failures_total`).
    fn counted(&self, appended: Result<Seq, SpoolError>) -> Result<Seq, SpoolError> {
        if let Err(e) = &appended {
            self.inner
                .metrics
                .emit_failures
                .with_label_values(&[e.metric_reason()])
                .inc();
        }
        appended
    }

    /// [`AuditLog::emit`] for threads outside the async runtime; blocks the calling thread
    /// (never call it from async code).
    pub fn emit_blocking(&self, mut event: AuditEvent) -> Result<Seq, AuditError> {
        event.redact(&self.inner.redactor);
        let appended = self.inner.spool.append_blocking(event);
        Ok(self.counted(appended)?)
    }

    /// How much the spool holds and how each sink is doing (see [`AuditStatus`]).
    pub fn status(&self) -> AuditStatus {
        self.inner
            .outcomes
            .status(&self.inner.emitter, &self.inner.metrics)
    }

    /// The checkpoint public key (also in `<key_file>.pub`), when checkpoints are on.
    pub fn public_key(&self) -> Option<&PublicKey> {
        self.inner.spool.public_key()
    }

    /// Stops taking events (later emits fail with [`SpoolError::Closed`]), writes a final
    /// checkpoint, and gives the sinks until `drain` has passed to deliver what is left; what
    /// they do not get is delivered after the next start.
    pub async fn shutdown(self, drain: Duration) {
        self.inner.spool.close().await;
        let deadline = tokio::time::Instant::now() + drain;
        self.inner.stop.send_replace(Some(deadline));
        let tasks = match self.inner.tasks.lock() {
            Ok(mut tasks) => std::mem::take(&mut *tasks),
            Err(_) => Vec::new(),
        };
        for mut task in tasks {
            let grace = deadline + Duration::from_secs(1);
            if tokio::time::timeout_at(grace, &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}

/// What the fuzz targets in `fuzz/` call that is not public otherwise. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    /// Parses one spool line (without its newline) as the spool's readers do.
    pub fn parse_spool_line(
        line: String,
    ) -> Result<crate::spool::spooled::SpooledEvent, serde_json::Error> {
        crate::spool::spooled::SpooledEvent::parse(line)
    }
}
