//! The parts of a KEDA `ScaledObject` (`keda.sh/v1alpha1`) the stand-in acts on, with KEDA's
//! defaults and the validation KEDA's admission webhook would do.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::{ApiResource, GroupVersionKind};
use serde::Deserialize;

/// KEDA's default `pollingInterval` in seconds.
pub const DEFAULT_POLLING_INTERVAL: u64 = 30;
/// KEDA's default `cooldownPeriod` in seconds.
pub const DEFAULT_COOLDOWN_PERIOD: u64 = 300;
/// KEDA's default `maxReplicaCount`.
pub const DEFAULT_MAX_REPLICAS: i32 = 100;
/// The HPA's default scale-down stabilization window in seconds.
pub const DEFAULT_SCALE_DOWN_STABILIZATION: u64 = 300;

/// The `ScaledObject` resource of KEDA (`keda.sh/v1alpha1`, plural `scaledobjects`).
pub fn scaled_object_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("keda.sh", "v1alpha1", "ScaledObject"),
        "scaledobjects",
    )
}

/// `spec` of a ScaledObject as written by the user (unset fields stay `None`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScaledObjectSpec {
    /// The workload to scale.
    pub scale_target_ref: ScaleTargetRef,
    /// Seconds between two polls of the triggers.
    pub polling_interval: Option<i64>,
    /// Seconds without an active trigger before scaling to `minReplicaCount`.
    pub cooldown_period: Option<i64>,
    /// Seconds after creation before the first scale to zero.
    pub initial_cooldown_period: Option<i64>,
    /// Lower replica bound (0 allows scaling to zero).
    pub min_replica_count: Option<i32>,
    /// Upper replica bound.
    pub max_replica_count: Option<i32>,
    /// `advanced` settings.
    pub advanced: Option<Advanced>,
    /// Triggers (scalers).
    #[serde(default)]
    pub triggers: Vec<Trigger>,
}

/// `spec.scaleTargetRef`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTargetRef {
    /// Name of the target in the ScaledObject's namespace.
    #[serde(default)]
    pub name: String,
    /// Kind of the target (default `Deployment`).
    pub kind: Option<String>,
    /// API version of the target (default `apps/v1`).
    pub api_version: Option<String>,
}

/// `spec.advanced`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Advanced {
    /// Scale the target back to its original replica count when the ScaledObject is deleted.
    #[serde(default)]
    pub restore_to_original_replica_count: bool,
    /// Settings of the HPA KEDA would create.
    pub horizontal_pod_autoscaler_config: Option<HpaConfig>,
}

/// `spec.advanced.horizontalPodAutoscalerConfig`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HpaConfig {
    /// HPA `behavior`.
    pub behavior: Option<HpaBehavior>,
}

/// HPA `behavior` (only the stabilization windows are honoured).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HpaBehavior {
    /// Scale-down rules.
    pub scale_down: Option<HpaScalingRules>,
}

/// HPA scaling rules (only the stabilization window is honoured).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HpaScalingRules {
    /// Seconds of recommendations the HPA considers before scaling down.
    pub stabilization_window_seconds: Option<i64>,
}

/// One entry of `spec.triggers`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    /// Scaler type, e.g. `external-push`.
    #[serde(rename = "type", default)]
    pub type_: String,
    /// Optional trigger name.
    pub name: Option<String>,
    /// Scaler metadata, passed to external scalers as `scalerMetadata`.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// HPA metric target type: `AverageValue` (default) or `Value`.
    pub metric_type: Option<String>,
}

/// How an external trigger reports activity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TriggerMode {
    /// `external`: `IsActive` polled every `pollingInterval`.
    Poll,
    /// `external-push`: a `StreamIsActive` stream, plus the polls.
    Push,
}

/// The HPA target type of a trigger's metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricTarget {
    /// Target per replica: desired = ceil(value / target).
    AverageValue,
    /// Target for the whole workload: desired = ceil(current * value / target).
    Value,
}

/// A validated external trigger.
#[derive(Clone, Debug, PartialEq)]
pub struct ExternalTrigger {
    /// Index in `spec.triggers` (used in metric names `s<index>-<metric>`).
    pub index: usize,
    /// Poll or push.
    pub mode: TriggerMode,
    /// `metadata.scalerAddress`.
    pub scaler_address: String,
    /// The whole trigger metadata (real KEDA passes it all as `scalerMetadata`).
    pub metadata: BTreeMap<String, String>,
    /// HPA target type.
    pub metric_target: MetricTarget,
}

/// The workload a ScaledObject scales.
#[derive(Clone, Debug, PartialEq)]
pub struct ScaleTarget {
    /// Name in the ScaledObject's namespace.
    pub name: String,
    /// The resource (for the `/scale` subresource).
    pub resource: ApiResource,
}

impl ScaleTarget {
    /// KEDA's `status.scaleTargetKind`, e.g. `apps/v1.Deployment`.
    pub fn kind_label(&self) -> String {
        format!("{}.{}", self.resource.api_version, self.resource.kind)
    }
}

