//! `cargo xtask bench proxy`: the interceptor against nginx and HAProxy in front of the same
//! HTTP/1.1 backend, one worker each pinned to its own core, over three inbound protocols, in
//! one run, one section each:
//!
//! - **HTTP/1.1** (`http1`): also the backend reached directly and the interceptor with its
//!   default worker threads; wrk (closed loop) and the built-in generator (closed loop, then
//!   open loop at a fixed rate, corrected for coordinated omission).
//! - **h2c** (`h2c`, HTTP/2 cleartext with prior knowledge): h2load, `-c` connections with
//!   `-m` streams each, closed loop.
//! - Both sections also run the interceptor with tracing on and a 1% sampler (OTLP
//!   http/protobuf to the bench backend as the collector: it answers the exporter's POSTs 200),
//!   against the same interceptor without: the CPU per request of sampled-out requests.
//! - **HTTPS/1.1** (`https`, TLS terminated at the proxy): wrk over https; the certificate is
//!   made at bench time with the openssl CLI (a throw-away CA and a P-256 leaf for
//!   `bench.test`).
//!
//! Same work: nginx and HAProxy are configured to add the forwarding headers the interceptor
//! always adds (`X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host`) and to keep
//! backend connections alive, as the interceptor does.
//!
//! The headline figure of each row is the proxy's CPU time per request (user + system of the
//! process and its children, from /proc, over the wrk or h2load run): the proxies share the
//! machine with the load generator and the backend, which can cap requests/s before a proxy's
//! core is saturated. Beside it: requests/s, p50/p99/p99.9 at a fixed rate (open loop, the
//! built-in generator speaking the section's protocol), idle and peak RSS, and per section the
//! ratios interceptor/nginx and interceptor/haproxy of CPU per request and requests/s (plus
//! interceptor/direct for HTTP/1.1); a summary puts the sections side by side.
//!
//! nginx, HAProxy, wrk, h2load (`nghttp2-client`) and openssl are installed with apt-get when
//! missing (as root); a row whose proxy or load tool is still not there prints
//! `skipped: <reason>` and the rest runs. The load generator is the `bench_proxy` example of
//! the interceptor crate, which is also the backend. Every run and wait is bounded in time.
//! Cores: the proxy on core 0 (the interceptor's default-threads row is not pinned); the
//! backend and the load generators on core 1 (with three or more cores the load generators get
//! core 2).

mod clients;
mod procs;
mod report;
mod targets;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::bail;

use clients::Throughput;
pub(crate) use clients::{Latency, run_load};
pub(crate) use procs::{Proc, cpu_seconds, ensure_tool, free_port, pinned, rss_kb};
pub(crate) use targets::interceptor_command;
use targets::{Certs, NginxBuild, Running, Target};

const HOST: &str = "bench.test";

/// Requests in flight of the fixed-rate latency runs (connections, or h2c streams in all).
const LATENCY_SLOTS: usize = 32;

/// An inbound protocol: one section of the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Protocol {
    /// HTTP/1.1 over TCP.
    Http1,
    /// HTTP/2 over TCP with prior knowledge.
    H2c,
    /// HTTP/1.1 over TLS, terminated at the proxy.
    Https,
}

impl Protocol {
    fn title(self) -> &'static str {
        match self {
            Protocol::Http1 => "HTTP/1.1",
            Protocol::H2c => "h2c",
            Protocol::Https => "HTTPS/1.1",
        }
    }

    /// For file names.
    fn slug(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::H2c => "h2c",
            Protocol::Https => "https",
        }
    }

    /// The rows of the section.
    fn targets(self) -> &'static [Target] {
        match self {
            Protocol::Http1 => &[
                Target::Direct,
                Target::InterceptorOneThread,
                Target::InterceptorTraced,
                Target::InterceptorDefault,
                Target::Nginx,
                Target::Haproxy,
            ],
            Protocol::H2c => &[
                Target::InterceptorOneThread,
                Target::InterceptorTraced,
                Target::Nginx,
                Target::Haproxy,
            ],
            Protocol::Https => &[Target::InterceptorOneThread, Target::Nginx, Target::Haproxy],
        }
    }
}

