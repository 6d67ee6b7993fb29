//! The process's own resource use, read from `/proc/self` on Linux: the `process_*` series that
//! upstream's Go Prometheus client exports by default ([`ProcessCollector`]), and the text of
//! the debug endpoint served at `PROFILING_BIND_ADDRESS` ([`debug_text`]).
//!
//! Times in `/proc/self/stat` are in USER_HZ ticks, which the kernel fixes at 100 for every
//! user-visible interface on the architectures we build for; Go's procfs package assumes the
//! same, so the figures match upstream's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::config::ConfigError;

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ).
const USER_HZ: f64 = 100.0;

/// One reading of the process's resource use; a figure is `None` when it cannot be read (not
/// Linux, or `/proc` not mounted).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time (`process_cpu_seconds_total`).
    pub cpu_seconds: Option<f64>,
    /// Resident set size (`process_resident_memory_bytes`).
    pub resident_memory_bytes: Option<f64>,
    /// Virtual memory size (`process_virtual_memory_bytes`).
    pub virtual_memory_bytes: Option<f64>,
    /// Address-space limit; unlimited is `u64::MAX`, as Go reports it
    /// (`process_virtual_memory_max_bytes`).
    pub virtual_memory_max_bytes: Option<f64>,
    /// Open file descriptors (`process_open_fds`).
    pub open_fds: Option<f64>,
    /// The soft limit on open file descriptors (`process_max_fds`).
    pub max_fds: Option<f64>,
    /// Start time since the Unix epoch, in seconds (`process_start_time_seconds`).
    pub start_time_seconds: Option<f64>,
    /// Bytes received over the network by the process's network namespace (`IpExt InOctets` of
    /// `net/netstat`, as Go reads it) (`process_network_receive_bytes_total`).
    pub network_receive_bytes: Option<f64>,
    /// Bytes sent, likewise (`OutOctets`) (`process_network_transmit_bytes_total`).
    pub network_transmit_bytes: Option<f64>,
    /// Threads (debug endpoint only; Go's client has no such series).
    pub threads: Option<f64>,
}

impl ProcessStats {
    /// Reads `/proc/self`.
    pub fn read() -> Self {
        Self::read_from(Path::new("/proc"), Path::new("/proc/self"))
    }

    /// Reads `proc` (for `stat`'s boot time) and `this` (a process's directory under it).
    pub fn read_from(proc: &Path, this: &Path) -> Self {
        let text = |name: &str| std::fs::read_to_string(this.join(name)).ok();
        let stat = text("stat").and_then(|s| parse_stat(&s));
        let status = text("status");
        let limits = text("limits");
        let netstat = text("net/netstat");
        let octets = |key: &str| netstat.as_deref().and_then(|n| ip_ext_field(n, key));
        let boot_time = std::fs::read_to_string(proc.join("stat"))
            .ok()
            .and_then(|s| parse_boot_time(&s));
        let status_kib = |key: &str| {
            status
                .as_deref()
                .and_then(|s| status_field(s, key))
                .map(|kib| kib * 1024.0)
        };
        Self {
            cpu_seconds: stat.map(|s| (s.utime + s.stime) as f64 / USER_HZ),
            resident_memory_bytes: status_kib("VmRSS"),
            virtual_memory_bytes: status_kib("VmSize"),
            virtual_memory_max_bytes: limits
                .as_deref()
                .and_then(|l| soft_limit(l, "Max address space")),
            open_fds: std::fs::read_dir(this.join("fd"))
                .ok()
                .map(|dir| dir.count() as f64),
            max_fds: limits
                .as_deref()
                .and_then(|l| soft_limit(l, "Max open files")),
            start_time_seconds: stat
                .zip(boot_time)
                .map(|(s, boot)| boot + s.start_ticks as f64 / USER_HZ),
            network_receive_bytes: octets("InOctets"),
            network_transmit_bytes: octets("OutOctets"),
            threads: status.as_deref().and_then(|s| status_field(s, "Threads")),
        }
    }

