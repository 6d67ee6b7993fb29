//! Test 4: every object the chart renders validates strictly (unknown fields are errors)
//! against the official Kubernetes schemas of the oldest Kubernetes the chart supports
//! (`kubeVersion` in Chart.yaml) and the newest one PyPI's `kubernetes-validate` knows; KEDA
//! ScaledObjects validate against KEDA's own schema (npm's `@kubernetes-models/keda`,
//! generated from KEDA's CRDs); our custom resources (HTTPScaledObjects, InterceptorRoutes)
//! validate strictly against the rendered CRDs' schemas. Both packages are installed into
//! `target/tools/` on first use.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::helm::{pip_install, python};
use crate::workspace_root;

/// The pinned Kubernetes schemas (1.25 to 1.37, strict variants included).
pub(crate) const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";
/// The pinned KEDA models, with KEDA's ScaledObject schema.
pub(crate) const KEDA_MODELS: &str = "@kubernetes-models/keda@2.0.0";
/// Kinds without an official or KEDA schema here: the Prometheus Operator's ServiceMonitor.
const UNCHECKED_KINDS: [&str; 1] = ["ServiceMonitor"];

/// Installs the npm package `spec` (`name@version`) into its own directory under
/// `target/tools/npm/` unless it is there already, and returns that directory.
pub(crate) fn npm_install(spec: &str) -> anyhow::Result<PathBuf> {
    let name: String = spec
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let tools = workspace_root().join("target/tools/npm");
    let dir = tools.join(&name);
    if dir.join(".complete").is_file() {
        return Ok(dir);
    }
    fs::create_dir_all(&tools).with_context(|| format!("creating {}", tools.display()))?;
    let scratch = tools.join(format!("{name}.partial-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    eprintln!("chart: installing {spec} from npm into {}", dir.display());
    let out = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
        .arg(&scratch)
        .arg(spec)
        .output()
        .context("running npm (node with npm is needed)")?;
    if !out.status.success() {
        let _ = fs::remove_dir_all(&scratch);
        bail!(
            "`npm install {spec}` failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    fs::write(scratch.join(".complete"), spec)?;
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&scratch, &dir)
        .with_context(|| format!("moving {} to {}", scratch.display(), dir.display()))?;
    Ok(dir)
}

/// Runs `program args` with `env`, `input` on stdin, and parses its stdout as JSON.
fn run_json(
    program: &str,
    args: &[&Path],
    env: (&str, &Path),
    input: &Value,
) -> anyhow::Result<Value> {
    let mut child = Command::new(program)
        .args(args)
        .env(env.0, env.1)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {program}"))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{program} {:?} failed ({}):\n{}",
            args,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("parsing the answer of {program}"))
}

/// The oldest Kubernetes the chart supports, from `kubeVersion: ">=X.Y.Z-0"` in Chart.yaml.
pub(crate) fn oldest_kubernetes(chart_yaml: &str) -> anyhow::Result<String> {
    let chart: Value = serde_yaml::from_str(chart_yaml).context("parsing Chart.yaml")?;
    let range = chart["kubeVersion"]
        .as_str()
        .context("Chart.yaml has no kubeVersion")?;
    let version = range
        .strip_prefix(">=")
        .map(|v| v.trim().trim_end_matches("-0"))
        .filter(|v| v.split('.').count() == 3 && v.split('.').all(|p| p.parse::<u32>().is_ok()))
        .with_context(|| format!("kubeVersion {range:?} is not of the form \">=X.Y.Z-0\""))?;
    Ok(version.to_owned())
}

/// A Deployment with a field Kubernetes does not know, to prove the validation is strict.
fn strictness_probe() -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "probe"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "replica": 1,
            "template": {"metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]}}}})
}

/// An HTTPScaledObject with a field its CRD does not declare, to prove custom resources are
/// validated strictly against the rendered CRDs.
fn custom_resource_probe() -> Value {
    json!({"apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject",
        "metadata": {"name": "probe"},
        "spec": {"scaleTargetRef": {"name": "app", "kind": "Deployment", "apiVersion": "apps/v1",
            "service": "app", "port": 8080}, "hostz": []}})
}

/// A ScaledObject without its required `scaleTargetRef`, to prove KEDA's schema is applied.
fn keda_probe() -> Value {
    json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "probe"},
        "spec": {"triggers": [{"type": "external", "metadata": {}}]}})
}

