//! `upstream_peer` and `upstream_request_filter`: the route's upstream, and
//! the forwarded request: the canonical path, no hop-by-hop headers, `X-Forwarded-*`,
//! the request
//! id, the client address, and for a request the guards passed, the decision
//! id and the verified identity signed for this exact request line.

use http::HeaderValue;
use pingora::http::RequestHeader;
use pingora::prelude::HttpPeer;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};
use portcullis_contract::headers::{CLIENT_IP_HEADER, DECISION_ID_HEADER, REQUEST_ID_HEADER};
use portcullis_contract::identity::{IDENTITY_HEADER, Identity, SIGNATURE_HEADER};

use super::service::{Gateway, peer_ip};
use crate::context::RequestCtx;

/// One upstream connection pool per worker thread.
///
/// Each worker thread runs a runtime of its own (no work stealing), and a socket's
/// readiness is driven by the runtime that opened it. A pooled connection reused on
/// another thread made every read and write of that exchange a wake-up of the opening
/// thread and a hop back: with one pool per thread the bench's full pipeline needed a
/// third less CPU per request (BENCHMARKS.md). pingora keys its pool on `group_key`.
fn worker_pool_key() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static KEY: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    KEY.with(|k| *k)
}

impl Gateway {
    pub(super) fn peer_for(&self, ctx: &RequestCtx) -> Result<Box<HttpPeer>> {
        let Some(route) = ctx.route.as_ref() else {
            return Error::e_explain(ErrorType::InternalError, "no route chosen");
        };
        let up = &route.upstream;
        let mut peer = HttpPeer::new(up.address, false, String::new());
        peer.options.connection_timeout = Some(up.connect_timeout);
        peer.options.total_connection_timeout = Some(up.connect_timeout);
        peer.options.read_timeout = Some(up.read_timeout);
        peer.options.write_timeout = Some(up.read_timeout);
        peer.group_key = worker_pool_key();
        Ok(Box::new(peer))
    }

    pub(super) fn filter_upstream_request(
        &self,
        session: &Session,
        upstream: &mut RequestHeader,
        ctx: &RequestCtx,
    ) -> Result<()> {
        let Some(path) = ctx.path.as_ref() else {
            return Error::e_explain(ErrorType::InternalError, "no normalised path");
        };
        // Forward exactly the spelling that was routed on.
        let raw = session.req_header().raw_path();
        let query = raw.iter().position(|b| *b == b'?').map(|i| &raw[i..]);
        let mut target = Vec::with_capacity(path.encoded().len() + query.map_or(0, <[u8]>::len));
        target.extend_from_slice(path.encoded().as_bytes());
        if let Some(q) = query {
            target.extend_from_slice(q);
        }
        upstream.set_raw_path(&target)?;
        for name in crate::framing::hop_by_hop(&upstream.headers) {
            upstream.remove_header(&name);
        }
        // The client address as the trusted-proxy logic established it, written once:
        // the end of `X-Forwarded-For`, and the backend's sign-in throttling key
        // (inbound copies were stripped).
        let client = ctx.client_ip.map(|ip| ip.to_string());
        forwarded_headers(session, upstream, ctx, client.as_deref())?;
        upstream.insert_header(REQUEST_ID_HEADER, ctx.request_id.as_str())?;
        if let Some(client) = client {
            upstream.insert_header(CLIENT_IP_HEADER, client)?;
        }
        if ctx.passed {
            if let Some(decision_id) = ctx.decision_id.as_deref() {
                upstream.insert_header(DECISION_ID_HEADER, decision_id)?;
            }
            if let Some(p) = &ctx.principal {
                // The verified identity, bound to this exact request line.
                let identity = Identity {
                    sub: p.token.sub.clone(),
                    session_id: p.token.sid.clone(),
                    auth_method: Some(p.auth_method().to_owned()),
                    decision_id: ctx.decision_id.clone(),
                    iat: time::OffsetDateTime::now_utc().unix_timestamp(),
                    issuer: Some(p.token.issuer.clone()),
                };
                let target = String::from_utf8_lossy(&target);
                let (id, sig) =
                    self.identity_key
                        .sign(upstream.method.as_str(), &target, &identity);
                upstream.insert_header(IDENTITY_HEADER, id)?;
                upstream.insert_header(SIGNATURE_HEADER, sig)?;
            }
        }
        Ok(())
    }
}

/// `X-Forwarded-For` (a trusted peer's chain extended, else the client),
/// `X-Forwarded-Proto`, `Host` and `X-Forwarded-Host`; `Forwarded` dropped.
fn forwarded_headers(
    session: &Session,
    upstream: &mut RequestHeader,
    ctx: &RequestCtx,
    client: Option<&str>,
) -> Result<()> {
    let xff = match upstream
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
    {
        Some(prior) if ctx.peer_trusted => {
            let peer = peer_ip(session)
                .map(|ip| ip.to_string())
                .unwrap_or_default();
            format!("{prior}, {peer}")
        }
        _ => client.unwrap_or_default().to_owned(),
    };
    upstream.insert_header("x-forwarded-for", xff)?;
    upstream.insert_header("x-forwarded-proto", "https")?;
    let host = session
        .req_header()
        .headers
        .get(http::header::HOST)
        .cloned()
        .or_else(|| {
            session
                .req_header()
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
    if let Some(host) = host {
        if upstream.headers.get(http::header::HOST).is_none() {
            upstream.insert_header(http::header::HOST, host.clone())?;
        }
        if !ctx.peer_trusted || upstream.headers.get("x-forwarded-host").is_none() {
            upstream.insert_header("x-forwarded-host", host)?;
        }
    }
    upstream.remove_header("forwarded");
    Ok(())
}
