//! API semantics on top of the store: create, update, patch, delete, status subresource,
//! finalizers, generation and no-op detection. Type-specific defaulting and validation live in
//! `defaults`, the `/scale` subresource in `scale`, garbage collection in `gc`.

mod defaults;
mod gc;
mod scale;

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value, json};

use super::error::{ApiError, ApiResult, Cause, Target};
use super::fields::{self, ApplyScope, Shape, Writer};
use super::patch::{self, PatchKind};
use super::registry::{Registry, ResourceType};
use super::selector::{FieldSelector, LabelSelector};
use super::store::{ObjKey, Store};

/// A random 64-bit number (std only: the standard hasher is randomly keyed).
pub fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn new_uid() -> String {
    let (a, b) = (random_u64(), random_u64());
    let hex = format!("{a:016x}{b:016x}");
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// The current time as a Kubernetes `Time` string (seconds precision, UTC).
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn random_suffix(n: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut x = random_u64();
    (0..n)
        .map(|_| {
            let c = ALPHABET[(x % ALPHABET.len() as u64) as usize] as char;
            x /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Options of a write request.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// `fieldManager` query parameter.
    pub field_manager: Option<String>,
    /// The `User-Agent` header: without a `fieldManager`, non-apply writes are recorded under
    /// its product name (`kubectl/v1.33 ...` → `kubectl`), as the API server does.
    pub user_agent: Option<String>,
    /// `force` query parameter (server-side apply).
    pub force: bool,
    /// `dryRun=All`: compute the result without storing it.
    pub dry_run: bool,
    /// The object was built by server-side apply, which recorded its own managedFields.
    pub applied: bool,
}

/// Options of a DELETE request (from the query and the DeleteOptions body).
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// `propagationPolicy`: Orphan, Background or Foreground.
    pub propagation: Option<String>,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
}

/// Options of a LIST request.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// `limit`: the most items per page (0 or absent: all).
    pub limit: Option<usize>,
    /// `continue`: the token of the previous page.
    pub continue_token: Option<String>,
    /// `resourceVersion`.
    pub resource_version: Option<String>,
    /// `resourceVersionMatch`: `Exact` or `NotOlderThan`.
    pub resource_version_match: Option<String>,
}

impl ListOptions {
    /// The API server's ListOptions validation (422 Invalid).
    fn validate(&self) -> ApiResult<()> {
        let rv = self.resource_version.as_deref().unwrap_or_default();
        let message = match self.resource_version_match.as_deref() {
            None => return Ok(()),
            Some(_) if self.continue_token.is_some() => {
                "Forbidden: resourceVersionMatch is forbidden when continue is provided".to_string()
            }
            Some(_) if rv.is_empty() => {
                "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided"
                    .to_string()
            }
            Some("Exact") if rv == "0" => {
                r#"Forbidden: resourceVersionMatch "exact" is forbidden for resourceVersion "0""#
                    .to_string()
            }
            Some("Exact" | "NotOlderThan") => return Ok(()),
            Some(other) => format!(
                r#"Unsupported value: {other:?}: supported values: "Exact", "NotOlderThan""#
            ),
        };
        Err(ApiError::invalid(
            Target {
                group: "meta.k8s.io",
                kind: "ListOptions",
                name: "",
            },
            vec![Cause {
                field: "resourceVersionMatch".into(),
                message,
            }],
        ))
    }
}

/// The opaque `continue` token of a paged list: the snapshot's resourceVersion and the key of
/// the last item served, as JSON in hex (clients must not look inside).
struct ContinueToken;

impl ContinueToken {
    /// Where an object sorts within its type: (namespace, name), as the store orders keys.
    fn key_of(k: &ObjKey) -> (String, String) {
        (k.namespace.clone(), k.name.clone())
    }

    fn encode(rv: u64, (ns, name): &(String, String)) -> String {
        json!({"v": "meta.k8s.io/v1", "rv": rv, "start": format!("{ns}/{name}")})
            .to_string()
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn decode(token: &str) -> ApiResult<(u64, (String, String))> {
        let invalid = || {
            ApiError::bad_request(
                "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
            )
        };
        if !token.len().is_multiple_of(2) || !token.is_ascii() {
            return Err(invalid());
        }
        let bytes = (0..token.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&token[i..i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| invalid())?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        match (
            v.get("rv").and_then(Value::as_u64),
            v.get("start")
                .and_then(Value::as_str)
                .and_then(|s| s.split_once('/')),
        ) {
            (Some(rv), Some((ns, name))) => Ok((rv, (ns.to_string(), name.to_string()))),
            _ => Err(invalid()),
        }
    }
}

/// Which part of an object a request addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    /// The main resource.
    Main,
    /// The `/status` subresource.
    Status,
    /// A Pod's `/ephemeralcontainers`: only `spec.ephemeralContainers` changes.
    EphemeralContainers,
    /// A CertificateSigningRequest's `/approval`: only `status.conditions` changes.
    Approval,
}

impl Sub {
    fn apply_scope(self) -> ApplyScope {
        match self {
            Self::Main | Self::EphemeralContainers => ApplyScope::Main,
            Self::Status | Self::Approval => ApplyScope::Status,
        }
    }

    fn subresource(self) -> Option<&'static str> {
        match self {
            Self::Main => None,
            Self::Status => Some("status"),
            Self::EphemeralContainers => Some("ephemeralcontainers"),
            Self::Approval => Some("approval"),
        }
    }

    /// The object a write to this subresource stores: the current object with only the
    /// subresource's part taken from `written` (as the subresources' update strategies do).
    fn splice(self, cur: &Value, written: &Value) -> Value {
        let take = |new: &mut Value, parent: &str, field: &str| {
            let value = written.get(parent).and_then(|p| p.get(field)).cloned();
            if !new.get(parent).is_some_and(Value::is_object) {
                new[parent] = json!({});
            }
            match value {
                Some(v) => new[parent][field] = v,
                None => {
                    if let Some(m) = new[parent].as_object_mut() {
                        m.remove(field);
                    }
                }
            }
        };
        let mut new = cur.clone();
        match self {
            Self::Main => return written.clone(),
            Self::Status => new["status"] = written.get("status").cloned().unwrap_or(Value::Null),
            Self::EphemeralContainers => take(&mut new, "spec", "ephemeralContainers"),
            Self::Approval => take(&mut new, "status", "conditions"),
        }
        new
    }
}

/// Who makes a non-apply write, for `managedFields`.
#[derive(Debug, Clone, Copy)]
pub(super) struct UpdateManager<'a> {
    manager: &'a str,
    scope: ApplyScope,
    subresource: Option<&'a str>,
}

