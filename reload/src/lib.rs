//! The one reload service of a Portcullis process.
//!
//! Proxy and backend each register what they can reload without a restart (the policy
//! bundle, certificates, …) as a [`Target`]: a kind for metrics and logs, the paths it
//! depends on, and a function that validates the new version and swaps it in or keeps
//! the old one. One thread serves every target of the process:
//!
//! - file events under the targets' paths (inotify through `notify`), debounced once
//!   ([`DEBOUNCE`]) because editors and secret managers write in several steps;
//! - `SIGHUP`, which reloads every target;
//! - a periodic check ([`ReloadService::poll_every`]), for secrets swapped by a symlink
//!   that the file watch does not see; a target answers [`Outcome::Unchanged`] when its
//!   inputs' digest did not change.
//!
//! Each attempt that changed something or failed is counted in
//! `portcullis_reloads_total{kind, result}` (`result` = `success` | `failure`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher as _};
use prometheus::{IntCounterVec, Opts, Registry};
use thiserror::Error;

/// Quiet time after the last file event before targets are reloaded.
pub const DEBOUNCE: Duration = Duration::from_millis(300);
/// Longest wait from the first file event of a burst to the reload.
pub const MAX_DEBOUNCE: Duration = Duration::from_secs(2);

/// What caused a reload attempt (for logs and audit events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A file under the target's paths changed.
    File,
    /// The process received `SIGHUP`.
    Signal,
    /// The periodic check.
    Poll,
}

impl Trigger {
    /// `file`, `sighup` or `poll`.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Signal => "sighup",
            Self::Poll => "poll",
        }
    }
}

/// A successful attempt's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The inputs are the ones in force; nothing was swapped.
    Unchanged,
    /// A new version is in force.
    Reloaded {
        /// What names the version now in force, for the log: a bundle's digest, a
        /// certificate's file.
        version: String,
    },
}

/// Why a target refused a new version (the old one keeps serving).
#[derive(Debug, Error)]
#[error("{0}")]
pub struct Rejected(pub String);

type ReloadFn = Box<dyn FnMut(Trigger) -> Result<Outcome, Rejected> + Send>;
type MatchFn = Box<dyn Fn(&Path) -> bool + Send>;

/// Something that can be reloaded without a restart.
pub struct Target {
    kind: &'static str,
    watch: Vec<PathBuf>,
    /// A file event concerns this target when any of these accepts its path.
    matches: Vec<MatchFn>,
    reload: ReloadFn,
    polled: bool,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("kind", &self.kind)
            .field("watch", &self.watch)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// A target of `kind` (`policy`, `certificate`, …) whose `reload` validates and swaps.
    pub fn new(
        kind: &'static str,
        reload: impl FnMut(Trigger) -> Result<Outcome, Rejected> + Send + 'static,
    ) -> Self {
        Self {
            kind,
            watch: Vec::new(),
            matches: Vec::new(),
            reload: Box::new(reload),
            polled: false,
        }
    }

    /// Offers this target the periodic check too ([`Trigger::Poll`]); for files that
    /// can change without a file event. Off by default: a target whose inputs are
    /// refused would otherwise be refused (and counted) again at every poll.
    #[must_use]
    pub fn polled(mut self) -> Self {
        self.polled = true;
        self
    }

    /// Watches a folder (not recursively); events for paths `matches` accepts trigger it.
    #[must_use]
    pub fn watch_dir(
        mut self,
        dir: impl Into<PathBuf>,
        matches: impl Fn(&Path) -> bool + Send + 'static,
    ) -> Self {
        self.watch.push(dir.into());
        self.matches.push(Box::new(matches));
        self
    }

    /// Watches files: their folders are watched (so a replaced file is seen), and only
    /// events naming one of these files trigger the target.
    #[must_use]
    pub fn watch_files(mut self, files: &[PathBuf]) -> Self {
        let names: BTreeSet<_> = files
            .iter()
            .filter_map(|f| f.file_name().map(ToOwned::to_owned))
            .collect();
        for f in files {
            let dir = f
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if !self.watch.iter().any(|w| w == dir) {
                self.watch.push(dir.to_owned());
            }
        }
        self.matches.push(Box::new(move |p| {
            p.file_name().is_some_and(|n| names.contains(n))
        }));
        self
    }

    fn concerns(&self, path: &Path) -> bool {
        self.matches.iter().any(|m| m(path))
    }
}

