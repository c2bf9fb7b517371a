//! The proxy's audit trail (emitter `proxy`): policy denials, rate-limit
//! rejections, CSRF refusals, refused credentials, CSP violations, key-set
//! changes and policy reloads become [`AuditEvent`]s in the proxy's spool.
//!
//! Request-path events (built with [`crate::context::RequestInfo`]) are
//! collected in the request's context while the guards run and recorded by
//! [`RequestAudit`]: before a locally written answer (a refusal is spooled before
//! the client learns of it), or in the `logging` phase for a request that went
//! upstream (report-only findings). Floods are folded into summary events, and an
//! event that cannot be spooled is counted in a metric, never dropped silently.
//! Events from outside a request (key-set changes, reloads) are emitted on
//! the audit runtime or, from the policy watcher's own thread, with
//! `emit_blocking` — never on a pingora thread.
//!
//! Besides the configured sinks, the spool ships to the backend's
//! `POST /internal/audit/ingest` ([`IngestSink`]), signed as the `@proxy`
//! service with the proxy↔backend identity key, so the administrators'
//! view shows the proxy's events too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use portcullis_audit::{
    Aggregator, AuditEvent, AuditLog, Category, Level, Outcome, Sink, SinkError, SpooledEvent,
};
use portcullis_contract::audit_ingest::DIGEST_PARAM;
use portcullis_contract::identity::{
    IDENTITY_HEADER, Identity, IdentityKey, SERVICE_SUBJECT, SIGNATURE_HEADER,
};
use prometheus::{IntCounterVec, Opts, Registry};
use sha2::{Digest, Sha256};

/// Name of the ingest sink (its offset file and metric label).
pub const INGEST_SINK_NAME: &str = "ingest";
const INGEST_TIMEOUT: Duration = Duration::from_secs(30);
const INGEST_BATCH: usize = 200;

/// Actions a client can make the proxy repeat at will: folded per key and window by
/// the [`Aggregator`] (first event at once, then one summary with the count).
const FOLDED_ACTIONS: [&str; 5] = [
    "rate_limit.reject",
    "csrf.reject",
    "token.reject",
    "policy.deny",
    "csp.violation",
];
/// The aggregation window, and how often ended windows are flushed.
pub const FOLD_WINDOW: Duration = Duration::from_secs(60);
const FOLD_FLUSH_EVERY: Duration = Duration::from_secs(5);
/// Keys tracked at most; past that each action shares one overflow key.
const FOLD_MAX_KEYS: usize = 10_000;

/// The request path's audit: events a request collected are folded ([`FOLDED_ACTIONS`])
/// and spooled; a failure to spool is logged with the event's action, and the audit log
/// counts it (`portcullis_audit_emit_failures_total{emitter,reason}`, which an alert
/// watches).
#[derive(Clone)]
pub struct RequestAudit {
    log: AuditLog,
    folder: Arc<Aggregator>,
    folded: IntCounterVec,
}

impl RequestAudit {
    pub fn try_new(log: AuditLog, registry: &Registry) -> prometheus::Result<Self> {
        let folded = IntCounterVec::new(
            Opts::new(
                "portcullis_audit_events_folded_total",
                "Audit events counted into a summary event instead of recorded one by one",
            ),
            &["action"],
        )?;
        for action in FOLDED_ACTIONS {
            folded.with_label_values(&[action]);
        }
        registry.register(Box::new(folded.clone()))?;
        Ok(Self {
            log,
            folder: Arc::new(Aggregator::new(FOLD_WINDOW, FOLD_MAX_KEYS)),
            folded,
        })
    }

    /// Folds and spools the events a request collected; returns once each is spooled
    /// or its failure counted.
    pub async fn record(&self, events: Vec<AuditEvent>) {
        let now = Instant::now();
        let mut out = Vec::with_capacity(events.len());
        for event in events {
            if FOLDED_ACTIONS.contains(&event.action()) {
                let action = event.action().to_owned();
                let admitted = self.folder.admit(event, now);
                if admitted.is_empty() {
                    self.folded.with_label_values(&[action.as_str()]).inc();
                }
                out.extend(admitted);
            } else {
                out.push(event);
            }
        }
        self.emit_all(out).await;
    }

    /// Spools the summaries of ended windows; with `all`, of every window (shutdown).
    pub async fn flush(&self, all: bool) {
        let now = if all {
            Instant::now() + FOLD_WINDOW
        } else {
            Instant::now()
        };
        let summaries = self.folder.flush(now);
        self.emit_all(summaries).await;
    }

    /// Flushes ended windows every few seconds, for as long as the runtime runs.
    pub async fn flush_periodically(self) {
        let mut tick = tokio::time::interval(FOLD_FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.flush(false).await;
        }
    }

    async fn emit_all(&self, events: Vec<AuditEvent>) {
        // Submitted together (in order), so they share one group commit.
        let emits = events.into_iter().map(|event| async move {
            let action = event.action().to_owned();
            if let Err(e) = self.log.emit(event).await {
                tracing::error!(target: "portcullis::audit", action = %action, error = %e, "audit event not recorded");
            }
        });
        futures_util::future::join_all(emits).await;
    }
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
