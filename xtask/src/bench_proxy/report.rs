//! The printed report: a table per section with its ratios, then the sections side by side.

use super::targets::Target;
use super::{Bench, Figures, LATENCY_SLOTS, Protocol, Row, Section};

fn mb(kb: u64) -> String {
    if kb == 0 {
        "-".to_owned()
    } else {
        format!("{:.1}", kb as f64 / 1024.0)
    }
}

fn opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or("-".to_owned(), |v| format!("{v:.decimals$}"))
}

/// The closed-loop tool of a section and how it ran.
fn tool(bench: &Bench, protocol: Protocol) -> (&'static str, String) {
    let o = &bench.opts;
    match protocol {
        Protocol::Http1 => (
            "wrk",
            format!(
                "wrk -t1 -c{c} and the built-in generator ({c} connections), closed loop",
                c = o.connections
            ),
        ),
        Protocol::H2c => (
            "h2load",
            format!(
                "h2load -t1 -c{} -m{}, closed loop",
                o.h2_connections, o.h2_streams
            ),
        ),
        Protocol::Https => (
            "wrk",
            format!("wrk -t1 -c{} over https, closed loop", o.connections),
        ),
    }
}

/// Requests/s of a row for the ratios: the closed-loop tool's, else the built-in generator's.
fn rps(f: &Figures, use_tool: bool) -> Option<f64> {
    if use_tool { f.tool_rps } else { f.gen_rps }
}

fn figures(section: &Section, target: Target) -> Option<&Figures> {
    section
        .rows
        .iter()
        .find(|r| r.target == target)
        .and_then(|r| r.result.as_ref().ok())
}

/// Whether every measured row of the section has the closed-loop tool's requests/s.
fn uses_tool(section: &Section) -> bool {
    section
        .rows
        .iter()
        .filter_map(|r| r.result.as_ref().ok())
        .all(|f| f.tool_rps.is_some())
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn ratio_text(r: Option<f64>) -> String {
    r.map_or("-".to_owned(), |r| format!("{r:.2}x"))
}

/// Interceptor (1 thread) / `other`: (CPU per request, requests/s).
fn ratios(section: &Section, other: Target) -> (Option<f64>, Option<f64>) {
    let use_tool = uses_tool(section);
    match (
        figures(section, Target::InterceptorOneThread),
        figures(section, other),
    ) {
        (Some(i), Some(o)) => (
            ratio(i.cpu_us, o.cpu_us),
            ratio(rps(i, use_tool), rps(o, use_tool)),
        ),
        _ => (None, None),
    }
}

fn print_row(row: &Row) {
    let name = row.target.name();
    match &row.result {
        Ok(f) => println!(
            "{:<36} {:>10} {:>10} {:>10} {:>9.3} {:>9.3} {:>9.3} {:>8} {:>8}",
            name,
            opt(f.cpu_us, 1),
            opt(f.tool_rps, 0),
            opt(f.gen_rps, 0),
            f.fixed.p50,
            f.fixed.p99,
            f.fixed.p999,
            mb(f.idle_kb),
            mb(f.peak_kb),
        ),
        Err(reason) => println!("{name:<36} {reason}"),
    }
}

fn print_section(bench: &Bench, section: &Section) {
    let o = &bench.opts;
    let protocol = section.protocol;
    let (tool_name, how) = tool(bench, protocol);
    println!();
    println!("== {} ==", protocol.title());
    println!(
        "{how}, {}s per run; CPU per request over the {tool_name} run; latency at {} req/s \
         (open loop, built-in generator, {LATENCY_SLOTS} {})",
        o.seconds,
        o.rate,
        if protocol == Protocol::H2c {
            format!("streams on {} connections", o.h2_connections)
        } else {
            "connections".to_owned()
        },
    );
    println!(
        "{:<36} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "target",
        "CPU us/req",
        format!("{tool_name} req/s"),
        "gen req/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "idle MB",
        "peak MB",
    );
    for row in &section.rows {
        print_row(row);
    }
    for row in &section.rows {
        if let Ok(f) = &row.result
            && f.errors > 0
        {
            println!("{}: {} failed requests", row.target.name(), f.errors);
        }
    }
    let use_tool = uses_tool(section);
    println!(
        "ratios from {} requests/s (CPU per request: below 1 = the interceptor needs less)",
        if use_tool {
            tool_name
        } else {
            "the built-in generator's"
        }
    );
    if let (Some(i), Some(d)) = (
        figures(section, Target::InterceptorOneThread),
        figures(section, Target::Direct),
    ) {
        println!(
            "interceptor/direct: {} req/s; added p99 {:.3} ms",
            ratio_text(ratio(rps(i, use_tool), rps(d, use_tool))),
            i.fixed.p99 - d.fixed.p99
        );
    }
    if let (Some(t), Some(i)) = (
        figures(section, Target::InterceptorTraced),
        figures(section, Target::InterceptorOneThread),
    ) {
        let cpu = ratio(t.cpu_us, i.cpu_us);
        println!(
            "interceptor tracing on (sampler 1%)/off: CPU per request {} (goal <= 1.05x: {}), \
             req/s {}",
            ratio_text(cpu),
            match cpu {
                Some(r) if r <= 1.05 => "met",
                Some(_) => "missed",
                None => "-",
            },
            ratio_text(ratio(rps(t, use_tool), rps(i, use_tool)))
        );
    }
    for (other, label) in [(Target::Nginx, "nginx"), (Target::Haproxy, "haproxy")] {
        if figures(section, other).is_some() {
            let (cpu, req) = ratios(section, other);
            println!(
                "interceptor/{label}: CPU per request {}, req/s {}",
                ratio_text(cpu),
                ratio_text(req)
            );
        }
    }
}

/// Prints every section, then one line per section side by side.
pub(super) fn print(bench: &Bench, sections: &[Section]) {
    println!();
    println!(
        "interceptor vs nginx vs HAProxy, one worker each pinned to one core, same HTTP/1.1 backend"
    );
    for section in sections {
        print_section(bench, section);
    }
    println!();
    println!(
        "== summary: CPU us/req (req/s) of each proxy; interceptor/nginx and interceptor/haproxy =="
    );
    println!(
        "{:<10} {:>18} {:>18} {:>18} {:>13} {:>13} {:>13} {:>13}",
        "protocol",
        "interceptor",
        "nginx",
        "haproxy",
        "CPU/req i/n",
        "req/s i/n",
        "CPU/req i/h",
        "req/s i/h",
    );
    for section in sections {
        let use_tool = uses_tool(section);
        let cell = |target: Target| match figures(section, target) {
            Some(f) => format!("{} ({})", opt(f.cpu_us, 1), opt(rps(f, use_tool), 0)),
            None => "-".to_owned(),
        };
        let (cpu_n, rps_n) = ratios(section, Target::Nginx);
        let (cpu_h, rps_h) = ratios(section, Target::Haproxy);
        println!(
            "{:<10} {:>18} {:>18} {:>18} {:>13} {:>13} {:>13} {:>13}",
            section.protocol.title(),
            cell(Target::InterceptorOneThread),
            cell(Target::Nginx),
            cell(Target::Haproxy),
            ratio_text(cpu_n),
            ratio_text(rps_n),
            ratio_text(cpu_h),
            ratio_text(rps_h),
        );
    }
}
