//! The resource types the server knows: built-ins plus registered CRDs.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

/// Where the scale subresource reads and writes replicas (JSON paths like `.spec.replicas`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleSpec {
    /// Path of the desired replicas.
    pub spec_replicas_path: String,
    /// Path of the observed replicas.
    pub status_replicas_path: String,
    /// Path of the label selector string (optional).
    pub label_selector_path: Option<String>,
}

/// One resource type (group + plural), possibly served in several versions.
#[derive(Debug, Clone)]
pub struct ResourceType {
    /// API group, "" for core.
    pub group: String,
    /// Served versions; the first is the preferred (storage) version.
    pub versions: Vec<String>,
    /// Plural name used in paths.
    pub plural: String,
    /// Singular name.
    pub singular: String,
    /// Kind.
    pub kind: String,
    /// List kind.
    pub list_kind: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Short names (e.g. `so`).
    pub short_names: Vec<String>,
    /// Categories (e.g. `all`).
    pub categories: Vec<String>,
    /// Whether a `/status` subresource splits status from the main resource.
    pub status: bool,
    /// The `/scale` subresource, if any.
    pub scale: Option<ScaleSpec>,
    /// openAPIV3Schema per version (CRDs only).
    pub schemas: BTreeMap<String, Value>,
    /// Whether this type comes from a CustomResourceDefinition.
    pub custom: bool,
    /// `additionalPrinterColumns` per version (CRDs only): (name, type, jsonPath).
    pub printer_columns: BTreeMap<String, Vec<PrinterColumn>>,
    /// `selectableFields` of a CRD (field selector labels such as `spec.color`), any version.
    pub selectable_fields: Vec<String>,
    /// A review API (TokenReview, SubjectAccessReview, ...): `create` only, answered at once
    /// and never stored.
    pub create_only: bool,
}

/// One `additionalPrinterColumns` entry of a CRD version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrinterColumn {
    /// Column header.
    pub name: String,
    /// OpenAPI type (`string`, `integer`, `date`, ...).
    pub type_: String,
    /// Simple JSONPath (`.spec.a.b`, `[0]`, `[?(@.type=="Ready")]`).
    pub json_path: String,
}

impl ResourceType {
    fn builtin(group: &str, version: &str, plural: &str, kind: &str, namespaced: bool) -> Self {
        Self {
            group: group.into(),
            versions: vec![version.into()],
            plural: plural.into(),
            singular: kind.to_lowercase(),
            kind: kind.into(),
            list_kind: format!("{kind}List"),
            namespaced,
            short_names: vec![],
            categories: vec![],
            status: false,
            scale: None,
            schemas: BTreeMap::new(),
            custom: false,
            printer_columns: BTreeMap::new(),
            selectable_fields: vec![],
            create_only: false,
        }
    }

    fn review(group: &str, plural: &str, kind: &str, namespaced: bool) -> Self {
        let mut t = Self::builtin(group, "v1", plural, kind, namespaced);
        t.create_only = true;
        t
    }

    fn with_status(mut self) -> Self {
        self.status = true;
        self
    }

    fn with_short(mut self, names: &[&str]) -> Self {
        self.short_names = names.iter().map(|s| s.to_string()).collect();
        self
    }

    fn with_all(mut self) -> Self {
        self.categories = vec!["all".into()];
        self
    }

    fn with_replicas_scale(mut self) -> Self {
        self.scale = Some(ScaleSpec {
            spec_replicas_path: ".spec.replicas".into(),
            status_replicas_path: ".status.replicas".into(),
            label_selector_path: None,
        });
        self
    }

