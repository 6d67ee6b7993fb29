//! `http-add-on-sim`: the simulated cluster as a process.
//!
//! `http-add-on-sim up --kubeconfig PATH [--listen 127.0.0.1:PORT]` serves until SIGINT or
//! SIGTERM and prints one line with `ready` and the API URL once it serves.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use http_add_on_sim::apiserver::reviews::{AccessRule, AuthConfig, UserInfo};
use http_add_on_sim::{Sim, SimConfig};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Simulated Kubernetes cluster for the KEDA HTTP Add-on"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the simulated cluster until SIGINT/SIGTERM.
    Up {
        /// Where to write the kubeconfig (cluster, context and user `sim`).
        #[arg(long)]
        kubeconfig: PathBuf,
        /// Address of the API server.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Run only the API server (no workload controllers, no KEDA stand-in).
        #[arg(long)]
        no_controllers: bool,
        /// A static bearer token for TokenReview: `TOKEN=USER` or `TOKEN=USER,GROUP,GROUP`
        /// (repeatable; user names may contain colons).
        #[arg(long = "token", value_parser = parse_token)]
        tokens: Vec<(String, UserInfo)>,
        /// What SubjectAccessReviews deny, `USER:VERB:RESOURCE` (`*` wildcards; RESOURCE is
        /// `pods`, `apps/deployments` or a path like `/metrics`); the rest is allowed.
        #[arg(long)]
        deny: Vec<AccessRule>,
    },
}

fn parse_token(s: &str) -> Result<(String, UserInfo), String> {
    let (token, user) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not TOKEN=USER[,GROUP...]"))?;
    let mut parts = user.split(',');
    let name = parts.next().unwrap_or_default();
    let groups: Vec<&str> = parts.filter(|g| !g.is_empty()).collect();
    Ok((token.to_string(), UserInfo::new(name, &groups)))
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let Command::Up {
        kubeconfig,
        listen,
        no_controllers,
        tokens,
        deny,
    } = Cli::parse().command;
    let sim = Sim::start(SimConfig {
        listen,
        kubeconfig: Some(kubeconfig.clone()),
        controllers: !no_controllers,
        auth: AuthConfig {
            tokens: tokens.into_iter().collect(),
            deny,
        },
        ..SimConfig::default()
    })
    .await
    .context("starting the simulated cluster")?;
    println!(
        "http-add-on-sim ready: API server at {} (kubeconfig {})",
        sim.url(),
        kubeconfig.display()
    );
    wait_for_signal().await?;
    tracing::info!("shutting down");
    sim.shutdown().await;
    Ok(())
}
