//! HTTP/2 floods, in raw frames over TLS to the real binary in front of a recording
//! upstream: a CONTINUATION flood, an HPACK bomb (one large dynamic-table entry
//! referenced thousands of times) and rapid reset, and header fields HTTP/2 forbids
//! (CR/LF in a value, connection-specific fields, upper-case names). Each asserts what
//! reached the upstream and that a normal client is served within a second meanwhile.
//! The HTTP/1.1 cases are in `tests/adversarial.rs`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use support::portcullis;
use support::recorder;

/// What the normal client asks for while a flood runs (the recorder answers 200).
const NORMAL: &str = "/api/normal";
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK integer with an `n`-bit prefix whose high bits are `first`.
fn integer(first: u8, n: u32, mut value: usize, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// A literal field without indexing, its name by static-table index.
fn literal_indexed_name(index: usize, value: &str, out: &mut Vec<u8>) {
    integer(0x00, 4, index, out);
    integer(0x00, 7, value.len(), out);
    out.extend_from_slice(value.as_bytes());
}

/// A literal field with a new name; `indexing` adds it to the dynamic table.
fn literal(name: &str, value: &str, indexing: bool, out: &mut Vec<u8>) {
    out.push(if indexing { 0x40 } else { 0x00 });
    integer(0x00, 7, name.len(), out);
    out.extend_from_slice(name.as_bytes());
    integer(0x00, 7, value.len(), out);
    out.extend_from_slice(value.as_bytes());
}

/// `GET https://localhost{path}` as an HPACK block (static table: 2 = `:method GET`,
/// 7 = `:scheme https`, 4 = `:path`, 1 = `:authority`).
fn request_block(path: &str) -> Vec<u8> {
    let mut b = vec![0x82, 0x87];
    literal_indexed_name(4, path, &mut b);
    literal_indexed_name(1, "localhost", &mut b);
    b
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect_h2(ca_pem: &str, port: u16) -> Tls {
    let mut roots = RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    tls.write_all(&hello).await.unwrap();
    tls
}

/// What the server sent on a flooded connection, read until it closes or `within`.
struct Seen {
    goaway: bool,
    closed: bool,
}

async fn read_frames(mut reader: tokio::io::ReadHalf<Tls>, within: Duration) -> Seen {
    let mut seen = Seen {
        goaway: false,
        closed: false,
    };
    let mut buf = Vec::new();
    let deadline = Instant::now() + within;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, reader.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                seen.closed = true;
                return seen;
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return seen,
        }
        while buf.len() >= 9 {
            let len =
                (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            if buf[3] == GOAWAY {
                seen.goaway = true;
            }
            buf.drain(..9 + len);
        }
    }
}

/// What reached the upstream besides the normal client's requests, once what was in
/// flight has had the time to arrive.
async fn reached_upstream(recorded: &recorder::Recorder) -> Vec<recorder::Recorded> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    recorded
        .take()
        .into_iter()
        .filter(|r| r.target != NORMAL)
        .collect()
}

