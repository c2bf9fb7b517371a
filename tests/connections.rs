//! The HTTPS listener's connection handling, against the real binary: TLS sessions
//! resume (tickets and session ids), a connection that never finishes its handshake is
//! closed, connections past the limit are closed at once while others are served, idle
//! keep-alive connections end, the server leaves transparent huge pages to the system and
//! only Argon2id's memory asks for them (and leaves when idle), a request
//! head that trickles in is cut at its deadline while slow bodies and idle keep-alive are
//! not, hundreds of silent, idle and trickling connections do not keep a normal client
//! from being served, too many header fields are answered 431 over either protocol, and a
//! sign-in body that arrives in pieces reaches the backend whole without corrupting the
//! pooled upstream connection.
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
use tokio_rustls::rustls::{self, ClientConfig, HandshakeKind, RootCertStore};

use portcullis_testkit::smaps;
use support::portcullis;

fn client_config(
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(config: &Arc<ClientConfig>, port: u16) -> Tls {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tokio_rustls::TlsConnector::from(Arc::clone(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// One request on `tls`, read up to the end of the response head and `body_len` bytes.
async fn exchange(tls: &mut Tls, request: &[u8]) -> String {
    tls.write_all(request).await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= len {
                return text;
            }
        }
        if n == 0 {
            break;
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Whether the server closes `stream` within `within` (a read returns end of stream or
/// an error).
async fn closed_within(stream: &mut (impl AsyncReadExt + Unpin), within: Duration) -> bool {
    let mut buf = [0u8; 256];
    matches!(
        tokio::time::timeout(within, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

const HEALTH: &[u8] = b"GET /monitoring/health HTTP/1.1\r\nHost: localhost\r\n\r\n";

#[tokio::test]
async fn tls_sessions_resume_with_tls13_tickets_and_tls12_session_ids() {
    let p = portcullis().start().await;
    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let config = client_config(&p.pki.ca_pem, versions);
        let mut first = connect(&config, p.https).await;
        assert_eq!(status(&exchange(&mut first, HEALTH).await), 200);
        assert_eq!(
            first.get_ref().1.handshake_kind(),
            Some(HandshakeKind::Full)
        );
        drop(first);
        for _ in 0..3 {
            let mut again = connect(&config, p.https).await;
            assert_eq!(status(&exchange(&mut again, HEALTH).await), 200);
            assert_eq!(
                again.get_ref().1.handshake_kind(),
                Some(HandshakeKind::Resumed),
                "{versions:?}"
            );
        }
    }
}

#[tokio::test]
async fn silent_connections_are_closed_and_the_limit_holds_while_others_are_served() {
    let p = portcullis()
        .proxy_yaml("  limits: {tls_handshake_timeout_seconds: 1, max_connections: 4}\n")
        .start()
        .await;
    let config = client_config(&p.pki.ca_pem, &[&rustls::version::TLS13]);
    // A TCP connection that never starts TLS is closed once its handshake time is up.
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", p.https))
        .await
        .unwrap();
    let started = Instant::now();
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await);
    assert!(started.elapsed() >= Duration::from_millis(800));

    // Four idle connections hold every slot: the fifth is closed at once, before TLS.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(connect(&config, p.https).await);
    }
    let mut fifth = tokio::net::TcpStream::connect(("127.0.0.1", p.https))
        .await
        .unwrap();
    assert!(closed_within(&mut fifth, Duration::from_millis(500)).await);
    let metrics = p.metrics().await;
    assert!(
        metrics.contains("portcullis_connections_refused_total{reason=\"connection_limit\"}"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("portcullis_connections_refused_total{reason=\"tls_handshake_timeout\"} 1"),
        "{metrics}"
    );
    // The idle ones are still served; once they go, a new client gets a slot.
    assert_eq!(status(&exchange(&mut idle[0], HEALTH).await), 200);
    drop(idle);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut next = connect(&config, p.https).await;
    assert_eq!(status(&exchange(&mut next, HEALTH).await), 200);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_its_idle_limit() {
    let p = portcullis()
        .proxy_yaml("  limits: {keepalive_idle_seconds: 1}\n")
        .start()
        .await;
    let config = client_config(&p.pki.ca_pem, &[&rustls::version::TLS13]);
    let mut tls = connect(&config, p.https).await;
    assert_eq!(status(&exchange(&mut tls, HEALTH).await), 200);
    // A second request within the limit is served on the same connection.
    assert_eq!(status(&exchange(&mut tls, HEALTH).await), 200);
    let started = Instant::now();
    assert!(closed_within(&mut tls, Duration::from_secs(5)).await);
    assert!(started.elapsed() >= Duration::from_millis(800));
}

/// The server leaves transparent huge pages as the system sets them
/// (`THP_enabled` in its `/proc/<pid>/status`, Linux 5.0 and later). Turning them off
/// for the process saved idle memory, but Argon2id over small pages could not keep up
/// with 50 sign-ins a second (BENCHMARKS.md, eleventh stop): a process-wide switch
/// must not come back.
#[tokio::test]
async fn the_server_leaves_transparent_huge_pages_to_the_system() {
    let p = portcullis().start().await;
    let config = client_config(&p.pki.ca_pem, &[&rustls::version::TLS13]);
    let mut tls = connect(&config, p.https).await;
    assert_eq!(status(&exchange(&mut tls, HEALTH).await), 200);
    let proc_status = std::fs::read_to_string(format!("/proc/{}/status", p.pid())).unwrap();
    let thp = proc_status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .expect("this kernel reports THP_enabled in /proc/<pid>/status");
    assert_eq!(
        thp.trim(),
        "1",
        "the server turned transparent huge pages off for itself"
    );
}

/// The mappings of process `pid` advised for transparent huge pages.
fn huge_page_advised_mappings(pid: u32) -> Vec<smaps::Mapping> {
    smaps::mappings(&pid.to_string())
        .into_iter()
        .filter(smaps::Mapping::huge_page_advised)
        .collect()
}

/// Waits until process `pid` has no mapping advised for huge pages; fails after 20 s
/// (the backend unmaps idle Argon2id memory 5 to 10 s after its last use).
async fn until_no_huge_page_advice(pid: u32, after: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let advised = huge_page_advised_mappings(pid);
        if advised.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still advised for huge pages 20 s after {after}: {advised:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Idle connections hold small pages, Argon2id gets huge ones, and an idle server holds
/// no Argon2id memory (BENCHMARKS.md, twelfth stop): the allocator asks for no huge pages
/// (an arena it advised would stay so for good), a password check maps its working
/// memory on its own, advised for them, and that mapping is unmapped once no hash has
/// used it for a few seconds, the start-up hashes' (the bootstrap account) included.
#[tokio::test]
async fn argon2id_memory_alone_asks_for_huge_pages_and_leaves_when_idle() {
    let p = portcullis().start().await;
    let config = client_config(&p.pki.ca_pem, &[&rustls::version::TLS13]);
    let mut tls = connect(&config, p.https).await;
    assert_eq!(status(&exchange(&mut tls, HEALTH).await), 200);
    until_no_huge_page_advice(p.pid(), "start").await;

    // An unknown account: the same Argon2id work as a wrong password.
    let body = r#"{"username":"nobody-here","password":"not the password"}"#;
    let request = format!(
        "POST /auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let response = exchange(&mut tls, request.as_bytes()).await;
    assert_eq!(status(&response), 401, "{response}");
    let after_sign_in = huge_page_advised_mappings(p.pid());
    assert!(
        matches!(after_sign_in.as_slice(), [m] if m.size_kib >= 19 * 1024),
        "advised after a sign-in: {after_sign_in:?}"
    );
    until_no_huge_page_advice(p.pid(), "the sign-in").await;
}

#[tokio::test]
async fn a_sign_in_body_in_pieces_reaches_the_backend_whole() {
    let p = portcullis().start().await;
    let config = client_config(&p.pki.ca_pem, &[&rustls::version::TLS13]);
    let body = br#"{"username":"nobody-here","password":"not the password"}"#;
    let (a, b) = body.split_at(20);

    // Content-Length, the body in two writes with a pause between.
    let mut tls = connect(&config, p.https).await;
    let head = format!(
        "POST /auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(a).await.unwrap();
    tls.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let response = exchange(&mut tls, b).await;
    // Judged by the backend: unknown account, not a gateway failure.
    assert_eq!(status(&response), 401, "{response}");

    // Chunked, two chunks in two writes.
    let mut tls = connect(&config, p.https).await;
    tls.write_all(b"POST /auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    tls.write_all(format!("{:x}\r\n", a.len()).as_bytes())
        .await
        .unwrap();
    tls.write_all(a).await.unwrap();
    tls.write_all(b"\r\n").await.unwrap();
    tls.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut rest = format!("{:x}\r\n", b.len()).into_bytes();
    rest.extend_from_slice(b);
    rest.extend_from_slice(b"\r\n0\r\n\r\n");
    let response = exchange(&mut tls, &rest).await;
    assert_eq!(status(&response), 401, "{response}");

    // A sign-in whose account the per-account limit cannot read is refused before the
    // backend: a JSON array in field order (which the backend's parser would take as
    // username and password), no username, not JSON at all.
    for body in [
        r#"["alice","guess"]"#,
        r#"{"password":"guess"}"#,
        "username=alice",
    ] {
        let mut tls = connect(&config, p.https).await;
        let head = format!(
            "POST /auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let response = exchange(&mut tls, head.as_bytes()).await;
        assert_eq!(status(&response), 400, "{body}: {response}");
        assert!(
            response.contains("A sign-in is a JSON object with a username"),
            "{response}"
        );
    }

    // An empty chunked body is refused (it names no account), and leaves no stray bytes
    // on the pooled upstream connection: the requests after it are answered normally.
    let mut tls = connect(&config, p.https).await;
    let response = exchange(
        &mut tls,
        b"POST /auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    let code = status(&response);
    assert!((400..500).contains(&code), "{response}");
    for _ in 0..5 {
        let mut tls = connect(&config, p.https).await;
        assert_eq!(status(&exchange(&mut tls, HEALTH).await), 200);
    }
}

#[tokio::test]
async fn a_request_head_that_trickles_in_is_cut_at_its_deadline_and_slow_bodies_are_not() {
    let p = portcullis()
        .proxy_yaml("  limits: {request_head_timeout_seconds: 2}\n")
        .start()
        .await;
    let config = client_config(&p.pki.ca_pem, &[&rustls::version::TLS13]);

    // Slowloris: a head one header line at a time, each well within pingora's per-read
    // timeout. The connection ends at the head's deadline, not when the client likes.
    let mut slow = connect(&config, p.https).await;
    let started = Instant::now();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let mut cut_after = None;
    for i in 0..12 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let line = format!("X-Trickle-{i}: x\r\n");
        if slow.write_all(line.as_bytes()).await.is_err() || slow.flush().await.is_err() {
            cut_after = Some(started.elapsed());
            break;
        }
        // Meanwhile a normal client is served at once.
        if i == 1 {
            let mut other = connect(&config, p.https).await;
            assert_eq!(status(&exchange(&mut other, HEALTH).await), 200);
        }
    }
    let cut_after = match cut_after {
        Some(t) => t,
        None => {
            assert!(closed_within(&mut slow, Duration::from_secs(2)).await);
            started.elapsed()
        }
    };
    assert!(
        cut_after >= Duration::from_millis(1800) && cut_after < Duration::from_secs(5),
        "cut after {cut_after:?}"
    );
    let metrics = p.metrics().await;
    assert!(
        metrics.contains("portcullis_connections_refused_total{reason=\"request_head_timeout\"} 1"),
        "{metrics}"
    );

    // The deadline is per head: a keep-alive connection idle for longer than it between
    // requests, and a request whose body arrives slowly after a prompt head, are served.
    let mut tls = connect(&config, p.https).await;
    assert_eq!(status(&exchange(&mut tls, HEALTH).await), 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(status(&exchange(&mut tls, HEALTH).await), 200);
    let body = br#"{"username":"nobody-here","password":"not the password"}"#;
    let head = format!(
        "POST /auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    for piece in body[..body.len() - 1].chunks(12) {
        tls.write_all(piece).await.unwrap();
        tls.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let response = exchange(&mut tls, &body[body.len() - 1..]).await;
    assert_eq!(status(&response), 401, "{response}");
}

/// Hundreds of hostile connections at once, with the default limits: TCP connections
/// that never start TLS, TLS connections that never send a request, and request heads
/// trickling in a line at a time. A normal client is served promptly all the while, and
/// none of the hostile ones is let in past its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_idle_and_trickling_connections_do_not_stop_a_normal_client() {
    let p = portcullis().start().await;
    let config = client_config(&p.pki.ca_pem, &[&rustls::version::TLS13]);
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(
            tokio::net::TcpStream::connect(("127.0.0.1", p.https))
                .await
                .unwrap(),
        );
    }
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(connect(&config, p.https).await);
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut trickling = Vec::new();
    for n in 0..100 {
        let mut tls = connect(&config, p.https).await;
        let stop = Arc::clone(&stop);
        trickling.push(tokio::spawn(async move {
            let _ = tls
                .write_all(b"GET /monitoring/health HTTP/1.1\r\nHost: localhost\r\n")
                .await;
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let line = format!("X-Slow-{n}-{i}: x\r\n");
                if tls.write_all(line.as_bytes()).await.is_err() || tls.flush().await.is_err() {
                    break;
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }));
    }
    // 400 hostile connections are open; a normal client still gets prompt answers.
    for _ in 0..10 {
        let started = Instant::now();
        let mut tls = connect(&config, p.https).await;
        assert_eq!(status(&exchange(&mut tls, HEALTH).await), 200);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "a normal request took {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in trickling {
        t.await.unwrap();
    }
    // The silent ones were all closed at their handshake deadline (10 s by default).
    let metrics = p.metrics().await;
    assert!(
        !metrics.contains("reason=\"connection_limit\""),
        "no connection was refused for the limit: {metrics}"
    );
    let started = Instant::now();
    for s in &mut silent {
        let left = Duration::from_secs(15).saturating_sub(started.elapsed());
        assert!(
            closed_within(s, left).await,
            "a silent connection stayed open"
        );
    }
    drop(idle);
}

/// A request with more header fields than `proxy.limits.max_request_headers` is answered
/// 431 over HTTP/1.1 and HTTP/2 alike (HTTP/2 has no count bound of its own), and one
/// within the limit is served.
#[tokio::test]
async fn too_many_header_fields_are_answered_431_over_h1_and_h2() {
    let p = portcullis()
        .proxy_yaml("  limits: {max_request_headers: 40}\n")
        .start()
        .await;
    let config = client_config(&p.pki.ca_pem, &[&rustls::version::TLS13]);
    let request = |fields: usize| {
        let mut r = String::from("GET /monitoring/health HTTP/1.1\r\nHost: localhost\r\n");
        for i in 0..fields {
            r.push_str(&format!("X-Field-{i}: {i}\r\n"));
        }
        r.push_str("\r\n");
        r
    };
    let mut tls = connect(&config, p.https).await;
    assert_eq!(
        status(&exchange(&mut tls, request(30).as_bytes()).await),
        200
    );
    let mut tls = connect(&config, p.https).await;
    let refused = exchange(&mut tls, request(60).as_bytes()).await;
    assert_eq!(status(&refused), 431, "{refused}");
    assert!(refused.contains("too-many-headers"), "{refused}");

    let h2 = p.client();
    let send = |fields: usize| {
        let mut r = h2.get(p.url("/monitoring/health"));
        for i in 0..fields {
            r = r.header(format!("x-field-{i}"), i.to_string());
        }
        r.send()
    };
    let r = send(30).await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let r = send(60).await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 431);
}
