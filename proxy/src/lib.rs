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

use std::sync::Arc;
use std::time::Duration;

use pingora::listeners::tls::TlsSettings;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::listening::Service;
use thiserror::Error;

pub use config::{ProxyConfig, ProxySettings};
pub use headers::CspMode;
pub use tls::{TlsError, crypto_provider, ensure_self_signed};

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
    } = settings;
    let metrics = metrics::Metrics::try_new()?;
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
        },
    );
    admin.add_tcp(&admin_addr.to_string());
    server.add_service(admin);

    tracing::info!(%https_addr, ?http_addr, %admin_addr, "proxy starting");
    server.run(RunArgs {
        shutdown_signal: Box::new(drain::DrainingSignals {
            drain,
            grace: shutdown_grace,
        }),
    });
    Ok(())
}
