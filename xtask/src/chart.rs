//! `cargo xtask chart check`: the Helm chart in `charts/keda-http-add-on`, with real Helm
//! (Helm v4's SDK from PyPI, installed on first use; see [`helm`]) and without:
//!
//! - `helm lint --strict`, and `helm template` of a few value sets (every document named, a bad
//!   value refused by the schema);
//! - upstream compatibility against the facts in `compat/` (see [`compat`]): every upstream
//!   value key, every upstream object, and a simulated upgrade from an upstream release;
//! - every rendered object validates strictly against the official Kubernetes schemas of the
//!   oldest and newest supported Kubernetes, ScaledObjects against KEDA's (see [`validate`]);
//! - `values.yaml` validates against `values.schema.json` (a small JSON-schema subset validator
//!   below; the schema may only use the keywords it knows, so nothing is silently skipped);
//! - the CRDs in `files/crds/` are exactly the generated ones (`cargo xtask codegen --check`),
//!   and there is no `crds/` (Helm would install those once and never upgrade them);
//! - every `.Values.a.b` the templates reference exists in `values.yaml`;
//! - every RBAC rule is one the components' code needs (see [`rbac_allow_list`]) and every rule
//!   the code needs is granted;
//! - the chart README documents every value, and the interceptor's default grace period covers
//!   its shutdown delay plus drain time.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use regex::Regex;
use serde_json::Value;

use crate::workspace_root;

pub(crate) mod compat;
pub(crate) mod helm;
pub(crate) mod validate;

/// The umbrella chart's directory.
pub(crate) fn chart_dir() -> PathBuf {
    workspace_root().join("charts/keda-http-add-on")
}

/// Runs every check and reports all problems at once.
pub(crate) fn check() -> anyhow::Result<()> {
    let dir = chart_dir();
    let values = load_values(&dir.join("values.yaml"))?;
    let schema: Value = serde_json::from_str(&read(&dir.join("values.schema.json"))?)
        .context("parsing values.schema.json")?;
    let templates = read_templates(&dir)?;
    let readme = read(&dir.join("README.md"))?;

    let mut problems = Vec::new();
    problems.extend(
        schema::validate(&schema, &values)
            .into_iter()
            .map(|e| format!("values.yaml does not match values.schema.json: {e}")),
    );
    problems.extend(crd_problems(&dir));
    problems.extend(value_reference_problems(&templates, &values));
    problems.extend(rbac_problems(&templates));
    problems.extend(readme_problems(&readme, &schema, &values));
    problems.extend(grace_period_problems(&values));
    problems.extend(env_problems(&templates, &workspace_root())?);
    problems.extend(auth_delegator_problems(&templates, &workspace_root())?);
    let helm = helm::Helm::install().context("installing Helm for the chart check")?;
    // Every rendered object, for the strict schema validation.
    let mut rendered = Vec::new();
    problems.extend(helm_problems(&helm, &dir, &mut rendered)?);
    problems.extend(compat::problems(&helm, &dir, &readme, &mut rendered)?);
    // Every manifest `cargo xtask e2e --cluster kind` applies besides the chart, with the
    // chart's CRDs (already in `rendered`) for our custom resources.
    rendered.extend(e2e_manifests()?);
    problems.extend(validate::problems(&dir, &rendered)?);
    if !problems.is_empty() {
        bail!(
            "the chart has {} problem(s):\n  - {}",
            problems.len(),
            problems.join("\n  - ")
        );
    }
    eprintln!(
        "chart: helm lint and template pass, values match the schema, CRDs are generated, {} templates reference only existing values, RBAC is least-privilege, README documents every value",
        templates.len()
    );
    Ok(())
}

