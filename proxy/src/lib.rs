//! Portcullis proxy: the pingora gateway every client request passes through.
//!
//! [`run`] starts the HTTPS listener (rustls, TLS 1.2/1.3, h2 and http/1.1),
//! the clear-text redirect listener, the admin listener and the certificate
//! watcher, and blocks until shutdown. Configuration arrives validated, as
//! [`ProxySettings`].

pub mod config;
pub mod jwt;
pub mod path;
pub mod ratelimit;

mod audit;
mod csrf;
mod enforce;
mod policy_watch;
mod revocation;

mod admin;
mod csp_report;
mod drain;
mod forwarded;
mod gateway;
mod headers;
mod metrics;
mod problem;
mod redirect;
mod routes;
mod tls;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::{BackgroundService, background_service};
use portcullis_authz::identity::IdentityKey;
use portcullis_authz::revocation_channel::RevocationChannel;
use portcullis_authz::{Authorizer, PolicyBundle};

use pingora::listeners::tls::TlsSettings;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::listening::Service;
use thiserror::Error;

pub use config::{ProxyConfig, ProxySettings};
pub use headers::CspMode;
pub use tls::{TlsError, crypto_provider, ensure_self_signed};

/// How long the sinks get at shutdown to take the last audit events.
const AUDIT_DRAIN: Duration = Duration::from_secs(2);

/// How often the certificate files are checked even without a file event.
const CERT_POLL_INTERVAL: Duration = Duration::from_secs(10);

/// Why the proxy could not start.
#[derive(Debug, Error)]
pub enum StartError {
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("certificate: {0}")]
    Tls(#[from] TlsError),
    #[error("listener: {0}")]
    Listener(String),
    #[error("policy bundle: {0}")]
    Policy(String),
    #[error("authentication: {0}")]
    Auth(String),
    #[error("rate limiting: {0}")]
    RateLimit(String),
    #[error("audit log: {0}")]
    Audit(String),
}

/// Fetches key sets, polls the revocation feed and listens for revocation
/// announcements on pingora's runtime.
struct Background {
    verifier: jwt::JwtVerifier,
    poller: Mutex<Option<revocation::FeedPoller>>,
    listener: Mutex<Option<revocation::PubSubListener>>,
}

#[async_trait]
impl BackgroundService for Background {
    async fn start(&self, _shutdown: ShutdownWatch) {
        if let Err(e) = self.verifier.refresh_all().await {
            tracing::warn!(error = %e, "token issuer keys not loaded yet; retrying in the background");
        }
        if let Err(e) = self.verifier.start_background_refresh() {
            tracing::error!(error = %e, "cannot refresh token issuer keys");
        }
        if let Some(listener) = self.listener.lock().ok().and_then(|mut l| l.take()) {
            tokio::spawn(listener.run());
        }
        let poller = self.poller.lock().ok().and_then(|mut p| p.take());
        if let Some(poller) = poller {
            poller.run().await;
        }
    }
}

