//! Throwaway databases on the PostgreSQL server this machine runs (127.0.0.1:5432, trust
//! authentication). A missing server fails the test: these suites exist to prove the
//! SQL works on PostgreSQL, and a skip would prove nothing.

/// The maintenance database the test databases are created from.
pub const ADMIN_URL: &str = "postgres://root@127.0.0.1:5432/postgres";

/// A database of its own for one test; [`TestDatabase::drop`] removes it.
#[derive(Debug, Clone)]
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

async fn admin() -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::AnyPool::connect(ADMIN_URL)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {ADMIN_URL} is required for this test: {e}"))
}

impl TestDatabase {
    /// Creates an empty database named `<prefix>_<unique>`.
    pub async fn create(prefix: &str) -> Self {
        let name = format!("{prefix}_{}", crate::unique());
        sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
            .execute(&admin().await)
            .await
            .unwrap();
        Self {
            url: format!("postgres://root@127.0.0.1:5432/{name}"),
            name,
        }
    }

    /// Drops the database, ending any session still connected to it.
    pub async fn drop(self) {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "drop database if exists {} with (force)",
            self.name
        )))
        .execute(&admin().await)
        .await;
    }
}
