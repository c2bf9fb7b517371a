//! [`DbSink`]: the audit log's sink into the `audit_events` table (the admin view).

use std::time::Duration;

use async_trait::async_trait;
use portcullis_audit::{Sink, SinkError, SpooledEvent};

use super::store;
use crate::db::Db;

/// Name of the sink that writes into the `audit_events` table.
pub const DB_SINK_NAME: &str = "database";

/// Writes delivered events into `audit_events` (the admin view), one transaction per
/// batch; an event already there (redelivery after a crash) is skipped by its id.
///
/// A spool must always be started with the same sinks (a segment is deleted once the
/// sinks it was started with have it), so a process that may find the database down
/// uses [`DbSink::connecting`]: it connects at its first delivery and retries until then.
pub struct DbSink {
    db: Option<Db>,
    url: Option<String>,
}

impl DbSink {
    /// A sink writing to `db`.
    pub fn new(db: Db) -> Self {
        Self {
            db: Some(db),
            url: None,
        }
    }

    /// A sink that connects to `url` when it first has events to deliver.
    pub fn connecting(url: String) -> Self {
        Self {
            db: None,
            url: Some(url),
        }
    }

    async fn db(&mut self) -> Result<&Db, SinkError> {
        if self.db.is_none() {
            let url = self.url.as_deref().unwrap_or_default();
            let db = Db::connect(url)
                .await
                .map_err(|e| SinkError::Other(Box::new(e)))?;
            self.db = Some(db);
        }
        self.db
            .as_ref()
            .ok_or_else(|| SinkError::Other("no database".into()))
    }
}

#[async_trait]
impl Sink for DbSink {
    fn name(&self) -> &str {
        DB_SINK_NAME
    }

    async fn deliver(&mut self, batch: &[SpooledEvent]) -> Result<(), SinkError> {
        let lines: Vec<&str> = batch.iter().map(SpooledEvent::json).collect();
        let db = self.db().await?.clone();
        let insert = store::insert_lines(&db, &lines);
        match tokio::time::timeout(Duration::from_secs(30), insert).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(SinkError::Other(Box::new(e))),
            Err(_) => Err(SinkError::Timeout("database insert".into())),
        }
    }
}
