//! Operator configuration, read from environment variables (upstream names where upstream has
//! them) through [`Env`], so tests can build it from a map.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http_add_on_types::config::{ConfigError, Env, EnvSource};

/// Name of the external scaler's Service (required).
pub const ENV_EXTERNAL_SCALER_SERVICE: &str = "KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_SERVICE";
/// Port of the external scaler's Service (default 8091).
pub const ENV_EXTERNAL_SCALER_PORT: &str = "KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_PORT";
/// Deprecated name of [`ENV_EXTERNAL_SCALER_SERVICE`]; wins when set, as upstream.
pub const ENV_DEPRECATED_EXTERNAL_SCALER_SERVICE: &str =
    "KEDAHTTP_OPERATOR_EXTERNAL_SCALER_SERVICE";
/// Deprecated name of [`ENV_EXTERNAL_SCALER_PORT`]; wins when set, as upstream.
pub const ENV_DEPRECATED_EXTERNAL_SCALER_PORT: &str = "KEDAHTTP_OPERATOR_EXTERNAL_SCALER_PORT";
/// Namespace the operator (and the scaler) runs in; unset (upstream's default) = the pod's own
/// namespace from its service account, else `keda`.
pub const ENV_NAMESPACE: &str = "KEDA_HTTP_OPERATOR_NAMESPACE";
/// Namespace to watch; empty or unset watches all namespaces.
pub const ENV_WATCH_NAMESPACE: &str = "KEDA_HTTP_OPERATOR_WATCH_NAMESPACE";
/// Address of the `/healthz` and `/readyz` server (default `0.0.0.0:8081`).
pub const ENV_HEALTH_ADDRESS: &str = "KEDA_HTTP_OPERATOR_HEALTH_ADDRESS";
/// Address of the Prometheus `/metrics` server (default `0.0.0.0:8080`).
pub const ENV_METRICS_ADDRESS: &str = "KEDA_HTTP_OPERATOR_METRICS_ADDRESS";
/// Whether the metrics server serves HTTPS (default `true`, upstream's `operator.metrics.secure`).
pub const ENV_METRICS_SECURE: &str = "KEDA_HTTP_OPERATOR_METRICS_SECURE";
/// Whether every scrape needs a bearer token allowed to `get` `/metrics` (default `true`,
/// upstream's `operator.metrics.auth`).
pub const ENV_METRICS_AUTH: &str = "KEDA_HTTP_OPERATOR_METRICS_AUTH";
/// Directory holding `tls.crt` and `tls.key` for the metrics server; unset or empty generates a
/// self-signed certificate at start (upstream's `operator.metrics.certDir`).
pub const ENV_METRICS_CERT_DIR: &str = "KEDA_HTTP_OPERATOR_METRICS_CERT_DIR";
/// Whether to elect a leader before reconciling (default `true`).
pub const ENV_LEADER_ELECTION: &str = "KEDA_HTTP_OPERATOR_LEADER_ELECTION";
/// How long a lease is valid without renewal (unset = `15s`, controller-runtime's default).
pub const ENV_LEASE_DURATION: &str = "KEDA_HTTP_OPERATOR_LEADER_ELECTION_LEASE_DURATION";
/// How long the leader keeps leading while renewals fail (unset = `10s`).
pub const ENV_LEASE_RENEW_DEADLINE: &str = "KEDA_HTTP_OPERATOR_LEADER_ELECTION_RENEW_DEADLINE";
/// Interval between acquisition and renewal attempts (unset = `2s`).
pub const ENV_LEASE_RETRY_PERIOD: &str = "KEDA_HTTP_OPERATOR_LEADER_ELECTION_RETRY_PERIOD";

/// Every `KEDA_HTTP_*`/`KEDAHTTP_*` variable the operator reads; others get a warning.
pub const KNOWN_VARIABLES: &[&str] = &[
    ENV_EXTERNAL_SCALER_SERVICE,
    ENV_EXTERNAL_SCALER_PORT,
    ENV_DEPRECATED_EXTERNAL_SCALER_SERVICE,
    ENV_DEPRECATED_EXTERNAL_SCALER_PORT,
    ENV_NAMESPACE,
    ENV_WATCH_NAMESPACE,
    ENV_HEALTH_ADDRESS,
    ENV_METRICS_ADDRESS,
    ENV_METRICS_SECURE,
    ENV_METRICS_AUTH,
    ENV_METRICS_CERT_DIR,
    ENV_LEADER_ELECTION,
    ENV_LEASE_DURATION,
    ENV_LEASE_RENEW_DEADLINE,
    ENV_LEASE_RETRY_PERIOD,
];

