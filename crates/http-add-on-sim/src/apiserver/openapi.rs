//! OpenAPI documents generated from the registered types: v3 (`/openapi/v3` lists one document
//! per group version, `/openapi/v3/apis/<group>/<version>` holds its schemas) and v2 as JSON
//! (`/openapi/v2`). This is what `kubectl explain` reads.
//!
//! Schemas come from CRDs' `openAPIV3Schema` (named, as the API server names them, by the
//! reversed group: `sh.keda.http.v1alpha1.HTTPScaledObject`) and, for the built-in types, from
//! k8s-openapi's JSON schemas (named as upstream: `io.k8s.api.core.v1.Pod`), each group
//! version's document holding the definitions its types reach. Only the read operations are
//! listed as paths
//! (what explain looks a type up by); with no `PATCH` operation kubectl's query-parameter
//! check finds no server-side field validation and validates as it does against the empty
//! protobuf v2 document it asks for.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ComponentStatus, ConfigMap, Endpoints, Event, Namespace, Node, Pod, Secret, Service,
    ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event as EventsV1;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::schemars::{JsonSchema, generate::SchemaSettings};

use serde_json::{Map, Value, json};

use super::discovery;
use super::patch;
use super::registry::{Registry, ResourceType};

/// The definition name of a type's schema: `<reversed group>.<version>.<Kind>`.
fn definition_name(t: &ResourceType, version: &str, kind: &str) -> String {
    let reversed: Vec<&str> = t.group.split('.').rev().collect();
    format!("{}.{version}.{kind}", reversed.join("."))
}

fn gvk(t: &ResourceType, version: &str, kind: &str) -> Value {
    json!([{"group": t.group, "version": version, "kind": kind}])
}

/// The schemas of one custom type's version (the object and its list), keyed by name.
fn custom_schemas(t: &ResourceType, version: &str) -> Vec<(String, Value)> {
    let Some(schema) = t.schemas.get(version) else {
        return vec![];
    };
    let mut object = schema.clone();
    let props = object
        .as_object_mut()
        .map(|o| {
            o.entry("properties")
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .map(std::mem::take)
                .unwrap_or_default()
        })
        .unwrap_or_default();
    // As the API server publishes CRDs: apiVersion, kind and metadata are always described.
    let mut properties = Map::new();
    properties.insert(
        "apiVersion".into(),
        json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}),
    );
    properties.insert(
        "kind".into(),
        json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}),
    );
    properties.insert(
        "metadata".into(),
        json!({"type": "object", "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"}),
    );
    for (k, v) in props {
        if k != "metadata" {
            properties.insert(k, v);
        }
    }
    object["properties"] = Value::Object(properties);
    object["x-kubernetes-group-version-kind"] = gvk(t, version, &t.kind);
    let name = definition_name(t, version, &t.kind);
    let list = json!({
        "type": "object",
        "description": format!("{} is a list of {}", t.list_kind, t.kind),
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "items": {"type": "array", "items": {"$ref": format!("#/components/schemas/{name}")}},
        },
        "x-kubernetes-group-version-kind": gvk(t, version, &t.list_kind),
    });
    vec![
        (name, object),
        (definition_name(t, version, &t.list_kind), list),
    ]
}

/// A built-in type with a schema: group, version, plural, and the schema's name.
struct Builtin {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    name: String,
}

/// The schemas of the built-in types, generated once: the types and every definition.
struct Builtins {
    types: Vec<Builtin>,
    definitions: Map<String, Value>,
}

fn builtins() -> &'static Builtins {
    static BUILTINS: OnceLock<Builtins> = OnceLock::new();
    BUILTINS.get_or_init(|| {
        let mut generator = SchemaSettings::openapi3().into_generator();
        let mut types = vec![];
        macro_rules! add {
            ($($t:ty),* $(,)?) => {$(
                generator.subschema_for::<$t>();
                types.push(Builtin {
                    group: <$t as k8s_openapi::Resource>::GROUP,
                    version: <$t as k8s_openapi::Resource>::VERSION,
                    plural: <$t as k8s_openapi::Resource>::URL_PATH_SEGMENT,
                    name: <$t as JsonSchema>::schema_name().into_owned(),
                });
            )*};
        }
        add!(
            Namespace,
            Service,
            ConfigMap,
            Secret,
            ServiceAccount,
            Event,
            Pod,
            Endpoints,
            Node,
            ComponentStatus,
            Deployment,
            ReplicaSet,
            StatefulSet,
            HorizontalPodAutoscaler,
            EventsV1,
            EndpointSlice,
            Lease,
            CustomResourceDefinition,
            CertificateSigningRequest,
        );
        let mut definitions = generator
            .take_definitions(true)
            .into_iter()
            .collect::<Map<String, Value>>();
        for schema in definitions.values_mut() {
            mark_patch_strategy(schema);
        }
        Builtins { types, definitions }
    })
}

