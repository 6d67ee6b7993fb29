//! `cargo xtask bench cold-burst`: what holding costs. One cold route takes a burst of
//! `--requests` concurrent requests while a warm route takes a fixed rate, on the release
//! interceptor with one Tokio worker thread (`TOKIO_WORKER_THREADS=1`), pinned to core 0 like
//! `bench proxy`'s one-thread row.
//!
//! The pieces are `bench proxy`'s: the simulated API server (no controllers), the
//! `bench_proxy` example's backend, set-up and load generator (HTTP/1.1, open loop at
//! `--rate`, a few keep-alive connections), and the interceptor binary as a process configured
//! by its env vars. The burst is the `bench_cold_burst` example: h2c connections of 200 streams
//! each, held until `/queue` on the admin port counts them all; then it marks the cold route's
//! endpoint ready through the API and times the answers.
//!
//! Printed: the interceptor's RSS idle and with the burst held (VmRSS) and their difference per
//! held request; the warm route's p50/p99 before and during the burst, and their ratio; the
//! time from the endpoint turning ready to the first and the last held request answered; each
//! goal of issue #13 as met or missed (≤ 4 KiB per held request, warm p99 during ≤ 1.2× idle,
//! the last held request answered ≤ 100 ms after readiness). Every wait is bounded.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::bench_proxy::{self, Cores, Latency, Proc};

const WARM_HOST: &str = "warm.test";
const COLD_HOST: &str = "cold.test";
/// Keep-alive connections of the warm route's load.
const WARM_CONNECTIONS: usize = 4;
/// Longest wait for the burst tool's next report.
const REPORT_WAIT: Duration = Duration::from_secs(120);

/// The command line of `cargo xtask bench cold-burst`.
pub(crate) struct Options {
    /// Requests held on the cold route.
    pub(crate) requests: usize,
    /// Requests/s of the warm route.
    pub(crate) rate: u64,
    /// Seconds of each warm-route measurement.
    pub(crate) seconds: u64,
}

/// The goals of issue #13.
const GOAL_KIB_PER_HELD: f64 = 4.0;
const GOAL_WARM_P99_RATIO: f64 = 1.2;
const GOAL_RELEASE_MS: f64 = 100.0;

/// What the burst tool reports after the release.
struct Release {
    answered: u64,
    failed: u64,
    api_ms: f64,
    first_ms: Option<f64>,
    last_ms: Option<f64>,
    /// The interceptor's CPU time (user + system) from the release to the last answer.
    cpu_ms: f64,
}

/// Runs the bench and prints its table.
pub(crate) fn run(opts: Options) -> anyhow::Result<()> {
    if opts.requests == 0 || opts.rate == 0 || opts.seconds == 0 {
        bail!("--requests, --rate and --seconds must be at least 1");
    }
    check_open_files(opts.requests)?;
    let release = bench_proxy::build_release(&["bench_cold_burst"])?;
    let tool = release.join("examples/bench_proxy");
    let dir = crate::workspace_root().join("target/bench-cold-burst");
    std::fs::create_dir_all(&dir)?;
    let cores = Cores::of_machine();
    let (backend_proc, backend) = bench_proxy::start_backend(&tool, cores.backend)?;
    let kubeconfig = dir.join("kubeconfig");
    let sim = bench_proxy::start_sim(&release, &kubeconfig)?;
    bench_proxy::setup_route(&tool, &kubeconfig, backend, WARM_HOST, &["--name", "warm"])?;
    bench_proxy::setup_route(
        &tool,
        &kubeconfig,
        backend,
        COLD_HOST,
        &["--name", "cold", "--not-ready"],
    )?;

    let (proxy, admin) = (bench_proxy::free_port()?, bench_proxy::free_port()?);
    let mut cmd =
        bench_proxy::interceptor_command(&release, &kubeconfig, cores.proxy, proxy, admin)?;
    // The burst fills the route's pending places exactly, so their bookkeeping is measured.
    cmd.env("TOKIO_WORKER_THREADS", "1").env(
        "KEDA_HTTP_COLD_START_MAX_PENDING_REQUESTS",
        opts.requests.to_string(),
    );
    let mut interceptor = Proc::spawn("interceptor", cmd)?;
    let target = format!("127.0.0.1:{proxy}");

    let mut burst_cmd =
        bench_proxy::pinned(&release.join("examples/bench_cold_burst"), cores.client);
    burst_cmd
        .args([
            "--target",
            &target,
            "--admin",
            &format!("127.0.0.1:{admin}"),
        ])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--host", COLD_HOST, "--warm-host", WARM_HOST])
        .args(["--route", "default/cold", "--slice", "cold-1"])
        .args(["--requests", &opts.requests.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut burst = Proc::spawn("bench_cold_burst", burst_cmd)?;
    burst.wait_line("routes known", REPORT_WAIT)?;

    let warm = |what: &str| -> anyhow::Result<Latency> {
        eprintln!("measuring the warm route {what}");
        warm_load(&tool, cores.client, &target, &opts)
    };
    let idle = warm("idle")?;
    let rss_idle_kb = bench_proxy::rss_kb(interceptor.pid(), "VmRSS:");
    eprintln!("holding {} requests on the cold route", opts.requests);
    burst.send_line("burst")?;
    burst.wait_line("held ", REPORT_WAIT)?;
    let rss_held_kb = bench_proxy::rss_kb(interceptor.pid(), "VmRSS:");
    let during = warm("during the burst")?;
    if let Some(status) = interceptor.exited() {
        bail!("the interceptor exited during the burst ({status})");
    }
    eprintln!("marking the cold route's endpoint ready");
    let cpu_before = bench_proxy::cpu_seconds(interceptor.pid());
    burst.send_line("release")?;
    let mut released = parse_release(&burst.wait_line("{", REPORT_WAIT)?)?;
    released.cpu_ms = (bench_proxy::cpu_seconds(interceptor.pid()) - cpu_before) * 1e3;
    drop(burst);
    drop(interceptor);
    drop(sim);
    drop(backend_proc);

    print_report(&opts, rss_idle_kb, rss_held_kb, &idle, &during, &released);
    Ok(())
}

/// Fails early when the processes, which inherit this one's limit, could not open a descriptor
/// per released request (the interceptor's backend connections, the backend's accepted ones).
fn check_open_files(requests: usize) -> anyhow::Result<()> {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse::<usize>().ok());
    let needed = requests + 1024;
    match soft {
        Some(soft) if soft < needed => {
            bail!(
                "the open-files limit is {soft}; raise it to at least {needed} (ulimit -n {needed})"
            )
        }
        _ => Ok(()),
    }
}

/// `bench_proxy load` against the warm route: open loop at `--rate` for `--seconds`.
fn warm_load(
    tool: &Path,
    core: Option<u32>,
    target: &str,
    opts: &Options,
) -> anyhow::Result<Latency> {
    let mut cmd: Command = bench_proxy::pinned(tool, core);
    cmd.args(["load", "--target", target, "--host", WARM_HOST])
        .args(["--protocol", "http1", "--threads", "1"])
        .args(["--connections", &WARM_CONNECTIONS.to_string()])
        .args(["--seconds", &opts.seconds.to_string()])
        .args(["--rate", &opts.rate.to_string()]);
    bench_proxy::run_load(cmd, opts.seconds)
}

fn parse_release(line: &str) -> anyhow::Result<Release> {
    let v: serde_json::Value = serde_json::from_str(line).context("the burst tool's report")?;
    Ok(Release {
        answered: v["answered"].as_u64().unwrap_or(0),
        failed: v["failed"].as_u64().unwrap_or(0),
        api_ms: v["api_ms"].as_f64().unwrap_or(0.0),
        first_ms: v["first_ms"].as_f64(),
        last_ms: v["last_ms"].as_f64(),
        cpu_ms: 0.0,
    })
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "missed" }
}

