//! The scaling decisions of KEDA and the HPA, free of I/O: time comes in as an argument so the
//! rules can be tested with a fake clock.
//!
//! KEDA owns the 0 ↔ 1 edge (activation, cooldown) and the HPA owns 1 ↔ N (metric math with a
//! 10% tolerance and a scale-down stabilization window); both are modelled here as one
//! [`Autoscaler`] per ScaledObject.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::spec::{MetricTarget, ScalingConfig};

/// The HPA's default tolerance (`--horizontal-pod-autoscaler-tolerance`).
pub const HPA_TOLERANCE: f64 = 0.1;

/// One metric reading from a scaler, with the target the scaler declared for it.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricReading {
    /// Metric name as the scaler reported it.
    pub name: String,
    /// Value (`metricValueFloat` when positive, else `metricValue`).
    pub value: f64,
    /// Target (`targetSizeFloat` when positive, else `targetSize`).
    pub target: f64,
    /// How the HPA reads the target.
    pub kind: MetricTarget,
}

/// Reads a KEDA metric field pair as KEDA does: the float field when it is positive, else the
/// int field.
pub fn float_or_int(int: i64, float: f64) -> f64 {
    if float > 0.0 { float } else { int as f64 }
}

/// The HPA's replica count for one metric, or `None` when the target is unusable.
///
/// Within the tolerance the current count is kept (ratio = value / (target × current)).
pub fn replicas_for_metric(current: i32, reading: &MetricReading, tolerance: f64) -> Option<i32> {
    let usable_target = reading.target.is_finite() && reading.target > 0.0;
    if !usable_target || !reading.value.is_finite() || current < 1 {
        return None;
    }
    let current_f = f64::from(current);
    let ratio = match reading.kind {
        MetricTarget::AverageValue => reading.value / (reading.target * current_f),
        MetricTarget::Value => reading.value / reading.target,
    };
    if (ratio - 1.0).abs() <= tolerance {
        return Some(current);
    }
    let desired = (ratio * current_f).ceil().max(0.0);
    Some(if desired >= f64::from(i32::MAX) {
        i32::MAX
    } else {
        desired as i32
    })
}

/// The HPA's recommendation over several metrics: the largest per-metric count.
pub fn desired_replicas(current: i32, readings: &[MetricReading], tolerance: f64) -> Option<i32> {
    readings
        .iter()
        .filter_map(|r| replicas_for_metric(current, r, tolerance))
        .max()
}

/// The HPA's scale-down stabilization: scale down only to the highest recommendation made within
/// the window; scale up at once.
#[derive(Clone, Debug)]
pub struct Stabilizer {
    window: Duration,
    recommendations: VecDeque<(Instant, i32)>,
}

impl Stabilizer {
    /// A stabilizer with the given scale-down window.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            recommendations: VecDeque::new(),
        }
    }

    /// Records `desired` at `now` and returns the stabilized recommendation.
    pub fn stabilize(&mut self, now: Instant, current: i32, desired: i32) -> i32 {
        while let Some(&(at, _)) = self.recommendations.front() {
            if now.saturating_duration_since(at) > self.window {
                self.recommendations.pop_front();
            } else {
                break;
            }
        }
        self.recommendations.push_back((now, desired));
        let highest = self
            .recommendations
            .iter()
            .map(|&(_, r)| r)
            .max()
            .unwrap_or(desired);
        if desired >= current {
            desired
        } else {
            highest.min(current)
        }
    }
}

/// Why the autoscaler wants a new replica count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleReason {
    /// A trigger became active while the target had 0 replicas.
    Activation,
    /// No trigger was active for the cooldown period.
    Cooldown,
    /// The target was below `minReplicaCount`.
    BelowMinimum,
    /// The HPA's metric recommendation.
    Metrics,
}

/// A replica change the autoscaler asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScaleDecision {
    /// New replica count.
    pub replicas: i32,
    /// Why.
    pub reason: ScaleReason,
}

/// Per-ScaledObject scaling state: activity, cooldown and the HPA's stabilization.
#[derive(Clone, Debug)]
pub struct Autoscaler {
    min_replicas: i32,
    max_replicas: i32,
    cooldown: Duration,
    initial_cooldown_until: Instant,
    active: bool,
    errored: bool,
    last_active: Option<Instant>,
    stabilizer: Stabilizer,
}

