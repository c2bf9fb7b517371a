//! Retention with a fixed clock, on both engines: expired rows are archived, then
//! deleted; rows under a legal hold stay; the archive's manifest verifies; the audit
//! chain still verifies from its signed cut (and tampering after the cut is still
//! found); a second run changes nothing; an interrupted run resumes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod support;

use object_store::ObjectStoreExt as _;
use std::io::BufRead;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use portcullis_audit::{AuditEvent, Category, CutSigner, Outcome, Tamper, TrustedKeys};
use portcullis_backend::AppState;
use portcullis_backend::model::{Employee, NewEmployee, NewTicket, Priority, Role, TicketStatus};
use portcullis_backend::retention::holds::{self, HoldTarget};
use portcullis_backend::retention::{self, NoProgress, RunStatus};
use portcullis_backend::settings::RetentionSettings;
use sqlx::Row;
use support::Engine;

/// Eight years from now: past the 7 years of closed tickets and the 2 years of audit
/// events, while the data below is created now.
fn fixed_clock() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() + time::Duration::days(8 * 365)
}

async fn employee(state: &AppState, name: &str, dept: i64) -> Employee {
    portcullis_backend::directory::repo::create_employee(
        &state.db,
        &NewEmployee {
            username: name.into(),
            email: format!("{name}@example.org"),
            display_name: name.into(),
            department_id: Some(dept),
            roles: vec![Role::Employee],
        },
        false,
    )
    .await
    .unwrap()
}

async fn ticket(state: &AppState, reporter: &Employee, dept: i64, close: bool) -> String {
    use portcullis_backend::tickets::repo;
    let mut tx = state.db.begin().await.unwrap();
    let t = repo::create_ticket(
        &mut tx,
        reporter,
        &NewTicket {
            title: format!("ticket of {}", reporter.username),
            description: "the pump leaks".into(),
            priority: Priority::Medium,
            department_id: Some(dept),
        },
        dept,
    )
    .await
    .unwrap();
    repo::add_comment(&mut tx, &t.id, reporter.id, "still leaking")
        .await
        .unwrap();
    if close {
        repo::update_ticket(&mut tx, &t.id, t.version, reporter.id, "closed", |t| {
            t.status = TicketStatus::Closed;
            Ok(())
        })
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    t.id
}

async fn session(state: &AppState, id: &str, employee: i64, ended: bool) {
    let now = portcullis_backend::db::now_text();
    // An active session: valid for twenty years, so the fixed clock does not end it.
    let far = portcullis_backend::db::format_time(
        time::OffsetDateTime::now_utc() + time::Duration::days(20 * 365),
    );
    sqlx::query(
        "insert into sessions (session_id, employee_id, auth_method, mfa, created_at, expires_at, \
         absolute_expires_at, revoked_at, revoked_reason) values ($1, $2, 'password', 0, $3, $4, $4, $5, $6)",
    )
    .bind(id)
    .bind(employee)
    .bind(&now)
    .bind(&far)
    .bind(ended.then(|| now.clone()))
    .bind(ended.then_some("logout"))
    .execute(state.db.pool())
    .await
    .unwrap();
    sqlx::query(
        "insert into refresh_tokens (token_hash, session_id, created_at) values ($1, $2, $3)",
    )
    .bind(format!("hash-of-{id}"))
    .bind(id)
    .bind(&now)
    .execute(state.db.pool())
    .await
    .unwrap();
}

async fn count(state: &AppState, sql: &'static str) -> i64 {
    sqlx::query(sql)
        .fetch_one(state.db.pool())
        .await
        .unwrap()
        .try_get(0)
        .unwrap()
}

async fn strings(state: &AppState, sql: &'static str) -> Vec<String> {
    sqlx::query(sql)
        .fetch_all(state.db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get::<String, _>(0).unwrap())
        .collect()
}

/// Waits until the database sink has stored `n` events of the backend's chain.
async fn delivered(state: &AppState, n: i64) {
    for _ in 0..200 {
        if count(
            state,
            "select count(*) from audit_events where emitter = 'backend'",
        )
        .await
            >= n
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the audit events did not reach the table");
}

/// `portcullis audit verify --database` for the backend's chain: from its cut, if any.
async fn verify_backend_chain(
    state: &AppState,
    key: &TrustedKeys,
) -> Result<portcullis_audit::VerifyReport, portcullis_audit::VerifyError> {
    let rows = portcullis_backend::audit_log::store::chain(&state.db, "backend")
        .await
        .unwrap();
    let lines = rows.iter().map(|(_, l)| l.as_str());
    let cuts = retention::chain_cuts(&state.db).await.unwrap();
    match cuts.iter().find(|(c, _)| c.emitter == "backend") {
        Some((cut, signed_by)) => {
            assert_eq!(signed_by, "backend");
            portcullis_audit::verify_events_after(cut, Some(key), lines, Some(key))
        }
        None => portcullis_audit::verify_events(lines, Some(key)),
    }
}

fn archived_lines(dir: &std::path::Path, category: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(&format!("-{category}.jsonl.gz")))
        .collect();
    names.sort();
    for name in names {
        let file = std::fs::File::open(dir.join(name)).unwrap();
        for line in std::io::BufReader::new(flate2::read::GzDecoder::new(file)).lines() {
            out.push(serde_json::from_str(&line.unwrap()).unwrap());
        }
    }
    out
}

struct Setup {
    _dir: tempfile::TempDir,
    state: AppState,
    retention: RetentionSettings,
    signer: CutSigner,
    key: TrustedKeys,
    pg: Option<portcullis_testkit::pg::TestDatabase>,
}

async fn setup(engine: Engine) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (url, pg) = support::database(engine, dir.path(), "retention").await;
    let mut settings = support::settings(dir.path(), url, Default::default());
    // Small batches, so that a run takes several and can be interrupted between them.
    settings.retention.batch_rows = 3;
    settings.retention.archive_dir = dir.path().join("archive");
    let key_file = settings.audit.spool.checkpoint.clone().unwrap().key_file;
    let state = portcullis_backend::open(&settings, None, &prometheus::Registry::new())
        .await
        .unwrap();
    let signer = CutSigner::load(&key_file).unwrap();
    let key = TrustedKeys::read_file(&portcullis_audit::public_key_path(&key_file)).unwrap();
    Setup {
        retention: settings.retention.clone(),
        _dir: dir,
        state,
        signer,
        key,
        pg,
    }
}

