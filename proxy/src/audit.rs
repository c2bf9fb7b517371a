//! The proxy's audit trail (emitter `proxy`): policy denials, rate-limit
//! rejections, CSRF refusals, refused credentials, CSP violations, key-set
//! changes and policy reloads become [`AuditEvent`]s in the proxy's spool.
//!
//! Request-path events (built with [`crate::context::RequestInfo`]) are
//! collected in the request's context while the
//! guards run and emitted with the async `emit` in the `logging` phase,
//! after the response has gone out, so auditing never delays a response.
//! Events from outside a request (key-set changes, reloads) are emitted on
//! the audit runtime or, from the policy watcher's own thread, with
//! `emit_blocking` — never on a pingora thread.
//!
//! Besides the configured sinks, the spool ships to the backend's
//! `POST /internal/audit/ingest` ([`IngestSink`]), signed as the `@proxy`
//! service with the proxy↔backend identity key, so the administrators'
//! view shows the proxy's events too.

use std::time::Duration;

use async_trait::async_trait;
use portcullis_audit::{
    AuditEvent, AuditLog, Category, Level, Outcome, Sink, SinkError, SpooledEvent,
};
use portcullis_contract::audit_ingest::DIGEST_PARAM;
use portcullis_contract::identity::{
    IDENTITY_HEADER, Identity, IdentityKey, SERVICE_SUBJECT, SIGNATURE_HEADER,
};
use sha2::{Digest, Sha256};

/// Name of the ingest sink (its offset file and metric label).
pub const INGEST_SINK_NAME: &str = "ingest";
const INGEST_TIMEOUT: Duration = Duration::from_secs(30);
const INGEST_BATCH: usize = 200;

/// Emits the events a request collected (from the `logging` phase). A failure cannot
/// refuse anything any more (the response is out); it is logged as an error.
pub async fn emit_all(log: &AuditLog, events: Vec<AuditEvent>) {
    // Submitted together (in order), so they share one group commit.
    let emits = events.into_iter().map(|event| async move {
        let action = event.action().to_owned();
        if let Err(e) = log.emit(event).await {
            tracing::error!(target: "portcullis::audit", action = %action, error = %e, "audit event not recorded");
        }
    });
    futures_util::future::join_all(emits).await;
}

/// Ships spooled events to the backend's ingest endpoint as NDJSON. The request is
/// signed like the revocation feed (identity `@proxy`, HMAC over method, path and query);
/// the query carries the body's SHA-256, so the signature covers the body too.
pub struct IngestSink {
    client: reqwest::Client,
    url: reqwest::Url,
    key: IdentityKey,
}

impl IngestSink {
    /// A sink posting to `url` (`http(s)://host:port/internal/audit/ingest`).
    pub fn new(url: &str, key: IdentityKey) -> Result<Self, SinkError> {
        let url = reqwest::Url::parse(url)
            .map_err(|e| SinkError::Other(format!("ingest url {url:?}: {e}").into()))?;
        let client = reqwest::Client::builder()
            .timeout(INGEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { client, url, key })
    }
}

#[async_trait]
impl Sink for IngestSink {
    fn name(&self) -> &str {
        INGEST_SINK_NAME
    }

    fn max_batch_events(&self) -> usize {
        INGEST_BATCH
    }

    async fn deliver(&mut self, batch: &[SpooledEvent]) -> Result<(), SinkError> {
        let mut body = Vec::with_capacity(batch.len() * 1024);
        for event in batch {
            body.extend_from_slice(event.json().as_bytes());
            body.push(b'\n');
        }
        let digest = hex::encode(Sha256::digest(&body));
        let mut url = self.url.clone();
        url.set_query(Some(&format!("{DIGEST_PARAM}={digest}")));
        let target = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let identity = Identity {
            sub: SERVICE_SUBJECT.into(),
            session_id: None,
            auth_method: None,
            decision_id: None,
            iat: time::OffsetDateTime::now_utc().unix_timestamp(),
            issuer: None,
        };
        let (id, sig) = self.key.sign("POST", &target, &identity);
        let resp = self
            .client
            .post(url)
            .header(IDENTITY_HEADER, id)
            .header(SIGNATURE_HEADER, sig)
            .header(http::header::CONTENT_TYPE, "application/x-ndjson")
            .body(body)
            .send()
            .await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp.text().await.unwrap_or_default();
        Err(SinkError::Status {
            status: status.as_u16(),
            body: text.chars().take(256).collect(),
        })
    }
}

/// A change of an issuer's signing keys (`jwks.change`, category `security`).
pub fn key_set_event(c: &crate::jwt::KeySetChange) -> AuditEvent {
    AuditEvent::new(Category::Security, "jwks.change", Outcome::Success)
        .level(Level::Warning)
        .detail("issuer", c.issuer_label.clone())
        .detail("added", c.added.clone())
        .detail("removed", c.removed.clone())
        .detail("replaced", c.replaced.clone())
        .detail("keys", c.key_count)
}
