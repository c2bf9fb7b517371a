//! The disaster-recovery drill (docs/runbooks/disaster-recovery.md), on both engines:
//! tickets with comments and history, attachments and audit events are created; a
//! backup is taken with `portcullis backup` while writes go on; the database and the
//! attachments are destroyed; `portcullis restore` brings them back. The restored data
//! must be exactly what existed at one instant between the start and the end of the
//! backup: everything written before the backup started, nothing that was not written,
//! every row identical, every ticket history and the audit chain verifying. The drill
//! prints the measured RTO and the RPO.
//!
//! `make dr-drill` runs it with its output.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use portcullis_audit::{AuditEvent, Category, Outcome};
use portcullis_backend::AppState;
use portcullis_backend::model::{Employee, NewEmployee, NewTicket, Priority, Role, TicketStatus};
use portcullis_testkit::pg::TestDatabase;
use sqlx::{Column, Row};

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_portcullis")
}

fn policy_dir() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/policies")
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Engine {
    Sqlite,
    Postgres,
}

/// The configuration file the CLI runs with, and the backend settings the in-process
/// writer uses: the same database, state folder, keys and audit spool paths.
fn config(
    dir: &Path,
    database_url: Option<&str>,
) -> (PathBuf, portcullis_backend::BackendSettings) {
    let state = dir.join("var");
    let file = dir.join("portcullis.yaml");
    let db_line = database_url
        .map(|u| format!("backend: {{database_url: '{u}'}}\n"))
        .unwrap_or_default();
    std::fs::write(
        &file,
        format!(
            "state_dir: {}\nlog: {{format: text, level: warn}}\nshared: {{policy_dir: '{}'}}\n{db_line}",
            state.display(),
            policy_dir()
        ),
    )
    .unwrap();
    let url = database_url.map_or_else(
        || {
            format!(
                "sqlite://{}?mode=rwc",
                state.join("portcullis.db").display()
            )
        },
        str::to_owned,
    );
    let settings = portcullis_backend::BackendSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: None,
        database_url: url,
        database_password_file: None,
        policy_dir: PathBuf::from(policy_dir()),
        identity_key_file: state.join("keys/identity.key"),
        keyring_dir: state.join("keys/jwt"),
        initial_admin_file: state.join("initial-admin.txt"),
        mfa_key_file: state.join("keys/mfa.key"),
        identity: Default::default(),
        anomaly: portcullis_backend::settings::AnomalySettings {
            enabled: false,
            ..Default::default()
        },
        retention: portcullis_backend::settings::RetentionSettings::defaults(&state),
        attachments: portcullis_backend::settings::AttachmentsSettings::under(&state),
        audit: portcullis_audit::AuditConfig::default()
            .validate("audit", dir, &state)
            .unwrap()
            .settings("backend"),
        web_dir: dir.join("web"),
    };
    (file, settings)
}

