//! Portcullis proxy: the pingora gateway every client request passes through.
//!
//! [`run`] starts the HTTPS listener (rustls, TLS 1.2/1.3, h2 and http/1.1),
//! the clear-text redirect listener, the admin listener and the certificate
//! watcher, and blocks until shutdown. Configuration arrives validated, as
//! [`ProxySettings`].
//!
//! Modules, from the bottom up: leaves ([`problems`], `mode`, `context`,
//! `routes`, `problem`, [`path`], `forwarded`, `drain`, `csrf`, `headers`,
//! [`jwt`], [`ratelimit`]) know nothing of the gateway; [`settings`] is the
//! file and its validation; the features (`guards`, `revocation`, `audit`,
//! `tls`, `admin`, `redirect`, `csp_report`, `metrics`, `reloads`) sit
//! above them; `gateway` runs the phases; this file wires it all together.

pub mod framing;
pub mod jwt;
pub mod path;
pub mod ratelimit;
pub mod settings;

mod context;
mod csrf;
mod drain;
mod forwarded;
mod headers;
mod mode;
mod problem;
mod routes;

mod admin;
mod audit;
mod background;
mod csp_report;
mod gateway;
mod guards;
mod head_deadline;
mod listener;
mod metrics;
mod redirect;
mod reloads;
mod revocation;
mod tls;
mod tls_stream;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use pingora::listeners::{L4BufferSettings, ListenerConfig, TcpSocketOptions};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use portcullis_audit::{AuditLog, AuditSettings, SpoolLock};
use portcullis_authz::Authorizer;
use portcullis_contract::identity::IdentityKey;
use portcullis_contract::revocation::RevocationChannel;
use prometheus::Registry;
use thiserror::Error;

pub use settings::{ProxyConfig, ProxySettings};
pub use tls::{TlsError, crypto_provider, ensure_self_signed};

use guards::{Guards, authn, csrf as csrf_guard, policy, rate_limit};
use mode::RouteModes;

/// How long the sinks get at shutdown to take the last audit events.
const AUDIT_DRAIN: Duration = Duration::from_secs(2);