impl WriteOptions {
    /// The manager of a non-apply write: `fieldManager`, else the User-Agent's product.
    fn update_manager(&self) -> &str {
        self.field_manager.as_deref().unwrap_or_else(|| {
            self.user_agent
                .as_deref()
                .and_then(|ua| ua.split('/').next())
                .unwrap_or_default()
        })
    }

    pub(super) fn updater(&self, sub: Sub) -> UpdateManager<'_> {
        UpdateManager {
            manager: self.update_manager(),
            scope: sub.apply_scope(),
            subresource: sub.subresource(),
        }
    }
}

/// Store + registry: everything the API server keeps, behind one lock.
#[derive(Debug)]
pub struct Cluster {
    /// Known resource types.
    pub registry: Registry,
    /// Objects and their history.
    pub store: Store,
    /// Set when something was deleted, so the garbage collector should run.
    pub gc_needed: bool,
}

fn meta(obj: &Value) -> &Value {
    obj.get("metadata").unwrap_or(&Value::Null)
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj).get(field).and_then(Value::as_str)
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

/// Reads `.a.b.c` from an object.
pub fn get_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    path.trim_start_matches('.')
        .split('.')
        .try_fold(obj, |cur, seg| cur.get(seg))
}

fn set_path(obj: &mut Value, path: &str, value: Value) {
    let segs: Vec<&str> = path.trim_start_matches('.').split('.').collect();
    let mut cur = obj;
    for seg in &segs[..segs.len() - 1] {
        if !cur.get(*seg).is_some_and(Value::is_object) {
            cur[*seg] = json!({});
        }
        cur = &mut cur[*seg];
    }
    cur[segs[segs.len() - 1]] = value;
}

/// The string form of a LabelSelector object (`matchLabels` + `matchExpressions`).
pub fn selector_string(sel: &Value) -> String {
    let mut parts = vec![];
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            parts.push(format!("{k}={}", v.as_str().unwrap_or_default()));
        }
    }
    if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
            let values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match e.get("operator").and_then(Value::as_str) {
                Some("In") => parts.push(format!("{key} in ({})", values.join(","))),
                Some("NotIn") => parts.push(format!("{key} notin ({})", values.join(","))),
                Some("Exists") => parts.push(key.to_string()),
                Some("DoesNotExist") => parts.push(format!("!{key}")),
                _ => {}
            }
        }
    }
    parts.join(",")
}

/// Everything but metadata and status: what `metadata.generation` tracks.
fn spec_part(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    o
}

fn without_rv(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    o
}

