//! Defaulting and validation run on every write: custom resources against their CRD's
//! `openAPIV3Schema` (through [`crate::schema::validate`]), a few built-in types by hand
//! (Deployments, Services with ClusterIP allocation, Pods, Namespaces) and
//! CustomResourceDefinitions themselves (names, versions, status conditions).

use std::collections::HashSet;

use serde_json::{Map, Value, json};

use super::super::error::{ApiError, ApiResult, Cause, Target};
use super::super::registry::ResourceType;
use super::super::selector::LabelSelector;
use super::{Cluster, meta_str, now, random_u64, selector_string};

/// A random address in 127.128.0.0/10, avoiding .0 and .255 last octets and `taken`.
fn random_cluster_ip(taken: &HashSet<String>) -> String {
    loop {
        let x = random_u64();
        // 127.128.0.0/10: the second octet ranges over 128..=191.
        let (b, c, d) = (
            128 + (x % 64) as u8,
            ((x >> 8) % 256) as u8,
            1 + ((x >> 16) % 254) as u8,
        );
        let ip = format!("127.{b}.{c}.{d}");
        if !taken.contains(&ip) {
            return ip;
        }
    }
}

impl Cluster {
    /// Type-specific defaulting and validation, run on every write.
    pub(super) fn prepare(
        &self,
        rt: &ResourceType,
        version: &str,
        obj: &mut Value,
        old: Option<&Value>,
    ) -> ApiResult<()> {
        let name = meta_str(obj, "name").unwrap_or_default().to_string();
        let invalid = |causes: Vec<Cause>| {
            ApiError::invalid(
                Target {
                    group: &rt.group,
                    kind: &rt.kind,
                    name: &name,
                },
                causes,
            )
        };
        if rt.custom {
            let schema = rt
                .schemas
                .get(version)
                .or_else(|| rt.schemas.get(&rt.versions[0]));
            if let Some(schema) = schema {
                let validate = if crate::keda::crd::validates_strictly(&rt.group, &rt.plural) {
                    crate::schema::validate_strict
                } else {
                    crate::schema::validate
                };
                validate(schema, obj, old).map_err(|errs| {
                    invalid(
                        errs.iter()
                            .map(|e| {
                                let field = if e.path.is_empty() {
                                    "<nil>".to_string()
                                } else {
                                    e.path.clone()
                                };
                                let full = e.to_string();
                                let message = full
                                    .strip_prefix(&format!("{field}: "))
                                    .unwrap_or(&full)
                                    .to_string();
                                Cause { field, message }
                            })
                            .collect(),
                    )
                })?;
            }
            obj["apiVersion"] = json!(rt.api_version(&rt.versions[0]));
            return Ok(());
        }
        match (rt.group.as_str(), rt.plural.as_str()) {
            ("apps", "deployments" | "replicasets" | "statefulsets") => {
                default_workload(rt, obj).map_err(|c| invalid(vec![c]))?
            }
            ("", "services") => self.default_service(obj, old),
            ("", "secrets") if obj.get("type").is_none_or(|t| t.as_str() == Some("")) => {
                obj["type"] = json!("Opaque")
            }
            ("", "pods") if old.is_none() => obj["status"] = json!({"phase": "Pending"}),
            ("", "namespaces") if obj.pointer("/status/phase").is_none() => {
                obj["status"] = json!({"phase": "Active"})
            }
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                prepare_crd(obj, &name, old).map_err(|c| invalid(vec![c]))?
            }
            _ => {}
        }
        Ok(())
    }

    /// Service defaults; allocates `spec.clusterIP` unless headless or already set, and keeps
    /// the allocated address across updates that omit it.
    fn default_service(&self, obj: &mut Value, old: Option<&Value>) {
        let spec = &mut obj["spec"];
        if !spec.is_object() {
            *spec = json!({});
        }
        if spec.get("type").is_none() {
            spec["type"] = json!("ClusterIP");
        }
        if spec.get("sessionAffinity").is_none() {
            spec["sessionAffinity"] = json!("None");
        }
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports {
                if p.get("protocol").is_none() {
                    p["protocol"] = json!("TCP");
                }
                if p.get("targetPort").is_none() {
                    p["targetPort"] = p.get("port").cloned().unwrap_or(Value::Null);
                }
            }
        }
        if spec.get("type").and_then(Value::as_str) == Some("ExternalName") {
            return;
        }
        let old_ip = old
            .and_then(|o| o.pointer("/spec/clusterIP"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let ip = spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(String::from);
        let ip = match (ip, old_ip) {
            (Some(ip), _) => ip,
            (None, Some(old)) => old.to_string(),
            (None, None) => {
                let taken: HashSet<String> = self
                    .store
                    .list("", "services", None)
                    .filter_map(|(_, s)| {
                        s.pointer("/spec/clusterIP")
                            .and_then(Value::as_str)
                            .map(String::from)
                    })
                    .collect();
                random_cluster_ip(&taken)
            }
        };
        spec["clusterIP"] = json!(ip);
        spec["clusterIPs"] = json!([ip]);
        if spec.get("ipFamilies").is_none() {
            spec["ipFamilies"] = json!(["IPv4"]);
        }
        if spec.get("ipFamilyPolicy").is_none() {
            spec["ipFamilyPolicy"] = json!("SingleStack");
        }
        if spec.get("internalTrafficPolicy").is_none() {
            spec["internalTrafficPolicy"] = json!("Cluster");
        }
    }
}

