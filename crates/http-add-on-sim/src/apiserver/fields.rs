//! Field management (`metadata.managedFields`), as kube-apiserver does it with
//! structured-merge-diff:
//! - every write records which fields its manager owns: server-side apply owns exactly what it
//!   applied; create, update and the other patches (`Update` entries) own what they added or
//!   changed and take it away from the other managers;
//! - an apply that changes a field another manager owns is a conflict (409) unless forced, and
//!   a forced apply takes the field over;
//! - a field an applier owned and no longer applies is removed, unless another manager owns it;
//! - lists follow the type's schema: keyed lists (`x-kubernetes-list-type: map`, containers by
//!   name, ...) and sets (`set`, finalizers) are owned per item, other lists as a whole; maps
//!   marked atomic (a Deployment's label selector) as a whole.
//!
//! Field sets are sets of paths whose elements are FieldsV1 keys (`f:name`,
//! `k:{"name":"a"}`, `v:"x"`), so they convert to and from FieldsV1 directly.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::registry::ResourceType;

/// Which part of an object a write manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyScope {
    /// Everything but `.status` (for types with a status subresource).
    Main,
    /// Only `.status`.
    Status,
}

/// How a list merges and is owned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ListType {
    /// Replaced and owned as a whole.
    Atomic,
    /// Items are distinct scalars, owned one by one.
    Set,
    /// Items are objects identified by these key fields, owned one by one.
    Map(Vec<&'static str>),
    /// A CRD's `x-kubernetes-list-map-keys`.
    MapOwned(Vec<String>),
}

impl ListType {
    fn keys(&self) -> Option<Vec<&str>> {
        match self {
            Self::Map(k) => Some(k.clone()),
            Self::MapOwned(k) => Some(k.iter().map(String::as_str).collect()),
            _ => None,
        }
    }
}

/// The shape of a type's objects, as far as merging needs it: built-in types by the
/// well-known list keys of the Kubernetes API, custom resources by their CRD schema.
#[derive(Debug, Clone, Copy)]
pub struct Shape<'a> {
    group: &'a str,
    plural: &'a str,
    schema: Option<&'a Value>,
    /// Whether `.status` belongs to the status subresource.
    status_split: bool,
}

/// ObjectMeta's lists (the same for every type).
fn meta_list_type(field: &str) -> ListType {
    match field {
        "finalizers" => ListType::Set,
        "ownerReferences" => ListType::Map(vec!["uid"]),
        _ => ListType::Atomic,
    }
}

impl<'a> Shape<'a> {
    /// The shape of `rt` objects in `version`.
    pub fn of(rt: &'a ResourceType, version: &str) -> Self {
        Self {
            group: &rt.group,
            plural: &rt.plural,
            schema: rt
                .schemas
                .get(version)
                .or_else(|| rt.schemas.values().next()),
            status_split: rt.status,
        }
    }