fn cli(config: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(binary())
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn employee(state: &AppState, name: &str, dept: i64) -> Employee {
    portcullis_backend::directory::repo::create_employee(
        &state.db,
        &NewEmployee {
            username: name.into(),
            email: format!("{name}@example.org"),
            display_name: name.into(),
            department_id: Some(dept),
            roles: vec![Role::Technician],
        },
        false,
    )
    .await
    .unwrap()
}

/// A ticket with a comment and a status change (three history entries with the
/// creation), and an audit event for each step.
async fn work(state: &AppState, who: &Employee, dept: i64, n: u64) {
    use portcullis_backend::tickets::repo;
    let mut tx = state.db.begin().await.unwrap();
    let t = repo::create_ticket(
        &mut tx,
        who,
        &NewTicket {
            title: format!("pump {n} leaks"),
            description: "water on the floor".into(),
            priority: Priority::High,
            department_id: Some(dept),
        },
        dept,
    )
    .await
    .unwrap();
    repo::add_comment(&mut tx, &t.id, who.id, "on my way")
        .await
        .unwrap();
    let t = repo::update_ticket(&mut tx, &t.id, t.version, who.id, "status", |t| {
        t.status = TicketStatus::InProgress;
        Ok(())
    })
    .await
    .unwrap();
    repo::update_ticket(&mut tx, &t.id, t.version, who.id, "status", |t| {
        t.status = TicketStatus::Resolved;
        Ok(())
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    state
        .audit
        .log()
        .emit(
            AuditEvent::new(Category::Maintenance, "ticket.create", Outcome::Success)
                .user_id(who.id.to_string())
                .detail("ticket", t.id.clone()),
        )
        .await
        .unwrap();
}

/// What the writer does during the backup: rows that are never changed afterwards (a
/// new ticket with a comment, an audit event), so that each restored row can be compared
/// with its final version.
async fn append(state: &AppState, who: &Employee, dept: i64, n: u64) {
    use portcullis_backend::tickets::repo;
    let mut tx = state.db.begin().await.unwrap();
    let t = repo::create_ticket(
        &mut tx,
        who,
        &NewTicket {
            title: format!("valve {n} sticks"),
            description: "found during the round".into(),
            priority: Priority::Low,
            department_id: Some(dept),
        },
        dept,
    )
    .await
    .unwrap();
    repo::add_comment(&mut tx, &t.id, who.id, "noted")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    state
        .audit
        .log()
        .emit(
            AuditEvent::new(Category::Maintenance, "ticket.create", Outcome::Success)
                .user_id(who.id.to_string())
                .detail("ticket", t.id),
        )
        .await
        .unwrap();
}

/// The tables compared, with the columns that identify a row.
const TABLES: [&str; 7] = [
    "departments",
    "employees",
    "employee_roles",
    "tickets",
    "ticket_comments",
    "ticket_history",
    "audit_events",
];

/// Every row of every compared table, as JSON text, by table.
async fn dump(url: &str) -> BTreeMap<&'static str, BTreeSet<String>> {
    let db = portcullis_backend::Db::connect(url).await.unwrap();
    let mut out = BTreeMap::new();
    for table in TABLES {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("select * from {table}")))
            .fetch_all(db.pool())
            .await
            .unwrap();
        let set = rows
            .iter()
            .map(|row| {
                let mut object = serde_json::Map::new();
                for (i, c) in row.columns().iter().enumerate() {
                    let v = if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
                        serde_json::json!(v)
                    } else {
                        serde_json::json!(row.try_get::<Option<String>, _>(i).unwrap())
                    };
                    object.insert(c.name().to_owned(), v);
                }
                serde_json::Value::Object(object).to_string()
            })
            .collect();
        out.insert(table, set);
    }
    db.pool().close().await;
    out
}

fn write_state_files(state: &Path) {
    // What the attachment store and the key-encryption keys leave in the state folder.
    let object = state.join("attachments/objects/ab/abcdef");
    std::fs::create_dir_all(object.parent().unwrap()).unwrap();
    std::fs::write(&object, b"sealed attachment bytes \x00\x01\x02").unwrap();
    let kek = state.join("keys/kek");
    std::fs::create_dir_all(&kek).unwrap();
    std::fs::write(
        kek.join("kek-1.json"),
        br#"{"kid":"kek-1","state":"active"}"#,
    )
    .unwrap();
    std::fs::write(kek.join("kek-1.key"), b"KEY MATERIAL NOT FOR BACKUPS").unwrap();
}

