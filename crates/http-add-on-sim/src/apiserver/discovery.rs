//! Discovery documents (`/api`, `/apis`, `/api/v1`, `/apis/<g>/<v>`), `/version`, the minimal
//! OpenAPI answers kubectl needs, and `meta.k8s.io/v1` Tables for `kubectl get`.

use serde_json::{Value, json};

use super::registry::{Registry, ResourceType};

/// `/api`.
pub fn core_versions(addr: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr}],
    })
}

fn group_doc(group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({
        "name": group,
        "versions": vs,
        "preferredVersion": vs.first().cloned().unwrap_or(Value::Null),
    })
}

/// `/apis`.
pub fn group_list(reg: &Registry) -> Value {
    let groups: Vec<Value> = reg
        .groups()
        .iter()
        .map(|(g, vs)| group_doc(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>`.
pub fn group(reg: &Registry, name: &str) -> Option<Value> {
    let groups = reg.groups();
    let (g, vs) = groups.iter().find(|(g, _)| g == name)?;
    let mut doc = group_doc(g, vs);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// What a type's main resource allows: everything, or only `create` for the review APIs.
fn resource_verbs(t: &ResourceType) -> Vec<&'static str> {
    if t.create_only {
        vec!["create"]
    } else if t.group.is_empty() && t.plural == "componentstatuses" {
        vec!["get", "list"]
    } else {
        VERBS.to_vec()
    }
}

/// Subresources beyond status and scale: (name, group, version, kind, verbs); an empty kind
/// means the type's own.
fn extra_subresources(
    t: &ResourceType,
) -> Vec<(
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Vec<&'static str>,
)> {
    match (t.group.as_str(), t.plural.as_str()) {
        ("", "pods") => vec![(
            "ephemeralcontainers",
            "",
            "v1",
            "",
            vec!["get", "patch", "update"],
        )],
        ("", "serviceaccounts") => vec![(
            "token",
            "authentication.k8s.io",
            "v1",
            "TokenRequest",
            vec!["create"],
        )],
        ("certificates.k8s.io", "certificatesigningrequests") => vec![(
            "approval",
            "certificates.k8s.io",
            "v1",
            "",
            vec!["get", "patch", "update"],
        )],
        _ => vec![],
    }
}

fn resource_entries(t: &ResourceType) -> Vec<Value> {
    let mut main = json!({
        "name": t.plural,
        "singularName": t.singular,
        "namespaced": t.namespaced,
        "kind": t.kind,
        "verbs": resource_verbs(t),
    });
    if !t.short_names.is_empty() {
        main["shortNames"] = json!(t.short_names);
    }
    if !t.categories.is_empty() {
        main["categories"] = json!(t.categories);
    }
    let mut out = vec![main];
    if t.status {
        out.push(json!({"name": format!("{}/status", t.plural), "singularName": "", "namespaced": t.namespaced, "kind": t.kind, "verbs": ["get", "patch", "update"]}));
    }
    if t.scale.is_some() {
        out.push(json!({"name": format!("{}/scale", t.plural), "singularName": "", "namespaced": t.namespaced, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
    }
    for (name, group, version, kind, verbs) in extra_subresources(t) {
        let mut entry = json!({"name": format!("{}/{name}", t.plural), "singularName": "", "namespaced": t.namespaced, "kind": if kind.is_empty() { t.kind.as_str() } else { kind }, "verbs": verbs});
        if !kind.is_empty() {
            entry["group"] = json!(group);
            entry["version"] = json!(version);
        }
        out.push(entry);
    }
    out
}

/// `/api/v1` or `/apis/<group>/<version>`.
pub fn resource_list(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let types: Vec<_> = reg
        .iter()
        .filter(|t| t.group == group && t.serves(version))
        .collect();
    if types.is_empty() {
        return None;
    }
    let resources: Vec<Value> = types.iter().flat_map(|t| resource_entries(t)).collect();
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

/// The media type of aggregated discovery (`/api`, `/apis` as one document, Kubernetes 1.30+).
pub const AGGREGATED_DISCOVERY: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// The parameters of each media range of an `Accept` header, e.g. `{g, v, as}`, in order.
fn media_ranges(accept: &str) -> impl Iterator<Item = Vec<(String, String)>> + '_ {
    accept.split(',').map(|range| {
        range
            .split(';')
            .skip(1)
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect()
    })
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Whether the client takes aggregated discovery: the first media range that is either plain
/// JSON or `apidiscovery.k8s.io/v2` decides, as the API server's content negotiation does
/// (v2beta1 is gone in 1.33; a client asking only for it gets the legacy documents).
pub fn wants_aggregated(accept: &str) -> bool {
    for params in media_ranges(accept) {
        match param(&params, "as") {
            None => return false,
            Some("APIGroupDiscoveryList")
                if param(&params, "g") == Some("apidiscovery.k8s.io")
                    && param(&params, "v") == Some("v2") =>
            {
                return true;
            }
            Some(_) => {}
        }
    }
    false
}

/// What the first media range asks for with `as=PartialObjectMetadata[List]` of
/// `meta.k8s.io/v1` (kube's `get_metadata`/`list_metadata`, client-go's metadata client):
/// `Some(true)` for the list form, `Some(false)` for one object, `None` for whole objects.
pub fn wants_partial_metadata(accept: &str) -> Option<bool> {
    let params = media_ranges(accept).next()?;
    if param(&params, "g") != Some("meta.k8s.io") {
        return None;
    }
    match param(&params, "as") {
        Some("PartialObjectMetadataList") => Some(true),
        Some("PartialObjectMetadata") => Some(false),
        _ => None,
    }
}

/// An object as `PartialObjectMetadata`: its metadata only.
pub fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
    })
}

/// A list as `PartialObjectMetadataList`: the list metadata and each item's metadata.
pub fn partial_metadata_list(list: &Value) -> Value {
    let items: Vec<Value> = list
        .get("items")
        .and_then(Value::as_array)
        .map(|items| items.iter().map(partial_metadata).collect())
        .unwrap_or_default();
    json!({
        "kind": "PartialObjectMetadataList",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list.get("metadata").cloned().unwrap_or(json!({})),
        "items": items,
    })
}

fn discovery_resource(t: &ResourceType, version: &str) -> Value {
    let kind = |group: &str, version: &str, kind: &str| json!({"group": group, "version": version, "kind": kind});
    let verbs = resource_verbs(t);
    let mut r = json!({
        "resource": t.plural,
        "responseKind": kind(&t.group, version, &t.kind),
        "scope": if t.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": t.singular,
        "verbs": verbs,
    });
    if !t.short_names.is_empty() {
        r["shortNames"] = json!(t.short_names);
    }
    if !t.categories.is_empty() {
        r["categories"] = json!(t.categories);
    }
    let mut subs = vec![];
    if t.status {
        subs.push(json!({"subresource": "status", "responseKind": kind(&t.group, version, &t.kind), "verbs": ["get", "patch", "update"]}));
    }
    if t.scale.is_some() {
        subs.push(json!({"subresource": "scale", "responseKind": kind("autoscaling", "v1", "Scale"), "verbs": ["get", "patch", "update"]}));
    }
    for (name, group, version, kind_name, verbs) in extra_subresources(t) {
        let response = if kind_name.is_empty() {
            kind(&t.group, version, &t.kind)
        } else {
            kind(group, version, kind_name)
        };
        subs.push(json!({"subresource": name, "responseKind": response, "verbs": verbs}));
    }
    if !subs.is_empty() {
        r["subresources"] = json!(subs);
    }
    r
}

fn discovery_group(reg: &Registry, group: &str, versions: &[String]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| {
            let resources: Vec<Value> = reg
                .iter()
                .filter(|t| t.group == group && t.serves(v))
                .map(|t| discovery_resource(t, v))
                .collect();
            json!({"version": v, "resources": resources, "freshness": "Current"})
        })
        .collect();
    let mut metadata = json!({"creationTimestamp": null});
    if !group.is_empty() {
        metadata["name"] = json!(group);
    }
    json!({"metadata": metadata, "versions": versions})
}

/// Aggregated discovery of the core group (`/api`) or of every named group (`/apis`).
pub fn aggregated(reg: &Registry, core: bool) -> Value {
    let items: Vec<Value> = if core {
        vec![discovery_group(reg, "", &["v1".to_string()])]
    } else {
        reg.groups()
            .iter()
            .map(|(g, vs)| discovery_group(reg, g, vs))
            .collect()
    };
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-http-add-on-sim",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// The root document listing every path.
pub fn root_paths(reg: &Registry) -> Value {
    let mut paths = vec![
        "/api".to_string(),
        "/api/v1".into(),
        "/apis".into(),
        "/openapi/v2".into(),
        "/version".into(),
        "/healthz".into(),
    ];
    for (g, vs) in reg.groups() {
        paths.push(format!("/apis/{g}"));
        for v in vs {
            paths.push(format!("/apis/{g}/{v}"));
        }
    }
    json!({"paths": paths})
}

/// Wants a Table? (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`).
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

fn human_age(created: Option<&str>) -> String {
    let Some(ts) = created.and_then(|c| c.parse::<jiff::Timestamp>().ok()) else {
        return "<unknown>".into();
    };
    let secs = jiff::Timestamp::now().duration_since(ts).as_secs().max(0);
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        format!("{m}m{}s", secs % 60)
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        format!("{h}h{}m", m % 60)
    } else if d < 2 {
        format!("{h}h")
    } else {
        format!("{d}d")
    }
}

fn column(name: &str, typ: &str, format: &str) -> Value {
    json!({"name": name, "type": typ, "format": format, "description": name, "priority": 0})
}

/// Computes one table cell from an object.
type CellFn = fn(&Value) -> Value;

/// Extra columns for a few well-known types (besides Name and Age).
fn extra_columns(t: &ResourceType) -> Vec<(&'static str, CellFn)> {
    fn ready_of(o: &Value) -> Value {
        let ready = o
            .pointer("/status/readyReplicas")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let want = o
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        json!(format!("{ready}/{want}"))
    }
    fn phase(o: &Value) -> Value {
        json!(
            o.pointer("/status/phase")
                .and_then(Value::as_str)
                .unwrap_or("")
        )
    }
    fn cluster_ip(o: &Value) -> Value {
        json!(
            o.pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .unwrap_or("<none>")
        )
    }
    fn svc_type(o: &Value) -> Value {
        json!(
            o.pointer("/spec/type")
                .and_then(Value::as_str)
                .unwrap_or("")
        )
    }
    fn pod_ip(o: &Value) -> Value {
        json!(
            o.pointer("/status/podIP")
                .and_then(Value::as_str)
                .unwrap_or("<none>")
        )
    }
    match (t.group.as_str(), t.plural.as_str()) {
        ("apps", "deployments" | "replicasets" | "statefulsets") => vec![("Ready", ready_of)],
        ("", "pods") => vec![("Status", phase), ("IP", pod_ip)],
        ("", "namespaces") => vec![("Status", phase)],
        ("", "services") => vec![("Type", svc_type), ("Cluster-IP", cluster_ip)],
        _ => vec![],
    }
}

/// Evaluates the simple JSONPath subset used by printer columns: `.a.b`, `[N]`, `[*]` and
/// `[?(@.key=="value")]`; the first match wins.
pub fn json_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = obj;
    let mut rest = path.trim().trim_start_matches('{').trim_end_matches('}');
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end > 0 {
                cur = cur.get(&r[..end])?;
            }
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let inner = &r[..end];
            rest = &r[end + 1..];
            let items = cur.as_array()?;
            cur = if let Some(filter) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')'))
            {
                let (key, want) = filter.split_once("==")?;
                let want = want.trim().trim_matches(|c| c == '"' || c == '\'');
                items.iter().find(|i| {
                    i.get(key.trim()).is_some_and(|v| {
                        v.as_str().map_or_else(|| v.to_string(), String::from) == want
                    })
                })?
            } else if inner == "*" {
                items.first()?
            } else {
                items.get(inner.parse::<usize>().ok()?)?
            };
        } else {
            return None;
        }
    }
    Some(cur)
}

