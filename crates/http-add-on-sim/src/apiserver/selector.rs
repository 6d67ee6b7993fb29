//! Label and field selectors.

use std::collections::BTreeSet;

use serde_json::Value;

use super::error::{ApiError, ApiResult};
use super::registry::ResourceType;

#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelReq {
    Eq(String, String),
    Ne(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector (`a=b,c!=d,e in (f,g),h notin (i),j,!k`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<LabelReq>);

fn split_top_level(s: &str) -> Vec<String> {
    let mut parts = vec![];
    let mut depth = 0usize;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    parts.push(cur);
    parts
        .into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

fn parse_set(s: &str) -> ApiResult<BTreeSet<String>> {
    let inner = s
        .trim()
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "unable to parse requirement: expected (values) in {s:?}"
            ))
        })?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

impl LabelSelector {
    /// Parses the string form of a label selector.
    pub fn parse(s: &str) -> ApiResult<Self> {
        let mut reqs = vec![];
        for part in split_top_level(s) {
            let req = if let Some(k) = part.strip_prefix('!') {
                LabelReq::NotExists(k.trim().to_string())
            } else if let Some((k, v)) = part.split_once("!=") {
                LabelReq::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==") {
                LabelReq::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once('=') {
                LabelReq::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once(" notin ") {
                LabelReq::NotIn(k.trim().into(), parse_set(v)?)
            } else if let Some((k, v)) = part.split_once(" in ") {
                LabelReq::In(k.trim().into(), parse_set(v)?)
            } else if part.contains(char::is_whitespace) || part.contains('(') {
                return Err(ApiError::bad_request(format!(
                    "unable to parse requirement: {part:?}"
                )));
            } else {
                LabelReq::Exists(part)
            };
            reqs.push(req);
        }
        Ok(Self(reqs))
    }

    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether an object's labels match.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            LabelReq::Eq(k, v) => get(k) == Some(v.as_str()),
            LabelReq::Ne(k, v) => get(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => get(k).is_some_and(|x| vs.contains(x)),
            LabelReq::NotIn(k, vs) => get(k).is_none_or(|x| !vs.contains(x)),
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::NotExists(k) => get(k).is_none(),
        })
    }
}

/// A parsed field selector (`metadata.name=x,status.phase!=Running`): any dotted path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<FieldReq>);

/// One requirement of a field selector: the path, `=` or `!=`, the value, and what an absent
/// field reads as (a Go bool field such as a node's `spec.unschedulable` is `false`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldReq {
    path: String,
    eq: bool,
    value: String,
    absent: &'static str,
}

impl FieldSelector {
    /// Parses the string form of a field selector.
    pub fn parse(s: &str) -> ApiResult<Self> {
        let mut reqs = vec![];
        for part in split_top_level(s) {
            let (k, eq, v) = if let Some((k, v)) = part.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: {part:?}; can't understand it"
                )));
            };
            reqs.push(FieldReq {
                path: k.trim().to_string(),
                eq,
                value: v.trim().to_string(),
                absent: "",
            });
        }
        Ok(Self(reqs))
    }

    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Checks the labels against what the type supports and maps them to object paths, as the
    /// API server's field label conversion does: unsupported labels are a 400.
    pub fn for_type(self, rt: &ResourceType) -> ApiResult<Self> {
        let reqs = self
            .0
            .into_iter()
            .map(|req| {
                field_path(rt, &req.path)
                    .map(|path| FieldReq {
                        absent: absent_value(rt, &req.path),
                        path,
                        ..req.clone()
                    })
                    .ok_or_else(|| unsupported_field(rt, &req.path))
            })
            .collect::<ApiResult<Vec<_>>>()?;
        Ok(Self(reqs))
    }

    /// Whether the object matches.
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|req| {
            let mut cur = Some(obj);
            for seg in req.path.split('.') {
                cur = cur.and_then(|c| c.get(seg));
            }
            let actual = match cur {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => req.absent.to_string(),
                Some(other) => other.to_string(),
            };
            (actual == req.value) == req.eq
        })
    }
}

