//! `cargo xtask`: project automation (codegen, tests, demo). One module per command.

mod bench_activation;
mod bench_cold_burst;
mod bench_proxy;
mod chart;
mod codegen;
mod conformance;
mod e2e;
mod images;
mod kind;
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
    /// Run kube-rs's own cluster tests (kube, kube-client, kube-runtime of Cargo.lock's version)
    /// against a fresh simulated cluster; fails when an applicable one fails.
    Conformance,
    /// Run the end-to-end scenarios (all, or those whose names contain a filter).
    E2e {
        /// Cluster to run on: `sim` (simulated, local processes) or `kind` (needs docker, kind,
        /// helm and kubectl).
        #[arg(long, default_value = "sim")]
        cluster: String,
        /// Kubernetes version of a new kind cluster (e.g. `1.33.1`); kind's default otherwise.
        #[arg(long)]
        k8s_version: Option<String>,
        /// Keep the kind cluster at the end.
        #[arg(long)]
        keep: bool,
        /// Scenario name filters.
        filters: Vec<String>,
    },
    /// Checks of the Helm chart that need no helm.
    Chart {
        #[command(subcommand)]
        command: ChartCmd,
    },
    /// Build the component images and the e2e sample app image `e2e-echo` with docker buildx
    /// (from the root Dockerfile).
    Images {
        /// Image tag.
        #[arg(long, default_value = "dev")]
        tag: String,
        /// Target platforms, comma-separated (several need --push).
        #[arg(long, default_value = "linux/amd64")]
        platform: String,
        /// Push the images instead of loading them into the local docker.
        #[arg(long)]
        push: bool,
    },
    /// Benchmarks that print figures as ratios against a baseline measured in the same run.
    Bench {
        #[command(subcommand)]
        bench: Bench,
    },
    /// Run the whole system on the simulated cluster and watch an app scale 0 → N → 0.
    Demo {
        /// Leave it running at the end and print the kubeconfig path and the proxy URL.
        #[arg(long)]
        keep: bool,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Interceptor vs nginx vs HAProxy over HTTP/1.1, h2c and HTTPS/1.1: CPU per request, req/s,
    /// latency at a fixed rate, RSS.
    ///
    /// One section per protocol, each with the interceptor, nginx and HAProxy (one worker each,
    /// pinned to core 0) in front of the same HTTP/1.1 backend: HTTP/1.1 (wrk and the built-in
    /// generator; also the backend direct and the interceptor with its default threads), h2c
    /// with prior knowledge (h2load -c/-m) and HTTPS/1.1 with TLS terminated at the proxy (wrk
    /// over https, a certificate made with openssl at bench time). Headline: the proxy's CPU
    /// time per request (user + system from /proc) beside requests/s; p50/p99/p99.9 at
    /// --rate (open loop); ratios interceptor/nginx and interceptor/haproxy per section and a
    /// summary. nginx, HAProxy, wrk, h2load and openssl are installed with apt-get when missing
    /// (as root); rows whose tool cannot be had print "skipped: <reason>". Takes about 32 ×
    /// --seconds plus start-up, after a release build.
    Proxy {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Fixed request rate (requests/s) for the latency measurements, below saturation.
        #[arg(long, default_value_t = 2000)]
        rate: u64,
        /// Concurrent connections of wrk and the built-in generator (HTTP/1.1, HTTPS).
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// h2c: connections of h2load and of the latency run.
        #[arg(long, default_value_t = 8)]
        h2_connections: usize,
        /// h2c: concurrent streams per h2load connection (-m).
        #[arg(long, default_value_t = 16)]
        h2_streams: usize,
        /// Sections to run, comma-separated, in this order.
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "http1,h2c,https"
        )]
        protocols: Vec<bench_proxy::Protocol>,
    },
    /// Time from a cold request at the interceptor to KEDA's stream receiving `true`.
    Activation {
        /// Activations measured per design (at least 200 for a meaningful p99).
        #[arg(long, default_value_t = 200)]
        trials: usize,
    },
    /// A burst of held requests to one cold route while a warm route takes a fixed rate:
    /// interceptor RSS per held request, the warm route's p50/p99 before and during the burst,
    /// and the time from the endpoint turning ready to the last held request answered.
    ///
    /// The release interceptor with one worker thread, the simulated API server and the
    /// `bench_proxy` backend on loopback; the burst over h2c (200 streams per connection).
    /// Goals (issue #13): ≤ 4 KiB per held request, warm p99 within 1.2× of idle, all held
    /// requests answered within 100 ms of readiness. Takes about 2 × --seconds plus start-up,
    /// after a release build.
    ColdBurst {
        /// Requests held on the cold route.
        #[arg(long, default_value_t = 10_000)]
        requests: usize,
        /// Requests/s of the warm route (open loop).
        #[arg(long, default_value_t = 500)]
        rate: u64,
        /// Seconds of each warm-route measurement (idle, then during the burst).
        #[arg(long, default_value_t = 3)]
        seconds: u64,
    },
}

#[derive(Subcommand)]
enum ChartCmd {
    /// Values vs schema, generated CRDs, value references, least-privilege RBAC, documented values.
    Check,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Codegen { check } => codegen::run(check),
        Cmd::Test => test::run(),
        Cmd::Conformance => conformance::run(),
        Cmd::Bench {
            bench:
                Bench::Proxy {
                    seconds,
                    rate,
                    connections,
                    h2_connections,
                    h2_streams,
                    protocols,
                },
        } => bench_proxy::run(bench_proxy::Options {
            seconds,
            rate,
            connections,
            h2_connections,
            h2_streams,
            protocols,
        }),
        Cmd::Bench {
            bench: Bench::Activation { trials },
        } => bench_activation::run(trials),
        Cmd::Bench {
            bench:
                Bench::ColdBurst {
                    requests,
                    rate,
                    seconds,
                },
        } => bench_cold_burst::run(bench_cold_burst::Options {
            requests,
            rate,
            seconds,
        }),
        Cmd::E2e {
            cluster,
            k8s_version,
            keep,
            filters,
        } => match cluster.as_str() {
            "kind" => kind::run(k8s_version.as_deref(), keep, &filters),
            _ => e2e::run(&cluster, &filters),
        },
        Cmd::Chart {
            command: ChartCmd::Check,
        } => chart::check(),
        Cmd::Images {
            tag,
            platform,
            push,
        } => images::run(&tag, &platform, push),
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
/// A `cargo` command (the one running xtask) without the package variables `cargo run` set
/// for xtask: build scripts such as ring's rerun when `CARGO_PKG_NAME`, `CARGO_MANIFEST_DIR`, …
/// differ, so a nested cargo that inherited xtask's would rebuild ring, rustls, kube and their
/// dependents that `cargo xtask` itself just built.
pub(crate) fn cargo_command() -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let per_package = ["CARGO_PKG_", "CARGO_MANIFEST_"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
            || matches!(
                name,
                "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE"
            );
        if per_package {
            cmd.env_remove(name);
        }
    }
    cmd
}

pub(crate) fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("$ cargo {}", args.join(" "));
    let status = cargo_command()
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("could not run {cargo}"))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}