enum Cell {
    Name,
    Age,
    Builtin(CellFn),
    Path { path: String, date: bool },
}

impl Cell {
    fn value(&self, o: &Value) -> Value {
        match self {
            Self::Name => o.pointer("/metadata/name").cloned().unwrap_or(json!("")),
            Self::Age => json!(human_age(
                o.pointer("/metadata/creationTimestamp")
                    .and_then(Value::as_str)
            )),
            Self::Builtin(f) => f(o),
            Self::Path { path, date: true } => {
                json!(human_age(json_path(o, path).and_then(Value::as_str)))
            }
            Self::Path { path, date: false } => json_path(o, path).cloned().unwrap_or(Value::Null),
        }
    }
}

fn columns_for(t: &ResourceType, version: &str) -> Vec<(Value, Cell)> {
    let mut out = vec![(column("Name", "string", "name"), Cell::Name)];
    match t.printer_columns.get(version) {
        Some(cols) if t.custom => {
            for c in cols {
                let date = c.type_ == "date";
                let typ = if date { "string" } else { c.type_.as_str() };
                out.push((
                    column(&c.name, typ, ""),
                    Cell::Path {
                        path: c.json_path.clone(),
                        date,
                    },
                ));
            }
        }
        _ => {
            for (name, f) in extra_columns(t) {
                out.push((column(name, "string", ""), Cell::Builtin(f)));
            }
            out.push((column("Age", "string", ""), Cell::Age));
        }
    }
    out
}

