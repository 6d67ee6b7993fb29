//! `cargo xtask e2e --cluster kind [--k8s-version V] [--keep] [FILTER...]`: the scenario suite
//! on a real Kubernetes cluster in docker (kind), with KEDA from its public chart and the add-on
//! from our umbrella chart, using images built from this checkout.
//!
//! Steps: create (or reuse) the cluster → install KEDA → build the images (the components and
//! the sample app `e2e-echo`) and `kind load` them → `helm upgrade --install` the chart → run
//! `http-add-on-e2e run --cluster kind` with `E2E_ECHO_IMAGE` naming the loaded sample app image
//! → on failure dump pods, events and logs → delete the cluster unless `--keep` (a reused
//! cluster is kept).
//!
//! Environment: `KIND_CLUSTER_NAME` (default `http-add-on-e2e`), `KEDA_CHART_VERSION` (default:
//! the chart repository's latest), `IMAGE_REPOSITORY` (see `cargo xtask images`).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use crate::images::{self, COMPONENTS, E2E_ECHO, IMAGES, require_tool, run_command};
use crate::{cargo, chart, workspace_root};

/// Namespace of KEDA and of the add-on (as the e2e suite expects).
const NAMESPACE: &str = "keda";
/// Tag of the images built for the run (loaded into kind, never pushed). Not `latest`, so that
/// the node uses the loaded image rather than pulling.
const IMAGE_TAG: &str = "e2e";
/// The e2e suite's variable naming its sample app image (`e2e/src/app.rs`).
const ECHO_IMAGE_ENV: &str = "E2E_ECHO_IMAGE";
/// Interceptor replicas the suite expects (the resilience scenarios need two).
const INTERCEPTORS: usize = 2;
/// KEDA's public Helm chart repository.
const KEDA_CHART_REPO: &str = "https://kedacore.github.io/charts";

/// The tools this command runs, with how to get each.
const TOOLS: [(&str, &[&str], &str); 4] = [
    (
        "docker",
        &["info"],
        "kind runs Kubernetes in docker containers: install Docker Engine \
         (https://docs.docker.com/engine/install/) and make sure the daemon runs",
    ),
    (
        "kind",
        &["version"],
        "install kind: `go install sigs.k8s.io/kind@latest` or see https://kind.sigs.k8s.io/docs/user/quick-start/#installation",
    ),
    (
        "helm",
        &["version"],
        "install helm 3.8+: see https://helm.sh/docs/intro/install/",
    ),
    (
        "kubectl",
        &["version", "--client"],
        "install kubectl: see https://kubernetes.io/docs/tasks/tools/",
    ),
];