/// The command line of `cargo xtask bench proxy`.
pub(crate) struct Options {
    /// Seconds per measurement.
    pub(crate) seconds: u64,
    /// Requests/s of the latency runs.
    pub(crate) rate: u64,
    /// Connections of wrk and of the built-in generator's closed loop (HTTP/1.1, HTTPS).
    pub(crate) connections: usize,
    /// h2load's connections (h2c).
    pub(crate) h2_connections: usize,
    /// h2load's concurrent streams per connection (h2c).
    pub(crate) h2_streams: usize,
    /// The sections to run, in this order.
    pub(crate) protocols: Vec<Protocol>,
}

/// Everything a measurement needs: paths, cores, the backend and the tools (`Err` = why a tool
/// is missing).
pub(super) struct Bench {
    opts: Options,
    /// The `bench_proxy` example (backend, set-up, load generator).
    tool: PathBuf,
    release: PathBuf,
    dir: PathBuf,
    kubeconfig: PathBuf,
    backend: SocketAddr,
    proxy_core: Option<u32>,
    client_core: Option<u32>,
    certs: Result<Certs, String>,
    nginx: Result<(PathBuf, NginxBuild), String>,
    haproxy: Result<PathBuf, String>,
    wrk: Result<PathBuf, String>,
    h2load: Result<PathBuf, String>,
}

/// The figures of one row.
pub(super) struct Figures {
    /// Requests/s of wrk or h2load.
    tool_rps: Option<f64>,
    /// Requests/s of the built-in generator's closed loop (HTTP/1.1).
    gen_rps: Option<f64>,
    /// The proxy's CPU time per request during the wrk or h2load run, in microseconds.
    cpu_us: Option<f64>,
    /// The latency run at a fixed rate.
    fixed: Latency,
    idle_kb: u64,
    peak_kb: u64,
    /// Failed requests of all runs of the row.
    errors: u64,
}

pub(super) struct Row {
    target: Target,
    /// `Err` = "skipped: …" or "failed: …".
    result: Result<Figures, String>,
}

pub(super) struct Section {
    protocol: Protocol,
    rows: Vec<Row>,
}

/// Runs the comparison.
pub(crate) fn run(mut opts: Options) -> anyhow::Result<()> {
    if opts.seconds == 0 || opts.connections == 0 || opts.h2_connections == 0 {
        bail!("--seconds, --connections and --h2-connections must be at least 1");
    }
    let mut seen = Vec::new();
    opts.protocols.retain(|p| {
        let new = !seen.contains(p);
        seen.push(*p);
        new
    });
    let release = build_release(&[])?;
    let tool = release.join("examples/bench_proxy");
    let dir = crate::workspace_root().join("target/bench-proxy");
    std::fs::create_dir_all(&dir)?;
    let Cores {
        proxy: proxy_core,
        backend: backend_core,
        client: client_core,
    } = Cores::of_machine();
    let (backend_proc, backend) = start_backend(&tool, backend_core)?;
    let kubeconfig = dir.join("kubeconfig");
    let sim = start_sim(&release, &kubeconfig)?;
    // `appProtocol: http`: requests from the interceptor's TLS listener reach the plain
    // backend in plain text, as nginx's and HAProxy's do (TLS terminated at the proxy).
    setup_route(
        &tool,
        &kubeconfig,
        backend,
        HOST,
        &["--app-protocol", "http"],
    )?;

    let wants = |p: Protocol| opts.protocols.contains(&p);
    fn not_needed<T>() -> Result<T, String> {
        Err("not needed".to_owned())
    }
    let wrk = if wants(Protocol::Http1) || wants(Protocol::Https) {
        ensure_tool("wrk", "wrk")
    } else {
        not_needed()
    };
    let h2load = if wants(Protocol::H2c) {
        ensure_tool("h2load", "nghttp2-client")
    } else {
        not_needed()
    };
    let certs = if wants(Protocol::Https) {
        ensure_tool("openssl", "openssl").and_then(|openssl| {
            targets::make_certs(&openssl, &dir.join("tls")).map_err(|e| format!("{e:#}"))
        })
    } else {
        not_needed()
    };
    let nginx = ensure_tool("nginx", "nginx-light").map(|path| {
        let build = targets::nginx_build(&path);
        (path, build)
    });
    let haproxy = ensure_tool("haproxy", "haproxy");
    let bench = Bench {
        opts,
        tool,
        release,
        dir,
        kubeconfig,
        backend,
        proxy_core,
        client_core,
        certs,
        nginx,
        haproxy,
        wrk,
        h2load,
    };

    let sections: Vec<Section> = bench
        .opts
        .protocols
        .iter()
        .map(|&protocol| run_section(&bench, protocol))
        .collect();
    drop(sim);
    drop(backend_proc);
    report::print(&bench, &sections);
    Ok(())
}

