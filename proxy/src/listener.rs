//! The HTTPS listener's front door: every accepted TCP connection takes a connection
//! slot, gets a bounded time to finish its TLS handshake, and only then reaches the
//! gateway (pingora's HTTP/1.1 and h2 server around [`Gateway`]).
//!
//! pingora's own TLS listener builds its rustls configuration itself: no stateless
//! session tickets (so handshake-heavy traffic cannot resume once its small cache turns
//! over), a fixed 60 s handshake timeout and no connection limit. Here the proxy owns
//! the rustls [`ServerConfig`] ([`crate::tls::server_config`]) and the accept path,
//! and hands the finished TLS stream to the same pingora HTTP server.
//!
//! HTTP/1.1 connections run pingora's keep-alive loop here rather than in pingora
//! ([`TlsFront::serve_http1`]): between requests a connection waits in this module for
//! the first byte of the next request. pingora would wait inside its request future,
//! which holds the whole proxy path (boxed, tens of KiB) and a 4 KiB head buffer for
//! as long as the connection idles; here those exist only while a request is in
//! flight, and 10 000 idle keep-alive connections cost little more than their TLS state.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::listeners::tls::Acceptor;
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::{ALPN, Ssl, Stream};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use prometheus::IntCounterVec;
use tokio::io::AsyncReadExt;
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
    /// An HTTP/1.1 connection idle this long between requests is closed.
    keepalive_idle: Duration,
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
            keepalive_idle: limits.keepalive_idle,
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
        // h2 bounds its header frames itself and multiplexes: pingora's server as is.
        if tls.selected_alpn_proto() == Some(ALPN::H2) {
            return ServerApp::process_new(&self.proxy, Box::new(tls), shutdown).await;
        }
        // HTTP/1.1 heads get one deadline each.
        let stream: Stream = Box::new(HeadDeadline::new(
            tls,
            self.head_timeout,
            self.refused.with_label_values(&["request_head_timeout"]),
        ));
        self.serve_http1(stream, shutdown).await;
        // The slot is held until here: the connection is over.
        None
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(&*self.proxy).await;
    }
}

impl TlsFront {
    /// pingora's HTTP/1.1 keep-alive loop (`ServerApp::process_new` for an
    /// `HttpServerApp`), except that the wait for each request's first byte happens
    /// here ([`next_request`]) and that byte is handed to the new session as the start
    /// of its head (pingora's pipelined-prefix hook).
    async fn serve_http1(self: &Arc<Self>, mut stream: Stream, shutdown: &ShutdownWatch) {
        let mut settings: Option<HttpPersistentSettings> = None;
        let mut first = true;
        loop {
            // The first request is awaited even when shutdown has begun (pingora serves
            // it, without keep-alive); a reused connection is closed instead.
            let watch = (!first).then_some(shutdown);
            let Some(prefix) = next_request(&mut stream, self.keepalive_idle, watch).await else {
                return;
            };
            let mut session = ServerSession::new_http1(stream);
            if let Some(settings) = settings.take() {
                settings.apply_to_session(&mut session);
            } else if first {
                let stopping = *shutdown.borrow();
                session.set_keepalive((!stopping).then_some(self.keepalive_idle.as_secs()));
                session.set_keepalive_reuses_remaining(
                    HttpServerApp::server_options(&*self.proxy)
                        .and_then(|o| o.keepalive_request_limit),
                );
            }
            first = false;
            session.set_pipelined_prefix(prefix);
            let Some(reused) = self.proxy.process_new_http(session, shutdown).await else {
                return;
            };
            (stream, settings) = reused.consume();
        }
    }
}

/// Waits for the first byte of the connection's next request, for at most `idle`, and
/// returns it in a buffer the size pingora gives a request head. `None`: the client
/// closed or went quiet, or (with a watch) the server is shutting down.
async fn next_request(
    stream: &mut Stream,
    idle: Duration,
    shutdown: Option<&ShutdownWatch>,
) -> Option<BytesMut> {
    /// pingora's initial request-head buffer (`INIT_HEADER_BUF_SIZE`, not exported).
    const HEAD_BUFFER: usize = 4096;
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(idle, stream.read(&mut byte));
    let read = match shutdown {
        None => read.await,
        Some(shutdown) => {
            let mut shutdown = shutdown.clone();
            tokio::select! {
                // Bytes already there win: a request that has arrived is served.
                biased;
                read = read => read,
                _ = shutdown.wait_for(|stopping| *stopping) => return None,
            }
        }
    };
    match read {
        Ok(Ok(1)) => {
            let mut prefix = BytesMut::with_capacity(HEAD_BUFFER);
            prefix.extend_from_slice(&byte);
            Some(prefix)
        }
        _ => None,
    }
}
