//! The chart as a drop-in for upstream's (kedacore/charts `keda-add-ons-http` 0.15), tested
//! against the facts copied from it into `compat/`:
//!
//! 1. `chart-values.tsv`: upstream's whole default values render, and so does every key alone
//!    with its default and with another value of its type; that other value changes the
//!    rendered objects unless the chart README lists the key as one without effect here (and
//!    then it must change nothing).
//! 2. `chart-objects.tsv`: the default render has every upstream object with the same kind,
//!    name, selector, containers, service account and Service port names.
//! 3. A simulated `helm upgrade` from an upstream release (its objects, from
//!    `chart-objects.tsv`) with upstream's values: no CRD (user data) is dropped and each kept
//!    CRD is marked `helm.sh/resource-policy: keep`, no object is dropped, and no Deployment's
//!    (immutable) selector changes.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::{Map, Value, json};

use super::helm::{self, Helm};
use crate::workspace_root;

/// The directory of the upstream facts.
pub(crate) fn compat_dir() -> PathBuf {
    workspace_root().join("compat")
}

/// One row of `chart-values.tsv`: a leaf key of upstream's values, its type and default.
#[derive(Debug, Clone)]
pub(crate) struct ValueRow {
    /// Dotted key, e.g. `interceptor.tls.certPath`.
    pub(crate) key: String,
    /// JSON-schema type name of the value.
    pub(crate) ty: String,
    /// Upstream's default.
    pub(crate) default: Value,
}

/// One row of `chart-objects.tsv`: an object upstream's chart renders with default values.
#[derive(Debug, Clone)]
pub(crate) struct ObjectRow {
    /// Object kind.
    pub(crate) kind: String,
    /// Object name.
    pub(crate) name: String,
    /// Selector labels (Deployments: `matchLabels`; Services: `selector`), if given.
    pub(crate) selector: Option<Value>,
    /// Container names, comma-separated, if given.
    pub(crate) containers: String,
    /// Service account of the pods, if given.
    pub(crate) service_account: String,
    /// Service ports as `name:port`, comma-separated, if given.
    pub(crate) ports: String,
}

/// The rows of a TSV whose first line says where it came from (`# ...`) and whose second
/// line is exactly `header`.
fn read_tsv(path: &Path, header: &[&str]) -> anyhow::Result<Vec<Vec<String>>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines();
    match lines.next() {
        Some(first) if first.starts_with("# ") => {}
        _ => bail!(
            "{}: the first line must say where the facts come from (`# ...`)",
            path.display()
        ),
    }
    let want = header.join("\t");
    if lines.next() != Some(want.as_str()) {
        bail!(
            "{}: the second line must be the header {want:?}",
            path.display()
        );
    }
    let mut rows = Vec::new();
    for (n, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let fields: Vec<String> = line.split('\t').map(str::to_owned).collect();
        if fields.len() != header.len() {
            bail!(
                "{}:{}: {} fields, want {}",
                path.display(),
                n + 3,
                fields.len(),
                header.len()
            );
        }
        rows.push(fields);
    }
    if rows.is_empty() {
        bail!("{}: no rows", path.display());
    }
    Ok(rows)
}

/// Reads `chart-values.tsv`.
pub(crate) fn value_rows(path: &Path) -> anyhow::Result<Vec<ValueRow>> {
    read_tsv(path, &["key", "type", "default_json"])?
        .into_iter()
        .map(|f| {
            let default = serde_json::from_str(&f[2]).with_context(|| {
                format!("{}: default of `{}` is not JSON", path.display(), f[0])
            })?;
            Ok(ValueRow {
                key: f[0].clone(),
                ty: f[1].clone(),
                default,
            })
        })
        .collect()
}

/// Reads `chart-objects.tsv`.
pub(crate) fn object_rows(path: &Path) -> anyhow::Result<Vec<ObjectRow>> {
    let header = [
        "kind",
        "name",
        "selector_json",
        "containers",
        "service_account",
        "service_ports(name:port)",
    ];
    read_tsv(path, &header)?
        .into_iter()
        .map(|f| {
            let selector = if f[2].is_empty() {
                None
            } else {
                Some(serde_json::from_str(&f[2]).with_context(|| {
                    format!(
                        "{}: selector of {} {} is not JSON",
                        path.display(),
                        f[0],
                        f[1]
                    )
                })?)
            };
            Ok(ObjectRow {
                kind: f[0].clone(),
                name: f[1].clone(),
                selector,
                containers: f[3].clone(),
                service_account: f[4].clone(),
                ports: f[5].clone(),
            })
        })
        .collect()
}

