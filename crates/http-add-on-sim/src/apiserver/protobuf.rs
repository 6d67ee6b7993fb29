//! A minimal decoder for the Kubernetes protobuf encoding, for the types that kubectl's
//! generators send as protobuf (`kubectl create namespace|configmap|secret|deployment|service`)
//! and `kubectl auth can-i|whoami` sends.
//! Other types are answered with 415 (client-go's typed clients do not fall back to JSON, but
//! every other kubectl command and kube-rs speak JSON).
//!
//! The envelope is the magic `k8s\0` followed by a `runtime.Unknown` message
//! (1: TypeMeta {1: apiVersion, 2: kind}, 2: raw object, 3: contentEncoding, 4: contentType).
//! Field numbers come from `k8s.io/api` `generated.proto` (checked against what kubectl 1.32
//! sends); only the fields those generators set are decoded, other fields are skipped. Empty
//! strings and false are omitted, as JSON's `omitempty` would.

use serde_json::{Map, Value, json};

/// How one protobuf field maps to JSON.
enum Kind {
    Str,
    Bool,
    /// An integer that is kept even when zero (a pointer field such as `replicas`).
    Int,
    /// An integer omitted when zero.
    IntNonZero,
    IntOrString,
    RepeatedMsg(&'static [Field]),
    Msg(&'static [Field]),
    RepeatedStr,
    MapStrStr,
    MapStrBytes,
}

struct Field {
    num: u64,
    name: &'static str,
    kind: Kind,
}

const fn f(num: u64, name: &'static str, kind: Kind) -> Field {
    Field { num, name, kind }
}

const OBJECT_META: &[Field] = &[
    f(1, "name", Kind::Str),
    f(2, "generateName", Kind::Str),
    f(3, "namespace", Kind::Str),
    f(11, "labels", Kind::MapStrStr),
    f(12, "annotations", Kind::MapStrStr),
    f(14, "finalizers", Kind::RepeatedStr),
];
const NAMESPACE_SPEC: &[Field] = &[f(1, "finalizers", Kind::RepeatedStr)];
const NAMESPACE: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "spec", Kind::Msg(NAMESPACE_SPEC)),
];
const CONFIG_MAP: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "data", Kind::MapStrStr),
    f(3, "binaryData", Kind::MapStrBytes),
    f(4, "immutable", Kind::Bool),
];
const SECRET: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "data", Kind::MapStrBytes),
    f(3, "type", Kind::Str),
    f(5, "immutable", Kind::Bool),
];

