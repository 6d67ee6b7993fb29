//! Scaler configuration from upstream's environment variables.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use http_add_on_types::config::{ConfigError, Env, EnvSource};
use http_add_on_types::process;
use http_add_on_types::telemetry::OtelConfig;

/// gRPC port of the external scaler (KEDA dials it).
pub const ENV_PORT: &str = "KEDA_HTTP_SCALER_PORT";
/// Namespace of the interceptors' admin Service.
pub const ENV_ADMIN_NAMESPACE: &str = "KEDA_HTTP_SCALER_TARGET_ADMIN_NAMESPACE";
/// Name of the interceptors' admin Service.
pub const ENV_ADMIN_SERVICE: &str = "KEDA_HTTP_SCALER_TARGET_ADMIN_SERVICE";
/// Name of the interceptors' Deployment (informational).
pub const ENV_ADMIN_DEPLOYMENT: &str = "KEDA_HTTP_SCALER_TARGET_ADMIN_DEPLOYMENT";
/// Admin port of the interceptors, used when an EndpointSlice does not name one.
pub const ENV_ADMIN_PORT: &str = "KEDA_HTTP_SCALER_TARGET_ADMIN_PORT";
/// Polling interval for interceptors without the push stream; readiness allows twice this.
pub const ENV_QUEUE_TICK: &str = "KEDA_HTTP_QUEUE_TICK_DURATION";
/// Interval at which `StreamIsActive` repeats its answer, in milliseconds.
pub const ENV_STREAM_INTERVAL_MS: &str = "KEDA_HTTP_SCALER_STREAM_INTERVAL_MS";
/// Port of the Prometheus `/metrics` endpoint.
pub const ENV_METRICS_PORT: &str = "OTEL_PROM_EXPORTER_PORT";
/// Whether the Prometheus `/metrics` endpoint is served (default `true`).
pub const ENV_METRICS_ENABLED: &str = "OTEL_PROM_EXPORTER_ENABLED";
/// Upstream's ConfigMap informer resync period (`60m`); accepted and validated, see
/// [`Config::informer_resync`].
pub const ENV_INFORMER_RESYNC: &str = "KEDA_HTTP_SCALER_CONFIG_MAP_INFORMER_RSYNC_PERIOD";
/// OTLP metrics push of the `/metrics` series (default `false`).
pub const ENV_OTLP_METRICS: &str = "OTEL_EXPORTER_OTLP_METRICS_ENABLED";
/// OTLP trace export (default `false`).
pub const ENV_OTLP_TRACES: &str = "OTEL_EXPORTER_OTLP_TRACES_ENABLED";
/// OTLP trace protocol (`console`, `http/protobuf` or `grpc`; default `console`).
pub const ENV_OTLP_TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
/// Address of the debug endpoint (`/debug/stats`: process and runtime figures; default empty =
/// off). Upstream serves Go's pprof there, which has no Rust counterpart.
pub const ENV_PROFILING_BIND_ADDRESS: &str = process::ENV_PROFILING_BIND_ADDRESS;

/// Every variable the scaler reads; other `KEDA_HTTP_*` variables get a warning.
pub const KNOWN_VARIABLES: &[&str] = &[
    ENV_PORT,
    ENV_ADMIN_NAMESPACE,
    ENV_ADMIN_SERVICE,
    ENV_ADMIN_DEPLOYMENT,
    ENV_ADMIN_PORT,
    ENV_QUEUE_TICK,
    ENV_STREAM_INTERVAL_MS,
    ENV_METRICS_PORT,
    ENV_METRICS_ENABLED,
    ENV_INFORMER_RESYNC,
    ENV_OTLP_METRICS,
    ENV_OTLP_TRACES,
    ENV_OTLP_TRACES_PROTOCOL,
    // The rest of `http_add_on_types::telemetry::OTEL_VARIABLES`.
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_METRIC_EXPORT_INTERVAL",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    ENV_PROFILING_BIND_ADDRESS,
];

/// Upstream's default informer resync period.
pub const DEFAULT_INFORMER_RESYNC: Duration = Duration::from_secs(60 * 60);