/// Values with `key` (dotted) set to `value`, nested as in a values file.
fn nested(key: &str, value: Value) -> Value {
    key.rsplit('.')
        .fold(value, |inner, part| json!({ part: inner }))
}

/// Deep-merges `over` into `into`.
fn merge(into: &mut Value, over: Value) {
    match (into, over) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Upstream's whole default values file, rebuilt from its rows.
pub(crate) fn upstream_defaults(rows: &[ValueRow]) -> Value {
    let mut values = Value::Object(Map::new());
    for row in rows {
        merge(&mut values, nested(&row.key, row.default.clone()));
    }
    values
}

/// A value of `row`'s type other than its default that upstream's chart takes for the key:
/// what a user would plausibly set. Keys without a known example are an error, so a new row
/// in the facts cannot go untested.
pub(crate) fn example(row: &ValueRow) -> Result<Value, String> {
    let key = row.key.as_str();
    let last = key.rsplit('.').next().unwrap_or(key);
    let value = match (row.ty.as_str(), &row.default) {
        ("boolean", Value::Bool(b)) => json!(!b),
        ("integer", Value::Number(n)) => json!(n.as_i64().ok_or("not an integer")? + 1),
        ("number", Value::Number(n)) => json!(n.as_f64().ok_or("not a number")? * 2.0),
        ("string", Value::String(s)) => json!(match last {
            "level" => "debug".to_owned(),
            "format" => "json".to_owned(),
            "timeEncoding" => "iso8601".to_owned(),
            "pullPolicy" if s == "Always" => "IfNotPresent".to_owned(),
            "pullPolicy" => "Always".to_owned(),
            "service" => format!("my-{s}"),
            "tag" => "1.2.3".to_owned(),
            "operator" | "interceptor" | "scaler" if key.starts_with("images.") => {
                format!("registry.example.com/mirror/{last}")
            }
            "watchNamespace" => "apps".to_owned(),
            "appProtocol" => "http".to_owned(),
            "certPath" => "/tls/server.crt".to_owned(),
            "keyPath" => "/tls/server.key".to_owned(),
            "certSecret" => "my-tls".to_owned(),
            "certDir" => "/metrics-certs".to_owned(),
            "minVersion" => "1.2".to_owned(),
            "maxVersion" => "1.3".to_owned(),
            "cipherSuites" => "TLS_AES_128_GCM_SHA256".to_owned(),
            "curvePreferences" => "X25519".to_owned(),
            "protocol" => "grpc".to_owned(),
            "memory" => "96Mi".to_owned(),
            "cpu" => "100m".to_owned(),
            "waitTimeout"
            | "shutdownDelay"
            | "drainTimeout"
            | "requestTimeout"
            | "responseHeaderTimeout"
            | "readinessTimeout"
            | "tcpConnectTimeout" => {
                if s.is_empty() { "750ms" } else { "7s" }.to_owned()
            }
            _ => return Err(format!("no example value for the string key `{key}`")),
        }),
        ("object", _) => match last {
            "extraEnvs" => json!({"EXTRA_SETTING": "on"}),
            "nodeSelector" | "podAnnotations" | "additionalLabels" => {
                json!({"example.com/team": "web"})
            }
            "affinity" => {
                json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}
                ]}]}}})
            }
            _ => return Err(format!("no example value for the object key `{key}`")),
        },
        ("array", _) => match last {
            "imagePullSecrets" => json!([{"name": "regcred"}]),
            "tolerations" => json!([
                {"key": "dedicated", "operator": "Equal", "value": "http", "effect": "NoSchedule"}
            ]),
            "topologySpreadConstraints" => json!([{
                "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/part-of": "keda-add-ons-http"}}
            }]),
            "extraVolumes" => json!([{"name": "extra", "emptyDir": {}}]),
            "extraVolumeMounts" => json!([{"name": "extra", "mountPath": "/extra"}]),
            "caDirs" => json!(["/cas"]),
            "drop" => json!(["NET_RAW", "SYS_ADMIN"]),
            "supplementalGroups" => json!([2000]),
            _ => return Err(format!("no example value for the array key `{key}`")),
        },
        (ty, default) => {
            return Err(format!(
                "`{key}`: type {ty} does not fit the default {default}"
            ));
        }
    };
    if value == row.default {
        return Err(format!("the example of `{key}` equals its default"));
    }
    Ok(value)
}

