//! Prometheus metrics of the controllers: reconciles, failures and durations, per
//! controller. [`Metrics::reconcile`] returns a guard that records the duration on drop.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabel {
    controller: &'static str,
}

/// Metrics of the controllers, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    reconciles: Family<ControllerLabel, Counter>,
    failures: Family<ControllerLabel, Counter>,
    durations: Family<ControllerLabel, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            reconciles: Family::default(),
            failures: Family::default(),
            durations: Family::new_with_constructor(|| {
                Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
            }),
        }
    }
}

impl Metrics {
    /// Metrics registered in `registry` under the `flotilla_operator` prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let sub = registry.sub_registry_with_prefix("flotilla_operator");
        sub.register(
            "reconciles",
            "Reconciles started",
            metrics.reconciles.clone(),
        );
        sub.register(
            "reconcile_failures",
            "Reconciles that failed",
            metrics.failures.clone(),
        );
        sub.register(
            "reconcile_duration_seconds",
            "Duration of reconciles",
            metrics.durations.clone(),
        );
        metrics
    }

    /// Counts a reconcile of `controller`; its duration is recorded when the guard drops.
    pub fn reconcile(&self, controller: &'static str) -> ReconcileGuard {
        let label = ControllerLabel { controller };
        self.reconciles.get_or_create(&label).inc();
        ReconcileGuard {
            histogram: self.durations.get_or_create(&label).clone(),
            started: Instant::now(),
        }
    }

    /// Counts a failed reconcile of `controller`.
    pub fn failure(&self, controller: &'static str) {
        self.failures
            .get_or_create(&ControllerLabel { controller })
            .inc();
    }

    /// Reconciles of `controller` counted so far.
    pub fn reconciles_of(&self, controller: &'static str) -> u64 {
        self.reconciles
            .get_or_create(&ControllerLabel { controller })
            .get()
    }

    /// Failures of `controller` counted so far.
    pub fn failures_of(&self, controller: &'static str) -> u64 {
        self.failures
            .get_or_create(&ControllerLabel { controller })
            .get()
    }
}

/// Records the duration of one reconcile when dropped.
pub struct ReconcileGuard {
    histogram: Histogram,
    started: Instant,
}

impl Drop for ReconcileGuard {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_and_failures_are_counted_per_controller() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        drop(metrics.reconcile("cluster"));
        drop(metrics.reconcile("cluster"));
        metrics.failure("database_group");
        assert_eq!(metrics.reconciles_of("cluster"), 2);
        assert_eq!(metrics.failures_of("database_group"), 1);
        let mut text = String::new();
        assert!(prometheus_client::encoding::text::encode(&mut text, &registry).is_ok());
        assert!(
            text.contains(
                "flotilla_operator_reconcile_duration_seconds_count{controller=\"cluster\"} 2"
            ),
            "{text}"
        );
    }
}
