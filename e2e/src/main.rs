//! `http-add-on-e2e`: starts the system on a cluster and runs the scenario suite (or the demo).
//! Normally run through `cargo xtask e2e` / `cargo xtask demo`, which build the binaries first.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use http_add_on_e2e::sim::{SimOptions, SimSystem};
use http_add_on_e2e::{runner, scenarios};

#[derive(Parser)]
#[command(about = "End-to-end scenarios of the KEDA HTTP Add-on")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Cluster {
    /// The simulated cluster (`http-add-on-sim`), components as local processes.
    Sim,
    /// A kind cluster with the Helm chart installed.
    Kind,
}

#[derive(clap::Args)]
struct Common {
    /// Which cluster to run on.
    #[arg(long, value_enum, default_value = "sim")]
    cluster: Cluster,
    /// Directory with the built binaries.
    #[arg(long, default_value = "target/debug")]
    bin_dir: PathBuf,
    /// Directory with the CRD YAML.
    #[arg(long, default_value = "charts/keda-http-add-on/files/crds")]
    crd_dir: PathBuf,
    /// Where logs and the kubeconfig are written.
    #[arg(long, default_value = "target/e2e")]
    work_dir: PathBuf,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the scenarios whose names contain any of the filters (all without filters).
    Run {
        #[command(flatten)]
        common: Common,
        /// Scenarios run at once (exclusive ones always run alone).
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        /// Name filters.
        filters: Vec<String>,
    },
    /// List the scenarios.
    List,
    /// Print every kind of manifest the suite applies on a cluster, as a JSON array of
    /// `{"what": ..., "object": ...}` (for `cargo xtask chart check`).
    Manifests,
    /// Run the demo: the system on the simulated cluster and a sample app scaling 0 → N → 0.
    Demo {
        #[command(flatten)]
        common: Common,
        /// Leave everything running at the end and print how to reach it.
        #[arg(long)]
        keep: bool,
    },
}

async fn start_sim(common: &Common, interceptors: usize) -> anyhow::Result<SimSystem> {
    if matches!(common.cluster, Cluster::Kind) {
        bail!("the demo runs on the simulated cluster only; use --cluster sim");
    }
    let options = SimOptions {
        bin_dir: common.bin_dir.clone(),
        crd_dir: common.crd_dir.clone(),
        work_dir: common.work_dir.clone(),
        interceptors,
    };
    match SimSystem::start(options.clone()).await {
        Ok(system) => Ok(system),
        Err(first) => {
            // Component ports are picked free and then bound by the component, so another
            // process can take one in between; that race is the harness's, not the product's.
            println!("starting the system failed, retrying once: {first:#}");
            SimSystem::start(options)
                .await
                .context("starting the system on the simulated cluster")
        }
    }
}

/// Runs `selected` on the kind cluster of the default kubeconfig, where `cargo xtask e2e
/// --cluster kind` installed the chart.
async fn run_on_kind(selected: Vec<runner::Scenario>, parallel: usize) -> anyhow::Result<()> {
    let (tb, handle) = http_add_on_e2e::kind::start(http_add_on_e2e::kind::KindOptions::default())
        .await
        .context("connecting to the add-on on the kind cluster")?;
    println!("running {} scenarios on the kind cluster", selected.len());
    let outcomes = tokio::select! {
        outcomes = runner::run(&tb, selected, parallel) => outcomes,
        _ = tokio::signal::ctrl_c() => {
            handle.shutdown().await;
            bail!("interrupted");
        }
    };
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
    if failed > 0 {
        println!("\ncomponent logs:\n{}", handle.logs());
    }
    handle.shutdown().await;
    println!("{} passed, {} failed", outcomes.len() - failed, failed);
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::List => {
            for s in scenarios::all() {
                println!("{}", s.name);
            }
            Ok(())
        }
        Cmd::Manifests => {
            let all: Vec<serde_json::Value> = http_add_on_e2e::manifests::kind_manifests()
                .into_iter()
                .map(|(what, object)| serde_json::json!({"what": what, "object": object}))
                .collect();
            println!("{}", serde_json::Value::Array(all));
            Ok(())
        }
        Cmd::Demo { common, keep } => {
            println!(
                "starting the simulated cluster, the operator, the scaler and the interceptor..."
            );
            let system = start_sim(&common, 1).await?;
            let result = tokio::select! {
                r = http_add_on_e2e::demo::run(&system, keep) => r,
                _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
            };
            if result.is_err() {
                println!("\ncomponent logs:\n{}", system.logs());
            }
            tokio::time::timeout(Duration::from_secs(30), system.shutdown())
                .await
                .ok();
            let (_, failed) = result?;
            if failed > 0 {
                bail!("{failed} requests failed");
            }
            Ok(())
        }
        Cmd::Run {
            common,
            parallel,
            filters,
        } => {
            let selected = runner::select(scenarios::all(), &filters);
            if selected.is_empty() {
                bail!("no scenario matches {filters:?} (see `list`)");
            }
            if matches!(common.cluster, Cluster::Kind) {
                return run_on_kind(selected, parallel).await;
            }
            let system = start_sim(&common, 2).await?;
            let tb = system.testbed();
            println!(
                "running {} scenarios on the {} cluster (logs in {})",
                selected.len(),
                tb.control.kind(),
                common.work_dir.display()
            );
            let outcomes = tokio::select! {
                outcomes = runner::run(&tb, selected, parallel) => outcomes,
                _ = tokio::signal::ctrl_c() => {
                    system.shutdown().await;
                    bail!("interrupted");
                }
            };
            let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
            if failed > 0 {
                println!("\ncomponent logs:\n{}", system.logs());
            }
            tokio::time::timeout(Duration::from_secs(30), system.shutdown())
                .await
                .ok();
            println!("{} passed, {} failed", outcomes.len() - failed, failed);
            if failed > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
