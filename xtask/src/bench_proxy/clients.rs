//! The load generators: the built-in one (the `bench_proxy` example: closed loop, or open loop
//! at a fixed rate for latency), wrk (HTTP/1.1 and HTTPS) and h2load (h2c), and their output.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};

use super::procs::{output_within, pinned};
use super::{Bench, HOST, Protocol};

/// Slack for a load run past its nominal duration (warm-up, start-up, the last requests).
const SLACK: Duration = Duration::from_secs(30);

/// A run of the built-in generator; latencies in milliseconds.
pub(crate) struct Latency {
    /// Requests answered per second.
    pub(crate) rps: f64,
    /// Failed requests and connections.
    pub(crate) errors: u64,
    /// Median latency.
    pub(crate) p50: f64,
    /// 99th percentile.
    pub(crate) p99: f64,
    /// 99.9th percentile.
    pub(crate) p999: f64,
}

/// The built-in generator's `--protocol` value.
fn protocol_arg(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Http1 => "http1",
        Protocol::H2c => "h2c",
        Protocol::Https => "https",
    }
}

/// `bench_proxy <subcommand> --target addr --host HOST --protocol p [--ca ca.crt]`, pinned to
/// the client core.
fn generator_command(
    bench: &Bench,
    subcommand: &str,
    addr: SocketAddr,
    protocol: Protocol,
) -> anyhow::Result<std::process::Command> {
    let mut cmd = pinned(&bench.tool, bench.client_core);
    cmd.args([subcommand, "--target", &addr.to_string(), "--host", HOST])
        .args(["--protocol", protocol_arg(protocol), "--threads", "1"]);
    if protocol == Protocol::Https {
        let certs = bench.certs.as_ref().map_err(|r| anyhow::anyhow!("{r}"))?;
        cmd.arg("--ca").arg(&certs.ca);
    }
    Ok(cmd)
}

/// Runs the built-in generator: `connections` (× `streams` for h2c) for `seconds`, closed
/// loop, or open loop at `rate` requests/s.
pub(super) fn generator(
    bench: &Bench,
    addr: SocketAddr,
    protocol: Protocol,
    connections: usize,
    streams: usize,
    rate: Option<u64>,
) -> anyhow::Result<Latency> {
    let seconds = bench.opts.seconds;
    let mut cmd = generator_command(bench, "load", addr, protocol)?;
    cmd.args(["--connections", &connections.to_string()])
        .args(["--streams", &streams.to_string()])
        .args(["--seconds", &seconds.to_string()]);
    if let Some(rate) = rate {
        cmd.args(["--rate", &rate.to_string()]);
    }
    run_load(cmd, seconds)
}