pub(crate) fn run(k8s_version: Option<&str>, keep: bool, filters: &[String]) -> anyhow::Result<()> {
    for (tool, args, hint) in TOOLS {
        require_tool(tool, args, hint)?;
    }
    let name = std::env::var("KIND_CLUSTER_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "http-add-on-e2e".to_owned());
    let work_dir = workspace_root().join("target/e2e-kind");
    std::fs::create_dir_all(&work_dir)?;
    let kubeconfig = work_dir.join("kubeconfig");

    let created = ensure_cluster(&name, k8s_version, &kubeconfig)?;
    let result = install_and_test(&name, &kubeconfig, &work_dir, filters);
    if let Err(e) = &result {
        eprintln!("\n==> e2e on kind failed: {e:#}\n==> cluster state");
        dump_state(&kubeconfig);
    }
    match (created, keep) {
        (true, false) => {
            let deleted =
                run_command(Command::new("kind").args(["delete", "cluster", "--name", &name]));
            if let Err(e) = deleted {
                eprintln!("warning: {e:#}");
            }
        }
        _ => eprintln!(
            "kind: kept cluster {name}; use it with `export KUBECONFIG={}`, delete it with `kind delete cluster --name {name}`",
            kubeconfig.display()
        ),
    }
    result
}

/// Creates cluster `name` unless it exists; writes its kubeconfig. Returns whether it was created.
fn ensure_cluster(
    name: &str,
    k8s_version: Option<&str>,
    kubeconfig: &Path,
) -> anyhow::Result<bool> {
    let clusters = output(Command::new("kind").args(["get", "clusters"]))?;
    let exists = clusters.lines().any(|l| l.trim() == name);
    if exists {
        eprintln!("kind: reusing cluster {name}");
        if let Some(v) = k8s_version {
            eprintln!("kind: note: --k8s-version {v} does not apply to an existing cluster");
        }
    } else {
        let mut cmd = Command::new("kind");
        cmd.args(["create", "cluster", "--name", name, "--wait", "180s"]);
        if let Some(v) = k8s_version {
            cmd.args(["--image", &node_image(v)]);
        }
        run_command(&mut cmd)?;
    }
    let config = output(Command::new("kind").args(["get", "kubeconfig", "--name", name]))?;
    std::fs::write(kubeconfig, config)
        .with_context(|| format!("writing {}", kubeconfig.display()))?;
    Ok(!exists)
}

/// kind's node image for a Kubernetes version (`1.33`, `1.33.1` or `v1.33.1`).
fn node_image(version: &str) -> String {
    let v = version.trim_start_matches('v');
    format!("kindest/node:v{v}")
}

fn install_and_test(
    name: &str,
    kubeconfig: &Path,
    work_dir: &Path,
    filters: &[String],
) -> anyhow::Result<()> {
    let kube = |program: &str| {
        let mut cmd = Command::new(program);
        cmd.env("KUBECONFIG", kubeconfig)
            .current_dir(workspace_root());
        cmd
    };

    // KEDA from its public chart.
    let mut keda = kube("helm");
    keda.args([
        "upgrade",
        "--install",
        "keda",
        "keda",
        "--repo",
        KEDA_CHART_REPO,
    ])
    .args([
        "--namespace",
        NAMESPACE,
        "--create-namespace",
        "--wait",
        "--timeout",
        "5m",
    ]);
    if let Some(version) = std::env::var("KEDA_CHART_VERSION")
        .ok()
        .filter(|v| !v.is_empty())
    {
        keda.args(["--version", &version]);
    }
    run_command(&mut keda).context("installing KEDA")?;

    // Our images, built for this machine's platform and loaded into the cluster's node.
    images::run(IMAGE_TAG, native_platform(), false)?;
    for mut load in load_commands(name) {
        run_command(&mut load)?;
    }

    // The umbrella chart with those images.
    let mut install = kube("helm");
    install
        .args(["upgrade", "--install", "http-add-on"])
        .arg(chart::chart_dir())
        .args(["--namespace", NAMESPACE, "--wait", "--timeout", "5m"]);
    for set in chart_values() {
        install.args(["--set", &set]);
    }
    run_command(&mut install).context("installing the chart")?;

    // The suite, against the cluster of KUBECONFIG.
    cargo(&["build", "--bin", "http-add-on-e2e"])?;
    let mut suite = kube(
        workspace_root()
            .join("target/debug/http-add-on-e2e")
            .to_str()
            .context("non-UTF-8 workspace path")?,
    );
    suite
        .env(ECHO_IMAGE_ENV, echo_image())
        .args(["run", "--cluster", "kind", "--work-dir"])
        .arg(work_dir)
        .args(filters);
    run_command(&mut suite).context("the end-to-end suite failed on kind")
}

/// The `--set` values this path installs the chart with (`cargo xtask chart check` renders and
/// validates the chart with them too): the loaded images, never pulled, and small replica counts.
pub(crate) fn chart_values() -> Vec<String> {
    let mut sets = vec![format!("images.tag={IMAGE_TAG}")];
    for component in COMPONENTS {
        sets.push(format!(
            "images.{component}={}/{component}",
            images::repository()
        ));
        sets.push(format!("{component}.pullPolicy=Never"));
    }
    sets.extend([
        format!("interceptor.replicas.min={INTERCEPTORS}"),
        format!("interceptor.replicas.max={INTERCEPTORS}"),
        "scaler.replicas=1".to_owned(),
        "logging.interceptor.level=debug".to_owned(),
    ]);
    sets
}

/// `kind load docker-image` of every image `cargo xtask images` builds, into cluster `name`.
fn load_commands(name: &str) -> Vec<Command> {
    IMAGES
        .iter()
        .map(|target| {
            let mut load = Command::new("kind");
            load.args(["load", "docker-image", "--name", name])
                .arg(images::image(target, IMAGE_TAG));
            load
        })
        .collect()
}

/// The sample app image the suite deploys: the one built and loaded for the run.
fn echo_image() -> String {
    images::image(E2E_ECHO, IMAGE_TAG)
}

/// `linux/amd64` or `linux/arm64`, as this machine runs (kind's node has the host's arch).
fn native_platform() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "linux/arm64",
        _ => "linux/amd64",
    }
}