    /// The CRD schema node at a field path (list items are stepped into implicitly).
    fn schema_node(&self, names: &[String]) -> Option<&'a Value> {
        let mut node = self.schema?;
        for name in names {
            if let Some(items) = node.get("items") {
                node = items;
            }
            node = match node.get("properties").and_then(|p| p.get(name.as_str())) {
                Some(n) => n,
                None => node.get("additionalProperties").filter(|a| a.is_object())?,
            };
        }
        Some(node)
    }

    fn list_type(&self, names: &[String]) -> ListType {
        if names.len() == 2 && names[0] == "metadata" {
            return meta_list_type(&names[1]);
        }
        if self.schema.is_some() {
            let Some(node) = self.schema_node(names) else {
                return ListType::Atomic;
            };
            return match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
                Some("set") => ListType::Set,
                Some("map") => ListType::MapOwned(
                    node.get("x-kubernetes-list-map-keys")
                        .and_then(Value::as_array)
                        .map(|k| {
                            k.iter()
                                .filter_map(|s| s.as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default(),
                ),
                _ => ListType::Atomic,
            };
        }
        let field = names.last().map(String::as_str).unwrap_or_default();
        let parent = names
            .len()
            .checked_sub(2)
            .map(|i| names[i].as_str())
            .unwrap_or_default();
        match field {
            "containers"
            | "initContainers"
            | "ephemeralContainers"
            | "env"
            | "volumes"
            | "imagePullSecrets"
            | "resourceClaims" => ListType::Map(vec!["name"]),
            "volumeMounts" => ListType::Map(vec!["mountPath"]),
            "volumeDevices" => ListType::Map(vec!["devicePath"]),
            "conditions" => ListType::Map(vec!["type"]),
            "hostAliases" => ListType::Map(vec!["ip"]),
            "topologySpreadConstraints" => ListType::Map(vec!["topologyKey", "whenUnsatisfiable"]),
            "ports"
                if matches!(
                    parent,
                    "containers" | "initContainers" | "ephemeralContainers"
                ) =>
            {
                ListType::Map(vec!["containerPort", "protocol"])
            }
            "ports" if self.group.is_empty() && self.plural == "services" => {
                ListType::Map(vec!["port", "protocol"])
            }
            _ => ListType::Atomic,
        }
    }

    /// Whether a map is itself a member of an `Update` set when a write adds it (FieldsV1
    /// `"."`): structured-merge-diff records a map that was absent before; for built-in types
    /// most structs exist in Go's zero value, so only the free-form maps count.
    fn map_is_member(&self, names: &[String]) -> bool {
        match names {
            [] => false,
            [only] if only == "metadata" => false,
            [.., last] if self.schema.is_none() => {
                matches!(
                    last.as_str(),
                    "labels"
                        | "annotations"
                        | "data"
                        | "binaryData"
                        | "stringData"
                        | "matchLabels"
                        | "nodeSelector"
                ) || (self.group.is_empty()
                    && self.plural == "services"
                    && names.len() == 2
                    && names[0] == "spec"
                    && last == "selector")
            }
            _ => true,
        }
    }

    fn atomic_map(&self, names: &[String]) -> bool {
        if self.schema.is_some() && names.first().is_none_or(|n| n != "metadata") {
            return self
                .schema_node(names)
                .and_then(|n| n.get("x-kubernetes-map-type"))
                .and_then(Value::as_str)
                == Some("atomic");
        }
        // metav1.LabelSelector is `+structType=atomic`.
        self.group == "apps" && names.len() == 2 && names[0] == "spec" && names[1] == "selector"
    }
}

/// A path in FieldsV1 form, e.g. `["f:spec", "f:containers", "k:{\"name\":\"a\"}", "f:image"]`.
pub type FieldPath = Vec<String>;

/// A set of owned fields.
pub type FieldSet = BTreeSet<FieldPath>;

/// The part of an object a scope manages, without the server-owned metadata.
fn restrict(obj: &Value, scope: ApplyScope, status_split: bool) -> Value {
    let mut out = Map::new();
    let Some(o) = obj.as_object() else {
        return Value::Object(out);
    };
    for (k, v) in o {
        match (k.as_str(), scope) {
            ("apiVersion" | "kind", _) => {}
            ("metadata", ApplyScope::Main) => {
                let meta: Map<String, Value> =
                    ["labels", "annotations", "finalizers", "ownerReferences"]
                        .iter()
                        .filter_map(|mk| v.get(*mk).map(|mv| (mk.to_string(), mv.clone())))
                        .collect();
                if !meta.is_empty() {
                    out.insert("metadata".into(), Value::Object(meta));
                }
            }
            ("status", ApplyScope::Status) => {
                out.insert(k.clone(), v.clone());
            }
            ("status", ApplyScope::Main) if status_split => {}
            ("metadata", ApplyScope::Status) => {}
            (_, ApplyScope::Main) => {
                out.insert(k.clone(), v.clone());
            }
            (_, ApplyScope::Status) => {}
        }
    }
    Value::Object(out)
}

/// The FieldsV1 key of a keyed list item, or `None` if it lacks a key field.
fn item_key(item: &Value, keys: &[&str]) -> Option<String> {
    let mut k = Map::new();
    for key in keys {
        // A missing `protocol` of a port defaults to TCP, as the API server defaults it.
        let v = match item.get(*key) {
            Some(v) => v.clone(),
            None if *key == "protocol" => json!("TCP"),
            None => return None,
        };
        k.insert((*key).to_string(), v);
    }
    Some(format!("k:{}", Value::Object(k)))
}

/// The keys of a list's items in FieldsV1 form, `None` when the list cannot be owned per
/// item (an item without its key, duplicate keys): it is then owned as a whole.
fn item_keys(items: &[Value], lt: &ListType) -> Option<Vec<String>> {
    let keys: Vec<String> = match lt {
        ListType::Atomic => return None,
        ListType::Set => items
            .iter()
            .map(|i| (!i.is_object() && !i.is_array()).then(|| format!("v:{i}")))
            .collect::<Option<_>>()?,
        _ => {
            let names = lt.keys()?;
            if names.is_empty() {
                return None;
            }
            items
                .iter()
                .map(|i| item_key(i, &names))
                .collect::<Option<_>>()?
        }
    };
    let distinct: BTreeSet<&String> = keys.iter().collect();
    (distinct.len() == keys.len()).then_some(keys)
}

/// Every owned-field path of a value with the value found there (list items, and for an
/// `Update` the maps that are members, map to `true`: their changes show in their fields).
fn members(
    v: &Value,
    shape: &Shape<'_>,
    update: bool,
    names: &mut Vec<String>,
    path: &mut FieldPath,
    out: &mut BTreeMap<FieldPath, Value>,
) {
    let leaf = |out: &mut BTreeMap<FieldPath, Value>, path: &FieldPath| {
        if !path.is_empty() {
            out.insert(path.clone(), v.clone());
        }
    };
    match v {
        Value::Object(m) if m.is_empty() || shape.atomic_map(names) => leaf(out, path),
        Value::Object(m) => {
            if update && shape.map_is_member(names) {
                out.insert(path.clone(), Value::Bool(true));
            }
            for (k, c) in m {
                names.push(k.clone());
                path.push(format!("f:{k}"));
                members(c, shape, update, names, path, out);
                path.pop();
                names.pop();
            }
        }
        Value::Array(items) => {
            let lt = shape.list_type(names);
            match item_keys(items, &lt) {
                Some(keys) if !items.is_empty() => {
                    for (key, item) in keys.into_iter().zip(items) {
                        path.push(key);
                        if lt == ListType::Set {
                            out.insert(path.clone(), item.clone());
                        } else {
                            out.insert(path.clone(), Value::Bool(true));
                            members(item, shape, update, names, path, out);
                        }
                        path.pop();
                    }
                }
                _ => leaf(out, path),
            }
        }
        _ => leaf(out, path),
    }
}

/// How a write changes fields, given the fields before and after.
#[derive(Debug, Default)]
struct Comparison {
    added: FieldSet,
    modified: FieldSet,
    removed: FieldSet,
}

impl Comparison {
    fn of(before: &BTreeMap<FieldPath, Value>, after: &BTreeMap<FieldPath, Value>) -> Self {
        let mut c = Self::default();
        for (p, v) in after {
            match before.get(p) {
                None => {
                    c.added.insert(p.clone());
                }
                Some(old) if old != v => {
                    c.modified.insert(p.clone());
                }
                Some(_) => {}
            }
        }
        c.removed = before
            .keys()
            .filter(|p| !after.contains_key(*p))
            .cloned()
            .collect();
        c
    }

    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.removed.is_empty()
    }

    fn changed(&self) -> FieldSet {
        self.added.union(&self.modified).cloned().collect()
    }
}

