//! Prometheus metrics, named like controller-runtime's so upstream dashboards keep working.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of per-controller metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// `httpscaledobject` or `interceptorroute`.
    pub controller: String,
}

/// Labels of the reconcile counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `httpscaledobject` or `interceptorroute`.
    pub controller: String,
    /// `success` or `error`.
    pub result: String,
}

/// Labels of the leader gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LeaseLabels {
    /// Lease name.
    pub name: String,
}

type HistogramFamily = Family<ControllerLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// The operator's metrics and their registry (one per operator instance).
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    errors: Family<ControllerLabels, Counter>,
    durations: HistogramFamily,
    leader: Family<LeaseLabels, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Fresh metrics in a fresh registry.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let reconciles = Family::<ResultLabels, Counter>::default();
        let errors = Family::<ControllerLabels, Counter>::default();
        let durations: HistogramFamily = Family::new_with_constructor(duration_histogram);
        let leader = Family::<LeaseLabels, Gauge>::default();
        registry.register(
            "controller_runtime_reconcile",
            "Total number of reconciliations per controller and result",
            reconciles.clone(),
        );
        registry.register(
            "controller_runtime_reconcile_errors",
            "Total number of reconciliation errors per controller",
            errors.clone(),
        );
        registry.register(
            "controller_runtime_reconcile_time_seconds",
            "Length of time per reconciliation per controller",
            durations.clone(),
        );
        registry.register(
            "leader_election_master_status",
            "1 while this replica leads, 0 otherwise",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            durations,
            leader,
        }
    }

    /// Records one reconciliation of `controller`.
    pub fn reconciled(&self, controller: &str, ok: bool, took: Duration) {
        let result = if ok { "success" } else { "error" };
        self.reconciles
            .get_or_create(&ResultLabels {
                controller: controller.to_owned(),
                result: result.to_owned(),
            })
            .inc();
        let labels = ControllerLabels {
            controller: controller.to_owned(),
        };
        if !ok {
            self.errors.get_or_create(&labels).inc();
        }
        self.durations
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// Number of reconciliations of `controller` so far (both results).
    pub fn reconcile_count(&self, controller: &str) -> u64 {
        ["success", "error"]
            .iter()
            .map(|result| {
                self.reconciles
                    .get_or_create(&ResultLabels {
                        controller: controller.to_owned(),
                        result: (*result).to_owned(),
                    })
                    .get()
            })
            .sum()
    }

    /// Sets the leader gauge for `lease`.
    pub fn set_leader(&self, lease: &str, leading: bool) {
        self.leader
            .get_or_create(&LeaseLabels {
                name: lease.to_owned(),
            })
            .set(i64::from(leading));
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_encodes() {
        let m = Metrics::new();
        m.reconciled("httpscaledobject", true, Duration::from_millis(3));
        m.reconciled("httpscaledobject", false, Duration::from_millis(30));
        m.set_leader("http-add-on.keda.sh", true);
        assert_eq!(m.reconcile_count("httpscaledobject"), 2);
        assert_eq!(m.reconcile_count("interceptorroute"), 0);
        let text = m.encode();
        for needle in [
            r#"controller_runtime_reconcile_total{controller="httpscaledobject",result="success"} 1"#,
            r#"controller_runtime_reconcile_errors_total{controller="httpscaledobject"} 1"#,
            r#"controller_runtime_reconcile_time_seconds_count{controller="httpscaledobject"} 2"#,
            r#"leader_election_master_status{name="http-add-on.keda.sh"} 1"#,
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
    }
}
