//! Real Helm for the chart check: PyPI's `helm-python-sdk` (Helm v4's Go SDK as a C library,
//! no `helm` binary needed), installed by pip into `target/tools/` on first use and driven by
//! `xtask/helm.py`. Only `python3` with pip and access to PyPI are needed; nothing is skipped.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use regex::Regex;
use serde_json::{Value, json};

use crate::workspace_root;

/// The pinned Helm SDK package (Helm v4.2.3).
pub(crate) const SDK: &str = "helm-python-sdk==0.2.2";

/// One answer of Helm to one operation: its JSON result, or Helm's error message.
pub(crate) type Answer = Result<Value, String>;

/// The Python interpreter: `$PYTHON`, else `python3`.
pub(crate) fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Installs the pip requirement `spec` (`name==version`) into its own directory under
/// `target/tools/pypi/` unless it is there already, and returns that directory (for
/// `PYTHONPATH`). The install goes to a scratch directory first, so an interrupted one is
/// never taken for complete.
pub(crate) fn pip_install(spec: &str) -> anyhow::Result<PathBuf> {
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
    let tools = workspace_root().join("target/tools/pypi");
    let dir = tools.join(&name);
    if dir.join(".complete").is_file() {
        return Ok(dir);
    }
    fs::create_dir_all(&tools).with_context(|| format!("creating {}", tools.display()))?;
    let scratch = tools.join(format!("{name}.partial-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    eprintln!("chart: installing {spec} from PyPI into {}", dir.display());
    let out = Command::new(python())
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
            "--target",
        ])
        .arg(&scratch)
        .arg(spec)
        .output()
        .with_context(|| format!("running `{} -m pip` (python3 with pip is needed)", python()))?;
    if !out.status.success() {
        let _ = fs::remove_dir_all(&scratch);
        bail!(
            "`pip install {spec}` failed ({}):\n{}",
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

/// A Helm ready to lint and render charts.
pub(crate) struct Helm {
    /// Where the SDK is installed (the `PYTHONPATH` of `xtask/helm.py`).
    site: PathBuf,
}

impl Helm {
    /// Installs the pinned SDK (once) and checks that it loads.
    pub(crate) fn install() -> anyhow::Result<Self> {
        let helm = Self {
            site: pip_install(SDK)?,
        };
        let answers = helm.run(
            &super::chart_dir(),
            &[json!({"op": "lint", "strict": false})],
        )?;
        if let Some(Err(e)) = answers.first() {
            bail!("helm from {SDK} does not work: {e}");
        }
        Ok(helm)
    }

    /// Runs `ops` (see `xtask/helm.py`) on the chart in `chart`, in one process; one answer
    /// per operation, in order.
    pub(crate) fn run(&self, chart: &Path, ops: &[Value]) -> anyhow::Result<Vec<Answer>> {
        let script = workspace_root().join("xtask/helm.py");
        let request = json!({"chart": chart, "ops": ops});
        let mut child = Command::new(python())
            .arg(&script)
            .env("PYTHONPATH", &self.site)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", script.display()))?;
        child
            .stdin
            .take()
            .context("stdin of helm.py")?
            .write_all(request.to_string().as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "{} failed ({}):\n{}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let reply: Value =
            serde_json::from_slice(&out.stdout).context("parsing the answer of helm.py")?;
        let answers = reply["answers"]
            .as_array()
            .context("helm.py answered without `answers`")?;
        if answers.len() != ops.len() {
            bail!(
                "helm.py gave {} answers to {} operations",
                answers.len(),
                ops.len()
            );
        }
        Ok(answers
            .iter()
            .map(|a| {
                if a["ok"] == Value::Bool(true) {
                    Ok(a.clone())
                } else {
                    Err(a["error"]
                        .as_str()
                        .unwrap_or("(no message)")
                        .trim()
                        .to_owned())
                }
            })
            .collect())
    }

    /// Renders the chart with `values` as release `http-add-on` in namespace `keda` and
    /// returns its objects.
    pub(crate) fn render(&self, chart: &Path, values: &Value) -> anyhow::Result<Vec<Value>> {
        let op = render_op(values, &[], false);
        match self.run(chart, &[op])?.remove(0) {
            Ok(answer) => objects(&answer).map_err(anyhow::Error::msg),
            Err(e) => bail!("helm template failed: {e}"),
        }
    }
}

/// A render operation of `xtask/helm.py`: release `http-add-on` in namespace `keda`, like
/// upstream's facts in `compat/chart-objects.tsv`.
pub(crate) fn render_op(values: &Value, set: &[&str], upgrade: bool) -> Value {
    json!({
        "op": "render",
        "name": "http-add-on",
        "namespace": "keda",
        "values": values,
        "set": set,
        "is_upgrade": upgrade,
    })
}

/// The objects of a render answer, in template order; every document must be YAML with
/// `apiVersion`, `kind` and `metadata.name`.
pub(crate) fn objects(answer: &Value) -> Result<Vec<Value>, String> {
    let separator = Regex::new(r"(?m)^---\s*$").expect("valid regex");
    let manifests = answer["manifests"]
        .as_object()
        .ok_or("a render answer without manifests")?;
    let mut out = Vec::new();
    for (template, text) in manifests {
        if template.ends_with(".txt") {
            continue;
        }
        let text = text.as_str().unwrap_or_default();
        for doc in separator.split(text) {
            // Through serde_yaml's own Value first: it refuses duplicate keys, as Kubernetes'
            // YAML decoder does.
            let yaml: serde_yaml::Value = serde_yaml::from_str(doc)
                .map_err(|e| format!("{template} rendered invalid YAML: {e}"))?;
            let object: Value = serde_json::to_value(yaml)
                .map_err(|e| format!("{template} rendered YAML without a JSON form: {e}"))?;
            if object.is_null() {
                continue;
            }
            let named = ["apiVersion", "kind"]
                .iter()
                .all(|k| object.get(k).is_some_and(Value::is_string))
                && object
                    .pointer("/metadata/name")
                    .is_some_and(Value::is_string);
            if !named {
                return Err(format!(
                    "{template}: a document lacks apiVersion, kind or metadata.name"
                ));
            }
            out.push(object);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_split_and_checked() {
        let answer = json!({"manifests": {
            "c/templates/a.yaml": "---\napiVersion: v1\nkind: A\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: B\nmetadata:\n  name: b\n",
            "c/templates/NOTES.txt": "not yaml: [",
        }});
        let found = objects(&answer).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[1]["kind"], "B");
        let nameless = json!({"manifests": {"t.yaml": "apiVersion: v1\nkind: A\n"}});
        assert!(objects(&nameless).unwrap_err().contains("metadata.name"));
        let broken = json!({"manifests": {"t.yaml": "a: [\n"}});
        assert!(objects(&broken).unwrap_err().contains("invalid YAML"));
        let twice = json!({"manifests": {"t.yaml": "apiVersion: v1\nkind: A\nmetadata:\n  name: a\n  name: b\n"}});
        assert!(objects(&twice).unwrap_err().contains("invalid YAML"));
    }
}
