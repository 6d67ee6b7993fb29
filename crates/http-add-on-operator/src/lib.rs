//! The KEDA HTTP Add-on operator (DESIGN.md §6).
//!
//! For every HTTPScaledObject it server-side applies a KEDA ScaledObject and sets the status;
//! for every InterceptorRoute it sets the `Ready` condition. Route conflicts between any two
//! objects are reported on the younger one. With leader election on, only the replica holding
//! the Lease `http-add-on.keda.sh` runs the controllers.
//!
//! Run it in-process (tests) with [`Operator::start`], or until a signal with [`run`]:
//!
//! ```no_run
//! # async fn demo(client: kube::Client) -> http_add_on_operator::Result<()> {
//! use http_add_on_operator::{Config, Operator};
//! let mut config = Config::new("keda-add-ons-http-external-scaler");
//! config.health_address = "127.0.0.1:0".parse().unwrap();
//! config.metrics_address = "127.0.0.1:0".parse().unwrap();
//! let operator = Operator::start(client, config).await?;
//! operator.wait_until_leading().await;
//! // ... create HTTPScaledObjects ...
//! operator.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Configuration (environment; see [`config`])
//!
//! | variable | default | |
//! |---|---|---|
//! | `KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_SERVICE` | required | scaler Service in `scalerAddress` |
//! | `KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_PORT` | `8091` | |
//! | `KEDA_HTTP_OPERATOR_NAMESPACE` | `keda` | scaler Service and Lease namespace |
//! | `KEDA_HTTP_OPERATOR_WATCH_NAMESPACE` | all | one namespace to watch |
//! | `KEDA_HTTP_OPERATOR_HEALTH_ADDRESS` | `0.0.0.0:8081` | upstream flag `--health-probe-bind-address` |
//! | `KEDA_HTTP_OPERATOR_METRICS_ADDRESS` | `0.0.0.0:8080` | upstream flag `--metrics-bind-address` |
//! | `KEDA_HTTP_OPERATOR_METRICS_SECURE` | `true` | HTTPS metrics; upstream flag `--metrics-secure` |
//! | `KEDA_HTTP_OPERATOR_METRICS_AUTH` | `true` | bearer token checks (TokenReview + SubjectAccessReview); `--metrics-auth` |
//! | `KEDA_HTTP_OPERATOR_METRICS_CERT_DIR` | self-signed | `tls.crt`/`tls.key` of the metrics server; `--metrics-cert-dir` |
//! | `KEDA_HTTP_OPERATOR_LEADER_ELECTION` | `true` | |
//! | `KEDA_HTTP_OPERATOR_LEASE_DURATION` / `_RENEW_DEADLINE` / `_RETRY_PERIOD` | `15s` / `10s` / `5s` | |
//! | `POD_NAME` (else `HOSTNAME`) | | identity prefix; a random suffix is appended |
//!
//! Upstream's controller-runtime flags (`--metrics-bind-address`, `--health-probe-bind-address`,
//! `--leader-elect`, `--metrics-secure`, `--metrics-auth`, `--metrics-cert-dir`) are accepted
//! too and win over the variables; zap's `--zap-*` flags are accepted and ignored (see
//! [`flags`]).
//!
//! # Decisions
//!
//! - An object that loses a route conflict still gets its ScaledObject: scaling it is
//!   harmless, and the interceptor's precedence decides who serves the contested route.
//!   Only its `Ready` condition says `RouteConflict`.
//! - An invalid spec (`InvalidSpec`) leaves an existing ScaledObject untouched and creates none.
//! - Writes are skipped when nothing would change (status, ScaledObject), so a quiet cluster
//!   sees no writes from the operator; the ScaledObject is applied with `force`.
//! - `kubectl.kubernetes.io/last-applied-configuration` is not copied to the ScaledObject.
//! - On losing the lease the controllers stop at once (before the lease can expire for the
//!   others) and the replica becomes a candidate again; on shutdown the lease is released.
//! - Metrics use controller-runtime's names (`controller_runtime_reconcile_total`,
//!   `controller_runtime_reconcile_errors_total`, `controller_runtime_reconcile_time_seconds`,
//!   `leader_election_master_status`).

pub mod auth;
pub mod config;
pub mod controller;
pub mod flags;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod routes;
pub mod scaled_object;
pub mod status;
pub mod tls;
pub mod validate;

