//! The database: one `AnyPool` over SQLite (embedded default) or PostgreSQL,
//! chosen by the URL. Repository code is written once in SQL both engines
//! accept (`$N` placeholders numbered in order of first use, because SQLite
//! binds them by first appearance); only the migrations differ per engine.
//! The `query` submodule holds what every repository shares ([`RepoError`], parameters).

use std::str::FromStr;
use std::sync::Once;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor, Row};
use thiserror::Error;

mod query;

pub use query::RepoError;
pub(crate) use query::{Params, classify, dynamic_sql};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");

/// Which engine a pool talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

#[derive(Debug, Error)]
pub enum DbError {
    #[error("unsupported database URL (use sqlite:// or postgres://)")]
    UnsupportedUrl,
    #[error("cannot connect to the database: {0}")]
    Connect(sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
}

/// A migration that is not applied yet.
/// A write transaction from [`Db::begin`].
pub type Tx = sqlx::Transaction<'static, sqlx::Any>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingMigration {
    pub version: i64,
    pub description: String,
}

/// The connection pool and its engine.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    kind: DbKind,
}

impl Db {
    /// Connects (creating a SQLite file if missing). Does not migrate.
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let kind = if url.starts_with("sqlite:") {
            DbKind::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            DbKind::Postgres
        } else {
            return Err(DbError::UnsupportedUrl);
        };
        if kind == DbKind::Sqlite {
            // `mode=rwc` creates the file, not its folder.
            let path = url.trim_start_matches("sqlite:").trim_start_matches("//");
            let path = path.split('?').next().unwrap_or_default();
            if let Some(dir) = std::path::Path::new(path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir).map_err(|e| DbError::Connect(sqlx::Error::Io(e)))?;
            }
        }
        let options = AnyConnectOptions::from_str(url).map_err(DbError::Connect)?;
        let mut pool = AnyPoolOptions::new()
            .max_connections(if kind == DbKind::Sqlite { 8 } else { 16 })
            .acquire_timeout(Duration::from_secs(10));
        if kind == DbKind::Sqlite {
            pool = pool.after_connect(|conn, _| {
                Box::pin(async move {
                    // WAL lets readers run beside the single writer; busy_timeout
                    // makes concurrent writers wait instead of failing.
                    conn.execute("pragma journal_mode = wal").await?;
                    conn.execute("pragma foreign_keys = on").await?;
                    conn.execute("pragma busy_timeout = 10000").await?;
                    conn.execute("pragma synchronous = normal").await?;
                    Ok(())
                })
            });
        }
        let pool = pool.connect_with(options).await.map_err(DbError::Connect)?;
        Ok(Self { pool, kind })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Starts a write transaction. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`): a deferred transaction that reads and then writes
    /// fails with "database is locked" when another writer got there first,
    /// instead of waiting its turn.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        match self.kind {
            DbKind::Sqlite => self.pool.begin_with("begin immediate").await,
            DbKind::Postgres => self.pool.begin().await,
        }
    }

    pub fn kind(&self) -> DbKind {
        self.kind
    }

    fn migrator(&self) -> &'static Migrator {
        match self.kind {
            DbKind::Sqlite => &SQLITE_MIGRATIONS,
            DbKind::Postgres => &POSTGRES_MIGRATIONS,
        }
    }

    /// Applies every pending migration.
    pub async fn migrate(&self) -> Result<(), DbError> {
        self.migrator().run(&self.pool).await?;
        Ok(())
    }

    /// Migrations that [`Db::migrate`] would apply, without changing anything.
    pub async fn pending_migrations(&self) -> Result<Vec<PendingMigration>, DbError> {
        let exists_sql = match self.kind {
            DbKind::Sqlite => {
                "select count(*) from sqlite_master where type = 'table' and name = '_sqlx_migrations'"
            }
            DbKind::Postgres => {
                "select count(*) from information_schema.tables where table_name = '_sqlx_migrations' and table_schema = current_schema()"
            }
        };
        let exists: i64 = sqlx::query(exists_sql)
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        let applied: Vec<i64> = if exists > 0 {
            sqlx::query("select version from _sqlx_migrations where success = $1")
                .bind(true)
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| r.try_get::<i64, _>(0))
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        Ok(self
            .migrator()
            .iter()
            .filter(|m| m.migration_type.is_up_migration() && !applied.contains(&m.version))
            .map(|m| PendingMigration {
                version: m.version,
                description: m.description.to_string(),
            })
            .collect())
    }
}

/// The current time in the stored representation: RFC 3339 UTC with
/// microseconds, fixed width so that text order is time order.
pub fn now_text() -> String {
    format_time(time::OffsetDateTime::now_utc())
}

pub fn format_time(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}