/// One `managedFields` entry.
#[derive(Debug, Clone)]
struct Entry {
    manager: String,
    operation: String,
    subresource: Option<String>,
    api_version: String,
    time: Option<String>,
    set: FieldSet,
}

impl Entry {
    fn is(&self, manager: &str, operation: &str, sub: Option<&str>) -> bool {
        self.manager == manager && self.operation == operation && self.subresource.as_deref() == sub
    }

    /// How the API server names the manager in a conflict.
    fn describe(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if let Some(sub) = &self.subresource {
            s = format!("{s} with subresource {sub:?}");
        }
        if self.operation == "Update" {
            s = format!("{s} using {}", self.api_version);
        }
        s
    }

    fn to_json(&self) -> Value {
        let mut e = json!({
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "fieldsType": "FieldsV1",
            "fieldsV1": to_fields_v1(&self.set),
        });
        if let Some(t) = &self.time {
            e["time"] = json!(t);
        }
        if self.manager.is_empty() {
            // `omitempty`: a writer without fieldManager or User-Agent is recorded nameless.
            if let Some(m) = e.as_object_mut() {
                m.remove("manager");
            }
        }
        if let Some(s) = &self.subresource {
            e["subresource"] = json!(s);
        }
        e
    }
}

fn read_entries(obj: &Value) -> Vec<Entry> {
    let Some(list) = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return vec![];
    };
    let s = |e: &Value, f: &str| e.get(f).and_then(Value::as_str).map(String::from);
    list.iter()
        .map(|e| Entry {
            manager: s(e, "manager").unwrap_or_default(),
            operation: s(e, "operation").unwrap_or_else(|| "Update".into()),
            subresource: s(e, "subresource").filter(|s| !s.is_empty()),
            api_version: s(e, "apiVersion").unwrap_or_default(),
            time: s(e, "time"),
            set: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
        })
        .collect()
}

