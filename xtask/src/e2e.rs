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
    let status = Command::new(root.join("target/debug/http-add-on-e2e"))
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