    /// The series as `(name, help, value)`, counters with their `_total` name.
    fn series(&self) -> [(&'static str, &'static str, Option<f64>); 9] {
        [
            (
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                self.cpu_seconds,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                self.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                self.max_fds,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                self.virtual_memory_bytes,
            ),
            (
                "process_virtual_memory_max_bytes",
                "Maximum amount of virtual memory available in bytes.",
                self.virtual_memory_max_bytes,
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                self.resident_memory_bytes,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                self.start_time_seconds,
            ),
            (
                "process_network_receive_bytes_total",
                "Number of bytes received by the process over the network.",
                self.network_receive_bytes,
            ),
            (
                "process_network_transmit_bytes_total",
                "Number of bytes sent by the process over the network.",
                self.network_transmit_bytes,
            ),
        ]
    }
}

/// The fields of `/proc/<pid>/stat` we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    utime: u64,
    stime: u64,
    start_ticks: u64,
}

/// Parses `/proc/<pid>/stat`; the command name (field 2) may hold spaces and parentheses, so
/// fields are counted from its last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    // `rest` starts at field 3 (the state).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        start_ticks: field(22)?,
    })
}

/// `btime` of `/proc/stat`: the boot time in seconds since the epoch.
fn parse_boot_time(text: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|v| v as f64)
}

/// The number of a `Key:\t<n> [kB]` line of `/proc/<pid>/status`.
fn status_field(text: &str, key: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|v| v as f64)
}

/// The soft limit of the line `name` of `/proc/<pid>/limits`; `unlimited` is `u64::MAX`.
fn soft_limit(text: &str, name: &str) -> Option<f64> {
    let rest = text.lines().find_map(|l| l.strip_prefix(name))?;
    match rest.split_whitespace().next()? {
        "unlimited" => Some(u64::MAX as f64),
        v => v.parse::<u64>().ok().map(|v| v as f64),
    }
}

/// The value of `key` in the `IpExt:` lines of `net/netstat` (a line of names, then a line of
/// values).
fn ip_ext_field(text: &str, key: &str) -> Option<f64> {
    let mut lines = text.lines().filter_map(|l| l.strip_prefix("IpExt:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let at = names.split_whitespace().position(|n| n == key)?;
    values
        .split_whitespace()
        .nth(at)?
        .parse::<u64>()
        .ok()
        .map(|v| v as f64)
}

/// The `process_*` series of Go's Prometheus client (client_golang's process collector on
/// Linux), which upstream serves beside its own because its exporter uses the default
/// registry: `(name, type)`, counters with their `_total` name.
pub const GO_PROCESS_SERIES: [(&str, &str); 9] = [
    ("process_cpu_seconds_total", "counter"),
    ("process_open_fds", "gauge"),
    ("process_max_fds", "gauge"),
    ("process_virtual_memory_bytes", "gauge"),
    ("process_virtual_memory_max_bytes", "gauge"),
    ("process_resident_memory_bytes", "gauge"),
    ("process_start_time_seconds", "gauge"),
    ("process_network_receive_bytes_total", "counter"),
    ("process_network_transmit_bytes_total", "counter"),
];

/// Adds the `process_*` series of Go's Prometheus client to a registry, read at each scrape.
/// A figure that cannot be read is left out, as Go's collector does.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, value) in ProcessStats::read().series() {
            let Some(value) = value else { continue };
            if let Some(family) = name.strip_suffix("_total") {
                let counter = ConstCounter::new(value);
                counter.encode(encoder.encode_descriptor(
                    family,
                    help,
                    None,
                    counter.metric_type(),
                )?)?;
            } else {
                let gauge = ConstGauge::new(value);
                gauge.encode(encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    gauge.metric_type(),
                )?)?;
            }
        }
        Ok(())
    }
}

/// The variable that turns the debug endpoint on (Go's pprof address upstream).
pub const ENV_PROFILING_BIND_ADDRESS: &str = "PROFILING_BIND_ADDRESS";

