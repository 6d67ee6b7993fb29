//! Patch logic: JSON merge patch, JSON patch and strategic merge patch (server-side apply
//! and field ownership live in [`super::fields`]).
//!
//! Strategic merge patch supports the common directives (`$patch`, `$setElementOrder`,
//! `$retainKeys`, `$deleteFromPrimitiveList`) and merges the well-known keyed lists of built-in
//! types (containers by name, ports by port, conditions by type, ...).

use serde_json::{Map, Value};

use super::error::{ApiError, ApiResult};

/// The patch formats the server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/json-patch+json`.
    Json,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml`.
    Apply,
}

impl PatchKind {
    /// From a Content-Type header.
    pub fn from_content_type(ct: &str) -> ApiResult<Self> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/json-patch+json" => Ok(Self::Json),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/apply-patch+yaml"
            | "application/apply-patch+json"
            | "application/apply-patch+cbor" => Ok(Self::Apply),
            _ => Err(ApiError::unsupported_media_type(ct)),
        }
    }
}

/// Patch formats a custom resource accepts (no strategic merge patch: CRDs have no patch
/// strategies), in the order the API server lists them in its 415 answer.
pub const CUSTOM_RESOURCE_PATCH_TYPES: [&str; 3] = [
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
];

/// Applies a JSON merge patch (RFC 7386).
pub fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// Applies a JSON patch (RFC 6902).
///
/// As in the API server (evanphx/json-patch), a `test` of `null` passes on a missing path:
/// kube-runtime's finalizer helper relies on it.
pub fn json_patch(target: &mut Value, patch: &Value) -> ApiResult<()> {
    let p: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
    let ops: Vec<json_patch::PatchOperation> =
        p.0.into_iter()
            .filter(|op| match op {
                json_patch::PatchOperation::Test(t) => {
                    !(t.value.is_null() && target.pointer(t.path.as_str()).is_none())
                }
                _ => true,
            })
            .collect();
    json_patch::patch(target, &ops).map_err(|e| ApiError::invalid_patch(e.to_string()))
}

pub(super) fn merge_key(field: &str, sample: &Value) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "ports" if sample.get("containerPort").is_some() => Some("containerPort"),
        "ports" => Some("port"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        "hostAliases" => Some("ip"),
        "topologySpreadConstraints" => Some("topologyKey"),
        _ => None,
    }
}

pub(super) fn is_set_list(field: &str) -> bool {
    field == "finalizers"
}

/// Removes strategic-merge directives from a value that is inserted as a whole.
fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(
            a.iter()
                .filter(|e| e.get("$patch").is_none())
                .map(strip_directives)
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Applies a strategic merge patch (see the module docs for what is supported).
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Value::Object(pm) = patch else {
        *target = patch.clone();
        return;
    };
    match pm.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *target = strip_directives(patch);
            return;
        }
        Some("delete") => {
            *target = Value::Object(Map::new());
            return;
        }
        _ => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(tm) = target else { return };
    if let Some(Value::Array(keep)) = pm.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        tm.retain(|k, _| keep.contains(&k.as_str()) || pm.contains_key(k));
    }
    for (k, v) in pm {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(del)) = (tm.get_mut(field), v) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        match v {
            Value::Null => {
                tm.remove(k);
            }
            Value::Object(_) => match tm.get_mut(k) {
                Some(t @ Value::Object(_)) => strategic_merge(t, v),
                _ => {
                    tm.insert(k.clone(), strip_directives(v));
                }
            },
            Value::Array(items) => {
                let sample = items.first().cloned().unwrap_or(Value::Null);
                let key = if sample.is_object() {
                    merge_key(k, &sample)
                } else {
                    None
                };
                match (tm.get_mut(k), key) {
                    (Some(Value::Array(live)), Some(key)) => {
                        if items
                            .iter()
                            .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
                        {
                            *live = items
                                .iter()
                                .filter(|i| i.get("$patch").is_none())
                                .map(strip_directives)
                                .collect();
                            continue;
                        }
                        for item in items {
                            let id = item.get(key);
                            let pos = live.iter().position(|l| l.get(key) == id && id.is_some());
                            let delete =
                                item.get("$patch").and_then(Value::as_str) == Some("delete");
                            match (pos, delete) {
                                (Some(p), true) => {
                                    live.remove(p);
                                }
                                (None, true) => {}
                                (Some(p), false) => strategic_merge(&mut live[p], item),
                                (None, false) => live.push(strip_directives(item)),
                            }
                        }
                    }
                    (Some(Value::Array(live)), None) if is_set_list(k) => {
                        for item in items {
                            if !live.contains(item) {
                                live.push(item.clone());
                            }
                        }
                    }
                    _ => {
                        tm.insert(k.clone(), strip_directives(v));
                    }
                }
            }
            scalar => {
                tm.insert(k.clone(), scalar.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn strategic_merges_containers_by_name() {
        let mut live = json!({"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}], "finalizers": ["x"]}});
        let patch = json!({"spec": {"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}], "containers": [{"name": "b", "image": "2"}, {"name": "c", "$patch": "delete"}], "finalizers": ["y"]}});
        strategic_merge(&mut live, &patch);
        assert_eq!(
            live,
            json!({"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}], "finalizers": ["x", "y"]}})
        );
    }
}
