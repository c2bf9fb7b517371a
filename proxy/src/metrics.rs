//! The gateway's Prometheus metrics (requests, rejections, CSP violations,
//! certificate) and the rendering of `/metrics`. Labels are route names,
//! methods from a fixed set, status classes and reason codes: never raw paths
//! or user data. Every module registers its own metrics (`*Metrics::try_new`)
//! in the one registry the proxy creates at start.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// The gateway's metrics, and the proxy's registry they are registered in.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    /// The request series of each route label known at start ([`Metrics::with_routes`]).
    routes: Arc<HashMap<Box<str>, RouteSeries>>,
    pub rejections: IntCounterVec,
    pub csp_violations: IntCounterVec,
    pub tls_not_after: IntGauge,
    pub in_flight: IntGauge,
    pub connections_refused: IntCounterVec,
    /// `portcullis_upstream_errors_total{route,kind}`.
    pub upstream_errors: IntCounterVec,
}

/// The `kind` label of an upstream error.
pub const UPSTREAM_ERROR_KINDS: [&str; 5] = ["connect", "timeout", "read", "write", "other"];

/// What went wrong talking to an upstream, as the `kind` label says it.
pub fn upstream_error_kind(etype: &pingora::ErrorType) -> &'static str {
    use pingora::ErrorType as E;
    match etype {
        E::ConnectTimedout | E::ReadTimedout | E::WriteTimedout => "timeout",
        E::ConnectRefused
        | E::ConnectNoRoute
        | E::ConnectError
        | E::BindError
        | E::SocketError
        | E::TLSHandshakeFailure
        | E::TLSHandshakeTimedout => "connect",
        E::ReadError | E::InvalidHTTPHeader | E::H1Error | E::H2Error | E::ConnectionClosed => {
            "read"
        }
        E::WriteError => "write",
        _ => "other",
    }
}

/// Latency buckets in seconds, from 0.5 ms to 10 s.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Metrics {
    /// Creates the metrics and registers them in `registry`, which `/metrics`
    /// renders. Fails only on a programming error (a duplicate or malformed
    /// metric name).
    pub fn try_new(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "portcullis_http_requests_total",
                "HTTPS requests answered, by route, method and status class.",
            ),
            &["route", "method", "status_class"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "portcullis_http_request_duration_seconds",
                "Time from request header to the end of the response, by route, method and status class.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["route", "method", "status_class"],
        )?;
        let rejections = IntCounterVec::new(
            Opts::new(
                "portcullis_http_rejections_total",
                "Requests the proxy refused before routing, by reason.",
            ),
            &["reason"],
        )?;
        let csp_violations = IntCounterVec::new(
            Opts::new(
                "portcullis_csp_violations_total",
                "CSP violation reports received, by directive, route and disposition (enforce: blocked; report: report-only).",
            ),
            &["directive", "route", "disposition"],
        )?;
        let tls_not_after = IntGauge::new(
            "portcullis_tls_certificate_expiry_timestamp_seconds",
            "Expiry (notAfter) of the serving certificate, as a Unix timestamp.",
        )?;
        let in_flight = IntGauge::new(
            "portcullis_http_requests_in_flight",
            "HTTPS requests being processed.",
        )?;
        let connections_refused = IntCounterVec::new(
            Opts::new(
                "portcullis_connections_refused_total",
                "HTTPS connections closed by the proxy: connection limit reached, TLS handshake failed or too slow, a request head too slow.",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(connections_refused.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(rejections.clone()))?;
        registry.register(Box::new(csp_violations.clone()))?;
        registry.register(Box::new(tls_not_after.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "portcullis_upstream_errors_total",
                "Requests that failed talking to their upstream, by route and kind (connect, timeout, read, write, other).",
            ),
            &["route", "kind"],
        )?;
        registry.register(Box::new(upstream_errors.clone()))?;
        Ok(Self {
            registry: registry.clone(),
            requests,
            request_duration,
            routes: Arc::default(),
            rejections,
            csp_violations,
            tls_not_after,
            in_flight,
            connections_refused,
            upstream_errors,
        })
    }

    /// Exports the per-route counters at zero for each configured route, and keeps a
    /// table of request series for them and for `extra` (labels of requests without a
    /// route). Called once, before the metrics are cloned into the gateway: clones share
    /// the table made here.
    pub fn with_routes<'a>(
        mut self,
        routes: impl IntoIterator<Item = &'a str>,
        extra: &[&str],
    ) -> Self {
        let mut table = HashMap::new();
        for route in routes {
            for kind in UPSTREAM_ERROR_KINDS {
                self.upstream_errors.with_label_values(&[route, kind]);
            }
            table.insert(route.into(), RouteSeries::default());
        }
        for label in extra {
            table.insert((*label).into(), RouteSeries::default());
        }
        self.routes = Arc::new(table);
        self
    }

    /// Counts one answered request and its duration
    /// (`portcullis_http_requests_total`, `portcullis_http_request_duration_seconds`).
    pub fn record_request(&self, route: &str, method: &http::Method, status: u16, took: Duration) {
        let (m, c) = (method_index(method), class_index(status));
        let labels = [route, METHOD_LABELS[m], CLASS_LABELS[c]];
        let resolve = || {
            (
                self.requests.with_label_values(&labels),
                self.request_duration.with_label_values(&labels),
            )
        };
        let seconds = took.as_secs_f64();
        match self.routes.get(route) {
            Some(series) => {
                let (count, duration) = series.cells[m][c].get_or_init(resolve);
                count.inc();
                duration.observe(seconds);
            }
            None => {
                let (count, duration) = resolve();
                count.inc();
                duration.observe(seconds);
            }
        }
    }

    /// Every metric of the proxy's registry (the backend serves its own), in
    /// Prometheus text format.
    pub fn render(&self) -> Vec<u8> {
        let families = self.registry.gather();
        let mut buf = Vec::new();
        // Encoding well-formed families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&families, &mut buf);
        buf
    }
}

