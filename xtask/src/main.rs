//! `cargo xtask`: project automation (codegen, tests, demo). One module per command.

mod codegen;
mod e2e;
mod test;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

/// Project automation for the KEDA HTTP Add-on.
#[derive(Parser)]
#[command(name = "cargo xtask", about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write the CRD YAML generated from the Rust types into the chart.
    Codegen {
        /// Fail instead of writing when the committed files differ from the generated ones.
        #[arg(long)]
        check: bool,
    },
    /// Run the whole test suite (unit and integration tests of every crate).
    Test,
    /// Run the end-to-end scenarios (all, or those whose names contain a filter).
    E2e {
        /// Cluster to run on.
        #[arg(long, default_value = "sim")]
        cluster: String,
        /// Scenario name filters.
        filters: Vec<String>,
    },
    /// Run the whole system on the simulated cluster and watch an app scale 0 → N → 0.
    Demo {
        /// Leave it running at the end and print the kubeconfig path and the proxy URL.
        #[arg(long)]
        keep: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Codegen { check } => codegen::run(check),
        Cmd::Test => test::run(),
        Cmd::E2e { cluster, filters } => e2e::run(&cluster, &filters),
        Cmd::Demo { keep } => demo(keep),
    }
}

fn demo(keep: bool) -> anyhow::Result<()> {
    e2e::build_binaries()?;
    let root = workspace_root();
    let mut cmd = Command::new(root.join("target/debug/http-add-on-e2e"));
    cmd.args(["demo", "--work-dir", "target/demo"])
        .current_dir(&root);
    if keep {
        cmd.arg("--keep");
    }
    let status = cmd.status().context("running the demo")?;
    if !status.success() {
        bail!("the demo failed ({status})");
    }
    Ok(())
}

/// The workspace root (the parent of this crate's directory).
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Runs `cargo <args>` in the workspace root and fails when it fails.
pub(crate) fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("could not run {cargo}"))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}