/// Validates `objects` (label, object); identical objects are validated once.
pub(crate) fn problems(dir: &Path, objects: &[(String, Value)]) -> anyhow::Result<Vec<String>> {
    let oldest = oldest_kubernetes(
        &fs::read_to_string(dir.join("Chart.yaml")).context("reading Chart.yaml")?,
    )?;
    let mut seen = BTreeSet::new();
    let unique: Vec<&(String, Value)> = objects
        .iter()
        .filter(|(_, o)| seen.insert(o.to_string()))
        .collect();
    let mut problems = Vec::new();

    let site = pip_install(KUBERNETES_VALIDATE)?;
    let mut kube_objects: Vec<Value> = unique.iter().map(|(_, o)| o.clone()).collect();
    kube_objects.push(strictness_probe());
    kube_objects.push(custom_resource_probe());
    // Custom resources validate against the rendered CRDs' schemas (ours).
    let crds: Vec<Value> = unique
        .iter()
        .filter(|(_, o)| o["kind"] == "CustomResourceDefinition")
        .map(|(_, o)| o.clone())
        .collect();
    let script = workspace_root().join("xtask/validate.py");
    let answer = run_json(
        &python(),
        &[&script],
        ("PYTHONPATH", &site),
        &json!({"versions": [oldest, "latest"], "objects": kube_objects, "crds": crds}),
    )?;
    let versions: Vec<String> = answer["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let mut results = answer["results"]
        .as_array()
        .cloned()
        .context("validate.py answered without results")?;
    if results.len() != kube_objects.len() {
        bail!(
            "validate.py answered {} of {} objects",
            results.len(),
            kube_objects.len()
        );
    }
    let cr_probe = results.pop().unwrap_or_default();
    if cr_probe.as_array().is_none_or(|r| {
        r.iter()
            .any(|r| !r.as_str().is_some_and(|e| e.contains("hostz")))
    }) {
        problems.push(format!(
            "an HTTPScaledObject with an unknown field passed the CRD schema: custom resources are not validated strictly ({cr_probe})"
        ));
    }
    let probe = results.pop().unwrap_or_default();
    if probe
        .as_array()
        .is_none_or(|r| r.iter().any(Value::is_null))
    {
        problems.push(format!(
            "a Deployment with an unknown field passed the Kubernetes schemas: the validation is not strict ({probe})"
        ));
    }
    let mut scaled_objects = Vec::new();
    for ((label, object), result) in unique.iter().zip(&results) {
        let kind = object["kind"].as_str().unwrap_or_default();
        let what = format!("{kind} {} ({label})", object["metadata"]["name"]);
        for (version, outcome) in versions.iter().zip(result.as_array().into_iter().flatten()) {
            match outcome.as_str() {
                None => {}
                Some("no-schema") if kind == "ScaledObject" => {}
                Some("no-schema") if UNCHECKED_KINDS.contains(&kind) => {}
                Some("no-schema") => problems.push(format!(
                    "{what}: Kubernetes {version} has no schema for {} {kind}",
                    object["apiVersion"]
                )),
                Some(error) => {
                    problems.push(format!("{what}: invalid for Kubernetes {version}: {error}"))
                }
            }
        }
        if kind == "ScaledObject" {
            scaled_objects.push((what, (*object).clone()));
        }
    }
    if scaled_objects.is_empty() {
        problems.push("no ScaledObject rendered to check against KEDA's schema".into());
    }

    let models = npm_install(KEDA_MODELS)?;
    let mut keda_input: Vec<Value> = scaled_objects.iter().map(|(_, o)| o.clone()).collect();
    keda_input.push(keda_probe());
    let script = workspace_root().join("xtask/keda_validate.mjs");
    let answer = run_json(
        "node",
        &[&script],
        ("KEDA_MODELS", &models),
        &Value::Array(keda_input),
    )?;
    let mut results = answer
        .as_array()
        .cloned()
        .context("keda_validate.mjs: not a list")?;
    if results.len() != scaled_objects.len() + 1 {
        bail!(
            "keda_validate.mjs answered {} of {} objects",
            results.len(),
            scaled_objects.len() + 1
        );
    }
    if results.pop().is_some_and(|r| r.is_null()) {
        problems.push(
            "a ScaledObject without scaleTargetRef passed KEDA's schema: it is not applied".into(),
        );
    }
    for ((what, _), result) in scaled_objects.iter().zip(results) {
        if let Some(error) = result.as_str() {
            problems.push(format!(
                "{what}: invalid for KEDA's ScaledObject schema: {error}"
            ));
        }
    }
    if problems.is_empty() {
        eprintln!(
            "chart: {} distinct rendered objects validate strictly against Kubernetes {}, {} ScaledObjects against KEDA's schema",
            unique.len(),
            versions.join(" and "),
            scaled_objects.len()
        );
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_kubernetes_comes_from_kube_version() {
        assert_eq!(
            oldest_kubernetes("kubeVersion: \">=1.27.0-0\"").unwrap(),
            "1.27.0"
        );
        let chart = fs::read_to_string(super::super::chart_dir().join("Chart.yaml")).unwrap();
        assert!(oldest_kubernetes(&chart).is_ok());
        assert!(oldest_kubernetes("kubeVersion: \"~1.27\"").is_err());
        assert!(oldest_kubernetes("name: x").is_err());
    }
}
