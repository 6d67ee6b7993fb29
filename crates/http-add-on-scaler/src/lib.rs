//! KEDA HTTP Add-on scaler: a KEDA external scaler (gRPC) fed by counts the interceptors push.
//!
//! [`start`] runs everything in-process: EndpointSlice discovery of the interceptors, one
//! count fetcher per interceptor ([`interceptors`]), the aggregator ([`counts`]), reflectors of
//! the route objects ([`routes`]), the gRPC server with health and reflection ([`grpc`]) and the
//! Prometheus endpoint ([`metrics`]).

pub mod config;
pub mod counts;
pub mod discovery;
pub mod grpc;
pub mod hpa;
pub mod interceptors;
pub mod metrics;
pub mod naming;
pub mod rate;
pub mod routes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_add_on_types::proto::FILE_DESCRIPTOR_SET;
use http_add_on_types::proto::externalscaler::external_scaler_server::ExternalScalerServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic_health::ServingStatus;

pub use config::Config;
pub use counts::Counts;

/// gRPC health service name reporting that the process is alive.
pub const LIVENESS_SERVICE: &str = "liveness";
/// gRPC health service name reporting that interceptor data is fresh.
pub const READINESS_SERVICE: &str = "readiness";

/// Why the scaler could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound.
    #[error("binding {what} on {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Building the reflection service failed.
    #[error("building gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// The OTLP metrics push could not start.
    #[error(transparent)]
    Telemetry(#[from] http_add_on_types::telemetry::TelemetryError),
}

/// Result with the scaler's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A running scaler; dropping it without [`RunningScaler::shutdown`] aborts its tasks.
pub struct RunningScaler {
    grpc_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    profiling_addr: Option<SocketAddr>,
    counts: Arc<Counts>,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<Result<()>>>,
    tasks: Vec<JoinHandle<()>>,
    /// The OTLP metrics push (traces are the process's: see `main`).
    telemetry: Option<http_add_on_types::telemetry::Telemetry>,
}

impl RunningScaler {
    /// Address of the gRPC server.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Address of the `/metrics` endpoint; `None` when it is off
    /// (`OTEL_PROM_EXPORTER_ENABLED=false`).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Address of the debug endpoint (`/debug/stats`); `None` unless `PROFILING_BIND_ADDRESS`
    /// is set.
    pub fn profiling_addr(&self) -> Option<SocketAddr> {
        self.profiling_addr
    }

    /// The counts aggregator (for inspection).
    pub fn counts(&self) -> &Arc<Counts> {
        &self.counts
    }

    /// Waits until the gRPC server stops on its own (an error) — normally never.
    pub async fn wait(&mut self) -> Result<()> {
        match self.server.as_mut() {
            Some(server) => {
                let result = server.await.unwrap_or(Ok(()));
                self.server = None;
                result
            }
            None => Ok(()),
        }
    }

    /// Stops serving (in-flight calls finish, streams end) and stops every task.
    pub async fn shutdown(mut self) -> Result<()> {
        let _ = self.stop.send(true);
        let result = match self.server.take() {
            Some(server) => server.await.unwrap_or(Ok(())),
            None => Ok(()),
        };
        for task in self.tasks.drain(..) {
            task.abort();
        }
        if let Some(telemetry) = self.telemetry.take() {
            telemetry.shutdown().await;
        }
        result
    }
}

impl Drop for RunningScaler {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(server) = &self.server {
            server.abort();
        }
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// How often state of deleted routes is looked for.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);
/// How often the HPAs of known ScaledObjects are checked against their routes' metric specs.
const HPA_MARK_INTERVAL: Duration = Duration::from_secs(2);

/// Every `interval`, forgets the counts and metric series of routes whose HTTPScaledObject or
/// InterceptorRoute is gone and that are idle, so deleted routes do not accumulate.
async fn prune_routes(
    counts: Arc<Counts>,
    specs: routes::RouteSpecs,
    metrics: Arc<metrics::Metrics>,
    interval: Duration,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        // Until the caches have synced, every route counts as existing.
        let gone = counts.prune(Instant::now(), |route| specs.exists(route).unwrap_or(true));
        for route in gone {
            tracing::debug!(route, "forgot a deleted route");
            metrics.forget(&route);
        }
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { what, addr, source })
}

