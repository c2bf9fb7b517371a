//! Attachments through the whole stack (proxy, backend, CLI) and the key-encryption key
//! commands: `keys rotate --kind kek` interrupted and resumed while the service runs,
//! `keys retire` refused while the old key is in use, every attachment downloadable
//! throughout; and the key-rotation runbook names only events the code emits.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

fn json_line(out: &str) -> Value {
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON in {out}"));
    serde_json::from_str(line).unwrap()
}

/// Employee alice, added and signed in: her bearer token.
async fn alice_signed_in(p: &support::Portcullis) -> String {
    p.add_users(&[("alice", "employee", "alice password 1")]);
    p.login("alice", "alice password 1").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kek_rotation_through_the_cli_while_serving() {
    let p = support::portcullis().start().await;
    let token = alice_signed_in(&p).await;
    let c = p.client();
    let auth = format!("Bearer {token}");
    let t: Value = c
        .post(p.url("/api/tickets"))
        .header("authorization", &auth)
        .json(&serde_json::json!({"title": "Door sticks"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ticket = t["id"].as_str().unwrap().to_owned();
    let mut uploaded = Vec::new();
    for i in 0..3 {
        let body = format!("attachment {i} of the rotation test\n").repeat(5000 + i);
        let r = c
            .post(p.url(&format!(
                "/api/tickets/{ticket}/attachments?filename=r{i}.txt"
            )))
            .header("authorization", &auth)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        let a: Value = r.json().await.unwrap();
        uploaded.push((a["id"].as_str().unwrap().to_owned(), body));
    }
    let all_download = || async {
        for (aid, body) in &uploaded {
            let r = c
                .get(p.url(&format!("/api/tickets/{ticket}/attachments/{aid}")))
                .header("authorization", &auth)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["x-content-type-options"], "nosniff");
            assert!(
                r.headers()["content-disposition"]
                    .to_str()
                    .unwrap()
                    .starts_with("attachment;")
            );
            assert_eq!(&r.text().await.unwrap(), body);
        }
    };
    all_download().await;
    let kek_dir = p.state_dir().join("keys/kek");
    let old = std::fs::read_to_string(kek_dir.join("current"))
        .unwrap()
        .trim()
        .to_owned();

    let (ok, out) = p.cli(&["keys", "rotate", "--kind", "kek", "--dry-run", "--json"]);
    assert!(ok, "{out}");
    assert_eq!(json_line(&out)["remaining"], 3, "{out}");
    assert_eq!(
        std::fs::read_to_string(kek_dir.join("current"))
            .unwrap()
            .trim(),
        old,
        "a dry run changes nothing"
    );

    // Interrupted after one data key.
    let (ok, out) = p.cli(&[
        "keys",
        "rotate",
        "--kind",
        "kek",
        "--max-objects",
        "1",
        "--json",
    ]);
    assert!(ok, "{out}");
    let first = json_line(&out);
    assert_eq!(
        (first["rewrapped"].as_u64(), first["remaining"].as_u64()),
        (Some(1), Some(2))
    );
    let new = first["kek_id"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    // Every attachment still downloads from the running backend, half rotated.
    all_download().await;
    // The old key is still in use: retiring it is refused.
    let (ok, out) = p.cli(&["keys", "retire", "--kind", "kek", "--id", &old]);
    assert!(!ok && out.contains("still wraps 2"), "{out}");
    // Resumed: the rest, and no new key.
    let (ok, out) = p.cli(&["keys", "rotate", "--kind", "kek", "--resume", "--json"]);
    assert!(ok, "{out}");
    let rest = json_line(&out);
    assert_eq!(
        (rest["rewrapped"].as_u64(), rest["remaining"].as_u64()),
        (Some(2), Some(0))
    );
    assert_eq!(rest["kek_id"], new.as_str());
    let (ok, out) = p.cli(&["keys", "retire", "--kind", "kek", "--id", &new]);
    assert!(!ok && out.contains("current"), "{out}");
    let (ok, out) = p.cli(&["keys", "retire", "--kind", "kek", "--id", &old]);
    assert!(ok, "{out}");
    assert!(!kek_dir.join(format!("{old}.key")).exists());
    all_download().await;
    // New uploads are wrapped under the new key.
    let r = c
        .post(p.url(&format!("/api/tickets/{ticket}/attachments?filename=n.txt")))
        .header("authorization", &auth)
        .body("after the rotation")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (ok, out) = p.cli(&[
        "keys",
        "rotate",
        "--kind",
        "kek",
        "--dry-run",
        "--resume",
        "--json",
    ]);
    assert!(ok, "{out}");
    assert_eq!(json_line(&out)["remaining"], 0, "{out}");

    // Each step is in the audit table.
    let (ok, out) = p.cli(&["audit", "verify", "--database"]);
    assert!(ok, "{out}");
}

/// Backticked event names (`word.word`) of `text` that look like audit actions of the
/// given prefixes.
fn actions_in(text: &str, prefixes: &[&str]) -> BTreeSet<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|t| prefixes.iter().any(|p| t.starts_with(p)))
        .filter(|t| {
            t.bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_')
        })
        .map(str::to_owned)
        .collect()
}

/// String literals `"<prefix>…"` in the Rust files under `dir`.
fn literals_in(dir: &Path, prefixes: &[&str], out: &mut BTreeSet<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            literals_in(&p, prefixes, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let text = std::fs::read_to_string(&p).unwrap();
            for piece in text.split('"').skip(1).step_by(2) {
                if prefixes.iter().any(|pre| piece.starts_with(pre))
                    && piece
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_')
                {
                    out.insert(piece.to_owned());
                }
            }
        }
    }
}

#[test]
fn key_rotation_runbook_names_only_events_the_code_emits() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let prefixes = ["keys.", "attachment."];
    let mut code = BTreeSet::new();
    for dir in ["src", "backend/src", "proxy/src"] {
        literals_in(&root.join(dir), &prefixes, &mut code);
    }
    assert!(
        code.contains("keys.rotate") && code.contains("keys.retire"),
        "{code:?}"
    );
    let runbook = std::fs::read_to_string(root.join("docs/runbooks/key-rotation.md")).unwrap();
    let named = actions_in(&runbook, &["keys."]);
    assert!(!named.is_empty());
    for n in &named {
        assert!(
            code.contains(n),
            "the runbook names `{n}`, which no code emits"
        );
    }
    // And the other way round: every key event of the code is in the runbook, and every
    // attachment and key event is in the audit runbook's table of events.
    for c in code.iter().filter(|c| c.starts_with("keys.")) {
        assert!(
            named.contains(c),
            "`{c}` is emitted but missing from the runbook"
        );
    }
    let audit = std::fs::read_to_string(root.join("docs/runbooks/audit.md")).unwrap();
    for c in &code {
        let short = c.rsplit_once('.').map(|(_, s)| format!("`.{s}`"));
        assert!(
            audit.contains(&format!("`{c}`")) || short.is_some_and(|s| audit.contains(&s)),
            "`{c}` is missing from docs/runbooks/audit.md"
        );
    }
}