fn write_entries(obj: &mut Value, entries: &[Entry]) {
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert(
            "managedFields".into(),
            entries.iter().map(Entry::to_json).collect(),
        );
    }
}

/// A FieldsV1 tree from a set: a member with children carries `"."`.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Value::Object(Map::new());
    for path in set {
        let mut node = &mut root;
        for el in path {
            node = node
                .as_object_mut()
                .expect("FieldsV1 nodes are objects")
                .entry(el.clone())
                .or_insert_with(|| json!({}));
        }
        node.as_object_mut()
            .expect("FieldsV1 nodes are objects")
            .insert(".".into(), json!({}));
    }
    // `"."` alone is written as `{}`.
    fn tidy(v: &mut Value) {
        if let Some(m) = v.as_object_mut() {
            if m.len() == 1 && m.contains_key(".") {
                m.clear();
            }
            for (k, c) in m.iter_mut() {
                if k != "." {
                    tidy(c);
                }
            }
        }
    }
    if let Some(m) = root.as_object_mut() {
        for c in m.values_mut() {
            tidy(c);
        }
    }
    root
}

/// The set a FieldsV1 tree describes.
pub fn from_fields_v1(v: &Value) -> FieldSet {
    fn walk(v: &Value, path: &mut FieldPath, out: &mut FieldSet) {
        let Some(m) = v.as_object() else { return };
        if !path.is_empty() && (m.is_empty() || m.contains_key(".")) {
            out.insert(path.clone());
        }
        for (k, c) in m {
            if k != "." {
                path.push(k.clone());
                walk(c, path, out);
                path.pop();
            }
        }
    }
    let mut out = FieldSet::new();
    walk(v, &mut vec![], &mut out);
    out
}

/// A path as the API server prints it: `.spec.containers[name="a"].image`, `[="x"]` for a set
/// item.
pub fn display_path(path: &FieldPath) -> String {
    path.iter()
        .map(|el| {
            if let Some(f) = el.strip_prefix("f:") {
                format!(".{f}")
            } else if let Some(k) = el.strip_prefix("k:") {
                let fields: Vec<String> = serde_json::from_str::<Map<String, Value>>(k)
                    .map(|m| m.iter().map(|(n, v)| format!("{n}={v}")).collect())
                    .unwrap_or_default();
                format!("[{}]", fields.join(","))
            } else if let Some(v) = el.strip_prefix("v:") {
                format!("[={v}]")
            } else {
                el.clone()
            }
        })
        .collect()
}

/// What a write is and who makes it.
#[derive(Debug, Clone, Copy)]
pub struct Writer<'a> {
    /// The field manager.
    pub manager: &'a str,
    /// The apiVersion of the request.
    pub api_version: &'a str,
    /// The part of the object written.
    pub scope: ApplyScope,
    /// The subresource written through (`status`, `scale`), which names the entry.
    pub subresource: Option<&'a str>,
    /// The time recorded in the entry.
    pub time: &'a str,
}

/// A field another manager owns that an apply would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyConflict {
    /// The other manager, as the API server names it (`"m"`, `"m" using v1`).
    pub manager: String,
    /// The field, e.g. `.spec.replicas`.
    pub path: String,
}

fn fields_of(
    obj: &Value,
    shape: &Shape<'_>,
    scope: ApplyScope,
    update: bool,
) -> BTreeMap<FieldPath, Value> {
    let mut out = BTreeMap::new();
    members(
        &restrict(obj, scope, shape.status_split),
        shape,
        update,
        &mut vec![],
        &mut vec![],
        &mut out,
    );
    out
}

