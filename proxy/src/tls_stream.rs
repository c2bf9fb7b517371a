//! The TLS stream of one accepted HTTPS connection, in the form pingora serves HTTP over.
//!
//! An idle keep-alive connection should hold as little as possible: 10 000 of them are an
//! ordinary day for a proxy, and a cheap attack on one. Both stream types pingora could
//! use keep buffers for as long as a connection lives:
//!
//! - pingora's rustls stream (`pingora::protocols::tls::TlsStream`) keeps three slots side
//!   by side, for a client handshake, a server handshake and the finished stream, each
//!   the size of a whole tokio-rustls stream;
//! - tokio-rustls drives rustls' buffered connection, which reads into a receive buffer
//!   it never shrinks below 4 KiB, so each idle connection keeps 4 KiB of zeroes.
//!
//! [`ServerTls`] drives rustls' unbuffered connection instead (`UnbufferedServerConnection`,
//! the API rustls offers for callers that own the buffers): the bytes received and not
//! yet decrypted, the plaintext not yet read and the records not yet sent each live in
//! a vector of this stream that is freed as soon as it is empty. The TLS protocol itself
//! (handshake, records, alerts, key updates, session tickets) stays rustls'; this module
//! only moves bytes between the socket and rustls' state machine. [`accept`] runs the
//! handshake over the listener's rustls configuration, and what pingora asks of a stream
//! afterwards (its digests, the ALPN choice, the socket's id) is answered from here.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::{
    ALPN, GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use rustls::ServerConfig;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, InsufficientSizeError, ReadTraffic,
    UnbufferedStatus, WriteTraffic,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::io::poll_read_buf;

/// Bytes asked of the socket per read, as rustls' own buffered connection does.
const READ_SIZE: usize = 4096;

/// The most received bytes kept while a message is incomplete, as rustls' buffered
/// connection allows: a handshake message of up to 64 KiB, then one record (16 KiB of
/// plaintext, 2 KiB of expansion, a 5-byte header). A peer that sends more without
/// completing it is refused rather than buffered.
const MAX_HANDSHAKE_BUFFER: usize = 0xffff;
const MAX_RECORD_BUFFER: usize = MAX_RECORD_PLAINTEXT + 2_048 + 5;

/// The most plaintext one TLS record carries.
const MAX_RECORD_PLAINTEXT: usize = 16_384;

/// The most plaintext encrypted per write call: a few records, so that a large body is
/// sent as it is encrypted instead of being copied whole into one buffer first.
const MAX_WRITE: usize = 64 * 1024;

