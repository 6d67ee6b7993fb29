//! Patch logic: JSON merge patch, JSON patch, strategic merge patch and server-side apply.
//!
//! Server-side apply is an approximation of the real field-management algorithm:
//! - every Apply manager's field set is recorded in `metadata.managedFields` (FieldsV1 form,
//!   one entry per manager and subresource); lists are treated as atomic;
//! - applying deep-merges the applied object into the live one (maps merge, scalars and lists
//!   are replaced);
//! - fields that the manager applied last time but omits now are removed, unless another Apply
//!   manager's field set also contains them;
//! - without `force`, a field that another Apply manager owns with a different value is a
//!   conflict (409); `Update` writers (PUT, merge/JSON patches) own no fields here, so they never
//!   conflict, and a forced apply does not take ownership away from the other manager.
//!
//! Strategic merge patch supports the common directives (`$patch`, `$setElementOrder`,
//! `$retainKeys`, `$deleteFromPrimitiveList`) and merges the well-known keyed lists of built-in
//! types (containers by name, ports by port, conditions by type, ...).

use serde_json::{Map, Value, json};

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

fn merge_key(field: &str, sample: &Value) -> Option<&'static str> {
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

fn is_set_list(field: &str) -> bool {
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

/// Which part of an object a server-side apply manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyScope {
    /// Everything but `.status`.
    Main,
    /// Only `.status`.
    Status,
}

impl ApplyScope {
    fn subresource(self) -> Option<&'static str> {
        match self {
            Self::Main => None,
            Self::Status => Some("status"),
        }
    }
}

/// The FieldsV1 set of an applied object (restricted to the scope).
pub fn field_set(applied: &Value, scope: ApplyScope) -> Value {
    fn tree(v: &Value) -> Value {
        match v {
            Value::Object(m) if !m.is_empty() => {
                let mut out = Map::new();
                out.insert(".".into(), json!({}));
                for (k, c) in m {
                    out.insert(format!("f:{k}"), tree(c));
                }
                Value::Object(out)
            }
            _ => json!({}),
        }
    }
    let mut out = Map::new();
    let Some(obj) = applied.as_object() else {
        return Value::Object(out);
    };
    for (k, v) in obj {
        match (k.as_str(), scope) {
            ("apiVersion" | "kind", _) => {}
            ("metadata", ApplyScope::Main) => {
                let mut meta = Map::new();
                meta.insert(".".into(), json!({}));
                for mk in ["labels", "annotations", "finalizers", "ownerReferences"] {
                    if let Some(mv) = v.get(mk) {
                        meta.insert(format!("f:{mk}"), tree(mv));
                    }
                }
                // Always present, so that pruning never removes metadata as a whole.
                out.insert("f:metadata".into(), Value::Object(meta));
            }
            ("status", ApplyScope::Status) => {
                out.insert("f:status".into(), tree(v));
            }
            (_, ApplyScope::Main) if k != "status" && k != "metadata" => {
                out.insert(format!("f:{k}"), tree(v));
            }
            _ => {}
        }
    }
    Value::Object(out)
}

fn set_contains(set: &Value, path: &[String]) -> bool {
    let mut cur = set;
    for p in path {
        match cur.get(p) {
            Some(next) => cur = next,
            None => return false,
        }
    }
    true
}

fn prune(live: &mut Value, prev: &Value, new: &Value, others: &[Value], path: &mut Vec<String>) {
    let Some(prev) = prev.as_object() else { return };
    for (fk, child_prev) in prev {
        let Some(field) = fk.strip_prefix("f:") else {
            continue;
        };
        path.push(fk.clone());
        match new.get(fk) {
            None => {
                let structural =
                    path.len() == 1 && matches!(field, "metadata" | "apiVersion" | "kind");
                if !structural
                    && !others.iter().any(|o| set_contains(o, path))
                    && let Some(m) = live.as_object_mut()
                {
                    m.remove(field);
                }
            }
            Some(child_new) => {
                if let Some(child_live) = live.get_mut(field) {
                    prune(child_live, child_prev, child_new, others, path);
                }
            }
        }
        path.pop();
    }
}

fn deep_merge(live: &mut Value, applied: &Value) {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) => {
            for (k, v) in a {
                match l.get_mut(k) {
                    Some(lv) if lv.is_object() && v.is_object() => deep_merge(lv, v),
                    _ => {
                        l.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (l, a) => *l = a.clone(),
    }
}

fn restrict(applied: &Value, scope: ApplyScope) -> Value {
    let mut out = Map::new();
    if let Some(obj) = applied.as_object() {
        for (k, v) in obj {
            match (k.as_str(), scope) {
                ("apiVersion" | "kind", _) => {}
                ("metadata", ApplyScope::Main) => {
                    let meta: Map<String, Value> =
                        ["labels", "annotations", "finalizers", "ownerReferences"]
                            .iter()
                            .filter_map(|mk| v.get(*mk).map(|mv| (mk.to_string(), mv.clone())))
                            .collect();
                    out.insert("metadata".into(), Value::Object(meta));
                }
                ("status", ApplyScope::Status) => {
                    out.insert(k.clone(), v.clone());
                }
                (_, ApplyScope::Main) if k != "status" && k != "metadata" => {
                    out.insert(k.clone(), v.clone());
                }
                _ => {}
            }
        }
    }
    Value::Object(out)
}

/// A field another Apply manager owns with a different value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyConflict {
    /// The other manager.
    pub manager: String,
    /// The apiVersion the other manager applied with.
    pub api_version: String,
    /// The field, e.g. `.spec.replicas`.
    pub path: String,
}

/// Leaf paths (field names) of a FieldsV1 set.
fn leaf_paths(set: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let children: Vec<(&String, &Value)> = set
        .as_object()
        .map(|m| m.iter().filter(|(k, _)| k.starts_with("f:")).collect())
        .unwrap_or_default();
    if children.is_empty() {
        // A map node (with ".") without fields owns no leaf; `{}` is a leaf.
        if !prefix.is_empty() && set.get(".").is_none() {
            out.push(prefix.clone());
        }
        return;
    }
    for (k, v) in children {
        prefix.push(k.clone());
        leaf_paths(v, prefix, out);
        prefix.pop();
    }
}

fn value_at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter()
        .try_fold(v, |cur, f| cur.get(f.trim_start_matches("f:")))
}