impl Autoscaler {
    /// An autoscaler for `config`; `created` is the ScaledObject's creation time and
    /// `last_active` the last time a trigger was known to be active (from a previous run).
    pub fn new(config: &ScalingConfig, created: Instant, last_active: Option<Instant>) -> Self {
        Self {
            min_replicas: config.min_replicas,
            max_replicas: config.max_replicas,
            cooldown: config.cooldown,
            initial_cooldown_until: created + config.initial_cooldown,
            active: false,
            errored: false,
            last_active,
            stabilizer: Stabilizer::new(config.scale_down_stabilization),
        }
    }

    /// Whether any trigger was active at the last update.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// The last time a trigger was seen active.
    pub fn last_active(&self) -> Option<Instant> {
        self.last_active
    }

    /// Records the combined trigger activity at `now`; returns whether it changed.
    pub fn set_active(&mut self, now: Instant, active: bool) -> bool {
        // Active until now: a trigger that just went quiet was active a moment ago.
        if active || self.active {
            self.last_active = Some(now);
        }
        std::mem::replace(&mut self.active, active) != active
    }

    /// Records whether a scaler failed at its last call. Like KEDA without a fallback, an
    /// inactive ScaledObject with a failing scaler is not scaled to zero.
    pub fn set_errored(&mut self, errored: bool) {
        self.errored = errored;
    }

    /// When the target may be scaled to zero if nothing becomes active, or `None` when it
    /// must not be scaled to zero (active, a scaler failing, or `minReplicaCount > 0`).
    pub fn scale_to_zero_at(&self) -> Option<Instant> {
        if self.active || self.errored || self.min_replicas > 0 {
            return None;
        }
        Some(match self.last_active {
            Some(at) => (at + self.cooldown).max(self.initial_cooldown_until),
            None => self.initial_cooldown_until,
        })
    }