/// A server-side TLS connection whose handshake is complete.
pub struct ServerTls {
    tcp: TcpStream,
    conn: UnbufferedServerConnection,
    /// Received bytes not yet processed by rustls: at most an incomplete record.
    incoming: Vec<u8>,
    /// Decrypted bytes the reader had no room for (from `plaintext_read` on).
    plaintext: Vec<u8>,
    plaintext_read: usize,
    /// Encrypted records not yet written to the socket (from `outgoing_sent` on).
    outgoing: Vec<u8>,
    outgoing_sent: usize,
    /// The peer sent close_notify: every byte it sent has been read.
    peer_closed: bool,
    /// We queued close_notify: nothing more is encrypted.
    closing: bool,
    /// rustls refused what the peer sent: the connection is over, and rustls is not
    /// asked again (it would process the same bytes and fail again).
    failed: bool,
    /// The negotiated version and cipher suite, made once and shared with each
    /// request's session (pingora's `Digest`). No client certificates are asked for,
    /// so there is no peer organisation, serial or certificate digest to report.
    digest: Arc<SslDigest>,
    /// When the handshake finished and how long it took (pingora's TLS layer timing).
    timing: TimingDigest,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("tcp", &self.tcp)
            .field("incoming", &self.incoming.len())
            .field("plaintext", &(self.plaintext.len() - self.plaintext_read))
            .field("outgoing", &(self.outgoing.len() - self.outgoing_sent))
            .field("peer_closed", &self.peer_closed)
            .field("closing", &self.closing)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

/// Runs the server side of the TLS handshake on `tcp`. On a protocol error the alert
/// rustls prepared is sent (best effort) before the error is returned.
pub async fn accept(config: &Arc<ServerConfig>, mut tcp: TcpStream) -> io::Result<ServerTls> {
    let started = Instant::now();
    let mut conn = UnbufferedServerConnection::new(Arc::clone(config)).map_err(tls_error)?;
    let mut incoming = Vec::new();
    let mut outgoing = Vec::new();
    let mut plaintext = Vec::new();
    loop {
        let UnbufferedStatus { mut discard, state } = conn.process_tls_records(&mut incoming);
        let step = match state {
            Ok(ConnectionState::EncodeTlsData(mut record)) => {
                encode(&mut record, &mut outgoing)?;
                Step::Next
            }
            Ok(ConnectionState::TransmitTlsData(sent)) => {
                tcp.write_all(&outgoing).await?;
                tcp.flush().await?;
                outgoing.clear();
                sent.done();
                Step::Next
            }
            Ok(ConnectionState::BlockedHandshake) => Step::Read,
            Ok(ConnectionState::WriteTraffic(_)) => Step::Done,
            // The client's first request, sent right behind its Finished: the handshake
            // is over on its side, and the request is kept for the first read.
            Ok(ConnectionState::ReadTraffic(mut records)) => {
                match take_records(&mut records, &mut discard, |payload| {
                    plaintext.extend_from_slice(payload)
                }) {
                    Ok(()) => Step::Next,
                    Err(e) => Step::Fail(tls_error(e)),
                }
            }
            Ok(other) => Step::Fail(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected TLS state during the handshake: {other:?}"),
            )),
            Err(e) => Step::Fail(tls_error(e)),
        };
        incoming.drain(..discard);
        match step {
            Step::Next => {}
            Step::Done => break,
            Step::Read => {
                if incoming.len() >= MAX_HANDSHAKE_BUFFER {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "TLS handshake message too large",
                    ));
                }
                incoming.reserve(READ_SIZE);
                if tcp.read_buf(&mut incoming).await? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "peer closed the connection during the TLS handshake",
                    ));
                }
            }
            Step::Fail(e) => {
                outgoing.clear();
                if queue_alert(&mut conn, &mut outgoing) {
                    let _ = tcp.write_all(&outgoing).await;
                }
                return Err(e);
            }
        }
    }
    let cipher = conn
        .negotiated_cipher_suite()
        .and_then(|suite| suite.suite().as_str())
        .unwrap_or_default();
    let version = conn
        .protocol_version()
        .and_then(|version| version.as_str())
        .unwrap_or_default();
    let digest = shared_digest(cipher, version);
    let timing = TimingDigest {
        established_ts: SystemTime::now(),
        establishment_duration: Some(started.elapsed()),
        offload_wait_duration: None,
    };
    // What the client sent after its Finished (a first request, often) stays; the
    // handshake's own vectors are not kept if they are empty.
    incoming.shrink_to_fit();
    Ok(ServerTls {
        tcp,
        conn,
        incoming,
        plaintext,
        plaintext_read: 0,
        outgoing: Vec::new(),
        outgoing_sent: 0,
        peer_closed: false,
        closing: false,
        failed: false,
        digest,
        timing,
    })
}

/// The digest of `cipher` under `version`, one per pair and worker thread: connections
/// share it rather than hold 152 bytes each. Per thread, because every request's session
/// takes a reference, and a count both worker threads changed on every request would
/// bounce between their caches; a connection never leaves its thread.
fn shared_digest(cipher: &'static str, version: &'static str) -> Arc<SslDigest> {
    thread_local! {
        // A handful at most: the TLS versions times the suites the provider offers.
        static DIGESTS: RefCell<Vec<Arc<SslDigest>>> = const { RefCell::new(Vec::new()) };
    }
    DIGESTS.with_borrow_mut(|digests| {
        if let Some(digest) = digests
            .iter()
            .find(|digest| digest.cipher == cipher && digest.version == version)
        {
            return Arc::clone(digest);
        }
        let digest = Arc::new(SslDigest::new(cipher, version, None, None, Vec::new()));
        digests.push(Arc::clone(&digest));
        digest
    })
}

