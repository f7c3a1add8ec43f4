//! Controller metrics for the Kubernetes source.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone, Debug)]
pub struct ClusterMetrics {
    pub(super) watch_events: IntCounterVec,
    pub(super) watch_errors: IntCounterVec,
    pub(super) compile_duration: Histogram,
    pub(super) propagation: Histogram,
    pub(super) status_updates: IntCounterVec,
    pub(super) leader: IntGauge,
}

impl ClusterMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntCounterVec> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let histogram = |name: &str, help: &str| -> prometheus::Result<Histogram> {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]))?;
            registry.register(Box::new(h.clone()))?;
            Ok(h)
        };
        let leader = IntGauge::new(
            "weir_leader",
            "1 while this replica holds the leader lease and writes status.",
        )?;
        registry.register(Box::new(leader.clone()))?;
        Ok(Self {
            watch_events: counter(
                "weir_watch_events_total",
                "Kubernetes watch events received, by kind.",
                &["kind"],
            )?,
            watch_errors: counter(
                "weir_watch_errors_total",
                "Kubernetes watch failures (each is retried with backoff), by kind.",
                &["kind"],
            )?,
            compile_duration: histogram(
                "weir_compile_duration_seconds",
                "Time to compile the index into a route table.",
            )?,
            propagation: histogram(
                "weir_config_propagation_seconds",
                "From the first object change seen to the table that contains it serving traffic.",
            )?,
            status_updates: counter(
                "weir_status_updates_total",
                "Status patches written, by kind and result.",
                &["kind", "result"],
            )?,
            leader,
        })
    }
}
