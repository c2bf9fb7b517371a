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
//! There is one front per worker thread, each the app of a single-threaded service
//! with its own listening socket ([`TlsFront::per_worker`]), so that everything one
//! connection does stays on one thread.
//!
//! HTTP/1.1 connections run pingora's keep-alive loop here rather than in pingora
//! ([`TlsFront::serve_http1`]): between requests a connection waits in this module for
//! the first byte of the next request. pingora would wait inside its request future,
//! which holds the whole proxy path (boxed, tens of KiB) and a 4 KiB head buffer for
//! as long as the connection idles; here those exist only while a request is in
//! flight, and 10 000 idle keep-alive connections cost little more than their TLS state.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::{ALPN, Ssl, Stream};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use prometheus::IntCounterVec;
use rustls::ServerConfig;
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};

use crate::gateway::Gateway;
use crate::head_deadline::HeadDeadline;
use crate::settings::Limits;
use crate::tls_stream;

/// The TLS front of the HTTPS listener.
pub struct TlsFront {
    tls: Arc<ServerConfig>,
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
    /// The fronts of one listening address, one per worker thread ([`crate`]'s
    /// `https_services`): they share the gateway, the upstream pool and the connection
    /// slots and the rustls configuration (one session cache and ticket key for all).
    pub fn per_worker(
        workers: usize,
        tls: Arc<ServerConfig>,
        proxy: HttpProxy<Gateway>,
        limits: &Limits,
        refused: IntCounterVec,
    ) -> Vec<Self> {
        let proxy = Arc::new(proxy);
        let slots = Arc::new(Semaphore::new(limits.max_connections));
        (0..workers)
            .map(|_| Self {
                tls: Arc::clone(&tls),
                proxy: Arc::clone(&proxy),
                handshake_timeout: limits.tls_handshake_timeout,
                head_timeout: limits.request_head_timeout,
                keepalive_idle: limits.keepalive_idle,
                slots: Arc::clone(&slots),
                refused: refused.clone(),
            })
            .collect()
    }
}

#[async_trait]
impl ServerApp for TlsFront {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
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
        // pingora's task for a connection is sized for the TLS handshake of its own
        // listeners, which this one does not use (about 9 KiB, for as long as the
        // connection lives). The connection gets a task of its own instead, on this
        // thread (each HTTPS service is single-threaded), sized for what it holds; the
        // slot goes with it.
        let front = Arc::clone(self);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            front.serve(tcp, &shutdown).await;
            drop(slot);
        });
        None
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(&*self.proxy).await;
    }
}

