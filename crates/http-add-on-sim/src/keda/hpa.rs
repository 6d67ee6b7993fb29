//! The HorizontalPodAutoscaler KEDA keeps for a ScaledObject (`keda-hpa-<name>`): built from
//! the scalers' `GetMetricSpec` answers, and rebuilt (specs read again) only when KEDA
//! reconciles the ScaledObject — its spec changed, or the HPA's labels or annotations changed
//! (KEDA's controller watches its HPAs with exactly those predicates). Between two rebuilds the
//! metric names and targets stay what they were, as on a real cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{ApiResource, DynamicObject};
use serde_json::{Value, json};

use super::spec::{MetricTarget, ScalingConfig};

/// Field manager of the stand-in's HPA writes (KEDA's operator).
pub(crate) const FIELD_MANAGER: &str = "keda-operator";

/// One external metric of the HPA.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct HpaMetric {
    /// `s<trigger index>-<metric name>`.
    pub name: String,
    /// The target (`targetSizeFloat` when positive, else `targetSize`).
    pub target: f64,
    /// `AverageValue` or `Value`.
    pub kind: MetricTarget,
}

/// The `autoscaling/v2` HorizontalPodAutoscaler resource.
pub(crate) fn resource() -> ApiResource {
    ApiResource::erase::<HorizontalPodAutoscaler>(&())
}

/// KEDA's HPA name: `spec.advanced.horizontalPodAutoscalerConfig.name`, else `keda-hpa-<name>`.
pub(crate) fn name_for(scaled_object: &str, spec: &Value) -> String {
    spec.pointer("/advanced/horizontalPodAutoscalerConfig/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map_or_else(|| format!("keda-hpa-{scaled_object}"), str::to_owned)
}

/// A quantity as KEDA writes targets (milli-units when not whole): `100`, `2500m`.
pub(crate) fn quantity(value: f64) -> String {
    let millis = (value * 1000.0).round() as i64;
    if millis % 1000 == 0 {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

/// The HPA object (for a server-side apply) of `scaled_object` with these metrics.
pub(crate) fn object(
    scaled_object: &DynamicObject,
    name: &str,
    config: &ScalingConfig,
    metrics: &[HpaMetric],
) -> Value {
    let so_name = scaled_object.metadata.name.clone().unwrap_or_default();
    let target = &config.target;
    let metrics: Vec<Value> = metrics
        .iter()
        .map(|m| {
            let target = match m.kind {
                MetricTarget::AverageValue => {
                    json!({"type": "AverageValue", "averageValue": quantity(m.target)})
                }
                MetricTarget::Value => json!({"type": "Value", "value": quantity(m.target)}),
            };
            json!({
                "type": "External",
                "external": {
                    "metric": {
                        "name": m.name,
                        "selector": {"matchLabels": {"scaledobject.keda.sh/name": so_name}},
                    },
                    "target": target,
                },
            })
        })
        .collect();
    let labels = BTreeMap::from([
        ("app.kubernetes.io/managed-by", "keda-operator"),
        ("app.kubernetes.io/name", name),
        ("app.kubernetes.io/part-of", so_name.as_str()),
        ("scaledobject.keda.sh/name", so_name.as_str()),
    ]);
    json!({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": name,
            "labels": labels,
            "ownerReferences": [{
                "apiVersion": "keda.sh/v1alpha1",
                "kind": "ScaledObject",
                "name": so_name,
                "uid": scaled_object.metadata.uid.clone().unwrap_or_default(),
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": {
            "scaleTargetRef": {
                "apiVersion": target.resource.api_version,
                "kind": target.resource.kind,
                "name": target.name,
            },
            "minReplicas": config.min_replicas.max(1),
            "maxReplicas": config.max_replicas,
            "metrics": metrics,
        },
    })
}

/// The labels and annotations of an HPA: a change to either makes KEDA rebuild it.
pub(crate) fn watched_metadata(
    hpa: &DynamicObject,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    (
        hpa.metadata.labels.clone().unwrap_or_default(),
        hpa.metadata.annotations.clone().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_whole_or_milli() {
        assert_eq!(quantity(100.0), "100");
        assert_eq!(quantity(2.5), "2500m");
        assert_eq!(quantity(0.001), "1m");
    }

    #[test]
    fn the_name_is_keda_hpa_unless_configured() {
        assert_eq!(name_for("app", &json!({})), "keda-hpa-app");
        assert_eq!(
            name_for(
                "app",
                &json!({"advanced": {"horizontalPodAutoscalerConfig": {"name": "mine"}}})
            ),
            "mine"
        );
    }
}