const LABEL_SELECTOR_REQUIREMENT: &[Field] = &[
    f(1, "key", Kind::Str),
    f(2, "operator", Kind::Str),
    f(3, "values", Kind::RepeatedStr),
];
const LABEL_SELECTOR: &[Field] = &[
    f(1, "matchLabels", Kind::MapStrStr),
    f(
        2,
        "matchExpressions",
        Kind::RepeatedMsg(LABEL_SELECTOR_REQUIREMENT),
    ),
];
const CONTAINER_PORT: &[Field] = &[
    f(1, "name", Kind::Str),
    f(2, "hostPort", Kind::IntNonZero),
    f(3, "containerPort", Kind::Int),
    f(4, "protocol", Kind::Str),
    f(5, "hostIP", Kind::Str),
];
const ENV_VAR: &[Field] = &[f(1, "name", Kind::Str), f(2, "value", Kind::Str)];
const CONTAINER: &[Field] = &[
    f(1, "name", Kind::Str),
    f(2, "image", Kind::Str),
    f(3, "command", Kind::RepeatedStr),
    f(4, "args", Kind::RepeatedStr),
    f(5, "workingDir", Kind::Str),
    f(6, "ports", Kind::RepeatedMsg(CONTAINER_PORT)),
    f(7, "env", Kind::RepeatedMsg(ENV_VAR)),
    f(13, "terminationMessagePath", Kind::Str),
    f(14, "imagePullPolicy", Kind::Str),
    f(20, "terminationMessagePolicy", Kind::Str),
];
const POD_SPEC: &[Field] = &[
    f(2, "containers", Kind::RepeatedMsg(CONTAINER)),
    f(3, "restartPolicy", Kind::Str),
    f(6, "dnsPolicy", Kind::Str),
    f(8, "serviceAccountName", Kind::Str),
];
const POD_TEMPLATE_SPEC: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "spec", Kind::Msg(POD_SPEC)),
];
const DEPLOYMENT_STRATEGY: &[Field] = &[f(1, "type", Kind::Str)];
const DEPLOYMENT_SPEC: &[Field] = &[
    f(1, "replicas", Kind::Int),
    f(2, "selector", Kind::Msg(LABEL_SELECTOR)),
    f(3, "template", Kind::Msg(POD_TEMPLATE_SPEC)),
    f(4, "strategy", Kind::Msg(DEPLOYMENT_STRATEGY)),
    f(5, "minReadySeconds", Kind::IntNonZero),
    f(6, "revisionHistoryLimit", Kind::Int),
    f(7, "paused", Kind::Bool),
    f(9, "progressDeadlineSeconds", Kind::Int),
];
const DEPLOYMENT: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "spec", Kind::Msg(DEPLOYMENT_SPEC)),
];
const SERVICE_PORT: &[Field] = &[
    f(1, "name", Kind::Str),
    f(2, "protocol", Kind::Str),
    f(3, "port", Kind::Int),
    f(4, "targetPort", Kind::IntOrString),
    f(5, "nodePort", Kind::IntNonZero),
    f(6, "appProtocol", Kind::Str),
];
const SERVICE_SPEC: &[Field] = &[
    f(1, "ports", Kind::RepeatedMsg(SERVICE_PORT)),
    f(2, "selector", Kind::MapStrStr),
    f(3, "clusterIP", Kind::Str),
    f(4, "type", Kind::Str),
    f(5, "externalIPs", Kind::RepeatedStr),
    f(10, "externalName", Kind::Str),
];
const SERVICE: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "spec", Kind::Msg(SERVICE_SPEC)),
];

// The review APIs, as `kubectl auth can-i|whoami` sends them (field numbers checked against
// kubectl 1.32's requests).
const RESOURCE_ATTRIBUTES: &[Field] = &[
    f(1, "namespace", Kind::Str),
    f(2, "verb", Kind::Str),
    f(3, "group", Kind::Str),
    f(4, "version", Kind::Str),
    f(5, "resource", Kind::Str),
    f(6, "subresource", Kind::Str),
    f(7, "name", Kind::Str),
];
const NON_RESOURCE_ATTRIBUTES: &[Field] = &[f(1, "path", Kind::Str), f(2, "verb", Kind::Str)];
const SELF_SUBJECT_ACCESS_REVIEW_SPEC: &[Field] = &[
    f(1, "resourceAttributes", Kind::Msg(RESOURCE_ATTRIBUTES)),
    f(
        2,
        "nonResourceAttributes",
        Kind::Msg(NON_RESOURCE_ATTRIBUTES),
    ),
];
const SUBJECT_ACCESS_REVIEW_SPEC: &[Field] = &[
    f(1, "resourceAttributes", Kind::Msg(RESOURCE_ATTRIBUTES)),
    f(
        2,
        "nonResourceAttributes",
        Kind::Msg(NON_RESOURCE_ATTRIBUTES),
    ),
    f(3, "user", Kind::Str),
    f(4, "groups", Kind::RepeatedStr),
    f(6, "uid", Kind::Str),
];
const SELF_SUBJECT_ACCESS_REVIEW: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "spec", Kind::Msg(SELF_SUBJECT_ACCESS_REVIEW_SPEC)),
];
const SUBJECT_ACCESS_REVIEW: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "spec", Kind::Msg(SUBJECT_ACCESS_REVIEW_SPEC)),
];
const SELF_SUBJECT_RULES_REVIEW: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "spec", Kind::Msg(&[f(1, "namespace", Kind::Str)])),
];
const SELF_SUBJECT_REVIEW: &[Field] = &[f(1, "metadata", Kind::Msg(OBJECT_META))];
const TOKEN_REVIEW: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(
        2,
        "spec",
        Kind::Msg(&[
            f(1, "token", Kind::Str),
            f(2, "audiences", Kind::RepeatedStr),
        ]),
    ),
];