    /// `apiVersion` string for a version of this type.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// Whether the version is served.
    pub fn serves(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v == version)
    }

    /// Key of the type in storage.
    pub fn key(&self) -> (String, String) {
        (self.group.clone(), self.plural.clone())
    }

    /// Builds a type from a CustomResourceDefinition object (already defaulted).
    pub fn from_crd(crd: &Value) -> Option<Self> {
        let spec = crd.get("spec")?;
        let group = spec.get("group")?.as_str()?.to_string();
        let names = spec.get("names")?;
        let plural = names.get("plural")?.as_str()?.to_string();
        let kind = names.get("kind")?.as_str()?.to_string();
        let strs = |v: Option<&Value>| -> Vec<String> {
            v.and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut versions = vec![];
        let mut schemas = BTreeMap::new();
        let mut printer_columns = BTreeMap::new();
        let mut selectable_fields = vec![];
        let mut status = false;
        let mut scale = None;
        for v in spec.get("versions")?.as_array()? {
            let name = v.get("name")?.as_str()?.to_string();
            if v.get("served").and_then(Value::as_bool) == Some(false) {
                continue;
            }
            if let Some(s) = v.pointer("/schema/openAPIV3Schema") {
                schemas.insert(name.clone(), s.clone());
            }
            for f in v
                .get("selectableFields")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(path) = f.get("jsonPath").and_then(Value::as_str) {
                    let label = path.trim_start_matches('.').to_string();
                    if !selectable_fields.contains(&label) {
                        selectable_fields.push(label);
                    }
                }
            }
            if let Some(cols) = v.get("additionalPrinterColumns").and_then(Value::as_array) {
                let cols = cols
                    .iter()
                    .filter(|c| c.get("priority").and_then(Value::as_i64).unwrap_or(0) == 0)
                    .filter_map(|c| {
                        Some(PrinterColumn {
                            name: c.get("name")?.as_str()?.to_string(),
                            type_: c
                                .get("type")
                                .and_then(Value::as_str)
                                .unwrap_or("string")
                                .to_string(),
                            json_path: c.get("jsonPath")?.as_str()?.to_string(),
                        })
                    })
                    .collect();
                printer_columns.insert(name.clone(), cols);
            }
            if let Some(sub) = v.get("subresources") {
                status |= sub.get("status").is_some();
                if let Some(sc) = sub.get("scale") {
                    scale = Some(ScaleSpec {
                        spec_replicas_path: sc.get("specReplicasPath")?.as_str()?.into(),
                        status_replicas_path: sc.get("statusReplicasPath")?.as_str()?.into(),
                        label_selector_path: sc
                            .get("labelSelectorPath")
                            .and_then(Value::as_str)
                            .map(String::from),
                    });
                }
            }
            if v.get("storage").and_then(Value::as_bool) == Some(true) {
                versions.insert(0, name);
            } else {
                versions.push(name);
            }
        }
        if versions.is_empty() {
            return None;
        }
        Some(Self {
            group,
            versions,
            singular: names
                .get("singular")
                .and_then(Value::as_str)
                .map_or_else(|| kind.to_lowercase(), String::from),
            list_kind: names
                .get("listKind")
                .and_then(Value::as_str)
                .map_or_else(|| format!("{kind}List"), String::from),
            plural,
            kind,
            namespaced: spec.get("scope").and_then(Value::as_str) != Some("Cluster"),
            short_names: strs(names.get("shortNames")),
            categories: strs(names.get("categories")),
            status,
            scale,
            schemas,
            custom: true,
            printer_columns,
            selectable_fields,
            create_only: false,
        })
    }
}

/// All known resource types, keyed by (group, plural).
#[derive(Debug, Clone, Default)]
pub struct Registry {
    types: BTreeMap<(String, String), Arc<ResourceType>>,
}