/// The manifests the e2e suite applies on a kind cluster (`http-add-on-e2e manifests`, built
/// from the same code as the suite), labelled.
fn e2e_manifests() -> anyhow::Result<Vec<(String, Value)>> {
    crate::cargo(&[
        "build",
        "-q",
        "-p",
        "http-add-on-e2e",
        "--bin",
        "http-add-on-e2e",
    ])?;
    let out = std::process::Command::new(workspace_root().join("target/debug/http-add-on-e2e"))
        .arg("manifests")
        .output()
        .context("running http-add-on-e2e manifests")?;
    if !out.status.success() {
        bail!(
            "`http-add-on-e2e manifests` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let all: Vec<Value> =
        serde_json::from_slice(&out.stdout).context("parsing `http-add-on-e2e manifests`")?;
    Ok(all
        .into_iter()
        .map(|m| {
            let what = m["what"].as_str().unwrap_or("?").to_owned();
            (format!("the kind e2e suite's {what}"), m["object"].clone())
        })
        .collect())
}

fn read(path: &Path) -> anyhow::Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// `values.yaml` as JSON (what Helm validates against the schema).
fn load_values(path: &Path) -> anyhow::Result<Value> {
    serde_yaml::from_str(&read(path)?).with_context(|| format!("parsing {}", path.display()))
}

/// Template files of the umbrella and its subcharts: (path relative to the chart, text).
fn read_templates(dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut dirs = vec![dir.join("templates")];
    let subcharts = dir.join("charts");
    if subcharts.is_dir() {
        let mut names: Vec<_> = fs::read_dir(&subcharts)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        names.sort();
        dirs.extend(
            names
                .into_iter()
                .filter(|p| p.is_dir())
                .map(|p| p.join("templates")),
        );
    }
    let mut out = Vec::new();
    for templates in dirs.into_iter().filter(|d| d.is_dir()) {
        let mut files: Vec<_> = fs::read_dir(&templates)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        files.sort();
        for file in files.into_iter().filter(|f| f.is_file()) {
            let rel = file
                .strip_prefix(dir)
                .unwrap_or(&file)
                .display()
                .to_string();
            out.push((rel, read(&file)?));
        }
    }
    if out.is_empty() {
        bail!("no templates under {}", dir.display());
    }
    Ok(out)
}

/// The CRD files must be exactly the generated ones: same contents, and no others.
fn crd_problems(dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(e) = crate::codegen::run(true) {
        problems.push(format!("{e:#}"));
    }
    let generated: BTreeSet<_> = http_add_on_types::crd::generated_crds()
        .into_iter()
        .map(|(file, _)| file.to_owned())
        .collect();
    if dir.join("crds").exists() {
        problems.push(
            "crds/ exists: Helm installs it once and never upgrades it; the CRDs are templates (templates/crds.yaml of files/crds/)".into(),
        );
    }
    match fs::read_dir(crate::codegen::crd_dir()) {
        Ok(entries) => {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !generated.contains(&name) {
                    problems.push(format!(
                        "files/crds/{name} is not generated by `cargo xtask codegen`; remove it"
                    ));
                }
            }
        }
        Err(e) => problems.push(format!("reading files/crds/: {e}")),
    }
    problems
}

/// Every `.Values.x.y` (also `$.Values`, `.root.Values`) must name a key path of `values.yaml`.
fn value_reference_problems(templates: &[(String, String)], values: &Value) -> Vec<String> {
    let reference = Regex::new(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)").expect("valid regex");
    let mut problems = Vec::new();
    for (file, text) in templates {
        for (n, line) in text.lines().enumerate() {
            for caps in reference.captures_iter(line) {
                let path: Vec<&str> = caps[1].trim_start_matches('.').split('.').collect();
                if let Err(missing) = lookup(values, &path) {
                    problems.push(format!(
                        "{file}:{}: `.Values.{}` is not in values.yaml (no `{missing}`)",
                        n + 1,
                        path.join(".")
                    ));
                }
            }
        }
    }
    problems
}

/// Walks `path` in `values`; on failure returns the first missing prefix.
fn lookup<'v>(values: &'v Value, path: &[&str]) -> Result<&'v Value, String> {
    let mut current = values;
    for (i, key) in path.iter().enumerate() {
        current = current
            .as_object()
            .and_then(|m| m.get(*key))
            .ok_or_else(|| path[..=i].join("."))?;
    }
    Ok(current)
}

/// One RBAC permission: (API group, resource, verb); non-resource URLs have the group
/// [`NON_RESOURCE`] and the URL as resource.
type Permission = (String, String, String);

/// The "group" of a non-resource URL permission.
const NON_RESOURCE: &str = "(non-resource URL)";

