//! Simulated Kubernetes cluster for tests and the local demo (DESIGN.md §7).
//!
//! [`Sim`] runs everything in-process: the API server ([`apiserver`]), the workload controllers
//! ([`workloads`]) and the KEDA stand-in ([`keda`]). The controllers talk to the API server only
//! through a [`kube::Client`] over real HTTP, exactly as real controllers would.
//!
//! ```no_run
//! # async fn demo() -> Result<(), http_add_on_sim::SimError> {
//! let sim = http_add_on_sim::Sim::start(http_add_on_sim::SimConfig::default()).await?;
//! let client = sim.client();
//! // ... use `client`, or `kubectl --kubeconfig sim.kubeconfig_path()` ...
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

pub mod apiserver;
pub mod keda;
pub mod schema;
pub mod workloads;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use apiserver::{ApiServer, ApiServerConfig};

/// Errors starting the simulated cluster.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The API server could not start or resume.
    #[error(transparent)]
    ApiServer(#[from] apiserver::Error),
    /// Writing the kubeconfig failed.
    #[error("writing the kubeconfig {path}: {source}")]
    Kubeconfig {
        /// Where it was written.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// Building the client failed.
    #[error("building the kube client: {0}")]
    Client(#[from] kube::Error),
}

/// Options of [`Sim::start`].
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Address of the API server (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Where to write the kubeconfig; `None` writes it into a fresh temporary directory that is
    /// removed on shutdown.
    pub kubeconfig: Option<PathBuf>,
    /// Start the workload controllers and the KEDA stand-in.
    pub controllers: bool,
    /// How many change events the API server keeps for watches resuming from an old version.
    pub watch_history: usize,
    /// Static tokens (TokenReview) and denials (SubjectAccessReview); the default knows only
    /// the tokens it issues and allows everything.
    pub auth: apiserver::reviews::AuthConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        let api = ApiServerConfig::default();
        Self {
            listen: api.listen,
            kubeconfig: None,
            controllers: true,
            watch_history: api.watch_history,
            auth: api.auth,
        }
    }
}

impl SimConfig {
    /// Only the API server, without controllers.
    pub fn apiserver_only() -> Self {
        Self {
            controllers: false,
            ..Self::default()
        }
    }
}

/// The kubeconfig for a cluster/context/user named `sim` at `url` (plain HTTP, no auth).
pub fn kubeconfig_yaml(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: sim\n  cluster:\n    server: {url}\ncontexts:\n- name: sim\n  context:\n    cluster: sim\n    user: sim\n    namespace: default\ncurrent-context: sim\nusers:\n- name: sim\n  user: {{}}\npreferences: {{}}\n"
    )
}

fn unique_temp_dir() -> PathBuf {
    let n = apiserver::ops::random_u64();
    std::env::temp_dir().join(format!("http-add-on-sim-{}-{n:016x}", std::process::id()))
}

/// Resolves KEDA `scalerAddress`es through the cluster's Services.
struct ServiceResolver(kube::Client);

impl keda::Resolver for ServiceResolver {
    fn resolve(&self, address: &str) -> impl Future<Output = Result<SocketAddr, String>> + Send {
        let (client, address) = (self.0.clone(), address.to_string());
        async move {
            workloads::resolve_service(&client, &address)
                .await
                .map_err(|e| e.to_string())
        }
    }
}

