//! Per-request context set by [`request_id_layer`]: the request id (from the proxy's
//! `X-Request-Id`, or a fresh UUIDv7) for problem documents, logs and audit events, and
//! what the proxy established about the client ([`RequestMeta`]).

use std::net::IpAddr;

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use portcullis_contract::headers::{CLIENT_IP_HEADER, REQUEST_ID_HEADER, valid_request_id};

tokio::task_local! {
    /// The request id of the request being handled (set by middleware).
    pub static REQUEST_ID: String;
}

/// What the request being handled says about its client, for every event it causes
/// (set by [`request_id_layer`]).
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    /// `X-Portcullis-Client-Ip`, as the proxy established it.
    pub source_ip: Option<IpAddr>,
    /// `User-Agent`.
    pub user_agent: Option<String>,
}

tokio::task_local! {
    /// The client of the request being handled.
    pub static REQUEST_META: RequestMeta;
}

/// The id of the request being handled, or empty outside a request.
pub fn current_request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// Sets the request id (from the proxy's `X-Request-Id`) for problem
/// documents and echoes it on the response.
pub async fn request_id_layer(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| valid_request_id(s))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    let meta = RequestMeta {
        // Set by the proxy from its trusted-proxy logic (inbound copies are stripped).
        source_ip: req
            .headers()
            .get(CLIENT_IP_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok()),
        user_agent: req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    };
    let mut resp = REQUEST_ID
        .scope(id.clone(), REQUEST_META.scope(meta, next.run(req)))
        .await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    resp
}