/// Builds, in release, the interceptor, the sim and the `bench_proxy` example, plus the
/// interceptor crate's `examples`; returns `target/release`.
pub(crate) fn build_release(examples: &[&str]) -> anyhow::Result<PathBuf> {
    // One invocation: built separately, the two packages unify their dependencies' features
    // differently and rustls, kube and their dependents compile twice.
    let mut args = vec![
        "build",
        "--release",
        "-p",
        "http-add-on-interceptor",
        "-p",
        "http-add-on-sim",
        "--bin",
        "interceptor",
        "--bin",
        "http-add-on-sim",
        "--example",
        "bench_proxy",
    ];
    for example in examples {
        args.extend(["--example", example]);
    }
    crate::cargo(&args)?;
    Ok(crate::workspace_root().join("target/release"))
}

/// Where the processes of a bench run: the proxy on core 0; the backend and the load
/// generators on core 1 (with three or more cores the load generators get core 2); `None` =
/// not pinned (one core).
pub(crate) struct Cores {
    /// The proxy under test.
    pub(crate) proxy: Option<u32>,
    /// The backend.
    pub(crate) backend: Option<u32>,
    /// The load generators.
    pub(crate) client: Option<u32>,
}

impl Cores {
    /// The split for this machine's cores.
    pub(crate) fn of_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (proxy, backend, client) = match cores {
            0 | 1 => (None, None, None),
            2 => (Some(0), Some(1), Some(1)),
            _ => (Some(0), Some(1), Some(2)),
        };
        Self {
            proxy,
            backend,
            client,
        }
    }
}

/// Starts the `bench_proxy` example's HTTP/1.1 backend on loopback; returns it and its address.
pub(crate) fn start_backend(tool: &Path, core: Option<u32>) -> anyhow::Result<(Proc, SocketAddr)> {
    let mut cmd = pinned(tool, core);
    cmd.args(["backend", "--listen", "127.0.0.1:0", "--threads", "1"])
        .stdout(Stdio::piped());
    let mut backend = Proc::spawn("backend", cmd)?;
    let addr = backend
        .wait_line("listening ", Duration::from_secs(10))?
        .trim_start_matches("listening ")
        .parse()?;
    Ok((backend, addr))
}

/// Starts the simulated API server (no controllers) on loopback, its kubeconfig written to
/// `kubeconfig`, and waits until it serves.
pub(crate) fn start_sim(release: &Path, kubeconfig: &Path) -> anyhow::Result<Proc> {
    let mut cmd = Command::new(release.join("http-add-on-sim"));
    cmd.args([
        "up",
        "--no-controllers",
        "--listen",
        "127.0.0.1:0",
        "--kubeconfig",
    ])
    .arg(kubeconfig)
    .stdout(Stdio::piped());
    let mut sim = Proc::spawn("http-add-on-sim", cmd)?;
    sim.wait_line("http-add-on-sim ready", Duration::from_secs(30))?;
    Ok(sim)
}