/// Marks the lists that strategic merge patch merges, with the extensions the API server
/// publishes (`x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`): kubectl's
/// client-side apply reads them from OpenAPI v3 to build its patches. The keys are the ones
/// this server's strategic merge uses (`patch::merge_key`).
fn mark_patch_strategy(schema: &mut Value) {
    let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    for (field, property) in properties.iter_mut() {
        if property.get("type").and_then(Value::as_str) != Some("array") {
            continue;
        }
        let item = property
            .pointer("/items/$ref")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if patch::is_set_list(field) {
            property["x-kubernetes-patch-strategy"] = json!("merge");
            continue;
        }
        // Ports merge by port only in Services and containers (an EndpointSlice's are atomic).
        let sample = if item.ends_with(".ContainerPort") {
            json!({"containerPort": 0})
        } else {
            json!({})
        };
        let ports_ok =
            field != "ports" || item.ends_with(".ContainerPort") || item.ends_with(".ServicePort");
        if let Some(key) = patch::merge_key(field, &sample).filter(|_| ports_ok && !item.is_empty())
        {
            property["x-kubernetes-patch-strategy"] = json!("merge");
            property["x-kubernetes-patch-merge-key"] = json!(key);
        }
    }
}

/// The definitions `roots` reach through `$ref`s, the roots included.
fn reachable(definitions: &Map<String, Value>, roots: &[String]) -> Map<String, Value> {
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                for (k, v) in o {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(r)) => {
                            if let Some(name) = r.strip_prefix("#/components/schemas/") {
                                out.push(name.to_string());
                            }
                        }
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut seen = BTreeSet::new();
    let mut todo: Vec<String> = roots.to_vec();
    while let Some(name) = todo.pop() {
        if let Some(schema) = definitions.get(&name)
            && seen.insert(name)
        {
            refs(schema, &mut todo);
        }
    }
    seen.into_iter()
        .filter_map(|n| definitions.get(&n).map(|d| (n, d.clone())))
        .collect()
}

/// The built-in part of a group version's document: schemas (the types' own marked with
/// their group-version-kind) and read paths.
fn builtin_part(
    reg: &Registry,
    group: &str,
    version: &str,
) -> (Map<String, Value>, Map<String, Value>) {
    let b = builtins();
    let types: Vec<(&Builtin, Arc<ResourceType>)> = b
        .types
        .iter()
        .filter(|t| t.group == group && t.version == version)
        .filter_map(|t| Some((t, reg.get(t.group, t.plural).filter(|rt| !rt.custom)?)))
        .collect();
    let roots: Vec<String> = types.iter().map(|(t, _)| t.name.clone()).collect();
    let mut schemas = reachable(&b.definitions, &roots);
    let mut paths = Map::new();
    for (t, rt) in &types {
        if let Some(s) = schemas.get_mut(&t.name) {
            s["x-kubernetes-group-version-kind"] = gvk(rt, version, &rt.kind);
        }
        let base = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        for (path, op) in read_paths(rt, version) {
            let path = path.replacen(&format!("/apis/{}/{version}", rt.group), &base, 1);
            // The list schema is not generated; the object's stands in for it.
            let op = serde_json::to_string(&op)
                .unwrap_or_default()
                .replace(&definition_name(rt, version, &rt.list_kind), &t.name)
                .replace(&definition_name(rt, version, &rt.kind), &t.name);
            paths.insert(path, serde_json::from_str(&op).unwrap_or_default());
        }
    }
    (schemas, paths)
}

