//! The HTTPS listener's front door: every accepted TCP connection takes a connection
//! slot, gets a bounded time to finish its TLS handshake, and only then reaches the
//! gateway (pingora's HTTP/1.1 and h2 server around [`Gateway`]).
//!
//! pingora's own TLS listener builds its rustls configuration itself: no stateless
//! session tickets (so handshake-heavy traffic cannot resume once its small cache turns
//! over), a fixed 60 s handshake timeout and no connection limit. Here the proxy owns
//! the rustls [`ServerConfig`] ([`crate::tls::server_config`]) and the accept path,
//! and hands the finished TLS stream to the same pingora HTTP server.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::listeners::tls::Acceptor;
use pingora::protocols::Stream;
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use prometheus::IntCounterVec;
use tokio::sync::Semaphore;

use crate::gateway::Gateway;

/// The TLS front of the HTTPS listener.
pub struct TlsFront {
    acceptor: Acceptor,
    proxy: Arc<HttpProxy<Gateway>>,
    handshake_timeout: Duration,
    /// One permit per open connection; none left means the connection is closed at
    /// once, before any TLS work.
    slots: Arc<Semaphore>,
    /// `portcullis_connections_refused_total{reason}`.
    refused: IntCounterVec,
}

impl TlsFront {
    pub fn new(
        acceptor: Acceptor,
        proxy: HttpProxy<Gateway>,
        handshake_timeout: Duration,
        max_connections: usize,
        refused: IntCounterVec,
    ) -> Self {
        Self {
            acceptor,
            proxy: Arc::new(proxy),
            handshake_timeout,
            slots: Arc::new(Semaphore::new(max_connections)),
            refused,
        }
    }
}

#[async_trait]
impl ServerApp for TlsFront {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let Ok(_slot) = Arc::clone(&self.slots).try_acquire_owned() else {
            self.refused.with_label_values(&["connection_limit"]).inc();
            return None;
        };
        // The listener hands over plain TCP streams (it has no TLS of its own).
        let tcp: Box<TcpStream> = match stream.into_any().downcast::<TcpStream>() {
            Ok(tcp) => tcp,
            Err(_) => {
                tracing::error!("HTTPS listener received a stream that is not TCP");
                return None;
            }
        };
        let tls =
            match tokio::time::timeout(self.handshake_timeout, self.acceptor.tls_handshake(*tcp))
                .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    self.refused.with_label_values(&["tls_handshake"]).inc();
                    tracing::debug!(error = %e, "TLS handshake failed");
                    return None;
                }
                Err(_) => {
                    self.refused
                        .with_label_values(&["tls_handshake_timeout"])
                        .inc();
                    return None;
                }
            };
        // pingora's HTTP server keeps the connection (h1 keep-alive loop, h2 streams)
        // until it ends, and never hands it back; the slot is held until then.
        ServerApp::process_new(&self.proxy, Box::new(tls), shutdown).await
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(&*self.proxy).await;
    }
}
