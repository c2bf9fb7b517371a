//! What the backend's test suites share: the two database engines, a fresh database per
//! test, and `BackendSettings` in a temporary folder.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test support: each suite uses a subset; a failed setup step aborts the test"
)]

pub mod moto;

use std::path::{Path, PathBuf};

use portcullis_backend::BackendSettings;
use portcullis_backend::identity::IdentitySettings;
use portcullis_testkit::pg::TestDatabase;

/// The engine a test runs on; each suite runs every test on both.
#[derive(Clone, Copy, Debug)]
pub enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    pub fn tag(self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgres",
        }
    }
}

/// A database for one test: a SQLite file in `dir`, or a fresh PostgreSQL database
/// (returned, for [`TestDatabase::drop`] at the end).
pub async fn database(engine: Engine, dir: &Path, prefix: &str) -> (String, Option<TestDatabase>) {
    match engine {
        Engine::Sqlite => (
            format!("sqlite://{}?mode=rwc", dir.join("t.db").display()),
            None,
        ),
        Engine::Postgres => {
            let db = TestDatabase::create(prefix).await;
            (db.url.clone(), Some(db))
        }
    }
}

/// The shipped policy bundle.
pub fn policy_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../policies"))
}

/// Settings for a backend on `database_url` whose keys, state and audit spool live in
/// `dir`, with the shipped policy and the default audit sinks.
pub fn settings(dir: &Path, database_url: String, identity: IdentitySettings) -> BackendSettings {
    BackendSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: None,
        database_url,
        database_password_file: None,
        policy_dir: policy_dir(),
        identity_key_file: dir.join("identity.key"),
        keyring_dir: dir.join("keys/jwt"),
        initial_admin_file: dir.join("initial-admin.txt"),
        mfa_key_file: dir.join("mfa.key"),
        identity,
        // Backend tests run no anomaly job (its own tests drive it).
        anomaly: portcullis_backend::settings::AnomalySettings {
            enabled: false,
            ..Default::default()
        },
        retention: portcullis_backend::settings::RetentionSettings::defaults(dir),
        attachments: portcullis_backend::settings::AttachmentsSettings::under(dir),
        audit: portcullis_audit::AuditConfig::default()
            .validate("audit", dir, dir)
            .unwrap()
            .settings("backend"),
        web_dir: dir.join("web"),
    }
}

/// A password session for `employee` that never expires, stored as `sid` (the signed
/// identity names it, and the backend checks that it is live).
pub async fn live_session(state: &portcullis_backend::AppState, employee: i64, sid: &str) {
    let s = portcullis_backend::identity::store::NewSession {
        employee_id: employee,
        auth_method: "password".into(),
        expires_at: "2999-01-01T00:00:00.000000Z".into(),
        absolute_expires_at: "2999-01-01T00:00:00.000000Z".into(),
        ..Default::default()
    };
    portcullis_backend::identity::store::create_session(&state.db, sid, &s)
        .await
        .unwrap();
}

/// One test per engine for each named `async fn(Engine)`, in modules `sqlite` and
/// `postgres`.
#[allow(unused_macros, reason = "not every test file runs on both engines")]
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Engine::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Engine::Postgres).await })*
        }
    };
}
