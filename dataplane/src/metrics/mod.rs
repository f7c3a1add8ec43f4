//! Dataplane metrics, registered on a registry the caller owns (never the default registry).
//! Per-backend handles are resolved once per pool (on first use) so the request path does no
//! label lookups beyond the response code.

use std::sync::{Arc, OnceLock};

mod route;

pub(crate) use route::{Code, RequestMetrics, RouteCache};

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::upstream::{Failure, Phase};

/// Latency buckets in seconds: 1 ms .. 30 s.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Why a retry that a condition asked for did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    Budget,
    NonIdempotent,
    BodyTooLarge,
    Deadline,
}

impl SkipReason {
    pub fn label(self) -> &'static str {
        match self {
            SkipReason::Budget => "budget",
            SkipReason::NonIdempotent => "non_idempotent",
            SkipReason::BodyTooLarge => "body_too_large",
            SkipReason::Deadline => "deadline",
        }
    }
}

/// How a pool found a connection for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickKind {
    /// A connection opened for this request.
    New,
    /// A shared, ready connection.
    Shared,
    /// A shared connection that had completed an exchange (first requests in `aggressive`).
    Proven,
    /// A connection still connecting or handshaking (`always`).
    StillConnecting,
    /// A connection private to the client connection (`never`).
    Private,
}

impl PickKind {
    const ALL: usize = 5;

    fn index(self) -> usize {
        match self {
            PickKind::New => 0,
            PickKind::Shared => 1,
            PickKind::Proven => 2,
            PickKind::StillConnecting => 3,
            PickKind::Private => 4,
        }
    }

    fn label(self) -> &'static str {
        match self {
            PickKind::New => "new",
            PickKind::Shared => "shared",
            PickKind::Proven => "proven",
            PickKind::StillConnecting => "still-connecting",
            PickKind::Private => "private",
        }
    }
}

#[derive(Clone, Debug)]
pub struct ProxyMetrics {
    /// `weir_requests_total{route,service,code}`
    pub requests: IntCounterVec,
    /// `weir_request_duration_seconds{route,service}`
    pub duration: HistogramVec,
    attempts: IntCounterVec,
    retries: IntCounterVec,
    retries_skipped: IntCounterVec,
    connections: IntGaugeVec,
    opened: IntCounterVec,
    closed: IntCounterVec,
    goaway: IntCounterVec,
    refused: IntCounterVec,
    picks: IntCounterVec,
    streams_per_connection: HistogramVec,
    /// Requests the proxy answers itself before choosing a backend (route and service "").
    pub(crate) local: Arc<RequestMetrics>,
}

fn counter(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

impl ProxyMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let requests = counter(
            registry,
            "weir_requests_total",
            "Requests answered, by route, backend service and status code.",
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
        registry.register(Box::new(duration.clone()))?;
        let connections = IntGaugeVec::new(
            Opts::new(
                "weir_upstream_connections",
                "Upstream connections by state.",
            ),
            &["service", "state"],
        )?;
        registry.register(Box::new(connections.clone()))?;
        let streams_per_connection = HistogramVec::new(
            HistogramOpts::new(
                "weir_upstream_streams_per_connection",
                "Requests an upstream connection carried in its life, observed when it closes.",
            )
            .buckets(vec![
                1.0,
                2.0,
                5.0,
                10.0,
                100.0,
                1000.0,
                10_000.0,
                100_000.0,
                1_000_000.0,
            ]),
            &["service"],
        )?;
        registry.register(Box::new(streams_per_connection.clone()))?;
        let local = Arc::new(RequestMetrics::new(&requests, &duration, "", "".into()));
        Ok(Self {
            local,
            requests,
            duration,
            attempts: counter(registry, "weir_upstream_attempts_total", "Attempts sent to backends, by outcome: `response` or the failure.", &["service", "outcome"])?,
            retries: counter(registry, "weir_retries_total", "Retries made, by the reason of the failed attempt.", &["service", "reason"])?,
            retries_skipped: counter(registry, "weir_retries_skipped_total", "Retries a condition asked for but that were not made: budget, non_idempotent, body_too_large, deadline.", &["service", "reason"])?,
            connections,
            opened: counter(registry, "weir_upstream_connections_opened_total", "Upstream connections opened.", &["service"])?,
            closed: counter(registry, "weir_upstream_connections_closed_total", "Upstream connections closed, by reason.", &["service", "reason"])?,
            goaway: counter(registry, "weir_upstream_goaway_received_total", "GOAWAY frames received from backends.", &["service"])?,
            refused: counter(registry, "weir_upstream_refused_streams_total", "RST_STREAM(REFUSED_STREAM) received from backends.", &["service"])?,
            picks: counter(registry, "weir_upstream_pool_picks_total", "How requests found an upstream connection: new, shared, proven, still-connecting, private.", &["service", "kind"])?,
            streams_per_connection,
        })
    }

    /// Handles for one backend. Its series join the registry when first used: a backend that
    /// never carries traffic adds nothing to a scrape (10,000 idle backends would otherwise be
    /// 200,000 lines).
    pub(crate) fn backend(&self, service: &str) -> BackendMetrics {
        let label: Arc<str> = Arc::from(service);
        let lazy = |vec: &IntCounterVec| LazyCounter {
            vec: vec.clone(),
            service: label.clone(),
            cell: OnceLock::new(),
        };
        BackendMetrics(Arc::new(BackendSeries {
            service: label.clone(),
            opened: lazy(&self.opened),
            goaway: lazy(&self.goaway),
            refused: lazy(&self.refused),
            vecs: self.clone(),
            attempts_ok: OnceLock::new(),
            states: OnceLock::new(),
            streams_per_connection: OnceLock::new(),
            picks: std::array::from_fn(|_| OnceLock::new()),
            routes: RouteCache::new(&self.requests, &self.duration, label),
        }))
    }
}