/// Everything the scaler needs to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Where the gRPC server listens.
    pub grpc_listen: SocketAddr,
    /// Where `/metrics` is served.
    pub metrics_listen: SocketAddr,
    /// Serve `/metrics` at all (`OTEL_PROM_EXPORTER_ENABLED`).
    pub metrics_enabled: bool,
    /// Namespace of the interceptors' admin Service.
    pub admin_namespace: String,
    /// Name of the interceptors' admin Service (EndpointSlices labelled
    /// `kubernetes.io/service-name=<this>`).
    pub admin_service: String,
    /// Name of the interceptors' Deployment (required, as upstream; logged only).
    pub admin_deployment: String,
    /// Admin port used when an EndpointSlice does not say which port to use.
    pub admin_port: u16,
    /// Polling interval for interceptors without the push stream.
    pub queue_tick: Duration,
    /// How often `StreamIsActive` repeats an unchanged answer.
    pub stream_interval: Duration,
    /// `StreamIsActive` answers the moment activity changes (default). `false` answers only
    /// every `stream_interval`, as upstream does: the baseline of `cargo xtask bench activation`.
    pub push_activation: bool,
    /// Upstream's informer resync period. The scaler derives nothing from its watched
    /// objects (every call reads the reflector caches), so there is nothing to rebuild and it
    /// changes nothing; it is validated so a value that upstream rejects is rejected here too.
    pub informer_resync: Duration,
    /// OpenTelemetry traces and OTLP metrics (`OTEL_EXPORTER_OTLP_*`, `OTEL_TRACES_SAMPLER*`).
    pub otel: OtelConfig,
    /// Where the debug endpoint listens (`PROFILING_BIND_ADDRESS`, Go syntax `host:port` or
    /// `:port`); `None` = off.
    pub profiling_listen: Option<SocketAddr>,
}

impl Config {
    /// A config for tests: listens on ephemeral loopback ports, default intervals.
    pub fn local(admin_namespace: &str, admin_service: &str) -> Self {
        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        Self {
            grpc_listen: loopback,
            metrics_listen: loopback,
            metrics_enabled: true,
            admin_namespace: admin_namespace.to_owned(),
            admin_service: admin_service.to_owned(),
            admin_deployment: "keda-add-ons-http-interceptor".to_owned(),
            admin_port: 9090,
            queue_tick: Duration::from_millis(500),
            stream_interval: Duration::from_millis(200),
            push_activation: true,
            informer_resync: DEFAULT_INFORMER_RESYNC,
            otel: OtelConfig::default(),
            profiling_listen: None,
        }
    }

    /// Reads the upstream variables; every error names the variable.
    pub fn from_env<S: EnvSource>(env: &Env<S>) -> Result<Self, ConfigError> {
        let any = |port| SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
        let queue_tick = env.duration(ENV_QUEUE_TICK, Duration::from_millis(500))?;
        if queue_tick.is_zero() {
            return Err(invalid(ENV_QUEUE_TICK, "0", "must be greater than zero"));
        }
        let stream_ms: u64 = env.parse(ENV_STREAM_INTERVAL_MS, 200)?;
        if stream_ms == 0 {
            return Err(invalid(
                ENV_STREAM_INTERVAL_MS,
                "0",
                "must be greater than zero",
            ));
        }
        let admin_namespace = env.required(ENV_ADMIN_NAMESPACE)?;
        let admin_service = env.required(ENV_ADMIN_SERVICE)?;
        let admin_deployment = env.required(ENV_ADMIN_DEPLOYMENT)?;
        let admin_port = env.required(ENV_ADMIN_PORT)?;
        let admin_port = admin_port.parse().map_err(|e: std::num::ParseIntError| {
            invalid(ENV_ADMIN_PORT, &admin_port, &e.to_string())
        })?;
        Ok(Self {
            grpc_listen: any(env.parse(ENV_PORT, 8080)?),
            metrics_listen: any(env.parse(ENV_METRICS_PORT, 2223)?),
            metrics_enabled: env.bool(ENV_METRICS_ENABLED, true)?,
            admin_namespace,
            admin_service,
            admin_deployment,
            admin_port,
            queue_tick,
            stream_interval: Duration::from_millis(stream_ms),
            push_activation: true,
            informer_resync: env.duration(ENV_INFORMER_RESYNC, DEFAULT_INFORMER_RESYNC)?,
            otel: OtelConfig::from_env(env)?,
            profiling_listen: env
                .string(ENV_PROFILING_BIND_ADDRESS)
                .map(|v| process::parse_bind_address(ENV_PROFILING_BIND_ADDRESS, &v))
                .transpose()?,
        })
    }