use std::net::SocketAddr;
use std::sync::Arc;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use config::{Config, LeaderElectionConfig, MetricsServing};
use leader::{Attempt, LeaderElector};
pub use metrics::Metrics;

/// Errors of the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Writing the ScaledObject failed.
    #[error("applying ScaledObject {name}: {source}")]
    ScaledObject {
        /// `namespace/name` of the ScaledObject.
        name: String,
        /// The API error.
        source: kube::Error,
    },
    /// Adding or removing the finalizer (or the wrapped reconciliation) failed.
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// A patch could not be built.
    #[error("building a patch: {0}")]
    Serialize(#[from] serde_json::Error),
    /// A namespaced object arrived without a namespace.
    #[error("object has no namespace")]
    NotNamespaced,
    /// A server could not bind its address.
    #[error("binding the {what} server to {address}: {source}")]
    Bind {
        /// `health` or `metrics`.
        what: &'static str,
        /// The address.
        address: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The metrics server's certificate could not be loaded or made.
    #[error("metrics server TLS: {0}")]
    Tls(#[from] tls::TlsError),
    /// The operator task panicked or was aborted.
    #[error("operator task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Result with the operator's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A running operator: probe and metrics servers, leader election and (while leading) the
/// controllers.
pub struct Operator {
    identity: String,
    health_addr: SocketAddr,
    metrics_addr: SocketAddr,
    metrics: Arc<Metrics>,
    leading: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    servers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operator")
            .field("identity", &self.identity)
            .field("health_addr", &self.health_addr)
            .field("metrics_addr", &self.metrics_addr)
            .finish_non_exhaustive()
    }
}

impl Operator {
    /// Binds the servers and starts leader election (or the controllers right away when
    /// `config.leader_election` is `None`).
    pub async fn start(client: Client, config: Config) -> Result<Self> {
        let metrics = Arc::new(Metrics::new());
        let health = http::bind("health", config.health_address).await?;
        let metrics_listener = http::bind("metrics", config.metrics_address).await?;
        let health_addr = health.local_addr().map_err(|source| Error::Bind {
            what: "health",
            address: config.health_address,
            source,
        })?;
        let metrics_addr = metrics_listener
            .local_addr()
            .map_err(|source| Error::Bind {
                what: "metrics",
                address: config.metrics_address,
                source,
            })?;
        let serving = config.metrics_serving.clone();
        let tls = if serving.secure {
            Some(tls::server_config(serving.cert_dir.as_deref())?)
        } else {
            None
        };
        let authorizer = serving
            .auth
            .then(|| Arc::new(auth::Authorizer::new(client.clone())));
        let servers = vec![
            http::serve(health, http::Endpoints::Health, None),
            http::serve(
                metrics_listener,
                http::Endpoints::Metrics(metrics.clone(), authorizer),
                tls,
            ),
        ];
        let identity = config.leader_election.as_ref().map_or_else(
            || "http-add-on-operator".to_owned(),
            |le| le.identity.clone(),
        );
        let (leading_tx, leading) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run_loop(
            client,
            config,
            metrics.clone(),
            leading_tx,
            stop_rx,
        ));
        tracing::info!(
            %identity,
            %health_addr,
            %metrics_addr,
            metrics_secure = serving.secure,
            metrics_auth = serving.auth,
            "operator started"
        );
        Ok(Self {
            identity,
            health_addr,
            metrics_addr,
            metrics,
            leading,
            stop,
            task,
            servers,
        })
    }

    /// The leader-election identity (`holderIdentity` while leading).
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Where `/healthz` and `/readyz` are served.
    pub fn health_addr(&self) -> SocketAddr {
        self.health_addr
    }

    /// Where `/metrics` is served.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// This instance's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Whether the controllers run in this instance now.
    pub fn is_leading(&self) -> bool {
        *self.leading.borrow()
    }

    /// Resolves once this instance leads.
    pub async fn wait_until_leading(&self) {
        let mut rx = self.leading.clone();
        // Err only when the loop ended, which happens only after `shutdown`/`abort`.
        let _ = rx.wait_for(|leading| *leading).await;
    }

    /// Stops the controllers, releases the lease (so another replica takes over at once) and
    /// stops the servers.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(error) = self.task.await {
            tracing::warn!(%error, "operator task ended abnormally");
        }
        for server in self.servers {
            server.abort();
        }
        tracing::info!(identity = %self.identity, "operator stopped");
    }

    /// Stops everything at once without releasing the lease, as a crash would.
    pub fn abort(self) {
        self.task.abort();
        for server in self.servers {
            server.abort();
        }
    }
}