    /// The replica count to set given the current one, after [`Self::set_active`]; `metrics`
    /// are this poll's readings (`None` outside a poll, or when the metrics failed).
    pub fn decide(
        &mut self,
        now: Instant,
        current: i32,
        metrics: Option<&[MetricReading]>,
    ) -> Option<ScaleDecision> {
        let decision = |replicas, reason| {
            Some(ScaleDecision { replicas, reason }).filter(|d| d.replicas != current)
        };
        if current < self.min_replicas {
            return decision(self.min_replicas, ScaleReason::BelowMinimum);
        }
        if current == 0 {
            return if self.active {
                decision(self.min_replicas.max(1), ScaleReason::Activation)
            } else {
                None
            };
        }
        if self.scale_to_zero_at().is_some_and(|at| now >= at) {
            return decision(0, ScaleReason::Cooldown);
        }
        let desired = desired_replicas(current, metrics?, HPA_TOLERANCE)?;
        let stabilized = self.stabilizer.stabilize(now, current, desired);
        decision(
            stabilized.clamp(self.min_replicas.max(1), self.max_replicas),
            ScaleReason::Metrics,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keda::spec::ScalingConfig;
    use serde_json::json;

    fn reading(value: f64, target: f64) -> MetricReading {
        MetricReading {
            name: "m".into(),
            value,
            target,
            kind: MetricTarget::AverageValue,
        }
    }

    fn config(extra: serde_json::Value) -> ScalingConfig {
        let mut spec = json!({
            "scaleTargetRef": {"name": "app"},
            "triggers": [{"type": "external", "metadata": {"scalerAddress": "s:1"}}]
        });
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        ScalingConfig::from_spec_value(&spec).unwrap()
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn hpa_average_value_math() {
        assert_eq!(
            replicas_for_metric(1, &reading(250.0, 100.0), HPA_TOLERANCE),
            Some(3)
        );
        assert_eq!(
            replicas_for_metric(3, &reading(250.0, 100.0), HPA_TOLERANCE),
            Some(3)
        );
        assert_eq!(
            replicas_for_metric(5, &reading(0.0, 100.0), HPA_TOLERANCE),
            Some(0)
        );
        // ratio 310 / 300 = 1.033: within the 10% tolerance, keep 3.
        assert_eq!(
            replicas_for_metric(3, &reading(310.0, 100.0), HPA_TOLERANCE),
            Some(3)
        );
        // ratio 340 / 300 = 1.133: outside, ceil(3.4) = 4.
        assert_eq!(
            replicas_for_metric(3, &reading(340.0, 100.0), HPA_TOLERANCE),
            Some(4)
        );
        // ratio 280 / 300 = 0.933: within.
        assert_eq!(
            replicas_for_metric(3, &reading(280.0, 100.0), HPA_TOLERANCE),
            Some(3)
        );
        assert_eq!(
            replicas_for_metric(3, &reading(1.0, 0.0), HPA_TOLERANCE),
            None
        );
        assert_eq!(
            replicas_for_metric(3, &reading(f64::NAN, 1.0), HPA_TOLERANCE),
            None
        );
        assert_eq!(
            replicas_for_metric(1, &reading(1e300, 1.0), HPA_TOLERANCE),
            Some(i32::MAX)
        );
    }

    #[test]
    fn hpa_value_target_and_multiple_metrics() {
        let value = MetricReading {
            kind: MetricTarget::Value,
            ..reading(200.0, 100.0)
        };
        assert_eq!(replicas_for_metric(2, &value, HPA_TOLERANCE), Some(4));
        let readings = [
            reading(250.0, 100.0),
            reading(700.0, 100.0),
            reading(1.0, 0.0),
        ];
        assert_eq!(desired_replicas(1, &readings, HPA_TOLERANCE), Some(7));
        assert_eq!(desired_replicas(1, &[], HPA_TOLERANCE), None);
        assert_eq!(float_or_int(0, 2.5), 2.5);
        assert_eq!(float_or_int(3, 0.0), 3.0);
        assert_eq!(float_or_int(3, 2.5), 2.5);
    }

    #[test]
    fn stabilizer_scales_down_only_after_the_window() {
        let t0 = Instant::now();
        let mut s = Stabilizer::new(2 * S);
        assert_eq!(s.stabilize(t0, 1, 5), 5, "scale up at once");
        assert_eq!(s.stabilize(t0 + S, 5, 1), 5, "5 was recommended 1 s ago");
        assert_eq!(s.stabilize(t0 + 2 * S, 5, 2), 5, "still within the window");
        // 5 is 2.5 s old: gone; 1 (1.5 s old) and 2 (0.5 s old) remain.
        assert_eq!(s.stabilize(t0 + 2 * S + S / 2, 5, 1), 2);
        assert_eq!(s.stabilize(t0 + 5 * S, 2, 1), 1);
        assert_eq!(s.stabilize(t0 + 5 * S, 1, 9), 9);
    }

    #[test]
    fn zero_window_follows_the_metric() {
        let t0 = Instant::now();
        let mut s = Stabilizer::new(Duration::ZERO);
        assert_eq!(s.stabilize(t0, 1, 5), 5);
        assert_eq!(s.stabilize(t0 + S, 5, 2), 2);
    }

    #[test]
    fn activation_scales_from_zero_to_max_of_min_and_one() {
        let t0 = Instant::now();
        let mut a = Autoscaler::new(&config(json!({})), t0, None);
        assert_eq!(a.decide(t0, 0, None), None, "inactive stays at zero");
        assert!(a.set_active(t0, true));
        assert!(!a.set_active(t0, true), "no change");
        let d = a.decide(t0, 0, None).unwrap();
        assert_eq!((d.replicas, d.reason), (1, ScaleReason::Activation));

        let mut a = Autoscaler::new(
            &config(json!({"minReplicaCount": 3, "maxReplicaCount": 5})),
            t0,
            None,
        );
        assert_eq!(
            a.decide(t0, 0, None).map(|d| (d.replicas, d.reason)),
            Some((3, ScaleReason::BelowMinimum))
        );
    }

    #[test]
    fn cooldown_scales_to_zero_after_last_activity() {
        let t0 = Instant::now();
        let mut a = Autoscaler::new(&config(json!({"cooldownPeriod": 10})), t0, None);
        a.set_active(t0, true);
        assert_eq!(a.scale_to_zero_at(), None, "active");
        a.set_active(t0 + 5 * S, false);
        assert_eq!(
            a.last_active(),
            Some(t0 + 5 * S),
            "active until it went quiet"
        );
        assert_eq!(a.scale_to_zero_at(), Some(t0 + 15 * S));
        assert_eq!(a.decide(t0 + 14 * S, 2, None), None, "cooling down");
        let d = a.decide(t0 + 15 * S, 2, None).unwrap();
        assert_eq!((d.replicas, d.reason), (0, ScaleReason::Cooldown));
        // Activity again restarts the cooldown.
        a.set_active(t0 + 16 * S, true);
        a.set_active(t0 + 17 * S, false);
        assert_eq!(a.decide(t0 + 20 * S, 2, None), None);
    }

    #[test]
    fn failing_scalers_block_scale_to_zero() {
        let t0 = Instant::now();
        let mut a = Autoscaler::new(&config(json!({"cooldownPeriod": 1})), t0, None);
        a.set_errored(true);
        assert_eq!(a.scale_to_zero_at(), None);
        assert_eq!(a.decide(t0 + 10 * S, 3, None), None);
        a.set_errored(false);
        assert_eq!(a.decide(t0 + 10 * S, 3, None).map(|d| d.replicas), Some(0));
    }

    #[test]
    fn never_active_scales_down_after_the_initial_cooldown() {
        let t0 = Instant::now();
        let mut a = Autoscaler::new(
            &config(json!({"initialCooldownPeriod": 60, "cooldownPeriod": 5})),
            t0,
            None,
        );
        assert_eq!(a.scale_to_zero_at(), Some(t0 + 60 * S));
        assert_eq!(a.decide(t0 + 59 * S, 1, None), None);
        assert_eq!(a.decide(t0 + 60 * S, 1, None).map(|d| d.replicas), Some(0));
        // The initial cooldown also delays a cooldown that ends sooner.
        let mut a = Autoscaler::new(
            &config(json!({"initialCooldownPeriod": 60, "cooldownPeriod": 5})),
            t0,
            None,
        );
        a.set_active(t0 + S, true);
        a.set_active(t0 + 2 * S, false);
        assert_eq!(a.scale_to_zero_at(), Some(t0 + 60 * S));
    }

    #[test]
    fn min_replicas_disable_scale_to_zero() {
        let t0 = Instant::now();
        let mut a = Autoscaler::new(
            &config(json!({"minReplicaCount": 1, "cooldownPeriod": 0})),
            t0,
            None,
        );
        assert_eq!(a.scale_to_zero_at(), None);
        assert_eq!(a.decide(t0 + 100 * S, 1, None), None);
        // Metric 0 keeps the minimum.
        assert_eq!(
            a.decide(t0 + 100 * S, 1, Some(&[reading(0.0, 100.0)])),
            None
        );
    }

    #[test]
    fn metrics_are_clamped_and_stabilized() {
        let t0 = Instant::now();
        let cfg = config(
            json!({"maxReplicaCount": 4, "cooldownPeriod": 1000, "advanced":
            {"horizontalPodAutoscalerConfig": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 2}}}}}),
        );
        let mut a = Autoscaler::new(&cfg, t0, None);
        a.set_active(t0, true);
        assert_eq!(
            a.decide(t0, 1, Some(&[reading(250.0, 100.0)]))
                .map(|d| d.replicas),
            Some(3)
        );
        assert_eq!(
            a.decide(t0, 3, Some(&[reading(900.0, 100.0)]))
                .map(|d| d.replicas),
            Some(4),
            "max"
        );
        assert_eq!(
            a.decide(t0 + S, 4, Some(&[reading(100.0, 100.0)])),
            None,
            "window"
        );
        assert_eq!(
            a.decide(t0 + 3 * S, 4, Some(&[reading(100.0, 100.0)]))
                .map(|d| d.replicas),
            Some(1)
        );
        assert_eq!(
            a.decide(t0 + 3 * S, 1, None),
            None,
            "no metrics, no HPA step"
        );
        assert_eq!(
            a.decide(t0 + 4 * S, 1, Some(&[reading(0.0, 100.0)])),
            None,
            "HPA minimum is 1"
        );
    }
}