/// A ScaledObject spec with defaults applied and validated.
#[derive(Clone, Debug, PartialEq)]
pub struct ScalingConfig {
    /// Target workload.
    pub target: ScaleTarget,
    /// Time between two polls.
    pub polling_interval: Duration,
    /// Time without activity before scaling to `min_replicas`.
    pub cooldown: Duration,
    /// Time after creation before the first scale to zero.
    pub initial_cooldown: Duration,
    /// Lower bound.
    pub min_replicas: i32,
    /// Upper bound.
    pub max_replicas: i32,
    /// Scale-down stabilization window of the HPA.
    pub scale_down_stabilization: Duration,
    /// Restore the original replica count on deletion.
    pub restore_on_delete: bool,
    /// External triggers this stand-in can drive.
    pub triggers: Vec<ExternalTrigger>,
    /// Problems with triggers that were left out (unsupported type, missing address).
    pub trigger_problems: Vec<String>,
}

/// Why a ScaledObject spec cannot be acted on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    /// The spec does not have the expected shape.
    #[error("invalid ScaledObject spec: {0}")]
    Malformed(String),
    /// A field has a value KEDA rejects.
    #[error("{0}")]
    Invalid(String),
}

fn seconds(
    field: &str,
    value: Option<i64>,
    default: u64,
    allow_zero: bool,
) -> Result<Duration, SpecError> {
    match value {
        None => Ok(Duration::from_secs(default)),
        // KEDA's fields are int32; bounding them also keeps `Instant` arithmetic from overflowing.
        Some(v) if (v > 0 || (allow_zero && v == 0)) && v <= i64::from(i32::MAX) => {
            Ok(Duration::from_secs(v.unsigned_abs()))
        }
        Some(v) => Err(SpecError::Invalid(format!("{field} must not be {v}"))),
    }
}

fn parse_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    }
}

impl ScalingConfig {
    /// Parses and validates a ScaledObject's `spec` JSON.
    pub fn from_spec_value(spec: &serde_json::Value) -> Result<Self, SpecError> {
        let spec: ScaledObjectSpec = serde_json::from_value(spec.clone())
            .map_err(|e| SpecError::Malformed(e.to_string()))?;
        Self::from_spec(&spec)
    }

