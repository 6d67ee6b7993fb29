//! The interceptor's configuration, read from upstream-compatible environment variables.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use http_add_on_types::config::{ConfigError, Env, EnvSource};
use http_add_on_types::process;
use http_add_on_types::telemetry::OtelConfig;

/// Everything the interceptor can be configured with. Tests build it directly (e.g. with
/// [`Config::for_tests`]); the binary reads it with [`Config::from_env`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Proxy listener on all interfaces (`KEDA_HTTP_PROXY_PORT`, required as upstream; the
    /// chart sets 8080).
    pub proxy_listen: SocketAddr,
    /// Admin listener: `/queue`, `/queue/stream`, `/livez`, `/readyz` (`KEDA_HTTP_ADMIN_PORT`,
    /// required as upstream; the chart sets 9090).
    pub admin_listen: SocketAddr,
    /// Prometheus listener, path `/metrics` (`OTEL_PROM_EXPORTER_PORT`, 2223).
    pub metrics_listen: SocketAddr,
    /// Serve `/metrics` at all; `false` binds no metrics listener
    /// (`OTEL_PROM_EXPORTER_ENABLED`, true).
    pub metrics_enabled: bool,
    /// Namespace to watch; `None` = all (`KEDA_HTTP_WATCH_NAMESPACE`).
    pub watch_namespace: Option<String>,
    /// Overall limit from request arrival to response headers; `None` = off
    /// (`KEDA_HTTP_REQUEST_TIMEOUT`, 0).
    pub request_timeout: Option<Duration>,
    /// Limit on waiting for the backend's response headers; `None` = off
    /// (`KEDA_HTTP_RESPONSE_HEADER_TIMEOUT`, alias `KEDA_RESPONSE_HEADER_TIMEOUT`, 300s).
    pub response_header_timeout: Option<Duration>,
    /// How long a request waits for a ready endpoint; `None` = no limit
    /// (`KEDA_HTTP_READINESS_TIMEOUT`, alias `KEDA_CONDITION_WAIT_TIMEOUT`, 0). Routes with a
    /// fallback use 30s when this is off.
    pub readiness_timeout: Option<Duration>,
    /// Per-attempt TCP connect timeout; failed attempts retry another endpoint
    /// (`KEDA_HTTP_CONNECT_TIMEOUT`, 500ms).
    pub connect_timeout: Duration,
    /// Idle pooled connections kept per backend address (`KEDA_HTTP_MAX_IDLE_CONNS_PER_HOST`, 200).
    pub max_idle_conns_per_host: usize,
    /// Idle pooled connections kept over all backends (`KEDA_HTTP_MAX_IDLE_CONNS`, 1000; 0 = no
    /// limit).
    pub max_idle_conns: usize,
    /// Requests held per route while its target has no ready endpoint, unless the route sets
    /// its own `coldStart.maxPendingRequests` (`KEDA_HTTP_COLD_START_MAX_PENDING_REQUESTS`, 0 =
    /// unlimited).
    pub max_pending_requests: Option<u32>,
    /// (ours) Open client connections of the proxy listeners at most; beyond, new ones are
    /// closed at once (`KEDA_HTTP_MAX_CONNECTIONS`, 0 = no limit, the default).
    pub max_connections: Option<usize>,
    /// Pooled connections idle longer than this are closed; `None` = never
    /// (`KEDA_HTTP_IDLE_CONN_TIMEOUT`, 90s; 0 = never).
    pub idle_conn_timeout: Option<Duration>,
    /// Longest wait for in-flight requests at shutdown (`KEDA_HTTP_DRAIN_TIMEOUT`, 30s).
    pub drain_timeout: Duration,
    /// Time between `/readyz` turning 503 and closing the listeners (`KEDA_HTTP_SHUTDOWN_DELAY`, 5s).
    pub shutdown_delay: Duration,
    /// Add `X-KEDA-HTTP-Cold-Start` to responses (`KEDA_HTTP_ENABLE_COLD_START_HEADER`, true).
    pub enable_cold_start_header: bool,
    /// Log one line per request (`KEDA_HTTP_LOG_REQUESTS`, false).
    pub log_requests: bool,
    /// Dial ready pod endpoints directly (true) or the Service address (false)
    /// (`KEDA_HTTP_DIRECT_POD_ROUTING`, true).
    pub direct_pod_routing: bool,
    /// Coalescing interval of the `/queue/stream` push stream (`KEDA_HTTP_QUEUE_STREAM_INTERVAL`, 100ms).
    pub queue_stream_interval: Duration,
    /// Largest accepted request header section in bytes; more gets 431
    /// (`KEDA_HTTP_MAX_HEADER_BYTES`, 65536).
    pub max_header_bytes: usize,
    /// Connections that do not finish sending request headers in time are closed, counted from
    /// the connection's start for its first request and from a head's first byte for later
    /// ones (`KEDA_HTTP_HEADER_READ_TIMEOUT`, 10s; must be above zero).
    pub header_read_timeout: Duration,
    /// A client connection with no request in flight closes after this long without a new
    /// request; `None` = never (`KEDA_HTTP_IDLE_TIMEOUT`, 90s; 0 = never).
    pub idle_timeout: Option<Duration>,
    /// A request body that makes no progress for this long is abandoned (408 when nothing was
    /// forwarded yet); `None` = never (`KEDA_HTTP_REQUEST_BODY_TIMEOUT`, 60s; 0 = never).
    pub request_body_timeout: Option<Duration>,
    /// A client that accepts no response bytes for this long is disconnected; `None` = never
    /// (`KEDA_HTTP_SEND_TIMEOUT`, 60s; 0 = never).
    pub send_timeout: Option<Duration>,
    /// The TLS proxy listener; `None` = off (`KEDA_HTTP_PROXY_TLS_ENABLED`, false).
    pub tls: Option<TlsConfig>,
    /// TLS versions, cipher suites and curves of the TLS listener and of TLS to backends
    /// (`KEDA_HTTP_TLS_{MIN,MAX}_VERSION`, `…_CIPHER_SUITES`, `…_CURVE_PREFERENCES`).
    pub tls_policy: crate::tls_policy::TlsPolicy,
    /// Trust for TLS to backends (`KEDA_HTTP_TLS_CA_DIRS`, `KEDA_HTTP_TLS_SKIP_VERIFY`).
    pub backend_tls: crate::backend_tls::BackendTlsConfig,
    /// Period of a full rebuild of the route table from the watched objects, besides the
    /// rebuild on every change; `None` = never
    /// (`KEDA_HTTP_SCALER_CONFIG_MAP_INFORMER_RSYNC_PERIOD`, 60m; 0 = never). Upstream's
    /// informer resync; here a safety net that costs one rebuild per period.
    pub resync_period: Option<Duration>,
    /// Debug endpoint with process and runtime figures (`/debug/stats`); `None` = off
    /// (`PROFILING_BIND_ADDRESS`, Go syntax `host:port` or `:port`, empty). Upstream serves
    /// Go's pprof there, which has no Rust counterpart.
    pub profiling_listen: Option<SocketAddr>,
    /// The check listener for ingress admission checks (nginx `auth_request`, Envoy
    /// `ext_authz`, Traefik `forwardAuth`), all interfaces; `None` = off
    /// (`KEDA_HTTP_CHECK_PORT`, ours, unset).
    pub check_listen: Option<SocketAddr>,
    /// Prefix the check strips from a check request's own path when no `X-Original-URI` or
    /// `X-Forwarded-Uri` names the original one (Envoy's `path_prefix`;
    /// `KEDA_HTTP_CHECK_PATH_PREFIX`, ours, empty).
    pub check_path_prefix: String,
    /// OpenTelemetry traces and OTLP metrics (`OTEL_EXPORTER_OTLP_*`, `OTEL_TRACES_SAMPLER*`).
    pub otel: OtelConfig,
}

