//! The simulated API server: storage, discovery, list/watch, patches, CRDs and validation.
//!
//! Layout: [`store`] keeps objects, the global resourceVersion and the event history;
//! [`registry`] knows the resource types (built-ins and CRDs); [`ops`] implements the API
//! semantics; [`patch`] the patch formats; [`fields`] server-side apply and field ownership; [`http`] the REST layer and watch streams;
//! [`discovery`] the discovery, OpenAPI and Table documents. The state lives in [`Shared`],
//! independent of the HTTP listener, so the listener can be stopped and restarted on the same
//! port with the same state (watches break and clients resume).

mod bootstrap;
pub mod discovery;
pub mod error;
pub mod fields;
pub mod http;
pub mod openapi;
pub mod ops;
pub mod patch;
pub mod protobuf;
pub mod registry;
pub mod reviews;
pub mod selector;
pub mod store;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use self::ops::{Cluster, WriteOptions};

/// Errors of the API server's lifecycle.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding or serving the listener failed.
    #[error("API server listener: {0}")]
    Io(#[from] std::io::Error),
    /// Installing a built-in CRD failed.
    #[error("installing a built-in object: {0}")]
    Install(#[from] error::ApiError),
}

/// Result type of the API server's lifecycle.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Options of the API server.
#[derive(Debug, Clone)]
pub struct ApiServerConfig {
    /// Address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// How many change events are kept for watches resuming from an old resourceVersion.
    pub watch_history: usize,
    /// Tokens and denials of the review APIs (TokenReview, SubjectAccessReview, ...).
    pub auth: reviews::AuthConfig,
}

impl Default for ApiServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            watch_history: 10_000,
            auth: reviews::AuthConfig::default(),
        }
    }
}

/// State shared by the request handlers, surviving listener restarts.
#[derive(Debug)]
pub struct Shared {
    cluster: Mutex<Cluster>,
    /// Wakes the garbage collector after deletions.
    gc_notify: Notify,
    /// Bumped when the listener stops, which ends every open watch.
    stopping: watch::Sender<u64>,
    addr: Mutex<SocketAddr>,
    /// The review APIs' configuration and issued tokens.
    reviews: reviews::Reviews,
}

impl Shared {
    /// Locks the cluster state.
    pub fn lock(&self) -> MutexGuard<'_, Cluster> {
        self.cluster.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn addr_string(&self) -> String {
        self.addr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .to_string()
    }
}

struct Running {
    shutdown: Arc<Notify>,
    task: JoinHandle<()>,
}

/// A running API server.
pub struct ApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    running: tokio::sync::Mutex<Option<Running>>,
    gc_task: JoinHandle<()>,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

async fn run_gc(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            () = shared.gc_notify.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let mut c = shared.lock();
        if c.gc_needed {
            c.gc_needed = false;
            let n = c.collect_garbage();
            if n > 0 {
                tracing::debug!(count = n, "garbage collected");
            }
        }
    }
}

impl ApiServer {
    /// Starts the API server with the built-in types and the KEDA ScaledObject CRD installed.
    pub async fn start(config: ApiServerConfig) -> Result<Self> {
        let mut cluster = Cluster::new(config.watch_history);
        let crds = cluster
            .registry
            .get("apiextensions.k8s.io", "customresourcedefinitions")
            .expect("built-in CRD type");
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            cluster.ensure_namespace(ns);
        }
        cluster.create(
            &crds,
            "v1",
            None,
            registry::scaled_object_crd(),
            &WriteOptions::default(),
        )?;
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        bootstrap::install(&mut cluster, addr)?;
        let shared = Arc::new(Shared {
            cluster: Mutex::new(cluster),
            gc_notify: Notify::new(),
            stopping: watch::Sender::new(0),
            addr: Mutex::new(addr),
            reviews: reviews::Reviews::new(config.auth.clone()),
        });
        let gc_task = tokio::spawn(run_gc(shared.clone()));
        let running = Self::serve(shared.clone(), listener);
        tracing::info!(%addr, "API server listening");
        Ok(Self {
            shared,
            addr,
            running: tokio::sync::Mutex::new(Some(running)),
            gc_task,
        })
    }

    fn serve(shared: Arc<Shared>, listener: TcpListener) -> Running {
        let shutdown = Arc::new(Notify::new());
        let signal = shutdown.clone();
        let app = http::router(shared);
        let task = tokio::spawn(async move {
            // Watch events are small writes: without TCP_NODELAY, Nagle's algorithm and delayed
            // ACKs hold them back ~40 ms, which would show up as cold-start latency.
            let listener =
                axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(error = %e, "could not set TCP_NODELAY");
                    }
                });
            let result = axum::serve(listener, app)
                .with_graceful_shutdown(async move { signal.notified().await })
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "API server failed");
            }
        });
        Running { shutdown, task }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The shared state (for in-process inspection).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops serving HTTP (open watches end, connections close); the state is kept.
    pub async fn stop(&self) {
        let Some(running) = self.running.lock().await.take() else {
            return;
        };
        self.shared.stopping.send_modify(|g| *g += 1);
        running.shutdown.notify_one();
        let abort = running.task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), running.task)
            .await
            .is_err()
        {
            abort.abort();
        }
        tracing::info!(addr = %self.addr, "API server stopped");
    }

    /// Serves again on the same address after [`ApiServer::stop`].
    pub async fn resume(&self) -> Result<()> {
        let mut running = self.running.lock().await;
        if running.is_some() {
            return Ok(());
        }
        let listener = TcpListener::bind(self.addr).await?;
        *running = Some(Self::serve(self.shared.clone(), listener));
        tracing::info!(addr = %self.addr, "API server resumed");
        Ok(())
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.gc_task.abort();
        self.shared.stopping.send_modify(|g| *g += 1);
        if let Some(r) = self.running.get_mut().take() {
            r.shutdown.notify_one();
            r.task.abort();
        }
    }
}