/// What the handshake loop does once a state's borrow of the buffers has ended.
enum Step {
    Next,
    Read,
    Done,
    Fail(io::Error),
}

/// Appends a handshake or alert record rustls prepared to `outgoing`.
fn encode(
    record: &mut EncodeTlsData<'_, ServerConnectionData>,
    outgoing: &mut Vec<u8>,
) -> io::Result<()> {
    append_sized(outgoing, |room| record.encode(room)).map(drop)
}

/// An error of rustls' unbuffered API that may only mean "give me this much room".
trait NeedsRoom: std::fmt::Display {
    fn required_size(&self) -> Option<usize>;
}

impl NeedsRoom for EncodeError {
    fn required_size(&self) -> Option<usize> {
        match self {
            EncodeError::InsufficientSize(InsufficientSizeError { required_size }) => {
                Some(*required_size)
            }
            _ => None,
        }
    }
}

impl NeedsRoom for EncryptError {
    fn required_size(&self) -> Option<usize> {
        match self {
            EncryptError::InsufficientSize(InsufficientSizeError { required_size }) => {
                Some(*required_size)
            }
            _ => None,
        }
    }
}

/// Appends to `outgoing` what `write` puts in a slice: rustls writes records only into
/// room large enough for them, and given none it says how much they need.
fn append_sized<E: NeedsRoom>(
    outgoing: &mut Vec<u8>,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, E>,
) -> io::Result<usize> {
    let fail = |e: E| io::Error::other(e.to_string());
    let required = match write(&mut []) {
        Ok(written) => return Ok(written),
        Err(e) => e.required_size().ok_or_else(|| fail(e))?,
    };
    let start = outgoing.len();
    outgoing.resize(start + required, 0);
    let written = write(&mut outgoing[start..]).map_err(fail)?;
    outgoing.truncate(start + written);
    Ok(written)
}

/// Hands each decrypted record to `take`, adding the bytes it frees to `discard`.
fn take_records(
    records: &mut ReadTraffic<'_, '_, ServerConnectionData>,
    discard: &mut usize,
    mut take: impl FnMut(&[u8]),
) -> Result<(), rustls::Error> {
    while let Some(record) = records.next_record() {
        let record = record?;
        *discard += record.discard;
        take(record.payload);
    }
    Ok(())
}

/// After a protocol error, encodes the alert rustls queued for the peer into
/// `outgoing`; whether there was one.
fn queue_alert(conn: &mut UnbufferedServerConnection, outgoing: &mut Vec<u8>) -> bool {
    let before = outgoing.len();
    // While rustls has records queued it hands them out before it looks at received
    // bytes, so no receive buffer is needed here; once they are out, it would process
    // the bad input again.
    while conn.wants_write() {
        match conn.process_tls_records(&mut []).state {
            Ok(ConnectionState::EncodeTlsData(mut record)) => {
                if encode(&mut record, outgoing).is_err() {
                    break;
                }
            }
            _ => break,
        }
    }
    outgoing.len() > before
}

