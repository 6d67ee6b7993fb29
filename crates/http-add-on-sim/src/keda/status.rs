//! The `status` KEDA writes on a ScaledObject: conditions and bookkeeping fields.

use serde::Serialize;

use super::spec::ScaleTarget;

/// One KEDA condition (KEDA's conditions carry no transition time).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Condition {
    /// `Ready`, `Active` or `Fallback`.
    #[serde(rename = "type")]
    pub type_: &'static str,
    /// `True`, `False` or `Unknown`.
    pub status: &'static str,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
}

/// Readiness of a ScaledObject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Not evaluated yet.
    Unknown,
    /// Target found and every scaler answered.
    Ready,
    /// Something is wrong; reason and message.
    NotReady(&'static str, String),
}

/// `Ready=False` reason: the spec is invalid.
pub const REASON_CHECK_FAILED: &str = "ScaledObjectCheckFailed";
/// `Ready=False` reason: the scale target does not exist or has no `/scale`.
pub const REASON_TARGET_NOT_FOUND: &str = "ScaleTargetNotFound";
/// `Ready=False` reason: a scaler could not be reached or answered with an error.
pub const REASON_TRIGGER_ERROR: &str = "TriggerError";

/// The status fields the stand-in owns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaledObjectStatus {
    /// Ready / Active / Fallback.
    pub conditions: Vec<Condition>,
    /// `apps/v1.Deployment`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale_target_kind: Option<String>,
    /// Group, version, kind and resource of the target.
    #[serde(rename = "scaleTargetGVKR", skip_serializing_if = "Option::is_none")]
    pub scale_target_gvkr: Option<Gvkr>,
    /// Replica count of the target when the ScaledObject was first seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_replica_count: Option<i32>,
    /// Last time a trigger was active (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_active_time: Option<String>,
    /// `s<trigger index>-<metric name>` of every metric.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub external_metric_names: Vec<String>,
    /// Name of the HPA built for the ScaledObject.
    #[serde(rename = "hpaName", skip_serializing_if = "Option::is_none")]
    pub hpa_name: Option<String>,
}

/// `status.scaleTargetGVKR`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Gvkr {
    /// API group (empty for the core group).
    pub group: String,
    /// Version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Plural resource name.
    pub resource: String,
}

impl Gvkr {
    /// The GVKR of a scale target.
    pub fn of(target: &ScaleTarget) -> Self {
        let r = &target.resource;
        Self {
            group: r.group.clone(),
            version: r.version.clone(),
            kind: r.kind.clone(),
            resource: r.plural.clone(),
        }
    }
}

/// KEDA's three conditions for the given readiness and activity.
pub fn conditions(readiness: &Readiness, active: bool) -> Vec<Condition> {
    let ready = match readiness {
        Readiness::Unknown => Condition {
            type_: "Ready",
            status: "Unknown",
            reason: "ScaledObjectCheckPending".into(),
            message: "ScaledObject is being checked".into(),
        },
        Readiness::Ready => Condition {
            type_: "Ready",
            status: "True",
            reason: "ScaledObjectReady".into(),
            message: "ScaledObject is defined correctly and is ready for scaling".into(),
        },
        Readiness::NotReady(reason, message) => Condition {
            type_: "Ready",
            status: "False",
            reason: (*reason).into(),
            message: message.clone(),
        },
    };
    let active = if active {
        Condition {
            type_: "Active",
            status: "True",
            reason: "ScalerActive".into(),
            message: "Scaling is performed because triggers are active".into(),
        }
    } else {
        Condition {
            type_: "Active",
            status: "False",
            reason: "ScalerNotActive".into(),
            message: "Scaling is not performed because triggers are not active".into(),
        }
    };
    let fallback = Condition {
        type_: "Fallback",
        status: "False",
        reason: "NoFallbackFound".into(),
        message: "No fallbacks are defined to be used".into(),
    };
    vec![ready, active, fallback]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_serializes_like_keda() {
        let status = ScaledObjectStatus {
            conditions: conditions(
                &Readiness::NotReady(REASON_TRIGGER_ERROR, "down".into()),
                true,
            ),
            original_replica_count: Some(2),
            last_active_time: Some("2026-01-01T00:00:00Z".into()),
            external_metric_names: vec!["s0-m".into()],
            ..Default::default()
        };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["conditions"][0]["type"], "Ready");
        assert_eq!(json["conditions"][0]["status"], "False");
        assert_eq!(json["conditions"][0]["reason"], "TriggerError");
        assert_eq!(json["conditions"][1]["status"], "True");
        assert_eq!(json["originalReplicaCount"], 2);
        assert_eq!(json["lastActiveTime"], "2026-01-01T00:00:00Z");
        assert_eq!(json["externalMetricNames"][0], "s0-m");
        assert!(json.get("scaleTargetKind").is_none());
    }
}