/// A running simulated cluster.
pub struct Sim {
    api: ApiServer,
    kubeconfig: PathBuf,
    temp_dir: Option<PathBuf>,
    client: kube::Client,
    controllers: Vec<tokio::task::JoinHandle<()>>,
    stop_controllers: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("url", &self.api.url())
            .field("kubeconfig", &self.kubeconfig)
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// Starts the API server (and, if configured, the controllers) and writes the kubeconfig.
    pub async fn start(config: SimConfig) -> Result<Self, SimError> {
        let api = ApiServer::start(ApiServerConfig {
            listen: config.listen,
            watch_history: config.watch_history,
            auth: config.auth.clone(),
        })
        .await?;
        let url = api.url();
        let (kubeconfig, temp_dir) = match config.kubeconfig {
            Some(p) => (p, None),
            None => {
                let dir = unique_temp_dir();
                (dir.join("kubeconfig"), Some(dir))
            }
        };
        let write = || -> std::io::Result<()> {
            if let Some(parent) = kubeconfig.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&kubeconfig, kubeconfig_yaml(&url))
        };
        write().map_err(|source| SimError::Kubeconfig {
            path: kubeconfig.clone(),
            source,
        })?;
        let mut cfg = kube::Config::new(url.parse().expect("the API server URL is a valid URI"));
        cfg.default_namespace = "default".into();
        let client = kube::Client::try_from(cfg)?;
        let (stop_controllers, _) = tokio::sync::watch::channel(false);
        let mut sim = Self {
            api,
            kubeconfig,
            temp_dir,
            client,
            controllers: vec![],
            stop_controllers,
        };
        if config.controllers {
            sim.start_controllers();
        }
        Ok(sim)
    }

    fn shutdown_signal(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.stop_controllers.subscribe();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }

    fn start_controllers(&mut self) {
        let client = self.client.clone();
        let shutdown = self.shutdown_signal();
        self.controllers.push(tokio::spawn(async move {
            if let Err(error) = workloads::run(client, shutdown).await {
                tracing::error!(%error, "workload controllers stopped");
            }
        }));
        let client = self.client.clone();
        let shutdown = self.shutdown_signal();
        self.controllers.push(tokio::spawn(async move {
            let resolver = ServiceResolver(client.clone());
            if let Err(error) = keda::run(client, resolver, shutdown).await {
                tracing::error!(%error, "KEDA stand-in stopped");
            }
        }));
    }

    /// Path of the kubeconfig (cluster, context and user named `sim`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// A client for the API server (default namespace `default`).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// Creates a Namespace through the API (an existing one is fine). Like Kubernetes, the
    /// simulated API server creates nothing in a namespace that does not exist; only
    /// `default`, `kube-system`, `kube-public` and `kube-node-lease` are there from the start.
    pub async fn create_namespace(&self, name: &str) -> Result<(), kube::Error> {
        let api: kube::Api<k8s_openapi::api::core::v1::Namespace> =
            kube::Api::all(self.client.clone());
        let ns = k8s_openapi::api::core::v1::Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_owned()),
                ..Default::default()
            },
            ..Default::default()
        };
        match api.create(&kube::api::PostParams::default(), &ns).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The API server's base URL.
    pub fn url(&self) -> String {
        self.api.url()
    }

    /// The API server itself (state inspection, stop/resume).
    pub fn apiserver(&self) -> &ApiServer {
        &self.api
    }

    /// Stops the API server's listener: open watches break and requests fail until
    /// [`Sim::start_apiserver`]. Stored state is kept.
    pub async fn stop_apiserver(&self) {
        self.api.stop().await;
    }

    /// Serves again on the same port with the same state.
    pub async fn start_apiserver(&self) -> Result<(), SimError> {
        Ok(self.api.resume().await?)
    }

    /// Stops and restarts the API server (same port, same state).
    pub async fn restart_apiserver(&self) -> Result<(), SimError> {
        self.stop_apiserver().await;
        self.start_apiserver().await
    }

    /// Stops the controllers and the API server and removes the temporary kubeconfig.
    pub async fn shutdown(mut self) {
        let _ = self.stop_controllers.send(true);
        for task in self.controllers.drain(..) {
            let abort = task.abort_handle();
            if tokio::time::timeout(std::time::Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        self.api.stop().await;
        // Drop removes the temporary directory.
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.stop_controllers.send(true);
        for task in &self.controllers {
            task.abort();
        }
        if let Some(dir) = &self.temp_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
