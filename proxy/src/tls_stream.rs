//! The TLS stream of one accepted HTTPS connection, in the form pingora serves HTTP over.
//!
//! pingora's rustls stream (`pingora::protocols::tls::TlsStream`) keeps three slots side
//! by side for as long as a connection lives: one for a client handshake, one for a
//! server handshake and one for the finished stream, each the size of a whole
//! tokio-rustls stream. Only the last is ever used after the handshake, and the other
//! two are room an idle keep-alive connection holds for nothing (about 3 KiB of its
//! 14). [`ServerTls`] is the finished server stream alone: [`accept`] runs the
//! handshake with tokio-rustls over the listener's rustls configuration, the same
//! engine pingora's acceptor drives, and what pingora asks of a stream afterwards (its
//! digests, the ALPN choice, the socket's id) is answered from that stream.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::{
    ALPN, GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A server-side TLS connection whose handshake is complete.
#[derive(Debug)]
pub struct ServerTls {
    inner: TlsStream<TcpStream>,
    /// The negotiated version and cipher suite, made once and shared with each
    /// request's session (pingora's `Digest`). No client certificates are asked for,
    /// so there is no peer organisation, serial or certificate digest to report.
    digest: Arc<SslDigest>,
    /// When the handshake finished and how long it took (pingora's TLS layer timing).
    timing: TimingDigest,
}

/// Runs the server side of the TLS handshake on `tcp`.
pub async fn accept(acceptor: &TlsAcceptor, tcp: TcpStream) -> io::Result<ServerTls> {
    let started = Instant::now();
    let inner = acceptor.accept(tcp).await?;
    let (_, connection) = inner.get_ref();
    let cipher = connection
        .negotiated_cipher_suite()
        .and_then(|suite| suite.suite().as_str())
        .unwrap_or_default();
    let version = connection
        .protocol_version()
        .and_then(|version| version.as_str())
        .unwrap_or_default();
    let digest = Arc::new(SslDigest::new(cipher, version, None, None, Vec::new()));
    let timing = TimingDigest {
        established_ts: SystemTime::now(),
        establishment_duration: Some(started.elapsed()),
        offload_wait_duration: None,
    };
    Ok(ServerTls {
        inner,
        digest,
        timing,
    })
}

impl AsyncRead for ServerTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ServerTls {
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
        self.inner.get_ref().0.id()
    }
}

impl Ssl for ServerTls {
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        Some(Arc::clone(&self.digest))
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        // The listener offers exactly these two (`tls::server_config`).
        match self.inner.get_ref().1.alpn_protocol()? {
            b"h2" => Some(ALPN::H2),
            b"http/1.1" => Some(ALPN::H1),
            _ => None,
        }
    }
}

impl GetTimingDigest for ServerTls {
    /// The TCP layer's timing, then the TLS layer's, as pingora's own stream reports them.
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        let mut layers = self.inner.get_ref().0.get_timing_digest();
        layers.push(Some(self.timing.clone()));
        layers
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_ref().0.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_ref().0.get_write_pending_time()
    }
}

impl GetProxyDigest for ServerTls {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_ref().0.get_proxy_digest()
    }
}

impl GetSocketDigest for ServerTls {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_ref().0.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.get_mut().0.set_socket_digest(digest);
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

    /// A server configuration for `localhost` offering h2 and http/1.1, as the listener's
    /// does, and a client configuration that trusts it and offers `alpn`.
    fn configs(alpn: &[u8]) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
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
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![alpn.to_vec()];
        (Arc::new(server), Arc::new(client))
    }

    /// Accepts one connection offering `alpn`, sends `ping` from the client and answers
    /// `pong`; returns the server's stream.
    async fn handshake(alpn: &[u8]) -> ServerTls {
        let (server, client) = configs(alpn);
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
            tls.write_all(b"ping").await.unwrap();
            let mut answer = [0u8; 4];
            tls.read_exact(&mut answer).await.unwrap();
            answer
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = accept(&TlsAcceptor::from(server), TcpStream::from(tcp))
            .await
            .unwrap();
        let mut request = [0u8; 4];
        tls.read_exact(&mut request).await.unwrap();
        assert_eq!(&request, b"ping");
        tls.write_all(b"pong").await.unwrap();
        tls.flush().await.unwrap();
        assert_eq!(&client.await.unwrap(), b"pong");
        tls
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
