//! A recording upstream: every request that reaches it is kept (method, target,
//! headers, body or the error reading it), so a test can assert what got through the
//! proxy, not only what the client was answered.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    /// Lower-case names, every value in order.
    pub headers: BTreeMap<String, Vec<String>>,
    /// The body, or why it could not be read whole.
    pub body: Result<Vec<u8>, String>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| v.first())
            .map(String::as_str)
    }
}

/// The upstream's record, shared with the test.
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<Recorded>>>);

impl Recorder {
    /// Takes everything recorded so far.
    pub fn take(&self) -> Vec<Recorded> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

async fn record(State(rec): State<Recorder>, req: Request) -> &'static str {
    let (parts, body) = req.into_parts();
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in &parts.headers {
        headers
            .entry(k.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .map(|b| b.to_vec())
        .map_err(|e| e.to_string());
    rec.0.lock().unwrap().push(Recorded {
        method: parts.method.to_string(),
        target: parts.uri.to_string(),
        headers,
        body,
    });
    "recorded"
}

/// Starts a recording upstream on an ephemeral port.
pub async fn start() -> (SocketAddr, Recorder) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let rec = Recorder::default();
    let app = Router::new().fallback(record).with_state(rec.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, rec)
}