fn is_crd_type(rt: &ResourceType) -> bool {
    rt.group == "apiextensions.k8s.io" && rt.plural == "customresourcedefinitions"
}

/// Keeps the stored status on a write to the main resource of a type with a status subresource.
fn keep_status(new: &mut Value, cur: &Value) {
    match cur.get("status") {
        Some(s) => new["status"] = s.clone(),
        None => {
            if let Some(m) = new.as_object_mut() {
                m.remove("status");
            }
        }
    }
}

impl Cluster {
    /// An empty cluster with the built-in types.
    pub fn new(history_limit: usize) -> Self {
        Self {
            registry: Registry::with_builtins(),
            store: Store::new(history_limit),
            gc_needed: false,
        }
    }

    fn key(rt: &ResourceType, ns: Option<&str>, name: &str) -> ObjKey {
        ObjKey {
            group: rt.group.clone(),
            plural: rt.plural.clone(),
            namespace: if rt.namespaced {
                ns.unwrap_or_default().to_string()
            } else {
                String::new()
            },
            name: name.to_string(),
        }
    }

    fn target<'a>(rt: &'a ResourceType, name: &'a str) -> Target<'a> {
        Target {
            group: &rt.group,
            kind: &rt.plural,
            name,
        }
    }

    /// Renders a stored object for a request of `version`.
    pub fn render(rt: &ResourceType, version: &str, obj: &Value) -> Value {
        let mut o = obj.clone();
        o["apiVersion"] = json!(rt.api_version(version));
        o["kind"] = json!(rt.kind);
        o
    }

    /// Gets one object.
    pub fn get(
        &self,
        rt: &ResourceType,
        version: &str,
        ns: Option<&str>,
        name: &str,
    ) -> ApiResult<Value> {
        self.store
            .get(&Self::key(rt, ns, name))
            .map(|o| Self::render(rt, version, o))
            .ok_or_else(|| ApiError::not_found(Self::target(rt, name)))
    }

    /// Lists objects, a page at a time when `opts.limit` is set: every page is cut from the
    /// state at the first page's resourceVersion, which the `continue` token carries.
    pub fn list(
        &self,
        rt: &ResourceType,
        version: &str,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        opts: &ListOptions,
    ) -> ApiResult<Value> {
        opts.validate()?;
        let current = self.store.rv();
        let requested = opts
            .resource_version
            .as_deref()
            .filter(|r| !r.is_empty())
            .map(|r| {
                r.parse::<u64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {r:?}")))
            })
            .transpose()?;
        let (at, start) = match &opts.continue_token {
            Some(token) => {
                if requested.is_some() {
                    return Err(ApiError::bad_request(
                        "specifying resource version is not allowed when using continue",
                    ));
                }
                let (rv, start) = ContinueToken::decode(token)?;
                if rv < self.store.compacted() {
                    return Err(ApiError::continue_expired());
                }
                (rv, Some(start))
            }
            None => match (opts.resource_version_match.as_deref(), requested) {
                (Some("Exact"), Some(rv)) if rv > current => {
                    return Err(ApiError::too_large_resource_version(rv, current));
                }
                (Some("Exact"), Some(rv)) if rv < self.store.compacted() => {
                    return Err(ApiError::gone(rv, self.store.compacted() + 1));
                }
                (Some("Exact"), Some(rv)) => (rv, None),
                (Some("NotOlderThan"), Some(rv)) if rv > current => {
                    return Err(ApiError::too_large_resource_version(rv, current));
                }
                _ => (current, None),
            },
        };
        let snapshot = if at == current {
            self.store
                .list(&rt.group, &rt.plural, ns)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        } else {
            self.store
                .list_at(&rt.group, &rt.plural, ns, at)
                .ok_or_else(|| ApiError::gone(at, self.store.compacted() + 1))?
        };
        let mut matching = snapshot
            .into_iter()
            .filter(|(k, _)| start.as_ref().is_none_or(|s| ContinueToken::key_of(k) > *s))
            .filter(|(_, o)| labels.matches(o) && fields.matches(o));
        let limit = opts.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        let page: Vec<(ObjKey, Value)> = matching.by_ref().take(limit).collect();
        let remaining = matching.count();
        let mut list_meta = json!({"resourceVersion": at.to_string()});
        if remaining > 0
            && let Some((last, _)) = page.last()
        {
            list_meta["continue"] = json!(ContinueToken::encode(at, &ContinueToken::key_of(last)));
            // Only an unfiltered list knows how many items are left, as with etcd.
            if labels.is_empty() && fields.is_empty() {
                list_meta["remainingItemCount"] = json!(remaining);
            }
        }
        Ok(json!({
            "apiVersion": rt.api_version(version),
            "kind": rt.list_kind,
            "metadata": list_meta,
            "items": page.iter().map(|(_, o)| Self::render(rt, version, o)).collect::<Vec<_>>(),
        }))
    }