fn failed() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "the TLS connection failed")
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl ServerTls {
    /// Writes pending records to the socket: ready once all are sent. Frees the buffer
    /// when it empties.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.outgoing_sent < self.outgoing.len() {
            let pending = &self.outgoing[self.outgoing_sent..];
            match ready!(Pin::new(&mut self.tcp).poll_write(cx, pending)) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.outgoing_sent += n,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        if self.outgoing.capacity() > 0 {
            self.outgoing = Vec::new();
            self.outgoing_sent = 0;
        }
        Poll::Ready(Ok(()))
    }

    /// Moves what the reader has no room for yet into `buf`; whether anything was left.
    fn take_plaintext(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        if self.plaintext_read == self.plaintext.len() {
            return false;
        }
        let pending = &self.plaintext[self.plaintext_read..];
        let n = pending.len().min(buf.remaining());
        buf.put_slice(&pending[..n]);
        self.plaintext_read += n;
        if self.plaintext_read == self.plaintext.len() {
            self.plaintext = Vec::new();
            self.plaintext_read = 0;
        }
        true
    }

    /// Reads what the socket has into `incoming`: the number of bytes, 0 at its end.
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.incoming.len() >= MAX_RECORD_BUFFER {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "TLS record too large",
            )));
        }
        // Read into spare capacity, so the bytes are not zeroed first.
        self.incoming.reserve(READ_SIZE);
        let read = poll_read_buf(Pin::new(&mut self.tcp), cx, &mut self.incoming);
        if read.is_pending() && self.incoming.is_empty() {
            // Idle: nothing received is kept, and neither is the buffer.
            self.incoming = Vec::new();
        }
        read
    }

    /// Runs `write` with rustls' permission to encrypt and the send buffer, once rustls
    /// has dealt with everything before it: records it queued (a key update) are
    /// encoded first, and records already received are decrypted into the plaintext
    /// buffer. rustls is always handed the same receive buffer: a handshake message
    /// split over records is kept there, and rustls keeps positions in it between calls.
    fn with_write_traffic<R>(
        &mut self,
        write: impl FnOnce(&mut WriteTraffic<'_, ServerConnectionData>, &mut Vec<u8>) -> io::Result<R>,
    ) -> io::Result<R> {
        if self.failed {
            return Err(failed());
        }
        loop {
            let UnbufferedStatus { mut discard, state } =
                self.conn.process_tls_records(&mut self.incoming);
            let step = match state {
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    let written = write(&mut traffic, &mut self.outgoing);
                    self.incoming.drain(..discard);
                    return written;
                }
                Ok(ConnectionState::EncodeTlsData(mut record)) => {
                    encode(&mut record, &mut self.outgoing)
                }
                // Encoded records are in `outgoing`, which `poll_send` writes.
                Ok(ConnectionState::TransmitTlsData(sent)) => {
                    sent.done();
                    Ok(())
                }
                Ok(ConnectionState::PeerClosed) => {
                    self.peer_closed = true;
                    Ok(())
                }
                // Kept for the next read.
                Ok(ConnectionState::ReadTraffic(mut records)) => {
                    take_records(&mut records, &mut discard, |payload| {
                        self.plaintext.extend_from_slice(payload)
                    })
                    .map_err(tls_error)
                }
                Ok(other) => Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    format!("TLS stream cannot send: {other:?}"),
                )),
                Err(e) => Err(tls_error(e)),
            };
            self.incoming.drain(..discard);
            if let Err(e) = step {
                return Err(self.fail(e));
            }
        }
    }

    /// Encrypts `data` (up to [`MAX_WRITE`] bytes of it) into `outgoing`; how much was
    /// taken.
    fn encrypt(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.closing {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "TLS stream is shut down",
            ));
        }
        let data = &data[..data.len().min(MAX_WRITE)];
        self.with_write_traffic(|traffic, outgoing| {
            append_sized(outgoing, |room| traffic.encrypt(data, room))?;
            Ok(data.len())
        })
    }

    /// The connection cannot go on: the alert rustls queued, if any, is sent if the
    /// socket takes it at once, and rustls is not asked again.
    fn fail(&mut self, e: io::Error) -> io::Error {
        self.failed = true;
        if queue_alert(&mut self.conn, &mut self.outgoing) {
            let waker = std::task::Waker::noop();
            let _ = self.poll_send(&mut Context::from_waker(waker));
        }
        e
    }
}

/// What a read does after rustls has looked at the received bytes.
enum Read {
    /// Plaintext was put in the reader's buffer.
    Data,
    /// rustls made progress; look again.
    Again,
    /// Every complete record is processed: more bytes are needed.
    Receive,
    /// The peer closed TLS cleanly: end of stream.
    End,
}

