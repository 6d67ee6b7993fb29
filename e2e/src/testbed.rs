//! What a scenario may use: a kube client, the interceptor's proxy address, cluster controls.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;

/// Operations that differ between cluster kinds.
pub trait ClusterControl: Send + Sync {
    /// `sim` or `kind`.
    fn kind(&self) -> &'static str;
    /// How many interceptor replicas run.
    fn interceptor_count(&self) -> usize;
    /// Terminates interceptor `index` the way Kubernetes would: out of the endpoints first, then
    /// SIGTERM; resolves once the process exited (with its exit status as text).
    fn terminate_interceptor(&self, index: usize) -> BoxFuture<'_, anyhow::Result<String>>;
    /// Admin addresses (`/queue`) of the running interceptors.
    fn interceptor_admins(&self) -> Vec<SocketAddr>;
    /// Recent logs of the components, shown when a scenario fails.
    fn component_logs(&self) -> String;
}

/// The cluster as scenarios see it.
#[derive(Clone)]
pub struct Testbed {
    /// Client for the cluster's API server.
    pub client: kube::Client,
    /// Where clients send HTTP requests (the interceptor proxy Service).
    pub proxy: SocketAddr,
    /// Cluster-kind-specific controls.
    pub control: Arc<dyn ClusterControl>,
}
