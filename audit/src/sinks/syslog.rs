//! RFC 5424 syslog over TCP or TLS with RFC 5425 octet-counted framing.
//!
//! Each event becomes `LEN SP <PRI>1 TIMESTAMP HOST portcullis PROCID MSGID
//! [portcullis@32473 eventId="…" seq="…" emitter="…"] JSON`, where PRI uses facility 13
//! (log audit) and the event's level as severity, TIMESTAMP is the event's `@timestamp`,
//! MSGID its category and JSON the stored ECS line. 32473 is the documentation Private
//! Enterprise Number of RFC 5612.
//!
//! Plain syslog has no application-level acknowledgement: a batch counts as delivered once
//! it is written to the socket. Before each batch the sink checks whether the receiver has
//! closed the connection (as rsyslog does when it stops) and reconnects, so a receiver that
//! was stopped does not silently swallow the next batch; events in flight at the instant a
//! receiver crashes can still be lost, which the HTTP sink's request/response does not risk.

use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use async_trait::async_trait;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::delivery::{Sink, SinkError};
use crate::settings::{SyslogTls, split_host_port};
use crate::sinks::host::hostname;
use crate::spool::spooled::SpooledEvent;

/// Facility 13: log audit.
const FACILITY: u8 = 13;
/// The structured-data id.
const SD_ID: &str = "portcullis@32473";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Stream for T {}

pub(crate) struct SyslogSink {
    name: String,
    addr: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    conn: Option<Box<dyn Stream>>,
    hostname: String,
    procid: String,
}

impl SyslogSink {
    pub(crate) fn new(
        name: String,
        addr: &str,
        tls: Option<&SyslogTls>,
    ) -> Result<Self, SinkError> {
        let tls = match tls {
            None => None,
            Some(tls) => {
                let host = split_host_port(addr).map(|(h, _)| h).unwrap_or(addr);
                let name = tls.server_name.as_deref().unwrap_or(host).to_owned();
                let server_name = ServerName::try_from(name.clone())
                    .map_err(|e| SinkError::Tls(format!("server name {name:?}: {e}")))?;
                Some((
                    TlsConnector::from(Arc::new(client_config(tls)?)),
                    server_name,
                ))
            }
        };
        Ok(Self {
            name,
            addr: addr.to_owned(),
            tls,
            conn: None,
            hostname: hostname(),
            procid: std::process::id().to_string(),
        })
    }

    async fn connect(&self) -> Result<Box<dyn Stream>, SinkError> {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| SinkError::Timeout(format!("connecting to {}", self.addr)))?
            .map_err(SinkError::io(format!("connecting to {}", self.addr)))?;
        tcp.set_nodelay(true)
            .map_err(SinkError::io(format!("connecting to {}", self.addr)))?;
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some((connector, server_name)) => {
                let tls = tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    connector.connect(server_name.clone(), tcp),
                )
                .await
                .map_err(|_| SinkError::Timeout(format!("TLS handshake with {}", self.addr)))?
                .map_err(|e| SinkError::Tls(format!("handshake with {}: {e}", self.addr)))?;
                Ok(Box::new(tls))
            }
        }
    }
}

#[async_trait]
impl Sink for SyslogSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&mut self, batch: &[SpooledEvent]) -> Result<(), SinkError> {
        let mut buf = Vec::with_capacity(batch.len() * 1024);
        for event in batch {
            let message = format_message(event, &self.hostname, &self.procid);
            buf.extend_from_slice(message.len().to_string().as_bytes());
            buf.push(b' ');
            buf.extend_from_slice(message.as_bytes());
        }
        // Taken out while in use: if this future is dropped half-way, the half-written
        // connection goes with it.
        let mut conn = match self.conn.take() {
            Some(mut conn) => {
                if peer_closed(&mut conn).await {
                    self.connect().await?
                } else {
                    conn
                }
            }
            None => self.connect().await?,
        };
        let written = tokio::time::timeout(WRITE_TIMEOUT, async {
            conn.write_all(&buf).await?;
            conn.flush().await
        })
        .await
        .map_err(|_| SinkError::Timeout(format!("writing to {}", self.addr)))?;
        written.map_err(SinkError::io(format!("writing to {}", self.addr)))?;
        self.conn = Some(conn);
        Ok(())
    }

    async fn close(&mut self) {
        // TLS close_notify, then FIN: the receiver sees a clean end of stream.
        if let Some(mut conn) = self.conn.take() {
            let _ = conn.shutdown().await;
        }
    }
}

