//! Dataplane metrics, registered on a registry the caller owns (never the default registry).

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// Latency buckets in seconds: 1 ms .. 30 s.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Clone, Debug)]
pub struct ProxyMetrics {
    /// `weir_requests_total{route,service,code}`
    pub requests: IntCounterVec,
    /// `weir_request_duration_seconds{route,service}`: request start to end of the response body.
    pub duration: HistogramVec,
    /// `weir_upstream_errors_total{service,reason}`
    pub upstream_errors: IntCounterVec,
}

impl ProxyMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "weir_requests_total",
                "Requests answered, by route, backend service and status code.",
            ),
            &["route", "service", "code"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "weir_request_duration_seconds",
                "Time from receiving request headers to the end of the response body.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["route", "service"],
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "weir_upstream_errors_total",
                "Requests that failed towards the backend, by service and reason.",
            ),
            &["service", "reason"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        Ok(Self {
            requests,
            duration,
            upstream_errors,
        })
    }
}
