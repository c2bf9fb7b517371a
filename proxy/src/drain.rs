//! Graceful shutdown. On SIGTERM the proxy stops being ready, closes
//! keep-alive connections after their current request, and exits as soon as
//! no request is in flight, or when the grace period ends, whichever is
//! first. Pingora's own SIGTERM path sleeps for the whole grace period even
//! when idle, so we decide when to stop, then ask pingora for a graceful
//! termination with a one-second grace period (`ServerConf::grace_period_seconds`,
//! for the connections to write out the last answers).
//!
//! Not pingora's fast shutdown: that path never tells the services to stop, so
//! their accept loops keep running while the runtimes shut down, and on a
//! no-steal runtime a loop that meets the closed reactor fails every accept at
//! once without yielding, logging millions of errors and keeping the process
//! alive (`tests/gateway.rs`, the SIGTERM and SIGINT tests). The graceful path
//! ends the accept loops first.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;

/// Shared drain state: whether we are draining and how many requests run.
#[derive(Debug, Default)]
pub struct Drain {
    draining: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
}

/// Held by a request while it is processed.
#[derive(Debug)]
pub struct InFlight(Arc<Drain>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Drain {
    pub fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(self))
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn start(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Resolves when no request is in flight.
    pub async fn idle(&self) {
        loop {
            // Created before the check so a notification in between is not lost.
            let notified = self.idle.notified();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Pingora shutdown watch: SIGTERM drains within `grace`, SIGINT exits now; both
/// then end pingora's services and runtimes (see the module comment).
pub struct DrainingSignals {
    pub drain: Arc<Drain>,
    pub grace: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for DrainingSignals {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers; shutting down");
            return ShutdownSignal::GracefulTerminate;
        };
        tokio::select! {
            _ = term.recv() => {
                self.drain.start();
                tracing::info!(in_flight = self.drain.in_flight(), grace_seconds = self.grace.as_secs(), "SIGTERM: draining");
                tokio::select! {
                    _ = tokio::time::timeout(self.grace, self.drain.idle()) => {}
                    _ = int.recv() => tracing::warn!("SIGINT while draining: exiting now"),
                }
                tracing::info!(abandoned = self.drain.in_flight(), "drain finished, exiting");
            }
            _ = int.recv() => tracing::info!("SIGINT: exiting"),
        }
        ShutdownSignal::GracefulTerminate
    }
}