/// Runs a `bench_proxy load` command of `seconds` (plus slack) and reads its figures.
pub(crate) fn run_load(cmd: std::process::Command, seconds: u64) -> anyhow::Result<Latency> {
    let out = output_within(
        cmd,
        Duration::from_secs(seconds) + SLACK,
        "the load generator",
    )?;
    if !out.status.success() {
        bail!(
            "load generator failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("load generator output")?;
    let ms = |k: &str| v[k].as_f64().unwrap_or(0.0) / 1000.0;
    Ok(Latency {
        rps: v["rps"].as_f64().unwrap_or(0.0),
        errors: v["errors"].as_u64().unwrap_or(0),
        p50: ms("p50_us"),
        p99: ms("p99_us"),
        p999: ms("p999_us"),
    })
}

/// Whether one request to `addr` over `protocol` is answered with a 2xx.
pub(super) fn probe(bench: &Bench, addr: SocketAddr, protocol: Protocol) -> bool {
    generator_command(bench, "probe", addr, protocol)
        .and_then(|cmd| output_within(cmd, Duration::from_secs(15), "the probe"))
        .is_ok_and(|out| out.status.success())
}

/// A closed-loop run of wrk or h2load.
#[derive(Debug, PartialEq)]
pub(super) struct Throughput {
    pub(super) rps: f64,
    /// Requests answered with a 2xx or 3xx.
    pub(super) requests: u64,
    pub(super) errors: u64,
}

/// `wrk -t1 -c<connections> -d<seconds>s` against `url` with `Host: bench.test`.
pub(super) fn wrk(
    wrk: &Path,
    bench: &Bench,
    url: &str,
    connections: usize,
) -> anyhow::Result<Throughput> {
    let seconds = bench.opts.seconds;
    let mut cmd = pinned(wrk, bench.client_core);
    cmd.args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s")])
        .args(["-H", &format!("Host: {HOST}")])
        .arg(url);
    let out = output_within(cmd, Duration::from_secs(seconds) + SLACK, "wrk")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    parse_wrk(&stdout).with_context(|| {
        format!(
            "unexpected wrk output: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Requests/s, requests and errors from wrk's report.
fn parse_wrk(out: &str) -> Option<Throughput> {
    let rps = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:")?.trim().parse().ok())?;
    let total: u64 = out
        .lines()
        .find_map(|l| l.trim().split_once(" requests in ")?.0.parse().ok())?;
    let bad: u64 = out
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Non-2xx or 3xx responses:")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0);
    // "Socket errors: connect 0, read 0, write 0, timeout 0"
    let socket: u64 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Socket errors:"))
        .map_or(0, |l| {
            l.split(',')
                .filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum()
        });
    Some(Throughput {
        rps,
        requests: total.saturating_sub(bad),
        errors: bad + socket,
    })
}

/// `h2load -t1 -c<connections> -m<streams> -D <seconds>` against `url` (h2c, prior
/// knowledge) with `:authority: bench.test`.
pub(super) fn h2load(
    h2load: &Path,
    bench: &Bench,
    url: &str,
    connections: usize,
    streams: usize,
) -> anyhow::Result<Throughput> {
    let seconds = bench.opts.seconds;
    let mut cmd = pinned(h2load, bench.client_core);
    cmd.args(["-t1", &format!("-c{connections}"), &format!("-m{streams}")])
        .args(["-D", &seconds.to_string()])
        .args(["-H", &format!(":authority: {HOST}")])
        .arg(url);
    let out = output_within(cmd, Duration::from_secs(seconds) + SLACK, "h2load")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    parse_h2load(&stdout).with_context(|| {
        format!(
            "unexpected h2load output: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Requests/s, requests and errors from h2load's report.
fn parse_h2load(out: &str) -> Option<Throughput> {
    // "finished in 2.00s, 1000.00 req/s, 79.17KB/s"
    let rps = out.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("finished in ")?;
        rest.split(", ")
            .find_map(|part| part.strip_suffix(" req/s")?.parse().ok())
    })?;
    // "requests: 2005 total, 2006 started, 2005 done, 2000 succeeded, 5 failed, 5 errored, 0 timeout"
    let counts = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("requests:"))?;
    let count = |what: &str| -> Option<u64> {
        counts.split(',').find_map(|part| {
            let (n, name) = part.trim().split_once(' ')?;
            (name == what).then(|| n.parse().ok())?
        })
    };
    // "errored" and "timeout" are subsets of "failed" (h2load's manual).
    Some(Throughput {
        rps,
        requests: count("succeeded")?,
        errors: count("failed")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_report() {
        let out = "Running 3s test @ https://127.0.0.1:4443/\n  1 threads and 32 connections\n\
                   \x20 Thread Stats   Avg      Stdev     Max   +/- Stdev\n\
                   \x20   Latency     1.10ms  200.00us   5.00ms   90.00%\n\
                   \x20 61234 requests in 3.00s, 6.00MB read\n\
                   \x20 Socket errors: connect 0, read 2, write 0, timeout 1\n\
                   \x20 Non-2xx or 3xx responses: 4\n\
                   Requests/sec:  20411.33\nTransfer/sec:      2.00MB\n";
        assert_eq!(
            parse_wrk(out),
            Some(Throughput {
                rps: 20411.33,
                requests: 61230,
                errors: 7
            })
        );
        assert_eq!(parse_wrk("unable to connect to 127.0.0.1:1\n"), None);
    }

    #[test]
    fn h2load_report() {
        let out = "starting benchmark...\nApplication protocol: h2c\n\n\
                   finished in 2.00s, 1000.00 req/s, 79.17KB/s\n\
                   requests: 2005 total, 2006 started, 2005 done, 2000 succeeded, 5 failed, 5 errored, 0 timeout\n\
                   status codes: 2000 2xx, 0 3xx, 0 4xx, 0 5xx\n";
        assert_eq!(
            parse_h2load(out),
            Some(Throughput {
                rps: 1000.0,
                requests: 2000,
                errors: 5
            })
        );
        assert_eq!(parse_h2load("No protocol negotiated. Aborted\n"), None);
    }
}