impl AsyncRead for ServerTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.take_plaintext(buf) || buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if this.failed {
            return Poll::Ready(Err(failed()));
        }
        let filled_before = buf.filled().len();
        loop {
            // Records rustls wants sent while reading (a key update, a ticket) go out
            // when the socket takes them; a full socket does not hold up reading.
            // A peer that asks for replies and never reads them is not buffered for:
            // past one write's worth, reading waits until the socket takes them.
            match this.poll_send(cx) {
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending if this.outgoing.len() - this.outgoing_sent > MAX_WRITE => {
                    return Poll::Pending;
                }
                _ => {}
            }
            if this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            let UnbufferedStatus { mut discard, state } =
                this.conn.process_tls_records(&mut this.incoming);
            let next = match state {
                Ok(ConnectionState::ReadTraffic(mut records)) => {
                    let taken = take_records(&mut records, &mut discard, |payload| {
                        let n = payload.len().min(buf.remaining());
                        buf.put_slice(&payload[..n]);
                        this.plaintext.extend_from_slice(&payload[n..]);
                    });
                    match taken {
                        Err(e) => Err(tls_error(e)),
                        // An empty record is legal; it gives the reader nothing.
                        Ok(()) if buf.filled().len() > filled_before => Ok(Read::Data),
                        Ok(()) => Ok(Read::Again),
                    }
                }
                Ok(ConnectionState::EncodeTlsData(mut record)) => {
                    encode(&mut record, &mut this.outgoing).map(|()| Read::Again)
                }
                Ok(ConnectionState::TransmitTlsData(sent)) => {
                    sent.done();
                    Ok(Read::Again)
                }
                Ok(ConnectionState::WriteTraffic(_)) => Ok(Read::Receive),
                Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => Ok(Read::End),
                Ok(other) => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unexpected TLS state while reading: {other:?}"),
                )),
                Err(e) => Err(tls_error(e)),
            };
            this.incoming.drain(..discard);
            match next {
                Ok(Read::Data) => return Poll::Ready(Ok(())),
                Ok(Read::Again) => {}
                Ok(Read::End) => {
                    this.peer_closed = true;
                    return Poll::Ready(Ok(()));
                }
                Ok(Read::Receive) => match ready!(this.poll_receive(cx)) {
                    Ok(0) => {
                        // The same error tokio-rustls gives: a truncation attack and a
                        // client that just went away look alike here.
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "peer closed connection without sending TLS close_notify",
                        )));
                    }
                    Ok(_) => {}
                    Err(e) => return Poll::Ready(Err(e)),
                },
                Err(e) => return Poll::Ready(Err(this.fail(e))),
            }
        }
    }
}

impl AsyncWrite for ServerTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Records from an earlier write go first: at most one write's worth is held.
        ready!(this.poll_send(cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let taken = this.encrypt(buf)?;
        // The records are ours now; a socket that takes them later is `poll_flush`'s.
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(taken))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        let total: usize = bufs.iter().map(|slice| slice.len()).sum();
        let taken = if bufs.len() > 1 && total <= MAX_RECORD_PLAINTEXT {
            // Small slices (an h2 frame head and its payload) become one record, as
            // rustls' buffered writer makes them, rather than a record each.
            let joined = bufs
                .iter()
                .fold(Vec::with_capacity(total), |mut joined, slice| {
                    joined.extend_from_slice(slice);
                    joined
                });
            this.encrypt(&joined)?
        } else {
            let mut taken = 0;
            for slice in bufs.iter().filter(|slice| !slice.is_empty()) {
                if taken >= MAX_WRITE {
                    break;
                }
                match this.encrypt(&slice[..slice.len().min(MAX_WRITE - taken)]) {
                    Ok(n) => taken += n,
                    // What was taken is reported; the error comes back on the next write.
                    Err(e) if taken == 0 => return Poll::Ready(Err(e)),
                    Err(_) => break,
                }
            }
            taken
        };
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(taken))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.closing {
            this.closing = true;
            // A connection rustls already failed has nothing more to say.
            let _ = this.with_write_traffic(|traffic, outgoing| {
                append_sized(outgoing, |room| traffic.queue_close_notify(room))
            });
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for ServerTls {
    async fn shutdown(&mut self) {
        // close_notify, then the TCP write side; a failure only means the peer is gone.
        if let Err(e) = AsyncWriteExt::shutdown(self).await {
            tracing::debug!(error = %e, "TLS shutdown failed");
        }
    }
}

impl UniqueID for ServerTls {
    fn id(&self) -> UniqueIDType {
        self.tcp.id()
    }
}

impl Ssl for ServerTls {
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        Some(Arc::clone(&self.digest))
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        // The listener offers exactly these two (`tls::server_config`).
        match self.conn.alpn_protocol()? {
            b"h2" => Some(ALPN::H2),
            b"http/1.1" => Some(ALPN::H1),
            _ => None,
        }
    }
}

