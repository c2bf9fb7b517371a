//! The anomaly job against a real audit table, on both engines: an account hammering
//! refused routes at 3 a.m. from a new address, after two weeks of office hours, is
//! flagged for every kind of deviation, recorded as `anomaly.detected` and counted;
//! the next run over the same window reports nothing new; ordinary subjects never.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod support;

use std::time::Duration;

use portcullis_backend::anomaly::detect::Kind;
use portcullis_backend::db::format_time;
use serde_json::{Value, json};
use support::Engine;

const DAY: i64 = 86_400;

/// An audit row as the database sink would store it.
async fn insert(
    state: &portcullis_backend::AppState,
    seq: i64,
    at: i64,
    user: &str,
    denied: bool,
    ticket: &str,
    ip: &str,
) {
    let when = format_time(time::OffsetDateTime::from_unix_timestamp(at).unwrap());
    let outcome = if denied { "failure" } else { "success" };
    let action = if denied {
        "policy.deny"
    } else {
        "ticket.update"
    };
    let line = json!({
        "@timestamp": when, "event.action": action, "event.outcome": outcome,
        "user.id": user, "source.ip": ip, "portcullis.details": {"ticket_id": ticket},
    });
    sqlx::query(
        "insert into audit_events (event_id, emitter, seq, occurred_at, category, action, outcome, \
         level, user_id, session_id, request_id, line, received_at) \
         values ($1, 'proxy', $2, $3, 'api', $4, $5, 'info', $6, null, null, $7, $8)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(seq)
    .bind(when.clone())
    .bind(action)
    .bind(outcome)
    .bind(user)
    .bind(line.to_string())
    .bind(when)
    .execute(state.db.pool())
    .await
    .unwrap();
}

async fn flags_the_3_am_pattern(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let (url, pg) = support::database(engine, dir.path(), "portcullis_anomaly").await;
    let settings = support::settings(dir.path(), url, Default::default());
    let registry = prometheus::Registry::new();
    let state = portcullis_backend::open(&settings, None, &registry)
        .await
        .unwrap();

    // Two weeks of office hours for two employees, then 60 refusals at 03:00 today.
    let midnight = time::OffsetDateTime::now_utc().unix_timestamp() / DAY * DAY - DAY;
    let now = midnight + 3 * 3600 + 40 * 60;
    let mut seq = 0;
    for user in ["41", "42"] {
        for day in -14..0 {
            for hour in 9..17 {
                seq += 1;
                let at = midnight + day * DAY + hour * 3600 + 600;
                insert(
                    &state,
                    seq,
                    at,
                    user,
                    false,
                    &format!("{user}-{}", hour % 3),
                    &format!("10.1.0.{user}"),
                )
                .await;
            }
        }
    }
    for i in 0..60 {
        seq += 1;
        insert(
            &state,
            seq,
            midnight + 3 * 3600 + i * 30,
            "42",
            true,
            &format!("TCK-{i}"),
            "198.51.100.9",
        )
        .await;
    }

    let found = state.anomaly.run_once(&state, now).await.unwrap();
    let kinds: std::collections::HashSet<Kind> = found.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, Kind::ALL.into_iter().collect(), "{found:#?}");
    assert!(found.iter().all(|f| f.subject == "42"));
    // Reported once per window.
    assert!(
        state
            .anomaly
            .run_once(&state, now + 300)
            .await
            .unwrap()
            .is_empty()
    );

    let text = {
        let mut buf = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &registry.gather(),
            &mut buf,
        )
        .unwrap();
        String::from_utf8(buf).unwrap()
    };
    assert!(
        text.contains(r#"portcullis_anomalies_total{kind="denial_rate"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "portcullis_anomaly_job_last_success_timestamp_seconds {}",
            now + 300
        )),
        "{text}"
    );

    // The findings are security events naming the subject (through the spool).
    let mut recorded = Vec::new();
    for _ in 0..100 {
        recorded = sqlx::query_scalar::<_, String>(
            "select line from audit_events where action = 'anomaly.detected'",
        )
        .fetch_all(state.db.pool())
        .await
        .unwrap();
        if recorded.len() == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(recorded.len(), 5, "{recorded:#?}");
    let e: Value = serde_json::from_str(&recorded[0]).unwrap();
    assert_eq!(e["event.category"], "security");
    assert_eq!(e["user.id"], "42");
    assert!(
        e["portcullis.details"]["kind"].is_string() && e["portcullis.details"]["score"].is_number(),
        "{e}"
    );

    state.audit.shutdown(Duration::from_secs(1)).await;
    if let Some(pg) = pg {
        drop(state);
        pg.drop().await;
    }
}

#[tokio::test]
async fn the_anomaly_job_flags_a_3_am_pattern_on_sqlite() {
    flags_the_3_am_pattern(Engine::Sqlite).await;
}

#[tokio::test]
async fn the_anomaly_job_flags_a_3_am_pattern_on_postgresql() {
    flags_the_3_am_pattern(Engine::Postgres).await;
}
