//! Publishing compiled tables to the dataplane, with the config metrics.

use std::sync::Arc;
use std::time::Instant;

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};
use tokio::sync::watch;
use weir_dataplane::RouteTable;

use crate::compile::Compiled;

/// The channel the dataplane follows.
pub type TableSender = watch::Sender<Option<Arc<RouteTable>>>;
pub type TableReceiver = watch::Receiver<Option<Arc<RouteTable>>>;

pub fn table_channel() -> (TableSender, TableReceiver) {
    watch::channel(None)
}

#[derive(Clone, Debug)]
pub struct ConfigMetrics {
    generation: IntGauge,
    apply_duration: Histogram,
    errors: IntCounterVec,
}

impl ConfigMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let generation = IntGauge::new(
            "weir_config_generation",
            "Generation of the route table being served; increases with every applied change.",
        )?;
        let apply_duration = Histogram::with_opts(
            HistogramOpts::new(
                "weir_config_apply_duration_seconds",
                "Time to read, compile and publish a configuration change.",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "weir_config_errors_total",
                "Configuration errors found (each error in each applied change), by stage: parse or compile.",
            ),
            &["stage"],
        )?;
        registry.register(Box::new(generation.clone()))?;
        registry.register(Box::new(apply_duration.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        Ok(Self {
            generation,
            apply_duration,
            errors,
        })
    }

    pub fn count_errors(&self, stage: &str, n: usize) {
        if n > 0 {
            self.errors.with_label_values(&[stage]).inc_by(n as u64);
        }
    }
}

/// Hands tables to the dataplane, numbering them and skipping ones that change nothing.
#[derive(Debug)]
pub struct Publisher {
    tx: TableSender,
    metrics: ConfigMetrics,
    generation: u64,
}

impl Publisher {
    pub fn new(tx: TableSender, metrics: ConfigMetrics) -> Self {
        Self {
            tx,
            metrics,
            generation: 0,
        }
    }

    pub fn metrics(&self) -> &ConfigMetrics {
        &self.metrics
    }

    /// Logs and counts the diagnostics, then publishes the table unless it equals the current
    /// one. Returns whether a new table was published.
    pub fn publish(&mut self, compiled: Compiled, started: Instant) -> bool {
        for d in &compiled.diagnostics {
            d.log();
        }
        let errors = compiled.diagnostics.iter().filter(|d| d.is_error()).count();
        self.metrics.count_errors("compile", errors);
        // The compiler knows whether its table changed; a first one is compared.
        let unchanged = self.tx.borrow().as_ref().is_some_and(|current| {
            compiled
                .changed
                .map_or_else(|| current.same_config(&compiled.table), |changed| !changed)
        });
        if unchanged {
            tracing::debug!("configuration unchanged; not republished");
            return false;
        }
        self.generation += 1;
        let mut table = compiled.table;
        table.generation = self.generation;
        self.tx.send_replace(Some(Arc::new(table)));
        self.metrics.generation.set(self.generation as i64);
        self.metrics
            .apply_duration
            .observe(started.elapsed().as_secs_f64());
        true
    }
}
