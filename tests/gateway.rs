//! End-to-end tests of the gateway foundation: the real binary on ephemeral
//! ports, a generated PKI, real HTTP/1.1 and h2 clients.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod support;

use portcullis_testkit::assert_eventually;

use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::{StatusCode, Version};
use support::pki::{client_trusting, issue, raw_request};
use support::upstream::start_echo;
use support::{free_port, port_is_free, portcullis};

/// The headers every response must carry, whoever wrote it.
fn assert_security_headers(h: &HeaderMap) {
    let get = |n: &str| {
        h.get(n)
            .unwrap_or_else(|| panic!("missing {n} in {h:?}"))
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        get("strict-transport-security"),
        "max-age=63072000; includeSubDomains"
    );
    assert_eq!(get("x-content-type-options"), "nosniff");
    assert_eq!(get("x-frame-options"), "DENY");
    assert_eq!(get("referrer-policy"), "no-referrer");
    assert_eq!(get("cross-origin-opener-policy"), "same-origin");
    assert_eq!(get("cross-origin-resource-policy"), "same-origin");
    assert!(get("permissions-policy").contains("camera=()"));
    let csp = get("content-security-policy");
    assert!(csp.contains("report-uri /.portcullis/csp-report"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(
        get("reporting-endpoints"),
        "csp-endpoint=\"/.portcullis/csp-report\""
    );
    assert!(h.get("server").is_none(), "Server header leaked: {h:?}");
    assert!(
        h.get("x-powered-by").is_none(),
        "X-Powered-By leaked: {h:?}"
    );
}

#[tokio::test]
async fn health_through_the_proxy_over_h2_and_http1_with_headers() {
    let p = portcullis().start().await;
    let r = p
        .client()
        .get(p.url("/monitoring/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.version(), Version::HTTP_2);
    assert_security_headers(r.headers());
    assert!(r.headers().get("x-request-id").is_some());
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"], "ok");

    let r = p
        .http1_client()
        .get(p.url("/monitoring/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.version(), Version::HTTP_11);
    assert_security_headers(r.headers());
}

#[tokio::test]
async fn clear_text_listener_only_redirects() {
    let p = portcullis().start().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (method, path) in [
        ("GET", "/x?y=1"),
        ("POST", "/api/tickets"),
        ("GET", "/monitoring/health"),
    ] {
        let r = client
            .request(
                method.parse().unwrap(),
                format!("http://127.0.0.1:{}{path}", p.http),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::PERMANENT_REDIRECT,
            "{method} {path}"
        );
        assert_eq!(
            r.headers()["location"].to_str().unwrap(),
            format!("https://127.0.0.1:{}{path}", p.https)
        );
        assert_security_headers(r.headers());
        assert!(
            r.text().await.unwrap().is_empty(),
            "the redirect serves no content"
        );
    }
    // A Host header that would shape a different URL, or names a host the certificate
    // is not for, is refused, not echoed.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for host in [
        "evil.example/x",
        "evil.example",
        "a:+80",
        "localhost.evil.example",
    ] {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", p.http))
            .await
            .unwrap();
        tcp.write_all(
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        tcp.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 400"), "{host}: {out}");
        assert!(
            !out.to_ascii_lowercase().contains("location:"),
            "{host}: {out}"
        );
    }
    // A name of the certificate is redirected to.
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", p.http))
        .await
        .unwrap();
    tcp.write_all(b"GET /a HTTP/1.1\r\nHost: LOCALHOST:8080\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 308"), "{out}");
    assert!(
        out.contains(&format!("https://LOCALHOST:{}/a", p.https)),
        "{out}"
    );
}

#[tokio::test]
async fn errors_carry_security_headers_401_404_and_502() {
    // 401 from the policy (an unknown path needs a signed-in caller), 404
    // from the proxy itself (no route), then 502 with the upstream down.
    let p = portcullis().start().await;
    let r = p
        .client()
        .get(p.url("/no/such/thing"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_security_headers(r.headers());
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["decision_id"].as_str().is_some_and(|s| !s.is_empty()),
        "{body}"
    );

    let echo = start_echo().await;
    let p = portcullis()
        .proxy_to(echo)
        .routes("[{name: api, path_prefix: /api}]")
        .start()
        .await;
    let r = p.client().get(p.url("/elsewhere")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_security_headers(r.headers());
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["type"], "urn:portcullis:problem:not-found");
    assert!(body["request_id"].as_str().is_some_and(|s| !s.is_empty()));

    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let p = portcullis().proxy_to(dead).start().await;
    let r = p.client().get(p.url("/api/tickets")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert_security_headers(r.headers());
    let r_request_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["type"], "urn:portcullis:problem:bad-gateway");
    assert!(
        !body.to_string().contains("127.0.0.1"),
        "internal detail leaked: {body}"
    );
    let ready = reqwest::get(p.admin_url("/health/ready")).await.unwrap();
    assert_eq!(
        ready.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "ready with the upstream down"
    );
    // Counted by route and kind; the other kinds are there at zero.
    let m = p.metrics().await;
    for line in [
        r#"portcullis_upstream_errors_total{kind="connect",route="api"} 1"#,
        r#"portcullis_upstream_errors_total{kind="timeout",route="api"} 0"#,
    ] {
        assert!(m.contains(line), "no `{line}`:\n{m}");
    }
    // And recorded as an `http.error` audit event (the proxy's file sink) with the
    // request id, the route, the problem answered and the cause, for /monitoring/errors.
    let request_id = r_request_id;
    let errors = || {
        std::fs::read_to_string(p.state_dir().join("audit/proxy.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["event.action"] == "http.error")
            .collect::<Vec<_>>()
    };
    assert_eventually!(
        errors().len() == 1,
        Duration::from_secs(10),
        "no http.error event: {:?}",
        errors()
    );
    let e = &errors()[0];
    assert_eq!(e["event.outcome"], "failure");
    assert_eq!(e["log.level"], "error");
    assert_eq!(e["portcullis.route"], "api");
    assert_eq!(e["http.request.id"], request_id.as_str());
    let d = &e["portcullis.details"];
    assert_eq!(d["problem"], "urn:portcullis:problem:bad-gateway");
    assert_eq!(d["status"], 502);
    assert_eq!(d["cause"], "upstream");
}

#[tokio::test]
async fn upstream_fingerprints_are_removed() {
    let echo = start_echo().await;
    let p = portcullis().proxy_to(echo).start().await;
    let r = p.client().get(p.url("/api/x")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_security_headers(r.headers());
}

#[tokio::test]
async fn spoofed_forwarding_and_identity_headers_from_untrusted_peers_are_dropped() {
    let echo = start_echo().await;
    let p = portcullis().proxy_to(echo).start().await;
    let r = p
        .client()
        .get(p.url("/api/x?q=1"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6")
        .header("x-real-ip", "6.6.6.6")
        .header("x-forwarded-host", "evil.example")
        .header("x-request-id", "attacker-chosen")
        .header("x-portcullis-user", "admin")
        .header("x-portcullis-client-ip", "6.6.6.6")
        .send()
        .await
        .unwrap();
    let seen: serde_json::Value = r.json().await.unwrap();
    let h = &seen["headers"];
    assert_eq!(h["x-forwarded-for"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(
        h["x-portcullis-client-ip"],
        serde_json::json!(["127.0.0.1"])
    );
    assert_eq!(h["x-forwarded-proto"], serde_json::json!(["https"]));
    assert_eq!(
        h["x-forwarded-host"],
        serde_json::json!([format!("127.0.0.1:{}", p.https)])
    );
    assert!(h.get("forwarded").is_none(), "{h}");
    assert!(h.get("x-real-ip").is_none(), "{h}");
    assert!(h.get("x-portcullis-user").is_none(), "{h}");
    let rid = h["x-request-id"][0].as_str().unwrap();
    assert_ne!(rid, "attacker-chosen");
    assert_eq!(seen["target"], "/api/x?q=1");

    // From a trusted proxy, the chain and request id are kept; identity
    // headers are still never accepted.
    let p = portcullis()
        .proxy_to(echo)
        .trusted_proxies(&["127.0.0.0/8"])
        .start()
        .await;
    let r = p
        .client()
        .get(p.url("/api/x"))
        .header("x-forwarded-for", "198.51.100.7")
        .header("x-request-id", "lb-1234")
        .header("x-portcullis-user", "admin")
        .send()
        .await
        .unwrap();
    let seen: serde_json::Value = r.json().await.unwrap();
    let h = &seen["headers"];
    assert_eq!(
        h["x-forwarded-for"],
        serde_json::json!(["198.51.100.7, 127.0.0.1"])
    );
    assert_eq!(
        h["x-portcullis-client-ip"],
        serde_json::json!(["198.51.100.7"])
    );
    assert_eq!(h["x-request-id"], serde_json::json!(["lb-1234"]));
    assert!(h.get("x-portcullis-user").is_none(), "{h}");
}

#[tokio::test]
async fn path_spellings_are_normalised_or_refused() {
    let echo = start_echo().await;
    let p = portcullis()
        .proxy_to(echo)
        .routes("[{name: admin, path_prefix: /admin}, {name: api, path_prefix: /api}]")
        .start()
        .await;
    let send = |target: &'static str| {
        let ca = p.pki.ca_pem.clone();
        let port = p.https;
        async move {
            let req =
                format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
            raw_request(&ca, port, req.as_bytes()).await
        }
    };
    // Canonicalised, and forwarded in the canonical spelling.
    for (target, forwarded) in [
        ("/admin/../admin", "/admin"),
        ("//admin", "/admin"),
        ("/api/./x//y", "/api/x/y"),
        ("/%61pi/x", "/api/x"),
        ("/api/x/%2e%2e/y?a=%2e%2e", "/api/y?a=%2e%2e"),
    ] {
        let (status, text) = send(target).await;
        assert_eq!(status, 200, "{target}: {text}");
        assert!(
            text.contains(&format!("\"target\":\"{forwarded}\"")),
            "{target}: {text}"
        );
    }
    // Ambiguous spellings are refused before routing.
    for target in [
        "/%2e%2e/admin",
        "/api/..%2fadmin",
        "/api%2fx",
        "/api%5cx",
        "/api\\..\\admin",
        "/api/x%00",
        "/admin;jsessionid=x",
        "/admin.",
        "/%c0%ae%c0%ae/admin",
        "/api/%252e%252e/admin",
    ] {
        let (status, text) = send(target).await;
        assert_eq!(status, 400, "{target}: {text}");
        assert!(
            text.contains("urn:portcullis:problem:invalid-path"),
            "{target}: {text}"
        );
        assert!(
            text.contains("strict-transport-security"),
            "{target}: {text}"
        );
    }
    // Case is not a way around route classification: /ADMIN is the admin route.
    let (status, text) = send("/ADMIN/x").await;
    assert_eq!(status, 200, "{text}");
    let m = p.metrics().await;
    assert!(
        m.contains("portcullis_http_rejections_total{reason=\"above_root\"}"),
        "{m}"
    );
    assert!(m.contains("route=\"admin\""), "{m}");
}

#[tokio::test]
async fn csp_reports_are_accepted_counted_and_bad_ones_refused() {
    let p = portcullis().start().await;
    let c = p.client();
    let url = p.url("/.portcullis/csp-report");
    let legacy = r#"{"csp-report":{"document-uri":"https://127.0.0.1/api/tickets?token=x","violated-directive":"script-src-elem","effective-directive":"script-src-elem","blocked-uri":"https://evil.example/x.js","original-policy":"default-src 'none'","disposition":"enforce"}}"#;
    let r = c
        .post(&url)
        .header("content-type", "application/csp-report")
        .body(legacy)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_security_headers(r.headers());
    let batch = r#"[{"type":"csp-violation","age":10,"url":"https://127.0.0.1/admin/x","user_agent":"t","body":{"documentURL":"https://127.0.0.1/admin/x","effectiveDirective":"img-src","blockedURL":"https://evil.example/i.png","disposition":"report"}}]"#;
    let r = c
        .post(&url)
        .header("content-type", "application/reports+json")
        .body(batch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    for (ct, body, want) in [
        (
            "application/csp-report",
            "{not json <script>echo-me</script>".to_owned(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "application/csp-report",
            r#"{"csp-report":{}}"#.to_owned(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "application/reports+json",
            "[]".to_owned(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "text/plain",
            legacy.to_owned(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "application/csp-report",
            format!("{{\"x\":\"{}\"}}", "a".repeat(70 * 1024)),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ] {
        let r = c
            .post(&url)
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "{ct}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        assert_security_headers(r.headers());
        // The parser's message (which quotes the input) stays in the log.
        let text = r.text().await.unwrap();
        for echoed in ["echo-me", "line 1", "expected"] {
            assert!(!text.contains(echoed), "{ct}: {text}");
        }
    }
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);

    let m = p.metrics().await;
    assert!(
        m.contains(r#"portcullis_csp_violations_total{directive="script-src-elem",disposition="enforce",route="api"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"portcullis_csp_violations_total{directive="img-src",disposition="report",route="admin"} 1"#),
        "{m}"
    );
    let log = p.log();
    assert!(log.contains("CSP violation reported"), "{log}");
    assert!(
        !log.contains("token=x"),
        "query strings must not reach the log"
    );
}

#[tokio::test]
async fn metrics_pass_promtool() {
    let p = portcullis().start().await;
    for path in ["/monitoring/health", "/nope", "/%2e%2e/x"] {
        p.client().get(p.url(path)).send().await.unwrap();
    }
    let metrics = p.metrics().await;
    assert!(metrics.contains("portcullis_http_request_duration_seconds_bucket"));
    assert!(metrics.contains(r#"portcullis_http_requests_total{method="GET",route="monitoring",status_class="2xx"} 1"#), "{metrics}");
    let file = p.path().join("metrics.txt");
    std::fs::write(&file, &metrics).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .expect("promtool is required: `make test` installs it (Debian package prometheus)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool: {report}"
    );
}

#[tokio::test]
async fn config_errors_are_all_reported_with_exit_64_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        format!(
            "proxy:\n  listen: {{https: 127.0.0.1:{port}, http: not-an-address, admin: 127.0.0.1:0}}\n  trusted_proxies: [10.0.0.0/40]\n  tls: {{certificate_file: /nonexistent.pem}}\n  headers: {{hsts_max_age_seconds: 5, csp: {{policy: \"script-src 'unsafe-inline'\"}}}}\n  routes: [{{name: a, path_prefix: api, upstream: nowhere}}]\n"
        ),
    )
    .unwrap();
    for args in [
        vec!["check-config", file.to_str().unwrap()],
        vec!["--config", file.to_str().unwrap(), "up"],
    ] {
        let out = std::process::Command::new(support::binary())
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        for path in [
            "proxy.listen.http:",
            "proxy.trusted_proxies[0]:",
            "proxy.tls:",
            "proxy.headers.hsts_max_age_seconds:",
            "proxy.headers.csp.policy:",
            "proxy.routes[0].path_prefix:",
            "proxy.routes[0].upstream:",
        ] {
            assert!(
                err.contains(path),
                "{args:?}: {path} not reported in:\n{err}"
            );
        }
        assert!(
            port_is_free(port),
            "a port was bound despite the bad config"
        );
    }
    // A structural mistake names its path too.
    std::fs::write(&file, "proxy:\n  listen:\n    htps: 1\n").unwrap();
    let out = std::process::Command::new(support::binary())
        .args(["check-config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("proxy.listen"));
}

/// The worker threads' listening sockets share the HTTPS port among themselves
/// (SO_REUSEPORT), never with anyone else: another program, or a second Portcullis,
/// on the address is a start-up error that names it, and the first keeps serving.
#[tokio::test]
async fn a_taken_https_port_is_a_start_error_even_for_a_second_portcullis() {
    let first = portcullis().start().await;
    let other_program = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_by_other = other_program.local_addr().unwrap().port();
    let config = std::fs::read_to_string(first.path().join("portcullis.yaml")).unwrap();
    for (taken, holder) in [
        (first.https, "a second Portcullis"),
        (taken_by_other, "another program"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut yaml = config
            .replace(
                &first.state_dir().display().to_string(),
                &dir.path().join("var").display().to_string(),
            )
            .replace(
                &format!("127.0.0.1:{}", first.https),
                &format!("127.0.0.1:{taken}"),
            );
        for port in [first.http, first.admin, first.backend, first.backend_admin] {
            let to = free_port();
            yaml = yaml.replace(&format!("127.0.0.1:{port}"), &format!("127.0.0.1:{to}"));
        }
        let file = dir.path().join("portcullis.yaml");
        std::fs::write(&file, yaml).unwrap();
        let started = tokio::process::Command::new(support::binary())
            .args(["--config", file.to_str().unwrap(), "up"])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(60), started)
            .await
            .unwrap_or_else(|_| panic!("{holder}: started on a taken port"))
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{holder}: {err}");
        assert!(
            err.contains(&format!("cannot listen on 127.0.0.1:{taken}")),
            "{holder}: {err}"
        );
    }
    let live = first
        .client()
        .get(first.url("/api/tickets"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), StatusCode::UNAUTHORIZED);
    drop(other_program);
}

#[tokio::test]
async fn shipped_example_config_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/portcullis.yaml");
    let out = std::process::Command::new(support::binary())
        .args(["check-config", example])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn committed_json_schema_matches_the_code() {
    let out = std::process::Command::new(support::binary())
        .arg("config-schema")
        .output()
        .unwrap();
    let generated: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/portcullis.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        generated, committed,
        "run `make schema` and commit docs/portcullis.schema.json"
    );
}

#[tokio::test]
async fn certificate_files_are_reloaded_without_restart() {
    let p = portcullis().start().await;
    let next = issue("rotated");
    let new_client = client_trusting(&next.ca_pem).build().unwrap();
    assert!(
        new_client
            .get(p.url("/monitoring/health"))
            .send()
            .await
            .is_err(),
        "the new CA must not be trusted before rotation"
    );
    // A broken replacement is refused and the old certificate keeps serving.
    std::fs::write(
        &p.pki.cert_path,
        "-----BEGIN CERTIFICATE-----\nnot base64\n",
    )
    .unwrap();
    assert_eventually!(
        p.metrics()
            .await
            .contains(r#"portcullis_reloads_total{kind="certificate",result="failure"}"#),
        Duration::from_secs(15),
        "broken certificate not noticed"
    );
    let r = p.client().get(p.url("/monitoring/health")).send().await;
    assert_eq!(
        r.map(|r| r.status())
            .map_err(|e| format!("{e:?}\n{}", p.log()))
            .unwrap(),
        StatusCode::OK
    );

    std::fs::write(&p.pki.key_path, &next.key_pem).unwrap();
    std::fs::write(&p.pki.cert_path, &next.cert_pem).unwrap();
    assert_eventually!(
        new_client
            .get(p.url("/monitoring/health"))
            .send()
            .await
            .is_ok(),
        Duration::from_secs(15),
        "rotated certificate not served:\n{}",
        p.log()
    );
    assert!(
        p.metrics()
            .await
            .contains(r#"portcullis_reloads_total{kind="certificate",result="success"}"#)
    );
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_within_grace() {
    let echo = start_echo().await;
    let mut p = portcullis().proxy_to(echo).grace_seconds(5).start().await;
    let client = p.client();
    let url = p.url("/slow");
    let in_flight = tokio::spawn(async move { client.get(url).send().await.map(|r| r.status()) });
    // SIGTERM only once the proxy is holding the request.
    assert_eventually!(
        p.metrics()
            .await
            .contains("portcullis_http_requests_in_flight 1"),
        Duration::from_secs(10),
        "the slow request never reached the proxy"
    );
    let sent = Instant::now();
    p.signal("TERM");
    let status = in_flight
        .await
        .unwrap()
        .expect("in-flight request was cut off");
    assert_eq!(status, StatusCode::OK);
    let exit = p
        .wait_exit(Duration::from_secs(6))
        .await
        .expect("did not exit within the grace period");
    assert!(exit.success(), "{exit:?}\n{}", p.log());
    // It left once idle instead of sitting out the full grace period.
    assert!(
        sent.elapsed() < Duration::from_secs(4),
        "took {:?}",
        sent.elapsed()
    );

    // Idle: exits well within the grace period (the audit spools get a
    // bounded moment to hand over their last events).
    // SIGINT (an operator's Ctrl-C) exits at once, by the same path.
    for signal in ["TERM", "INT"] {
        let mut p = portcullis().grace_seconds(10).start().await;
        let sent = Instant::now();
        p.signal(signal);
        if p.wait_exit(Duration::from_secs(10)).await.is_none() {
            let log = p.log();
            panic!(
                "idle proxy did not exit on SIG{signal}; {} failed accepts logged",
                log.matches("Accept() failed").count()
            );
        }
        assert!(
            sent.elapsed() < Duration::from_secs(8),
            "SIG{signal} took {:?}",
            sent.elapsed()
        );
        // The services stopped before their runtimes: no accept loop met a closed reactor.
        assert!(!p.log().contains("Accept() failed"), "SIG{signal}");
    }
}

#[tokio::test]
async fn self_signed_certificate_is_generated_when_none_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("var");
    let (https, admin, backend) = (free_port(), free_port(), free_port());
    let config = dir.path().join("p.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {}\nproxy:\n  listen: {{https: 127.0.0.1:{https}, http: null, admin: 127.0.0.1:{admin}}}\n  upstreams: {{backend: {{address: '127.0.0.1:{backend}'}}}}\n  auth: {{revocation_feed_url: 'http://127.0.0.1:{backend}/auth/revocations', issuers: [{{issuer: portcullis, label: backend, audiences: [portcullis], jwks_url: 'http://127.0.0.1:{backend}/auth/jwks.json'}}]}}\nshared: {{policy_dir: '{policies}'}}\nbackend: {{listen: '127.0.0.1:{backend}', admin_listen: null}}\n",
            state.display(),
            policies = support::policy_dir()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(support::binary())
        .args(["--config", config.to_str().unwrap(), "up"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let cert = state.join("tls/self-signed.crt");
    assert_eventually!(
        cert.exists() && port_is_free(https).eq(&false),
        Duration::from_secs(20),
        "no certificate generated"
    );
    let ca = std::fs::read_to_string(&cert).unwrap();
    let key = state.join("tls/self-signed.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let client = client_trusting(&ca).build().unwrap();
    assert_eventually!(
        client
            .get(format!("https://localhost:{https}/monitoring/health"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200),
        Duration::from_secs(20),
        "self-signed endpoint not serving"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn the_web_application_is_served_from_its_folder_and_nothing_else_is() {
    let web = tempfile::tempdir().unwrap();
    std::fs::create_dir(web.path().join("assets")).unwrap();
    std::fs::write(
        web.path().join("index.html"),
        "<!doctype html><title>T</title>",
    )
    .unwrap();
    std::fs::write(web.path().join("assets/app-1.js"), "console.log(1)").unwrap();
    std::fs::write(web.path().join("secret.txt"), "not for clients").unwrap();
    let p = portcullis()
        .backend_yaml(&format!("  web_dir: {}\n", web.path().display()))
        .start()
        .await;
    let c = p.client();

    let r = c.get(p.url("/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_security_headers(r.headers());
    assert_eq!(r.headers()["cache-control"], "no-cache");
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("trusted-types portcullis"), "{csp}");
    assert!(csp.contains("require-trusted-types-for 'script'"), "{csp}");
    assert_eq!(r.text().await.unwrap(), "<!doctype html><title>T</title>");

    let r = c.get(p.url("/assets/app-1.js")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("javascript")
    );
    assert_eq!(r.text().await.unwrap(), "console.log(1)");

    // Anonymous reads reach only the page and the bundle: not the folder's other files,
    // not a way out of `assets/`, not other methods.
    for path in [
        "/secret.txt",
        "/index.html",
        "/assets/../secret.txt",
        "/assets/%2e%2e/secret.txt",
    ] {
        let r = c.get(p.url(path)).send().await.unwrap();
        assert!(
            matches!(r.status().as_u16(), 400 | 401 | 404),
            "{path}: {}",
            r.status()
        );
        assert!(
            !r.text().await.unwrap().contains("not for clients"),
            "{path}"
        );
    }
    let r = c.get(p.url("/assets/missing.js")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = c.post(p.url("/")).send().await.unwrap();
    assert!(matches!(r.status().as_u16(), 401 | 403), "{}", r.status());
}

#[tokio::test]
async fn an_unbuilt_web_application_is_a_clear_503_not_a_404() {
    let p = portcullis()
        .backend_yaml("  web_dir: /nonexistent/portcullis-web\n")
        .start()
        .await;
    let r = p.client().get(p.url("/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .ends_with("web-app-not-built"),
        "{body}"
    );
    assert!(
        body["detail"].as_str().unwrap().contains("make web"),
        "{body}"
    );
}

#[tokio::test]
async fn an_oversized_report_is_answered_413_over_h2_and_http1() {
    let p = portcullis().start().await;
    for client in [p.client(), p.http1_client()] {
        for size in [70 * 1024, 1024 * 1024] {
            let r = client
                .post(p.url("/.portcullis/csp-report"))
                .header("content-type", "application/csp-report")
                .body(vec![b'a'; size])
                .send()
                .await
                .unwrap_or_else(|e| panic!("{size} bytes: no answer: {e:?}"));
            assert_eq!(
                r.status(),
                StatusCode::PAYLOAD_TOO_LARGE,
                "{:?}",
                r.version()
            );
            assert_security_headers(r.headers());
            let body: serde_json::Value = r.json().await.unwrap();
            assert!(
                body["type"]
                    .as_str()
                    .unwrap()
                    .ends_with("csp-report-too-large")
            );
        }
    }
}

/// curl (nghttp2) keeps sending a large body while the answer comes: an early refusal
/// must reach it as a status, not as a reset stream.
#[tokio::test]
async fn early_refusals_reach_an_h2_client_that_is_still_sending() {
    let p = portcullis().start().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &p.pki.ca_pem).unwrap();
    let body = dir.path().join("body");
    std::fs::write(&body, vec![b'a'; 1024 * 1024]).unwrap();
    for (path, want) in [
        ("/.portcullis/csp-report", "413 2"),
        ("/api/tickets", "401 2"),
    ] {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "--http2",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{http_version}",
            ])
            .args([
                "-H",
                "content-type: application/csp-report",
                "--data-binary",
            ])
            .arg(format!("@{}", body.display()))
            .arg("--cacert")
            .arg(&ca)
            .args(["--resolve", &format!("localhost:{}:127.0.0.1", p.https)])
            .arg(format!("https://localhost:{}{path}", p.https))
            .output()
            .expect("curl (Debian's curl) is needed for this test");
        let got = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            got,
            want,
            "{path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