/// Converts objects to a `meta.k8s.io/v1` Table (`include_object`: `None`, `Metadata` or `Object`).
pub fn table(
    t: &ResourceType,
    version: &str,
    objects: &[Value],
    resource_version: &str,
    with_columns: bool,
    include_object: &str,
) -> Value {
    let columns = columns_for(t, version);
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let cells: Vec<Value> = columns.iter().map(|(_, c)| c.value(o)).collect();
            let mut row = json!({"cells": cells});
            match include_object {
                "None" => {}
                "Object" => row["object"] = o.clone(),
                _ => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": o.get("metadata").cloned().unwrap_or(json!({})),
                    })
                }
            }
            row
        })
        .collect();
    let defs: Vec<Value> = columns.into_iter().map(|(d, _)| d).collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": if with_columns { json!(defs) } else { json!([]) },
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_path_subset() {
        let o = json!({"spec": {"replicas": {"min": 1}}, "status": {"conditions": [{"type": "A", "status": "False"}, {"type": "Ready", "status": "True"}]}});
        assert_eq!(json_path(&o, ".spec.replicas.min"), Some(&json!(1)));
        assert_eq!(
            json_path(&o, ".status.conditions[?(@.type==\"Ready\")].status"),
            Some(&json!("True"))
        );
        assert_eq!(
            json_path(&o, ".status.conditions[0].type"),
            Some(&json!("A"))
        );
        assert_eq!(json_path(&o, ".status.missing"), None);
    }
}