/// Values a key needs around it to have an effect: the TLS settings apply only with TLS on.
fn context_for(key: &str) -> Value {
    if key.starts_with("interceptor.tls.") && key != "interceptor.tls.enabled" {
        json!({"interceptor": {"tls": {"enabled": true}}})
    } else if let Some(component) = key
        .strip_prefix("profiling.")
        .and_then(|k| k.strip_suffix(".port"))
    {
        // A debug endpoint's port shows only while the endpoint is on.
        json!({"profiling": {component: {"enabled": true}}})
    } else {
        json!({})
    }
}

/// Upstream keys the chart README lists as without effect here: the backquoted keys under
/// the heading `### Upstream keys without effect`, up to the next heading.
pub(crate) fn ignored_keys(readme: &str, rows: &[ValueRow]) -> Result<BTreeSet<String>, String> {
    let heading = "### Upstream keys without effect";
    let start = readme
        .find(heading)
        .ok_or(format!("README.md has no section `{heading}`"))?;
    let section = &readme[start + heading.len()..];
    let section = &section[..section.find("\n#").unwrap_or(section.len())];
    let known: BTreeSet<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    let mut keys = BTreeSet::new();
    for quoted in section.split('`').skip(1).step_by(2) {
        if known.contains(quoted) {
            keys.insert(quoted.to_owned());
        }
    }
    Ok(keys)
}

/// Test 1 (see the module docs).
fn value_problems(
    helm: &Helm,
    dir: &Path,
    rows: &[ValueRow],
    ignored: &BTreeSet<String>,
    rendered: &mut Vec<(String, Value)>,
) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    let mut ops = vec![helm::render_op(&upstream_defaults(rows), &[], false)];
    let mut cases = Vec::new();
    for row in rows {
        let other = match example(row) {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("compat/chart-values.tsv: {e}"));
                continue;
            }
        };
        for value in [row.default.clone(), other] {
            let mut values = context_for(&row.key);
            merge(&mut values, nested(&row.key, value.clone()));
            ops.push(helm::render_op(&values, &[], false));
            cases.push((row.key.clone(), value));
        }
    }
    let mut answers = helm.run(dir, &ops)?.into_iter();
    match answers.next().map(|a| a.and_then(|a| helm::objects(&a))) {
        Some(Ok(objects)) => rendered.extend(
            objects
                .into_iter()
                .map(|o| ("upstream's default values".to_owned(), o)),
        ),
        Some(Err(e)) => problems.push(format!("upstream's default values do not render: {e}")),
        None => {}
    }
    let answers: Vec<_> = answers.collect();
    for (pair, answer) in cases.chunks(2).zip(answers.chunks(2)) {
        let key = &pair[0].0;
        for ((_, value), answer) in pair.iter().zip(answer) {
            match answer
                .as_ref()
                .map_err(Clone::clone)
                .and_then(helm::objects)
            {
                Ok(objects) => {
                    let label = format!("upstream value `{key}` = {value}");
                    rendered.extend(objects.into_iter().map(|o| (label.clone(), o)));
                }
                Err(e) => {
                    problems.push(format!("upstream value `{key}` = {value} is refused: {e}"))
                }
            }
        }
        if let [Ok(default), Ok(other)] = answer {
            let changed = default["manifests"] != other["manifests"];
            match (changed, ignored.contains(key)) {
                (false, false) => problems.push(format!(
                    "upstream value `{key}` = {} changes nothing: make it work, or list it in README.md under \"Upstream keys without effect\"",
                    pair[1].1
                )),
                (true, true) => problems.push(format!(
                    "README.md lists `{key}` as without effect, but `{key}` = {} changes the rendered objects",
                    pair[1].1
                )),
                _ => {}
            }
        }
    }
    Ok(problems)
}