/// What each component's code reads and writes, as the RBAC rules that grant it, by the name of
/// the template that defines them. Derived from the code (grep the crates for `Api<` and the
/// calls on it):
///
/// - operator (`crates/http-add-on-operator`), in the watched namespace or cluster-wide
///   (`operator.rules`): HTTPScaledObjects are watched by a `Controller` (list, watch) and get
///   their finalizer through JSON patches (patch); their status is server-side applied
///   (`httpscaledobjects/status` patch); the owned ScaledObject's owner reference sets
///   `blockOwnerDeletion`, which needs update on `httpscaledobjects/finalizers`.
///   InterceptorRoutes are watched (list, watch) and get their status applied (patch).
///   ScaledObjects are watched as owned objects (list, watch), read (`get_opt`), created by
///   server-side apply (create, patch) and deleted for the skip annotation (delete). Events are
///   written by kube-runtime's `Recorder`, which uses `events.k8s.io/v1` only (create, patch).
/// - operator, in its own namespace (`operator.leaderElectionRules`): the Lease
///   `http-add-on.keda.sh` is read (`get_opt`), created and replaced (get, create, update).
/// - interceptor (`crates/http-add-on-interceptor/src/routes.rs`, `operator.watchNamespace` or
///   cluster-wide, `interceptor.rules`): reflectors (list, watch) on HTTPScaledObjects,
///   InterceptorRoutes, Services, EndpointSlices and ConfigMaps (labelled response bodies).
/// - scaler (`crates/http-add-on-scaler`): reflectors on every HTTPScaledObject and
///   InterceptorRoute, cluster-wide (`scaler.rules`), the ScaledObjects KEDA asks about read
///   (`get_opt`) and their HPAs' metadata read and patched (`src/hpa.rs`: get, patch), and a
///   watcher on the EndpointSlices of the interceptors' admin Service in the add-on's
///   namespace (`scaler.namespaceRules`).
///
/// The operator's TokenReviews and SubjectAccessReviews (checking metrics scrapers' tokens)
/// are granted by binding the built-in `system:auth-delegator`, as upstream's
/// `<release>-auth-delegator` does ([`auth_delegator_problems`] checks the binding is there).
///
/// Granted to others, not to the components: upstream's `<release>-metrics-reader`
/// (`operator.metricsReaderRules`: get on `/metrics`, for the scraper), and with
/// `rbac.aggregateToDefaultRoles` the rules aggregated into the built-in `admin`/`edit`
/// (`rbac.editRules`: read-write) and `view` (`rbac.viewRules`: read-only) ClusterRoles.
fn rbac_allow_list() -> BTreeMap<&'static str, BTreeSet<Permission>> {
    fn each(group: &str, resources: &[&str], verbs: &[&str]) -> Vec<Permission> {
        resources
            .iter()
            .flat_map(|r| {
                verbs
                    .iter()
                    .map(move |v| (group.into(), (*r).into(), (*v).into()))
            })
            .collect()
    }
    let keda_http = "http.keda.sh";
    let routes = ["httpscaledobjects", "interceptorroutes"];
    let operator = [
        each(
            keda_http,
            &["httpscaledobjects"],
            &["list", "watch", "patch"],
        ),
        each(keda_http, &["httpscaledobjects/status"], &["patch"]),
        each(keda_http, &["httpscaledobjects/finalizers"], &["update"]),
        each(keda_http, &["interceptorroutes"], &["list", "watch"]),
        each(keda_http, &["interceptorroutes/status"], &["patch"]),
        each(
            "keda.sh",
            &["scaledobjects"],
            &["get", "list", "watch", "create", "patch", "delete"],
        ),
        each("events.k8s.io", &["events"], &["create", "patch"]),
    ];
    let interceptor = [
        each(keda_http, &routes, &["list", "watch"]),
        each("", &["services", "configmaps"], &["list", "watch"]),
        each("discovery.k8s.io", &["endpointslices"], &["list", "watch"]),
    ];
    BTreeMap::from([
        ("operator.rules", operator.concat().into_iter().collect()),
        (
            "operator.leaderElectionRules",
            each(
                "coordination.k8s.io",
                &["leases"],
                &["get", "create", "update"],
            )
            .into_iter()
            .collect(),
        ),
        (
            "interceptor.rules",
            interceptor.concat().into_iter().collect(),
        ),
        (
            "scaler.rules",
            [
                each(keda_http, &routes, &["list", "watch"]),
                each("keda.sh", &["scaledobjects"], &["get"]),
                each(
                    "autoscaling",
                    &["horizontalpodautoscalers"],
                    &["get", "patch"],
                ),
            ]
            .concat()
            .into_iter()
            .collect(),
        ),
        (
            "scaler.namespaceRules",
            each("discovery.k8s.io", &["endpointslices"], &["list", "watch"])
                .into_iter()
                .collect(),
        ),
        (
            "operator.metricsReaderRules",
            each(NON_RESOURCE, &["/metrics"], &["get"])
                .into_iter()
                .collect(),
        ),
        (
            "rbac.editRules",
            each(
                keda_http,
                &routes,
                &[
                    "create",
                    "delete",
                    "deletecollection",
                    "get",
                    "list",
                    "patch",
                    "update",
                    "watch",
                ],
            )
            .into_iter()
            .collect(),
        ),
        (
            "rbac.viewRules",
            each(keda_http, &routes, &["get", "list", "watch"])
                .into_iter()
                .collect(),
        ),
    ])
}

/// RBAC rules live only in `define "<component>.<x>Rules"` blocks of plain YAML, every `rules:`
/// key includes one of them, and each grants exactly its allow-list.
fn rbac_problems(templates: &[(String, String)]) -> Vec<String> {
    let allow = rbac_allow_list();
    let define = Regex::new(
        r#"(?s)\{\{-?\s*define\s+"([A-Za-z0-9_-]+\.[A-Za-z]*[rR]ules)"\s*-?\}\}(.*?)\{\{-?\s*end\s*-?\}\}"#,
    )
    .expect("valid regex");
    let include = Regex::new(r#"^\{\{-?\s*include\s+"([^"]+)"\s"#).expect("valid regex");
    let mut problems = Vec::new();
    let mut defined = BTreeSet::new();
    for (file, text) in templates {
        for caps in define.captures_iter(text) {
            let name = caps[1].to_owned();
            let body = &caps[2];
            let Some(allowed) = allow.get(name.as_str()) else {
                problems.push(format!(
                    "{file}: RBAC rules `{name}` are not in the allow-list of xtask/src/chart.rs"
                ));
                continue;
            };
            defined.insert(name.clone());
            match parse_rules(body) {
                Ok(granted) => {
                    for (group, resource, verb) in granted.difference(allowed) {
                        problems.push(format!(
                            "{file}: `{name}` grants {verb} on {}{resource}, which the code does not need",
                            group_prefix(group)
                        ));
                    }
                    for (group, resource, verb) in allowed.difference(&granted) {
                        problems.push(format!(
                            "{file}: `{name}` misses {verb} on {}{resource}, which the code needs",
                            group_prefix(group)
                        ));
                    }
                }
                Err(e) => problems.push(format!("{file}: `{name}`: {e}")),
            }
        }
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            if line.trim() != "rules:" {
                continue;
            }
            let next = lines.get(n + 1).map(|l| l.trim()).unwrap_or_default();
            match include.captures(next) {
                Some(c) if allow.contains_key(&c[1]) => {}
                _ => problems.push(format!(
                    "{file}:{}: `rules:` must be followed by an include of an allow-listed rules template, found {next:?}",
                    n + 2
                )),
            }
        }
    }
    for name in allow.keys().filter(|n| !defined.contains(**n)) {
        problems.push(format!("no template defines the RBAC rules `{name}`"));
    }
    problems
}

fn group_prefix(group: &str) -> String {
    if group.is_empty() || group == NON_RESOURCE {
        String::new()
    } else {
        format!("{group}/")
    }
}