/// Records a non-apply write (create, update, merge/JSON/strategic patch) of `new` over `old`
/// (`{}` for a create): the writer's `Update` entry gains what it added or changed and the
/// other managers lose it; removed fields leave every set.
///
/// As in the API server, a write to the main resource that carries `managedFields` of its own
/// (kubectl's client-side to server-side apply migration rewrites them) starts from those;
/// otherwise from the stored ones, so clients unaware of them cannot drop them.
pub fn track_update(old: &Value, new: &mut Value, shape: &Shape<'_>, w: Writer<'_>) {
    let cmp = Comparison::of(
        &fields_of(old, shape, w.scope, true),
        &fields_of(new, shape, w.scope, true),
    );
    let sent = read_entries(new);
    let mut entries = if w.subresource.is_none() && !sent.is_empty() {
        sent
    } else {
        read_entries(old)
    };
    if !cmp.is_empty() {
        let changed = cmp.changed();
        let sub = w.subresource;
        for e in entries
            .iter_mut()
            .filter(|e| !e.is(w.manager, "Update", sub))
        {
            e.set
                .retain(|p| !changed.contains(p) && !cmp.removed.contains(p));
        }
        let idx = match entries.iter().position(|e| e.is(w.manager, "Update", sub)) {
            Some(i) => i,
            None => {
                entries.push(Entry {
                    manager: w.manager.to_string(),
                    operation: "Update".into(),
                    subresource: sub.map(String::from),
                    api_version: w.api_version.to_string(),
                    time: None,
                    set: FieldSet::new(),
                });
                entries.len() - 1
            }
        };
        let mine = &mut entries[idx];
        mine.set.retain(|p| !cmp.removed.contains(p));
        mine.set.extend(changed);
        mine.api_version = w.api_version.to_string();
        mine.time = Some(w.time.to_string());
        entries.retain(|e| !e.set.is_empty());
    }
    write_entries(new, &entries);
}

/// Merges an applied configuration into a live object: maps merge, keyed lists merge item by
/// item, sets take the union, everything else is replaced.
fn merge(live: &mut Value, config: &Value, shape: &Shape<'_>, names: &mut Vec<String>) {
    match (live, config) {
        (Value::Object(l), Value::Object(c)) if !shape.atomic_map(names) => {
            for (k, v) in c {
                names.push(k.clone());
                match l.get_mut(k) {
                    Some(lv) => merge(lv, v, shape, names),
                    None => {
                        l.insert(k.clone(), v.clone());
                    }
                }
                names.pop();
            }
        }
        (Value::Array(l), Value::Array(c)) => {
            let lt = shape.list_type(names);
            match (item_keys(l, &lt), item_keys(c, &lt)) {
                (Some(lk), Some(ck)) => {
                    for (key, item) in ck.iter().zip(c) {
                        match lk.iter().position(|k| k == key) {
                            Some(i) if lt != ListType::Set => merge(&mut l[i], item, shape, names),
                            Some(_) => {}
                            None => l.push(item.clone()),
                        }
                    }
                }
                _ => *l = c.clone(),
            }
        }
        (l, c) => *l = c.clone(),
    }
}

/// The key field names of a FieldsV1 list-item element (`k:{...}`).
fn key_names(el: &str) -> Vec<String> {
    el.strip_prefix("k:")
        .and_then(|k| serde_json::from_str::<Map<String, Value>>(k).ok())
        .map(|k| k.keys().cloned().collect())
        .unwrap_or_default()
}

/// Whether a list item is the one a FieldsV1 element (`k:{...}` or `v:...`) names.
fn item_matches(item: &Value, el: &str) -> bool {
    if let Some(v) = el.strip_prefix("v:") {
        return serde_json::from_str::<Value>(v).is_ok_and(|x| x == *item);
    }
    let names = key_names(el);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    !names.is_empty() && item_key(item, &names).as_deref() == Some(el)
}

