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
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::{ALPN, Ssl, Stream};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use prometheus::IntCounterVec;
use tokio::sync::Semaphore;

use crate::gateway::Gateway;
use crate::head_deadline::HeadDeadline;
use crate::settings::Limits;

/// The TLS front of the HTTPS listener.
pub struct TlsFront {
    acceptor: Acceptor,
    proxy: Arc<HttpProxy<Gateway>>,
    handshake_timeout: Duration,
    /// Each HTTP/1.1 request head must arrive within this ([`HeadDeadline`]).
    head_timeout: Duration,
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
        limits: &Limits,
        refused: IntCounterVec,
    ) -> Self {
        Self {
            acceptor,
            proxy: Arc::new(proxy),
            handshake_timeout: limits.tls_handshake_timeout,
            head_timeout: limits.request_head_timeout,
            slots: Arc::new(Semaphore::new(limits.max_connections)),
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
        // HTTP/1.1 heads get one deadline each; h2 bounds its header frames itself.
        let stream: Stream = if tls.selected_alpn_proto() == Some(ALPN::H2) {
            Box::new(tls)
        } else {
            Box::new(HeadDeadline::new(
                tls,
                self.head_timeout,
                self.refused.with_label_values(&["request_head_timeout"]),
            ))
        };
        // pingora's HTTP server keeps the connection (h1 keep-alive loop, h2 streams)
        // until it ends, and never hands it back; the slot is held until then.
        ServerApp::process_new(&self.proxy, stream, shutdown).await
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(&*self.proxy).await;
    }
}
