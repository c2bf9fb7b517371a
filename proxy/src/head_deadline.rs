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
//! It also holds each response's bytes until pingora flushes them ([`COALESCE`]):
//! pingora writes a response head and its body separately, and rustls seals every
//! write into a record of its own, so a head and a small body would leave as two
//! records (and, without a TCP write buffer below TLS, two `sendto`s).
//!
//! h2 connections are not wrapped: their headers arrive in frames the h2 crate
//! bounds itself (header-list size, CONTINUATION and reset-flood limits).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    ALPN, GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use pingora::proxy::Session;
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::tls_stream::ServerTls;

/// Waiting for the first byte of a head: no clock yet.
const IDLE: u8 = 0;
/// A head is arriving: the clock runs.
const HEAD: u8 = 1;
/// The head is parsed: body reads and the response run without this clock.
const EXCHANGE: u8 = 2;

/// Response bytes held back until a flush, at most. A larger write is passed through.
/// 16 KiB is one TLS record's worth of plaintext.
pub const COALESCE: usize = 16 * 1024;

/// The decrypted stream of one HTTP/1.1 connection, with a deadline per request head.
#[derive(Debug)]
pub struct HeadDeadline<S = ServerTls> {
    inner: S,
    limit: Duration,
    /// Written by the gateway through a shared reference ([`head_read`]).
    phase: AtomicU8,
    /// When the current head must be complete (set by its first byte).
    deadline: Instant,
    /// A timer for `deadline`, made only once a read of the head has to wait: a head
    /// that arrives whole (the usual case) never arms one. Arming a tokio timer whose
    /// deadline is sooner than any other wakes the runtime's driver, a syscall and a
    /// spurious poll per request.
    sleep: Option<Pin<Box<Sleep>>>,
    /// `portcullis_connections_refused_total{reason="request_head_timeout"}`.
    expired: IntCounter,
    /// Written but not yet passed on; allocated per response and freed once passed
    /// on, so an idle connection holds no buffer.
    pending: Vec<u8>,
    /// How much of `pending` the wrapped stream has taken.
    passed: usize,
}

impl<S> HeadDeadline<S> {
    pub fn new(inner: S, limit: Duration, expired: IntCounter) -> Self {
        Self {
            inner,
            limit,
            phase: AtomicU8::new(IDLE),
            deadline: Instant::now(),
            sleep: None,
            expired,
            pending: Vec::new(),
            passed: 0,
        }
    }

    /// Counts the cut and says why the read fails.
    fn expire(&mut self) -> io::Error {
        self.expired.inc();
        io::Error::new(
            io::ErrorKind::TimedOut,
            "request head not complete within its deadline",
        )
    }
}

impl<S: AsyncWrite + Unpin> HeadDeadline<S> {
    /// Passes every held byte on to the wrapped stream.
    fn poll_pass_on(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.passed < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.passed..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.passed += n;
        }
        self.pending = Vec::new();
        self.passed = 0;
        Poll::Ready(Ok(()))
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
                    this.deadline = Instant::now() + this.limit;
                }
                read
            }
            _ => {
                // The clock is checked on every read, so bytes that keep arriving cannot
                // outrun it; the timer only covers a read that waits.
                if Instant::now() >= this.deadline {
                    return Poll::Ready(Err(this.expire()));
                }
                let read = Pin::new(&mut this.inner).poll_read(cx, buf);
                if read.is_ready() {
                    return read;
                }
                let deadline = this.deadline;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(this.expire()));
                }
                Poll::Pending
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
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if this.pending.len() + len > COALESCE {
            ready!(this.poll_pass_on(cx))?;
            if len >= COALESCE {
                return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
            }
        }
        for buf in bufs {
            this.pending.extend_from_slice(buf);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pass_on(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pass_on(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

// What pingora asks of a stream, passed through to the wrapped one.

#[async_trait]
impl<S: Shutdown + AsyncWrite + Unpin + Send> Shutdown for HeadDeadline<S> {
    async fn shutdown(&mut self) {
        // What is held still goes out; a failure here only means the peer is gone.
        let _ = std::future::poll_fn(|cx| self.poll_pass_on(cx)).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Records each write it is given; takes at most `most` bytes of one.
    struct Writes {
        seen: Vec<Vec<u8>>,
        most: usize,
    }

    impl AsyncWrite for Writes {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.most);
            self.get_mut().seen.push(buf[..n].to_vec());
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn wrapped(most: usize) -> HeadDeadline<Writes> {
        let counter = IntCounter::new("expired", "test").unwrap();
        let inner = Writes {
            seen: Vec::new(),
            most,
        };
        HeadDeadline::new(inner, Duration::from_secs(1), counter)
    }

    #[tokio::test]
    async fn a_head_and_a_small_body_leave_in_one_write_at_the_flush() {
        let mut s = wrapped(usize::MAX);
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
            .await
            .unwrap();
        s.write_all(b"hello").await.unwrap();
        assert!(
            s.inner.seen.is_empty(),
            "nothing is passed on before the flush"
        );
        s.flush().await.unwrap();
        assert_eq!(
            s.inner.seen,
            [b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello".to_vec()]
        );
        assert_eq!(s.pending.capacity(), 0, "no buffer is kept after the flush");
    }

    #[tokio::test]
    async fn a_large_write_follows_what_is_held_without_a_copy() {
        let mut s = wrapped(usize::MAX);
        s.write_all(b"head").await.unwrap();
        let body = vec![7u8; COALESCE];
        s.write_all(&body).await.unwrap();
        assert_eq!(s.inner.seen, [b"head".to_vec(), body]);
    }

    #[tokio::test]
    async fn a_stream_that_takes_part_of_a_write_gets_the_rest_in_order() {
        let mut s = wrapped(3);
        s.write_all(b"abcdefgh").await.unwrap();
        AsyncWriteExt::shutdown(&mut s).await.unwrap();
        assert_eq!(s.inner.seen.concat(), b"abcdefgh");
        assert_eq!(s.inner.seen.len(), 3);
    }
}