/// A raw protobuf field value.
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(out);
        }
    }
    None
}

/// Splits a message into (field number, value) pairs; fixed-width fields are skipped.
fn fields(buf: &[u8]) -> Option<Vec<(u64, Wire<'_>)>> {
    let mut pos = 0;
    let mut out = vec![];
    while pos < buf.len() {
        let tag = varint(buf, &mut pos)?;
        let (num, wire_type) = (tag >> 3, tag & 7);
        match wire_type {
            0 => out.push((num, Wire::Varint(varint(buf, &mut pos)?))),
            1 => pos += 8,
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).ok()?;
                let end = pos.checked_add(len).filter(|e| *e <= buf.len())?;
                out.push((num, Wire::Bytes(&buf[pos..end])));
                pos = end;
            }
            5 => pos += 4,
            _ => return None,
        }
    }
    (pos == buf.len()).then_some(out)
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn text(b: &[u8]) -> Option<String> {
    String::from_utf8(b.to_vec()).ok()
}

fn map_entry(b: &[u8]) -> Option<(String, &[u8])> {
    let mut key = String::new();
    let mut value: &[u8] = &[];
    for (num, w) in fields(b)? {
        match (num, w) {
            (1, Wire::Bytes(k)) => key = text(k)?,
            (2, Wire::Bytes(v)) => value = v,
            _ => {}
        }
    }
    Some((key, value))
}

fn message(buf: &[u8], schema: &[Field]) -> Option<Value> {
    let mut out = Map::new();
    for (num, w) in fields(buf)? {
        let Some(field) = schema.iter().find(|f| f.num == num) else {
            continue;
        };
        let name = field.name.to_string();
        match (&field.kind, w) {
            (Kind::Str, Wire::Bytes(b)) => {
                let s = text(b)?;
                if !s.is_empty() {
                    out.insert(name, json!(s));
                }
            }
            (Kind::Bool, Wire::Varint(v)) => {
                if v != 0 {
                    out.insert(name, json!(true));
                }
            }
            (Kind::Int, Wire::Varint(v)) => {
                // int32/int64 are two's complement in a 64-bit varint.
                out.insert(name, json!(v as i64));
            }
            (Kind::IntNonZero, Wire::Varint(v)) => {
                if v != 0 {
                    out.insert(name, json!(v as i64));
                }
            }
            (Kind::IntOrString, Wire::Bytes(b)) => {
                let (mut is_string, mut int, mut string) = (false, 0i64, String::new());
                for (n, v) in fields(b)? {
                    match (n, v) {
                        (1, Wire::Varint(t)) => is_string = t == 1,
                        (2, Wire::Varint(i)) => int = i as i64,
                        (3, Wire::Bytes(s)) => string = text(s)?,
                        _ => {}
                    }
                }
                out.insert(name, if is_string { json!(string) } else { json!(int) });
            }
            (Kind::RepeatedMsg(inner), Wire::Bytes(b)) => {
                let item = message(b, inner)?;
                let list = out.entry(name).or_insert_with(|| json!([]));
                list.as_array_mut()?.push(item);
            }
            (Kind::Msg(inner), Wire::Bytes(b)) => {
                let v = message(b, inner)?;
                if v.as_object().is_some_and(|m| !m.is_empty()) {
                    out.insert(name, v);
                }
            }
            (Kind::RepeatedStr, Wire::Bytes(b)) => {
                let list = out.entry(name).or_insert_with(|| json!([]));
                list.as_array_mut()?.push(json!(text(b)?));
            }
            (Kind::MapStrStr | Kind::MapStrBytes, Wire::Bytes(b)) => {
                let (k, v) = map_entry(b)?;
                let v = match field.kind {
                    Kind::MapStrStr => json!(text(v)?),
                    _ => json!(base64(v)),
                };
                out.entry(name)
                    .or_insert_with(|| json!({}))
                    .as_object_mut()?
                    .insert(k, v);
            }
            _ => return None,
        }
    }
    Some(Value::Object(out))
}

