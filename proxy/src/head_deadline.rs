//! One deadline for each HTTP/1.1 request head, however slowly it trickles in.
//!
//! pingora times each read of a request head on its own (60 s, or the keep-alive
//! timeout on a reused connection), so a client sending one byte every few seconds
//! holds a connection for as long as it likes (slowloris). [`HeadDeadline`] wraps the
//! decrypted stream of an HTTP/1.1 connection: the first byte of a request starts its
//! clock, and once the deadline passes a read fails, which ends the connection. The
//! gateway stops the clock as soon as pingora has parsed the head ([`head_read`]) and
//! re-arms it when the exchange is over ([`exchange_done`]), so request bodies and
//! the wait between keep-alive requests are governed by their own timeouts.
//!
//! h2 connections are not wrapped: their headers arrive in frames the h2 crate
//! bounds itself (header-list size, CONTINUATION and reset-flood limits).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef, TlsStream};
use pingora::protocols::{
    ALPN, GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use pingora::proxy::Session;
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Waiting for the first byte of a head: no clock yet.
const IDLE: u8 = 0;
/// A head is arriving: the clock runs.
const HEAD: u8 = 1;
/// The head is parsed: body reads and the response run without this clock.
const EXCHANGE: u8 = 2;

/// What the HTTPS listener wraps: the TLS stream over TCP.
pub type Tls = TlsStream<TcpStream>;

/// The decrypted stream of one HTTP/1.1 connection, with a deadline per request head.
#[derive(Debug)]
pub struct HeadDeadline<S = Tls> {
    inner: S,
    limit: Duration,
    /// Written by the gateway through a shared reference ([`head_read`]).
    phase: AtomicU8,
    sleep: Option<Pin<Box<Sleep>>>,
    /// `portcullis_connections_refused_total{reason="request_head_timeout"}`.
    expired: IntCounter,
}

impl<S> HeadDeadline<S> {
    pub fn new(inner: S, limit: Duration, expired: IntCounter) -> Self {
        Self {
            inner,
            limit,
            phase: AtomicU8::new(IDLE),
            sleep: None,
            expired,
        }
    }
}

/// The head of the current request is parsed: stop its clock.
pub fn head_read(session: &Session) {
    set_phase(session, EXCHANGE);
}

/// The response is done: the next byte starts the next head's clock.
pub fn exchange_done(session: &Session) {
    set_phase(session, IDLE);
}

fn set_phase(session: &Session, phase: u8) {
    // Only HTTP/1.1 sessions on the HTTPS listener are wrapped; others have nothing to do.
    if let Some(stream) = session.as_downstream().stream()
        && let Some(guard) = stream.as_any().downcast_ref::<HeadDeadline>()
    {
        guard.phase.store(phase, Ordering::Release);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HeadDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.phase.load(Ordering::Acquire) {
            EXCHANGE => {
                this.sleep = None;
                Pin::new(&mut this.inner).poll_read(cx, buf)
            }
            IDLE => {
                this.sleep = None;
                let before = buf.filled().len();
                let read = Pin::new(&mut this.inner).poll_read(cx, buf);
                if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
                    // A stale store cannot go backwards: only the gateway leaves HEAD.
                    let _ = this.phase.compare_exchange(
                        IDLE,
                        HEAD,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                    this.sleep = Some(Box::pin(tokio::time::sleep_until(
                        Instant::now() + this.limit,
                    )));
                }
                read
            }
            _ => {
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(this.limit)));
                if sleep.as_mut().poll(cx).is_ready() {
                    this.expired.inc();
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "request head not complete within its deadline",
                    )));
                }
                Pin::new(&mut this.inner).poll_read(cx, buf)
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HeadDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

// What pingora asks of a stream, passed through to the wrapped one.

#[async_trait]
impl<S: Shutdown + Send> Shutdown for HeadDeadline<S> {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl<S: UniqueID> UniqueID for HeadDeadline<S> {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl<S: Ssl> Ssl for HeadDeadline<S> {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl<S: GetTimingDigest> GetTimingDigest for HeadDeadline<S> {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl<S: GetProxyDigest> GetProxyDigest for HeadDeadline<S> {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl<S: GetSocketDigest> GetSocketDigest for HeadDeadline<S> {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl<S: Peek + Send> Peek for HeadDeadline<S> {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}
