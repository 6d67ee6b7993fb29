//! `cargo xtask e2e [--cluster sim] [FILTER...]`: builds the binaries and runs the scenario suite.

use std::process::Command;

use anyhow::{Context, bail};

use crate::{cargo, workspace_root};

/// Binaries the suite starts.
const BINARIES: [&str; 5] = [
    "http-add-on-sim",
    "interceptor",
    "scaler",
    "operator",
    "http-add-on-e2e",
];

/// Builds every binary the suite needs into `target/debug`.
pub(crate) fn build_binaries() -> anyhow::Result<()> {
    let mut args = vec!["build"];
    for bin in BINARIES {
        args.extend(["--bin", bin]);
    }
    cargo(&args)
}

pub(crate) fn run(cluster: &str, filters: &[String]) -> anyhow::Result<()> {
    build_binaries()?;
    let root = workspace_root();
    let mut suite = Command::new(root.join("target/debug/http-add-on-e2e"));
    if cluster == "sim" {
        // The check-through-nginx scenario puts a real nginx in front (issue #17).
        match crate::bench_proxy::ensure_tool("nginx", "nginx-light") {
            Ok(nginx) => suite.env("E2E_NGINX", nginx),
            Err(reason) => suite.env("E2E_NGINX_MISSING", reason),
        };
    }
    let status = suite
        .args(["run", "--cluster", cluster])
        .args(filters)
        .current_dir(&root)
        .status()
        .context("running http-add-on-e2e")?;
    if !status.success() {
        bail!("the end-to-end suite failed ({status})");
    }
    Ok(())
}