/// Binds the listeners and starts every part of the scaler on `client`.
pub async fn start(config: Config, client: kube::Client) -> Result<RunningScaler> {
    let grpc_listener = bind("the gRPC server", config.grpc_listen).await?;
    let metrics_listener = if config.metrics_enabled {
        Some(bind("the metrics endpoint", config.metrics_listen).await?)
    } else {
        None
    };
    let profiling_listener = match config.profiling_listen {
        Some(addr) => Some(bind("the debug endpoint", addr).await?),
        None => None,
    };
    let profiling_addr = profiling_listener
        .as_ref()
        .zip(config.profiling_listen)
        .map(|(l, addr)| local_addr(l, addr));
    let grpc_addr = local_addr(&grpc_listener, config.grpc_listen);
    let metrics_addr = metrics_listener
        .as_ref()
        .map(|l| local_addr(l, config.metrics_listen));
    tracing::info!(
        %grpc_addr,
        ?metrics_addr,
        ?profiling_addr,
        admin_namespace = %config.admin_namespace,
        admin_service = %config.admin_service,
        admin_deployment = ?config.admin_deployment,
        "starting the scaler"
    );

    let counts = Arc::new(Counts::new(config.stale_after()));
    let metrics = Arc::new(metrics::Metrics::new());
    // The same series as `/metrics`, pushed over OTLP when enabled.
    let telemetry = http_add_on_types::telemetry::Telemetry::start(
        metrics::SERVICE_NAME,
        &http_add_on_types::telemetry::OtelConfig {
            traces_enabled: false,
            ..config.otel.clone()
        },
        Some({
            let metrics = metrics.clone();
            Arc::new(move || metrics.encode())
        }),
    )?;
    let mut tasks = Vec::new();

    let (endpoints_tx, endpoints_rx) = watch::channel(discovery::Endpoints::new());
    tasks.push(tokio::spawn(discovery::watch_endpoints(
        client.clone(),
        config.admin_namespace.clone(),
        config.admin_service.clone(),
        config.admin_port,
        endpoints_tx,
    )));
    let fetchers = interceptors::Fetchers {
        counts: counts.clone(),
        metrics: metrics.clone(),
        tick: config.queue_tick,
    };
    tasks.push(tokio::spawn(fetchers.supervise(endpoints_rx)));

    let (route_specs, reflectors) = routes::RouteSpecs::start(client.clone());
    tasks.push(reflectors);
    tasks.push(tokio::spawn(prune_routes(
        counts.clone(),
        route_specs.clone(),
        metrics.clone(),
        PRUNE_INTERVAL,
    )));
    if let Some(listener) = metrics_listener {
        tasks.push(tokio::spawn(metrics::serve(
            listener,
            metrics.clone(),
            counts.clone(),
        )));
    }

    if let Some(listener) = profiling_listener {
        tasks.push(tokio::spawn(metrics::serve_debug(listener)));
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(LIVENESS_SERVICE, ServingStatus::Serving)
        .await;
    health
        .set_service_status(READINESS_SERVICE, ServingStatus::NotServing)
        .await;
    health
        .set_serving::<ExternalScalerServer<grpc::ScalerService>>()
        .await;
    tasks.push(tokio::spawn(report_readiness(
        health,
        counts.clone(),
        config.queue_tick,
    )));

    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let marks = Arc::new(hpa::HpaMarks::default());
    let service =
        grpc::ScalerService::new(counts.clone(), route_specs, metrics, config.stream_interval)
            .with_push_activation(config.push_activation)
            .with_hpa_marks(marks.clone());
    let answers = service.clone();
    tasks.push(tokio::spawn(marks.run(
        client,
        move |sor| answers.metric_spec(sor).ok(),
        HPA_MARK_INTERVAL,
    )));
    let (stop, mut stopped) = watch::channel(false);
    let server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(ExternalScalerServer::new(service))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(grpc_listener),
            async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            },
        );
    let server = tokio::spawn(async move { server.await.map_err(Error::from) });

    Ok(RunningScaler {
        grpc_addr,
        metrics_addr,
        profiling_addr,
        counts,
        stop,
        server: Some(server),
        tasks,
        telemetry: Some(telemetry),
    })
}

/// Runs the scaler until `shutdown` completes.
pub async fn run(
    config: Config,
    client: kube::Client,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let mut scaler = start(config, client).await?;
    tokio::select! {
        result = scaler.wait() => result,
        () = shutdown => {
            tracing::info!("shutting down");
            scaler.shutdown().await
        }
    }
}

fn local_addr(listener: &TcpListener, fallback: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(fallback)
}

/// Keeps the `readiness` health status in step with the freshness of interceptor data: not
/// serving when no interceptor delivered data (or held a stream open) for twice the tick.
async fn report_readiness(
    health: tonic_health::server::HealthReporter,
    counts: Arc<Counts>,
    tick: Duration,
) {
    let mut interval = tokio::time::interval((tick / 4).max(Duration::from_millis(10)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = None;
    loop {
        interval.tick().await;
        let ready = counts.reachability(Instant::now()).fresh_data;
        if last != Some(ready) {
            let status = if ready {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            health.set_service_status(READINESS_SERVICE, status).await;
            last = Some(ready);
        }
    }
}