/// The TLS proxy listener's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Listener (`KEDA_HTTP_PROXY_TLS_PORT`, 8443, all interfaces).
    pub listen: SocketAddr,
    /// PEM certificate chain served by default (`KEDA_HTTP_PROXY_TLS_CERT_PATH`, `/certs/tls.crt`).
    pub cert_path: PathBuf,
    /// PEM private key of that chain (`KEDA_HTTP_PROXY_TLS_KEY_PATH`, `/certs/tls.key`).
    pub key_path: PathBuf,
    /// Directories of further `<name>.crt` + `<name>.key` pairs, chosen by the client's SNI
    /// name against each certificate's DNS names (`KEDA_HTTP_PROXY_TLS_CERT_STORE_PATHS`,
    /// comma-separated, empty).
    pub certstore_paths: Vec<PathBuf>,
}

impl TlsConfig {
    /// Upstream's defaults: port 8443, `/certs/tls.crt` and `/certs/tls.key`, no cert store.
    pub fn with_files(cert_path: impl Into<PathBuf>, key_path: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8443),
            cert_path: cert_path.into(),
            key_path: key_path.into(),
            certstore_paths: Vec::new(),
        }
    }
}

/// Upstream's informer resync period.
pub const DEFAULT_RESYNC_PERIOD: Duration = Duration::from_secs(60 * 60);

/// The smallest header limit hyper's HTTP/1 parser accepts.
const MIN_HEADER_BYTES: usize = 8192;