async fn drill(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let pg = match engine {
        Engine::Sqlite => None,
        Engine::Postgres => Some(TestDatabase::create("drdrill").await),
    };
    let (cfg, settings) = config(dir.path(), pg.as_ref().map(|p| p.url.as_str()));
    let state_dir = dir.path().join("var");
    let url = settings.database_url.clone();

    // Data: 3 technicians, 30 tickets with comments, history and audit events.
    let state = portcullis_backend::open(&settings, None, &prometheus::Registry::new())
        .await
        .unwrap();
    let dept = portcullis_backend::directory::repo::create_department(&state.db, "plant")
        .await
        .unwrap()
        .id;
    let people = [
        employee(&state, "tina", dept).await,
        employee(&state, "tom", dept).await,
        employee(&state, "theo", dept).await,
    ];
    for n in 0..30 {
        work(&state, &people[n % 3], dept, n as u64).await;
    }
    write_state_files(&state_dir);
    // Let the audit table catch up, so that "before the backup" includes its events.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = dump(&url).await;

    // Writes go on while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (state, stop, written, who) = (
            state.clone(),
            Arc::clone(&stop),
            Arc::clone(&written),
            people[0].clone(),
        );
        tokio::spawn(async move {
            let mut n = 1000;
            while !stop.load(Ordering::SeqCst) {
                append(&state, &who, dept, n).await;
                written.fetch_add(1, Ordering::SeqCst);
                n += 1;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let backup_dir = dir.path().join("backup");
    let written_at_start = written.load(Ordering::SeqCst);
    let started = Instant::now();
    let (code, out, err) = {
        let cfg = cfg.clone();
        let backup_dir = backup_dir.clone();
        tokio::task::spawn_blocking(move || {
            cli(
                &cfg,
                &["backup", "--out", backup_dir.to_str().unwrap(), "--json"],
            )
        })
        .await
        .unwrap()
    };
    let backup_ms = started.elapsed().as_millis();
    assert_eq!(code, Some(0), "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let written_at_end = written.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    assert!(
        written_at_end > written_at_start,
        "writes went on during the backup ({written_at_start} → {written_at_end})"
    );
    state.audit.shutdown(Duration::from_secs(5)).await;
    state.db.pool().close().await;
    drop(state);
    let after = dump(&url).await;

    // The backup holds the database, the attachment and the KEK metadata, never the key.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(backup_dir.join("manifest.json")).unwrap()).unwrap();
    let paths: Vec<&str> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"files/attachments/objects/ab/abcdef"),
        "{paths:?}"
    );
    assert!(paths.contains(&"files/keys/kek/kek-1.json"), "{paths:?}");
    assert!(!paths.iter().any(|p| p.ends_with("kek-1.key")), "{paths:?}");

    // Disaster: the database and the attachments are gone.
    match &pg {
        None => {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!(
                    "{}{suffix}",
                    state_dir.join("portcullis.db").display()
                ));
            }
        }
        Some(pg) => {
            let admin = sqlx::AnyPool::connect(portcullis_testkit::pg::ADMIN_URL)
                .await
                .unwrap();
            for sql in [
                format!("drop database {} with (force)", pg.name),
                format!("create database {}", pg.name),
            ] {
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&admin)
                    .await
                    .unwrap();
            }
        }
    }
    std::fs::remove_dir_all(state_dir.join("attachments")).unwrap();
    std::fs::remove_dir_all(state_dir.join("keys/kek")).unwrap();

    // A corrupt or partial backup is refused before anything is touched.
    let broken = dir.path().join("broken");
    copy_tree(&backup_dir, &broken);
    let object = broken.join("files/attachments/objects/ab/abcdef");
    let mut bytes = std::fs::read(&object).unwrap();
    bytes[0] ^= 0x20;
    std::fs::write(&object, bytes).unwrap();
    let (code, out, err) = cli(&cfg, &["restore", "--from", broken.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("corrupt"), "{err}");
    std::fs::remove_file(broken.join("manifest.json")).unwrap();
    let (code, _, err) = cli(&cfg, &["restore", "--from", broken.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("partial"), "{err}");

    // Recovery: restore, then the database answers.
    let started = Instant::now();
    let (code, out, err) = cli(
        &cfg,
        &["restore", "--from", backup_dir.to_str().unwrap(), "--json"],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let db = portcullis_backend::Db::connect(&url).await.unwrap();
    let tickets: i64 = sqlx::query("select count(*) from tickets")
        .fetch_one(db.pool())
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    let rto = started.elapsed();
    db.pool().close().await;
    let restored = dump(&url).await;

    // Identical: every restored row is a row that existed, nothing written before the
    // backup began is missing, and rows of one instant are together.
    for table in TABLES {
        let (b, r, a) = (&before[table], &restored[table], &after[table]);
        let missing: Vec<_> = b.difference(r).collect();
        assert!(
            missing.is_empty(),
            "{table}: rows written before the backup are missing: {missing:?}"
        );
        let invented: Vec<_> = r.difference(a).collect();
        assert!(
            invented.is_empty(),
            "{table}: restored rows that never existed: {invented:?}"
        );
    }
    let lost = after["tickets"].len() - restored["tickets"].len();
    assert_eq!(i64::try_from(restored["tickets"].len()).unwrap(), tickets);
    let state = portcullis_backend::open(&settings, None, &prometheus::Registry::new())
        .await
        .unwrap();
    for row in &restored["tickets"] {
        let t: serde_json::Value = serde_json::from_str(row).unwrap();
        let id = t["public_id"].as_str().unwrap();
        portcullis_backend::tickets::repo::verify_history(&state.db, id)
            .await
            .unwrap()
            .unwrap_or_else(|b| panic!("{id}: the restored history does not verify: {b:?}"));
    }
    state.audit.shutdown(Duration::from_secs(2)).await;
    state.db.pool().close().await;
    drop(state);
    assert_eq!(
        std::fs::read(state_dir.join("attachments/objects/ab/abcdef")).unwrap(),
        b"sealed attachment bytes \x00\x01\x02"
    );
    assert!(state_dir.join("keys/kek/kek-1.json").is_file());
    assert!(!state_dir.join("keys/kek/kek-1.key").exists());
    let (code, out, err) = cli(
        &cfg,
        &["audit", "verify", "--database", "--emitter", "backend"],
    );
    assert_eq!(code, Some(0), "{out}{err}");

    // A second restore over the live data is refused without --force.
    let (code, _, err) = cli(&cfg, &["restore", "--from", backup_dir.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--force"), "{err}");

    println!(
        "DR drill ({engine:?}): backup {backup_ms} ms ({} files, {} bytes, taken {}); \
         RTO measured {} ms (restore + first query); RPO = the backup interval \
         (tickets written after the backup's instant and lost: {lost})",
        report["files"],
        report["bytes"],
        report["created_at"],
        rto.as_millis(),
    );
    if let Some(pg) = pg {
        pg.drop().await;
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dr_drill_sqlite() {
    drill(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dr_drill_postgres() {
    drill(Engine::Postgres).await;
}

/// An encrypted backup holds no clear text of the database and restores only with the
/// identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_backup_restores_with_its_identity_only() {
    use age::secrecy::ExposeSecret;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, settings) = config(dir.path(), None);
    let state = portcullis_backend::open(&settings, None, &prometheus::Registry::new())
        .await
        .unwrap();
    let dept = portcullis_backend::directory::repo::create_department(&state.db, "vault-dept")
        .await
        .unwrap()
        .id;
    let who = employee(&state, "tina", dept).await;
    work(&state, &who, dept, 1).await;
    state.audit.shutdown(Duration::from_secs(2)).await;
    state.db.pool().close().await;
    drop(state);
    write_state_files(&dir.path().join("var"));

    let identity = age::x25519::Identity::generate();
    let id_file = dir.path().join("backup.key");
    std::fs::write(&id_file, identity.to_string().expose_secret()).unwrap();
    let recipient = identity.to_public().to_string();
    let out = dir.path().join("backup");
    let (code, o, e) = cli(
        &cfg,
        &[
            "backup",
            "--out",
            out.to_str().unwrap(),
            "--age-recipient",
            &recipient,
        ],
    );
    assert_eq!(code, Some(0), "{o}{e}");
    let mut files = Vec::new();
    collect(&out, &mut files);
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        for needle in [
            &b"SQLite format 3"[..],
            b"vault-dept",
            b"sealed attachment bytes",
        ] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} holds clear text",
                f.display()
            );
        }
    }
    let db_file = dir.path().join("var/portcullis.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db_file.display()));
    }
    std::fs::remove_dir_all(dir.path().join("var/attachments")).unwrap();
    std::fs::remove_dir_all(dir.path().join("var/keys/kek")).unwrap();
    let (code, _, e) = cli(&cfg, &["restore", "--from", out.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(e.contains("--identity"), "{e}");
    let (code, o, e) = cli(
        &cfg,
        &[
            "restore",
            "--from",
            out.to_str().unwrap(),
            "--identity",
            id_file.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(0), "{o}{e}");
    let db = portcullis_backend::Db::connect(&settings.database_url)
        .await
        .unwrap();
    let n: i64 = sqlx::query("select count(*) from departments where name = 'vault-dept'")
        .fetch_one(db.pool())
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(n, 1);
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Ctrl-C during a backup: exit 130, a partial folder that restore refuses, and the same
/// command again finishes the backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_backup_is_refused_and_done_again() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, settings) = config(dir.path(), None);
    let state = portcullis_backend::open(&settings, None, &prometheus::Registry::new())
        .await
        .unwrap();
    state.audit.shutdown(Duration::from_secs(2)).await;
    state.db.pool().close().await;
    drop(state);
    // Many attachment objects, so that the backup takes a while.
    let objects = dir.path().join("var/attachments/objects");
    for i in 0..4000 {
        let d = objects.join(format!("{:02x}", i % 256));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("obj{i}")), vec![b'x'; 4096]).unwrap();
    }
    let out = dir.path().join("backup");
    let mut child = Command::new(binary())
        .arg("--config")
        .arg(&cfg)
        .args(["backup", "--out", out.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !out.join("files/attachments/objects").exists() {
        assert!(Instant::now() < deadline, "the backup copied nothing");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended before Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let output = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{err}");
    assert!(!out.join("manifest.json").exists());
    let (code, _, err) = cli(
        &cfg,
        &["restore", "--from", out.to_str().unwrap(), "--force"],
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("partial"), "{err}");
    // Again, to the same folder: it starts over and finishes.
    let (code, o, e) = cli(&cfg, &["backup", "--out", out.to_str().unwrap(), "--json"]);
    assert_eq!(code, Some(0), "{o}{e}");
    let report: serde_json::Value = serde_json::from_str(o.trim()).unwrap();
    // The database, the 4000 objects and the checkpoint public keys.
    assert!(report["files"].as_u64().unwrap() > 4001, "{report}");
    let (code, o, e) = cli(
        &cfg,
        &["restore", "--from", out.to_str().unwrap(), "--force"],
    );
    assert_eq!(code, Some(0), "{o}{e}");
}