/// `bench_proxy setup`: the CRDs, and a route for `host` to `backend` (a Service, its
/// EndpointSlice and an HTTPScaledObject), with `extra` arguments (`--name`, `--not-ready`,
/// `--app-protocol`).
pub(crate) fn setup_route(
    tool: &Path,
    kubeconfig: &Path,
    backend: SocketAddr,
    host: &str,
    extra: &[&str],
) -> anyhow::Result<()> {
    let mut setup = Command::new(tool);
    setup
        .args(["setup", "--kubeconfig"])
        .arg(kubeconfig)
        .args(["--backend", &backend.to_string(), "--host", host])
        .args(extra);
    let out = procs::output_within(setup, Duration::from_secs(60), "the cluster set-up")?;
    if !out.status.success() {
        bail!(
            "setting up the simulated cluster failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The load tool a section cannot do without; `Err` = why it is missing.
fn section_tool(bench: &Bench, protocol: Protocol) -> Result<(), String> {
    let need = |name: &str, tool: &Result<PathBuf, String>| {
        tool.as_ref()
            .map(|_| ())
            .map_err(|reason| format!("{name}: {reason}"))
    };
    match protocol {
        // Without wrk the built-in generator's figures remain.
        Protocol::Http1 => Ok(()),
        Protocol::H2c => need("h2load", &bench.h2load),
        Protocol::Https => need("wrk", &bench.wrk),
    }
}

fn run_section(bench: &Bench, protocol: Protocol) -> Section {
    let rows = protocol
        .targets()
        .iter()
        .map(|&target| {
            let result = section_tool(bench, protocol)
                .and_then(|()| targets::available(bench, target, protocol))
                .map_err(|reason| format!("skipped: {reason}"))
                .and_then(|()| {
                    eprintln!("measuring {} over {}", target.name(), protocol.title());
                    targets::start(bench, target, protocol)
                        .and_then(|running| measure(bench, protocol, &running))
                        .map_err(|e| format!("failed: {e:#}"))
                });
            Row { target, result }
        })
        .collect();
    Section { protocol, rows }
}

/// Runs `tool` and divides the CPU time `pid` used meanwhile by the requests it completed.
fn with_cpu(
    pid: Option<u32>,
    tool: impl FnOnce() -> anyhow::Result<Throughput>,
) -> anyhow::Result<(Throughput, Option<f64>)> {
    let before = pid.map(cpu_seconds);
    let throughput = tool()?;
    let cpu_us = match (pid, before) {
        (Some(pid), Some(before)) if throughput.requests > 0 => {
            Some((cpu_seconds(pid) - before) * 1e6 / throughput.requests as f64)
        }
        _ => None,
    };
    Ok((throughput, cpu_us))
}

fn measure(bench: &Bench, protocol: Protocol, running: &Running) -> anyhow::Result<Figures> {
    let opts = &bench.opts;
    let (addr, pid) = (running.addr, running.pid());
    let idle_kb = pid.map_or(0, |p| rss_kb(p, "VmRSS:"));
    let rate = Some(opts.rate);
    let (gen_rps, throughput, cpu_us, fixed, mut errors) = match protocol {
        Protocol::Http1 => {
            // Also the warm-up: connections opened, the proxy's upstream pool filled.
            let closed = clients::generator(bench, addr, protocol, opts.connections, 1, None)?;
            let wrk = match &bench.wrk {
                Ok(wrk) => Some(with_cpu(pid, || {
                    clients::wrk(wrk, bench, &format!("http://{addr}/"), opts.connections)
                })?),
                Err(_) => None,
            };
            let (throughput, cpu_us) = wrk.unzip();
            let conns = opts.connections.min(LATENCY_SLOTS);
            let fixed = clients::generator(bench, addr, protocol, conns, 1, rate)?;
            (
                Some(closed.rps),
                throughput,
                cpu_us.flatten(),
                fixed,
                closed.errors,
            )
        }
        Protocol::H2c => {
            let h2load = bench.h2load.as_ref().map_err(|r| anyhow::anyhow!("{r}"))?;
            let conns = opts.h2_connections;
            let streams = LATENCY_SLOTS.div_ceil(conns);
            let fixed = clients::generator(bench, addr, protocol, conns, streams, rate)?;
            let (throughput, cpu_us) = with_cpu(pid, || {
                clients::h2load(
                    h2load,
                    bench,
                    &format!("http://{addr}/"),
                    conns,
                    opts.h2_streams,
                )
            })?;
            (None, Some(throughput), cpu_us, fixed, 0)
        }
        Protocol::Https => {
            let wrk = bench.wrk.as_ref().map_err(|r| anyhow::anyhow!("{r}"))?;
            let conns = opts.connections.min(LATENCY_SLOTS);
            let fixed = clients::generator(bench, addr, protocol, conns, 1, rate)?;
            let (throughput, cpu_us) = with_cpu(pid, || {
                clients::wrk(wrk, bench, &format!("https://{addr}/"), opts.connections)
            })?;
            (None, Some(throughput), cpu_us, fixed, 0)
        }
    };
    errors += fixed.errors + throughput.as_ref().map_or(0, |t| t.errors);
    Ok(Figures {
        tool_rps: throughput.map(|t| t.rps),
        gen_rps,
        cpu_us,
        fixed,
        idle_kb,
        peak_kb: pid.map_or(0, |p| rss_kb(p, "VmHWM:")),
        errors,
    })
}
