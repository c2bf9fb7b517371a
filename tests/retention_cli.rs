//! `portcullis retention run` as a process: Ctrl-C (SIGINT) between batches stops it
//! with exit status 130 and consistent state, the next run resumes the same run to the
//! end, its archive verifies, and `portcullis audit verify --database` accepts the audit
//! chain the run cut (with the `cli` key's signature).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::Row;

const SESSIONS: i64 = 1500;

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_portcullis")
}

fn config(dir: &Path) -> PathBuf {
    let file = dir.join("portcullis.yaml");
    std::fs::write(
        &file,
        format!(
            "state_dir: {}\nlog: {{format: text, level: warn}}\nshared: {{policy_dir: '{}'}}\n\
             backend: {{retention: {{batch_rows: 1, archive_dir: '{}'}}}}\n",
            dir.join("var").display(),
            concat!(env!("CARGO_MANIFEST_DIR"), "/policies"),
            dir.join("archive").display(),
        ),
    )
    .unwrap();
    file
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

async fn sessions_left(pool: &sqlx::AnyPool) -> i64 {
    sqlx::query("select count(*) from sessions")
        .fetch_one(pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap()
}

fn archive_files(dir: &Path) -> usize {
    let Ok(runs) = std::fs::read_dir(dir) else {
        return 0;
    };
    runs.filter_map(Result::ok)
        .filter_map(|r| std::fs::read_dir(r.path()).ok())
        .flat_map(|files| files.filter_map(Result::ok))
        .filter(|f| f.file_name().to_string_lossy().ends_with(".jsonl.gz"))
        .count()
}

#[tokio::test]
async fn ctrl_c_stops_a_run_between_batches_and_the_next_run_resumes_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (code, out, err) = cli(&cfg, &["db", "migrate"]);
    assert_eq!(code, Some(0), "{out}{err}");

    // One employee with many sessions that ended now.
    sqlx::any::install_default_drivers();
    let url = format!(
        "sqlite://{}",
        dir.path().join("var/portcullis.db").display()
    );
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let now = "2026-01-01T00:00:00.000000Z";
    sqlx::query(
        "insert into employees (username, email, display_name, status, created_at, updated_at) \
         values ('sam', 'sam@example.org', 'Sam', 'active', $1, $1)",
    )
    .bind(now)
    .execute(&pool)
    .await
    .unwrap();
    let mut tx = pool.begin().await.unwrap();
    for i in 0..SESSIONS {
        sqlx::query(
            "insert into sessions (session_id, employee_id, auth_method, mfa, created_at, expires_at, \
             absolute_expires_at, revoked_at, revoked_reason) \
             values ($1, (select employee_id from employees where username = 'sam'), 'password', 0, $2, $2, $2, $2, 'logout')",
        )
        .bind(format!("s{i:05}"))
        .bind(now)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();

    // Three years on: the sessions and the audit events written so far have expired.
    let clock = "2029-06-01T00:00:00Z";
    let mut child = Command::new(binary())
        .arg("--config")
        .arg(&cfg)
        .args(["retention", "run", "--now", clock, "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let archive = dir.path().join("archive");
    let deadline = Instant::now() + Duration::from_secs(60);
    while archive_files(&archive) < 5 {
        assert!(Instant::now() < deadline, "the run archived nothing");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let first: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(first["status"], "interrupted");
    let done_first = first["counts"]["sessions"].as_i64().unwrap();
    let left = sessions_left(&pool).await;
    assert!(done_first > 0 && left > 0, "{first}");
    // Consistent: exactly what was archived is gone.
    assert_eq!(left, SESSIONS - done_first, "{first}");

    // The next run resumes the same run, with its clock, to the end.
    let (code, out, err) = cli(&cfg, &["retention", "run", "--json"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let second: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(second["status"], "done");
    assert_eq!(second["resumed"], true);
    assert_eq!(second["retention_run_id"], first["retention_run_id"]);
    assert_eq!(second["as_of"], "2029-06-01T00:00:00.000000Z");
    assert_eq!(second["counts"]["sessions"], SESSIONS);
    assert_eq!(sessions_left(&pool).await, 0);
    let run_dir = second["archive_dir"].as_str().unwrap();
    let (code, out, err) = cli(&cfg, &["retention", "verify", run_dir]);
    assert_eq!(code, Some(0), "{out}{err}");

    // The audit chain the run cut still verifies, from the signed cut.
    let (code, out, err) = cli(&cfg, &["audit", "verify", "--database"]);
    assert_eq!(code, Some(0), "{out}{err}");
    if second["counts"]["audit_events"].as_u64().unwrap() > 0 {
        assert!(out.contains("starts after the retention cut"), "{out}");
    }
    // A run after it, with the same clock, changes nothing.
    let (code, out, err) = cli(&cfg, &["retention", "run", "--now", clock, "--json"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let third: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(third["counts"]["sessions"], 0);
    assert_eq!(third["counts"]["tickets"], 0);
    pool.close().await;
}

#[test]
fn holds_are_placed_listed_and_released_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (code, out, err) = cli(
        &cfg,
        &[
            "hold",
            "add",
            "--ticket",
            "TCK-2026-999999",
            "--reason",
            "x",
        ],
    );
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("no ticket TCK-2026-999999"), "{err}");
    // The first administrator exists after the first start: a user name becomes its id.
    let (code, out, err) = cli(
        &cfg,
        &["hold", "add", "--subject", "admin", "--reason", "case 9"],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, _, err) = cli(
        &cfg,
        &["hold", "add", "--subject", "admin", "--reason", "again"],
    );
    assert_eq!(
        code,
        Some(1),
        "a second hold in force on one subject: {err}"
    );
    let (code, out, err) = cli(&cfg, &["hold", "list", "--json"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let list: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["kind"], "subject");
    assert!(
        list[0]["target"]
            .as_str()
            .unwrap()
            .bytes()
            .all(|b| b.is_ascii_digit()),
        "{list}"
    );
    let (code, out, err) = cli(&cfg, &["hold", "remove", "--subject", "admin"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let (_, out, _) = cli(&cfg, &["hold", "list", "--json"]);
    assert_eq!(out.trim(), "[]");
    let (_, out, _) = cli(&cfg, &["hold", "list", "--all", "--json"]);
    assert!(out.contains("released_at\":\"20"), "{out}");
    let (code, out, err) = cli(&cfg, &["audit", "verify", "--database", "--emitter", "cli"]);
    assert_eq!(code, Some(0), "{out}{err}");
}