/// Parses a Go listen address as upstream's `PROFILING_BIND_ADDRESS` takes it: `:6060` (every
/// interface), `host:port` with an IP address or `localhost`, `[v6]:port`. An error names
/// `name`.
pub fn parse_bind_address(name: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    let invalid = |reason: &str| ConfigError::Invalid {
        name: name.to_owned(),
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    let (host, port) = value
        .rsplit_once(':')
        .ok_or_else(|| invalid("expected host:port or :port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| invalid("the port must be a number from 0 to 65535"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ip = match host {
        "" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        h => h
            .parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .or_else(|_| h.parse::<Ipv4Addr>().map(IpAddr::V4))
            .map_err(|_| invalid("the host must be an IP address, localhost or empty"))?,
    };
    Ok(SocketAddr::new(ip, port))
}

/// Path of the debug endpoint's report.
pub const DEBUG_STATS_PATH: &str = "/debug/stats";

/// A response of the debug endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugResponse {
    /// HTTP status code.
    pub status: u16,
    /// `text/plain` body.
    pub body: String,
}

/// The debug endpoint's answer to `GET path` for `component` (`interceptor`, `scaler`): at `/`
/// and [`DEBUG_STATS_PATH`] the process figures and the tokio runtime's (when called inside a
/// runtime) as `name value` lines; under `/debug/pprof/` a 501 saying Go's pprof does not exist
/// here; elsewhere a 404.
pub fn debug_text(component: &str, path: &str) -> DebugResponse {
    if path == "/" || path == DEBUG_STATS_PATH {
        let mut body = format!(
            "# {component} {} debug figures ({ENV_PROFILING_BIND_ADDRESS}); Go's pprof \
             profiles do not exist in the Rust build\n",
            env!("CARGO_PKG_VERSION")
        );
        let stats = ProcessStats::read();
        for (name, _, value) in stats.series() {
            if let Some(value) = value {
                body.push_str(&format!("{name} {value}\n"));
            }
        }
        if let Some(threads) = stats.threads {
            body.push_str(&format!("process_threads {threads}\n"));
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let m = runtime.metrics();
            body.push_str(&format!(
                "tokio_workers {}\ntokio_alive_tasks {}\ntokio_global_queue_depth {}\n",
                m.num_workers(),
                m.num_alive_tasks(),
                m.global_queue_depth()
            ));
        }
        return DebugResponse { status: 200, body };
    }
    if path.starts_with("/debug/pprof") {
        return DebugResponse {
            status: 501,
            body: format!(
                "Go's pprof profiles do not exist in the Rust {component}; \
                 {DEBUG_STATS_PATH} has its process and runtime figures\n"
            ),
        };
    }
    DebugResponse {
        status: 404,
        body: format!("not found: try {DEBUG_STATS_PATH}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 1 0 0 0 250 150 0 0 20 0 3 0 \
                    123456 10000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0";
        assert_eq!(
            parse_stat(stat),
            Some(Stat {
                utime: 250,
                stime: 150,
                start_ticks: 123456
            })
        );
        assert_eq!(parse_stat("4242 (truncated) S 1"), None);
        assert_eq!(parse_boot_time("cpu 1 2\nbtime 1700000000\n"), Some(1.7e9));
    }

    #[test]
    fn status_and_limits_fields() {
        let status = "Name:\tx\nVmSize:\t    2928 kB\nVmRSS:\t     358 kB\nThreads:\t3\n";
        assert_eq!(status_field(status, "VmRSS"), Some(358.0));
        assert_eq!(status_field(status, "VmSize"), Some(2928.0));
        assert_eq!(status_field(status, "Threads"), Some(3.0));
        assert_eq!(status_field(status, "VmSwap"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            20000                40000                files\n\
                      Max address space         unlimited            unlimited            bytes\n";
        assert_eq!(soft_limit(limits, "Max open files"), Some(20000.0));
        assert_eq!(
            soft_limit(limits, "Max address space"),
            Some(u64::MAX as f64)
        );
        let netstat = "TcpExt: SyncookiesSent\nTcpExt: 0\n\
                       IpExt: InNoRoutes InOctets OutOctets\nIpExt: 0 9030 8618\n";
        assert_eq!(ip_ext_field(netstat, "InOctets"), Some(9030.0));
        assert_eq!(ip_ext_field(netstat, "OutOctets"), Some(8618.0));
        assert_eq!(ip_ext_field(netstat, "Nope"), None);
    }

    #[test]
    fn reads_a_process_directory() {
        let dir = std::env::temp_dir().join(format!("process-stats-{}", std::process::id()));
        let this = dir.join("self");
        std::fs::create_dir_all(this.join("fd")).unwrap();
        for fd in ["0", "1", "2"] {
            std::fs::write(this.join("fd").join(fd), "").unwrap();
        }
        std::fs::write(dir.join("stat"), "cpu 1\nbtime 1000\n").unwrap();
        std::fs::write(
            this.join("stat"),
            "7 (x) S 1 7 7 0 -1 0 0 0 0 0 150 50 0 0 20 0 1 0 2500 0 0",
        )
        .unwrap();
        std::fs::write(this.join("status"), "VmSize:\t 8 kB\nVmRSS:\t 4 kB\n").unwrap();
        std::fs::write(this.join("limits"), "Max open files 1024 4096 files\n").unwrap();
        let stats = ProcessStats::read_from(&dir, &this);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            stats,
            ProcessStats {
                cpu_seconds: Some(2.0),
                resident_memory_bytes: Some(4096.0),
                virtual_memory_bytes: Some(8192.0),
                virtual_memory_max_bytes: None,
                open_fds: Some(3.0),
                max_fds: Some(1024.0),
                start_time_seconds: Some(1025.0),
                network_receive_bytes: None,
                network_transmit_bytes: None,
                threads: None,
            }
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_measured() {
        let stats = ProcessStats::read();
        assert!(stats.resident_memory_bytes.unwrap() > 0.0, "{stats:?}");
        assert!(stats.open_fds.unwrap() >= 1.0, "{stats:?}");
        assert!(
            stats.max_fds.unwrap() >= stats.open_fds.unwrap(),
            "{stats:?}"
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = stats.start_time_seconds.unwrap();
        assert!(
            started <= now + 1.0 && started > now - 86_400.0,
            "{stats:?}"
        );
    }

    #[test]
    fn the_collector_encodes_exactly_go_series() {
        let names: Vec<_> = ProcessStats::default()
            .series()
            .iter()
            .map(|(name, _, _)| *name)
            .collect();
        let go: Vec<_> = GO_PROCESS_SERIES.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, go);
    }

    #[test]
    fn collector_encodes_go_names_and_types() {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(ProcessCollector));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        if cfg!(target_os = "linux") {
            for line in [
                "# TYPE process_cpu_seconds counter",
                "# TYPE process_resident_memory_bytes gauge",
                "# TYPE process_open_fds gauge",
                "# TYPE process_start_time_seconds gauge",
            ] {
                assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
            }
            assert!(
                text.lines()
                    .any(|l| l.starts_with("process_cpu_seconds_total ")),
                "{text}"
            );
        }
    }

    #[test]
    fn bind_addresses_in_go_syntax() {
        let ok = |v: &str| parse_bind_address("P", v).unwrap();
        assert_eq!(ok(":6060"), SocketAddr::from(([0, 0, 0, 0], 6060)));
        assert_eq!(ok("127.0.0.1:0"), SocketAddr::from(([127, 0, 0, 1], 0)));
        assert_eq!(
            ok("localhost:6060"),
            SocketAddr::from(([127, 0, 0, 1], 6060))
        );
        assert_eq!(ok("0.0.0.0:6060"), SocketAddr::from(([0, 0, 0, 0], 6060)));
        assert_eq!(ok("[::1]:6060").to_string(), "[::1]:6060");
        for bad in ["6060", ":http", "pprof.example:6060", ":70000"] {
            let err = parse_bind_address("P", bad).unwrap_err().to_string();
            assert!(err.contains("variable P"), "{bad}: {err}");
        }
    }

    #[test]
    fn debug_endpoint_answers() {
        let stats = debug_text("scaler", DEBUG_STATS_PATH);
        assert_eq!(stats.status, 200);
        assert!(stats.body.contains("pprof"), "{}", stats.body);
        if cfg!(target_os = "linux") {
            assert!(
                stats.body.contains("\nprocess_resident_memory_bytes "),
                "{}",
                stats.body
            );
        }
        assert_eq!(debug_text("scaler", "/").status, 200);
        assert_eq!(debug_text("scaler", "/debug/pprof/heap").status, 501);
        assert_eq!(debug_text("scaler", "/other").status, 404);
    }
}