/// Prints what helps to understand a failure: pods, recent events, and the add-on's and KEDA's
/// logs. Best effort: every command's failure is printed and skipped.
fn dump_state(kubeconfig: &Path) {
    let commands: [&[&str]; 4] = [
        &["get", "pods", "--all-namespaces", "--output", "wide"],
        &[
            "get",
            "events",
            "--all-namespaces",
            "--sort-by",
            ".lastTimestamp",
        ],
        &[
            "logs",
            "--namespace",
            NAMESPACE,
            "--selector",
            "app.kubernetes.io/part-of=keda-add-ons-http",
            "--all-containers",
            "--prefix",
            "--tail",
            "300",
            "--max-log-requests",
            "20",
        ],
        &[
            "logs",
            "--namespace",
            NAMESPACE,
            "--selector",
            "app.kubernetes.io/name=keda-operator",
            "--all-containers",
            "--prefix",
            "--tail",
            "200",
        ],
    ];
    for args in commands {
        eprintln!("\n$ kubectl {}", args.join(" "));
        let result = Command::new("kubectl")
            .env("KUBECONFIG", kubeconfig)
            .args(args)
            .status();
        if let Err(e) = result {
            eprintln!("(could not run kubectl: {e})");
        }
    }
}

/// Runs `cmd` and returns its stdout, failing when it fails.
fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let shown = format!("{:?}", cmd);
    let out = cmd
        .output()
        .with_context(|| format!("could not run {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_images_are_named_like_kinds() {
        assert_eq!(node_image("1.33.1"), "kindest/node:v1.33.1");
        assert_eq!(node_image("v1.32.5"), "kindest/node:v1.32.5");
    }

    #[test]
    fn the_native_platform_is_a_linux_platform() {
        assert!(native_platform().starts_with("linux/"));
    }

    /// The image references `kind load` gets.
    fn loaded_images() -> Vec<String> {
        load_commands("c")
            .iter()
            .map(|load| {
                let args: Vec<_> = load.get_args().map(|a| a.to_string_lossy()).collect();
                assert_eq!(args[..4], ["load", "docker-image", "--name", "c"]);
                args[4].clone().into_owned()
            })
            .collect()
    }

    #[test]
    fn every_image_built_is_loaded_into_kind() {
        let loaded = loaded_images();
        for target in IMAGES {
            let reference = images::image(target, IMAGE_TAG);
            assert!(loaded.contains(&reference), "{reference} is not loaded");
        }
        // The chart's components are among them.
        assert!(COMPONENTS.iter().all(|c| IMAGES.contains(c)));
    }

    #[test]
    fn the_suite_deploys_the_loaded_echo_image() {
        let echo = echo_image();
        assert!(loaded_images().contains(&echo), "{echo} is not loaded");
        assert!(echo.contains("/e2e-echo:"), "{echo}");
        // With `latest` the node would try to pull the image instead of using the loaded one.
        assert!(!echo.ends_with(":latest"), "{echo}");
    }

    #[test]
    fn the_echo_image_variable_is_the_suites() {
        let app = std::fs::read_to_string(workspace_root().join("e2e/src/app.rs")).unwrap();
        assert!(app.contains(&format!("ECHO_IMAGE_ENV: &str = \"{ECHO_IMAGE_ENV}\";")));
    }

    #[test]
    fn every_tool_has_an_install_hint() {
        for (tool, _, hint) in TOOLS {
            assert!(hint.contains("install"), "{tool}: {hint}");
        }
    }
}