/// Decodes a protobuf request body into its JSON form, for the supported types only.
pub fn decode(body: &[u8]) -> Option<Value> {
    let envelope = body.strip_prefix(b"k8s\0")?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (num, w) in fields(envelope)? {
        match (num, w) {
            (1, Wire::Bytes(type_meta)) => {
                for (n, v) in fields(type_meta)? {
                    match (n, v) {
                        (1, Wire::Bytes(b)) => api_version = text(b)?,
                        (2, Wire::Bytes(b)) => kind = text(b)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(b)) => raw = b,
            _ => {}
        }
    }
    let schema = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => NAMESPACE,
        ("v1", "ConfigMap") => CONFIG_MAP,
        ("v1", "Secret") => SECRET,
        ("v1", "Service") => SERVICE,
        ("apps/v1", "Deployment") => DEPLOYMENT,
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => SELF_SUBJECT_ACCESS_REVIEW,
        ("authorization.k8s.io/v1", "SubjectAccessReview" | "LocalSubjectAccessReview") => {
            SUBJECT_ACCESS_REVIEW
        }
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview") => SELF_SUBJECT_RULES_REVIEW,
        ("authentication.k8s.io/v1", "SelfSubjectReview") => SELF_SUBJECT_REVIEW,
        ("authentication.k8s.io/v1", "TokenReview") => TOKEN_REVIEW,
        _ => return None,
    };
    let mut obj = message(raw, schema)?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Some(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_kubectl_create_configmap_sends() {
        // Captured from `kubectl create configmap c1 --from-literal=k1=v1` (kubectl 1.32).
        let body: &[u8] = b"k8s\0\x0a\x0f\x0a\x02v1\x12\x09ConfigMap\x12\x1e\x0a\x12\x0a\x02c1\x12\x00\x1a\x00\x22\x00\x2a\x00\x32\x00\x38\x00\x42\x00\x12\x08\x0a\x02k1\x12\x02v1\x1a\x00\x22\x00";
        assert_eq!(
            decode(body),
            Some(
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c1"}, "data": {"k1": "v1"}})
            )
        );
    }

    #[test]
    fn secret_data_is_base64() {
        let body: &[u8] = b"k8s\0\x0a\x0c\x0a\x02v1\x12\x06Secret\x12\x20\x0a\x12\x0a\x02s1\x12\x00\x1a\x00\x22\x00\x2a\x00\x32\x00\x38\x00\x42\x00\x12\x08\x0a\x02k2\x12\x02v2\x1a\x00\x1a\x00\x22\x00";
        assert_eq!(
            decode(body),
            Some(
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s1"}, "data": {"k2": "djI="}})
            )
        );
        assert_eq!(base64(b"hello!?"), "aGVsbG8hPw==");
    }

    #[test]
    fn decodes_what_kubectl_auth_can_i_sends() {
        // Captured from `kubectl auth can-i get /metrics` (kubectl 1.32).
        let body: &[u8] = b"k8s\x00\x0a2\x0a\x17authorization.k8s.io/v1\x12\x17SelfSubjectAccessReview\x12/\x0a\x10\x0a\x00\x12\x00\x1a\x00\x22\x00\x2a\x002\x008\x00B\x00\x12\x11\x12\x0f\x0a\x08/metrics\x12\x03get\x1a\x08\x08\x00\x12\x00\x1a\x00\x20\x00\x1a\x00\x22\x00";
        assert_eq!(
            decode(body),
            Some(json!({
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "spec": {"nonResourceAttributes": {"path": "/metrics", "verb": "get"}},
            }))
        );
    }

    #[test]
    fn unsupported_types_are_not_decoded() {
        assert_eq!(
            decode(b"k8s\0\x0a\x13\x0a\x08batch/v1\x12\x07CronJob\x12\x00"),
            None
        );
        assert_eq!(decode(b"{}"), None);
    }
}
