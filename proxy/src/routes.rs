//! The route table: which upstream and which CSP a normalised path gets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::headers::CspHeader;

/// One upstream, parsed.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    pub address: SocketAddr,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
}

/// One route, validated.
#[derive(Debug, Clone)]
pub struct Route {
    /// The `route` label in metrics and audit events.
    pub name: String,
    /// Normalised prefix without trailing slash (`/` matches everything).
    pub prefix: String,
    pub upstream: Upstream,
    pub csp: CspHeader,
    /// Largest request body forwarded (`None`: no limit of the proxy's own).
    pub max_body_bytes: Option<u64>,
}

impl Route {
    /// Prefix match at a segment boundary, ignoring ASCII case so that
    /// `/ADMIN` is classified as the admin route (and so meets its policy)
    /// rather than falling through to a catch-all.
    fn matches(&self, path: &str) -> bool {
        if self.prefix == "/" {
            return true;
        }
        let n = self.prefix.len();
        path.len() >= n
            && path.as_bytes()[..n].eq_ignore_ascii_case(self.prefix.as_bytes())
            && (path.len() == n || path.as_bytes()[n] == b'/')
    }
}

/// Routes ordered for longest-prefix matching.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    pub fn new(mut routes: Vec<Route>) -> Self {
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Self {
            routes: routes.into_iter().map(Arc::new).collect(),
        }
    }

    /// The most specific route for a normalised path.
    pub fn find(&self, path: &str) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| r.matches(path))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.iter()
    }
}