    /// Applies KEDA's defaults to `spec` and validates it.
    pub fn from_spec(spec: &ScaledObjectSpec) -> Result<Self, SpecError> {
        let target_ref = &spec.scale_target_ref;
        if target_ref.name.is_empty() {
            return Err(SpecError::Invalid("scaleTargetRef.name is required".into()));
        }
        let kind = target_ref
            .kind
            .as_deref()
            .filter(|k| !k.is_empty())
            .unwrap_or("Deployment");
        let api_version = target_ref
            .api_version
            .as_deref()
            .filter(|v| !v.is_empty())
            .unwrap_or("apps/v1");
        let (group, version) = parse_api_version(api_version);
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));

        let min_replicas = spec.min_replica_count.unwrap_or(0);
        let max_replicas = spec.max_replica_count.unwrap_or(DEFAULT_MAX_REPLICAS);
        if min_replicas < 0 {
            return Err(SpecError::Invalid(format!(
                "minReplicaCount={min_replicas} must not be negative"
            )));
        }
        if max_replicas < 1 || min_replicas > max_replicas {
            return Err(SpecError::Invalid(format!(
                "MinReplicaCount={min_replicas} must be less than MaxReplicaCount={max_replicas}"
            )));
        }
        let advanced = spec.advanced.clone().unwrap_or_default();
        let window = advanced
            .horizontal_pod_autoscaler_config
            .and_then(|c| c.behavior)
            .and_then(|b| b.scale_down)
            .and_then(|r| r.stabilization_window_seconds);

        let mut triggers = Vec::new();
        let mut trigger_problems = Vec::new();
        for (index, trigger) in spec.triggers.iter().enumerate() {
            let mode = match trigger.type_.as_str() {
                "external" => TriggerMode::Poll,
                "external-push" => TriggerMode::Push,
                other => {
                    trigger_problems.push(format!(
                        "trigger {index}: type {other:?} is not supported by the simulated KEDA"
                    ));
                    continue;
                }
            };
            let Some(scaler_address) = trigger
                .metadata
                .get("scalerAddress")
                .filter(|a| !a.is_empty())
            else {
                trigger_problems.push(format!(
                    "trigger {index}: metadata.scalerAddress is required"
                ));
                continue;
            };
            let metric_target = match trigger.metric_type.as_deref() {
                None | Some("") | Some("AverageValue") => MetricTarget::AverageValue,
                Some("Value") => MetricTarget::Value,
                Some(other) => {
                    trigger_problems.push(format!(
                        "trigger {index}: metricType {other:?} is not supported"
                    ));
                    continue;
                }
            };
            triggers.push(ExternalTrigger {
                index,
                mode,
                scaler_address: scaler_address.clone(),
                metadata: trigger.metadata.clone(),
                metric_target,
            });
        }
        if spec.triggers.is_empty() {
            return Err(SpecError::Invalid(
                "no triggers defined in the ScaledObject".into(),
            ));
        }

        Ok(Self {
            target: ScaleTarget {
                name: target_ref.name.clone(),
                resource,
            },
            polling_interval: seconds(
                "pollingInterval",
                spec.polling_interval,
                DEFAULT_POLLING_INTERVAL,
                false,
            )?,
            cooldown: seconds(
                "cooldownPeriod",
                spec.cooldown_period,
                DEFAULT_COOLDOWN_PERIOD,
                true,
            )?,
            initial_cooldown: seconds(
                "initialCooldownPeriod",
                spec.initial_cooldown_period,
                0,
                true,
            )?,
            min_replicas,
            max_replicas,
            scale_down_stabilization: seconds(
                "stabilizationWindowSeconds",
                window,
                DEFAULT_SCALE_DOWN_STABILIZATION,
                true,
            )?,
            restore_on_delete: advanced.restore_to_original_replica_count,
            triggers,
            trigger_problems,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_follow_keda() {
        let config = ScalingConfig::from_spec_value(&json!({
            "scaleTargetRef": {"name": "app"},
            "triggers": [{"type": "external-push", "metadata": {"scalerAddress": "s.ns:9090", "httpScaledObject": "app"}}]
        }))
        .unwrap();
        assert_eq!(config.polling_interval, Duration::from_secs(30));
        assert_eq!(config.cooldown, Duration::from_secs(300));
        assert_eq!(config.initial_cooldown, Duration::ZERO);
        assert_eq!((config.min_replicas, config.max_replicas), (0, 100));
        assert_eq!(config.scale_down_stabilization, Duration::from_secs(300));
        assert!(!config.restore_on_delete);
        assert_eq!(config.target.resource.plural, "deployments");
        assert_eq!(config.target.kind_label(), "apps/v1.Deployment");
        assert_eq!(config.triggers.len(), 1);
        assert_eq!(config.triggers[0].mode, TriggerMode::Push);
        assert_eq!(config.triggers[0].metadata.len(), 2);
    }

    #[test]
    fn explicit_fields_are_honoured() {
        let config = ScalingConfig::from_spec_value(&json!({
            "scaleTargetRef": {"name": "db", "kind": "StatefulSet", "apiVersion": "apps/v1"},
            "pollingInterval": 1, "cooldownPeriod": 0, "initialCooldownPeriod": 5,
            "minReplicaCount": 2, "maxReplicaCount": 4,
            "advanced": {"restoreToOriginalReplicaCount": true, "horizontalPodAutoscalerConfig":
                {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 2}}}},
            "triggers": [{"type": "external", "metricType": "Value", "metadata": {"scalerAddress": "x:1"}},
                         {"type": "cpu", "metadata": {}}]
        }))
        .unwrap();
        assert_eq!(config.target.resource.plural, "statefulsets");
        assert_eq!(config.polling_interval, Duration::from_secs(1));
        assert_eq!(config.cooldown, Duration::ZERO);
        assert_eq!(config.initial_cooldown, Duration::from_secs(5));
        assert_eq!((config.min_replicas, config.max_replicas), (2, 4));
        assert_eq!(config.scale_down_stabilization, Duration::from_secs(2));
        assert!(config.restore_on_delete);
        assert_eq!(config.triggers[0].mode, TriggerMode::Poll);
        assert_eq!(config.triggers[0].metric_target, MetricTarget::Value);
        assert_eq!(
            config.trigger_problems.len(),
            1,
            "{:?}",
            config.trigger_problems
        );
    }

    #[test]
    fn bad_specs_are_errors_not_panics() {
        for spec in [
            json!(null),
            json!({"scaleTargetRef": {}}),
            json!({"scaleTargetRef": {"name": "a"}, "triggers": []}),
            json!({"scaleTargetRef": {"name": "a"}, "minReplicaCount": 3, "maxReplicaCount": 2,
                   "triggers": [{"type": "external", "metadata": {"scalerAddress": "x:1"}}]}),
            json!({"scaleTargetRef": {"name": "a"}, "cooldownPeriod": 1_i64 << 40,
                   "triggers": [{"type": "external", "metadata": {"scalerAddress": "x:1"}}]}),
            json!({"scaleTargetRef": {"name": "a"}, "pollingInterval": 0,
                   "triggers": [{"type": "external", "metadata": {"scalerAddress": "x:1"}}]}),
            json!({"scaleTargetRef": {"name": "a"}, "triggers": [{"type": "external", "metadata": {"n": 1}}]}),
        ] {
            assert!(ScalingConfig::from_spec_value(&spec).is_err(), "{spec}");
        }
    }
}