    /// Creates a namespace unless it exists.
    pub fn ensure_namespace(&mut self, ns: &str) {
        let key = ObjKey {
            group: String::new(),
            plural: "namespaces".into(),
            namespace: String::new(),
            name: ns.into(),
        };
        if self.store.get(&key).is_some() {
            return;
        }
        let rv = self.store.next_rv();
        let obj = json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": ns,
                "uid": new_uid(),
                "creationTimestamp": now(),
                "resourceVersion": rv.to_string(),
                "labels": {"kubernetes.io/metadata.name": ns},
            },
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        });
        self.store.put(key, obj, rv);
    }

    /// Admission of a create into `ns` (the NamespaceLifecycle plugin): the namespace must exist
    /// and must not be terminating.
    fn check_namespace_accepts(&self, rt: &ResourceType, ns: &str, name: &str) -> ApiResult<()> {
        let key = ObjKey {
            group: String::new(),
            plural: "namespaces".into(),
            namespace: String::new(),
            name: ns.into(),
        };
        match self.store.get(&key) {
            None => Err(ApiError::namespace_not_found(ns)),
            Some(n) if meta(n).get("deletionTimestamp").is_some() => {
                Err(ApiError::namespace_terminating(Self::target(rt, name), ns))
            }
            Some(_) => Ok(()),
        }
    }

    /// Creates an object.
    pub fn create(
        &mut self,
        rt: &Arc<ResourceType>,
        version: &str,
        ns: Option<&str>,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        if meta_str(&obj, "resourceVersion").is_some_and(|rv| !rv.is_empty()) {
            return Err(ApiError::resource_version_set_on_create());
        }
        let body_ns = meta_str(&obj, "namespace")
            .filter(|s| !s.is_empty())
            .map(String::from);
        let ns = if rt.namespaced {
            match (ns, body_ns.as_deref()) {
                (Some(u), Some(b)) if u != b => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                (Some(u), _) => Some(u.to_string()),
                (None, Some(b)) => Some(b.to_string()),
                (None, None) => Some("default".to_string()),
            }
        } else {
            None
        };
        let mut name = meta_str(&obj, "name").unwrap_or_default().to_string();
        if let Some(ns) = &ns {
            self.check_namespace_accepts(rt, ns, &name)?;
        }
        if name.is_empty()
            && let Some(prefix) = meta_str(&obj, "generateName").filter(|p| !p.is_empty())
        {
            name = format!("{prefix}{}", random_suffix(5));
        }
        let kind_target = Target {
            group: &rt.group,
            kind: &rt.kind,
            name: &name,
        };
        if name.is_empty() {
            return Err(ApiError::invalid(
                kind_target,
                vec![Cause {
                    field: "metadata.name".into(),
                    message: "Required value: name or generateName is required".into(),
                }],
            ));
        }
        // APIService names are `<version>.<group>`, and the core group's is `v1.` (its own
        // validation, not the DNS-subdomain rule).
        let api_service = rt.group == "apiregistration.k8s.io" && rt.plural == "apiservices";
        if !(is_dns_subdomain(&name) || api_service && is_dns_subdomain(name.trim_end_matches('.')))
        {
            return Err(ApiError::invalid(
                kind_target,
                vec![Cause {
                    field: "metadata.name".into(),
                    message: format!(
                        "Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
                    ),
                }],
            ));
        }
        let key = Self::key(rt, ns.as_deref(), &name);
        if self.store.get(&key).is_some() {
            return Err(ApiError::already_exists(Self::target(rt, &name)));
        }
        obj["apiVersion"] = json!(rt.api_version(&rt.versions[0]));
        obj["kind"] = json!(rt.kind);
        let has_spec = obj.get("spec").is_some() || rt.custom;
        {
            let m = meta_mut(&mut obj);
            m.insert("name".into(), json!(name));
            match &ns {
                Some(ns) => m.insert("namespace".into(), json!(ns)),
                None => m.remove("namespace"),
            };
            m.insert("uid".into(), json!(new_uid()));
            m.insert("creationTimestamp".into(), json!(now()));
            m.remove("deletionTimestamp");
            m.remove("deletionGracePeriodSeconds");
            m.remove("resourceVersion");
            m.remove("selfLink");
            if has_spec {
                m.insert("generation".into(), json!(1));
            } else {
                m.remove("generation");
            }
        }
        if rt.status
            && let Some(m) = obj.as_object_mut()
        {
            m.remove("status");
        }
        normalize_meta(&mut obj);
        self.prepare(rt, version, &mut obj, None)?;
        if !opts.applied {
            Self::track_update(rt, version, &json!({}), &mut obj, opts.updater(Sub::Main));
        }
        if opts.dry_run {
            return Ok(Self::render(rt, version, &obj));
        }
        let rv = self.store.next_rv();
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
        self.store.put(key, obj.clone(), rv);
        self.after_write(rt, &obj);
        Ok(Self::render(rt, version, &obj))
    }

    /// Registers the type of a CRD after a write to it.
    fn after_write(&mut self, rt: &ResourceType, obj: &Value) {
        // An object may name an owner that does not exist (or no longer does): the garbage
        // collector decides, as the kube garbage collector does for every new dependent.
        if meta(obj).get("ownerReferences").is_some() {
            self.gc_needed = true;
        }
        if is_crd_type(rt)
            && let Some(t) = ResourceType::from_crd(obj)
        {
            tracing::info!(group = %t.group, plural = %t.plural, "registered custom resource");
            self.registry.insert(t);
        }
    }

    /// Commits a new state of an existing object: keeps server-owned metadata, bumps generation
    /// on spec changes, validates, completes a pending deletion when the last finalizer is gone,
    /// and skips no-op writes.
    #[allow(clippy::too_many_arguments)]
    fn commit(
        &mut self,
        rt: &Arc<ResourceType>,
        version: &str,
        key: ObjKey,
        old: &Value,
        mut new: Value,
        dry_run: bool,
        updater: Option<UpdateManager<'_>>,
    ) -> ApiResult<Value> {
        if !new.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        new["apiVersion"] = json!(rt.api_version(&rt.versions[0]));
        new["kind"] = json!(rt.kind);
        {
            let old_meta = meta(old).clone();
            let m = meta_mut(&mut new);
            for f in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match old_meta.get(f) {
                    Some(v) => m.insert(f.into(), v.clone()),
                    None => m.remove(f),
                };
            }
            if !m.contains_key("managedFields")
                && let Some(mf) = old_meta.get("managedFields")
            {
                m.insert("managedFields".into(), mf.clone());
            }
        }
        normalize_meta(&mut new);
        if meta(old).get("deletionTimestamp").is_some() {
            let before = string_set(meta(old).get("finalizers"));
            let added: Vec<String> = string_set(meta(&new).get("finalizers"))
                .into_iter()
                .filter(|f| !before.contains(f))
                .collect();
            if !added.is_empty() {
                let name = meta_str(old, "name").unwrap_or_default();
                return Err(ApiError::invalid(
                    Target {
                        group: &rt.group,
                        kind: &rt.kind,
                        name,
                    },
                    vec![Cause {
                        field: "metadata.finalizers".into(),
                        message: format!(
                            "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {}",
                            go_string_slice(&added)
                        ),
                    }],
                ));
            }
        }
        self.prepare(rt, version, &mut new, Some(old))?;
        if let Some(u) = updater {
            Self::track_update(rt, version, old, &mut new, u);
        }
        if let Some(g) = meta(old).get("generation").and_then(Value::as_i64)
            && spec_part(&new) != spec_part(old)
        {
            meta_mut(&mut new).insert("generation".into(), json!(g + 1));
        }
        let finalizers_empty = meta(&new)
            .get("finalizers")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        // A terminating namespace goes when the garbage collector has emptied it.
        if is_namespace_type(rt) && meta(old).get("deletionTimestamp").is_some() {
            self.gc_needed = true;
        }
        if meta(old).get("deletionTimestamp").is_some()
            && finalizers_empty
            && !is_namespace_type(rt)
        {
            if dry_run {
                return Ok(Self::render(rt, version, &new));
            }
            return Ok(Self::render(rt, version, &self.remove(rt, &key, new)));
        }
        let old_rv = meta(old)
            .get("resourceVersion")
            .cloned()
            .unwrap_or(Value::Null);
        meta_mut(&mut new).insert("resourceVersion".into(), old_rv);
        if without_rv(&new) == without_rv(old) || dry_run {
            return Ok(Self::render(rt, version, &new));
        }
        let rv = self.store.next_rv();
        meta_mut(&mut new).insert("resourceVersion".into(), json!(rv.to_string()));
        self.store.put(key, new.clone(), rv);
        self.after_write(rt, &new);
        Ok(Self::render(rt, version, &new))
    }

    /// Records a non-apply write in `managedFields` (after defaulting, so defaults are owned
    /// by the writer, as in the API server).
    fn track_update(
        rt: &ResourceType,
        version: &str,
        old: &Value,
        new: &mut Value,
        u: UpdateManager<'_>,
    ) {
        let api_version = rt.api_version(version);
        let time = now();
        fields::track_update(
            old,
            new,
            &Shape::of(rt, version),
            Writer {
                manager: u.manager,
                api_version: &api_version,
                scope: u.scope,
                subresource: u.subresource,
                time: &time,
            },
        );
    }

    fn check_rv(rt: &ResourceType, name: &str, body: &Value, current: &Value) -> ApiResult<()> {
        match meta_str(body, "resourceVersion").filter(|s| !s.is_empty()) {
            Some(rv) if Some(rv) != meta_str(current, "resourceVersion") => {
                Err(ApiError::conflict(Self::target(rt, name)))
            }
            _ => Ok(()),
        }
    }

    fn existing(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
    ) -> ApiResult<(ObjKey, Value)> {
        let key = Self::key(rt, ns, name);
        let cur = self
            .store
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(Self::target(rt, name)))?;
        Ok((key, cur))
    }

    /// Replaces an object (PUT) or its status (PUT on `/status`).
    #[allow(clippy::too_many_arguments)]
    pub fn replace(
        &mut self,
        rt: &Arc<ResourceType>,
        version: &str,
        ns: Option<&str>,
        name: &str,
        body: Value,
        sub: Sub,
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        if let Some(body_name) = meta_str(&body, "name").filter(|n| *n != name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let (key, cur) = self.existing(rt, ns, name)?;
        Self::check_rv(rt, name, &body, &cur)?;
        let new = match sub {
            Sub::Main => {
                let mut new = body;
                if rt.status {
                    keep_status(&mut new, &cur);
                }
                new
            }
            _ => sub.splice(&cur, &body),
        };
        self.commit(
            rt,
            version,
            key,
            &cur,
            new,
            opts.dry_run,
            Some(opts.updater(sub)),
        )
    }

    /// Patches an object or its status; server-side apply creates the object when absent.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        rt: &Arc<ResourceType>,
        version: &str,
        ns: Option<&str>,
        name: &str,
        kind: PatchKind,
        body: Value,
        sub: Sub,
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        let key = Self::key(rt, ns, name);
        let api_version = rt.api_version(version);
        let manager = || {
            opts.field_manager
                .clone()
                .ok_or_else(|| ApiError::bad_request("PATCH with apply requires a fieldManager"))
        };
        let Some(cur) = self.store.get(&key).cloned() else {
            if kind == PatchKind::Apply && sub == Sub::Main {
                let manager = manager()?;
                if meta_str(&body, "name").is_some_and(|n| n != name) {
                    return Err(ApiError::bad_request(
                        "the name of the object does not match the name on the URL",
                    ));
                }
                let mut obj = json!({"metadata": {"name": name}});
                let time = now();
                // A new object has no other managers, so there is nothing to conflict with.
                let _ = fields::apply(
                    &mut obj,
                    &body,
                    true,
                    &Shape::of(rt, version),
                    Writer {
                        manager: &manager,
                        api_version: &api_version,
                        scope: ApplyScope::Main,
                        subresource: None,
                        time: &time,
                    },
                );
                let opts = WriteOptions {
                    applied: true,
                    ..opts.clone()
                };
                return self.create(rt, version, ns, obj, &opts);
            }
            return Err(ApiError::not_found(Self::target(rt, name)));
        };
        let mut patched = Self::render(rt, version, &cur);
        match kind {
            PatchKind::Merge => patch::merge_patch(&mut patched, &body),
            PatchKind::Json => patch::json_patch(&mut patched, &body)?,
            PatchKind::Strategic if rt.custom => {
                return Err(ApiError::unsupported_patch_type(
                    &patch::CUSTOM_RESOURCE_PATCH_TYPES,
                ));
            }
            PatchKind::Strategic => patch::strategic_merge(&mut patched, &body),
            PatchKind::Apply => {
                let time = now();
                fields::apply(
                    &mut patched,
                    &body,
                    opts.force,
                    &Shape::of(rt, version),
                    Writer {
                        manager: &manager()?,
                        api_version: &api_version,
                        scope: sub.apply_scope(),
                        subresource: sub.subresource(),
                        time: &time,
                    },
                )
                .map_err(|c| ApiError::apply_conflicts(&c))?;
            }
        }
        if meta_str(&patched, "name") != Some(name) {
            return Err(ApiError::bad_request(
                "the name of the object cannot be changed by a patch",
            ));
        }
        Self::check_rv(rt, name, &patched, &cur)?;
        let new = match sub {
            Sub::Main => {
                if rt.status {
                    keep_status(&mut patched, &cur);
                }
                patched
            }
            _ => {
                let mut new = sub.splice(&cur, &patched);
                if let Some(mf) = meta(&patched).get("managedFields") {
                    meta_mut(&mut new).insert("managedFields".into(), mf.clone());
                }
                new
            }
        };
        let updater = (kind != PatchKind::Apply).then(|| opts.updater(sub));
        self.commit(rt, version, key, &cur, new, opts.dry_run, updater)
    }

    /// Removes an object now (no finalizer check) and returns its final state. Removing a CRD
    /// removes its type and objects; removing a namespace deletes what it contains.
    fn remove(&mut self, rt: &ResourceType, key: &ObjKey, mut last: Value) -> Value {
        let rv = self.store.next_rv();
        meta_mut(&mut last).insert("resourceVersion".into(), json!(rv.to_string()));
        self.store.remove(key, last.clone(), rv);
        self.gc_needed = true;
        if is_crd_type(rt)
            && let (Some(g), Some(p)) = (
                last.pointer("/spec/group").and_then(Value::as_str),
                last.pointer("/spec/names/plural").and_then(Value::as_str),
            )
        {
            if let Some(t) = self.registry.get(g, p) {
                let objects: Vec<(ObjKey, Value)> = self
                    .store
                    .list(g, p, None)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                for (k, v) in objects {
                    self.remove(&t, &k, v);
                }
            }
            self.registry.remove(g, p);
            tracing::info!(group = g, plural = p, "unregistered custom resource");
        }
        if is_namespace_type(rt) {
            let contained: Vec<(ObjKey, Value)> = self
                .store
                .all()
                .filter(|(k, _)| k.namespace == key.name)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for (k, v) in contained {
                if let Some(t) = self.registry.get(&k.group, &k.plural) {
                    self.delete_key(&t, &k, v, None);
                }
            }
        }
        last
    }

    /// Deletes one object: marks it when finalizers remain (or, for a namespace, until the
    /// garbage collector has emptied it), removes it otherwise.
    fn delete_key(
        &mut self,
        rt: &Arc<ResourceType>,
        key: &ObjKey,
        cur: Value,
        propagation: Option<&str>,
    ) -> Deleted {
        if propagation == Some("Orphan")
            && let Some(uid) = meta_str(&cur, "uid").map(String::from)
        {
            self.orphan_dependents(&uid);
        }
        let is_namespace = is_namespace_type(rt);
        // Foreground: the owner stays, marked with the `foregroundDeletion` finalizer, until
        // the garbage collector has deleted its blocking dependents (see `gc.rs`).
        let foreground = propagation == Some("Foreground") && !is_namespace;
        let mut cur = cur;
        if foreground
            && !string_set(meta(&cur).get("finalizers"))
                .iter()
                .any(|f| f == FOREGROUND)
        {
            let m = meta_mut(&mut cur);
            match m.get_mut("finalizers").and_then(Value::as_array_mut) {
                Some(list) => list.push(json!(FOREGROUND)),
                None => {
                    m.insert("finalizers".into(), json!([FOREGROUND]));
                }
            }
            self.gc_needed = true;
            if meta(&cur).get("deletionTimestamp").is_some() {
                let rv = self.store.next_rv();
                meta_mut(&mut cur).insert("resourceVersion".into(), json!(rv.to_string()));
                self.store.put(key.clone(), cur.clone(), rv);
            }
        }
        if !is_namespace && !has_finalizers(&cur) {
            return Deleted::Gone(self.remove(rt, key, cur));
        }
        if meta(&cur).get("deletionTimestamp").is_some() {
            return Deleted::Pending(cur);
        }
        let mut new = cur;
        if is_namespace {
            // The namespace controller empties it first; until then it is Terminating.
            new["status"]["phase"] = json!("Terminating");
            self.gc_needed = true;
        }
        let m = meta_mut(&mut new);
        m.insert("deletionTimestamp".into(), json!(now()));
        m.insert("deletionGracePeriodSeconds".into(), json!(0));
        let rv = self.store.next_rv();
        m.insert("resourceVersion".into(), json!(rv.to_string()));
        self.store.put(key.clone(), new.clone(), rv);
        Deleted::Pending(new)
    }

    /// Deletes an object (DELETE). Like the API server, the answer is a `Status` when the object
    /// is gone at once, and the object itself while finalizers (or a namespace's contents) hold
    /// it, or for the types whose storage returns the deleted object (pods, services, service
    /// accounts).
    pub fn delete(
        &mut self,
        rt: &Arc<ResourceType>,
        version: &str,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> ApiResult<Value> {
        let (key, cur) = self.existing(rt, ns, name)?;
        if is_namespace_type(rt) && matches!(name, "default" | "kube-system" | "kube-public") {
            return Err(ApiError::forbidden(format!(
                "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
            )));
        }
        if opts
            .uid
            .as_deref()
            .is_some_and(|u| Some(u) != meta_str(&cur, "uid"))
            || opts
                .resource_version
                .as_deref()
                .is_some_and(|r| Some(r) != meta_str(&cur, "resourceVersion"))
        {
            return Err(ApiError::conflict(Self::target(rt, name)));
        }
        let deleted = if opts.dry_run {
            if is_namespace_type(rt)
                || has_finalizers(&cur)
                || opts.propagation.as_deref() == Some("Foreground")
            {
                Deleted::Pending(cur)
            } else {
                Deleted::Gone(cur)
            }
        } else {
            self.delete_key(rt, &key, cur, opts.propagation.as_deref())
        };
        Ok(match deleted {
            Deleted::Gone(last) if !returns_deleted_object(rt) => deleted_status(rt, &last),
            Deleted::Gone(obj) | Deleted::Pending(obj) => Self::render(rt, version, &obj),
        })
    }

    /// Deletes every matching object (DELETE on a collection) and returns them as a list.
    pub fn delete_collection(
        &mut self,
        rt: &Arc<ResourceType>,
        version: &str,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        opts: &DeleteOptions,
    ) -> Value {
        let victims: Vec<(ObjKey, Value)> = self
            .store
            .list(&rt.group, &rt.plural, ns)
            .filter(|(_, o)| labels.matches(o) && fields.matches(o))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut items = vec![];
        for (k, v) in victims {
            let out = if opts.dry_run {
                v
            } else {
                match self.delete_key(rt, &k, v, opts.propagation.as_deref()) {
                    Deleted::Gone(o) | Deleted::Pending(o) => o,
                }
            };
            items.push(Self::render(rt, version, &out));
        }
        json!({
            "apiVersion": rt.api_version(version),
            "kind": rt.list_kind,
            "metadata": {"resourceVersion": self.store.rv().to_string()},
            "items": items,
        })
    }
}

