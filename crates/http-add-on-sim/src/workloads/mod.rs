//! Deployment controller, kubelet (pods as built-in HTTP apps), EndpointSlice controller and
//! Service proxy of the simulated cluster.
//!
//! Everything here talks to the API server only through a [`kube::Client`], with watches (no
//! polling), exactly as real controllers do:
//! - **Deployment controller**: one ReplicaSet per pod-template revision of each `apps/v1`
//!   Deployment (`<deploy>-<pod-template-hash>`, owned by the Deployment, numbered by
//!   `deployment.kubernetes.io/revision`); the current one gets `spec.replicas`, the old ones
//!   are scaled to 0 once it is ready and kept up to `revisionHistoryLimit` (so `kubectl rollout
//!   history/undo` work); the Deployment's status sums theirs.
//! - **ReplicaSet controller**: keeps `spec.replicas` Pods per ReplicaSet (named
//!   `<replicaset>-<rand5>`, owned by the ReplicaSet) and keeps its status true.
//! - **Kubelet**: runs every Pod as the built-in echo app on a random loopback IP in
//!   127.64.0.0/10, on the container ports of the pod spec (8080 when none). The app echoes a JSON
//!   description of the request (`pod`, `namespace`, `podIp`, `method`, `protocol`, `host`,
//!   `path`, `query`, `headers`, `body`) with 200, answers `/status/<code>` with that code and
//!   `/delay/<go duration>` after that delay. Pod annotations `sim.http.keda.sh/startup-delay`
//!   and `sim.http.keda.sh/response-delay` (Go durations) delay readiness and every response.
//!   A deleted Pod is first marked not ready (the kubelet waits, bounded, until the EndpointSlices
//!   show it), then drained: requests in flight finish (hyper graceful shutdown; late connections
//!   still get one request), then the listener closes and the Pod object goes (the kubelet holds
//!   the finalizer [`POD_FINALIZER`] until its app has stopped, at most the pod's
//!   `terminationGracePeriodSeconds`, default 30 s). A Pod object that vanishes stops its app too.
//! - **EndpointSlice controller**: one managed EndpointSlice per Service with a selector (more
//!   when pods resolve a named target port differently); selectorless Services are left to the
//!   user's hand-made slices.
//! - **Service proxy**: listens on `clusterIP:port` for every Service port and forwards each TCP
//!   connection to a ready endpoint, round robin; no ready endpoint closes the connection.
//!
//! Resolving a service address (used to dial addresses such as KEDA's `scalerAddress`):
//! [`resolve_service`] accepts `<svc>.<ns>:<port>`, `<svc>.<ns>.svc:<port>`, `<svc>.<ns>.svc.cluster.local:<port>`
//! (and a literal `ip:port`) and returns `clusterIP:port` (a ready pod `ip:port` for a headless
//! Service).

mod deployment;
pub mod echo;
mod endpointslice;
mod informer;
mod kubelet;
mod podutil;
mod proxy;
mod queue;
mod random;
mod replicaset;
mod resolve;

use std::future::Future;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use tokio::task::JoinSet;

pub use deployment::REVISION_ANNOTATION;
pub use resolve::{ResolveError, resolve_service};

use informer::Informer;

/// Pod annotation: how long the app takes to start listening and turn Ready (Go duration).
pub const STARTUP_DELAY_ANNOTATION: &str = "sim.http.keda.sh/startup-delay";
/// Pod annotation: delay added to every response of the app (Go duration).
pub const RESPONSE_DELAY_ANNOTATION: &str = "sim.http.keda.sh/response-delay";
/// Finalizer the kubelet keeps on running pods so that deletion waits for a graceful stop.
pub const POD_FINALIZER: &str = "sim.http.keda.sh/kubelet";
/// Label linking an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label naming the controller that manages an EndpointSlice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`] on the slices this controller manages.
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// The node name the simulated pods run on.
pub const NODE_NAME: &str = "sim-node";

/// Why a workload component stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An informer's watch task ended, so its cache can no longer be trusted.
    #[error("the {0} informer stopped")]
    InformerStopped(String),
    /// A component task panicked.
    #[error("a workload component panicked: {0}")]
    Panicked(String),
}

/// Runs the deployment controller, kubelet, EndpointSlice controller and Service proxy until `shutdown` resolves.
pub async fn run(
    client: kube::Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut tasks = JoinSet::new();
    let deployments = Informer::<Deployment>::spawn(Api::all(client.clone()), &mut tasks);
    let replica_sets = Informer::<ReplicaSet>::spawn(Api::all(client.clone()), &mut tasks);
    let pods = Informer::<Pod>::spawn(Api::all(client.clone()), &mut tasks);
    let services = Informer::<Service>::spawn(Api::all(client.clone()), &mut tasks);
    let slices = Informer::<EndpointSlice>::spawn(Api::all(client.clone()), &mut tasks);

    tasks.spawn(deployment::run(
        client.clone(),
        deployments,
        replica_sets.clone(),
    ));
    tasks.spawn(replicaset::run(client.clone(), replica_sets, pods.clone()));
    tasks.spawn(kubelet::run(client.clone(), pods.clone(), slices.clone()));
    tasks.spawn(endpointslice::run(
        client.clone(),
        services.clone(),
        pods,
        slices.clone(),
    ));
    tasks.spawn(proxy::run(services, slices));

    let mut shutdown = std::pin::pin!(shutdown);
    let outcome = tokio::select! {
        () = &mut shutdown => Ok(()),
        Some(ended) = tasks.join_next() => match ended {
            Ok(Ok(())) => Err(Error::InformerStopped("a workload".into())),
            Ok(Err(error)) => Err(error),
            Err(join_error) => Err(Error::Panicked(join_error.to_string())),
        },
    };
    // Dropping the set aborts every component, and with them every pod app and proxy listener.
    tasks.shutdown().await;
    Ok(outcome?)
}