/// The rendered object of `kind` and `name`.
fn find<'o>(objects: &'o [Value], kind: &str, name: &str) -> Option<&'o Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

/// The selector labels of a Deployment (`matchLabels`) or a Service.
fn selector(object: &Value) -> Value {
    if object["kind"] == "Service" {
        object["spec"]["selector"].clone()
    } else {
        object["spec"]["selector"]["matchLabels"].clone()
    }
}

/// Test 2: every upstream object is rendered with the same identity and wiring.
pub(crate) fn object_problems(rows: &[ObjectRow], objects: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    for row in rows {
        let what = format!("{} {}", row.kind, row.name);
        let Some(object) = find(objects, &row.kind, &row.name) else {
            problems.push(format!("the default render lacks upstream's {what}"));
            continue;
        };
        if let Some(want) = &row.selector {
            let got = selector(object);
            if &got != want {
                problems.push(format!("{what}: selector {got}, upstream's is {want}"));
            }
        }
        let pod = &object["spec"]["template"]["spec"];
        if !row.containers.is_empty() {
            let got: Vec<&str> = pod["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["name"].as_str())
                .collect();
            if got.join(",") != row.containers {
                problems.push(format!(
                    "{what}: containers {got:?}, upstream's are {:?}",
                    row.containers
                ));
            }
        }
        if !row.service_account.is_empty() && pod["serviceAccountName"] != row.service_account {
            problems.push(format!(
                "{what}: service account {}, upstream's is {:?}",
                pod["serviceAccountName"], row.service_account
            ));
        }
        if !row.ports.is_empty() {
            let got: Vec<String> = object["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| format!("{}:{}", p["name"].as_str().unwrap_or("?"), p["port"]))
                .collect();
            if got.join(",") != row.ports {
                problems.push(format!(
                    "{what}: ports {got:?}, upstream's are {:?}",
                    row.ports
                ));
            }
        }
    }
    problems
}

/// Test 3: `helm upgrade` from an upstream release (`old`) to the objects `new`.
pub(crate) fn upgrade_problems(old: &[ObjectRow], new: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    for row in old {
        let what = format!("{} {}", row.kind, row.name);
        let Some(object) = find(new, &row.kind, &row.name) else {
            problems.push(if row.kind == "CustomResourceDefinition" {
                format!(
                    "helm upgrade from upstream would delete {what}, and with it every object of that kind"
                )
            } else {
                format!("helm upgrade from upstream would delete {what}")
            });
            continue;
        };
        if row.kind == "CustomResourceDefinition"
            && object["metadata"]["annotations"]["helm.sh/resource-policy"] != "keep"
        {
            problems.push(format!(
                "{what} lacks the annotation helm.sh/resource-policy: keep (a later uninstall or upgrade would delete it)"
            ));
        }
        if row.kind == "Deployment"
            && let Some(want) = &row.selector
        {
            let got = selector(object);
            if &got != want {
                problems.push(format!(
                    "helm upgrade from upstream fails: {what} changes its immutable selector from {want} to {got}"
                ));
            }
        }
    }
    problems
}

/// Runs tests 1 to 3 on the chart in `dir`.
pub(crate) fn problems(
    helm: &Helm,
    dir: &Path,
    readme: &str,
    rendered: &mut Vec<(String, Value)>,
) -> anyhow::Result<Vec<String>> {
    let values = value_rows(&compat_dir().join("chart-values.tsv"))?;
    let objects = object_rows(&compat_dir().join("chart-objects.tsv"))?;
    let mut problems = Vec::new();
    let ignored = match ignored_keys(readme, &values) {
        Ok(keys) => keys,
        Err(e) => {
            problems.push(e);
            BTreeSet::new()
        }
    };
    problems.extend(value_problems(helm, dir, &values, &ignored, rendered)?);
    let defaults = helm.render(dir, &json!({}))?;
    problems.extend(object_problems(&objects, &defaults));
    let upgrade_op = helm::render_op(&upstream_defaults(&values), &[], true);
    match helm.run(dir, &[upgrade_op])?.remove(0) {
        Ok(answer) => match helm::objects(&answer) {
            Ok(new) => problems.extend(upgrade_problems(&objects, &new)),
            Err(e) => problems.push(e),
        },
        Err(e) => problems.push(format!("upgrade render with upstream's values failed: {e}")),
    }
    if problems.is_empty() {
        eprintln!(
            "chart: {} upstream values render (defaults and another value each), {} upstream objects match, an upgrade from upstream keeps CRDs and selectors",
            values.len(),
            objects.len()
        );
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<ValueRow> {
        value_rows(&compat_dir().join("chart-values.tsv")).unwrap()
    }

    #[test]
    fn every_upstream_key_has_an_example_of_its_type() {
        for row in rows() {
            let value = example(&row).unwrap();
            assert_ne!(value, row.default, "{}", row.key);
        }
    }

    #[test]
    fn upstream_defaults_nest_by_key() {
        let values = upstream_defaults(&rows());
        assert_eq!(values["interceptor"]["tls"]["certPath"], "/certs/tls.crt");
        assert_eq!(values["crds"]["install"], true);
    }

    #[test]
    fn the_facts_keep_their_provenance_line() {
        let dir = std::env::temp_dir().join(format!("compat-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("v.tsv");
        fs::write(&path, "key\ttype\tdefault_json\na\tboolean\ttrue\n").unwrap();
        let err = value_rows(&path).unwrap_err().to_string();
        assert!(err.contains("where the facts come from"), "{err}");
        fs::write(&path, "# from x\nkey\ttype\tdefault_json\na\tboolean\n").unwrap();
        let err = value_rows(&path).unwrap_err().to_string();
        assert!(err.contains("2 fields, want 3"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    fn deployment(name: &str, selector: Value, container: &str, account: &str) -> Value {
        json!({"kind": "Deployment", "metadata": {"name": name}, "spec": {
            "selector": {"matchLabels": selector},
            "template": {"spec": {"serviceAccountName": account, "containers": [{"name": container}]}}
        }})
    }

    #[test]
    fn object_mismatches_are_named() {
        let row = ObjectRow {
            kind: "Deployment".into(),
            name: "d".into(),
            selector: Some(json!({"app": "x"})),
            containers: "c".into(),
            service_account: "sa".into(),
            ports: String::new(),
        };
        let same = [deployment("d", json!({"app": "x"}), "c", "sa")];
        assert_eq!(
            object_problems(std::slice::from_ref(&row), &same),
            Vec::<String>::new()
        );
        let other = [deployment("d", json!({"app": "y"}), "k", "other")];
        let problems = object_problems(std::slice::from_ref(&row), &other);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("selector"));
        assert!(object_problems(std::slice::from_ref(&row), &[])[0].contains("lacks"));
        let upgrade = upgrade_problems(&[row], &other);
        assert!(upgrade[0].contains("immutable selector"), "{upgrade:?}");
    }

    #[test]
    fn an_upgrade_must_keep_crds() {
        let crd = ObjectRow {
            kind: "CustomResourceDefinition".into(),
            name: "a.example.com".into(),
            selector: None,
            containers: String::new(),
            service_account: String::new(),
            ports: String::new(),
        };
        let problems = upgrade_problems(std::slice::from_ref(&crd), &[]);
        assert!(
            problems[0].contains("every object of that kind"),
            "{problems:?}"
        );
        let unmarked =
            [json!({"kind": "CustomResourceDefinition", "metadata": {"name": "a.example.com"}})];
        let problems = upgrade_problems(std::slice::from_ref(&crd), &unmarked);
        assert!(problems[0].contains("resource-policy"), "{problems:?}");
        let kept = [json!({"kind": "CustomResourceDefinition", "metadata": {
            "name": "a.example.com", "annotations": {"helm.sh/resource-policy": "keep"}}})];
        assert_eq!(upgrade_problems(&[crd], &kept), Vec::<String>::new());
    }

    #[test]
    fn ignored_keys_come_from_their_readme_section() {
        let readme = "## Values\n`crds.install`\n### Upstream keys without effect\n- `profiling.operator.port` and `nonsense`\n## Next\n`interceptor.maxIdleConns`";
        let keys = ignored_keys(readme, &rows()).unwrap();
        assert_eq!(
            keys.into_iter().collect::<Vec<_>>(),
            vec!["profiling.operator.port"]
        );
        assert!(ignored_keys("# nothing", &rows()).is_err());
    }
}