/// The finalizer of an owner in foreground deletion (`metav1.FinalizerDeleteDependents`).
pub(super) const FOREGROUND: &str = "foregroundDeletion";

/// What a deletion did to an object.
#[derive(Debug)]
enum Deleted {
    /// Removed from storage; the final state.
    Gone(Value),
    /// Marked for deletion (finalizers or a namespace's contents hold it); the marked state.
    Pending(Value),
}

fn is_namespace_type(rt: &ResourceType) -> bool {
    rt.group.is_empty() && rt.plural == "namespaces"
}

fn has_finalizers(obj: &Value) -> bool {
    meta(obj)
        .get("finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

/// Types whose storage answers a DELETE with the deleted object (`ReturnDeletedObject`).
fn returns_deleted_object(rt: &ResourceType) -> bool {
    rt.group.is_empty() && matches!(rt.plural.as_str(), "pods" | "services" | "serviceaccounts")
}

/// The `Status` a DELETE answers when the object is gone; `details.kind` is the resource
/// (plural), as the API server fills it.
fn deleted_status(rt: &ResourceType, last: &Value) -> Value {
    let mut details = json!({
        "name": meta_str(last, "name").unwrap_or_default(),
        "kind": rt.plural,
        "uid": meta_str(last, "uid").unwrap_or_default(),
    });
    if !rt.group.is_empty() {
        details["group"] = json!(rt.group);
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}

/// The distinct strings of a JSON string list.
fn string_set(v: Option<&Value>) -> Vec<String> {
    let mut out: Vec<String> = v
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out.dedup();
    out
}

/// Go's `%#v` of a `[]string`, as the API server's validation messages print it.
fn go_string_slice(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

/// Drops empty metadata collections, as the API server's typed ObjectMeta (`omitempty`) does:
/// a JSON patch that removes the last finalizer leaves no `finalizers: []` behind.
fn normalize_meta(obj: &mut Value) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in [
            "finalizers",
            "ownerReferences",
            "labels",
            "annotations",
            "managedFields",
        ] {
            let empty = match m.get(field) {
                Some(Value::Array(a)) => a.is_empty(),
                Some(Value::Object(o)) => o.is_empty(),
                Some(Value::Null) => true,
                _ => false,
            };
            if empty {
                m.remove(field);
            }
        }
    }
}
