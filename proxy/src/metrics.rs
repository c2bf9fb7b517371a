//! The gateway's Prometheus metrics (requests, rejections, CSP violations,
//! certificate) and the rendering of `/metrics`. Labels are route names,
//! methods from a fixed set, status classes and reason codes: never raw paths
//! or user data. Every module registers its own metrics (`*Metrics::try_new`)
//! in the one registry the proxy creates at start.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// The gateway's metrics, and the proxy's registry they are registered in.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
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
            rejections,
            csp_violations,
            tls_not_after,
            in_flight,
            connections_refused,
            upstream_errors,
        })
    }

    /// Exports the per-route counters at zero for each configured route.
    pub fn init_routes<'a>(&self, routes: impl IntoIterator<Item = &'a str>) {
        for route in routes {
            for kind in UPSTREAM_ERROR_KINDS {
                self.upstream_errors.with_label_values(&[route, kind]);
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

/// A bounded method label.
pub fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// `2xx`, `4xx`, … ; `0` when no response was sent.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "none",
    }
}