/// Defaults of apps/v1 workloads and the selector/template check.
fn default_workload(rt: &ResourceType, obj: &mut Value) -> Result<(), Cause> {
    let spec = &mut obj["spec"];
    if spec.get("replicas").is_none_or(Value::is_null) {
        spec["replicas"] = json!(1);
    }
    if spec.get("revisionHistoryLimit").is_none() {
        spec["revisionHistoryLimit"] = json!(10);
    }
    if rt.plural == "deployments" {
        if spec.get("progressDeadlineSeconds").is_none() {
            spec["progressDeadlineSeconds"] = json!(600);
        }
        if spec
            .get("strategy")
            .is_none_or(|s| s.as_object().is_some_and(Map::is_empty))
        {
            spec["strategy"] = json!({
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
            });
        }
    }
    if let Some(containers) = spec
        .pointer_mut("/template/spec/containers")
        .and_then(Value::as_array_mut)
    {
        for port in containers
            .iter_mut()
            .filter_map(|c| c.get_mut("ports").and_then(Value::as_array_mut))
            .flatten()
        {
            if port.get("protocol").is_none_or(|p| p.as_str() == Some("")) {
                port["protocol"] = json!("TCP");
            }
        }
    }
    let selector = spec.get("selector").cloned().unwrap_or(Value::Null);
    if selector.is_null() {
        return Err(Cause {
            field: "spec.selector".into(),
            message: "Required value".into(),
        });
    }
    let labels = spec
        .pointer("/template/metadata/labels")
        .cloned()
        .unwrap_or(json!({}));
    let sel = LabelSelector::parse(&selector_string(&selector)).unwrap_or_default();
    if !sel.matches(&json!({"metadata": {"labels": labels}})) {
        return Err(Cause {
            field: "spec.template.metadata.labels".into(),
            message: format!(
                "Invalid value: {labels}: `selector` does not match template `labels`"
            ),
        });
    }
    Ok(())
}

/// Defaults and validates a CustomResourceDefinition and fills its status.
fn prepare_crd(obj: &mut Value, name: &str, old: Option<&Value>) -> Result<(), Cause> {
    let invalid = |field: &str, message: String| Cause {
        field: field.into(),
        message,
    };
    let spec = obj
        .get_mut("spec")
        .ok_or_else(|| invalid("spec", "Required value".into()))?;
    let group = spec
        .get("group")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let names = spec
        .get_mut("names")
        .ok_or_else(|| invalid("spec.names", "Required value".into()))?;
    let plural = names
        .get("plural")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let kind = names
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if plural.is_empty() {
        return Err(invalid("spec.names.plural", "Required value".into()));
    }
    if kind.is_empty() {
        return Err(invalid("spec.names.kind", "Required value".into()));
    }
    if name != format!("{plural}.{group}") {
        return Err(invalid(
            "metadata.name",
            format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    if names.get("singular").is_none() {
        names["singular"] = json!(kind.to_lowercase());
    }
    if names.get("listKind").is_none() {
        names["listKind"] = json!(format!("{kind}List"));
    }
    let accepted = names.clone();
    if spec.get("scope").is_none() {
        spec["scope"] = json!("Namespaced");
    }
    let versions = spec
        .get("versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let storage: Vec<String> = versions
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .filter_map(|v| v.get("name").and_then(Value::as_str).map(String::from))
        .collect();
    if storage.len() != 1 {
        return Err(invalid(
            "spec.versions",
            format!(
                "Invalid value: {}: must have exactly one version marked as storage version",
                json!(versions)
            ),
        ));
    }
    if ResourceType::from_crd(obj).is_none() {
        return Err(invalid(
            "spec",
            "Invalid value: incomplete CustomResourceDefinition".into(),
        ));
    }
    // Keep the old status (and its transition times) while names and versions are unchanged.
    if let Some(old_status) = old.and_then(|o| o.get("status"))
        && old_status.get("acceptedNames") == Some(&accepted)
        && old_status.get("storedVersions") == Some(&json!(storage))
    {
        obj["status"] = old_status.clone();
        return Ok(());
    }
    let t = now();
    obj["status"] = json!({
        "acceptedNames": accepted,
        "conditions": [
            {
                "type": "NamesAccepted",
                "status": "True",
                "reason": "NoConflicts",
                "message": "no conflicts found",
                "lastTransitionTime": t,
            },
            {
                "type": "Established",
                "status": "True",
                "reason": "InitialNamesAccepted",
                "message": "the initial names have been accepted",
                "lastTransitionTime": t,
            },
        ],
        "storedVersions": storage,
    });
    Ok(())
}