/// Whether the receiver has closed (or reset) the connection. Receivers never send on a
/// syslog connection, so anything readable is end-of-file or an error.
async fn peer_closed(conn: &mut Box<dyn Stream>) -> bool {
    let mut scratch = [0u8; 256];
    std::future::poll_fn(|cx| {
        let mut buf = ReadBuf::new(&mut scratch);
        match Pin::new(&mut **conn).poll_read(cx, &mut buf) {
            Poll::Pending => Poll::Ready(false),
            Poll::Ready(Ok(())) => Poll::Ready(buf.filled().is_empty()),
            Poll::Ready(Err(_)) => Poll::Ready(true),
        }
    })
    .await
}

/// The RFC 5424 message for one event (without the octet count).
pub(crate) fn format_message(event: &SpooledEvent, hostname: &str, procid: &str) -> String {
    let pri = FACILITY * 8 + event.level().syslog_severity();
    let timestamp = header_field(event.timestamp(), 32);
    format!(
        "<{pri}>1 {timestamp} {hostname} portcullis {procid} {msgid} [{SD_ID} eventId=\"{id}\" seq=\"{seq}\" emitter=\"{emitter}\"] {json}",
        msgid = event.category().as_str(),
        id = sd_escape(event.event_id()),
        seq = event.seq(),
        emitter = sd_escape(event.emitter()),
        json = event.json(),
    )
}

/// A header field: printable ASCII without spaces, at most `max` bytes, else `-`.
fn header_field(value: &str, max: usize) -> &str {
    if !value.is_empty() && value.len() <= max && value.bytes().all(|b| (33..=126).contains(&b)) {
        value
    } else {
        "-"
    }
}

/// PARAM-VALUE escaping: `"`, `\` and `]` get a backslash.
fn sd_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn client_config(tls: &SyslogTls) -> Result<rustls::ClientConfig, SinkError> {
    let SyslogTls {
        ca_file,
        client_cert_file,
        client_key_file,
        server_name: _,
    } = tls;
    let pem_err = |path: &std::path::Path| {
        let path = path.display().to_string();
        move |e: rustls_pki_types::pem::Error| SinkError::Tls(format!("{path}: {e}"))
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(pem_err(ca_file))? {
        let cert = cert.map_err(pem_err(ca_file))?;
        roots
            .add(cert)
            .map_err(|e| SinkError::Tls(format!("{}: {e}", ca_file.display())))?;
    }
    if roots.is_empty() {
        return Err(SinkError::Tls(format!(
            "{}: no certificates",
            ca_file.display()
        )));
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| SinkError::Tls(e.to_string()))?
    .with_root_certificates(roots);
    match (client_cert_file, client_key_file) {
        (Some(cert_file), Some(key_file)) => {
            let certs = CertificateDer::pem_file_iter(cert_file)
                .map_err(pem_err(cert_file))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(pem_err(cert_file))?;
            let key = PrivateKeyDer::from_pem_file(key_file).map_err(pem_err(key_file))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| SinkError::Tls(format!("client certificate: {e}")))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_layout() {
        let line = r#"{"@timestamp":"2026-01-02T03:04:05.123456Z","event.category":"auth","event.id":"0190a0b0-0000-7000-8000-000000000001","log.level":"warning","portcullis.chain.seq":7,"portcullis.emitter":"proxy"}"#;
        let event = SpooledEvent::parse(line.to_owned()).unwrap();
        let message = format_message(&event, "gw1", "42");
        assert_eq!(
            message,
            format!(
                "<108>1 2026-01-02T03:04:05.123456Z gw1 portcullis 42 auth [portcullis@32473 eventId=\"0190a0b0-0000-7000-8000-000000000001\" seq=\"7\" emitter=\"proxy\"] {line}"
            )
        );
        assert_eq!(sd_escape(r#"a"b\c]"#), r#"a\"b\\c\]"#);
    }
}