impl GetTimingDigest for ServerTls {
    /// The TCP layer's timing, then the TLS layer's, as pingora's own stream reports them.
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        let mut layers = self.tcp.get_timing_digest();
        layers.push(Some(self.timing.clone()));
        layers
    }

    fn get_read_pending_time(&self) -> Duration {
        self.tcp.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.tcp.get_write_pending_time()
    }
}

impl GetProxyDigest for ServerTls {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.tcp.get_proxy_digest()
    }
}

impl GetSocketDigest for ServerTls {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.tcp.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.tcp.set_socket_digest(digest);
    }
}

/// Decrypted bytes cannot be put back under TLS: no peeking (pingora's default, and
/// what its own TLS stream does).
impl Peek for ServerTls {}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use tokio::io::AsyncReadExt;
    use tokio_rustls::client::TlsStream as ClientTls;

    /// A server configuration for `localhost` offering h2 and http/1.1, as the listener's
    /// does, and a client configuration that trusts it and offers `alpn`.
    fn configs(alpn: &[u8]) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
        configs_for(alpn, rustls::DEFAULT_VERSIONS)
    }

    /// [`configs`], with the client offering only `versions`.
    fn configs_for(
        alpn: &[u8],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let der: CertificateDer<'static> = cert.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
        let provider = Arc::new(crate::tls::crypto_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)
            .unwrap();
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).unwrap();
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![alpn.to_vec()];
        (Arc::new(server), Arc::new(client))
    }

    /// A connected pair: tokio-rustls' client offering `alpn`, and this module's server.
    async fn pair(alpn: &[u8]) -> (ClientTls<tokio::net::TcpStream>, ServerTls) {
        connect(configs(alpn)).await
    }

    async fn connect(
        (server, client): (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>),
    ) -> (ClientTls<tokio::net::TcpStream>, ServerTls) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            tokio_rustls::TlsConnector::from(client)
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap()
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = accept(&server, TcpStream::from(tcp)).await.unwrap();
        (client.await.unwrap(), tls)
    }

    /// Sends `ping` from the client, answers `pong`; returns the server's stream.
    async fn handshake(alpn: &[u8]) -> ServerTls {
        let (mut client, mut tls) = pair(alpn).await;
        ping_pong(&mut client, &mut tls).await;
        tls
    }

    /// `ping` from the client, `pong` back from the server.
    async fn ping_pong(client: &mut ClientTls<tokio::net::TcpStream>, tls: &mut ServerTls) {
        client.write_all(b"ping").await.unwrap();
        let mut request = [0u8; 4];
        tls.read_exact(&mut request).await.unwrap();
        assert_eq!(&request, b"ping");
        tls.write_all(b"pong").await.unwrap();
        tls.flush().await.unwrap();
        let mut answer = [0u8; 4];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"pong");
    }

    /// Bytes that differ from position to position, so a reordering would show.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn the_stream_reports_the_negotiated_protocol_and_parameters() {
        let h2 = handshake(b"h2").await;
        assert_eq!(h2.selected_alpn_proto(), Some(ALPN::H2));
        let digest = h2.get_ssl_digest().expect("a TLS stream has a digest");
        assert_eq!(
            digest.version, "TLSv1_3",
            "rustls' name, as pingora reports it"
        );
        assert_eq!(digest.cipher, "TLS13_AES_256_GCM_SHA384");
        assert_eq!(h2.get_timing_digest().len(), 2, "the TCP and the TLS layer");

        let h1 = handshake(b"http/1.1").await;
        assert_eq!(h1.selected_alpn_proto(), Some(ALPN::H1));
        assert_ne!(h1.id(), 0, "the id is the socket's descriptor");
        assert!(
            Arc::ptr_eq(&h1.digest, &h2.digest),
            "connections with the same version and cipher on one thread share the digest"
        );

        let (_, tls12) = connect(configs_for(b"http/1.1", &[&rustls::version::TLS12])).await;
        assert_eq!(tls12.get_ssl_digest().unwrap().version, "TLSv1_2");
        assert!(!Arc::ptr_eq(&tls12.digest, &h2.digest));
    }

    #[tokio::test]
    async fn tls_1_2_clients_are_served_too() {
        let (mut client, mut tls) =
            connect(configs_for(b"http/1.1", &[&rustls::version::TLS12])).await;
        assert_eq!(tls.get_ssl_digest().unwrap().version, "TLSv1_2");
        client.write_all(&pattern(40_000)).await.unwrap();
        let mut request = vec![0u8; 40_000];
        tls.read_exact(&mut request).await.unwrap();
        assert!(request == pattern(40_000));
        tls.write_all(b"pong").await.unwrap();
        tls.flush().await.unwrap();
        let mut answer = [0u8; 4];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"pong");
    }

    #[tokio::test]
    async fn a_request_sent_right_behind_the_clients_finished_is_kept() {
        let (server, client) = configs(b"http/1.1");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            let mut tls = tokio_rustls::TlsConnector::from(client)
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap();
            tls.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
            tls.flush().await.unwrap();
            let mut answer = [0u8; 2];
            tls.read_exact(&mut answer).await.unwrap();
            answer
        });
        let (tcp, _) = listener.accept().await.unwrap();
        // The request is on the wire before the server looks at the client's Finished.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut tls = accept(&server, TcpStream::from(tcp)).await.unwrap();
        let mut request = [0u8; 18];
        tls.read_exact(&mut request).await.unwrap();
        assert_eq!(&request, b"GET / HTTP/1.1\r\n\r\n");
        tls.write_all(b"ok").await.unwrap();
        tls.flush().await.unwrap();
        assert_eq!(&client.await.unwrap(), b"ok");
    }

    #[tokio::test]
    async fn an_idle_connection_keeps_no_buffer() {
        let mut tls = handshake(b"http/1.1").await;
        // The next read finds nothing to do and waits, as a keep-alive connection does.
        let mut buf = [0u8; 64];
        let mut read = ReadBuf::new(&mut buf);
        let waker = std::task::Waker::noop();
        let polled = Pin::new(&mut tls).poll_read(&mut Context::from_waker(waker), &mut read);
        assert!(polled.is_pending());
        assert_eq!(tls.incoming.capacity(), 0, "received bytes");
        assert_eq!(tls.plaintext.capacity(), 0, "unread plaintext");
        assert_eq!(tls.outgoing.capacity(), 0, "unsent records");
    }

    #[tokio::test]
    async fn large_transfers_arrive_whole_in_both_directions() {
        let (mut client, mut tls) = pair(b"http/1.1").await;
        let upload = pattern(1_000_003);
        let sent = upload.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            client.flush().await.unwrap();
            let mut download = vec![0u8; 700_001];
            client.read_exact(&mut download).await.unwrap();
            download
        });
        // Small reads: most records do not fit, and the rest waits for the next read.
        let mut received = Vec::new();
        let mut chunk = [0u8; 1000];
        while received.len() < upload.len() {
            let n = tls.read(&mut chunk).await.unwrap();
            assert_ne!(n, 0, "early end after {} bytes", received.len());
            received.extend_from_slice(&chunk[..n]);
        }
        assert!(received == upload, "the upload arrived changed");
        let download = pattern(700_001);
        tls.write_all(&download).await.unwrap();
        tls.flush().await.unwrap();
        assert!(
            writer.await.unwrap() == download,
            "the download arrived changed"
        );
    }

    #[tokio::test]
    async fn vectored_writes_arrive_in_order_small_or_large() {
        let (mut client, mut tls) = pair(b"h2").await;
        let large = pattern(100_000);
        let cases: [&[&[u8]]; 3] = [
            &[b"frame head ", b"", b"and its payload"],
            &[b"head", &large, b"tail"],
            &[&large[..70_000], &large[70_000..]],
        ];
        for slices in cases {
            let expected = slices.concat();
            let mut sent = 0;
            while sent < expected.len() {
                // What is left of the slices after the bytes already taken.
                let mut skip = sent;
                let rest: Vec<io::IoSlice<'_>> = slices
                    .iter()
                    .filter_map(|slice| {
                        let from = skip.min(slice.len());
                        skip -= from;
                        (from < slice.len()).then(|| io::IoSlice::new(&slice[from..]))
                    })
                    .collect();
                sent += tls.write_vectored(&rest).await.unwrap();
            }
            tls.flush().await.unwrap();
            let mut received = vec![0u8; expected.len()];
            client.read_exact(&mut received).await.unwrap();
            assert!(
                received == expected,
                "{} bytes arrived changed",
                expected.len()
            );
        }
    }

    #[tokio::test]
    async fn a_key_update_from_the_client_is_followed_both_ways() {
        let (mut client, mut tls) = pair(b"http/1.1").await;
        for round in 0..3u8 {
            // TLS 1.3 KeyUpdate asking for ours in return: both directions change keys.
            client.get_mut().1.refresh_traffic_keys().unwrap();
            client.write_all(&[round; 3000]).await.unwrap();
            client.flush().await.unwrap();
            let mut request = [0u8; 3000];
            tls.read_exact(&mut request).await.unwrap();
            assert_eq!(request, [round; 3000]);
            tls.write_all(&[round + 100; 5000]).await.unwrap();
            tls.flush().await.unwrap();
            let mut answer = [0u8; 5000];
            client.read_exact(&mut answer).await.unwrap();
            assert_eq!(answer, [round + 100; 5000]);
        }
    }

    #[tokio::test]
    async fn close_notify_ends_the_stream_cleanly_each_way() {
        let (mut client, mut tls) = pair(b"http/1.1").await;
        client.write_all(b"last").await.unwrap();
        client.shutdown().await.unwrap();
        let mut all = Vec::new();
        tls.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"last", "then a clean end of stream");

        let (mut client, mut tls) = pair(b"http/1.1").await;
        tls.write_all(b"bye").await.unwrap();
        AsyncWriteExt::shutdown(&mut tls).await.unwrap();
        let mut all = Vec::new();
        client.read_to_end(&mut all).await.unwrap();
        assert_eq!(
            all, b"bye",
            "tokio-rustls saw close_notify, not a truncation"
        );
        assert!(
            tls.write_all(b"more").await.is_err(),
            "nothing after close_notify"
        );
    }

    #[tokio::test]
    async fn a_connection_cut_without_close_notify_is_an_error_not_an_end() {
        let (mut client, mut tls) = pair(b"http/1.1").await;
        // One exchange first, so that the client has read the session tickets: a socket
        // closed with unread bytes sends a reset, not an end of stream.
        ping_pong(&mut client, &mut tls).await;
        let (tcp, _) = client.into_inner();
        drop(tcp);
        let mut buf = [0u8; 16];
        let err = tls.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn plaintext_and_oversized_handshakes_are_refused() {
        let (server, _) = configs(b"http/1.1");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();

        // An HTTP request where a ClientHello belongs.
        let client = tokio::spawn(async move {
            let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut answer = Vec::new();
            let _ = tcp.read_to_end(&mut answer).await;
            answer
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let err = accept(&server, TcpStream::from(tcp)).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        drop(client.await.unwrap());

        // A handshake record header announcing more than rustls accepts, then a flood.
        let client = tokio::spawn(async move {
            let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            let mut flood = vec![0x16, 0x03, 0x01, 0xff, 0xff];
            flood.extend(std::iter::repeat_n(0x01, 200_000));
            let _ = tcp.write_all(&flood).await;
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let err = accept(&server, TcpStream::from(tcp)).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        client.await.unwrap();
    }

    #[test]
    fn a_finished_stream_holds_less_than_half_of_what_pingoras_holds() {
        let ours = std::mem::size_of::<ServerTls>();
        let pingoras = std::mem::size_of::<pingora::protocols::tls::TlsStream<TcpStream>>();
        assert!(
            ours * 2 < pingoras,
            "ServerTls is {ours} bytes, pingora's TLS stream {pingoras}"
        );
    }
}