/// Where Kubernetes mounts the pod's namespace.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";
/// Pod name, used as the leader identity (falls back to the hostname).
pub const ENV_POD_NAME: &str = "POD_NAME";

/// Name of the Lease used for leader election (upstream's).
pub const LEASE_NAME: &str = "http-add-on.keda.sh";

/// Everything the operator needs besides a Kubernetes client.
#[derive(Debug, Clone)]
pub struct Config {
    /// Name of the external scaler's Service, used in the ScaledObject trigger's `scalerAddress`.
    pub external_scaler_service: String,
    /// Port of the external scaler's Service.
    pub external_scaler_port: u16,
    /// Namespace of the operator: the scaler's Service and the Lease live here.
    pub namespace: String,
    /// Only watch this namespace; `None` watches all.
    pub watch_namespace: Option<String>,
    /// Address of the health probe server (`/healthz`, `/readyz`).
    pub health_address: SocketAddr,
    /// Address of the metrics server (`/metrics`).
    pub metrics_address: SocketAddr,
    /// How the metrics server serves: HTTPS, token checks.
    pub metrics_serving: MetricsServing,
    /// Leader election; `None` reconciles right away (a single replica).
    pub leader_election: Option<LeaderElectionConfig>,
}

/// How the metrics server serves, as controller-runtime's metrics server options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsServing {
    /// Serve HTTPS instead of plain HTTP.
    pub secure: bool,
    /// Require a bearer token that a TokenReview authenticates and a SubjectAccessReview allows
    /// to `get` `/metrics`; 401 without a valid token, 403 when not allowed.
    pub auth: bool,
    /// Directory of `tls.crt`/`tls.key` (reloaded when they change); `None` generates a
    /// self-signed certificate at start.
    pub cert_dir: Option<PathBuf>,
}

impl MetricsServing {
    /// Plain HTTP, no token checks.
    pub fn plain() -> Self {
        Self {
            secure: false,
            auth: false,
            cert_dir: None,
        }
    }

    /// Upstream's defaults: HTTPS with a self-signed certificate and token checks.
    pub fn secure() -> Self {
        Self {
            secure: true,
            auth: true,
            cert_dir: None,
        }
    }
}

/// Lease-based leader election settings.
#[derive(Debug, Clone)]
pub struct LeaderElectionConfig {
    /// Name of the Lease (in [`Config::namespace`]).
    pub lease_name: String,
    /// This replica's identity, written to `holderIdentity`.
    pub identity: String,
    /// Validity of the lease without renewal (`leaseDurationSeconds`, whole seconds, at least 1).
    pub lease_duration: Duration,
    /// The leader steps down when it could not renew for this long (shorter than the lease).
    pub renew_deadline: Duration,
    /// Interval between attempts to acquire or renew.
    pub retry_period: Duration,
}