/// Parses a list of PolicyRules (plain YAML) into permissions; wildcards and unknown keys fail.
fn parse_rules(body: &str) -> Result<BTreeSet<Permission>, String> {
    if body.contains("{{") {
        return Err("must be plain YAML (no template directives) so it can be checked".into());
    }
    let rules: Value = serde_yaml::from_str(body).map_err(|e| format!("not YAML: {e}"))?;
    let rules = rules.as_array().ok_or("must be a YAML list of rules")?;
    let mut out = BTreeSet::new();
    for rule in rules {
        let rule = rule.as_object().ok_or("every rule must be a mapping")?;
        for key in rule.keys() {
            if !["apiGroups", "resources", "verbs", "nonResourceURLs"].contains(&key.as_str()) {
                return Err(format!("unsupported rule key `{key}`"));
            }
        }
        let list = |key: &str| -> Result<Vec<String>, String> {
            let items = rule
                .get(key)
                .and_then(Value::as_array)
                .ok_or(format!("every rule needs a `{key}` list"))?;
            items
                .iter()
                .map(|i| match i.as_str() {
                    Some("*") => Err(format!("wildcard in `{key}`")),
                    Some(s) => Ok(s.to_owned()),
                    None => Err(format!("`{key}` must list strings")),
                })
                .collect()
        };
        if rule.contains_key("nonResourceURLs") {
            if rule.contains_key("apiGroups") || rule.contains_key("resources") {
                return Err("a rule with `nonResourceURLs` must not name resources".into());
            }
            for url in list("nonResourceURLs")? {
                for verb in list("verbs")? {
                    out.insert((NON_RESOURCE.to_owned(), url.clone(), verb));
                }
            }
            continue;
        }
        for group in list("apiGroups")? {
            for resource in list("resources")? {
                for verb in list("verbs")? {
                    out.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    Ok(out)
}

/// Every value documented by the README as `` `a.b.c` ``: leaves are values whose schema is not
/// a closed object declared inline (free-form maps like `securityContext` count as one value).
fn readme_problems(readme: &str, schema: &Value, values: &Value) -> Vec<String> {
    let mut leaves = Vec::new();
    collect_leaves(schema, values, String::new(), &mut leaves);
    leaves
        .into_iter()
        .filter(|path| !readme.contains(&format!("`{path}`")))
        .map(|path| format!("README.md does not document the value `{path}`"))
        .collect()
}

fn collect_leaves(schema: &Value, value: &Value, path: String, out: &mut Vec<String>) {
    let inline_closed = schema.get("$ref").is_none()
        && schema.get("additionalProperties") == Some(&Value::Bool(false))
        && schema.get("properties").is_some();
    match value.as_object() {
        Some(map) if inline_closed => {
            for (key, child) in map {
                let child_schema = schema
                    .get("properties")
                    .and_then(|p| p.get(key))
                    .unwrap_or(&Value::Null);
                let child_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                collect_leaves(child_schema, child, child_path, out);
            }
        }
        _ if !path.is_empty() => out.push(path),
        _ => {}
    }
}

/// The interceptor's grace period must outlast `shutdownDelay + drainTimeout`, or Kubernetes
/// kills it with requests in flight.
fn grace_period_problems(values: &Value) -> Vec<String> {
    let get = |path: &[&str]| lookup(values, path).ok().cloned();
    let duration = |path: &[&str]| -> Result<Duration, String> {
        let text = get(path)
            .and_then(|v| v.as_str().map(str::to_owned))
            .ok_or_else(|| format!("`{}` is missing or not a string", path.join(".")))?;
        http_add_on_types::duration::parse_duration(&text)
            .map_err(|e| format!("`{}`: {e}", path.join(".")))
    };
    let result = (|| -> Result<(), String> {
        let delay = duration(&["interceptor", "shutdownDelay"])?;
        let drain = duration(&["interceptor", "drainTimeout"])?;
        let grace = get(&["interceptor", "terminationGracePeriodSeconds"])
            .and_then(|v| v.as_u64())
            .ok_or("`interceptor.terminationGracePeriodSeconds` is missing")?;
        if Duration::from_secs(grace) <= delay + drain {
            return Err(format!(
                "`interceptor.terminationGracePeriodSeconds` ({grace}s) must exceed shutdownDelay + drainTimeout ({:?})",
                delay + drain
            ));
        }
        Ok(())
    })();
    result.err().into_iter().collect()
}

/// Variables every component gets without reading them itself: `RUST_LOG` is read by
/// tracing-subscriber's `EnvFilter`, and the pod's identity from the downward API is there for
/// whoever needs it (the operator's leader identity uses `POD_NAME`).
const COMMON_ENV: [&str; 3] = ["RUST_LOG", "POD_NAME", "POD_NAMESPACE"];

/// Every environment variable a component's template sets must be read by that component's
/// code (or by `http-add-on-types`, shared by all): a `"NAME"` literal in its sources.
fn env_problems(templates: &[(String, String)], root: &Path) -> anyhow::Result<Vec<String>> {
    let env_entry = Regex::new(r"^\s*- name: ([A-Z][A-Z0-9_]*)\s*$").expect("valid regex");
    let shared = rust_sources(&root.join("crates/http-add-on-types/src"))?;
    let mut problems = Vec::new();
    for component in ["operator", "interceptor", "scaler"] {
        let template = format!("charts/{component}/templates/_{component}.tpl");
        let Some((_, text)) = templates.iter().find(|(file, _)| *file == template) else {
            problems.push(format!("{template} is missing"));
            continue;
        };
        let code = shared.clone()
            + &rust_sources(&root.join(format!("crates/http-add-on-{component}/src")))?;
        for (n, line) in text.lines().enumerate() {
            let Some(caps) = env_entry.captures(line) else {
                continue;
            };
            let name = &caps[1];
            if !COMMON_ENV.contains(&name) && !code.contains(&format!("\"{name}\"")) {
                problems.push(format!(
                    "{template}:{}: sets {name}, which the {component} does not read",
                    n + 1
                ));
            }
        }
    }
    Ok(problems)
}

/// The operator reviews scrapers' tokens (TokenReview, SubjectAccessReview): its template must
/// bind it to `system:auth-delegator`.
fn auth_delegator_problems(
    templates: &[(String, String)],
    root: &Path,
) -> anyhow::Result<Vec<String>> {
    let code = rust_sources(&root.join("crates/http-add-on-operator/src"))?;
    let template = "charts/operator/templates/_operator.tpl";
    let binds = templates
        .iter()
        .any(|(file, text)| file == template && text.contains("name: system:auth-delegator"));
    Ok(if code.contains("TokenReview") && !binds {
        vec![format!(
            "{template}: the operator makes TokenReviews and SubjectAccessReviews but is not bound to system:auth-delegator"
        )]
    } else {
        Vec::new()
    })
}

/// The text of every `.rs` file under `dir`.
fn rust_sources(dir: &Path) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push_str(&read(&path)?);
            }
        }
    }
    Ok(out)
}