/// The proxy's per-route body limit and the backend's attachment limit: an upload past
/// the route's `max_body_bytes` is refused by the proxy (declared or streamed), one
/// within it reaches the backend, whose own limit answers the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_limits_through_the_proxy() {
    let p = support::portcullis()
        .routes("[{name: api, path_prefix: /api, upstream: backend, max_body_bytes: 200000}, {name: auth, path_prefix: /auth, upstream: backend}]")
        .backend_yaml("  attachments: {max_bytes: 200000}\n")
        .start()
        .await;
    let token = alice_signed_in(&p).await;
    let c = p.client();
    let auth = format!("Bearer {token}");
    let t: Value = c
        .post(p.url("/api/tickets"))
        .header("authorization", &auth)
        .json(&serde_json::json!({"title": "Limits"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = p.url(&format!(
        "/api/tickets/{}/attachments?filename=a.txt",
        t["id"].as_str().unwrap()
    ));
    let ok = c
        .post(&url)
        .header("authorization", &auth)
        .body("x".repeat(200_000))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 201);
    // Declared too large: the proxy answers, the backend never sees it.
    let r = c
        .post(&url)
        .header("authorization", &auth)
        .body("x".repeat(200_001))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["type"], "urn:portcullis:problem:body-too-large");
    assert!(
        problem["detail"].as_str().unwrap().contains("200000"),
        "{problem}"
    );
    // Streamed without a length: cut off past the limit.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..40).map(|_| Ok(vec![b'y'; 10_000])).collect();
    let r = c
        .post(&url)
        .header("authorization", &auth)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status(), 413);
    }
    // Only the first upload was stored.
    let list: Value = c
        .get(p.url(&format!(
            "/api/tickets/{}/attachments",
            t["id"].as_str().unwrap()
        )))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    // A configuration whose proxy would refuse what the backend accepts is refused.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.yaml");
    std::fs::write(
        &cfg,
        "proxy:\n  routes: [{name: api, path_prefix: /api, upstream: backend, max_body_bytes: 1000}, {name: auth, path_prefix: /auth}, {name: admin, path_prefix: /admin}, {name: monitoring, path_prefix: /monitoring}, {name: app, path_prefix: /}]\n",
    )
    .unwrap();
    let out = std::process::Command::new(support::binary())
        .arg("check-config")
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{text}");
    assert!(text.contains("backend.attachments.max_bytes"), "{text}");
}