async fn expired_rows_are_archived_then_deleted_and_holds_keep_theirs(engine: Engine) {
    let Setup {
        _dir,
        state,
        retention: settings,
        signer,
        key,
        pg,
    } = setup(engine).await;
    let dept = portcullis_backend::directory::repo::create_department(&state.db, "plant")
        .await
        .unwrap()
        .id;
    let alice = employee(&state, "alice", dept).await;
    let holly = employee(&state, "holly", dept).await;
    let closed_a = ticket(&state, &alice, dept, true).await;
    let closed_b = ticket(&state, &alice, dept, true).await;
    let closed_held = ticket(&state, &alice, dept, true).await;
    let closed_by_holly = ticket(&state, &holly, dept, true).await;
    let open = ticket(&state, &alice, dept, false).await;
    session(&state, "ended-1", alice.id, true).await;
    session(&state, "ended-2", alice.id, true).await;
    session(&state, "active", alice.id, false).await;
    session(&state, "ended-holly", holly.id, true).await;
    holds::add(
        &state.db,
        &HoldTarget::Ticket(closed_held.clone()),
        "case 17",
        "test",
    )
    .await
    .unwrap();
    holds::add(
        &state.db,
        &HoldTarget::Subject(holly.id.to_string()),
        "case 18",
        "test",
    )
    .await
    .unwrap();
    // The backend's chain: alice ×4, holly ×1 (held: the cut stops before it), alice ×3.
    let emit = async |who: &Employee| {
        state
            .audit
            .log()
            .emit(
                AuditEvent::new(Category::Maintenance, "ticket.view", Outcome::Success)
                    .user_id(who.id.to_string()),
            )
            .await
            .unwrap()
    };
    for _ in 0..4 {
        emit(&alice).await;
    }
    let holly_seq = emit(&holly).await;
    for _ in 0..3 {
        emit(&alice).await;
    }
    let total = i64::try_from(holly_seq).unwrap() + 3;
    delivered(&state, total).await;
    verify_backend_chain(&state, &key).await.unwrap();

    // An attachment on an expiring ticket: its rows and its encrypted object go with it.
    for sql in [
        "insert into attachments (attachment_id, ticket_id, filename, created_by, created_at) \
         select 'att-expiring', ticket_id, 'report.txt', reporter_id, '2018-01-01T00:00:00Z' \
         from tickets where public_id = $1",
        "insert into attachment_versions (attachment_id, ticket_id, version, content_sha256, \
         size_bytes, content_type, object_key, kek_id, wrapped_key, nonce_prefix, created_by, \
         created_at) select 'att-expiring', ticket_id, 1, 'ab', 3, 'text/plain', \
         'attachments/expiring/v1', 'kek-1', '00', '00', reporter_id, '2018-01-01T00:00:00Z' \
         from tickets where public_id = $1",
    ] {
        sqlx::query(sql)
            .bind(&closed_a)
            .execute(state.db.pool())
            .await
            .unwrap();
    }
    let object = object_store::path::Path::from("attachments/expiring/v1");
    state
        .attachments
        .store
        .put(&object, b"\x01\x02\x03".to_vec().into())
        .await
        .unwrap();

    let clock = fixed_clock();
    let never = AtomicBool::new(false);
    let signer_ref = Some((&signer, "backend"));
    let report = retention::run::run(
        &state,
        &settings,
        signer_ref,
        Some(clock),
        &never,
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(report.status, RunStatus::Done);
    assert!(!report.resumed);
    assert_eq!(report.counts["sessions"], 2, "{report:?}");
    assert_eq!(report.counts["tickets"], 2, "{report:?}");
    assert_eq!(
        count(&state, "select count(*) from attachment_versions").await
            + count(&state, "select count(*) from attachments").await,
        0
    );
    assert!(
        state.attachments.store.head(&object).await.is_err(),
        "the expired ticket's attachment object is still stored"
    );
    // Everything before holly's first event: the start-up events and alice's four.
    let cut_at = i64::try_from(holly_seq).unwrap() - 1;
    assert_eq!(
        report.counts["audit_events"],
        u64::try_from(cut_at).unwrap()
    );

    // Deleted: the two closed tickets of alice with their comments and history, the
    // ended sessions of alice with their refresh tokens.
    let mut left = strings(&state, "select public_id from tickets order by public_id").await;
    left.sort();
    let mut kept = vec![closed_held.clone(), closed_by_holly.clone(), open.clone()];
    kept.sort();
    assert_eq!(left, kept);
    assert_eq!(
        count(&state, "select count(*) from ticket_history h where not exists (select 1 from tickets t where t.ticket_id = h.ticket_id)").await,
        0
    );
    assert_eq!(
        count(&state, "select count(*) from ticket_comments").await,
        3
    );
    let mut sessions = strings(
        &state,
        "select session_id from sessions order by session_id",
    )
    .await;
    sessions.sort();
    assert_eq!(sessions, ["active", "ended-holly"]);
    assert_eq!(
        strings(
            &state,
            "select session_id from refresh_tokens order by session_id"
        )
        .await,
        ["active", "ended-holly"]
    );
    // Employees are kept.
    assert_eq!(count(&state, "select count(*) from employees").await, 3);

    // The archive: what was deleted, and a manifest that verifies.
    let archive = retention::archive::verify(&report.archive_dir).unwrap();
    assert_eq!(archive.rows, 2 + 2 + u64::try_from(cut_at).unwrap());
    assert!(archive.files >= 3, "batches of 3 rows: {archive:?}");
    let tickets = archived_lines(&report.archive_dir, "tickets");
    let mut ids: Vec<&str> = tickets
        .iter()
        .map(|t| t["ticket"]["public_id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, [closed_a.as_str(), closed_b.as_str()]);
    for t in &tickets {
        assert_eq!(t["comments"].as_array().unwrap().len(), 1);
        assert_eq!(
            t["history"].as_array().unwrap().len(),
            3,
            "created, commented, closed"
        );
    }
    let events = archived_lines(&report.archive_dir, "audit_events");
    assert_eq!(events.len(), usize::try_from(cut_at).unwrap());
    assert_eq!(events[0]["portcullis.chain.seq"], 1);

    // The chain starts at the signed cut and still verifies.
    let cuts = retention::chain_cuts(&state.db).await.unwrap();
    assert_eq!(cuts.len(), 1);
    assert_eq!(cuts[0].0.seq, u64::try_from(cut_at).unwrap());
    let verified = verify_backend_chain(&state, &key).await.unwrap();
    assert_eq!(
        verified.chains[0].cut_seq,
        Some(u64::try_from(cut_at).unwrap())
    );
    assert_eq!(verified.chains[0].first_seq, holly_seq);

    // A second run with the same clock changes nothing.
    let tickets_before = strings(&state, "select public_id from tickets order by public_id").await;
    let sessions_before = strings(
        &state,
        "select session_id from sessions order by session_id",
    )
    .await;
    let min_seq = count(
        &state,
        "select min(seq) from audit_events where emitter = 'backend'",
    )
    .await;
    let again = retention::run::run(
        &state,
        &settings,
        signer_ref,
        Some(clock),
        &never,
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(again.status, RunStatus::Done);
    assert!(again.counts.values().all(|n| *n == 0), "{again:?}");
    assert_eq!(again.files, 0);
    assert!(!again.archive_dir.exists());
    assert_eq!(
        strings(&state, "select public_id from tickets order by public_id").await,
        tickets_before
    );
    assert_eq!(
        strings(
            &state,
            "select session_id from sessions order by session_id"
        )
        .await,
        sessions_before
    );
    assert_eq!(
        count(
            &state,
            "select min(seq) from audit_events where emitter = 'backend'"
        )
        .await,
        min_seq
    );
    assert_eq!(retention::chain_cuts(&state.db).await.unwrap(), cuts);

    // Released, the subject's data expires too, and the chain still verifies.
    holds::release(
        &state.db,
        &HoldTarget::Subject(holly.id.to_string()),
        "test",
    )
    .await
    .unwrap();
    let third = retention::run::run(
        &state,
        &settings,
        signer_ref,
        Some(clock),
        &never,
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(third.counts["tickets"], 1, "{third:?}");
    assert_eq!(third.counts["sessions"], 1, "{third:?}");
    assert!(third.counts["audit_events"] >= 4, "{third:?}");
    retention::archive::verify(&third.archive_dir).unwrap();
    verify_backend_chain(&state, &key).await.unwrap();
    assert_eq!(
        strings(&state, "select public_id from tickets order by public_id")
            .await
            .len(),
        2
    );

    // Tampering after the cut is still found: the first kept event deleted.
    for _ in 0..2 {
        state
            .audit
            .log()
            .emit(AuditEvent::new(
                Category::System,
                "test.marker",
                Outcome::Success,
            ))
            .await
            .unwrap();
    }
    let cut_now = i64::try_from(retention::chain_cuts(&state.db).await.unwrap()[0].0.seq).unwrap();
    for _ in 0..200 {
        let kept: i64 =
            sqlx::query("select count(*) from audit_events where emitter = 'backend' and seq > $1")
                .bind(cut_now)
                .fetch_one(state.db.pool())
                .await
                .unwrap()
                .try_get(0)
                .unwrap();
        if kept >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = count(
        &state,
        "select min(seq) from audit_events where emitter = 'backend'",
    )
    .await;
    sqlx::query("delete from audit_events where emitter = 'backend' and seq = $1")
        .bind(first)
        .execute(state.db.pool())
        .await
        .unwrap();
    let e = verify_backend_chain(&state, &key).await.unwrap_err();
    assert_eq!(e.position().unwrap().tamper, Tamper::Deleted, "{e}");
    // … and so is a cut moved forward over it without the key.
    sqlx::query("update audit_chain_cuts set seq = $1 where emitter = 'backend'")
        .bind(first)
        .execute(state.db.pool())
        .await
        .unwrap();
    let e = verify_backend_chain(&state, &key).await.unwrap_err();
    assert_eq!(e.position().unwrap().tamper, Tamper::BadCheckpoint, "{e}");

    state.audit.shutdown(Duration::from_secs(2)).await;
    if let Some(pg) = pg {
        pg.drop().await;
    }
}

/// Stops the run after its first batch, like Ctrl-C between batches.
struct StopAfterFirstBatch<'a>(&'a AtomicBool);
impl retention::Progress for StopAfterFirstBatch<'_> {
    fn advanced(&self, _category: &str, rows: u64) {
        if rows > 0 {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

async fn an_interrupted_run_resumes_where_it_stopped(engine: Engine) {
    let Setup {
        _dir,
        state,
        retention: settings,
        signer,
        key,
        pg,
    } = setup(engine).await;
    let dept = portcullis_backend::directory::repo::create_department(&state.db, "plant")
        .await
        .unwrap()
        .id;
    let alice = employee(&state, "alice", dept).await;
    for _ in 0..7 {
        ticket(&state, &alice, dept, true).await;
    }
    let clock = fixed_clock();
    let signer_ref = Some((&signer, "backend"));
    let stop = AtomicBool::new(false);
    let first = retention::run::run(
        &state,
        &settings,
        signer_ref,
        Some(clock),
        &stop,
        &StopAfterFirstBatch(&stop),
    )
    .await
    .unwrap();
    assert_eq!(first.status, RunStatus::Interrupted);
    assert_eq!(first.counts["tickets"], 3);
    assert_eq!(count(&state, "select count(*) from tickets").await, 4);
    // No manifest yet: the archive of an unfinished run does not verify.
    assert!(retention::archive::verify(&first.archive_dir).is_err());

    // The next run (even with another clock) continues the same run, with its clock.
    let never = AtomicBool::new(false);
    let resumed = retention::run::run(&state, &settings, signer_ref, None, &never, &NoProgress)
        .await
        .unwrap();
    assert_eq!(resumed.status, RunStatus::Done);
    assert!(resumed.resumed);
    assert_eq!(resumed.retention_run_id, first.retention_run_id);
    assert_eq!(resumed.as_of, first.as_of);
    assert_eq!(resumed.counts["tickets"], 7);
    assert_eq!(count(&state, "select count(*) from tickets").await, 0);
    let archive = retention::archive::verify(&resumed.archive_dir).unwrap();
    let tickets = archived_lines(&resumed.archive_dir, "tickets");
    assert_eq!(tickets.len(), 7);
    assert!(archive.rows >= 7);
    verify_backend_chain(&state, &key).await.unwrap();

    state.audit.shutdown(Duration::from_secs(2)).await;
    if let Some(pg) = pg {
        pg.drop().await;
    }
}

#[tokio::test]
async fn retention_sqlite() {
    expired_rows_are_archived_then_deleted_and_holds_keep_theirs(Engine::Sqlite).await;
}

#[tokio::test]
async fn retention_postgres() {
    expired_rows_are_archived_then_deleted_and_holds_keep_theirs(Engine::Postgres).await;
}

#[tokio::test]
async fn retention_resumes_sqlite() {
    an_interrupted_run_resumes_where_it_stopped(Engine::Sqlite).await;
}

#[tokio::test]
async fn retention_resumes_postgres() {
    an_interrupted_run_resumes_where_it_stopped(Engine::Postgres).await;
}

/// The schedule inside `portcullis up`: a run every interval, recorded and audited.
#[tokio::test]
async fn the_schedule_runs_retention_every_interval() {
    let Setup {
        _dir,
        state,
        retention: mut settings,
        signer,
        pg: _,
        ..
    } = setup(Engine::Sqlite).await;
    settings.interval = Duration::from_millis(100);
    let task = tokio::spawn(retention::run_periodically(
        state.clone(),
        settings,
        Some(std::sync::Arc::new(signer)),
        "backend".to_owned(),
    ));
    let mut runs = 0;
    for _ in 0..100 {
        runs = count(
            &state,
            "select count(*) from retention_runs where status = 'done'",
        )
        .await;
        if runs >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    task.abort();
    assert!(runs >= 2, "{runs} scheduled run(s)");
    for _ in 0..100 {
        if count(
            &state,
            "select count(*) from audit_events where action = 'retention.run'",
        )
        .await
            >= 2
        {
            state.audit.shutdown(Duration::from_secs(2)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the scheduled runs were not audited");
}

/// With `archive_store` set, every archive file and the manifest are copied into the
/// object store (a real S3 server, moto) before the rows go: the copy verifies against
/// its manifest, holds the same bytes as the folder, and a changed object is found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_copies_its_archive_to_an_s3_store() {
    use portcullis_backend::settings::StorageSettings;
    let Some(moto) = support::moto::Moto::start().await else {
        return;
    };
    let bucket = "portcullis-archive";
    moto.create_bucket(bucket).await;
    let Setup {
        _dir,
        state,
        retention: mut settings,
        signer,
        key: _,
        pg: _,
    } = setup(Engine::Sqlite).await;
    settings.archive_store = Some(StorageSettings::S3 {
        endpoint: moto.endpoint.clone(),
        bucket: bucket.to_owned(),
        region: "us-east-1".into(),
        credentials_file: support::moto::Moto::credentials_file(_dir.path()),
        prefix: Some("retention".into()),
    });
    let dept = portcullis_backend::directory::repo::create_department(&state.db, "plant")
        .await
        .unwrap()
        .id;
    let alice = employee(&state, "alice", dept).await;
    for _ in 0..4 {
        ticket(&state, &alice, dept, true).await;
    }
    session(&state, "ended-1", alice.id, true).await;
    let stop = AtomicBool::new(false);
    let report = retention::run::run(
        &state,
        &settings,
        Some((&signer, "backend")),
        Some(fixed_clock()),
        &stop,
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(report.status, RunStatus::Done);
    assert_eq!(report.counts["tickets"], 4);
    let local = retention::archive::verify(&report.archive_dir).unwrap();

    let run = report
        .archive_dir
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let store =
        portcullis_backend::attachments::store::open(settings.archive_store.as_ref().unwrap())
            .unwrap();
    let copy = retention::archive::verify_store(store.as_ref(), &run)
        .await
        .unwrap();
    assert_eq!(copy, local);
    // Byte for byte what the folder holds, under the prefix and the run's name.
    let objects = moto.objects(bucket).await;
    let mut names: Vec<String> = std::fs::read_dir(&report.archive_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.contains(&"manifest.json".to_owned()), "{names:?}");
    let mut keys: Vec<String> = objects.iter().map(|(k, _)| k.clone()).collect();
    keys.sort();
    let expected: Vec<String> = names
        .iter()
        .map(|n| format!("retention/{run}/{n}"))
        .collect();
    assert_eq!(keys, expected);
    for (key, bytes) in &objects {
        let name = key.rsplit('/').next().unwrap();
        assert_eq!(
            bytes,
            &std::fs::read(report.archive_dir.join(name)).unwrap(),
            "{key}"
        );
    }

    // A changed object in the store is found.
    let (victim, mut bytes) = objects
        .into_iter()
        .find(|(k, _)| k.ends_with("-tickets.jsonl.gz"))
        .unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    moto.bucket(bucket)
        .put(&object_store::path::Path::from(victim), bytes.into())
        .await
        .unwrap();
    let e = retention::archive::verify_store(store.as_ref(), &run)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("SHA-256"), "{e}");
    state.audit.shutdown(Duration::from_secs(2)).await;
}