/// Value sets rendered by `helm template`, as `--set` arguments.
const RENDER_CASES: [&[&str]; 10] = [
    &[],
    &[
        "operator.watchNamespace=apps",
        "serviceMonitor.enabled=true",
        "interceptor.pdb.minAvailable=1",
        "additionalLabels.team=web",
        "securityContext.scaler.runAsNonRoot=true",
        "rbac.aggregateToDefaultRoles=true",
    ],
    &["operator.enabled=false"],
    &["interceptor.enabled=false"],
    &["scaler.enabled=false"],
    &["crds.install=false"],
    &[
        "interceptor.tls.enabled=true",
        "interceptor.tls.keyPath=/keys/tls.key",
        "interceptor.tls.cert_store_secrets={app-a-tls,app-b-tls}",
    ],
    // The deprecated spellings, which upstream still accepts.
    &[
        "interceptor.tls.enabled=true",
        "interceptor.tls.cert_path=/old/tls.crt",
        "interceptor.tls.key_path=/old/tls.key",
        "interceptor.tls.cert_secret=old-tls",
    ],
    // ServiceMonitors on, the scaler's Prometheus endpoint off.
    &[
        "serviceMonitor.enabled=true",
        "scaler.metrics.prometheus.enabled=false",
    ],
    // The check endpoint for an ingress on the data path (issue #17).
    &[
        "interceptor.check.enabled=true",
        "interceptor.check.pathPrefix=/keda-check",
    ],
];

