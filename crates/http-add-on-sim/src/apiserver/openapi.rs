//! OpenAPI documents generated from the registered types: v3 (`/openapi/v3` lists one document
//! per group version, `/openapi/v3/apis/<group>/<version>` holds its schemas) and v2 as JSON
//! (`/openapi/v2`). This is what `kubectl explain` reads.
//!
//! Schemas come from CRDs' `openAPIV3Schema` (named, as the API server names them, by the
//! reversed group: `sh.keda.http.v1alpha1.HTTPScaledObject`). Built-in types have no schema
//! here, so their group versions are not listed. Only the read operations are listed as paths
//! (what explain looks a type up by); with no `PATCH` operation kubectl's query-parameter
//! check finds no server-side field validation and validates as it does against the empty
//! protobuf v2 document it asks for.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::discovery;
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

/// Group versions with at least one schema: `api/v1` or `apis/<group>/<version>`.
fn documented(reg: &Registry) -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
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
    if types.is_empty() {
        return None;
    }
    let schemas: Map<String, Value> = types
        .iter()
        .flat_map(|t| custom_schemas(t, version))
        .collect();
    let paths: Map<String, Value> = types.iter().flat_map(|t| read_paths(t, version)).collect();
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes CRD Swagger", "version": "v0.1.0"},
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
        for t in reg
            .iter()
            .filter(|t| t.custom && t.group == group && t.serves(&version))
        {
            for (name, schema) in custom_schemas(t, &version) {
                definitions.insert(name, to_v2(&schema));
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
