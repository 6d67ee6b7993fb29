//! `cargo xtask bench proxy`: the same backend reached directly, through the interceptor (one
//! worker thread, and its default), through nginx and through HAProxy (one worker each, upstream
//! keep-alive). Prints requests/s (closed loop), p50/p99/p99.9 latency at a fixed rate below
//! saturation (open loop, corrected for coordinated omission), idle and peak RSS, and the ratios
//! interceptor/direct and interceptor/nginx.
//!
//! nginx, HAProxy and wrk are installed with apt-get when missing (as root); a proxy that still
//! is not there is skipped with the reason. The load generator is the `bench_proxy` example of
//! the interceptor crate; wrk, when present, adds a cross-check of the requests/s. On a machine
//! with two or more cores the proxies run on core 0 and the backend and load generator on core 1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

const HOST: &str = "bench.test";

/// A child process killed (by its own pid) when dropped.
struct Proc {
    name: String,
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM first so that a master process (nginx) stops its workers too.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command) -> anyhow::Result<Self> {
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({cmd:?})"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a stdout line starting with `prefix` and returns it; other lines are echoed.
    fn wait_line(&mut self, prefix: &str, timeout: Duration) -> anyhow::Result<String> {
        let stdout = self.child.stdout.take().context("stdout not piped")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return Ok(line),
                Ok(_) => {}
                Err(_) => bail!("{} did not print {prefix:?} within {timeout:?}", self.name),
            }
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(root())
        .status()
        .with_context(|| format!("could not run {cargo}"))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The tool, installing `package` with apt-get when missing; `Err` is the reason it is absent.
fn ensure_tool(tool: &str, package: &str) -> Result<PathBuf, String> {
    if let Some(path) = which(tool) {
        return Ok(path);
    }
    if which("apt-get").is_none() {
        return Err(format!(
            "{tool} is not installed and apt-get is not available"
        ));
    }
    if !is_root() {
        return Err(format!(
            "{tool} is not installed and installing it needs root"
        ));
    }
    eprintln!("installing {package} with apt-get");
    let quiet = || {
        let mut c = Command::new("apt-get");
        c.env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null());
        c
    };
    let _ = quiet().args(["update", "-qq"]).status();
    let ok = quiet()
        .args(["install", "-y", "-qq", "--no-install-recommends", package])
        .status()
        .is_ok_and(|s| s.success());
    match which(tool) {
        Some(path) => Ok(path),
        None if ok => Err(format!("{package} installed but {tool} is not on PATH")),
        None => Err(format!("apt-get install {package} failed")),
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Status code of `GET path` with `Host: host`, on a fresh connection.
fn get_status(addr: SocketAddr, host: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

fn wait_status(
    addr: SocketAddr,
    host: &str,
    path: &str,
    want: u16,
    what: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if get_status(addr, host, path) == Some(want) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} did not answer {want} on {addr}{path}")
}

/// `prefix` the command with `taskset -c <core>` when pinning is possible.
fn pinned(program: &Path, core: Option<u32>) -> Command {
    match (core, which("taskset")) {
        (Some(core), Some(taskset)) => {
            let mut c = Command::new(taskset);
            c.arg("-c").arg(core.to_string()).arg(program);
            c
        }
        _ => Command::new(program),
    }
}

/// `pid` and its children (nginx and HAProxy serve from worker processes).
fn family(pid: u32) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let after = s.rsplit_once(')')?.1;
                    after.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect();
    pids.push(pid);
    pids
}

/// CPU time (user + system) used so far by `pid` and its children, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let ticks_per_second = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(100.0);
    let ticks: u64 = family(pid)
        .into_iter()
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            // After the command: state is field 3, utime 14 and stime 15 (1-based, man proc).
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            Some(utime + stime)
        })
        .sum();
    ticks as f64 / ticks_per_second
}

/// Sum of `field` (kB) of `pid` and its children, from /proc.
fn rss_kb(pid: u32, field: &str) -> u64 {
    let read = |pid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with(field))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    };
    family(pid).into_iter().map(read).sum::<u64>()
}

struct LoadResult {
    rps: f64,
    errors: u64,
    p50: f64,
    p99: f64,
    p999: f64,
}