/// Why the proxy could not start.
#[derive(Debug, Error)]
pub enum StartError {
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("certificate: {0}")]
    Tls(#[from] TlsError),
    #[error("TLS configuration: {0}")]
    TlsConfig(#[from] rustls::Error),
    #[error("policy bundle {dir}: {source}; run `portcullis policy test {dir}`")]
    PolicyStart {
        dir: String,
        #[source]
        source: portcullis_authz::BundleError,
    },
    #[error("reload service: {0}")]
    Reload(#[from] portcullis_reload::StartError),
    #[error("authentication: {0}")]
    IdentityKey(#[from] portcullis_contract::identity::KeyError),
    #[error("authentication: {0}")]
    Jwt(#[from] jwt::JwtSetupError),
    #[error("rate limiting: {0}")]
    RateLimit(#[from] ratelimit::StoreError),
    #[error("audit log: {0}")]
    AuditIo(#[from] std::io::Error),
    #[error("audit log: ingest sink: {0}")]
    IngestSink(#[source] portcullis_audit::SinkError),
    #[error("audit log: {0}")]
    Audit(#[from] portcullis_audit::AuditError),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, #[source] std::io::Error),
}

/// Starts the proxy and blocks until it has shut down.
///
/// The proxy adds its policy and certificate targets to `reload`, the process's one
/// reload service, and starts it. `authorizer` is the bundle the proxy enforces when the
/// process already loaded it (under `portcullis up` the backend enforces the same one,
/// so one reload changes both layers at once); with `None` the proxy loads
/// `policy_dir` itself. `registry` is the process's one metrics registry, which the
/// admin listener's `/metrics` shows whole.
pub fn run(
    settings: ProxySettings,
    mut reload: portcullis_reload::ReloadService,
    authorizer: Option<Arc<Authorizer>>,
    registry: Registry,
) -> Result<(), StartError> {
    let identity_key = IdentityKey::load_or_create(&settings.identity_key_file)?;
    // A rotation of the identity key (`keys rotate --kind identity`) needs no restart.
    if let Some(target) = portcullis_contract::identity::reload_target(&identity_key) {
        reload.add(target);
    }
    let audit = start_audit(
        settings.audit.clone(),
        settings.audit_ingest_url.as_deref(),
        &identity_key,
        &registry,
    )?;
    let authorizer = match authorizer {
        Some(shared) => shared,
        None => load_policy(&settings.policy_dir, settings.policy_time_limit)?,
    };
    let enforcement = build_enforcement(
        &settings,
        &registry,
        &audit,
        authorizer,
        identity_key,
        &mut reload,
    )?;
    let drain = Arc::new(drain::Drain::default());
    let server = build_server(
        settings,
        &registry,
        &audit.requests,
        enforcement,
        &drain,
        &mut reload,
    )?;
    reload.start()?;
    let grace = server.grace;
    server.run(RunArgs {
        shutdown_signal: Box::new(drain::DrainingSignals { drain, grace }),
    });
    audit.shutdown();
    Ok(())
}

/// The proxy's audit log and the runtime its delivery runs on.
struct Audit {
    runtime: tokio::runtime::Runtime,
    lock: SpoolLock,
    log: AuditLog,
    /// The request path's view of `log` (folding, loss counting).
    requests: audit::RequestAudit,
}

impl Audit {
    /// A final checkpoint; what the sinks do not take now is delivered after the next start.
    fn shutdown(self) {
        let Self {
            runtime,
            lock,
            log,
            requests,
        } = self;
        // Open aggregation windows end now: their counts are recorded, not lost.
        runtime.block_on(requests.flush(true));
        runtime.block_on(log.shutdown(AUDIT_DRAIN));
        drop(lock);
    }
}

/// Starts the audit log, with the backend's ingest as an extra sink.
fn start_audit(
    settings: AuditSettings,
    ingest_url: Option<&str>,
    identity_key: &IdentityKey,
    registry: &Registry,
) -> Result<Audit, StartError> {
    // The audit log runs its delivery on a small runtime of its own: pingora's
    // runtimes only exist once the server runs, and emits from any runtime reach
    // the spool's writer thread.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("audit-proxy")
        .enable_all()
        .build()?;
    let lock = SpoolLock::acquire(&settings.spool.dir, Duration::from_secs(10))?;
    let mut extra_sinks: Vec<Box<dyn portcullis_audit::Sink>> = Vec::new();
    if let Some(url) = ingest_url {
        let sink =
            audit::IngestSink::new(url, identity_key.clone()).map_err(StartError::IngestSink)?;
        extra_sinks.push(Box::new(sink));
    }
    let log = {
        let _runtime = runtime.enter();
        AuditLog::start_with_sinks(settings, extra_sinks, registry)?
    };
    let requests = audit::RequestAudit::try_new(log.clone(), registry)?;
    runtime.spawn(requests.clone().flush_periodically());
    Ok(Audit {
        runtime,
        lock,
        log,
        requests,
    })
}

/// Loads the bundle, which must pass its own tests before anything serves.
fn load_policy(dir: &Path, time_limit: Duration) -> Result<Arc<Authorizer>, StartError> {
    Authorizer::load_tested(dir, time_limit)
        .map(Arc::new)
        .map_err(|source| StartError::PolicyStart {
            dir: dir.display().to_string(),
            source,
        })
}

/// What the guards, the admin listener and the background service share.
struct Enforcement {
    guards: Guards,
    login_limit: rate_limit::LoginAccountLimit,
    authorizer: Arc<Authorizer>,
    verifier: jwt::JwtVerifier,
    revocations: Arc<revocation::Revocations>,
    identity_key: IdentityKey,
    background: background::Background,
}

/// The guards in request order, with the policy reload target re-reading the
/// per-route modes after every reload.
fn build_enforcement(
    settings: &ProxySettings,
    registry: &Registry,
    audit: &Audit,
    authorizer: Arc<Authorizer>,
    identity_key: IdentityKey,
    reload: &mut portcullis_reload::ReloadService,
) -> Result<Enforcement, StartError> {
    let policy_metrics = policy::PolicyMetrics::try_new(registry)?;
    let modes = Arc::new(ArcSwap::from_pointee(RouteModes::from_bundle(
        &authorizer.current(),
    )));
    reload.add(reloads::policy_target(
        settings.policy_dir.clone(),
        Arc::clone(&authorizer),
        Arc::clone(&modes),
        audit.log.clone(),
    ));
    let verifier = build_verifier(settings, registry, audit)?;
    let rules = Arc::new(ratelimit::Rules::new(
        settings.rate_limits.rules.clone(),
        settings.rate_limits.store.build()?,
        ratelimit::RateLimitMetrics::try_new(registry)?,
    ));
    let (revocations, poller, listener) = build_revocation(settings, registry, &identity_key)?;
    let guards = Guards::in_request_order(
        Arc::clone(&modes),
        rate_limit::ClientLimit {
            rules: Arc::clone(&rules),
        },
        authn::Authenticate {
            verifier: verifier.clone(),
            revocations: Arc::clone(&revocations),
            access_cookie: settings.access_cookie.clone(),
            metrics: authn::AuthnMetrics::try_new(registry)?,
        },
        csrf_guard::CsrfGuard {
            settings: settings.csrf.clone(),
            metrics: csrf_guard::CsrfMetrics::try_new(registry)?,
        },
        rate_limit::SubjectLimit {
            rules: Arc::clone(&rules),
        },
        policy::PolicyGuard {
            authorizer: Arc::clone(&authorizer),
            metrics: policy_metrics,
        },
        rate_limit::ClassLimit {
            rules: Arc::clone(&rules),
        },
    );
    Ok(Enforcement {
        guards,
        login_limit: rate_limit::LoginAccountLimit { rules },
        authorizer,
        background: background::Background {
            verifier: verifier.clone(),
            poller: Mutex::new(poller),
            listener: Mutex::new(listener),
        },
        verifier,
        revocations,
        identity_key,
    })
}

/// The token verifier; key-set changes become audit events.
fn build_verifier(
    settings: &ProxySettings,
    registry: &Registry,
    audit: &Audit,
) -> Result<jwt::JwtVerifier, StartError> {
    let observer: jwt::KeySetObserver = {
        let (log, runtime) = (audit.log.clone(), audit.runtime.handle().clone());
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
    let metrics = jwt::JwtMetrics::try_new(registry)?;
    Ok(jwt::JwtVerifier::new(
        settings.issuers.clone(),
        metrics,
        Some(observer),
    )?)
}

/// The revoked-session set, its feed poller and its channel listener.
#[allow(clippy::type_complexity, reason = "three parts of one wiring step")]
fn build_revocation(
    settings: &ProxySettings,
    registry: &Registry,
    identity_key: &IdentityKey,
) -> Result<
    (
        Arc<revocation::Revocations>,
        Option<revocation::FeedPoller>,
        Option<revocation::PubSubListener>,
    ),
    StartError,
> {
    let metrics =
        revocation::RevocationMetrics::try_new(registry, settings.revocation_pubsub.is_some())?;
    let revocations = Arc::new(revocation::Revocations::default());
    let wake = Arc::new(tokio::sync::Notify::new());
    let listener = match (&settings.revocation_pubsub, metrics.pubsub_up.clone()) {
        (Some(RevocationChannel { client, channel }), Some(up)) => {
            Some(revocation::PubSubListener {
                client: client.clone(),
                channel: channel.clone(),
                wake: Arc::clone(&wake),
                up,
            })
        }
        _ => None,
    };
    let poller = settings
        .revocation_feed_url
        .as_ref()
        .map(|url| revocation::FeedPoller {
            url: url.clone(),
            interval: settings.revocation_poll,
            key: identity_key.clone(),
            revocations: Arc::clone(&revocations),
            errors: metrics.feed_errors.clone(),
            wake,
        });
    Ok((revocations, poller, listener))
}

/// The pingora server with its services, and the drain's grace period.
struct ProxyServer {
    server: Server,
    grace: Duration,
    https_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    admin_addr: SocketAddr,
}

impl ProxyServer {
    fn run(self, args: RunArgs) {
        let Self {
            server,
            https_addr,
            http_addr,
            admin_addr,
            ..
        } = self;
        tracing::info!(%https_addr, ?http_addr, %admin_addr, "proxy starting");
        server.run(args);
    }
}

/// The serving certificate, reloaded when its files change (see `tls`).
fn open_certificate(
    source: &settings::TlsSource,
    metrics: &metrics::Metrics,
    reload: &mut portcullis_reload::ReloadService,
) -> Result<tls::CertStore, StartError> {
    let (store, note) = tls::CertStore::open(source, metrics)?;
    if let Some(note) = note {
        tracing::warn!("{note}");
    }
    reload.add(store.reload_target(metrics.clone()));
    Ok(store)
}

/// The HTTPS listener: plain TCP into [`listener::TlsFront`], which runs the TLS
/// handshake on our rustls configuration (resumption, deadline, connection cap) and
/// hands the stream to pingora's HTTP/1.1 and h2 server around the gateway.
fn https_services(
    server: &Server,
    gateway: gateway::Gateway,
    addr: SocketAddr,
    certificate: tls::CertStore,
    workers: usize,
    limits: settings::Limits,
    refused: prometheus::IntCounterVec,
) -> Result<Vec<Service<listener::TlsFront>>, StartError> {
    // A clear error for a taken port, and for another instance already serving it
    // (SO_REUSEPORT below would otherwise let both share it): this probe binds
    // without that option, which fails while anyone listens on the address.
    probe_listen(addr)?;
    let mut proxy = pingora::proxy::http_proxy(&server.configuration, gateway);
    let mut h2 = pingora::protocols::http::v2::server::default_h2_options();
    h2.max_concurrent_streams(limits.h2_max_concurrent_streams);
    h2.max_header_list_size(limits.h2_max_header_list_bytes);
    proxy.h2_options = Some(h2);
    let tls = tls::server_config(certificate)?;
    // One single-threaded service per worker, each with its own listening socket on
    // the same address (SO_REUSEPORT: the kernel spreads new connections over them).
    // Everything a connection does then happens on the thread that accepted it.
    // pingora's own multi-thread service (no work stealing) accepts on one thread and
    // runs each connection on a random one, so every readiness event of the socket
    // was a wake-up sent across threads; and it parks each pooled upstream connection
    // in a watch task on a random thread, which also raced its reuse ("failed to
    // acquire reusable stream", then a new connection). BENCHMARKS.md has the A/B.
    let mut options = TcpSocketOptions::default();
    options.so_reuseport = Some(workers > 1);
    let services = listener::TlsFront::per_worker(workers, tls, proxy, &limits, refused)
        .into_iter()
        .enumerate()
        .map(|(i, front)| {
            let mut https = Service::new(format!("portcullis https {i}"), front);
            https.add_listener(
                ListenerConfig::tcp(worker_listen_address(addr, i))
                    .tcp_socket_options(options.clone())
                    .l4_buffer(https_buffers()),
            );
            https.threads = Some(1);
            https
        })
        .collect();
    Ok(services)
}

/// The HTTPS address as worker `worker` writes it, so that pingora gives it a
/// listening socket of its own.
///
/// pingora keys listening sockets by the address as written (its table for handing
/// sockets over to a new process on upgrade) and gives every service that writes the
/// same address the same file descriptor, which each of them then closes at shutdown.
/// Each worker needs a socket of its own (SO_REUSEPORT), so worker `i` writes the port
/// with `i` leading zeros: the same address to the parser, another key in that table.
fn worker_listen_address(addr: SocketAddr, worker: usize) -> String {
    let zeros = "0".repeat(worker);
    match addr {
        SocketAddr::V4(a) => format!("{}:{zeros}{}", a.ip(), a.port()),
        SocketAddr::V6(a) if a.scope_id() != 0 => {
            format!("[{}%{}]:{zeros}{}", a.ip(), a.scope_id(), a.port())
        }
        SocketAddr::V6(a) => format!("[{}]:{zeros}{}", a.ip(), a.port()),
    }
}

/// Binds `addr` and lets it go again: a taken address is a clear start-up error here,
/// not a panic inside pingora's service once the server runs.
fn probe_listen(addr: SocketAddr) -> Result<(), StartError> {
    std::net::TcpListener::bind(addr)
        .map(drop)
        .map_err(|e| StartError::Listen(addr, e))
}

/// The TCP buffers under each HTTPS connection's TLS: none.
///
/// pingora's defaults are a 64 KiB read buffer (allocated and zeroed for every
/// connection, idle ones too) and a 1460-byte write buffer. rustls reads whole
/// records into its own buffer, so a read buffer below it only adds a copy. Writes are
/// gathered above TLS instead ([`head_deadline::COALESCE`]): a response's head and
/// small body become one record and one `sendto`, and the buffer exists only while a
/// response is being written. (h2 connections have the h2 crate's own write buffer.)
fn https_buffers() -> L4BufferSettings {
    L4BufferSettings::unbuffered()
}

/// The certificate, then the HTTPS, redirect, admin and background services
/// on one pingora server.
fn build_server(
    settings: ProxySettings,
    registry: &Registry,
    audit: &audit::RequestAudit,
    enforcement: Enforcement,
    drain: &Arc<drain::Drain>,
    reload: &mut portcullis_reload::ReloadService,
) -> Result<ProxyServer, StartError> {
    let metrics = metrics::Metrics::try_new(registry)?.with_routes(
        settings.routes.iter().map(|r| r.name.as_str()),
        &context::ROUTELESS_LABELS,
    );
    let certificate = open_certificate(&settings.tls, &metrics, reload)?;
    let conf = ServerConf {
        threads: settings.worker_threads,
        // Each connection stays on the thread that accepted it: no cross-thread
        // wake-ups per request (work stealing cost more in scheduler time than it
        // balanced; BENCHMARKS.md has the A/B).
        work_stealing: false,
        // Draining is ours (see `drain`): once in-flight requests are done,
        // pingora stops its services (accept loops end, HTTP/2 connections get
        // GOAWAY) and gives the connections one second to write out the last
        // responses before the runtimes, and every task on them, are dropped.
        // Without it an answer completed just before the drain ended could be
        // lost in a connection's send buffer.
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None::<Opt>, conf);
    server.bootstrap();

    let mut upstreams: Vec<(String, SocketAddr)> = settings
        .routes
        .iter()
        .map(|r| (r.upstream.name.clone(), r.upstream.address))
        .collect();
    upstreams.sort();
    upstreams.dedup();
    let Enforcement {
        guards,
        login_limit,
        authorizer,
        verifier,
        revocations,
        identity_key,
        background,
    } = enforcement;
    let ProxySettings {
        https_addr,
        http_addr,
        admin_addr,
        redirect_https_port,
        redirect_hosts,
        trusted_proxies,
        shutdown_grace,
        routes,
        headers,
        csp_report_max_body_bytes,
        revocation_feed_url,
        limits,
        worker_threads: workers,
        ..
    } = settings;

    let gateway = gateway::Gateway {
        routes,
        headers: headers.clone(),
        trusted: trusted_proxies,
        metrics: metrics.clone(),
        drain: Arc::clone(drain),
        csp_report_max_body_bytes,
        guards,
        login_limit,
        identity_key,
        audit: audit.clone(),
        keepalive_idle_seconds: limits.keepalive_idle.as_secs(),
        max_request_headers: limits.max_request_headers,
    };
    let refused = metrics.connections_refused.clone();
    let redirect_certificate = certificate.clone();
    for https in https_services(
        &server,
        gateway,
        https_addr,
        certificate,
        workers,
        limits,
        refused,
    )? {
        server.add_service(https);
    }

    if let Some(addr) = http_addr {
        let mut redirect = Service::new(
            "portcullis http redirect".to_owned(),
            redirect::RedirectApp {
                https_port: redirect_https_port,
                headers,
                hosts: if redirect_hosts.is_empty() {
                    redirect::RedirectHosts::Certificate {
                        store: redirect_certificate,
                        listener: (!https_addr.ip().is_unspecified()).then(|| match https_addr {
                            SocketAddr::V4(a) => a.ip().to_string(),
                            SocketAddr::V6(a) => format!("[{}]", a.ip()),
                        }),
                    }
                } else {
                    redirect::RedirectHosts::Configured(redirect_hosts)
                },
            },
        );
        probe_listen(addr)?;
        redirect.add_tcp(&addr.to_string());
        // One thread is plenty for redirects and admin requests; the cores are the
        // HTTPS listener's.
        redirect.threads = Some(1);
        server.add_service(redirect);
    }

    let mut admin = Service::new(
        "portcullis admin".to_owned(),
        admin::AdminApp {
            metrics,
            drain: Arc::clone(drain),
            upstreams,
            authorizer,
            verifier,
            revocations,
            revocation_feed: revocation_feed_url.is_some(),
        },
    );
    probe_listen(admin_addr)?;
    admin.add_tcp(&admin_addr.to_string());
    admin.threads = Some(1);
    server.add_service(admin);
    server.add_service(background_service("enforcement", background));

    Ok(ProxyServer {
        server,
        grace: shutdown_grace,
        https_addr,
        http_addr,
        admin_addr,
    })
}

/// What the fuzz targets in `fuzz/` call that is not public otherwise. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    use std::net::IpAddr;
    use std::sync::Arc;

    use portcullis_authz::PolicyInput as _;

    pub use crate::csp_report::{ReportError, Violation, parse as parse_csp_report};
    pub use crate::guards::rate_limit::login_account;

    /// The policy input the policy guard builds for a request on no route, from a caller
    /// verified with `principal` (`via_cookie` says how the credential came) or anonymous,
    /// and the decision `authorizer` gives the request (`data.portcullis.http.decision`)
    /// the way the guard asks for it: through the decision cache, whose key is written
    /// straight from the request's fields.
    pub fn policy_input(
        authorizer: &portcullis_authz::Authorizer,
        method: &http::Method,
        path: &str,
        query: Option<&str>,
        headers: &http::HeaderMap,
        client_ip: Option<IpAddr>,
        principal: Option<(crate::jwt::VerifiedToken, bool)>,
    ) -> (serde_json::Value, portcullis_authz::Decision) {
        let drain = Arc::new(crate::drain::Drain::default());
        let mut ctx = crate::context::RequestCtx::new(drain.enter());
        ctx.client_ip = client_ip;
        ctx.principal = principal.map(|(token, via_cookie)| crate::context::Principal {
            token: Arc::new(token),
            via_cookie,
        });
        let facts = crate::context::RequestFacts {
            method,
            path,
            query,
            headers,
            host: None,
        };
        let input = crate::guards::policy::HttpInput::new(&facts, &ctx);
        let decision = authorizer.decide(crate::guards::policy::HTTP_DECISION, &input);
        (input.document().into_owned(), decision)
    }
}

#[cfg(test)]
mod tests {
    use super::worker_listen_address;
    use std::net::SocketAddr;

    #[test]
    fn each_worker_writes_the_same_address_differently() {
        for addr in [
            "127.0.0.1:8443",
            "0.0.0.0:443",
            "[::1]:8443",
            "[fe80::1%2]:8443",
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            let written: Vec<String> = (0..4).map(|i| worker_listen_address(addr, i)).collect();
            assert_eq!(written[0], addr.to_string());
            for w in &written {
                assert_eq!(w.parse::<SocketAddr>().unwrap(), addr, "{w}");
            }
            let mut distinct = written.clone();
            distinct.sort();
            distinct.dedup();
            assert_eq!(distinct.len(), written.len(), "{written:?}");
        }
    }
}