/// Why the service could not start.
#[derive(Debug, Error)]
pub enum StartError {
    #[error("cannot create a file watcher: {0}")]
    Watcher(#[source] notify::Error),
    #[error("cannot watch {path}: {source}")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("cannot listen for SIGHUP: {0}")]
    Signal(#[source] std::io::Error),
    #[error("cannot start the reload thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("reload metric: {0}")]
    Metric(#[from] prometheus::Error),
}

/// The counters of every reload, by kind and result.
#[derive(Debug, Clone)]
pub struct ReloadMetrics {
    reloads: IntCounterVec,
}

impl ReloadMetrics {
    /// Registers `portcullis_reloads_total` on `registry`.
    pub fn try_new(registry: &Registry) -> prometheus::Result<Self> {
        let reloads = IntCounterVec::new(
            Opts::new(
                "portcullis_reloads_total",
                "Reloads that put a new version in force (success) or were refused (failure), by kind.",
            ),
            &["kind", "result"],
        )?;
        registry.register(Box::new(reloads.clone()))?;
        Ok(Self { reloads })
    }

    /// Counts one attempt.
    pub fn record(&self, kind: &str, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.reloads.with_label_values(&[kind, result]).inc();
    }
}

enum Event {
    Path(PathBuf),
    Signal,
}

/// Collects targets, then serves them on one thread ([`ReloadService::start`]).
#[derive(Debug)]
pub struct ReloadService {
    targets: Vec<Target>,
    metrics: ReloadMetrics,
    poll: Option<Duration>,
    sighup: bool,
}

impl ReloadService {
    /// A service counting into `metrics`, with SIGHUP handling on and no periodic check.
    #[must_use]
    pub fn new(metrics: ReloadMetrics) -> Self {
        Self {
            targets: Vec::new(),
            metrics,
            poll: None,
            sighup: true,
        }
    }

    /// Adds a target.
    pub fn add(&mut self, target: Target) {
        self.targets.push(target);
    }

    /// Offers the targets marked [`Target::polled`] a reload this often ([`Trigger::Poll`]).
    #[must_use]
    pub fn poll_every(mut self, interval: Duration) -> Self {
        self.poll = Some(interval);
        self
    }

    /// Whether `SIGHUP` reloads every target (default on). Tests running several
    /// services in one process turn it off.
    #[must_use]
    pub fn on_sighup(mut self, enabled: bool) -> Self {
        self.sighup = enabled;
        self
    }

    /// Starts the watch and the serving thread; it runs until the process exits.
    pub fn start(self) -> Result<(), StartError> {
        let Self {
            mut targets,
            metrics,
            poll,
            sighup,
        } = self;
        if targets.is_empty() {
            return Ok(());
        }
        let (tx, rx) = mpsc::channel::<Event>();
        let file_tx = tx.clone();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            // Reading a file is an event too (open, close without write): reloading reads
            // the targets' files, so those events would trigger reload after reload.
            if let Ok(ev) = res
                && changes_content(ev.kind)
            {
                for p in ev.paths {
                    let _ = file_tx.send(Event::Path(p));
                }
            }
        })
        .map_err(StartError::Watcher)?;
        let mut watched = BTreeSet::new();
        for dir in targets.iter().flat_map(|t| t.watch.iter()) {
            if watched.insert(dir.clone()) {
                watcher
                    .watch(dir, RecursiveMode::NonRecursive)
                    .map_err(|source| StartError::Watch {
                        path: dir.clone(),
                        source,
                    })?;
            }
        }
        if sighup {
            let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])
                .map_err(StartError::Signal)?;
            std::thread::Builder::new()
                .name("reload-sighup".into())
                .spawn(move || {
                    for _ in signals.forever() {
                        if tx.send(Event::Signal).is_err() {
                            return;
                        }
                    }
                })
                .map_err(StartError::Thread)?;
        }
        std::thread::Builder::new()
            .name("reload".into())
            .spawn(move || {
                let _watcher = watcher;
                serve(&mut targets, &metrics, &rx, poll);
            })
            .map_err(StartError::Thread)?;
        Ok(())
    }
}

/// Whether an event can mean new content: creation, modification, removal, renaming,
/// or a file closed after writing.
fn changes_content(kind: notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    match kind {
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Other => false,
    }
}