impl Registry {
    /// The built-in types.
    pub fn with_builtins() -> Self {
        let mut r = Self::default();
        use ResourceType as T;
        for t in [
            T::builtin("", "v1", "namespaces", "Namespace", false)
                .with_status()
                .with_short(&["ns"]),
            T::builtin("", "v1", "services", "Service", true)
                .with_status()
                .with_short(&["svc"])
                .with_all(),
            T::builtin("", "v1", "configmaps", "ConfigMap", true).with_short(&["cm"]),
            T::builtin("", "v1", "secrets", "Secret", true),
            T::builtin("", "v1", "serviceaccounts", "ServiceAccount", true).with_short(&["sa"]),
            T::builtin("", "v1", "events", "Event", true).with_short(&["ev"]),
            T::builtin("", "v1", "pods", "Pod", true)
                .with_status()
                .with_short(&["po"])
                .with_all(),
            T::builtin("", "v1", "endpoints", "Endpoints", true).with_short(&["ep"]),
            T::builtin("", "v1", "componentstatuses", "ComponentStatus", false).with_short(&["cs"]),
            T::builtin("", "v1", "nodes", "Node", false)
                .with_status()
                .with_short(&["no"]),
            T::builtin("apps", "v1", "deployments", "Deployment", true)
                .with_status()
                .with_short(&["deploy"])
                .with_all()
                .with_replicas_scale(),
            T::builtin("apps", "v1", "replicasets", "ReplicaSet", true)
                .with_status()
                .with_short(&["rs"])
                .with_all()
                .with_replicas_scale(),
            T::builtin("apps", "v1", "statefulsets", "StatefulSet", true)
                .with_status()
                .with_short(&["sts"])
                .with_all()
                .with_replicas_scale(),
            T::builtin(
                "autoscaling",
                "v2",
                "horizontalpodautoscalers",
                "HorizontalPodAutoscaler",
                true,
            )
            .with_status()
            .with_short(&["hpa"])
            .with_all(),
            T::builtin("events.k8s.io", "v1", "events", "Event", true).with_short(&["ev"]),
            T::builtin(
                "discovery.k8s.io",
                "v1",
                "endpointslices",
                "EndpointSlice",
                true,
            ),
            T::builtin("coordination.k8s.io", "v1", "leases", "Lease", true),
            T::builtin(
                "certificates.k8s.io",
                "v1",
                "certificatesigningrequests",
                "CertificateSigningRequest",
                false,
            )
            .with_status()
            .with_short(&["csr"]),
            T::builtin(
                "apiregistration.k8s.io",
                "v1",
                "apiservices",
                "APIService",
                false,
            )
            .with_status(),
            T::review(
                "authentication.k8s.io",
                "tokenreviews",
                "TokenReview",
                false,
            ),
            T::review(
                "authentication.k8s.io",
                "selfsubjectreviews",
                "SelfSubjectReview",
                false,
            ),
            T::review(
                "authorization.k8s.io",
                "subjectaccessreviews",
                "SubjectAccessReview",
                false,
            ),
            T::review(
                "authorization.k8s.io",
                "selfsubjectaccessreviews",
                "SelfSubjectAccessReview",
                false,
            ),
            T::review(
                "authorization.k8s.io",
                "selfsubjectrulesreviews",
                "SelfSubjectRulesReview",
                false,
            ),
            T::review(
                "authorization.k8s.io",
                "localsubjectaccessreviews",
                "LocalSubjectAccessReview",
                true,
            ),
            T::builtin(
                "apiextensions.k8s.io",
                "v1",
                "customresourcedefinitions",
                "CustomResourceDefinition",
                false,
            )
            .with_status()
            .with_short(&["crd", "crds"]),
        ] {
            r.insert(t);
        }
        r
    }

    /// Adds or replaces a type.
    pub fn insert(&mut self, t: ResourceType) {
        self.types.insert(t.key(), Arc::new(t));
    }

    /// Removes a type.
    pub fn remove(&mut self, group: &str, plural: &str) {
        self.types.remove(&(group.to_string(), plural.to_string()));
    }

    /// Looks a type up by group and plural (any version).
    pub fn get(&self, group: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types
            .get(&(group.to_string(), plural.to_string()))
            .cloned()
    }

    /// Looks a type up by group and kind.
    pub fn by_kind(&self, group: &str, kind: &str) -> Option<Arc<ResourceType>> {
        self.types
            .values()
            .find(|t| t.group == group && t.kind == kind)
            .cloned()
    }

    /// All types.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<ResourceType>> {
        self.types.values()
    }

    /// Groups with their versions (preferred first), core group excluded, in a stable order.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = vec![];
        for t in self.types.values().filter(|t| !t.group.is_empty()) {
            match out.iter_mut().find(|(g, _)| *g == t.group) {
                Some((_, vs)) => {
                    for v in &t.versions {
                        if !vs.contains(v) {
                            vs.push(v.clone());
                        }
                    }
                }
                None => out.push((t.group.clone(), t.versions.clone())),
            }
        }
        out
    }
}

/// The KEDA ScaledObject CRD installed at start: KEDA's own ([`crate::keda::crd`]).
pub fn scaled_object_crd() -> Value {
    crate::keda::crd::scaled_object_crd()
}