/// Group versions with at least one schema: `api/v1` or `apis/<group>/<version>`.
fn documented(reg: &Registry) -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    for t in &builtins().types {
        if reg.get(t.group, t.plural).is_some_and(|rt| !rt.custom) {
            let path = if t.group.is_empty() {
                format!("api/{}", t.version)
            } else {
                format!("apis/{}/{}", t.group, t.version)
            };
            out.insert(path, (t.group.to_string(), t.version.to_string()));
        }
    }
    for t in reg.iter().filter(|t| t.custom) {
        for v in t.schemas.keys().filter(|v| t.serves(v)) {
            out.insert(
                format!("apis/{}/{v}", t.group),
                (t.group.clone(), v.clone()),
            );
        }
    }
    out
}

/// A stable content hash for `?hash=` (clients cache by URL).
fn hash(v: &Value) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in v.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016X}")
}

/// `/openapi/v3`: where each group version's document is.
pub fn v3_root(reg: &Registry) -> Value {
    let paths: Map<String, Value> = documented(reg)
        .into_iter()
        .filter_map(|(path, (group, version))| {
            let doc = v3_group(reg, &group, &version)?;
            Some((
                path.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", hash(&doc))}),
            ))
        })
        .collect();
    json!({"paths": paths})
}

/// The read operations of a type: `GET` of the list across namespaces and of one object, each
/// with the `x-kubernetes-group-version-kind` kubectl explain finds the type by.
fn read_paths(t: &ResourceType, version: &str) -> Vec<(String, Value)> {
    let base = format!("/apis/{}/{version}", t.group);
    let operation = |action: &str, schema: String| {
        json!({"get": {
            "description": format!("{action} {}", t.kind),
            "operationId": format!("{action}{}", t.kind),
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": {"group": t.group, "version": version, "kind": t.kind},
            "responses": {"200": {"description": "OK", "content": {"application/json": {
                "schema": {"$ref": format!("#/components/schemas/{schema}")},
            }}}},
        }})
    };
    let list = definition_name(t, version, &t.list_kind);
    let object = definition_name(t, version, &t.kind);
    let scoped = if t.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", t.plural)
    } else {
        format!("{base}/{}", t.plural)
    };
    let mut out = vec![
        (scoped.clone(), operation("list", list.clone())),
        (format!("{scoped}/{{name}}"), operation("get", object)),
    ];
    if t.namespaced {
        out.push((format!("{base}/{}", t.plural), operation("list", list)));
    }
    out
}

/// `/openapi/v3/apis/<group>/<version>`.
pub fn v3_group(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let types: Vec<_> = reg
        .iter()
        .filter(|t| {
            t.custom && t.group == group && t.serves(version) && t.schemas.contains_key(version)
        })
        .collect();
    let (mut schemas, mut paths) = builtin_part(reg, group, version);
    schemas.extend(types.iter().flat_map(|t| custom_schemas(t, version)));
    paths.extend(types.iter().flat_map(|t| read_paths(t, version)));
    if schemas.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": discovery::version()["gitVersion"]},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// A v3 schema as v2 can say it: refs point at `#/definitions/`, and the keywords v2 lacks
/// (`nullable`, `oneOf`, `anyOf`, `not`) are dropped, as the API server's v2 conversion does.
fn to_v2(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "nullable" | "oneOf" | "anyOf" | "not"))
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        ("$ref", Value::String(r)) => {
                            json!(r.replace("#/components/schemas/", "#/definitions/"))
                        }
                        _ => to_v2(v),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(to_v2).collect()),
        other => other.clone(),
    }
}

/// `/openapi/v2` as JSON (Swagger 2.0): every schema of every documented group version.
pub fn v2(reg: &Registry) -> Value {
    let mut definitions = Map::new();
    for (group, version) in documented(reg).into_values() {
        if let Some(doc) = v3_group(reg, &group, &version)
            && let Some(schemas) = doc
                .pointer("/components/schemas")
                .and_then(Value::as_object)
        {
            for (name, schema) in schemas {
                definitions.insert(name.clone(), to_v2(schema));
            }
        }
    }
    let version = discovery::version();
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": version["gitVersion"]},
        "paths": {},
        "definitions": definitions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_drops_what_swagger_2_lacks_and_rewrites_refs() {
        let v3 = json!({"type": "object", "nullable": true, "properties": {
            "a": {"oneOf": [{"type": "string"}], "type": "string"},
            "b": {"$ref": "#/components/schemas/x.Y"},
        }});
        assert_eq!(
            to_v2(&v3),
            json!({"type": "object", "properties": {
                "a": {"type": "string"},
                "b": {"$ref": "#/definitions/x.Y"},
            }})
        );
    }
}