/// A per-backend counter, registered on first use.
#[derive(Debug)]
pub(crate) struct LazyCounter {
    vec: IntCounterVec,
    service: Arc<str>,
    cell: OnceLock<IntCounter>,
}

impl LazyCounter {
    pub(crate) fn inc(&self) {
        self.cell
            .get_or_init(|| self.vec.with_label_values(&[&*self.service]))
            .inc();
    }
}

/// Metric handles of one backend; clones share them.
#[derive(Clone, Debug)]
pub(crate) struct BackendMetrics(Arc<BackendSeries>);

impl std::ops::Deref for BackendMetrics {
    type Target = BackendSeries;

    fn deref(&self) -> &BackendSeries {
        &self.0
    }
}

#[derive(Debug)]
pub(crate) struct BackendSeries {
    /// The label value, shared with the lazy counters and the route cache.
    pub(crate) service: Arc<str>,
    pub(crate) opened: LazyCounter,
    pub(crate) goaway: LazyCounter,
    pub(crate) refused: LazyCounter,
    vecs: ProxyMetrics,
    attempts_ok: OnceLock<IntCounter>,
    /// Connections by state: connecting, handshaking, ready, draining.
    states: OnceLock<[IntGauge; 4]>,
    streams_per_connection: OnceLock<Histogram>,
    /// `weir_upstream_pool_picks_total` by kind.
    picks: [OnceLock<IntCounter>; PickKind::ALL],
    /// Request metrics of the routes using this backend.
    pub(crate) routes: RouteCache,
}

impl BackendSeries {
    pub(crate) fn attempt_ok(&self) {
        self.attempts_ok
            .get_or_init(|| {
                self.vecs
                    .attempts
                    .with_label_values(&[&*self.service, "response"])
            })
            .inc();
    }

    pub(crate) fn attempt_failed(&self, failure: Failure) {
        self.vecs
            .attempts
            .with_label_values(&[&*self.service, failure.label()])
            .inc();
    }

    pub(crate) fn retry(&self, reason: &str) {
        self.vecs
            .retries
            .with_label_values(&[&*self.service, reason])
            .inc();
    }

    pub(crate) fn retry_skipped(&self, reason: SkipReason) {
        self.vecs
            .retries_skipped
            .with_label_values(&[&*self.service, reason.label()])
            .inc();
    }

    pub(crate) fn pick(&self, kind: PickKind) {
        self.picks[kind.index()]
            .get_or_init(|| {
                self.vecs
                    .picks
                    .with_label_values(&[&*self.service, kind.label()])
            })
            .inc();
    }

    fn gauge(&self, phase: Phase) -> Option<&IntGauge> {
        let states = self.states.get_or_init(|| {
            ["connecting", "handshaking", "ready", "draining"].map(|state| {
                self.vecs
                    .connections
                    .with_label_values(&[&*self.service, state])
            })
        });
        match phase {
            Phase::Connecting => Some(&states[0]),
            Phase::Handshaking => Some(&states[1]),
            Phase::Ready => Some(&states[2]),
            Phase::Draining => Some(&states[3]),
            Phase::Closed => None,
        }
    }

    /// Moves one connection from one state's gauge to another's.
    pub(crate) fn transition(&self, from: Option<Phase>, to: Phase) {
        if let Some(g) = from.and_then(|p| self.gauge(p)) {
            g.dec();
        }
        if let Some(g) = self.gauge(to) {
            g.inc();
        }
    }

    pub(crate) fn closed(&self, reason: &str, streams: u64) {
        self.vecs
            .closed
            .with_label_values(&[&*self.service, reason])
            .inc();
        self.streams_per_connection
            .get_or_init(|| {
                self.vecs
                    .streams_per_connection
                    .with_label_values(&[&*self.service])
            })
            .observe(streams as f64);
    }
}
