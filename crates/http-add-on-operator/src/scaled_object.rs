//! The pure part of the HTTPScaledObject reconciler: the desired KEDA ScaledObject, the status
//! strings, and whether an apply would change the live ScaledObject.

use std::collections::BTreeMap;

use http_add_on_types::crd::http_scaled_object::{
    DEFAULT_MAX_REPLICAS, DEFAULT_MIN_REPLICAS, DEFAULT_SCALEDOWN_PERIOD,
    ORPHAN_SCALEDOBJECT_ANNOTATION, SKIP_SCALEDOBJECT_CREATION_ANNOTATION,
};
use http_add_on_types::crd::scaled_object::{
    AdvancedConfig, EXTERNAL_PUSH_TRIGGER, ScaleTrigger, ScaledObjectTarget,
};
use http_add_on_types::crd::{HTTPScaledObject, ScaledObject, ScaledObjectSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use serde_json::Value;

/// Field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "keda-http-add-on-operator";
/// KEDA's `pollingInterval` on generated ScaledObjects (the scaler pushes activity anyway).
pub const POLLING_INTERVAL: i32 = 15;
/// Default `scaleTargetRef.apiVersion`.
pub const DEFAULT_TARGET_API_VERSION: &str = "apps/v1";
/// Default `scaleTargetRef.kind`.
pub const DEFAULT_TARGET_KIND: &str = "Deployment";
/// Annotation never copied to the ScaledObject: it describes the HTTPScaledObject's own manifest.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// True when `annotation` is set to `"true"` on `hso`.
pub fn annotation_is_true(hso: &HTTPScaledObject, annotation: &str) -> bool {
    hso.annotations()
        .get(annotation)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// True when the HTTPScaledObject asks for no ScaledObject.
pub fn skips_scaled_object(hso: &HTTPScaledObject) -> bool {
    annotation_is_true(hso, SKIP_SCALEDOBJECT_CREATION_ANNOTATION)
}

/// The ScaledObject the operator wants for `hso`: same name and namespace, labels and
/// annotations copied, owned by `hso` (unless the orphan annotation is set), one
/// `external-push` trigger pointing at `scaler_address`.
pub fn desired_scaled_object(hso: &HTTPScaledObject, scaler_address: &str) -> ScaledObject {
    let spec = &hso.spec;
    let target = &spec.scale_target_ref;
    let replicas = spec.replicas.clone().unwrap_or_default();
    let annotations: BTreeMap<String, String> = hso
        .annotations()
        .iter()
        .filter(|(k, _)| k.as_str() != LAST_APPLIED_ANNOTATION)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let owner_references = (!annotation_is_true(hso, ORPHAN_SCALEDOBJECT_ANNOTATION))
        .then(|| owner_reference(hso))
        .flatten()
        .map(|r| vec![r]);
    let metadata = ObjectMeta {
        name: Some(hso.name_any()),
        namespace: hso.namespace(),
        labels: (!hso.labels().is_empty()).then(|| hso.labels().clone()),
        annotations: (!annotations.is_empty()).then_some(annotations),
        owner_references,
        ..ObjectMeta::default()
    };
    let trigger = ScaleTrigger {
        type_: EXTERNAL_PUSH_TRIGGER.to_owned(),
        name: None,
        metadata: BTreeMap::from([
            ("scalerAddress".to_owned(), scaler_address.to_owned()),
            ("httpScaledObject".to_owned(), hso.name_any()),
        ]),
    };
    ScaledObject {
        metadata,
        spec: ScaledObjectSpec {
            scale_target_ref: ScaledObjectTarget {
                name: target.name.clone(),
                api_version: Some(target_api_version(hso).to_owned()),
                kind: Some(target_kind(hso).to_owned()),
            },
            polling_interval: Some(POLLING_INTERVAL),
            cooldown_period: Some(spec.scaledown_period.unwrap_or(DEFAULT_SCALEDOWN_PERIOD)),
            initial_cooldown_period: spec.initial_cooldown_period,
            min_replica_count: Some(replicas.min.unwrap_or(DEFAULT_MIN_REPLICAS)),
            max_replica_count: Some(replicas.max.unwrap_or(DEFAULT_MAX_REPLICAS)),
            advanced: Some(AdvancedConfig {
                restore_to_original_replica_count: Some(true),
                horizontal_pod_autoscaler_config: None,
            }),
            triggers: vec![trigger],
        },
        status: None,
    }
}

/// The controlling owner reference to `hso` (`None` if it has no uid yet).
pub fn owner_reference(hso: &HTTPScaledObject) -> Option<OwnerReference> {
    let mut reference = hso.controller_owner_ref(&())?;
    reference.block_owner_deletion = Some(true);
    Some(reference)
}

/// True when `so` has a controlling owner reference to the object with `uid`.
pub fn is_controlled_by(so: &ScaledObject, uid: &str) -> bool {
    so.owner_references()
        .iter()
        .any(|r| r.uid == uid && r.controller == Some(true))
}

fn target_api_version(hso: &HTTPScaledObject) -> &str {
    non_empty(hso.spec.scale_target_ref.api_version.as_deref())
        .unwrap_or(DEFAULT_TARGET_API_VERSION)
}

fn target_kind(hso: &HTTPScaledObject) -> &str {
    non_empty(hso.spec.scale_target_ref.kind.as_deref()).unwrap_or(DEFAULT_TARGET_KIND)
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

/// `status.targetWorkload`: `apiVersion/kind/name`, e.g. `apps/v1/Deployment/app`.
pub fn target_workload(hso: &HTTPScaledObject) -> String {
    format!(
        "{}/{}/{}",
        target_api_version(hso),
        target_kind(hso),
        hso.spec.scale_target_ref.name
    )
}

/// `status.targetService`: `service:port` or `service:portName`.
pub fn target_service(hso: &HTTPScaledObject) -> String {
    let target = &hso.spec.scale_target_ref;
    match (target.port, &target.port_name) {
        (Some(port), _) => format!("{}:{port}", target.service),
        (None, Some(name)) => format!("{}:{name}", target.service),
        (None, None) => target.service.clone(),
    }
}

/// Whether applying `desired` as [`FIELD_MANAGER`] would change `live`.
///
/// True when a value we set differs (arrays must match element by element, except owner
/// references, where ours must be present among others), or when `live` still holds a field we
/// applied earlier but no longer set (read from our `managedFields` entry), or when we have no
/// entry at all. Skipping no-op applies saves API writes and keeps watch events from looping.
pub fn needs_apply(live: &ScaledObject, desired: &ScaledObject) -> bool {
    let (Ok(live_json), Ok(desired_json)) =
        (serde_json::to_value(live), serde_json::to_value(desired))
    else {
        return true;
    };
    let mut desired_fields = desired_json.clone();
    if let Some(meta) = desired_fields
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
    {
        meta.retain(|k, _| matches!(k.as_str(), "labels" | "annotations" | "ownerReferences"));
    }
    if let Some(obj) = desired_fields.as_object_mut() {
        obj.remove("status");
        obj.remove("apiVersion");
        obj.remove("kind");
    }
    if !contains(&live_json, &desired_fields, false) {
        return true;
    }
    let Some(owned) = live
        .managed_fields()
        .iter()
        .find(|e| {
            e.manager.as_deref() == Some(FIELD_MANAGER)
                && e.operation.as_deref() == Some("Apply")
                && e.subresource.as_deref().is_none_or(str::is_empty)
        })
        .and_then(|e| e.fields_v1.as_ref())
    else {
        return true;
    };
    !owned_fields_within(&owned.0, &desired_json)
}

/// `desired` is contained in `live`: objects key by key, scalars equal, arrays element-wise
/// (or, for `ownerReferences`, each desired element present somewhere).
fn contains(live: &Value, desired: &Value, any_order: bool) -> bool {
    match (live, desired) {
        (Value::Object(l), Value::Object(d)) => d.iter().all(|(k, dv)| {
            l.get(k)
                .is_some_and(|lv| contains(lv, dv, k == "ownerReferences"))
        }),
        (Value::Array(l), Value::Array(d)) if any_order => d
            .iter()
            .all(|dv| l.iter().any(|lv| contains(lv, dv, false))),
        (Value::Array(l), Value::Array(d)) => {
            l.len() == d.len() && l.iter().zip(d).all(|(lv, dv)| contains(lv, dv, false))
        }
        (l, d) => l == d,
    }
}

/// Every `f:` field of the managed-fields set `owned` is still present in `desired`.
fn owned_fields_within(owned: &Value, desired: &Value) -> bool {
    let Some(owned) = owned.as_object() else {
        return true;
    };
    owned.iter().all(|(k, child)| match k.strip_prefix("f:") {
        // `k:`, `v:`, `i:` and `.` entries describe list items and the field itself.
        None => true,
        Some(field) => match desired.get(field) {
            None => false,
            Some(d) if d.is_object() => owned_fields_within(child, d),
            Some(_) => true,
        },
    })
}

#[cfg(test)]
mod tests {
    use http_add_on_types::crd::http_scaled_object::{
        HTTPScaledObjectSpec, ReplicaStruct, ScaleTargetRef,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
    use serde_json::json;

    use super::*;

    const SCALER: &str = "keda-add-ons-http-external-scaler.keda:8091";

    fn hso() -> HTTPScaledObject {
        let mut hso = HTTPScaledObject::new(
            "app",
            HTTPScaledObjectSpec {
                hosts: vec!["app.example.com".into()],
                scale_target_ref: ScaleTargetRef {
                    name: "app-deploy".into(),
                    service: "app-svc".into(),
                    port: Some(8080),
                    ..ScaleTargetRef::default()
                },
                ..HTTPScaledObjectSpec::default()
            },
        );
        hso.metadata.namespace = Some("apps".into());
        hso.metadata.uid = Some("uid-1".into());
        hso
    }

    #[test]
    fn defaults_when_fields_are_unset() {
        let so = desired_scaled_object(&hso(), SCALER);
        assert_eq!(so.metadata.name.as_deref(), Some("app"));
        assert_eq!(so.metadata.namespace.as_deref(), Some("apps"));
        assert_eq!(so.spec.polling_interval, Some(15));
        assert_eq!(so.spec.min_replica_count, Some(0));
        assert_eq!(so.spec.max_replica_count, Some(100));
        assert_eq!(so.spec.cooldown_period, Some(300));
        assert_eq!(so.spec.initial_cooldown_period, None);
        assert_eq!(
            so.spec
                .advanced
                .as_ref()
                .unwrap()
                .restore_to_original_replica_count,
            Some(true)
        );
        assert_eq!(
            so.spec.scale_target_ref,
            ScaledObjectTarget {
                name: "app-deploy".into(),
                api_version: Some("apps/v1".into()),
                kind: Some("Deployment".into()),
            }
        );
        assert_eq!(so.metadata.labels, None);
        assert_eq!(so.metadata.annotations, None);
    }

    #[test]
    fn one_external_push_trigger() {
        let so = desired_scaled_object(&hso(), SCALER);
        assert_eq!(so.spec.triggers.len(), 1);
        let t = &so.spec.triggers[0];
        assert_eq!(t.type_, "external-push");
        assert_eq!(
            t.metadata,
            BTreeMap::from([
                ("scalerAddress".to_owned(), SCALER.to_owned()),
                ("httpScaledObject".to_owned(), "app".to_owned()),
            ])
        );
        let json = serde_json::to_value(&so).unwrap();
        assert_eq!(json["apiVersion"], "keda.sh/v1alpha1");
        assert_eq!(json["kind"], "ScaledObject");
        assert_eq!(json["spec"]["triggers"][0]["type"], "external-push");
        assert!(json.get("status").is_none_or(Value::is_null));
    }

    #[test]
    fn replicas_and_cooldowns_from_the_spec() {
        let mut h = hso();
        h.spec.replicas = Some(ReplicaStruct {
            min: Some(2),
            max: Some(7),
        });
        h.spec.scaledown_period = Some(60);
        h.spec.initial_cooldown_period = Some(30);
        let so = desired_scaled_object(&h, SCALER);
        assert_eq!(so.spec.min_replica_count, Some(2));
        assert_eq!(so.spec.max_replica_count, Some(7));
        assert_eq!(so.spec.cooldown_period, Some(60));
        assert_eq!(so.spec.initial_cooldown_period, Some(30));
        h.spec.replicas = Some(ReplicaStruct {
            min: None,
            max: Some(3),
        });
        let so = desired_scaled_object(&h, SCALER);
        assert_eq!(
            (so.spec.min_replica_count, so.spec.max_replica_count),
            (Some(0), Some(3))
        );
    }

    #[test]
    fn target_kind_and_api_version_are_copied() {
        let mut h = hso();
        h.spec.scale_target_ref.kind = Some("StatefulSet".into());
        h.spec.scale_target_ref.api_version = Some("apps/v1beta2".into());
        let so = desired_scaled_object(&h, SCALER);
        assert_eq!(
            so.spec.scale_target_ref.kind.as_deref(),
            Some("StatefulSet")
        );
        assert_eq!(
            so.spec.scale_target_ref.api_version.as_deref(),
            Some("apps/v1beta2")
        );
        assert_eq!(target_workload(&h), "apps/v1beta2/StatefulSet/app-deploy");
        assert_eq!(target_workload(&hso()), "apps/v1/Deployment/app-deploy");
    }

    #[test]
    fn labels_and_annotations_are_copied_but_not_last_applied() {
        let mut h = hso();
        h.metadata.labels = Some(BTreeMap::from([("team".into(), "a".into())]));
        h.metadata.annotations = Some(BTreeMap::from([
            ("note".into(), "x".into()),
            (LAST_APPLIED_ANNOTATION.into(), "{}".into()),
        ]));
        let so = desired_scaled_object(&h, SCALER);
        assert_eq!(so.labels(), h.labels());
        assert_eq!(
            so.annotations(),
            &BTreeMap::from([("note".to_owned(), "x".to_owned())])
        );
    }

    #[test]
    fn owner_reference_is_controller_and_blocks_deletion() {
        let so = desired_scaled_object(&hso(), SCALER);
        let refs = so.owner_references();
        assert_eq!(refs.len(), 1);
        let r = &refs[0];
        assert_eq!(r.api_version, "http.keda.sh/v1alpha1");
        assert_eq!(r.kind, "HTTPScaledObject");
        assert_eq!(r.name, "app");
        assert_eq!(r.uid, "uid-1");
        assert_eq!(r.controller, Some(true));
        assert_eq!(r.block_owner_deletion, Some(true));
        assert!(is_controlled_by(&so, "uid-1"));
        assert!(!is_controlled_by(&so, "uid-2"));
    }

    #[test]
    fn orphan_annotation_drops_the_owner_reference() {
        let mut h = hso();
        h.metadata.annotations = Some(BTreeMap::from([(
            ORPHAN_SCALEDOBJECT_ANNOTATION.to_owned(),
            "true".to_owned(),
        )]));
        let so = desired_scaled_object(&h, SCALER);
        assert!(so.metadata.owner_references.is_none());
        // The annotation itself is copied like any other.
        assert!(
            so.annotations()
                .contains_key(ORPHAN_SCALEDOBJECT_ANNOTATION)
        );
    }

    #[test]
    fn skip_annotation_must_be_true() {
        let mut h = hso();
        assert!(!skips_scaled_object(&h));
        for (value, skips) in [
            ("true", true),
            ("True", true),
            ("false", false),
            ("", false),
        ] {
            h.metadata.annotations = Some(BTreeMap::from([(
                SKIP_SCALEDOBJECT_CREATION_ANNOTATION.to_owned(),
                value.to_owned(),
            )]));
            assert_eq!(skips_scaled_object(&h), skips, "{value:?}");
        }
    }

    #[test]
    fn target_service_with_port_or_port_name() {
        let mut h = hso();
        assert_eq!(target_service(&h), "app-svc:8080");
        h.spec.scale_target_ref.port = None;
        h.spec.scale_target_ref.port_name = Some("http".into());
        assert_eq!(target_service(&h), "app-svc:http");
    }

    /// `desired` as the API server returns it after our apply: with our managed-fields entry.
    fn applied(desired: &ScaledObject) -> ScaledObject {
        let mut live = desired.clone();
        let mut fields = serde_json::to_value(desired).unwrap();
        fn to_set(v: &Value) -> Value {
            match v {
                Value::Object(m) => Value::Object(
                    m.iter()
                        .map(|(k, c)| (format!("f:{k}"), to_set(c)))
                        .collect(),
                ),
                _ => json!({}),
            }
        }
        let obj = fields.as_object_mut().unwrap();
        obj.remove("apiVersion");
        obj.remove("kind");
        obj.remove("status");
        live.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some(FIELD_MANAGER.into()),
            operation: Some("Apply".into()),
            fields_v1: Some(FieldsV1(to_set(&fields))),
            ..ManagedFieldsEntry::default()
        }]);
        live.metadata.resource_version = Some("7".into());
        live.metadata.uid = Some("so-uid".into());
        live
    }

    #[test]
    fn no_apply_when_live_matches() {
        let desired = desired_scaled_object(&hso(), SCALER);
        let mut live = applied(&desired);
        assert!(!needs_apply(&live, &desired));
        // Other writers' extra fields and owners do not matter.
        live.metadata.labels = Some(BTreeMap::from([(
            "scaledobject.keda.sh/name".into(),
            "app".into(),
        )]));
        live.metadata
            .owner_references
            .as_mut()
            .unwrap()
            .push(OwnerReference {
                uid: "other".into(),
                ..OwnerReference::default()
            });
        assert!(!needs_apply(&live, &desired));
    }

    #[test]
    fn apply_when_a_value_changed_or_a_field_was_dropped() {
        let mut h = hso();
        h.spec.initial_cooldown_period = Some(10);
        h.metadata.labels = Some(BTreeMap::from([("team".into(), "a".into())]));
        let before = desired_scaled_object(&h, SCALER);
        let live = applied(&before);
        assert!(!needs_apply(&live, &before));

        let mut changed = h.clone();
        changed.spec.replicas = Some(ReplicaStruct {
            min: Some(1),
            max: None,
        });
        assert!(needs_apply(&live, &desired_scaled_object(&changed, SCALER)));

        let mut dropped = h.clone();
        dropped.spec.initial_cooldown_period = None;
        assert!(needs_apply(&live, &desired_scaled_object(&dropped, SCALER)));

        let mut unlabelled = h.clone();
        unlabelled.metadata.labels = None;
        assert!(needs_apply(
            &live,
            &desired_scaled_object(&unlabelled, SCALER)
        ));

        let mut orphaned = h;
        orphaned.metadata.annotations = Some(BTreeMap::from([(
            ORPHAN_SCALEDOBJECT_ANNOTATION.to_owned(),
            "true".to_owned(),
        )]));
        assert!(needs_apply(
            &live,
            &desired_scaled_object(&orphaned, SCALER)
        ));
    }

    #[test]
    fn apply_when_we_never_applied() {
        let desired = desired_scaled_object(&hso(), SCALER);
        let mut live = applied(&desired);
        live.metadata.managed_fields = None;
        assert!(needs_apply(&live, &desired));
    }
}