/// The bounded `method` labels; [`method_index`] picks one.
const METHOD_LABELS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "OTHER",
];

fn method_index(method: &http::Method) -> usize {
    match *method {
        http::Method::GET => 0,
        http::Method::HEAD => 1,
        http::Method::POST => 2,
        http::Method::PUT => 3,
        http::Method::PATCH => 4,
        http::Method::DELETE => 5,
        http::Method::OPTIONS => 6,
        _ => 7,
    }
}

/// The `status_class` labels: `2xx`, `4xx`, …, and `none` when no response was sent;
/// [`class_index`] picks one.
const CLASS_LABELS: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

fn class_index(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100 - 1),
        _ => 5,
    }
}

/// One route label's request series, one per method and status class, each taken
/// from the vectors on first use and kept. `with_label_values` hashes the labels,
/// takes the vector's lock and clones the series (a reference count): memory that
/// every worker thread writes, twice per request. A kept series costs a lookup of the
/// route name in a table no one writes after start, and its own update.
#[derive(Default)]
struct RouteSeries {
    cells: [[OnceLock<(IntCounter, Histogram)>; CLASS_LABELS.len()]; METHOD_LABELS.len()],
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the series `name` with `labels` in `/metrics`' text, if exported.
    fn sample(metrics: &Metrics, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        let text = String::from_utf8(metrics.render()).unwrap();
        text.lines().find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{')?;
            let found = metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            found.then(|| value.parse().unwrap())
        })
    }

    #[test]
    fn requests_are_counted_under_their_labels_with_or_without_a_kept_series() {
        let registry = Registry::new();
        let metrics = Metrics::try_new(&registry)
            .unwrap()
            .with_routes(["api"], &["none"]);
        let ms = Duration::from_millis(1);
        for _ in 0..3 {
            metrics.record_request("api", &http::Method::GET, 200, ms);
        }
        metrics.record_request(
            "api",
            &http::Method::from_bytes(b"PROPFIND").unwrap(),
            404,
            ms,
        );
        metrics.record_request("none", &http::Method::DELETE, 0, ms);
        // A label the table does not know still counts (through the vector).
        metrics.record_request("unlisted", &http::Method::POST, 503, ms);
        metrics.record_request("unlisted", &http::Method::POST, 503, ms);
        let counted = |route, method, class| {
            let labels = [
                ("route", route),
                ("method", method),
                ("status_class", class),
            ];
            (
                sample(&metrics, "portcullis_http_requests_total", &labels),
                sample(
                    &metrics,
                    "portcullis_http_request_duration_seconds_count",
                    &labels,
                ),
            )
        };
        assert_eq!(counted("api", "GET", "2xx"), (Some(3), Some(3)));
        assert_eq!(counted("api", "OTHER", "4xx"), (Some(1), Some(1)));
        assert_eq!(counted("none", "DELETE", "none"), (Some(1), Some(1)));
        assert_eq!(counted("unlisted", "POST", "5xx"), (Some(2), Some(2)));
        assert_eq!(counted("api", "POST", "2xx"), (None, None));
    }

    #[test]
    fn status_classes_and_methods_stay_bounded() {
        let class = |status| CLASS_LABELS[class_index(status)];
        assert_eq!(class(0), "none");
        assert_eq!(class(99), "none");
        assert_eq!(class(100), "1xx");
        assert_eq!(class(204), "2xx");
        assert_eq!(class(399), "3xx");
        assert_eq!(class(451), "4xx");
        assert_eq!(class(599), "5xx");
        assert_eq!(class(600), "none");
        assert_eq!(class(u16::MAX), "none");
        let method = |m: &[u8]| METHOD_LABELS[method_index(&http::Method::from_bytes(m).unwrap())];
        assert_eq!(method(b"GET"), "GET");
        assert_eq!(method(b"OPTIONS"), "OPTIONS");
        assert_eq!(method(b"TRACE"), "OTHER");
        assert_eq!(method(b"get"), "OTHER");
    }
}