impl TlsFront {
    /// One connection: the TLS handshake, then pingora's h2 server or the HTTP/1.1 loop.
    async fn serve(self: &Arc<Self>, tcp: Box<TcpStream>, shutdown: &ShutdownWatch) {
        // The handshake and the TLS stream live in this block, which ends before anything
        // else is awaited: a local keeps its room in this future until its scope ends
        // once it has been borrowed (the ALPN check), so at function level the stream
        // (kilobytes) would have stayed in every idle connection's task. The handshake's
        // state (a second copy of the TLS stream among it) is boxed, and freed when the
        // block ends rather than when the connection does.
        let (stream, h2): (Stream, bool) = {
            // The TCP stream leaves the listener's box here, and the box is freed: a box
            // whose contents were moved out is freed only when its binding's scope ends,
            // which for the parameter would be when the connection closes.
            let tcp = {
                let boxed = tcp;
                *boxed
            };
            let handshake = Box::pin(tokio::time::timeout(
                self.handshake_timeout,
                tls_stream::accept(&self.tls, tcp),
            ));
            let tls = match handshake.await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    self.refused.with_label_values(&["tls_handshake"]).inc();
                    tracing::debug!(error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    self.refused
                        .with_label_values(&["tls_handshake_timeout"])
                        .inc();
                    return;
                }
            };
            if tls.selected_alpn_proto() == Some(ALPN::H2) {
                (Box::new(tls), true)
            } else {
                // HTTP/1.1 heads get one deadline each.
                let stream = HeadDeadline::new(
                    tls,
                    self.head_timeout,
                    self.refused.with_label_values(&["request_head_timeout"]),
                );
                (Box::new(stream), false)
            }
        };
        // h2 bounds its header frames itself and multiplexes: pingora's server as is.
        if h2 {
            ServerApp::process_new(&self.proxy, stream, shutdown).await;
            return;
        }
        self.serve_http1(stream, shutdown).await;
    }

    /// pingora's HTTP/1.1 keep-alive loop (`ServerApp::process_new` for an
    /// `HttpServerApp`), except that the wait for each request's first byte happens
    /// here ([`next_request`]) and that byte is handed to the new session as the start
    /// of its head (pingora's pipelined-prefix hook).
    async fn serve_http1(self: &Arc<Self>, mut stream: Stream, shutdown: &ShutdownWatch) {
        let mut settings: Option<HttpPersistentSettings> = None;
        let mut first = true;
        let mut idle_timer = None;
        loop {
            // The first request is awaited even when shutdown has begun (pingora serves
            // it, without keep-alive); a reused connection is closed instead.
            let watch = (!first).then_some(shutdown);
            let Some(prefix) =
                next_request(&mut stream, self.keepalive_idle, &mut idle_timer, watch).await
            else {
                return;
            };
            let exchange = self.exchange(stream, prefix, settings.take(), first, shutdown);
            first = false;
            let Some(reused) = exchange.await else {
                return;
            };
            (stream, settings) = reused.consume();
        }
    }

    /// pingora's future for one request on `stream`, whose first bytes are `prefix`.
    ///
    /// The session is made in this plain function rather than in the connection's
    /// loop: a value moved into an awaited call can keep its room in the enclosing
    /// future, and pingora's HTTP/1.1 session is hundreds of bytes that every idle
    /// connection's task would carry. Only the boxed request future crosses the await.
    fn exchange<'a>(
        self: &'a Arc<Self>,
        stream: Stream,
        prefix: BytesMut,
        settings: Option<HttpPersistentSettings>,
        first: bool,
        shutdown: &'a ShutdownWatch,
    ) -> Pin<Box<dyn Future<Output = Option<ReusedHttpStream>> + Send + 'a>> {
        let mut session = ServerSession::new_http1(stream);
        if let Some(settings) = settings {
            settings.apply_to_session(&mut session);
        } else if first {
            let stopping = *shutdown.borrow();
            session.set_keepalive((!stopping).then_some(self.keepalive_idle.as_secs()));
            session.set_keepalive_reuses_remaining(
                HttpServerApp::server_options(&*self.proxy).and_then(|o| o.keepalive_request_limit),
            );
        }
        session.set_pipelined_prefix(prefix);
        self.proxy.process_new_http(session, shutdown)
    }
}

/// Waits for the first byte of the connection's next request, for at most `idle`, and
/// returns it in a buffer the size pingora gives a request head. `None`: the client
/// closed or went quiet, or (with a watch) the server is shutting down.
///
/// `timer` is the connection's one idle timer, kept from wait to wait. It is re-armed
/// only when it goes off before this wait's deadline (it was armed for an earlier
/// wait), so at most once per `idle` rather than once per request: arming a tokio timer
/// can wake the runtime's driver, a syscall and a spurious poll.
async fn next_request(
    stream: &mut Stream,
    idle: Duration,
    timer: &mut Option<Pin<Box<Sleep>>>,
    shutdown: Option<&ShutdownWatch>,
) -> Option<BytesMut> {
    /// pingora's initial request-head buffer (`INIT_HEADER_BUF_SIZE`, not exported).
    const HEAD_BUFFER: usize = 4096;
    let deadline = Instant::now() + idle;
    let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
    let mut byte = [0u8; 1];
    let read = async {
        loop {
            tokio::select! {
                biased;
                read = stream.read(&mut byte) => return Some(read),
                () = timer.as_mut() => {
                    if Instant::now() >= deadline {
                        return None;
                    }
                    timer.as_mut().reset(deadline);
                }
            }
        }
    };
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
        Some(Ok(1)) => {
            let mut prefix = BytesMut::with_capacity(HEAD_BUFFER);
            prefix.extend_from_slice(&byte);
            Some(prefix)
        }
        _ => None,
    }
}
