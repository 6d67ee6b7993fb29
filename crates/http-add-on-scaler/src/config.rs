//! Scaler configuration from upstream's environment variables.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use http_add_on_types::config::{ConfigError, Env, EnvSource};

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

/// Everything the scaler needs to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Where the gRPC server listens.
    pub grpc_listen: SocketAddr,
    /// Where `/metrics` is served.
    pub metrics_listen: SocketAddr,
    /// Namespace of the interceptors' admin Service.
    pub admin_namespace: String,
    /// Name of the interceptors' admin Service (EndpointSlices labelled
    /// `kubernetes.io/service-name=<this>`).
    pub admin_service: String,
    /// Name of the interceptors' Deployment (logged only).
    pub admin_deployment: Option<String>,
    /// Admin port used when an EndpointSlice does not say which port to use.
    pub admin_port: u16,
    /// Polling interval for interceptors without the push stream.
    pub queue_tick: Duration,
    /// How often `StreamIsActive` repeats an unchanged answer.
    pub stream_interval: Duration,
    /// `StreamIsActive` answers the moment activity changes (default). `false` answers only
    /// every `stream_interval`, as upstream does: the baseline of `cargo xtask bench activation`.
    pub push_activation: bool,
}

impl Config {
    /// A config for tests: listens on ephemeral loopback ports, default intervals.
    pub fn local(admin_namespace: &str, admin_service: &str) -> Self {
        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        Self {
            grpc_listen: loopback,
            metrics_listen: loopback,
            admin_namespace: admin_namespace.to_owned(),
            admin_service: admin_service.to_owned(),
            admin_deployment: None,
            admin_port: 9090,
            queue_tick: Duration::from_millis(500),
            stream_interval: Duration::from_millis(200),
            push_activation: true,
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
        Ok(Self {
            grpc_listen: any(env.parse(ENV_PORT, 9090)?),
            metrics_listen: any(env.parse(ENV_METRICS_PORT, 2223)?),
            admin_namespace: env.required(ENV_ADMIN_NAMESPACE)?,
            admin_service: env.required(ENV_ADMIN_SERVICE)?,
            admin_deployment: env.string(ENV_ADMIN_DEPLOYMENT),
            admin_port: env.parse(ENV_ADMIN_PORT, 9090)?,
            queue_tick,
            stream_interval: Duration::from_millis(stream_ms),
            push_activation: true,
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
        ]))
        .unwrap();
        assert_eq!(c.grpc_listen.port(), 9090);
        assert_eq!(c.metrics_listen.port(), 2223);
        assert_eq!(c.admin_port, 9090);
        assert_eq!(c.queue_tick, Duration::from_millis(500));
        assert_eq!(c.stream_interval, Duration::from_millis(200));
        assert_eq!(c.stale_after(), Duration::from_secs(1));
    }

    #[test]
    fn reads_every_variable() {
        let c = Config::from_env(&env(&[
            (ENV_PORT, "8091"),
            (ENV_METRICS_PORT, "9999"),
            (ENV_ADMIN_NAMESPACE, "keda"),
            (ENV_ADMIN_SERVICE, "svc"),
            (ENV_ADMIN_DEPLOYMENT, "interceptor"),
            (ENV_ADMIN_PORT, "9091"),
            (ENV_QUEUE_TICK, "1s"),
            (ENV_STREAM_INTERVAL_MS, "50"),
        ]))
        .unwrap();
        assert_eq!(c.grpc_listen.port(), 8091);
        assert_eq!(c.metrics_listen.port(), 9999);
        assert_eq!(c.admin_deployment.as_deref(), Some("interceptor"));
        assert_eq!(c.admin_port, 9091);
        assert_eq!(c.queue_tick, Duration::from_secs(1));
        assert_eq!(c.stream_interval, Duration::from_millis(50));
    }

    #[test]
    fn errors_name_the_variable() {
        let base = [(ENV_ADMIN_NAMESPACE, "k"), (ENV_ADMIN_SERVICE, "s")];
        for (name, value) in [
            (ENV_PORT, "x"),
            (ENV_ADMIN_PORT, "70000"),
            (ENV_QUEUE_TICK, "5"),
            (ENV_QUEUE_TICK, "0s"),
            (ENV_STREAM_INTERVAL_MS, "0"),
            (ENV_METRICS_PORT, "-1"),
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