impl Default for Config {
    fn default() -> Self {
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        Self {
            proxy_listen: SocketAddr::new(any, 8080),
            admin_listen: SocketAddr::new(any, 9090),
            metrics_listen: SocketAddr::new(any, 2223),
            metrics_enabled: true,
            watch_namespace: None,
            request_timeout: None,
            response_header_timeout: Some(Duration::from_secs(300)),
            readiness_timeout: None,
            connect_timeout: Duration::from_millis(500),
            max_idle_conns_per_host: 200,
            max_idle_conns: 1000,
            max_pending_requests: None,
            max_connections: None,
            idle_conn_timeout: Some(Duration::from_secs(90)),
            drain_timeout: Duration::from_secs(30),
            shutdown_delay: Duration::from_secs(5),
            enable_cold_start_header: true,
            log_requests: false,
            direct_pod_routing: true,
            queue_stream_interval: Duration::from_millis(100),
            max_header_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(90)),
            request_body_timeout: Some(Duration::from_secs(60)),
            send_timeout: Some(Duration::from_secs(60)),
            tls: None,
            tls_policy: Default::default(),
            backend_tls: Default::default(),
            resync_period: Some(DEFAULT_RESYNC_PERIOD),
            profiling_listen: None,
            check_listen: None,
            check_path_prefix: String::new(),
            otel: OtelConfig::default(),
        }
    }
}

/// `Some(d)`, or `None` for zero (upstream's "0 = off").
fn non_zero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

/// Every variable the interceptor reads (the add-on's and upstream's OpenTelemetry ones); other
/// add-on variables get one warning each at start.
pub const KNOWN_VARIABLES: &[&str] = &[
    "KEDA_CONDITION_WAIT_TIMEOUT",
    "KEDA_HTTP_ADMIN_PORT",
    "KEDA_HTTP_CHECK_PATH_PREFIX",
    "KEDA_HTTP_CHECK_PORT",
    "KEDA_HTTP_COLD_START_MAX_PENDING_REQUESTS",
    "KEDA_HTTP_CONNECT_TIMEOUT",
    "KEDA_HTTP_DIRECT_POD_ROUTING",
    "KEDA_HTTP_DRAIN_TIMEOUT",
    "KEDA_HTTP_ENABLE_COLD_START_HEADER",
    "KEDA_HTTP_HEADER_READ_TIMEOUT",
    "KEDA_HTTP_IDLE_CONN_TIMEOUT",
    "KEDA_HTTP_IDLE_TIMEOUT",
    "KEDA_HTTP_LOG_REQUESTS",
    "KEDA_HTTP_MAX_CONNECTIONS",
    "KEDA_HTTP_MAX_HEADER_BYTES",
    "KEDA_HTTP_MAX_IDLE_CONNS",
    "KEDA_HTTP_MAX_IDLE_CONNS_PER_HOST",
    "KEDA_HTTP_PROXY_PORT",
    "KEDA_HTTP_PROXY_TLS_CERT_PATH",
    "KEDA_HTTP_PROXY_TLS_CERT_STORE_PATHS",
    "KEDA_HTTP_PROXY_TLS_CIPHER_SUITES",
    "KEDA_HTTP_PROXY_TLS_CURVE_PREFERENCES",
    "KEDA_HTTP_PROXY_TLS_ENABLED",
    "KEDA_HTTP_PROXY_TLS_KEY_PATH",
    "KEDA_HTTP_PROXY_TLS_MAX_VERSION",
    "KEDA_HTTP_PROXY_TLS_MIN_VERSION",
    "KEDA_HTTP_PROXY_TLS_PORT",
    "KEDA_HTTP_PROXY_TLS_SKIP_VERIFY",
    "KEDA_HTTP_QUEUE_STREAM_INTERVAL",
    "KEDA_HTTP_READINESS_TIMEOUT",
    "KEDA_HTTP_REQUEST_BODY_TIMEOUT",
    "KEDA_HTTP_REQUEST_TIMEOUT",
    "KEDA_HTTP_RESPONSE_HEADER_TIMEOUT",
    "KEDA_HTTP_SCALER_CONFIG_MAP_INFORMER_RSYNC_PERIOD",
    "KEDA_HTTP_SEND_TIMEOUT",
    "KEDA_HTTP_SHUTDOWN_DELAY",
    "KEDA_HTTP_TLS_CA_DIRS",
    "KEDA_HTTP_TLS_CIPHER_SUITES",
    "KEDA_HTTP_TLS_CURVE_PREFERENCES",
    "KEDA_HTTP_TLS_MAX_VERSION",
    "KEDA_HTTP_TLS_MIN_VERSION",
    "KEDA_HTTP_TLS_SKIP_VERIFY",
    "KEDA_HTTP_WATCH_NAMESPACE",
    "KEDA_RESPONSE_HEADER_TIMEOUT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_METRICS_ENABLED",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_ENABLED",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_METRIC_EXPORT_INTERVAL",
    "OTEL_PROM_EXPORTER_ENABLED",
    "OTEL_PROM_EXPORTER_PORT",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "PROFILING_BIND_ADDRESS",
];