/// The field labels a built-in type supports beyond `metadata.name` / `metadata.namespace`,
/// and whether the type has its own conversion function (which words the error differently);
/// from the API server's `AddFieldLabelConversionFunc` registrations.
fn builtin_fields(rt: &ResourceType) -> (&'static [&'static str], bool) {
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "pods") => (
            &[
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.podIPs",
                "status.nominatedNodeName",
                "spec.host",
            ],
            true,
        ),
        ("", "nodes") => (&["spec.unschedulable"], true),
        ("", "namespaces") => (&["status.phase"], true),
        ("", "secrets") => (&["type"], true),
        ("", "services") => (&["spec.clusterIP", "spec.type"], true),
        ("", "replicationcontrollers") => (&["status.replicas"], true),
        ("", "events") => (
            &[
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "involvedObject.resourceVersion",
                "involvedObject.fieldPath",
                "reason",
                "reportingComponent",
                "source",
                "type",
            ],
            true,
        ),
        ("apps", "replicasets") => (&["status.replicas"], true),
        ("apps", "statefulsets") => (&["status.successful"], true),
        _ => (&[], false),
    }
}

/// What an absent field reads as: the API server formats Go fields, so an unset bool is
/// `"false"` (`strconv.FormatBool(node.Spec.Unschedulable)`).
fn absent_value(rt: &ResourceType, label: &str) -> &'static str {
    match (rt.group.as_str(), rt.plural.as_str(), label) {
        ("", "nodes", "spec.unschedulable") => "false",
        _ => "",
    }
}

/// The object path a supported field label selects, `None` when the type does not support it.
fn field_path(rt: &ResourceType, label: &str) -> Option<String> {
    let path = match (rt.group.as_str(), rt.plural.as_str(), label) {
        // Old v1 clients send `spec.host`.
        ("", "pods", "spec.host") => "spec.nodeName",
        ("", "events", "source") => "source.component",
        _ => label,
    };
    let supported = match label {
        "metadata.name" => true,
        // Nodes and namespaces accept only their own labels (no metadata.namespace).
        "metadata.namespace" => rt.namespaced || !(rt.custom || builtin_fields(rt).1),
        _ if rt.custom => rt.selectable_fields.iter().any(|f| f == label),
        _ => builtin_fields(rt).0.contains(&label),
    };
    supported.then(|| path.to_string())
}

fn unsupported_field(rt: &ResourceType, label: &str) -> ApiError {
    if rt.custom || builtin_fields(rt).1 {
        ApiError::bad_request(format!("field label not supported: {label}"))
    } else {
        ApiError::bad_request(format!(
            "{label:?} is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
        ))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn label_selector_operators() {
        let obj = json!({"metadata": {"labels": {"app": "web", "tier": "fe"}}});
        let ok = [
            "app=web",
            "app==web",
            "app!=db",
            "app in (web, db)",
            "app notin (db)",
            "tier",
            "!missing",
            "app=web,tier in (fe)",
        ];
        for s in ok {
            assert!(LabelSelector::parse(s).unwrap().matches(&obj), "{s}");
        }
        let no = [
            "app=db",
            "app!=web",
            "app in (db)",
            "app notin (web,x)",
            "missing",
            "!tier",
        ];
        for s in no {
            assert!(!LabelSelector::parse(s).unwrap().matches(&obj), "{s}");
        }
    }

    #[test]
    fn field_selector_paths() {
        let obj =
            json!({"metadata": {"name": "a", "namespace": "n"}, "status": {"phase": "Running"}});
        assert!(
            FieldSelector::parse("metadata.name=a,metadata.namespace==n")
                .unwrap()
                .matches(&obj)
        );
        assert!(
            FieldSelector::parse("status.phase!=Pending")
                .unwrap()
                .matches(&obj)
        );
        assert!(
            !FieldSelector::parse("metadata.name=b")
                .unwrap()
                .matches(&obj)
        );
        assert!(FieldSelector::parse("nonsense").is_err());
    }
}