fn serve(
    targets: &mut [Target],
    metrics: &ReloadMetrics,
    rx: &mpsc::Receiver<Event>,
    poll: Option<Duration>,
) {
    let mut next_poll = poll.map(|p| Instant::now() + p);
    loop {
        // A steady stream of events must not postpone the periodic check.
        if next_poll.is_some_and(|at| Instant::now() >= at) {
            next_poll = poll.map(|p| Instant::now() + p);
            run(targets, metrics, Trigger::Poll, |t| t.polled);
        }
        let first = match next_poll {
            Some(at) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                Ok(ev) => Some(ev),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            },
            None => match rx.recv() {
                Ok(ev) => Some(ev),
                Err(_) => return,
            },
        };
        let Some(first) = first else {
            next_poll = poll.map(|p| Instant::now() + p);
            run(targets, metrics, Trigger::Poll, |t| t.polled);
            continue;
        };
        // One debounce for every target: collect what arrives until it is quiet, but
        // no longer than MAX_DEBOUNCE (a file written without pause must not postpone a
        // reload forever). Events for files no target depends on (a log next to the
        // certificate) neither start nor extend it.
        let relevant = |ev: &Event| match ev {
            Event::Path(p) => targets.iter().any(|t| t.concerns(p)),
            Event::Signal => true,
        };
        if !relevant(&first) {
            continue;
        }
        let mut paths = Vec::new();
        let mut signalled = false;
        let mut take = |ev: Event| match ev {
            Event::Path(p) => paths.push(p),
            Event::Signal => signalled = true,
        };
        take(first);
        let deadline = Instant::now() + MAX_DEBOUNCE;
        while let Ok(ev) =
            rx.recv_timeout(DEBOUNCE.min(deadline.saturating_duration_since(Instant::now())))
        {
            if relevant(&ev) {
                take(ev);
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        if signalled {
            run(targets, metrics, Trigger::Signal, |_| true);
        } else {
            run(targets, metrics, Trigger::File, |t| {
                paths.iter().any(|p| t.concerns(p))
            });
        }
    }
}

fn run(
    targets: &mut [Target],
    metrics: &ReloadMetrics,
    trigger: Trigger,
    selected: impl Fn(&Target) -> bool,
) {
    for target in targets.iter_mut().filter(|t| selected(t)) {
        match (target.reload)(trigger) {
            Ok(Outcome::Unchanged) => {
                tracing::debug!(kind = target.kind, trigger = trigger.label(), "unchanged");
            }
            // Each target logs its own outcome, with what only it knows (the file and
            // line of a refused policy, the certificate's path); the service counts.
            Ok(Outcome::Reloaded { version }) => {
                metrics.record(target.kind, true);
                tracing::debug!(kind = target.kind, trigger = trigger.label(), %version, "reloaded");
            }
            Err(e) => {
                metrics.record(target.kind, false);
                tracing::debug!(kind = target.kind, trigger = trigger.label(), error = %e, "refused");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn wait_for(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_burst_of_writes_is_one_reload_and_only_matching_targets_run() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new();
        let metrics = ReloadMetrics::try_new(&registry).unwrap();
        let mut service = ReloadService::new(metrics).on_sighup(false);
        let (rego, pem) = (Arc::new(Mutex::new(0)), Arc::new(Mutex::new(0)));
        let r = Arc::clone(&rego);
        service.add(
            Target::new("policy", move |_| {
                *r.lock().unwrap() += 1;
                Ok(Outcome::Reloaded {
                    version: "d".into(),
                })
            })
            .watch_dir(dir.path(), |p| p.extension().is_some_and(|e| e == "rego")),
        );
        let c = Arc::clone(&pem);
        service.add(
            Target::new("certificate", move |_| {
                *c.lock().unwrap() += 1;
                Err(Rejected("bad".into()))
            })
            .watch_files(&[dir.path().join("cert.pem")]),
        );
        service.start().unwrap();
        for i in 0..5 {
            std::fs::write(dir.path().join("a.rego"), format!("package a # {i}")).unwrap();
        }
        wait_for("the policy reload", || *rego.lock().unwrap() == 1);
        std::thread::sleep(DEBOUNCE * 3);
        assert_eq!(*rego.lock().unwrap(), 1, "one debounce for the burst");
        assert_eq!(*pem.lock().unwrap(), 0, "the certificate did not change");
        // A file no target depends on, written without pause, delays nothing.
        let noise = dir.path().join("portcullis.log");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (noise, stop) = (noise.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::fs::write(&noise, "line").unwrap();
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        std::fs::write(dir.path().join("cert.pem"), "x").unwrap();
        wait_for("the certificate reload", || *pem.lock().unwrap() == 1);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap();
        // Reading the watched files (as every reload does) is no reason to reload.
        let _ = std::fs::read_to_string(dir.path().join("a.rego")).unwrap();
        let _ = std::fs::read_to_string(dir.path().join("cert.pem")).unwrap();
        std::thread::sleep(DEBOUNCE * 3);
        assert_eq!(*rego.lock().unwrap(), 1, "reads are not edits");
        assert_eq!(*pem.lock().unwrap(), 1, "reads are not edits");
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        assert!(
            text.contains(r#"portcullis_reloads_total{kind="policy",result="success"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"portcullis_reloads_total{kind="certificate",result="failure"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn the_periodic_check_offers_only_polled_targets_a_reload() {
        let registry = Registry::new();
        let mut service = ReloadService::new(ReloadMetrics::try_new(&registry).unwrap())
            .on_sighup(false)
            .poll_every(Duration::from_millis(50));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        service.add(
            Target::new("certificate", move |t| {
                s.lock().unwrap().push(t);
                Ok(Outcome::Unchanged)
            })
            .polled(),
        );
        let policy = Arc::new(Mutex::new(0));
        let p = Arc::clone(&policy);
        service.add(Target::new("policy", move |_| {
            *p.lock().unwrap() += 1;
            Err(Rejected("refused".into()))
        }));
        service.start().unwrap();
        wait_for("two polls", || seen.lock().unwrap().len() >= 2);
        assert!(seen.lock().unwrap().iter().all(|t| *t == Trigger::Poll));
        assert_eq!(*policy.lock().unwrap(), 0, "not polled");
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        assert!(
            !text.contains("portcullis_reloads_total{"),
            "unchanged is not counted: {text}"
        );
    }
}