fn print_report(
    opts: &Options,
    rss_idle_kb: u64,
    rss_held_kb: u64,
    idle: &Latency,
    during: &Latency,
    released: &Release,
) {
    let kib_per_held = rss_held_kb.saturating_sub(rss_idle_kb) as f64 / opts.requests as f64;
    let p99_ratio = if idle.p99 > 0.0 {
        during.p99 / idle.p99
    } else {
        f64::INFINITY
    };
    let all_answered = released.answered == opts.requests as u64;
    let release_met = all_answered && released.last_ms.is_some_and(|ms| ms <= GOAL_RELEASE_MS);
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1} ms"));
    println!();
    println!(
        "cold burst: {} requests held on one cold route (h2c, 200 streams per connection); \
         warm route at {} req/s over {WARM_CONNECTIONS} HTTP/1.1 connections, {} s per \
         measurement; interceptor with TOKIO_WORKER_THREADS=1",
        opts.requests, opts.rate, opts.seconds
    );
    println!();
    let rows: Vec<(String, String, String)> = vec![
        (
            "interceptor RSS idle / burst held".into(),
            format!(
                "{:.1} / {:.1} MiB",
                rss_idle_kb as f64 / 1024.0,
                rss_held_kb as f64 / 1024.0
            ),
            String::new(),
        ),
        (
            "RSS per held request".into(),
            format!("{kib_per_held:.2} KiB"),
            format!(
                "<= {GOAL_KIB_PER_HELD} KiB: {}",
                verdict(kib_per_held <= GOAL_KIB_PER_HELD)
            ),
        ),
        (
            "warm p50 idle / during".into(),
            format!("{:.3} / {:.3} ms", idle.p50, during.p50),
            String::new(),
        ),
        (
            "warm p99 idle / during".into(),
            format!("{:.3} / {:.3} ms", idle.p99, during.p99),
            String::new(),
        ),
        (
            "warm p99 during / idle".into(),
            format!("{p99_ratio:.2}x"),
            format!(
                "<= {GOAL_WARM_P99_RATIO}x: {}",
                verdict(p99_ratio <= GOAL_WARM_P99_RATIO)
            ),
        ),
        (
            "warm requests/s, errors idle / during".into(),
            format!(
                "{:.0}, {} / {:.0}, {}",
                idle.rps, idle.errors, during.rps, during.errors
            ),
            String::new(),
        ),
        (
            "ready -> first held answered".into(),
            ms(released.first_ms),
            String::new(),
        ),
        (
            "ready -> last held answered".into(),
            ms(released.last_ms),
            format!("<= {GOAL_RELEASE_MS} ms: {}", verdict(release_met)),
        ),
        (
            "held answered 2xx / failed".into(),
            format!("{} / {}", released.answered, released.failed),
            format!("all: {}", verdict(all_answered)),
        ),
        (
            "interceptor CPU for the release".into(),
            format!(
                "{:.0} ms ({:.1} us per held request)",
                released.cpu_ms,
                released.cpu_ms * 1e3 / opts.requests as f64
            ),
            String::new(),
        ),
        (
            "EndpointSlice replace (API round trip)".into(),
            format!("{:.1} ms", released.api_ms),
            String::new(),
        ),
    ];
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let value_width = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    println!("{:width$}  {:value_width$}  goal", "figure", "value");
    for (name, value, goal) in rows {
        println!("{name:width$}  {value:value_width$}  {goal}");
    }
    println!();
    println!(
        "\"ready\" counts from sending the EndpointSlice replace that marks the endpoint ready \
         (API write, watch event, release of every held request)."
    );
}
