//! Request timings per route: [`Timings`] keeps the latest durations of each
//! (method, route template) in a ring and feeds the histogram
//! `portcullis_backend_request_duration_seconds{route,method,status_class}`;
//! `GET /monitoring/performance` answers the percentiles of each ring.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use axum::Json;
use axum::extract::State;
use prometheus::{HistogramOpts, HistogramVec, Registry};
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::http::policy::require_operator;
use crate::http::{ApiError, Caller};

/// Durations kept per (method, route): the percentiles are over the latest ones.
pub const RING_REQUESTS: usize = 1024;
/// Most (method, route) pairs tracked; route templates are finite, this only guards
/// against a mistake turning raw paths into keys.
const MAX_ROUTES: usize = 512;
/// The key every request past [`MAX_ROUTES`] shares.
const OVERFLOW_ROUTE: &str = "other";

struct Ring {
    durations: VecDeque<f64>,
    total: u64,
}

/// Per-route timing rings and the duration histogram.
pub struct Timings {
    rings: Mutex<HashMap<(String, String), Ring>>,
    histogram: HistogramVec,
}

/// The latency of one route over its latest requests.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoutePerformance {
    /// HTTP method.
    pub method: String,
    /// The route template (`/api/tickets/{id}`), `unmatched` for no route.
    pub route: String,
    /// Requests in the window (at most the ring's size).
    pub window_requests: u64,
    /// Requests since the backend started.
    pub total_requests: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// `GET /monitoring/performance`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Performance {
    /// How many of each route's latest requests the percentiles cover.
    pub ring_requests: u64,
    /// Every route that was called, slowest p95 first.
    pub routes: Vec<RoutePerformance>,
}

/// The `q` quantile (0..=1) of sorted `v` by the nearest-rank method.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn millis(seconds: f64) -> f64 {
    (seconds * 1_000_000.0).round() / 1000.0
}

impl Timings {
    /// Registers the histogram in `registry`.
    pub fn try_new(registry: &Registry) -> prometheus::Result<Self> {
        let histogram = HistogramVec::new(
            HistogramOpts::new(
                "portcullis_backend_request_duration_seconds",
                "Time the backend took to answer a request, by route template, method and status class.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["route", "method", "status_class"],
        )?;
        registry.register(Box::new(histogram.clone()))?;
        Ok(Self {
            rings: Mutex::default(),
            histogram,
        })
    }

    /// Records one answered request.
    pub fn record(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        let mut rings = self
            .rings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut key = (method.to_owned(), route.to_owned());
        if !rings.contains_key(&key) && rings.len() >= MAX_ROUTES {
            key.1 = OVERFLOW_ROUTE.to_owned();
        }
        self.histogram
            .with_label_values(&[key.1.as_str(), method, class])
            .observe(seconds);
        let ring = rings.entry(key).or_insert_with(|| Ring {
            durations: VecDeque::with_capacity(RING_REQUESTS),
            total: 0,
        });
        if ring.durations.len() == RING_REQUESTS {
            ring.durations.pop_front();
        }
        ring.durations.push_back(seconds);
        ring.total += 1;
    }

    /// The percentiles of every ring.
    pub fn snapshot(&self) -> Performance {
        let copies: Vec<((String, String), Vec<f64>, u64)> = {
            let rings = self
                .rings
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            rings
                .iter()
                .map(|(k, r)| (k.clone(), r.durations.iter().copied().collect(), r.total))
                .collect()
        };
        let mut routes: Vec<RoutePerformance> = copies
            .into_iter()
            .map(|((method, route), mut d, total)| {
                d.sort_by(f64::total_cmp);
                RoutePerformance {
                    method,
                    route,
                    window_requests: d.len() as u64,
                    total_requests: total,
                    p50_ms: millis(quantile(&d, 0.50)),
                    p90_ms: millis(quantile(&d, 0.90)),
                    p95_ms: millis(quantile(&d, 0.95)),
                    p99_ms: millis(quantile(&d, 0.99)),
                    max_ms: millis(d.last().copied().unwrap_or(0.0)),
                }
            })
            .collect();
        routes.sort_by(|a, b| {
            b.p95_ms
                .total_cmp(&a.p95_ms)
                .then_with(|| a.route.cmp(&b.route))
                .then_with(|| a.method.cmp(&b.method))
        });
        Performance {
            ring_requests: RING_REQUESTS as u64,
            routes,
        }
    }
}

/// Latency percentiles per route over its latest requests (administrators and developers).
#[utoipa::path(get, path = "/monitoring/performance", tag = "monitoring",
    security(("bearer" = [])),
    responses((status = 200, description = "Latency percentiles per route", body = Performance)))]
pub(crate) async fn performance(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<Performance>, ApiError> {
    require_operator(&caller)?;
    Ok(Json(s.timings.snapshot()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank_over_the_latest_requests() {
        let t = Timings::try_new(&Registry::new()).unwrap();
        // 1..=100 ms, then the ring forgets the oldest once full.
        for ms in 1..=100 {
            t.record("GET", "/api/tickets", 200, f64::from(ms) / 1000.0);
        }
        t.record("POST", "/api/tickets", 500, 0.002);
        let p = t.snapshot();
        let get = p.routes.iter().find(|r| r.method == "GET").unwrap();
        assert_eq!(get.window_requests, 100);
        assert_eq!(get.p50_ms, 50.0);
        assert_eq!(get.p90_ms, 90.0);
        assert_eq!(get.p95_ms, 95.0);
        assert_eq!(get.p99_ms, 99.0);
        assert_eq!(get.max_ms, 100.0);
        assert_eq!(p.routes[0].method, "GET", "slowest first");
        for _ in 0..RING_REQUESTS {
            t.record("GET", "/api/tickets", 200, 0.001);
        }
        let get = t
            .snapshot()
            .routes
            .into_iter()
            .find(|r| r.method == "GET")
            .unwrap();
        assert_eq!(get.window_requests, RING_REQUESTS as u64);
        assert_eq!(get.total_requests, 100 + RING_REQUESTS as u64);
        assert_eq!(get.max_ms, 1.0);
    }

    #[test]
    fn routes_past_the_bound_share_one_key() {
        let t = Timings::try_new(&Registry::new()).unwrap();
        for i in 0..(MAX_ROUTES + 10) {
            t.record("GET", &format!("/r{i}"), 200, 0.001);
        }
        let p = t.snapshot();
        assert_eq!(p.routes.len(), MAX_ROUTES + 1);
        let other = p.routes.iter().find(|r| r.route == OVERFLOW_ROUTE).unwrap();
        assert_eq!(other.total_requests, 10);
    }
}
