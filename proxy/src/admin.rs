//! The admin listener (loopback by default): `/metrics`, `/health/live`,
//! `/health/ready`. Ready means: configuration and certificate loaded (true
//! once serving), not draining, and every upstream accepting connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{HeaderValue, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use portcullis_authz::Authorizer;

use crate::drain::Drain;
use crate::jwt::JwtVerifier;
use crate::metrics::Metrics;
use crate::revocation::Revocations;

/// How long a readiness probe waits for each upstream.
const UPSTREAM_PROBE_TIMEOUT: Duration = Duration::from_millis(500);

pub struct AdminApp {
    pub metrics: Metrics,
    pub drain: Arc<Drain>,
    /// Distinct upstream addresses, by name.
    pub upstreams: Vec<(String, SocketAddr)>,
    pub authorizer: Arc<Authorizer>,
    pub verifier: JwtVerifier,
    pub revocations: Arc<Revocations>,
    /// Whether a revocation feed is configured (then it must have synced).
    pub revocation_feed: bool,
}

fn reply(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    h.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let len = resp.body().len();
    resp.headers_mut()
        .insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

impl AdminApp {
    async fn ready(&self) -> Response<Vec<u8>> {
        let mut checks = serde_json::Map::new();
        let mut ok = !self.drain.is_draining();
        checks.insert("config".into(), json!("ok"));
        checks.insert("certificate".into(), json!("ok"));
        checks.insert("draining".into(), json!(self.drain.is_draining()));
        checks.insert("policy".into(), json!(self.authorizer.current().digest()));
        let keys = self.verifier.keys_loaded();
        ok &= keys;
        checks.insert("jwks".into(), json!(if keys { "ok" } else { "not_loaded" }));
        if self.revocation_feed {
            let synced = self.revocations.synced();
            ok &= synced;
            checks.insert(
                "revocation_feed".into(),
                json!(if synced { "ok" } else { "not_synced" }),
            );
        }
        for (name, addr) in &self.upstreams {
            let up = matches!(
                tokio::time::timeout(UPSTREAM_PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr))
                    .await,
                Ok(Ok(_))
            );
            ok &= up;
            checks.insert(
                format!("upstream:{name}"),
                json!(if up { "ok" } else { "unreachable" }),
            );
        }
        let body = json!({ "status": if ok { "ready" } else { "not_ready" }, "checks": checks });
        let status = if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        reply(status, "application/json", body.to_string().into_bytes())
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        if req.method != http::Method::GET && req.method != http::Method::HEAD {
            return reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                b"GET only\n".to_vec(),
            );
        }
        match req.uri.path() {
            "/metrics" => reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics.render(),
            ),
            "/health/live" => reply(
                StatusCode::OK,
                "application/json",
                br#"{"status":"live"}"#.to_vec(),
            ),
            "/health/ready" => self.ready().await,
            _ => reply(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
        }
    }
}
