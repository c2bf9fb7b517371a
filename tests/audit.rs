//! The audit trail end to end (`portcullis up`): a scripted session produces exactly the
//! expected audit events in the database table (read through the admin API), the proxy's
//! among them; the export streams in bounded memory; `portcullis audit verify` finds an
//! edited row and an edited file line; only the proxy may write to the ingest endpoint;
//! a refusal's event is on disk before the refusal is answered.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Portcullis, portcullis};

const PW: &str = "a long enough password";

fn api(p: &Portcullis, token: &str, method: Method, path: &str) -> reqwest::RequestBuilder {
    p.client().request(method, p.url(path)).bearer_auth(token)
}

fn token(login: &Value) -> String {
    login["access_token"].as_str().unwrap().to_owned()
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

async fn json_ok(r: reqwest::Response, status: StatusCode) -> (Value, String) {
    let got = r.status();
    let etag = r
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = r.text().await.unwrap();
    assert_eq!(got, status, "{text}");
    (serde_json::from_str(&text).unwrap_or(Value::Null), etag)
}

/// Every event in the table, through the admin API (all pages).
async fn all_events(p: &Portcullis, admin: &str, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/admin/audit/logs?limit=500{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (page, _) = json_ok(
            api(p, admin, Method::GET, &path).send().await.unwrap(),
            StatusCode::OK,
        )
        .await;
        out.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}

fn key(e: &Value) -> (String, String) {
    (
        e["portcullis.emitter"].as_str().unwrap().to_owned(),
        e["event.action"].as_str().unwrap().to_owned(),
    )
}

async fn sqlite(p: &Portcullis) -> sqlx::SqlitePool {
    let url = format!("sqlite://{}", p.state_dir().join("portcullis.db").display());
    sqlx::SqlitePool::connect(&url).await.unwrap()
}

#[tokio::test]
async fn a_scripted_session_leaves_exactly_the_expected_audit_trail() {
    let p = portcullis().start().await;
    p.add_users(&[
        ("alice", "employee", PW),
        ("tom", "technician", PW),
        ("hank", "department_head", PW),
        ("boss", "administrator", PW),
    ]);
    let client = p.client();

    // A failed sign-in, then a good one.
    let r = client
        .post(p.url("/auth/login"))
        .json(&json!({"username": "alice", "password": "not the password", "client": "api"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let alice_plain = token(&p.login("alice", PW).await);

    // MFA enrolment, then a sign-in with a TOTP code (the next time step: the
    // confirmation used the current one, and a step is accepted once).
    let (enrol, _) = json_ok(
        api(&p, &alice_plain, Method::POST, "/auth/mfa/totp/enroll")
            .json(&serde_json::json!({"password": PW}))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let totp = portcullis_backend::identity::mfa::totp(
        enrol["secret"].as_str().unwrap(),
        "Portcullis",
        "alice",
    )
    .unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as u64;
    json_ok(
        api(&p, &alice_plain, Method::POST, "/auth/mfa/totp/confirm")
            .json(&json!({"code": totp.generate(now)}))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let (mfa_login, _) = json_ok(
        client
            .post(p.url("/auth/login"))
            .json(&json!({"username": "alice", "password": PW, "client": "api", "totp_code": totp.generate(now + 30)}))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let alice = token(&mfa_login);
    assert_eq!(claims(&alice)["amr"], json!(["pwd", "otp"]));

    // Tickets: create, update, assign, approve.
    let (ticket, etag) = json_ok(
        api(&p, &alice, Method::POST, "/api/tickets")
            .json(&json!({"title": "Leaking tap in room 4"}))
            .send()
            .await
            .unwrap(),
        StatusCode::CREATED,
    )
    .await;
    let id = ticket["id"].as_str().unwrap().to_owned();
    let (_, etag) = json_ok(
        api(&p, &alice, Method::PATCH, &format!("/api/tickets/{id}"))
            .header("if-match", etag)
            .json(&json!({"title": "Leaking tap in room 4 (cold water)"}))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let hank = token(&p.login("hank", PW).await);
    let (employees, _) = json_ok(
        api(&p, &hank, Method::GET, "/api/employees")
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let tom_id = employees
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["username"] == "tom")
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let (_, etag) = json_ok(
        api(
            &p,
            &hank,
            Method::PUT,
            &format!("/api/tickets/{id}/assignment"),
        )
        .header("if-match", etag)
        .json(&json!({"assignee_id": tom_id}))
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await;
    json_ok(
        api(
            &p,
            &hank,
            Method::POST,
            &format!("/api/tickets/{id}/approval"),
        )
        .header("if-match", etag)
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await;

    // A role change ends tom's session.
    let tom = token(&p.login("tom", PW).await);
    let boss = token(&p.login("boss", PW).await);
    json_ok(
        api(
            &p,
            &boss,
            Method::PATCH,
            &format!("/api/employees/{tom_id}"),
        )
        .json(&json!({"roles": ["technician", "employee"]}))
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await;

    // Logout, and an administrator ends hank's session.
    let r = api(&p, &alice, Method::POST, "/auth/logout")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let hank_sid = claims(&hank)["sid"].as_str().unwrap().to_owned();
    let r = api(
        &p,
        &boss,
        Method::DELETE,
        &format!("/admin/sessions/{hank_sid}"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // The proxy's events: a policy denial and a refused token.
    let r = api(&p, &alice_plain, Method::GET, "/admin/audit/logs")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let denied_request = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let r = api(&p, "not-a-token", Method::GET, "/api/tickets")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // An export is itself an event.
    let r = api(
        &p,
        &boss,
        Method::GET,
        "/admin/audit/logs/export?category=maintenance",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = r.text().await.unwrap();
    assert!(
        csv.starts_with("timestamp,event_id,emitter,seq,category,action"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 1 + 4, "{csv}");

    let expected: BTreeSet<(String, String)> = [
        ("cli", "user.create"),
        ("cli", "user.import"),
        ("backend", "user.create"),
        ("backend", "login"),
        ("backend", "mfa.enroll"),
        ("backend", "mfa.verify"),
        ("backend", "ticket.create"),
        ("backend", "ticket.update"),
        ("backend", "ticket.assign"),
        ("backend", "ticket.approve"),
        ("backend", "user.update"),
        ("backend", "user.roles_change"),
        ("backend", "session.revoke"),
        ("backend", "logout"),
        ("backend", "audit.export"),
        ("proxy", "jwks.change"),
        ("proxy", "policy.deny"),
        ("proxy", "token.reject"),
    ]
    .into_iter()
    .map(|(e, a)| (e.to_owned(), a.to_owned()))
    .collect();
    // Checkpoints come every 60 s and at shutdown: allowed, not required.
    let optional = |k: &(String, String)| k.1 == "audit-checkpoint";
    let deadline = Instant::now() + Duration::from_secs(30);
    let events = loop {
        let events = all_events(&p, &boss, "").await;
        let seen: BTreeSet<_> = events.iter().map(key).filter(|k| !optional(k)).collect();
        if expected.is_subset(&seen) || Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let seen: BTreeSet<_> = events.iter().map(key).filter(|k| !optional(k)).collect();
    let missing: Vec<_> = expected.difference(&seen).collect();
    let unexpected: Vec<_> = seen.difference(&expected).collect();
    assert!(
        missing.is_empty() && unexpected.is_empty(),
        "missing {missing:?}, unexpected {unexpected:?}\n{}",
        p.log()
    );

    let find = |emitter: &str, action: &str| -> Vec<&Value> {
        events
            .iter()
            .filter(|e| key(e) == (emitter.to_owned(), action.to_owned()))
            .collect()
    };
    // Outcomes and details that matter to an investigator.
    let logins = find("backend", "login");
    let failed: Vec<_> = logins
        .iter()
        .filter(|e| e["event.outcome"] == "failure")
        .collect();
    assert_eq!(failed.len(), 1, "{logins:?}");
    assert_eq!(failed[0]["user.id"], "alice");
    assert_eq!(
        failed[0]["portcullis.details"]["reason"],
        "invalid_credentials"
    );
    assert!(failed[0]["source.ip"].is_string(), "{:?}", failed[0]);
    assert_eq!(
        logins
            .iter()
            .filter(|e| e["event.outcome"] == "success")
            .count(),
        5
    );
    let reasons: BTreeSet<_> = find("backend", "session.revoke")
        .iter()
        .map(|e| {
            e["portcullis.details"]["reason"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        reasons,
        ["admin", "logout", "role_change"]
            .into_iter()
            .map(str::to_owned)
            .collect()
    );
    let deny = find("proxy", "policy.deny");
    assert_eq!(deny.len(), 1, "{deny:?}");
    assert_eq!(deny[0]["event.category"], "security");
    assert_eq!(deny[0]["http.request.id"], denied_request.as_str());
    assert!(deny[0]["portcullis.decision.id"].is_string());
    assert!(deny[0]["portcullis.policy.digest"].is_string());
    assert_eq!(deny[0]["user.id"], claims(&alice_plain)["sub"]);
    assert!(deny[0]["portcullis.details"]["rule"].is_string());
    let export = find("backend", "audit.export");
    assert_eq!(export[0]["portcullis.details"]["rows"], 4);
    assert_eq!(
        export[0]["portcullis.details"]["filters"],
        json!({"category": "maintenance"})
    );
    // No secret reached the trail.
    let all = serde_json::to_string(&events).unwrap();
    assert!(
        !all.contains(PW) && !all.contains(&alice),
        "a secret leaked"
    );

    // Filters and count.
    let (count, _) = json_ok(
        api(
            &p,
            &boss,
            Method::GET,
            "/admin/audit/logs/count?action=login&outcome=failure",
        )
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(count["count"], 1);
    let by_request = all_events(&p, &boss, &format!("&request_id={denied_request}")).await;
    assert_eq!(by_request.len(), 1, "{by_request:?}");
    let r = api(&p, &boss, Method::GET, "/admin/audit/logs?level=loud")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // Only administrators (the proxy refuses, and so would the backend).
    let r = api(&p, &tom, Method::GET, "/admin/audit/logs/count")
        .send()
        .await
        .unwrap();
    assert!(r.status() == StatusCode::FORBIDDEN || r.status() == StatusCode::UNAUTHORIZED);

    // --- audit verify: the table and the files verify, with the configured keys.
    let (ok, out) = p.cli(&["audit", "verify", "--database"]);
    assert!(ok, "{out}");
    for emitter in ["proxy", "backend", "cli"] {
        assert!(
            out.contains(&format!("audit_events ({emitter}): ok")),
            "{out}"
        );
    }
    let backend_file = p.state_dir().join("audit/backend.jsonl");
    let key = p.state_dir().join("keys/audit-checkpoint-backend.key.pub");
    let (ok, out) = p.cli(&[
        "audit",
        "verify",
        backend_file.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");

    // An edited line in a copy of the file is found, by line.
    let copy = p.path().join("copy.jsonl");
    let text = std::fs::read_to_string(&backend_file).unwrap();
    let edited: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 2 {
                l.replacen(
                    "\"ecs.version\":\"8.11.0\"",
                    "\"ecs.version\":\"8.11.1\"",
                    1,
                )
            } else {
                l.to_owned()
            }
        })
        .collect();
    assert_ne!(edited.join("\n"), text.trim_end(), "line 3 was not changed");
    std::fs::write(&copy, edited.join("\n") + "\n").unwrap();
    let (code, out) = p.cli_status(&["audit", "verify", copy.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("copy.jsonl:3") && out.contains("edited"),
        "{out}"
    );
    // The same for scripts: one JSON object, the same exit status.
    let (code, out) = p.cli_status(&["audit", "verify", copy.to_str().unwrap(), "--json"]);
    assert_eq!(code, Some(2), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("{out}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["targets"][0]["status"], "tampered", "{v}");
    assert_eq!(v["targets"][0]["tamper"], "edited", "{v}");
    assert!(
        v["targets"][0]["position"]
            .as_str()
            .unwrap()
            .ends_with("copy.jsonl:3"),
        "{v}"
    );
    let (ok, out) = p.cli(&["audit", "verify", "--database", "--json"]);
    assert!(ok, "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("{out}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert!(
        v["targets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["status"] == "ok" && t["signatures_checked"] == true),
        "{v}"
    );

    // An edited row in the table is found, by row.
    let db = sqlite(&p).await;
    let row: (i64,) = sqlx::query_as(
        "select audit_event_id from audit_events where emitter = 'backend' and action = 'login' and outcome = 'failure'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    sqlx::query("update audit_events set line = replace(line, '\"alice\"', '\"mallory\"') where audit_event_id = $1")
        .bind(row.0)
        .execute(&db)
        .await
        .unwrap();
    let (code, out) = p.cli_status(&["audit", "verify", "--database"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains(&format!("audit_event_id={} ", row.0)) && out.contains("edited"),
        "{out}"
    );
    assert!(out.contains("audit_events (proxy): ok"), "{out}");
    // Each verification is an event; a finding of tampering is critical.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let found = all_events(&p, &boss, "&action=audit.verify&outcome=failure").await;
        if found.len() >= 2 {
            assert!(
                found.iter().all(|e| e["log.level"] == "critical"),
                "{found:?}"
            );
            assert!(
                found
                    .iter()
                    .any(|e| e["portcullis.details"]["tamper"] == "edited")
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tampering not audited: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn only_the_proxy_may_write_to_the_ingest() {
    let p = portcullis().start().await;
    p.add_users(&[("alice", "employee", PW), ("boss", "administrator", PW)]);
    let boss = token(&p.login("boss", PW).await);
    let line = json!({
        "@timestamp": "2026-01-01T00:00:00.000000Z", "ecs.version": "8.11.0",
        "event.id": "0190e3a0-0000-7000-8000-000000000001", "event.category": "auth",
        "event.action": "login", "event.outcome": "success", "log.level": "info",
        "portcullis.emitter": "proxy", "portcullis.chain.seq": 1,
        "portcullis.chain.prev_hash": "0".repeat(64), "portcullis.chain.hash": "0".repeat(64),
    })
    .to_string()
        + "\n";
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(line.as_bytes()))
    };
    let direct = format!(
        "http://127.0.0.1:{}/internal/audit/ingest?sha256={digest}",
        p.backend
    );
    let http = reqwest::Client::new();
    // Unsigned, straight to the backend.
    let r = http
        .post(&direct)
        .header("content-type", "application/x-ndjson")
        .body(line.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Signed with the real key, but for a user rather than the proxy.
    let key =
        portcullis_backend::IdentityKey::load_or_create(&p.state_dir().join("keys/identity.key"))
            .unwrap();
    let sign = |sub: &str| {
        key.sign(
            "POST",
            &format!("/internal/audit/ingest?sha256={digest}"),
            &portcullis_contract::identity::Identity {
                sub: sub.to_owned(),
                session_id: None,
                auth_method: None,
                decision_id: None,
                iat: time::OffsetDateTime::now_utc().unix_timestamp(),
                issuer: None,
            },
        )
    };
    let (id, sig) = sign("1");
    let r = http
        .post(&direct)
        .header("content-type", "application/x-ndjson")
        .header("x-portcullis-identity", id)
        .header("x-portcullis-signature", sig)
        .body(line.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // The proxy's identity, but a body other than the one signed.
    let (id, sig) = sign("@proxy");
    let r = http
        .post(&direct)
        .header("content-type", "application/x-ndjson")
        .header("x-portcullis-identity", id)
        .header("x-portcullis-signature", sig)
        .body(line.replace("login", "logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Through the proxy, even as an administrator: refused, nothing stored.
    let r = api(
        &p,
        &boss,
        Method::POST,
        &format!("/internal/audit/ingest?sha256={digest}"),
    )
    .header("content-type", "application/x-ndjson")
    .body(line.clone())
    .send()
    .await
    .unwrap();
    assert!(
        r.status() == StatusCode::FORBIDDEN || r.status() == StatusCode::NOT_FOUND,
        "{}",
        r.status()
    );
    let (count, _) = json_ok(
        api(
            &p,
            &boss,
            Method::GET,
            "/admin/audit/logs/count?from=2025-12-31T00:00:00Z&to=2026-01-02T00:00:00Z",
        )
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(count["count"], 0);
}

/// Reads a field (in kB) of `/proc/<pid>/status`.
fn proc_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn an_export_of_100000_events_streams_in_bounded_memory() {
    const ROWS: usize = 100_000;
    let p = portcullis().start().await;
    p.add_users(&[("boss", "administrator", PW)]);
    let boss = token(&p.login("boss", PW).await);

    // 100,000 events of about 1 KiB each, straight into the table (about 100 MiB of CSV).
    let db = sqlite(&p).await;
    let padding = "x".repeat(900);
    let mut tx = db.begin().await.unwrap();
    for i in 0..ROWS {
        let ts = format!(
            "2026-02-01T00:{:02}:{:02}.{:06}Z",
            (i / 60_000) % 60,
            (i / 1000) % 60,
            i % 1_000_000
        );
        let line = json!({
            "@timestamp": ts, "ecs.version": "8.11.0",
            "event.id": format!("bulk-{i}"), "event.category": "api",
            "event.action": "=cmd|' /C calc'!A0", "event.outcome": "success", "log.level": "info",
            "user.id": format!("u{i}"), "portcullis.details": {"padding": padding},
            "portcullis.emitter": "bulk", "portcullis.chain.seq": i + 1,
            "portcullis.chain.prev_hash": "0".repeat(64), "portcullis.chain.hash": "0".repeat(64),
        })
        .to_string();
        sqlx::query("insert into audit_events (event_id, emitter, seq, occurred_at, category, action, outcome, level, user_id, line, received_at) values ($1, 'bulk', $2, $3, 'api', 'bulk', 'success', 'info', $4, $5, $3)")
            .bind(format!("bulk-{i}"))
            .bind(i as i64 + 1)
            .bind(&ts)
            .bind(format!("u{i}"))
            .bind(&line)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();

    let pid = p.pid();
    let before = proc_kb(pid, "VmHWM:");
    // No overall deadline: 100 MiB through a debug build takes a while.
    let slow = p
        .pki
        .client_builder()
        .timeout(Duration::from_secs(900))
        .build()
        .unwrap();
    let r = slow
        .get(p.url("/admin/audit/logs/export?emitter=bulk"))
        .bearer_auth(&boss)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Count while streaming; never hold the body.
    let mut r = r;
    let (mut bytes, mut newlines, mut peak_rss) = (0usize, 0usize, 0u64);
    let mut tail = Vec::new();
    while let Some(chunk) = r.chunk().await.unwrap() {
        bytes += chunk.len();
        newlines += chunk.iter().filter(|b| **b == b'\n').count();
        peak_rss = peak_rss.max(proc_kb(pid, "VmRSS:"));
        if tail.len() < 4096 {
            tail.extend_from_slice(&chunk[..chunk.len().min(4096)]);
        }
    }
    let after = proc_kb(pid, "VmHWM:");
    assert_eq!(newlines, ROWS + 1, "header plus one line per event");
    assert!(bytes > 90 * 1024 * 1024, "{bytes} bytes");
    // Formula-looking cells are defused.
    let head = String::from_utf8_lossy(&tail);
    assert!(head.contains(",'=cmd|"), "{head}");
    // Buffering the export would have cost ~100 MiB; streaming a page at a time does not.
    let grown_mib = after.saturating_sub(before) / 1024;
    eprintln!(
        "export of {bytes} bytes: peak memory {} -> {} MiB",
        before / 1024,
        after / 1024
    );
    assert!(
        grown_mib < 40,
        "peak memory grew by {grown_mib} MiB during the export (RSS peak seen {} MiB)",
        peak_rss / 1024
    );
}

/// Every file under `dir`, read as text (the spool's segments), concatenated.
fn read_tree(dir: &std::path::Path) -> String {
    let mut all = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            all.push_str(&read_tree(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            all.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    all
}

/// The proxy spools (fsyncs) a refusal's audit event before it answers: by the time the
/// client holds its 401 or 403, the event naming that request is in the spool on disk.
#[tokio::test]
async fn a_refusal_is_spooled_before_it_is_answered() {
    let p = portcullis().start().await;
    let client = p.http1_client();
    let spool = p.state_dir().join("audit/proxy");
    // A forged token (token.reject) and a cross-site sign-out with the session's refresh
    // cookie and no CSRF token (csrf.reject): the first of each kind is recorded at once.
    let refusals = [
        (
            client
                .get(p.url("/api/tickets"))
                .bearer_auth("eyJhbGciOiJFZERTQSJ9.e30.bm90LWEtc2lnbmF0dXJl"),
            "token.reject",
        ),
        (
            client
                .post(p.url("/auth/logout"))
                .header("cookie", "__Host-portcullis-refresh=forged")
                .header("origin", "https://evil.example"),
            "csrf.reject",
        ),
    ];
    for (request, action) in refusals {
        let r = request.send().await.unwrap();
        assert!(
            r.status() == 401 || r.status() == 403,
            "{action}: {}",
            r.status()
        );
        let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        let on_disk = read_tree(&spool);
        let line = on_disk
            .lines()
            .find(|l| l.contains(&id))
            .unwrap_or_else(|| panic!("{action} of request {id} is not in the spool yet"));
        assert!(line.contains(action), "{line}");
    }
}