/// A Kubernetes namespace name (an RFC 1123 label).
fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

impl Config {
    /// Defaults with every listener on `127.0.0.1:0` and no shutdown delay: for in-process tests.
    pub fn for_tests() -> Self {
        let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        Self {
            proxy_listen: local,
            admin_listen: local,
            metrics_listen: local,
            shutdown_delay: Duration::ZERO,
            drain_timeout: Duration::from_secs(10),
            ..Self::default()
        }
    }

    /// Reads every variable; a bad value is an error naming the variable.
    pub fn from_env<S: EnvSource>(env: &Env<S>) -> Result<Self, ConfigError> {
        let d = Self::default();
        let port = |name: &str, default: SocketAddr| -> Result<SocketAddr, ConfigError> {
            Ok(SocketAddr::new(
                default.ip(),
                env.parse(name, default.port())?,
            ))
        };
        // Required, as upstream: a deployment that forgets one should not silently listen on
        // a port its Service does not point at.
        let required_port = |name: &str, default: SocketAddr| -> Result<SocketAddr, ConfigError> {
            env.required(name)?;
            port(name, default)
        };
        let max_header_bytes: usize =
            env.parse("KEDA_HTTP_MAX_HEADER_BYTES", d.max_header_bytes)?;
        if max_header_bytes < MIN_HEADER_BYTES {
            return Err(ConfigError::Invalid {
                name: "KEDA_HTTP_MAX_HEADER_BYTES".into(),
                value: max_header_bytes.to_string(),
                reason: format!("must be at least {MIN_HEADER_BYTES}"),
            });
        }
        let connect_timeout = env.duration("KEDA_HTTP_CONNECT_TIMEOUT", d.connect_timeout)?;
        if connect_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                name: "KEDA_HTTP_CONNECT_TIMEOUT".into(),
                value: "0".into(),
                reason: "must be greater than zero".into(),
            });
        }
        let positive = |name: &str, default: Duration| -> Result<Duration, ConfigError> {
            let value = env.duration(name, default)?;
            if value.is_zero() {
                return Err(ConfigError::Invalid {
                    name: name.into(),
                    value: "0".into(),
                    reason: "must be greater than zero".into(),
                });
            }
            Ok(value)
        };
        let queue_stream_interval =
            positive("KEDA_HTTP_QUEUE_STREAM_INTERVAL", d.queue_stream_interval)?;
        let header_read_timeout = positive("KEDA_HTTP_HEADER_READ_TIMEOUT", d.header_read_timeout)?;
        let watch_namespace = env
            .string("KEDA_HTTP_WATCH_NAMESPACE")
            .filter(|n| !n.is_empty());
        if let Some(namespace) = &watch_namespace
            && !is_dns_label(namespace)
        {
            return Err(ConfigError::Invalid {
                name: "KEDA_HTTP_WATCH_NAMESPACE".into(),
                value: namespace.clone(),
                reason: "must be a namespace name: at most 63 lower-case letters, digits and \
                         '-', starting and ending with a letter or digit"
                    .into(),
            });
        }
        let proxy_listen = required_port("KEDA_HTTP_PROXY_PORT", d.proxy_listen)?;
        let admin_listen = required_port("KEDA_HTTP_ADMIN_PORT", d.admin_listen)?;
        let metrics_listen = port("OTEL_PROM_EXPORTER_PORT", d.metrics_listen)?;
        let check_listen = match env.string("KEDA_HTTP_CHECK_PORT") {
            None => None,
            Some(_) => Some(port("KEDA_HTTP_CHECK_PORT", d.proxy_listen)?),
        };
        if let Some(check) = check_listen
            && check.port() != 0
            && [proxy_listen, admin_listen, metrics_listen].contains(&check)
        {
            return Err(ConfigError::Invalid {
                name: "KEDA_HTTP_CHECK_PORT".into(),
                value: check.port().to_string(),
                reason: "is already the proxy, admin or metrics port".into(),
            });
        }
        let check_path_prefix = env
            .string("KEDA_HTTP_CHECK_PATH_PREFIX")
            .map(|p| p.trim_end_matches('/').to_owned())
            .unwrap_or_default();
        if !check_path_prefix.is_empty() && !check_path_prefix.starts_with('/') {
            return Err(ConfigError::Invalid {
                name: "KEDA_HTTP_CHECK_PATH_PREFIX".into(),
                value: check_path_prefix,
                reason: "must start with '/'".into(),
            });
        }
        Ok(Self {
            proxy_listen,
            admin_listen,
            metrics_listen,
            metrics_enabled: env.bool("OTEL_PROM_EXPORTER_ENABLED", d.metrics_enabled)?,
            watch_namespace,
            request_timeout: non_zero(env.duration("KEDA_HTTP_REQUEST_TIMEOUT", Duration::ZERO)?),
            // The deprecated names win while they are set, as upstream.
            response_header_timeout: non_zero(env.duration_deprecated(
                "KEDA_HTTP_RESPONSE_HEADER_TIMEOUT",
                "KEDA_RESPONSE_HEADER_TIMEOUT",
                Duration::from_secs(300),
            )?),
            readiness_timeout: non_zero(env.duration_deprecated(
                "KEDA_HTTP_READINESS_TIMEOUT",
                "KEDA_CONDITION_WAIT_TIMEOUT",
                Duration::ZERO,
            )?),
            connect_timeout,
            max_idle_conns_per_host: env.parse(
                "KEDA_HTTP_MAX_IDLE_CONNS_PER_HOST",
                d.max_idle_conns_per_host,
            )?,
            max_idle_conns: env.parse("KEDA_HTTP_MAX_IDLE_CONNS", d.max_idle_conns)?,
            max_pending_requests: Some(
                env.parse::<u32>("KEDA_HTTP_COLD_START_MAX_PENDING_REQUESTS", 0)?,
            )
            .filter(|n| *n > 0),
            max_connections: Some(env.parse::<usize>("KEDA_HTTP_MAX_CONNECTIONS", 0)?)
                .filter(|n| *n > 0),
            idle_conn_timeout: non_zero(
                env.duration("KEDA_HTTP_IDLE_CONN_TIMEOUT", Duration::from_secs(90))?,
            ),
            drain_timeout: env.duration("KEDA_HTTP_DRAIN_TIMEOUT", d.drain_timeout)?,
            shutdown_delay: env.duration("KEDA_HTTP_SHUTDOWN_DELAY", d.shutdown_delay)?,
            enable_cold_start_header: env.bool(
                "KEDA_HTTP_ENABLE_COLD_START_HEADER",
                d.enable_cold_start_header,
            )?,
            log_requests: env.bool("KEDA_HTTP_LOG_REQUESTS", d.log_requests)?,
            direct_pod_routing: env.bool("KEDA_HTTP_DIRECT_POD_ROUTING", d.direct_pod_routing)?,
            queue_stream_interval,
            max_header_bytes,
            header_read_timeout,
            idle_timeout: non_zero(
                env.duration("KEDA_HTTP_IDLE_TIMEOUT", Duration::from_secs(90))?,
            ),
            request_body_timeout: non_zero(
                env.duration("KEDA_HTTP_REQUEST_BODY_TIMEOUT", Duration::from_secs(60))?,
            ),
            send_timeout: non_zero(
                env.duration("KEDA_HTTP_SEND_TIMEOUT", Duration::from_secs(60))?,
            ),
            tls: if env.bool("KEDA_HTTP_PROXY_TLS_ENABLED", false)? {
                let defaults = TlsConfig::with_files("/certs/tls.crt", "/certs/tls.key");
                Some(TlsConfig {
                    listen: port("KEDA_HTTP_PROXY_TLS_PORT", defaults.listen)?,
                    cert_path: env
                        .string("KEDA_HTTP_PROXY_TLS_CERT_PATH")
                        .map_or(defaults.cert_path, PathBuf::from),
                    key_path: env
                        .string("KEDA_HTTP_PROXY_TLS_KEY_PATH")
                        .map_or(defaults.key_path, PathBuf::from),
                    certstore_paths: env
                        .string("KEDA_HTTP_PROXY_TLS_CERT_STORE_PATHS")
                        .unwrap_or_default()
                        .split(',')
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(PathBuf::from)
                        .collect(),
                })
            } else {
                None
            },
            tls_policy: crate::tls_policy::TlsPolicy::from_env(env)?,
            backend_tls: crate::backend_tls::BackendTlsConfig::from_env(env)?,
            resync_period: non_zero(env.duration(
                "KEDA_HTTP_SCALER_CONFIG_MAP_INFORMER_RSYNC_PERIOD",
                DEFAULT_RESYNC_PERIOD,
            )?),
            profiling_listen: env
                .string("PROFILING_BIND_ADDRESS")
                .map(|v| process::parse_bind_address("PROFILING_BIND_ADDRESS", &v))
                .transpose()?,
            check_listen,
            check_path_prefix,
            otel: OtelConfig::from_env(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// The required ports (the chart's values) plus `pairs`, which may override them.
    fn read(pairs: &[(&'static str, &'static str)]) -> Result<Config, ConfigError> {
        let mut map: BTreeMap<&str, &str> = BTreeMap::from([
            ("KEDA_HTTP_PROXY_PORT", "8080"),
            ("KEDA_HTTP_ADMIN_PORT", "9090"),
        ]);
        map.extend(pairs.iter().copied());
        Config::from_env(&Env::new(map))
    }

    #[test]
    fn the_proxy_and_admin_ports_are_required() {
        for name in ["KEDA_HTTP_PROXY_PORT", "KEDA_HTTP_ADMIN_PORT"] {
            let mut map = BTreeMap::from([
                ("KEDA_HTTP_PROXY_PORT", "8080"),
                ("KEDA_HTTP_ADMIN_PORT", "9090"),
            ]);
            map.remove(name);
            let err = Config::from_env(&Env::new(map.clone()))
                .expect_err(name)
                .to_string();
            assert!(err.contains(name) && err.contains("required"), "{err}");
            // An empty value is unset, as upstream's envconfig reads it.
            map.insert(name, "");
            let err = Config::from_env(&Env::new(map))
                .expect_err(name)
                .to_string();
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn defaults_match_upstream() {
        let c = read(&[]).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.proxy_listen.port(), 8080);
        assert_eq!(c.admin_listen.port(), 9090);
        assert_eq!(c.metrics_listen.port(), 2223);
        assert!(c.proxy_listen.ip().is_unspecified());
        assert_eq!(c.response_header_timeout, Some(Duration::from_secs(300)));
        assert_eq!(c.readiness_timeout, None);
        assert_eq!(c.max_pending_requests, None);
        assert_eq!(c.max_connections, None);
        assert_eq!(c.request_timeout, None);
        assert!(c.direct_pod_routing && c.enable_cold_start_header && !c.log_requests);
        assert!(c.metrics_enabled);
        assert_eq!(c.tls, None);
        assert_eq!(c.resync_period, Some(Duration::from_secs(3600)));
        assert_eq!(c.profiling_listen, None);
        assert_eq!(c.check_listen, None);
        assert_eq!(c.check_path_prefix, "");
        let c = read(&[
            ("KEDA_HTTP_SCALER_CONFIG_MAP_INFORMER_RSYNC_PERIOD", "0s"),
            ("PROFILING_BIND_ADDRESS", ":6060"),
        ])
        .unwrap();
        assert_eq!(c.resync_period, None);
        assert_eq!(
            c.profiling_listen,
            Some(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 6060)))
        );
        let tls = read(&[("KEDA_HTTP_PROXY_TLS_ENABLED", "true")])
            .unwrap()
            .tls
            .unwrap();
        assert_eq!(
            tls,
            TlsConfig::with_files("/certs/tls.crt", "/certs/tls.key")
        );
    }

    #[test]
    fn every_variable_is_read() {
        let c = read(&[
            ("KEDA_HTTP_PROXY_PORT", "1"),
            ("KEDA_HTTP_ADMIN_PORT", "2"),
            ("OTEL_PROM_EXPORTER_PORT", "3"),
            ("OTEL_PROM_EXPORTER_ENABLED", "false"),
            ("KEDA_HTTP_WATCH_NAMESPACE", "apps"),
            ("KEDA_HTTP_REQUEST_TIMEOUT", "1m30s"),
            ("KEDA_HTTP_RESPONSE_HEADER_TIMEOUT", "0"),
            ("KEDA_HTTP_READINESS_TIMEOUT", "20s"),
            ("KEDA_HTTP_CONNECT_TIMEOUT", "250ms"),
            ("KEDA_HTTP_MAX_IDLE_CONNS_PER_HOST", "7"),
            ("KEDA_HTTP_MAX_IDLE_CONNS", "70"),
            ("KEDA_HTTP_COLD_START_MAX_PENDING_REQUESTS", "12"),
            ("KEDA_HTTP_MAX_CONNECTIONS", "5000"),
            ("KEDA_HTTP_IDLE_CONN_TIMEOUT", "0s"),
            ("KEDA_HTTP_DRAIN_TIMEOUT", "3s"),
            ("KEDA_HTTP_SHUTDOWN_DELAY", "0s"),
            ("KEDA_HTTP_ENABLE_COLD_START_HEADER", "false"),
            ("KEDA_HTTP_LOG_REQUESTS", "true"),
            ("KEDA_HTTP_DIRECT_POD_ROUTING", "false"),
            ("KEDA_HTTP_QUEUE_STREAM_INTERVAL", "50ms"),
            ("KEDA_HTTP_MAX_HEADER_BYTES", "16384"),
            ("KEDA_HTTP_HEADER_READ_TIMEOUT", "2s"),
            ("KEDA_HTTP_IDLE_TIMEOUT", "0s"),
            ("KEDA_HTTP_REQUEST_BODY_TIMEOUT", "5s"),
            ("KEDA_HTTP_SEND_TIMEOUT", "6s"),
            ("KEDA_HTTP_PROXY_TLS_ENABLED", "true"),
            ("KEDA_HTTP_PROXY_TLS_PORT", "4"),
            ("KEDA_HTTP_PROXY_TLS_CERT_PATH", "/tls/a.crt"),
            ("KEDA_HTTP_PROXY_TLS_KEY_PATH", "/tls/a.key"),
            (
                "KEDA_HTTP_PROXY_TLS_CERT_STORE_PATHS",
                "/store/one, /store/two,",
            ),
            ("KEDA_HTTP_SCALER_CONFIG_MAP_INFORMER_RSYNC_PERIOD", "10m"),
            ("PROFILING_BIND_ADDRESS", "127.0.0.1:6060"),
            ("KEDA_HTTP_CHECK_PORT", "5"),
            ("KEDA_HTTP_CHECK_PATH_PREFIX", "/keda-check/"),
        ])
        .unwrap();
        assert_eq!(
            c.check_listen,
            Some(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 5)))
        );
        assert_eq!(c.check_path_prefix, "/keda-check");
        assert_eq!(c.resync_period, Some(Duration::from_secs(600)));
        assert_eq!(
            c.profiling_listen,
            Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 6060)))
        );
        let tls = c.tls.as_ref().expect("TLS on");
        assert_eq!(tls.listen.port(), 4);
        assert_eq!(tls.cert_path, PathBuf::from("/tls/a.crt"));
        assert_eq!(tls.key_path, PathBuf::from("/tls/a.key"));
        assert_eq!(
            tls.certstore_paths,
            [PathBuf::from("/store/one"), PathBuf::from("/store/two")]
        );
        assert_eq!(
            (
                c.proxy_listen.port(),
                c.admin_listen.port(),
                c.metrics_listen.port()
            ),
            (1, 2, 3)
        );
        assert!(!c.metrics_enabled);
        assert_eq!(c.watch_namespace.as_deref(), Some("apps"));
        assert_eq!(c.request_timeout, Some(Duration::from_secs(90)));
        assert_eq!(c.response_header_timeout, None);
        assert_eq!(c.readiness_timeout, Some(Duration::from_secs(20)));
        assert_eq!(c.connect_timeout, Duration::from_millis(250));
        assert_eq!(c.max_idle_conns_per_host, 7);
        assert_eq!(c.max_idle_conns, 70);
        assert_eq!(c.max_pending_requests, Some(12));
        assert_eq!(c.max_connections, Some(5000));
        assert_eq!(c.idle_conn_timeout, None);
        assert_eq!(c.drain_timeout, Duration::from_secs(3));
        assert_eq!(c.shutdown_delay, Duration::ZERO);
        assert!(!c.enable_cold_start_header && c.log_requests && !c.direct_pod_routing);
        assert_eq!(c.queue_stream_interval, Duration::from_millis(50));
        assert_eq!(c.max_header_bytes, 16384);
        assert_eq!(c.header_read_timeout, Duration::from_secs(2));
        assert_eq!(c.idle_timeout, None);
        assert_eq!(c.request_body_timeout, Some(Duration::from_secs(5)));
        assert_eq!(c.send_timeout, Some(Duration::from_secs(6)));
    }

    #[test]
    fn known_variables_are_every_variable_read() {
        let source = include_str!("config.rs");
        let code = &source[..source.find("#[cfg(test)]").unwrap()];
        let listed = &code[code.find("pub const KNOWN_VARIABLES").unwrap()..];
        let listed = &listed[..listed.find("];").unwrap()];
        let body = &code[code.find("pub fn from_env").unwrap()..];
        for read in body.split('"').skip(1).step_by(2) {
            if read.starts_with("KEDA") || read.starts_with("OTEL_") || read.starts_with("PROF") {
                assert!(
                    listed.contains(&format!("\"{read}\"")),
                    "{read} is read but not in KNOWN_VARIABLES"
                );
            }
        }
        let env = Env::new(BTreeMap::from([
            ("KEDA_HTTP_TYPO_TIMEOUT", "1s"),
            ("KEDA_HTTP_PROXY_PORT", "8080"),
        ]));
        assert_eq!(env.unknown(KNOWN_VARIABLES), ["KEDA_HTTP_TYPO_TIMEOUT"]);
    }

    #[test]
    fn the_metrics_endpoint_can_be_turned_off() {
        for (value, enabled) in [("true", true), ("false", false), ("0", false), ("T", true)] {
            let c = read(&[("OTEL_PROM_EXPORTER_ENABLED", value)]).expect(value);
            assert_eq!(
                c.metrics_enabled, enabled,
                "OTEL_PROM_EXPORTER_ENABLED={value}"
            );
        }
        let err = read(&[("OTEL_PROM_EXPORTER_ENABLED", "disabled")])
            .expect_err("not a bool")
            .to_string();
        assert!(err.contains("OTEL_PROM_EXPORTER_ENABLED"), "{err}");
    }

    #[test]
    fn deprecated_aliases_win_when_set() {
        let c = read(&[
            ("KEDA_RESPONSE_HEADER_TIMEOUT", "5s"),
            ("KEDA_CONDITION_WAIT_TIMEOUT", "7s"),
        ])
        .unwrap();
        assert_eq!(c.response_header_timeout, Some(Duration::from_secs(5)));
        assert_eq!(c.readiness_timeout, Some(Duration::from_secs(7)));
        // Both set: the deprecated name wins, as upstream.
        let c = read(&[
            ("KEDA_RESPONSE_HEADER_TIMEOUT", "5s"),
            ("KEDA_HTTP_RESPONSE_HEADER_TIMEOUT", "6s"),
            ("KEDA_CONDITION_WAIT_TIMEOUT", "7s"),
            ("KEDA_HTTP_READINESS_TIMEOUT", "8s"),
        ])
        .unwrap();
        assert_eq!(c.response_header_timeout, Some(Duration::from_secs(5)));
        assert_eq!(c.readiness_timeout, Some(Duration::from_secs(7)));
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (name, value) in [
            ("KEDA_HTTP_PROXY_PORT", "http"),
            ("KEDA_HTTP_ADMIN_PORT", "70000"),
            ("OTEL_PROM_EXPORTER_PORT", "-1"),
            ("OTEL_PROM_EXPORTER_ENABLED", "off"),
            ("KEDA_HTTP_REQUEST_TIMEOUT", "soon"),
            ("KEDA_HTTP_RESPONSE_HEADER_TIMEOUT", "5"),
            ("KEDA_RESPONSE_HEADER_TIMEOUT", "x"),
            ("KEDA_HTTP_READINESS_TIMEOUT", "1h1"),
            ("KEDA_CONDITION_WAIT_TIMEOUT", "-"),
            ("KEDA_HTTP_CONNECT_TIMEOUT", "0s"),
            ("KEDA_HTTP_MAX_IDLE_CONNS_PER_HOST", "many"),
            ("KEDA_HTTP_IDLE_CONN_TIMEOUT", "90"),
            ("KEDA_HTTP_DRAIN_TIMEOUT", "30"),
            ("KEDA_HTTP_SHUTDOWN_DELAY", "5 s"),
            ("KEDA_HTTP_ENABLE_COLD_START_HEADER", "yes"),
            ("KEDA_HTTP_LOG_REQUESTS", "2"),
            ("KEDA_HTTP_DIRECT_POD_ROUTING", "on"),
            ("KEDA_HTTP_QUEUE_STREAM_INTERVAL", "0"),
            ("KEDA_HTTP_MAX_HEADER_BYTES", "100"),
            ("KEDA_HTTP_HEADER_READ_TIMEOUT", "ten"),
            // Zero would drop every head that arrives in more than one read.
            ("KEDA_HTTP_HEADER_READ_TIMEOUT", "0s"),
            ("KEDA_HTTP_IDLE_TIMEOUT", "1"),
            ("KEDA_HTTP_REQUEST_BODY_TIMEOUT", "-1s"),
            ("KEDA_HTTP_SEND_TIMEOUT", "forever"),
            // Beyond Go's ~292 years: out of range, not a panic at request time.
            ("KEDA_HTTP_REQUEST_TIMEOUT", "2600000000000000h"),
            ("KEDA_HTTP_WATCH_NAMESPACE", "Not A Namespace"),
            ("KEDA_HTTP_WATCH_NAMESPACE", "-apps"),
            ("KEDA_HTTP_PROXY_TLS_ENABLED", "maybe"),
            (
                "KEDA_HTTP_SCALER_CONFIG_MAP_INFORMER_RSYNC_PERIOD",
                "hourly",
            ),
            ("PROFILING_BIND_ADDRESS", "6060"),
            ("PROFILING_BIND_ADDRESS", "pprof.example:6060"),
            ("KEDA_HTTP_CHECK_PORT", "check"),
            ("KEDA_HTTP_CHECK_PORT", "65536"),
            // The proxy's own port (the chart's 8080).
            ("KEDA_HTTP_CHECK_PORT", "8080"),
            ("KEDA_HTTP_CHECK_PATH_PREFIX", "keda-check"),
        ] {
            let err = read(&[(name, value)]).expect_err(name).to_string();
            assert!(err.contains(name), "{name}={value}: {err}");
        }
        let err = read(&[
            ("KEDA_HTTP_PROXY_TLS_ENABLED", "true"),
            ("KEDA_HTTP_PROXY_TLS_PORT", "https"),
        ])
        .expect_err("bad TLS port")
        .to_string();
        assert!(err.contains("KEDA_HTTP_PROXY_TLS_PORT"), "{err}");
    }
}