/// Removes the value at an owned-field path; a map or list emptied by it goes too unless
/// `keep` holds it. Key fields of a list item stay (the item goes only as a whole).
fn remove_path(obj: &mut Value, path: &[String], keep: &FieldSet) {
    fn go(v: &mut Value, path: &[String], prefix: &mut FieldPath, keep: &FieldSet) {
        let Some((el, rest)) = path.split_first() else {
            return;
        };
        if let Some(f) = el.strip_prefix("f:") {
            let Some(m) = v.as_object_mut() else { return };
            if rest.is_empty() {
                if !prefix
                    .last()
                    .is_some_and(|d| key_names(d).iter().any(|k| k == f))
                {
                    m.remove(f);
                }
                return;
            }
            let Some(child) = m.get_mut(f) else { return };
            let was_empty = is_empty_container(child);
            prefix.push(el.clone());
            go(child, rest, prefix, keep);
            let emptied = !was_empty && is_empty_container(child) && !keep.contains(prefix);
            prefix.pop();
            if emptied {
                m.remove(f);
            }
        } else {
            let Some(items) = v.as_array_mut() else {
                return;
            };
            let Some(pos) = items.iter().position(|i| item_matches(i, el)) else {
                return;
            };
            if rest.is_empty() {
                items.remove(pos);
                return;
            }
            prefix.push(el.clone());
            go(&mut items[pos], rest, prefix, keep);
            prefix.pop();
        }
    }
    go(obj, path, &mut vec![], keep);
}

fn is_empty_container(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// The annotation client-side apply keeps its last applied configuration in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Whether conflicts are allowed because `kubectl apply --server-side` takes over what
/// `kubectl apply` (client-side) applied: the API server lets manager `kubectl` win every
/// conflict on a field the last-applied annotation contains.
fn upgrades_client_side_apply(
    live: &Value,
    conflicting: &FieldSet,
    shape: &Shape<'_>,
    w: Writer<'_>,
) -> bool {
    if w.manager != "kubectl" {
        return false;
    }
    let Some(last) = live
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED))
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
    else {
        return false;
    };
    let last_applied = fields_of(&last, shape, w.scope, false);
    conflicting.iter().all(|p| last_applied.contains_key(p))
}