/// Runs the operator until `shutdown` resolves, then stops it cleanly.
pub async fn run(client: Client, config: Config, shutdown: impl Future<Output = ()>) -> Result<()> {
    let operator = Operator::start(client, config).await?;
    shutdown.await;
    tracing::info!("shutting down");
    operator.shutdown().await;
    Ok(())
}

async fn stopped(stop: &watch::Receiver<bool>) {
    let mut stop = stop.clone();
    // A dropped sender counts as a stop.
    let _ = stop.wait_for(|s| *s).await;
}

async fn run_loop(
    client: Client,
    config: Config,
    metrics: Arc<Metrics>,
    leading: watch::Sender<bool>,
    stop: watch::Receiver<bool>,
) {
    let Some(le) = config.leader_election.clone() else {
        let _ = leading.send(true);
        tokio::select! {
            () = controller::run(client, &config, metrics, "http-add-on-operator".to_owned()) => {}
            () = stopped(&stop) => {}
        }
        let _ = leading.send(false);
        return;
    };
    let lease_api: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
    let mut elector = LeaderElector::new(lease_api, le.clone());
    metrics.set_leader(&le.lease_name, false);
    loop {
        // Candidate: try until we hold the lease.
        loop {
            let attempt = tokio::select! {
                () = stopped(&stop) => return,
                a = tokio::time::timeout(le.renew_deadline, elector.try_acquire_or_renew()) => a,
            };
            match attempt {
                Ok(Ok(Attempt::Held)) => break,
                Ok(Ok(Attempt::HeldBy(holder))) => {
                    tracing::debug!(%holder, "another replica leads");
                }
                Ok(Ok(Attempt::Conflict)) => tracing::debug!("lease changed concurrently"),
                Ok(Err(error)) => tracing::warn!(%error, "acquiring the lease failed"),
                Err(_) => tracing::warn!("acquiring the lease timed out"),
            }
            tokio::select! {
                () = stopped(&stop) => return,
                () = tokio::time::sleep(le.retry_period) => {}
            }
        }
        tracing::info!(identity = %le.identity, lease = %le.lease_name, "became the leader");
        metrics.set_leader(&le.lease_name, true);
        let _ = leading.send(true);
        let controllers = tokio::spawn({
            let (client, config, metrics, identity) = (
                client.clone(),
                config.clone(),
                metrics.clone(),
                le.identity.clone(),
            );
            async move { controller::run(client, &config, metrics, identity).await }
        });
        let mut last_renewal = Instant::now();
        let reason = loop {
            tokio::select! {
                () = stopped(&stop) => {
                    controllers.abort();
                    let _ = controllers.await;
                    let _ = leading.send(false);
                    metrics.set_leader(&le.lease_name, false);
                    if let Err(error) = elector.release().await {
                        tracing::warn!(%error, "releasing the lease failed");
                    }
                    return;
                }
                () = tokio::time::sleep(le.retry_period) => {}
            }
            let budget = le.renew_deadline.saturating_sub(last_renewal.elapsed());
            match tokio::time::timeout(budget, elector.try_acquire_or_renew()).await {
                Ok(Ok(Attempt::Held)) => last_renewal = Instant::now(),
                Ok(Ok(Attempt::HeldBy(holder))) => break format!("the lease is held by {holder}"),
                Ok(Ok(Attempt::Conflict)) => tracing::debug!("lease changed concurrently"),
                Ok(Err(error)) => tracing::warn!(%error, "renewing the lease failed"),
                Err(_) => {}
            }
            if last_renewal.elapsed() >= le.renew_deadline {
                break format!("no renewal within {:?}", le.renew_deadline);
            }
        };
        // Stop writing before anyone else may start.
        controllers.abort();
        let _ = controllers.await;
        let _ = leading.send(false);
        metrics.set_leader(&le.lease_name, false);
        tracing::warn!(%reason, "lost the leadership; controllers stopped");
    }
}