/// What a value set implies for the metrics objects: a ServiceMonitor (and a `metrics` port)
/// exactly for the components whose metrics are on, none at all without
/// `serviceMonitor.enabled`; a problem for each difference.
fn metrics_object_problems(case: &[&str], objects: &[Value]) -> Vec<String> {
    let set = |key: &str| {
        case.iter()
            .find_map(|s| s.strip_prefix(key)?.strip_prefix('='))
    };
    let monitors = set("serviceMonitor.enabled") == Some("true");
    let scaler_metrics = set("scaler.metrics.prometheus.enabled") != Some("false");
    let component = |o: &Value| {
        o["metadata"]["labels"]["app.kubernetes.io/component"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let mut problems = Vec::new();
    for name in ["operator", "interceptor", "scaler"] {
        if set(&format!("{name}.enabled")) == Some("false") {
            continue;
        }
        let want = monitors && (name != "scaler" || scaler_metrics);
        let has = objects
            .iter()
            .any(|o| o["kind"] == "ServiceMonitor" && component(o) == name);
        if has != want {
            problems.push(format!(
                "{name}: a ServiceMonitor is {}rendered",
                if has { "" } else { "not " }
            ));
        }
    }
    // The scaler's metrics port, on its Services and its container, follows its endpoint.
    let ports = |o: &Value, path: &str| -> bool {
        o.pointer(path)
            .and_then(Value::as_array)
            .is_some_and(|ports| ports.iter().any(|p| p["name"] == "metrics"))
    };
    for o in objects.iter().filter(|o| component(o) == "scaler") {
        let has = match o["kind"].as_str() {
            Some("Service") => ports(o, "/spec/ports"),
            Some("Deployment") => ports(o, "/spec/template/spec/containers/0/ports"),
            _ => continue,
        };
        if has != scaler_metrics {
            problems.push(format!(
                "scaler {} {}: a metrics port {}with the Prometheus endpoint {}",
                o["kind"].as_str().unwrap_or_default(),
                o["metadata"]["name"].as_str().unwrap_or_default(),
                if has { "" } else { "missing " },
                if scaler_metrics { "on" } else { "off" }
            ));
        }
    }
    problems
}

/// `helm lint --strict` must pass, `helm template` of [`RENDER_CASES`] must render named
/// YAML documents, the deprecated TLS spellings must reach the container, and a bad value must
/// be refused by the schema.
fn helm_problems(
    helm: &helm::Helm,
    dir: &Path,
    rendered: &mut Vec<(String, Value)>,
) -> anyhow::Result<Vec<String>> {
    let mut ops = vec![serde_json::json!({"op": "lint", "strict": true})];
    ops.extend(
        RENDER_CASES
            .iter()
            .map(|case| helm::render_op(&Value::Null, case, false)),
    );
    // The values `cargo xtask e2e --cluster kind` installs the chart with.
    let kind_values = crate::kind::chart_values();
    let kind_sets: Vec<&str> = kind_values.iter().map(String::as_str).collect();
    ops.push(helm::render_op(&Value::Null, &kind_sets, false));
    ops.push(helm::render_op(
        &Value::Null,
        &["interceptor.proxy.port=0"],
        false,
    ));
    let mut answers = helm.run(dir, &ops)?;
    let refused = answers.pop().expect("one answer per op");
    let lint = answers.remove(0);
    let mut problems = Vec::new();
    let shown = format!("helm template --set {}", kind_sets.join(" --set "));
    match answers
        .pop()
        .expect("one answer per op")
        .and_then(|a| helm::objects(&a))
    {
        Ok(objects) => rendered.extend(objects.into_iter().map(|o| (shown.clone(), o))),
        Err(e) => problems.push(format!("{shown} (the kind e2e install): {e}")),
    }

    match lint {
        Ok(report) => {
            let report = &report["lint"];
            for m in report["messages"].as_array().into_iter().flatten() {
                // Severity 1 is information ("icon is recommended"); 2 and 3 fail `--strict`.
                if m["severity"].as_u64().unwrap_or(3) >= 2 {
                    problems.push(format!("helm lint --strict: {}: {}", m["path"], m["error"]));
                }
            }
            for e in report["errors"].as_array().into_iter().flatten() {
                problems.push(format!("helm lint --strict: {e}"));
            }
        }
        Err(e) => problems.push(format!("helm lint --strict failed: {e}")),
    }
    for (case, answer) in RENDER_CASES.iter().zip(&answers) {
        let shown = format!("helm template --set {}", case.join(" --set "));
        match answer
            .as_ref()
            .map_err(Clone::clone)
            .and_then(helm::objects)
        {
            Ok(objects) => {
                problems.extend(
                    metrics_object_problems(case, &objects)
                        .into_iter()
                        .map(|p| format!("{shown}: {p}")),
                );
                if case
                    .iter()
                    .any(|s| s.starts_with("interceptor.tls.cert_path="))
                {
                    let text = Value::Array(objects.clone()).to_string();
                    for want in ["/old/tls.crt", "/old/tls.key", "old-tls"] {
                        if !text.contains(want) {
                            problems.push(format!("{shown}: {want} is not rendered"));
                        }
                    }
                }
                rendered.extend(objects.into_iter().map(|o| (shown.clone(), o)));
            }
            Err(e) => problems.push(format!("{shown}: {e}")),
        }
    }
    if refused.is_ok() {
        problems.push(
            "helm accepted interceptor.proxy.port=0: values.schema.json is not applied".into(),
        );
    }
    if problems.is_empty() {
        eprintln!(
            "chart: `helm lint --strict` passed, {} value sets and the kind e2e install render, a bad value is refused",
            RENDER_CASES.len()
        );
    }
    Ok(problems)
}

/// A validator for the JSON-schema subset `values.schema.json` uses. Unknown keywords are
/// errors, so the schema cannot drift into features this check would silently ignore.
mod schema {
    use regex::Regex;
    use serde_json::Value;

    /// Keywords without effect on validation.
    const ANNOTATIONS: [&str; 4] = ["$schema", "title", "description", "definitions"];
    /// Keywords this validator applies.
    const KEYWORDS: [&str; 11] = [
        "$ref",
        "type",
        "enum",
        "pattern",
        "minimum",
        "maximum",
        "minLength",
        "properties",
        "required",
        "additionalProperties",
        "items",
    ];

    /// Validates `value` against `root`; returns one message per violation.
    pub(super) fn validate(root: &Value, value: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        check(root, root, value, "", &mut errors);
        errors
    }

    fn check(root: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        let here = if at.is_empty() { "/" } else { at };
        let Some(schema) = schema.as_object() else {
            if schema.as_bool() == Some(false) {
                errors.push(format!("at {here}: not allowed"));
            }
            return;
        };
        for key in schema.keys() {
            if !KEYWORDS.contains(&key.as_str()) && !ANNOTATIONS.contains(&key.as_str()) {
                errors.push(format!(
                    "at {here}: the schema uses `{key}`, which this validator does not support"
                ));
            }
        }
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            match reference
                .strip_prefix("#/definitions/")
                .and_then(|name| root.get("definitions")?.get(name))
            {
                Some(target) => check(root, target, value, at, errors),
                None => errors.push(format!("at {here}: unresolvable $ref {reference}")),
            }
        }
        if let Some(types) = schema.get("type") {
            let allowed: Vec<&str> = match types {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            if !allowed.iter().any(|t| has_type(value, t)) {
                errors.push(format!(
                    "at {here}: got {}, want {}",
                    type_name(value),
                    allowed.join(" or ")
                ));
                return;
            }
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array)
            && !options.contains(value)
        {
            errors.push(format!(
                "at {here}: {value} is not one of {}",
                Value::Array(options.clone())
            ));
        }
        if let Some(s) = value.as_str() {
            if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
                match Regex::new(pattern) {
                    Ok(re) if re.is_match(s) => {}
                    Ok(_) => errors.push(format!("at {here}: {s:?} does not match {pattern}")),
                    Err(e) => errors.push(format!("at {here}: bad pattern {pattern}: {e}")),
                }
            }
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && (s.chars().count() as u64) < min
            {
                errors.push(format!("at {here}: {s:?} is shorter than {min}"));
            }
        }
        if let Some(n) = value.as_f64() {
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && n < min
            {
                errors.push(format!("at {here}: {value} is below the minimum {min}"));
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && n > max
            {
                errors.push(format!("at {here}: {value} is above the maximum {max}"));
            }
        }
        if let Some(map) = value.as_object() {
            let properties = schema.get("properties").and_then(Value::as_object);
            for key in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !map.contains_key(key) {
                    errors.push(format!("at {here}: missing required property `{key}`"));
                }
            }
            for (key, child) in map {
                let child_at = format!("{at}/{key}");
                match properties.and_then(|p| p.get(key)) {
                    Some(child_schema) => check(root, child_schema, child, &child_at, errors),
                    None => match schema.get("additionalProperties") {
                        Some(Value::Bool(false)) => errors.push(format!(
                            "at {here}: additional property `{key}` is not allowed"
                        )),
                        Some(extra @ Value::Object(_)) => {
                            check(root, extra, child, &child_at, errors)
                        }
                        _ => {}
                    },
                }
            }
        }
        if let (Some(items), Some(list)) = (schema.get("items"), value.as_array()) {
            for (i, item) in list.iter().enumerate() {
                check(root, items, item, &format!("{at}/{i}"), errors);
            }
        }
    }

    fn has_type(value: &Value, t: &str) -> bool {
        match t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            "number" => value.is_number(),
            "integer" => {
                value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            _ => false,
        }
    }

    fn type_name(value: &Value) -> &'static str {
        match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn chart_values() -> Value {
        load_values(&chart_dir().join("values.yaml")).unwrap()
    }

    fn chart_schema() -> Value {
        serde_json::from_str(&read(&chart_dir().join("values.schema.json")).unwrap()).unwrap()
    }

    #[test]
    fn the_chart_values_match_the_schema() {
        assert_eq!(
            schema::validate(&chart_schema(), &chart_values()),
            Vec::<String>::new()
        );
    }

    #[test]
    fn bad_values_fail_with_the_path_named() {
        let schema = chart_schema();
        for (pointer, bad, expect) in [
            (
                "/interceptor/proxy/port",
                json!(0),
                "/interceptor/proxy/port",
            ),
            ("/interceptor/proxy/port", json!("8080"), "want integer"),
            ("/logging/scaler/level", json!("loud"), "not one of"),
            (
                "/interceptor/tcpConnectTimeout",
                json!("0s"),
                "does not match",
            ),
            ("/scaler/service", json!("Bad_Name"), "/scaler/service"),
        ] {
            let mut values = chart_values();
            *values.pointer_mut(pointer).unwrap() = bad.clone();
            let errors = schema::validate(&schema, &values);
            assert!(
                errors.iter().any(|e| e.contains(expect)),
                "{pointer}={bad}: {errors:?}"
            );
        }
        let mut values = chart_values();
        values["interceptor"]["keepAlive"] = json!("1s");
        let errors = schema::validate(&schema, &values);
        assert!(
            errors
                .iter()
                .any(|e| e.contains("`keepAlive` is not allowed")),
            "{errors:?}"
        );
        let mut values = chart_values();
        values["interceptor"]["tls"]["port"] = json!(0);
        let errors = schema::validate(&schema, &values);
        assert!(
            errors.iter().any(|e| e.contains("below the minimum")),
            "{errors:?}"
        );
    }

    #[test]
    fn unsupported_schema_keywords_are_reported() {
        let errors = schema::validate(&json!({"oneOf": []}), &json!(1));
        assert!(errors[0].contains("`oneOf`"), "{errors:?}");
    }

    #[test]
    fn missing_value_references_are_found() {
        let values = json!({"a": {"b": 1}});
        let templates = vec![(
            "t.yaml".to_owned(),
            "x: {{ .Values.a.b }}\ny: {{ $.Values.a.c | quote }}\nz: {{ .root.Values.d }}"
                .to_owned(),
        )];
        let problems = value_reference_problems(&templates, &values);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("t.yaml:2") && problems[0].contains("no `a.c`"));
        assert!(problems[1].contains("t.yaml:3") && problems[1].contains("no `d`"));
    }

    #[test]
    fn rbac_rules_beyond_the_allow_list_are_rejected() {
        let template = |rules: &str| {
            let mut text = String::new();
            for name in rbac_allow_list().keys() {
                let body = if *name == "scaler.rules" {
                    rules.to_owned()
                } else {
                    // Grant exactly the allow-list for the others.
                    rbac_allow_list()[name]
                        .iter()
                        .map(|(g, r, v)| {
                            format!("- apiGroups: [\"{g}\"]\n  resources: [\"{r}\"]\n  verbs: [\"{v}\"]\n")
                        })
                        .collect()
                };
                text.push_str(&format!(
                    "{{{{- define \"{name}\" -}}}}\n{body}{{{{- end }}}}\n"
                ));
            }
            text.push_str("rules:\n  {{- include \"scaler.rules\" . | nindent 2 }}\n");
            vec![("t.tpl".to_owned(), text)]
        };
        let exact = concat!(
            "- apiGroups: [\"http.keda.sh\"]\n  resources: [\"httpscaledobjects\", \"interceptorroutes\"]\n  verbs: [\"list\", \"watch\"]\n",
            "- apiGroups: [\"keda.sh\"]\n  resources: [\"scaledobjects\"]\n  verbs: [\"get\"]\n",
            "- apiGroups: [\"autoscaling\"]\n  resources: [\"horizontalpodautoscalers\"]\n  verbs: [\"get\", \"patch\"]\n",
        );
        assert_eq!(rbac_problems(&template(exact)), Vec::<String>::new());

        let more = exact.replace("\"watch\"]", "\"watch\", \"delete\"]");
        let problems = rbac_problems(&template(&more));
        assert!(
            problems.iter().any(|p| p.contains("grants delete")),
            "{problems:?}"
        );
        let secrets =
            format!("{exact}- apiGroups: [\"\"]\n  resources: [\"secrets\"]\n  verbs: [\"get\"]\n");
        let problems = rbac_problems(&template(&secrets));
        assert!(
            problems.iter().any(|p| p.contains("secrets")),
            "{problems:?}"
        );
        let wildcard = exact.replace("\"list\", \"watch\"", "\"*\"");
        let problems = rbac_problems(&template(&wildcard));
        assert!(
            problems.iter().any(|p| p.contains("wildcard")),
            "{problems:?}"
        );
        let less = exact.replace(", \"watch\"", "");
        let problems = rbac_problems(&template(&less));
        assert!(
            problems.iter().any(|p| p.contains("misses watch")),
            "{problems:?}"
        );

        let inline = vec![(
            "t.tpl".to_owned(),
            "rules:\n  - apiGroups: [\"*\"]\n".to_owned(),
        )];
        let problems = rbac_problems(&inline);
        assert!(
            problems
                .iter()
                .any(|p| p.contains("must be followed by an include")),
            "{problems:?}"
        );
    }

    #[test]
    fn undocumented_values_are_reported() {
        let schema = json!({"type": "object", "additionalProperties": false, "properties": {
            "a": {"type": "object", "additionalProperties": false, "properties": {"b": {}, "c": {}}},
            "free": {"type": "object"}
        }});
        let values = json!({"a": {"b": 1, "c": 2}, "free": {"x": 1}});
        let problems = readme_problems("| `a.b` | | `free` |", &schema, &values);
        assert_eq!(
            problems,
            vec!["README.md does not document the value `a.c`"]
        );
    }

    #[test]
    fn env_vars_the_component_does_not_read_are_reported() {
        let root = workspace_root();
        let templates = read_templates(&chart_dir()).unwrap();
        assert_eq!(
            env_problems(&templates, &root).unwrap(),
            Vec::<String>::new()
        );
        let broken: Vec<_> = templates
            .into_iter()
            .map(|(file, text)| {
                let text = text.replace("KEDA_HTTP_DRAIN_TIMEOUT", "KEDA_HTTP_DRAIN_TIMEOUTS");
                (file, text)
            })
            .collect();
        let problems = env_problems(&broken, &root).unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("KEDA_HTTP_DRAIN_TIMEOUTS"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_scaler_service_monitor_without_scaler_metrics_is_reported() {
        let object = |kind: &str, component: &str, ports: &[&str]| {
            let ports: Vec<_> = ports.iter().map(|p| json!({"name": p})).collect();
            json!({
                "kind": kind,
                "metadata": {"name": format!("x-{component}"),
                             "labels": {"app.kubernetes.io/component": component}},
                "spec": {"ports": ports, "template": {"spec": {"containers": [{"ports": ports}]}}},
            })
        };
        let monitors = |with_scaler: bool| {
            let mut objects: Vec<_> = ["operator", "interceptor"]
                .iter()
                .map(|c| object("ServiceMonitor", c, &[]))
                .collect();
            if with_scaler {
                objects.push(object("ServiceMonitor", "scaler", &[]));
            }
            objects
        };
        let off = [
            "serviceMonitor.enabled=true",
            "scaler.metrics.prometheus.enabled=false",
        ];
        let mut good = monitors(false);
        good.push(object("Service", "scaler", &["grpc"]));
        good.push(object("Deployment", "scaler", &["grpc"]));
        assert_eq!(metrics_object_problems(&off, &good), Vec::<String>::new());
        let mut bad = monitors(true);
        bad.push(object("Service", "scaler", &["grpc", "metrics"]));
        let problems = metrics_object_problems(&off, &bad);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].contains("scaler: a ServiceMonitor is rendered"),
            "{problems:?}"
        );
        // Metrics on: the scaler's ServiceMonitor must be there.
        let on = ["serviceMonitor.enabled=true"];
        let problems = metrics_object_problems(&on, &monitors(false));
        assert_eq!(problems, ["scaler: a ServiceMonitor is not rendered"]);
        assert_eq!(metrics_object_problems(&[], &[]), Vec::<String>::new());
    }

    #[test]
    fn a_grace_period_shorter_than_the_drain_is_reported() {
        let mut values = chart_values();
        assert_eq!(grace_period_problems(&values), Vec::<String>::new());
        values["interceptor"]["terminationGracePeriodSeconds"] = json!(30);
        assert_eq!(grace_period_problems(&values).len(), 1);
    }
}
