//! A test upstream in the test process: echoes what it received as JSON, and
//! has a slow endpoint for shutdown tests.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::response::IntoResponse;

async fn echo(req: Request) -> impl IntoResponse {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in req.headers() {
        headers
            .entry(k.as_str().to_owned())
            .or_default()
            .push(v.to_str().unwrap_or("<binary>").to_owned());
    }
    if req.uri().path() == "/slow" {
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let body = serde_json::json!({
        "method": req.method().as_str(),
        "target": req.uri().to_string(),
        "headers": headers,
    });
    (
        [
            ("content-type", "application/json"),
            ("server", "echo/1.0"),
            ("x-powered-by", "axum"),
        ],
        body.to_string(),
    )
}

/// Starts the echo upstream on an ephemeral port.
pub async fn start_echo() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, Router::new().fallback(echo)).await;
    });
    addr
}
