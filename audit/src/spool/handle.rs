//! [`Spool`], the handle callers append through: opening (recovery, checkpoint key, writer
//! thread), appending, closing.

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc;
use std::time::Instant;

use tokio::sync::{oneshot, watch};

use crate::chain::checkpoint::{CheckpointSigner, PublicKey};
use crate::event::schema::AuditEvent;
use crate::metrics::Metrics;
use crate::settings::SpoolSettings;
use crate::spool::error::{SpoolError, io_error};
use crate::spool::shared::Shared;
use crate::spool::spooled::Seq;
use crate::spool::writer::{Msg, Reply, Request, Writer};

/// A handle to an open spool; clones share the writer. The writer stops when the last
/// handle is dropped or [`Spool::close`] is called.
#[derive(Debug, Clone)]
pub struct Spool {
    inner: Arc<SpoolInner>,
}

#[derive(Debug)]
struct SpoolInner {
    tx: mpsc::Sender<Msg>,
    emitter: String,
    shared: Arc<Shared>,
    public_key: Option<PublicKey>,
}

impl Spool {
    /// Opens (creating if needed) the spool folder, recovers the chain head from the newest
    /// segment (cutting off a torn final line), loads or creates the checkpoint key, and
    /// starts the writer thread.
    pub fn open(settings: &SpoolSettings) -> Result<Self, SpoolError> {
        let metrics = Metrics::new(&settings.emitter).map_err(|e| SpoolError::Io {
            path: settings.dir.clone(),
            source: io::Error::other(e.to_string()),
        })?;
        Self::open_with_metrics(settings, metrics)
    }

    pub(crate) fn open_with_metrics(
        settings: &SpoolSettings,
        metrics: Metrics,
    ) -> Result<Self, SpoolError> {
        settings.validate()?;
        let SpoolSettings {
            emitter,
            dir,
            checkpoint,
            ..
        } = settings;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_error(dir))?;
        let signer = match checkpoint {
            Some(cp) => Some(CheckpointSigner::load_or_generate(&cp.key_file)?),
            None => None,
        };
        let public_key = signer.as_ref().map(|s| s.public_key().clone());
        let (committed_tx, committed_rx) = watch::channel(0);
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            trim_to: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            committed: committed_rx,
        });
        let mut writer = Writer::new(settings, signer, shared.clone(), committed_tx, metrics);
        writer.recover()?;
        writer.publish();
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("audit-spool-{emitter}"))
            .spawn(move || writer.run(&rx))
            .map_err(io_error(dir))?;
        Ok(Self {
            inner: Arc::new(SpoolInner {
                tx,
                emitter: emitter.clone(),
                shared,
                public_key,
            }),
        })
    }

    /// Chains and writes `event`; returns its seq once the line is fsync'd. Waits or fails
    /// when the spool is full, as the [`FullPolicy`](crate::FullPolicy) says.
    pub async fn append(&self, event: AuditEvent) -> Result<Seq, SpoolError> {
        let (tx, rx) = oneshot::channel();
        self.submit(&event, Reply::Async(tx))?;
        rx.await.map_err(|_| SpoolError::Closed)?
    }

    /// [`Spool::append`] for threads outside the async runtime; blocks the calling thread.
    pub fn append_blocking(&self, event: AuditEvent) -> Result<Seq, SpoolError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(&event, Reply::Blocking(tx))?;
        rx.recv().map_err(|_| SpoolError::Closed)?
    }

    fn submit(&self, event: &AuditEvent, reply: Reply) -> Result<(), SpoolError> {
        let request = Request {
            encoded: event.encode(&self.inner.emitter),
            submitted: Instant::now(),
            reply,
        };
        self.inner
            .tx
            .send(Msg::Append(request))
            .map_err(|_| SpoolError::Closed)
    }

    /// Writes what is queued and a final checkpoint, then stops the writer; later appends
    /// fail with [`SpoolError::Closed`].
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.tx.send(Msg::Close(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// The checkpoint public key the spool opened with, when checkpoints are on (after a
    /// rotation the writer signs with the new key; `<key_file>.pub` lists both).
    pub fn public_key(&self) -> Option<&PublicKey> {
        self.inner.public_key.as_ref()
    }

    /// The emitter name.
    pub fn emitter(&self) -> &str {
        &self.inner.emitter
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }
}