/// Server-side applies `applied` onto `live` for `manager`, updating `metadata.managedFields`.
/// `time` is the timestamp recorded in the managed fields entry. Without `force`, fields that
/// another Apply manager owns with a different value are reported as conflicts and nothing
/// changes.
#[allow(clippy::too_many_arguments)]
pub fn server_side_apply(
    live: &mut Value,
    applied: &Value,
    manager: &str,
    force: bool,
    scope: ApplyScope,
    api_version: &str,
    time: &str,
) -> Result<(), Vec<ApplyConflict>> {
    let entries: Vec<Value> = live
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let sub = scope.subresource();
    let is_mine = |e: &Value| {
        e.get("manager").and_then(Value::as_str) == Some(manager)
            && e.get("operation").and_then(Value::as_str) == Some("Apply")
            && e.get("subresource").and_then(Value::as_str) == sub
    };
    let prev = entries
        .iter()
        .find(|e| is_mine(e))
        .and_then(|e| e.get("fieldsV1"))
        .cloned()
        .unwrap_or(json!({}));
    let others: Vec<Value> = entries
        .iter()
        .filter(|e| !is_mine(e) && e.get("operation").and_then(Value::as_str) == Some("Apply"))
        .filter_map(|e| e.get("fieldsV1").cloned())
        .collect();
    let new_set = field_set(applied, scope);
    if !force {
        let mut leaves = vec![];
        leaf_paths(&new_set, &mut vec![], &mut leaves);
        let conflicts: Vec<ApplyConflict> = entries
            .iter()
            .filter(|e| !is_mine(e) && e.get("operation").and_then(Value::as_str) == Some("Apply"))
            .flat_map(|e| {
                let set = e.get("fieldsV1").cloned().unwrap_or(json!({}));
                let other = e
                    .get("manager")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let other_version = e
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                leaves
                    .iter()
                    .filter(|p| set_contains(&set, p) && value_at(live, p) != value_at(applied, p))
                    .map(|p| ApplyConflict {
                        manager: other.clone(),
                        api_version: other_version.clone(),
                        path: p
                            .iter()
                            .map(|f| format!(".{}", f.trim_start_matches("f:")))
                            .collect(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        if !conflicts.is_empty() {
            return Err(conflicts);
        }
    }
    let had_entry = entries.iter().any(&is_mine);
    let before = live.clone();
    prune(live, &prev, &new_set, &others, &mut vec![]);
    deep_merge(live, &restrict(applied, scope));
    // Like kube-apiserver, an apply that changes neither the object nor the manager's field set
    // is a no-op: the managedFields timestamp stays, so the resourceVersion does not move.
    if had_entry && prev == new_set && *live == before {
        return Ok(());
    }
    let mut entries: Vec<Value> = entries.into_iter().filter(|e| !is_mine(e)).collect();
    let mut entry = json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": api_version,
        "time": time,
        "fieldsType": "FieldsV1",
        "fieldsV1": new_set,
    });
    if let Some(s) = sub {
        entry["subresource"] = json!(s);
    }
    entries.push(entry);
    if let Some(meta) = live.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("managedFields".into(), Value::Array(entries));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn apply_removes_fields_the_manager_dropped() {
        let mut live = json!({"metadata": {"name": "x"}, "spec": {"a": 1, "b": 2, "c": 3}});
        server_side_apply(
            &mut live,
            &json!({"spec": {"a": 1, "b": 2}}),
            "m1",
            true,
            ApplyScope::Main,
            "v1",
            "t",
        )
        .unwrap();
        server_side_apply(
            &mut live,
            &json!({"spec": {"c": 4}}),
            "m2",
            true,
            ApplyScope::Main,
            "v1",
            "t",
        )
        .unwrap();
        server_side_apply(
            &mut live,
            &json!({"spec": {"a": 5}}),
            "m1",
            true,
            ApplyScope::Main,
            "v1",
            "t",
        )
        .unwrap();
        assert_eq!(live["spec"], json!({"a": 5, "c": 4}));
        let conflict = server_side_apply(
            &mut live,
            &json!({"spec": {"c": 1}}),
            "m1",
            false,
            ApplyScope::Main,
            "v1",
            "t",
        );
        assert_eq!(conflict.unwrap_err()[0].path, ".spec.c");
        assert_eq!(live["spec"]["c"], 4, "a conflicting apply changes nothing");
        assert_eq!(
            live["metadata"]["managedFields"].as_array().map(Vec::len),
            Some(2)
        );
    }
}