/// A normal HTTP/2 client's request through the proxy, answered within a second.
async fn served_promptly(p: &support::Portcullis) {
    let started = Instant::now();
    let response = p.client().get(p.url(NORMAL)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a normal client waited {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn h2_floods_end_the_connection_and_reach_nothing_upstream() {
    let (upstream, recorded) = recorder::start().await;
    let p = portcullis()
        .proxy_to(upstream)
        .proxy_yaml("  rate_limits: {rules: [{name: per_ip, key: client_ip, requests_per_period: 100000, burst_requests: 100000}]}\n")
        .start()
        .await;

    // CONTINUATION flood: a header block that never ends, 100 KiB per frame batch, far
    // past the 64 KiB header-list limit. The server must give up on it, not buffer it.
    let tls = connect_h2(&p.pki.ca_pem, p.https).await;
    let (reader, mut writer) = tokio::io::split(tls);
    let seen = tokio::spawn(read_frames(reader, Duration::from_secs(10)));
    let mut first = request_block("/api/continuation");
    literal("x-flood", &"a".repeat(100), false, &mut first);
    writer
        .write_all(&frame(HEADERS, END_STREAM, 1, &first))
        .await
        .unwrap();
    let mut piece = Vec::new();
    literal("x-flood", &"a".repeat(1000), false, &mut piece);
    let mut sent = 0usize;
    for _ in 0..5000 {
        let mut batch = Vec::new();
        for _ in 0..100 {
            batch.extend(frame(CONTINUATION, 0, 1, &piece));
        }
        if writer.write_all(&batch).await.is_err() {
            break;
        }
        sent += batch.len();
        if sent > 20 * 1024 * 1024 {
            break;
        }
    }
    served_promptly(&p).await;
    let seen = seen.await.unwrap();
    assert!(
        seen.closed || seen.goaway,
        "CONTINUATION flood: the connection stayed open after {sent} bytes"
    );
    assert!(
        sent < 20 * 1024 * 1024,
        "CONTINUATION flood: the server read 20 MiB of one header block"
    );

    // HPACK bomb: a 4 000-byte value enters the dynamic table once, then 2 000 one-byte
    // references to it would decode to 8 MB of headers.
    let tls = connect_h2(&p.pki.ca_pem, p.https).await;
    let (reader, mut writer) = tokio::io::split(tls);
    let seen = tokio::spawn(read_frames(reader, Duration::from_secs(5)));
    let mut block = request_block("/api/bomb");
    literal("x-bomb", &"b".repeat(4000), true, &mut block);
    // Index 62: the first dynamic-table entry.
    block.extend(std::iter::repeat_n(0x80 | 62u8, 2000));
    let _ = writer
        .write_all(&frame(HEADERS, END_STREAM | END_HEADERS, 1, &block))
        .await;
    served_promptly(&p).await;
    let _ = seen.await.unwrap();

    // Rapid reset (CVE-2023-44487): streams opened and cancelled at once, in bulk. The
    // proxy keeps serving others, and cancelled streams that it had not answered yet
    // need not reach the upstream.
    let tls = connect_h2(&p.pki.ca_pem, p.https).await;
    let (reader, mut writer) = tokio::io::split(tls);
    let seen = tokio::spawn(read_frames(reader, Duration::from_secs(10)));
    let block = request_block("/api/reset");
    let streams = 2000u32;
    let mut batch = Vec::new();
    for i in 0..streams {
        let id = 2 * i + 1;
        batch.extend(frame(HEADERS, END_STREAM | END_HEADERS, id, &block));
        batch.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
        if batch.len() > 32 * 1024 {
            if writer.write_all(&batch).await.is_err() {
                break;
            }
            batch.clear();
        }
    }
    let _ = writer.write_all(&batch).await;
    served_promptly(&p).await;
    let seen = seen.await.unwrap();

    let reached = reached_upstream(&recorded).await;
    // The flood and the bomb never formed a request; only rapid-reset streams could.
    assert!(
        reached.iter().all(|r| r.target == "/api/reset"),
        "unexpected upstream requests: {:?}",
        reached.iter().map(|r| &r.target).collect::<Vec<_>>()
    );
    assert!(
        reached.len() < streams as usize,
        "every reset stream reached the upstream ({})",
        reached.len()
    );
    assert!(
        seen.goaway || seen.closed || reached.len() < (streams / 2) as usize,
        "rapid reset: no GOAWAY and {} of {streams} cancelled streams forwarded",
        reached.len()
    );
    served_promptly(&p).await;
}

/// Header fields HTTP/2 forbids (RFC 9113 section 8.2): a value with CR/LF in it (which
/// would become a second header line on the HTTP/1.1 hop), connection-specific fields,
/// `te` other than `trailers`, and an upper-case name. Each request is malformed: none
/// reaches the upstream, and the connection goes on serving others.
#[tokio::test]
async fn malformed_h2_header_fields_reach_nothing_upstream() {
    let (upstream, recorded) = recorder::start().await;
    let p = portcullis().proxy_to(upstream).start().await;
    let cases: [(&str, &str, &str); 8] = [
        ("/api/h2-crlf", "x-note", "a\r\nx-injected: 1"),
        ("/api/h2-lf", "x-note", "a\nx-injected: 1"),
        ("/api/h2-connection", "connection", "keep-alive"),
        ("/api/h2-transfer-encoding", "transfer-encoding", "chunked"),
        ("/api/h2-keep-alive", "keep-alive", "timeout=5"),
        ("/api/h2-upgrade", "upgrade", "websocket"),
        ("/api/h2-te", "te", "gzip"),
        ("/api/h2-upper", "X-Upper", "1"),
    ];
    let tls = connect_h2(&p.pki.ca_pem, p.https).await;
    let (reader, mut writer) = tokio::io::split(tls);
    let seen = tokio::spawn(read_frames(reader, Duration::from_secs(3)));
    for (i, (path, name, value)) in cases.iter().enumerate() {
        let mut block = request_block(path);
        literal(name, value, false, &mut block);
        let stream = 2 * u32::try_from(i).unwrap() + 1;
        let _ = writer
            .write_all(&frame(HEADERS, END_STREAM | END_HEADERS, stream, &block))
            .await;
    }
    served_promptly(&p).await;
    let _ = seen.await.unwrap();
    let reached = reached_upstream(&recorded).await;
    assert!(
        reached.is_empty(),
        "malformed h2 requests reached the upstream: {:?}",
        reached
            .iter()
            .map(|r| (&r.target, &r.headers))
            .collect::<Vec<_>>()
    );
}