/// The proxy↔backend identity key rotated through the CLI while the service runs:
/// signed-in requests keep working at every step (staged, activated, retired), the dry
/// run changes nothing, activation before the staged key has settled is refused, a
/// request signed with the old key is accepted until the old key is retired and refused
/// after, and each step is an audit event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_key_rotation_through_the_cli_while_serving() {
    use portcullis_contract::identity::{
        IDENTITY_HEADER, Identity, IdentityKey, SERVICE_SUBJECT, SIGNATURE_HEADER,
    };
    use std::time::{Duration, Instant};

    let p = support::portcullis().start().await;
    let token = alice_signed_in(&p).await;
    let c = p.client();
    let works = || {
        let (c, url, token) = (c.clone(), p.url("/api/tickets"), token.clone());
        async move {
            for _ in 0..5 {
                let r = c.get(&url).bearer_auth(&token).send().await.unwrap();
                assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let file = p.state_dir().join("keys/identity.key");
    let (next, previous) = (
        file.with_extension("key.next"),
        file.with_extension("key.previous"),
    );
    let old: [u8; 32] = std::fs::read(&file).unwrap().try_into().unwrap();
    // The proxy's own call to the backend's revocation feed, signed with `key`.
    let feed = |key: IdentityKey| {
        let url = format!("http://127.0.0.1:{}/auth/revocations?after=0", p.backend);
        async move {
            let identity = Identity {
                sub: SERVICE_SUBJECT.to_owned(),
                session_id: None,
                auth_method: None,
                decision_id: None,
                iat: time::OffsetDateTime::now_utc().unix_timestamp(),
                issuer: None,
            };
            let (i, s) = key.sign("GET", "/auth/revocations?after=0", &identity);
            reqwest::Client::new()
                .get(url)
                .header(IDENTITY_HEADER, i)
                .header(SIGNATURE_HEADER, s)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(feed(IdentityKey::from_bytes(old)).await, 200);

    let rotate = |extra: &[&str]| {
        let mut args = vec!["keys", "rotate", "--kind", "identity", "--json"];
        args.extend_from_slice(extra);
        p.cli(&args)
    };
    let (ok, out) = rotate(&["--dry-run"]);
    assert!(ok, "{out}");
    assert_eq!(json_line(&out)["step"], "staged");
    assert!(!next.exists(), "a dry run staged a key");

    let (ok, out) = rotate(&["--settle-seconds", "2"]);
    assert!(ok, "{out}");
    assert_eq!(json_line(&out)["step"], "staged");
    assert!(next.exists());
    works().await;
    // Too early: the staged key may not have reached every process yet.
    let (ok, out) = rotate(&["--settle-seconds", "60"]);
    assert!(!ok, "{out}");
    assert!(out.contains("not settled"), "{out}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (ok, out) = rotate(&["--settle-seconds", "2"]);
    assert!(ok, "{out}");
    assert_eq!(json_line(&out)["step"], "activated");
    assert!(!next.exists());
    assert_eq!(std::fs::read(&previous).unwrap(), old);
    assert_ne!(std::fs::read(&file).unwrap(), old);
    works().await;
    assert_eq!(
        feed(IdentityKey::from_bytes(old)).await,
        200,
        "the old key is still accepted"
    );
    // A new rotation waits until the old key is retired.
    let (ok, out) = rotate(&[]);
    assert!(!ok, "{out}");
    assert!(out.contains("retire it first"), "{out}");

    let (ok, out) = p.cli(&["keys", "retire", "--kind", "identity", "--json"]);
    assert!(ok, "{out}");
    assert!(!previous.exists());
    let deadline = Instant::now() + Duration::from_secs(15);
    while feed(IdentityKey::from_bytes(old)).await != 401 {
        assert!(
            Instant::now() < deadline,
            "the retired key was still accepted after 15 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    works().await;
    let new: [u8; 32] = std::fs::read(&file).unwrap().try_into().unwrap();
    assert_eq!(feed(IdentityKey::from_bytes(new)).await, 200);
    let (ok, out) = p.cli(&["keys", "retire", "--kind", "identity"]);
    assert!(!ok, "nothing left to retire: {out}");

    let trail = std::fs::read_to_string(p.state_dir().join("audit/cli.jsonl")).unwrap();
    let steps: Vec<String> = trail
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["portcullis.details"]["kind"] == "identity")
        .map(|e| {
            format!(
                "{} {} {}",
                e["event.action"].as_str().unwrap(),
                e["event.outcome"].as_str().unwrap(),
                e["portcullis.details"]["step"].as_str().unwrap_or("-")
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            "keys.rotate success staged",
            "keys.rotate success activated",
            "keys.retire success -",
            "keys.retire failure -",
        ],
        "{trail}"
    );
}

/// The audit checkpoint keys rotated through the CLI while the service runs: the dry run
/// changes nothing; afterwards each emitter's `.pub` file lists the old and the new key,
/// the running proxy and backend sign their next checkpoints with the new key, `audit
/// verify` accepts the whole trail (files and table) with the key files, and refuses it
/// with the new key alone, whose checkpoints are then the only ones it can verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_checkpoint_key_rotation_while_serving() {
    use portcullis_audit::TrustedKeys;
    use std::time::{Duration, Instant};

    // A checkpoint after every other event.
    let p = support::portcullis()
        .audit_yaml("  checkpoint: {every_events: 2}\n")
        .trusted_proxies(&["127.0.0.1/32"])
        .start()
        .await;
    let token = alice_signed_in(&p).await;
    let c = p.client();
    let sent = std::sync::atomic::AtomicU32::new(0);
    let traffic = || {
        let (c, url, token) = (c.clone(), p.url("/api/employees"), token.clone());
        let first = sent.fetch_add(4, std::sync::atomic::Ordering::Relaxed);
        async move {
            // Refusals from new client addresses: each one a proxy event (`policy.deny`,
            // recorded at once: only repeats from one client are folded).
            for n in first..first + 4 {
                let r = c
                    .get(&url)
                    .bearer_auth(&token)
                    .header(
                        "x-forwarded-for",
                        format!("10.9.{}.{}", n / 250, n % 250 + 1),
                    )
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 403);
            }
        }
    };
    traffic().await;
    let keys = p.state_dir().join("keys");
    let trusted = |emitter: &str| {
        TrustedKeys::read_file(&keys.join(format!("audit-checkpoint-{emitter}.key.pub"))).unwrap()
    };
    let before = trusted("proxy");
    assert_eq!(before.keys().len(), 1);

    let (ok, out) = p.cli(&[
        "keys",
        "rotate",
        "--kind",
        "audit-checkpoint",
        "--dry-run",
        "--json",
    ]);
    assert!(ok, "{out}");
    assert_eq!(json_line(&out)["dry_run"], true, "{out}");
    assert_eq!(trusted("proxy"), before, "a dry run changed the key set");

    let (ok, out) = p.cli(&["keys", "rotate", "--kind", "audit-checkpoint", "--json"]);
    assert!(ok, "{out}");
    let report = json_line(&out);
    let rotated: Vec<&str> = report["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["emitter"].as_str().unwrap())
        .collect();
    assert_eq!(rotated, ["proxy", "backend", "cli"], "{out}");
    for emitter in ["proxy", "backend"] {
        let set = trusted(emitter);
        assert_eq!(set.keys().len(), 2, "{emitter}: {set:?}");
        assert_eq!(
            set.keys()[0].to_hex(),
            report["keys"]
                .as_array()
                .unwrap()
                .iter()
                .find(|k| k["emitter"] == emitter)
                .unwrap()["previous_public_key"]
        );
    }
    let new_proxy_key = trusted("proxy").keys()[1].to_hex();

    // The running proxy signs with the new key from its next write on.
    let file = p.state_dir().join("audit/proxy.jsonl");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        traffic().await;
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let signed_new = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|e| e["portcullis.checkpoint.public_key"] == new_proxy_key.as_str());
        if signed_new {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint with the new key after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // With the key files (old and new keys) everything verifies.
    let (ok, out) = p.cli(&["audit", "verify", "--database"]);
    assert!(ok, "{out}");
    for emitter in ["proxy", "backend"] {
        assert!(
            out.contains(&format!("audit_events ({emitter}): ok")),
            "{out}"
        );
    }
    let pub_file = keys.join("audit-checkpoint-proxy.key.pub");
    let (ok, out) = p.cli(&[
        "audit",
        "verify",
        file.to_str().unwrap(),
        "--key",
        pub_file.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    // The new key alone cannot vouch for the checkpoints signed before the rotation.
    let only_new = p.path().join("only-new.pub");
    std::fs::write(&only_new, format!("{new_proxy_key}\n")).unwrap();
    let (code, out) = p.cli_status(&[
        "audit",
        "verify",
        file.to_str().unwrap(),
        "--key",
        only_new.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("does not verify"), "{out}");

    // The rotation is in the trail, one event per emitter's key.
    let trail = std::fs::read_to_string(p.state_dir().join("audit/cli.jsonl")).unwrap();
    let events: Vec<Value> = trail
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["portcullis.details"]["kind"] == "audit-checkpoint")
        .collect();
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(
        events
            .iter()
            .all(|e| e["event.action"] == "keys.rotate" && e["event.outcome"] == "success")
    );
}