    /// How long without interceptor data before the scaler reports not ready: twice the tick.
    pub fn stale_after(&self) -> Duration {
        self.queue_tick * 2
    }
}

fn invalid(name: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        name: name.to_owned(),
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn env(pairs: &[(&'static str, &'static str)]) -> Env<BTreeMap<&'static str, &'static str>> {
        Env::new(pairs.iter().copied().collect())
    }

    #[test]
    fn defaults_match_upstream() {
        let c = Config::from_env(&env(&[
            (ENV_ADMIN_NAMESPACE, "keda"),
            (ENV_ADMIN_SERVICE, "interceptor-admin"),
            (ENV_ADMIN_DEPLOYMENT, "interceptor"),
            (ENV_ADMIN_PORT, "9090"),
        ]))
        .unwrap();
        assert_eq!(c.grpc_listen.port(), 8080);
        assert!(c.metrics_enabled);
        assert_eq!(c.informer_resync, Duration::from_secs(3600));
        assert_eq!(c.metrics_listen.port(), 2223);
        assert_eq!(c.admin_port, 9090);
        assert_eq!(c.queue_tick, Duration::from_millis(500));
        assert_eq!(c.stream_interval, Duration::from_millis(200));
        assert_eq!(c.stale_after(), Duration::from_secs(1));
        assert_eq!(c.profiling_listen, None);
    }

    #[test]
    fn reads_every_variable() {
        let c = Config::from_env(&env(&[
            (ENV_PORT, "8091"),
            (ENV_METRICS_PORT, "9999"),
            (ENV_METRICS_ENABLED, "false"),
            (ENV_ADMIN_NAMESPACE, "keda"),
            (ENV_ADMIN_SERVICE, "svc"),
            (ENV_ADMIN_DEPLOYMENT, "interceptor"),
            (ENV_ADMIN_PORT, "9091"),
            (ENV_QUEUE_TICK, "1s"),
            (ENV_STREAM_INTERVAL_MS, "50"),
            (ENV_PROFILING_BIND_ADDRESS, ":6060"),
        ]))
        .unwrap();
        assert_eq!(
            c.profiling_listen,
            Some(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 6060)))
        );
        assert_eq!(c.grpc_listen.port(), 8091);
        assert_eq!(c.metrics_listen.port(), 9999);
        assert!(!c.metrics_enabled);
        assert_eq!(c.admin_deployment, "interceptor");
        assert_eq!(c.admin_port, 9091);
        assert_eq!(c.queue_tick, Duration::from_secs(1));
        assert_eq!(c.stream_interval, Duration::from_millis(50));
    }

    #[test]
    fn errors_name_the_variable() {
        let base = [
            (ENV_ADMIN_NAMESPACE, "k"),
            (ENV_ADMIN_SERVICE, "s"),
            (ENV_ADMIN_DEPLOYMENT, "d"),
            (ENV_ADMIN_PORT, "9090"),
        ];
        for (name, value) in [
            (ENV_PORT, "x"),
            (ENV_ADMIN_PORT, "70000"),
            (ENV_QUEUE_TICK, "5"),
            (ENV_QUEUE_TICK, "0s"),
            (ENV_STREAM_INTERVAL_MS, "0"),
            (ENV_METRICS_PORT, "-1"),
            (ENV_ADMIN_PORT, "admin"),
            (ENV_METRICS_ENABLED, "yes"),
            (ENV_INFORMER_RESYNC, "hourly"),
            (ENV_OTLP_TRACES_PROTOCOL, "zipkin"),
            (ENV_OTLP_METRICS, "on"),
            (ENV_PROFILING_BIND_ADDRESS, "6060"),
        ] {
            let mut pairs = base.to_vec();
            pairs.push((name, value));
            let err = Config::from_env(&env(&pairs)).unwrap_err().to_string();
            assert!(err.contains(name), "{name}={value}: {err}");
        }
        let err = Config::from_env(&env(&[(ENV_ADMIN_NAMESPACE, "k")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(ENV_ADMIN_SERVICE), "{err}");
    }
}