/// Server-side applies `applied` onto `live` for `w.manager`, updating `managedFields`.
/// Without `force`, a change to a field another manager owns is a conflict and nothing
/// changes; with it, the field changes hands.
pub fn apply(
    live: &mut Value,
    applied: &Value,
    force: bool,
    shape: &Shape<'_>,
    w: Writer<'_>,
) -> Result<(), Vec<ApplyConflict>> {
    let sub = w.subresource;
    let config = restrict(applied, w.scope, shape.status_split);
    let mut config_fields = BTreeMap::new();
    members(
        &config,
        shape,
        false,
        &mut vec![],
        &mut vec![],
        &mut config_fields,
    );
    let new_set: FieldSet = config_fields.into_keys().collect();

    let mut entries = read_entries(live);
    let existed = entries.iter().any(|e| e.is(w.manager, "Apply", sub));
    let last = entries
        .iter()
        .find(|e| e.is(w.manager, "Apply", sub))
        .map(|e| e.set.clone())
        .unwrap_or_default();

    let mut merged = live.clone();
    merge(&mut merged, &config, shape, &mut vec![]);
    // What the applier dropped goes, unless someone (the applier included) still owns it.
    let owned: FieldSet = entries
        .iter()
        .filter(|e| !e.is(w.manager, "Apply", sub))
        .flat_map(|e| e.set.iter().cloned())
        .chain(new_set.iter().cloned())
        .collect();
    for p in last.difference(&owned) {
        let holds_owned = owned
            .range(p.clone()..)
            .take_while(|q| q.starts_with(p))
            .any(|q| q != p);
        if !holds_owned {
            remove_path(&mut merged, p, &owned);
        }
    }

    let cmp = Comparison::of(
        &fields_of(live, shape, w.scope, false),
        &fields_of(&merged, shape, w.scope, false),
    );
    let changed = cmp.changed();
    let mut conflicts = vec![];
    let mut conflicting = FieldSet::new();
    for e in entries.iter().filter(|e| !e.is(w.manager, "Apply", sub)) {
        for p in e.set.intersection(&changed) {
            conflicting.insert(p.clone());
            conflicts.push(ApplyConflict {
                manager: e.describe(),
                path: display_path(p),
            });
        }
    }
    if !force && !conflicts.is_empty() && !upgrades_client_side_apply(live, &conflicting, shape, w)
    {
        return Err(conflicts);
    }
    if existed && last == new_set && cmp.is_empty() {
        // Like kube-apiserver, an apply that changes neither the object nor the manager's
        // fields is a no-op: the entry's time stays, so the resourceVersion does not move.
        return Ok(());
    }
    for e in entries
        .iter_mut()
        .filter(|e| !e.is(w.manager, "Apply", sub))
    {
        e.set
            .retain(|p| !changed.contains(p) && !cmp.removed.contains(p));
    }
    let entry = Entry {
        manager: w.manager.to_string(),
        operation: "Apply".into(),
        subresource: sub.map(String::from),
        api_version: w.api_version.to_string(),
        time: Some(w.time.to_string()),
        set: new_set,
    };
    match entries.iter().position(|e| e.is(w.manager, "Apply", sub)) {
        Some(i) => entries[i] = entry,
        None => entries.push(entry),
    }
    entries.retain(|e| !e.set.is_empty());
    *live = merged;
    write_entries(live, &entries);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtin() -> ResourceType {
        crate::apiserver::registry::Registry::with_builtins()
            .get("", "configmaps")
            .map(|t| (*t).clone())
            .expect("configmaps")
    }

    fn writer(manager: &str) -> Writer<'_> {
        Writer {
            manager,
            api_version: "v1",
            scope: ApplyScope::Main,
            subresource: None,
            time: "t",
        }
    }

    #[test]
    fn fields_v1_round_trips() {
        let v = json!({"f:data": {".": {}, "f:a": {}}, "f:spec": {"f:c": {"k:{\"name\":\"x\"}": {".": {}, "f:name": {}}}}});
        assert_eq!(to_fields_v1(&from_fields_v1(&v)), v);
    }

    #[test]
    fn apply_removes_fields_the_manager_dropped_unless_others_own_them() {
        let rt = builtin();
        let shape = Shape::of(&rt, "v1");
        let mut live = json!({"metadata": {"name": "x"}, "data": {"a": "1", "b": "2", "c": "3"}});
        apply(
            &mut live,
            &json!({"data": {"a": "1", "b": "2"}}),
            true,
            &shape,
            writer("m1"),
        )
        .unwrap();
        apply(
            &mut live,
            &json!({"data": {"b": "2", "c": "4"}}),
            true,
            &shape,
            writer("m2"),
        )
        .unwrap();
        apply(
            &mut live,
            &json!({"data": {"a": "5"}}),
            true,
            &shape,
            writer("m1"),
        )
        .unwrap();
        // b is still m2's; c was forced over by m2.
        assert_eq!(live["data"], json!({"a": "5", "b": "2", "c": "4"}));
        let conflict = apply(
            &mut live,
            &json!({"data": {"c": "1"}}),
            false,
            &shape,
            writer("m1"),
        );
        assert_eq!(conflict.unwrap_err()[0].path, ".data.c");
        assert_eq!(
            live["data"]["c"], "4",
            "a conflicting apply changes nothing"
        );
    }

    #[test]
    fn updates_take_fields_from_other_managers() {
        let rt = builtin();
        let shape = Shape::of(&rt, "v1");
        let mut created = json!({"metadata": {"name": "x"}, "data": {"a": "1"}});
        track_update(&json!({}), &mut created, &shape, writer("creator"));
        let mut updated = created.clone();
        updated["data"]["a"] = json!("2");
        track_update(&created, &mut updated, &shape, writer("editor"));
        let entries = read_entries(&updated);
        let set_of = |m: &str| {
            entries
                .iter()
                .find(|e| e.manager == m)
                .map(|e| to_fields_v1(&e.set))
        };
        // The creator keeps the map it added; the editor takes the key it changed.
        assert_eq!(set_of("creator"), Some(json!({"f:data": {}})), "{updated}");
        assert_eq!(set_of("editor"), Some(json!({"f:data": {"f:a": {}}})));
    }

    #[test]
    fn display_paths_name_list_items() {
        let p: FieldPath = vec![
            "f:spec".into(),
            "f:containers".into(),
            "k:{\"name\":\"a\"}".into(),
            "f:image".into(),
        ];
        assert_eq!(display_path(&p), ".spec.containers[name=\"a\"].image");
    }
}