impl LeaderElectionConfig {
    /// controller-runtime's defaults (15s lease, 10s renew deadline, 2s retry) for `identity`.
    pub fn new(identity: impl Into<String>) -> Self {
        Self {
            lease_name: LEASE_NAME.to_owned(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl Config {
    /// A configuration with defaults for everything but the scaler's Service name; servers bind
    /// to the default addresses, metrics are plain HTTP without token checks and leader
    /// election is off (an in-process operator, as in tests; [`Config::from_env`] has
    /// upstream's defaults: leader election, HTTPS metrics with token checks).
    pub fn new(external_scaler_service: impl Into<String>) -> Self {
        Self {
            external_scaler_service: external_scaler_service.into(),
            external_scaler_port: 8091,
            namespace: "keda".to_owned(),
            watch_namespace: None,
            health_address: SocketAddr::from(([0, 0, 0, 0], 8081)),
            metrics_address: SocketAddr::from(([0, 0, 0, 0], 8080)),
            metrics_serving: MetricsServing::plain(),
            leader_election: None,
        }
    }

    /// Reads the configuration; every error names the variable.
    pub fn from_env<S: EnvSource>(env: &Env<S>) -> Result<Self, ConfigError> {
        let service = env
            .string_deprecated(
                ENV_EXTERNAL_SCALER_SERVICE,
                ENV_DEPRECATED_EXTERNAL_SCALER_SERVICE,
            )
            .ok_or_else(|| ConfigError::Missing {
                name: ENV_EXTERNAL_SCALER_SERVICE.to_owned(),
            })?;
        let defaults = Self::new(service);
        let leader_election = if env.bool(ENV_LEADER_ELECTION, true)? {
            let identity = env
                .string(ENV_POD_NAME)
                .or_else(|| env.string("HOSTNAME"))
                .or_else(|| {
                    std::fs::read_to_string("/proc/sys/kernel/hostname")
                        .ok()
                        .map(|h| h.trim().to_owned())
                        .filter(|h| !h.is_empty())
                })
                .unwrap_or_else(|| "http-add-on-operator".to_owned());
            let base = LeaderElectionConfig::new(format!("{identity}_{}", random_suffix()));
            let le = LeaderElectionConfig {
                lease_duration: env.duration(ENV_LEASE_DURATION, base.lease_duration)?,
                renew_deadline: env.duration(ENV_LEASE_RENEW_DEADLINE, base.renew_deadline)?,
                retry_period: env.duration(ENV_LEASE_RETRY_PERIOD, base.retry_period)?,
                ..base
            };
            if le.lease_duration < Duration::from_secs(1) {
                return Err(invalid(
                    ENV_LEASE_DURATION,
                    &le.lease_duration,
                    "must be at least 1s",
                ));
            }
            if le.renew_deadline >= le.lease_duration {
                return Err(invalid(
                    ENV_LEASE_RENEW_DEADLINE,
                    &le.renew_deadline,
                    "must be shorter than the lease duration",
                ));
            }
            if le.retry_period.is_zero() || le.retry_period >= le.renew_deadline {
                return Err(invalid(
                    ENV_LEASE_RETRY_PERIOD,
                    &le.retry_period,
                    "must be positive and shorter than the renew deadline",
                ));
            }
            Some(le)
        } else {
            None
        };
        Ok(Self {
            external_scaler_port: env.parse_deprecated(
                ENV_EXTERNAL_SCALER_PORT,
                ENV_DEPRECATED_EXTERNAL_SCALER_PORT,
                defaults.external_scaler_port,
            )?,
            namespace: env
                .string(ENV_NAMESPACE)
                .or_else(own_namespace)
                .unwrap_or(defaults.namespace.clone()),
            watch_namespace: env.string(ENV_WATCH_NAMESPACE),
            health_address: env.parse(ENV_HEALTH_ADDRESS, defaults.health_address)?,
            metrics_address: env.parse(ENV_METRICS_ADDRESS, defaults.metrics_address)?,
            metrics_serving: MetricsServing {
                secure: env.bool(ENV_METRICS_SECURE, true)?,
                auth: env.bool(ENV_METRICS_AUTH, true)?,
                cert_dir: env.string(ENV_METRICS_CERT_DIR).map(PathBuf::from),
            },
            leader_election,
            ..defaults
        })
    }

    /// `scalerAddress` of the generated trigger: `<service>.<namespace>:<port>`.
    pub fn scaler_address(&self) -> String {
        format!(
            "{}.{}:{}",
            self.external_scaler_service, self.namespace, self.external_scaler_port
        )
    }
}

/// The pod's namespace from its service account mount, outside a cluster `None`.
fn own_namespace() -> Option<String> {
    std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE)
        .ok()
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
}

fn invalid(name: &str, value: &Duration, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        name: name.to_owned(),
        value: format!("{value:?}"),
        reason: reason.to_owned(),
    }
}

/// A short random hex suffix that keeps identities of restarted pods with the same name apart.
fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    format!("{:08x}", hasher.finish() as u32)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn env(pairs: &[(&'static str, &'static str)]) -> Env<BTreeMap<&'static str, &'static str>> {
        Env::new(pairs.iter().copied().collect())
    }

    #[test]
    fn missing_scaler_service_names_the_variable() {
        let err = Config::from_env(&env(&[])).unwrap_err();
        assert!(
            err.to_string().contains(ENV_EXTERNAL_SCALER_SERVICE),
            "{err}"
        );
    }

    #[test]
    fn defaults() {
        let c = Config::from_env(&env(&[
            (ENV_EXTERNAL_SCALER_SERVICE, "scaler"),
            (ENV_POD_NAME, "op-0"),
        ]))
        .unwrap();
        assert_eq!(c.scaler_address(), "scaler.keda:8091");
        assert_eq!(c.watch_namespace, None);
        assert_eq!(c.health_address, "0.0.0.0:8081".parse().unwrap());
        assert_eq!(c.metrics_address, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.metrics_serving, MetricsServing::secure());
        let le = c.leader_election.unwrap();
        assert_eq!(le.lease_name, "http-add-on.keda.sh");
        assert!(le.identity.starts_with("op-0_"), "{}", le.identity);
        assert_eq!(le.identity.len(), "op-0_".len() + 8);
        assert_eq!(le.lease_duration, Duration::from_secs(15));
        assert_eq!(le.renew_deadline, Duration::from_secs(10));
        assert_eq!(le.retry_period, Duration::from_secs(2));
    }

    #[test]
    fn overrides() {
        let c = Config::from_env(&env(&[
            (ENV_EXTERNAL_SCALER_SERVICE, "scaler"),
            (ENV_EXTERNAL_SCALER_PORT, "9091"),
            (ENV_NAMESPACE, "ops"),
            (ENV_WATCH_NAMESPACE, "apps"),
            (ENV_HEALTH_ADDRESS, "127.0.0.1:1"),
            (ENV_METRICS_ADDRESS, "127.0.0.1:2"),
            (ENV_METRICS_SECURE, "false"),
            (ENV_METRICS_AUTH, "0"),
            (ENV_METRICS_CERT_DIR, "/certs"),
            (ENV_LEADER_ELECTION, "false"),
        ]))
        .unwrap();
        assert_eq!(
            c.metrics_serving,
            MetricsServing {
                secure: false,
                auth: false,
                cert_dir: Some("/certs".into()),
            }
        );
        assert_eq!(c.scaler_address(), "scaler.ops:9091");
        assert_eq!(c.watch_namespace.as_deref(), Some("apps"));
        assert_eq!(c.health_address.port(), 1);
        assert_eq!(c.metrics_address.port(), 2);
        assert!(c.leader_election.is_none());
    }

    #[test]
    fn deprecated_scaler_names_win_when_set() {
        let c = Config::from_env(&env(&[
            (ENV_EXTERNAL_SCALER_SERVICE, "new"),
            (ENV_DEPRECATED_EXTERNAL_SCALER_SERVICE, "old"),
            (ENV_EXTERNAL_SCALER_PORT, "1"),
            (ENV_DEPRECATED_EXTERNAL_SCALER_PORT, "2"),
            (ENV_NAMESPACE, "ns"),
        ]))
        .unwrap();
        assert_eq!(c.scaler_address(), "old.ns:2");
        let c = Config::from_env(&env(&[(ENV_DEPRECATED_EXTERNAL_SCALER_SERVICE, "old")])).unwrap();
        assert_eq!(c.external_scaler_service, "old");
        let err = Config::from_env(&env(&[
            (ENV_EXTERNAL_SCALER_SERVICE, "s"),
            (ENV_DEPRECATED_EXTERNAL_SCALER_PORT, "x"),
        ]))
        .unwrap_err();
        assert!(
            err.to_string()
                .contains(ENV_DEPRECATED_EXTERNAL_SCALER_PORT),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (name, value) in [
            (ENV_EXTERNAL_SCALER_PORT, "http"),
            (ENV_HEALTH_ADDRESS, "8081"),
            (ENV_METRICS_ADDRESS, "x"),
            (ENV_METRICS_SECURE, "yes"),
            (ENV_METRICS_AUTH, "on"),
            (ENV_LEADER_ELECTION, "maybe"),
            (ENV_LEASE_DURATION, "15"),
            (ENV_LEASE_RENEW_DEADLINE, "20s"),
            (ENV_LEASE_RETRY_PERIOD, "0s"),
        ] {
            let err = Config::from_env(&env(&[(ENV_EXTERNAL_SCALER_SERVICE, "s"), (name, value)]))
                .unwrap_err();
            assert!(err.to_string().contains(name), "{name}: {err}");
        }
    }
}