/// Starts the proxy and blocks until it has shut down.
pub fn run(settings: ProxySettings) -> Result<(), StartError> {
    let ProxySettings {
        https_addr,
        http_addr,
        admin_addr,
        redirect_https_port,
        tls,
        trusted_proxies,
        worker_threads,
        shutdown_grace,
        routes,
        headers,
        csp_report_max_body_bytes,
        issuers,
        access_cookie,
        identity_key_file,
        revocation_feed_url,
        revocation_poll,
        revocation_pubsub,
        policy_dir,
        policy_time_limit,
        rate_limits,
        csrf,
        audit,
        audit_ingest_url,
    } = settings;
    let metrics = metrics::Metrics::try_new()?;
    let registry = metrics.registry().clone();
    let jwt_metrics = jwt::JwtMetrics::try_new()?;
    jwt_metrics.register(&registry)?;
    let rate_metrics = ratelimit::RateLimitMetrics::try_new()?;
    rate_metrics.register(&registry)?;
    let enforce_metrics = enforce::EnforceMetrics::try_new(&registry)?;
    let identity_key = IdentityKey::load_or_create(&identity_key_file)
        .map_err(|e| StartError::Auth(e.to_string()))?;

    // The audit log runs its delivery on a small runtime of its own: pingora's
    // runtimes only exist once the server runs, and emits from any runtime reach
    // the spool's writer thread.
    let audit_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("audit-proxy")
        .enable_all()
        .build()
        .map_err(|e| StartError::Audit(e.to_string()))?;
    let audit_lock =
        portcullis_audit::SpoolLock::acquire(&audit.spool.dir, Duration::from_secs(10))
            .map_err(|e| StartError::Audit(e.to_string()))?;
    let mut extra_sinks: Vec<Box<dyn portcullis_audit::Sink>> = Vec::new();
    if let Some(url) = &audit_ingest_url {
        let sink = audit::IngestSink::new(url, identity_key.clone())
            .map_err(|e| StartError::Audit(format!("ingest sink: {e}")))?;
        extra_sinks.push(Box::new(sink));
    }
    let audit_log = {
        let _runtime = audit_rt.enter();
        portcullis_audit::AuditLog::start_with_sinks(
            audit,
            extra_sinks,
            &portcullis_audit::metrics_registry(audit::EMITTER),
        )
        .map_err(|e| StartError::Audit(e.to_string()))?
    };

    // The bundle must load and pass its own tests before anything serves.
    let bundle = PolicyBundle::load(&policy_dir)
        .map_err(|e| StartError::Policy(e.to_string()))?
        .with_eval_time_limit(policy_time_limit);
    let report = bundle.run_tests(false);
    if !report.all_passed() {
        return Err(StartError::Policy(format!(
            "{} of {} policy tests fail; run `portcullis policy test {}`",
            report.failed(),
            report.results.len(),
            policy_dir.display()
        )));
    }
    tracing::info!(digest = bundle.digest(), "policy bundle loaded");
    let authorizer = Arc::new(Authorizer::new(bundle));
    let modes = Arc::new(ArcSwap::from_pointee(enforce::RouteModes::from_bundle(
        &authorizer.current(),
    )));
    {
        let (modes, authz) = (Arc::clone(&modes), Arc::clone(&authorizer));
        policy_watch::start(
            policy_dir.clone(),
            Arc::clone(&authorizer),
            enforce_metrics.reloads.clone(),
            audit_log.clone(),
            Box::new(move || {
                modes.store(Arc::new(enforce::RouteModes::from_bundle(&authz.current())))
            }),
        )
        .map_err(StartError::Policy)?;
    }

    let observer: jwt::KeySetObserver = {
        let (log, runtime) = (audit_log.clone(), audit_rt.handle().clone());
        Arc::new(move |c: &jwt::KeySetChange| {
            tracing::warn!(issuer = %c.issuer_label, added = ?c.added, removed = ?c.removed,
                replaced = ?c.replaced, keys = c.key_count, "token signing key set changed");
            let (log, event) = (log.clone(), audit::key_set_event(c));
            // Called on the fetching task: hand the event over, never wait here.
            runtime.spawn(async move {
                if let Err(e) = log.emit(event).await {
                    tracing::error!(target: "portcullis::audit", action = "jwks.change", error = %e, "audit event not recorded");
                }
            });
        })
    };
    let verifier = jwt::JwtVerifier::new(issuers, jwt_metrics, Some(observer))
        .map_err(|e| StartError::Auth(e.to_string()))?;
    let store = rate_limits
        .store
        .build()
        .map_err(|e| StartError::RateLimit(e.to_string()))?;
    let rates = ratelimit::Rules::new(rate_limits.rules, store, rate_metrics);
    let revocations = Arc::new(revocation::Revocations::default());
    let wake = Arc::new(tokio::sync::Notify::new());
    let listener = match revocation_pubsub {
        Some(RevocationChannel { client, channel }) => {
            let up = prometheus::IntGauge::new(
                "portcullis_revocation_pubsub_up",
                "1 while subscribed to the Redis channel of revocation announcements.",
            )?;
            registry.register(Box::new(up.clone()))?;
            Some(revocation::PubSubListener {
                client,
                channel,
                wake: Arc::clone(&wake),
                up,
            })
        }
        None => None,
    };
    let poller = revocation_feed_url
        .as_ref()
        .map(|url| revocation::FeedPoller {
            url: url.clone(),
            interval: revocation_poll,
            key: identity_key.clone(),
            revocations: Arc::clone(&revocations),
            errors: enforce_metrics.revocation_errors.clone(),
            wake,
        });
    let enforcement = Arc::new(enforce::Enforcement {
        verifier: verifier.clone(),
        authorizer,
        modes,
        revocations,
        rates,
        csrf,
        identity_key,
        access_cookie,
        metrics: enforce_metrics,
    });
    let (store, note) = tls::CertStore::open(&tls, &metrics)?;
    if let Some(note) = note {
        tracing::warn!("{note}");
    }
    store.watch(metrics.clone(), CERT_POLL_INTERVAL)?;
    let drain = Arc::new(drain::Drain::default());

    let conf = ServerConf {
        threads: worker_threads,
        // Draining is ours (see `drain`): pingora is asked for a fast exit
        // once in-flight requests are done.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None::<Opt>, conf);
    server.bootstrap();

    let mut upstreams: Vec<(String, std::net::SocketAddr)> = routes
        .iter()
        .map(|r| (r.upstream.name.clone(), r.upstream.address))
        .collect();
    upstreams.sort();
    upstreams.dedup();

    let gateway = gateway::Gateway {
        routes,
        headers: headers.clone(),
        trusted: trusted_proxies,
        metrics: metrics.clone(),
        drain: Arc::clone(&drain),
        csp_report_max_body_bytes,
        enforcement: Arc::clone(&enforcement),
        audit: audit_log.clone(),
    };
    let mut https = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        gateway,
        "portcullis https",
    );
    let mut tls_settings =
        TlsSettings::intermediate("", "").map_err(|e| StartError::Listener(e.to_string()))?;
    tls_settings.set_cert_resolver(Arc::new(store));
    tls_settings.enable_h2();
    https.add_tls_with_settings(&https_addr.to_string(), None, tls_settings);
    server.add_service(https);

    if let Some(addr) = http_addr {
        let mut redirect = Service::new(
            "portcullis http redirect".to_owned(),
            redirect::RedirectApp {
                https_port: redirect_https_port,
                headers,
            },
        );
        redirect.add_tcp(&addr.to_string());
        server.add_service(redirect);
    }

    let mut admin = Service::new(
        "portcullis admin".to_owned(),
        admin::AdminApp {
            metrics,
            drain: Arc::clone(&drain),
            upstreams,
            enforcement: Arc::clone(&enforcement),
            revocation_feed: revocation_feed_url.is_some(),
        },
    );
    admin.add_tcp(&admin_addr.to_string());
    server.add_service(admin);
    server.add_service(background_service(
        "enforcement",
        Background {
            verifier,
            poller: Mutex::new(poller),
            listener: Mutex::new(listener),
        },
    ));

    tracing::info!(%https_addr, ?http_addr, %admin_addr, "proxy starting");
    server.run(RunArgs {
        shutdown_signal: Box::new(drain::DrainingSignals {
            drain,
            grace: shutdown_grace,
        }),
    });
    // A final checkpoint; what the sinks do not take now is delivered after the next start.
    audit_rt.block_on(audit_log.shutdown(AUDIT_DRAIN));
    drop(audit_lock);
    Ok(())
}