fn load(
    tool: &Path,
    core: Option<u32>,
    addr: SocketAddr,
    connections: usize,
    seconds: u64,
    rate: Option<u64>,
) -> anyhow::Result<LoadResult> {
    let mut cmd = pinned(tool, core);
    cmd.args(["load", "--target", &addr.to_string(), "--host", HOST])
        .args(["--connections", &connections.to_string()])
        .args(["--seconds", &seconds.to_string()])
        .args(["--threads", "1"]);
    if let Some(rate) = rate {
        cmd.args(["--rate", &rate.to_string()]);
    }
    let out = cmd.output().context("running the load generator")?;
    if !out.status.success() {
        bail!(
            "load generator failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("load generator output")?;
    let ms = |k: &str| v[k].as_f64().unwrap_or(0.0) / 1000.0;
    Ok(LoadResult {
        rps: v["rps"].as_f64().unwrap_or(0.0),
        errors: v["errors"].as_u64().unwrap_or(0),
        p50: ms("p50_us"),
        p99: ms("p99_us"),
        p999: ms("p999_us"),
    })
}

fn wrk_rps(
    wrk: &Path,
    core: Option<u32>,
    addr: SocketAddr,
    connections: usize,
    seconds: u64,
) -> Option<f64> {
    let out = pinned(wrk, core)
        .args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s")])
        .args(["-H", &format!("Host: {HOST}")])
        .arg(format!("http://{addr}/"))
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:")?.trim().parse().ok())
}

struct Row {
    name: String,
    rps: f64,
    wrk: Option<f64>,
    fixed: LoadResult,
    idle_kb: u64,
    peak_kb: u64,
    /// CPU time of the proxy per request during the wrk run, in microseconds.
    cpu_us: Option<f64>,
}

/// Runs the comparison: `seconds` per measurement, `rate` requests/s for the latency run,
/// `connections` keep-alive connections.
pub(crate) fn run(seconds: u64, rate: u64, connections: usize) -> anyhow::Result<()> {
    cargo(&[
        "build",
        "--release",
        "-p",
        "http-add-on-interceptor",
        "--bin",
        "interceptor",
        "--example",
        "bench_proxy",
    ])?;
    cargo(&[
        "build",
        "--release",
        "-p",
        "http-add-on-sim",
        "--bin",
        "http-add-on-sim",
    ])?;
    let release = root().join("target/release");
    let tool = release.join("examples/bench_proxy");
    let dir = root().join("target/bench-proxy");
    std::fs::create_dir_all(&dir)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (proxy_core, client_core) = if cores >= 2 {
        (Some(0), Some(1))
    } else {
        (None, None)
    };

    let mut backend_cmd = pinned(&tool, client_core);
    backend_cmd
        .args(["backend", "--listen", "127.0.0.1:0", "--threads", "1"])
        .stdout(Stdio::piped());
    let mut backend = Proc::spawn("backend", backend_cmd)?;
    let backend_addr: SocketAddr = backend
        .wait_line("listening ", Duration::from_secs(10))?
        .trim_start_matches("listening ")
        .parse()?;

    let kubeconfig = dir.join("kubeconfig");
    let mut sim_cmd = Command::new(release.join("http-add-on-sim"));
    sim_cmd
        .args([
            "up",
            "--no-controllers",
            "--listen",
            "127.0.0.1:0",
            "--kubeconfig",
        ])
        .arg(&kubeconfig)
        .stdout(Stdio::piped());
    let mut sim = Proc::spawn("http-add-on-sim", sim_cmd)?;
    sim.wait_line("http-add-on-sim ready", Duration::from_secs(30))?;
    let status = Command::new(&tool)
        .args(["setup", "--kubeconfig"])
        .arg(&kubeconfig)
        .args(["--backend", &backend_addr.to_string(), "--host", HOST])
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("setting up the simulated cluster failed");
    }

    let wrk = match ensure_tool("wrk", "wrk") {
        Ok(p) => Some(p),
        Err(reason) => {
            println!("wrk cross-check skipped: {reason}");
            None
        }
    };
    let nginx = ensure_tool("nginx", "nginx-light");
    let haproxy = ensure_tool("haproxy", "haproxy");

    let mut rows = Vec::new();
    let mut measure = |name: &str, addr: SocketAddr, pid: Option<u32>| -> anyhow::Result<()> {
        eprintln!("measuring {name} at {addr}");
        let idle_kb = pid.map_or(0, |p| rss_kb(p, "VmRSS:"));
        let closed = load(&tool, client_core, addr, connections, seconds, None)?;
        let cpu_before = pid.map(cpu_seconds);
        let wrk = wrk
            .as_deref()
            .and_then(|w| wrk_rps(w, client_core, addr, connections, seconds));
        let cpu_us = match (pid, cpu_before, wrk) {
            (Some(pid), Some(before), Some(rps)) if rps > 0.0 => {
                Some((cpu_seconds(pid) - before) * 1e6 / (rps * seconds as f64))
            }
            _ => None,
        };
        let fixed = load(
            &tool,
            client_core,
            addr,
            connections.min(32),
            seconds,
            Some(rate),
        )?;
        let peak_kb = pid.map_or(0, |p| rss_kb(p, "VmHWM:"));
        if closed.errors + fixed.errors > 0 {
            println!("{name}: {} errors", closed.errors + fixed.errors);
        }
        rows.push(Row {
            name: name.to_owned(),
            rps: closed.rps,
            wrk,
            fixed,
            idle_kb,
            peak_kb,
            cpu_us,
        });
        Ok(())
    };

    measure("direct", backend_addr, None)?;

    for (name, threads) in [
        ("interceptor (1 thread)", Some("1")),
        ("interceptor (default)", None),
    ] {
        let (proxy, admin, prom) = (free_port()?, free_port()?, free_port()?);
        let mut cmd = pinned(
            &release.join("interceptor"),
            if threads.is_some() { proxy_core } else { None },
        );
        cmd.env("KUBECONFIG", &kubeconfig)
            .env("KEDA_HTTP_PROXY_PORT", proxy.to_string())
            .env("KEDA_HTTP_ADMIN_PORT", admin.to_string())
            .env("OTEL_PROM_EXPORTER_PORT", prom.to_string())
            .env("KEDA_HTTP_SHUTDOWN_DELAY", "0s")
            .env("RUST_LOG", "warn")
            .env_remove("TOKIO_WORKER_THREADS")
            .stdout(Stdio::null());
        if let Some(t) = threads {
            cmd.env("TOKIO_WORKER_THREADS", t);
        }
        let p = Proc::spawn(name, cmd)?;
        let proxy_addr = SocketAddr::from(([127, 0, 0, 1], proxy));
        wait_status(
            SocketAddr::from(([127, 0, 0, 1], admin)),
            "admin",
            "/readyz",
            200,
            name,
        )?;
        wait_status(proxy_addr, HOST, "/", 200, name)?;
        measure(name, proxy_addr, Some(p.pid()))?;
    }

    let nginx_result = match &nginx {
        Ok(nginx) => (|| -> anyhow::Result<()> {
            let port = free_port()?;
            let ndir = dir.join("nginx");
            std::fs::create_dir_all(ndir.join("logs"))?;
            let conf = ndir.join("nginx.conf");
            std::fs::write(
                &conf,
                format!(
                    "worker_processes 1;\ndaemon off;\npid {pid};\nerror_log stderr warn;\n\
                     events {{ worker_connections 8192; }}\n\
                     http {{\n  access_log off;\n  keepalive_requests 10000000;\n  client_body_temp_path {d}/cbt; proxy_temp_path {d}/pt;\n  fastcgi_temp_path {d}/ft; uwsgi_temp_path {d}/ut; scgi_temp_path {d}/st;\n\
                     \x20 upstream be {{ server {backend_addr}; keepalive 128; keepalive_requests 10000000; }}\n\
                     \x20 server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_set_header Host $host; }} }}\n}}\n",
                    pid = ndir.join("nginx.pid").display(),
                    d = ndir.display(),
                ),
            )?;
            let mut cmd = pinned(nginx, proxy_core);
            cmd.arg("-p")
                .arg(&ndir)
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null());
            let p = Proc::spawn("nginx", cmd)?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            wait_status(addr, HOST, "/", 200, "nginx")?;
            measure("nginx (1 worker)", addr, Some(p.pid()))
        })(),
        Err(reason) => {
            println!("nginx skipped: {reason}");
            Ok(())
        }
    };
    if let Err(error) = nginx_result {
        println!("nginx failed: {error:#}");
    }

    let haproxy_result = match &haproxy {
        Ok(haproxy) => (|| -> anyhow::Result<()> {
            let port = free_port()?;
            let conf = dir.join("haproxy.cfg");
            std::fs::write(
                &conf,
                format!(
                    "global\n  nbthread 1\n  maxconn 4096\n\
                     defaults\n  mode http\n  option http-keep-alive\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n  http-reuse always\n\
                     frontend fe\n  bind 127.0.0.1:{port}\n  default_backend be\n\
                     backend be\n  server s1 {backend_addr}\n"
                ),
            )?;
            let mut cmd = pinned(haproxy, proxy_core);
            cmd.arg("-db").arg("-f").arg(&conf).stdout(Stdio::null());
            let p = Proc::spawn("haproxy", cmd)?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            wait_status(addr, HOST, "/", 200, "haproxy")?;
            measure("haproxy (1 thread)", addr, Some(p.pid()))
        })(),
        Err(reason) => {
            println!("haproxy skipped: {reason}");
            Ok(())
        }
    };
    if let Err(error) = haproxy_result {
        println!("haproxy failed: {error:#}");
    }
    drop(sim);
    drop(backend);

    println!();
    println!(
        "{} keep-alive connections, {seconds}s per run; latency at {rate} req/s (open loop, {} connections)",
        connections,
        connections.min(32)
    );
    println!(
        "{:<24} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}",
        "target",
        "wrk req/s",
        "gen req/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "idle MB",
        "peak MB",
        "CPU us/req"
    );
    for r in &rows {
        let mb = |kb: u64| {
            if kb == 0 {
                "-".to_owned()
            } else {
                format!("{:.1}", kb as f64 / 1024.0)
            }
        };
        println!(
            "{:<24} {:>10} {:>10.0} {:>9.3} {:>9.3} {:>9.3} {:>9} {:>9} {:>10}",
            r.name,
            r.wrk.map_or("-".to_owned(), |w| format!("{w:.0}")),
            r.rps,
            r.fixed.p50,
            r.fixed.p99,
            r.fixed.p999,
            mb(r.idle_kb),
            mb(r.peak_kb),
            r.cpu_us.map_or("-".to_owned(), |c| format!("{c:.1}")),
        );
    }
    // Ratios use wrk's requests/s when every row has it (it loads harder than the built-in
    // generator), else the built-in generator's.
    let use_wrk = rows.iter().all(|r| r.wrk.is_some());
    for r in &mut rows {
        if use_wrk {
            r.rps = r.wrk.unwrap_or(r.rps);
        }
    }
    println!(
        "ratios from {} requests/s",
        if use_wrk {
            "wrk"
        } else {
            "the built-in generator's"
        }
    );
    let find = |prefix: &str| rows.iter().find(|r| r.name.starts_with(prefix));
    if let (Some(i), Some(d)) = (find("interceptor (1"), find("direct")) {
        println!(
            "interceptor/direct: {:.2}x req/s; added p99 {:.3} ms",
            i.rps / d.rps,
            i.fixed.p99 - d.fixed.p99
        );
    }
    // The proxies share the machine with the load generator and the backend, which can cap
    // requests/s before a proxy's core is saturated: CPU time per request compares the proxies'
    // own cost (below 1 = the interceptor needs less CPU per request).
    let cpu_ratio = |i: &Row, other: &Row| match (i.cpu_us, other.cpu_us) {
        (Some(a), Some(b)) if b > 0.0 => format!("; CPU per request {:.2}x", a / b),
        _ => String::new(),
    };
    if let (Some(i), Some(n)) = (find("interceptor (1"), find("nginx")) {
        println!(
            "interceptor/nginx: {:.2}x req/s{}",
            i.rps / n.rps,
            cpu_ratio(i, n)
        );
    }
    if let (Some(i), Some(h)) = (find("interceptor (1"), find("haproxy")) {
        println!(
            "interceptor/haproxy: {:.2}x req/s{}",
            i.rps / h.rps,
            cpu_ratio(i, h)
        );
    }
    Ok(())
}
