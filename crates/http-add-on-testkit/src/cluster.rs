//! The cluster fixture: the simulated cluster with the add-on's CRDs installed.

use http_add_on_sim::{Sim, SimConfig};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::PostParams;

/// A simulated cluster with the add-on's CRDs (`HTTPScaledObject`, `InterceptorRoute`) served.
pub struct Cluster {
    /// The simulated cluster.
    pub sim: Sim,
}

impl Cluster {
    /// The API server alone (no controllers), with the CRDs.
    pub async fn apiserver_only() -> Self {
        Self::start(SimConfig::apiserver_only()).await
    }

    /// The whole simulated cluster (workloads, KEDA stand-in), with the CRDs.
    pub async fn full() -> Self {
        Self::start(SimConfig::default()).await
    }

    /// A cluster from `config`, with the CRDs.
    pub async fn start(config: SimConfig) -> Self {
        crate::init_tracing();
        let sim = Sim::start(config)
            .await
            .expect("the simulated cluster starts");
        install_crds(&sim.client()).await;
        Self { sim }
    }

    /// A client of its API server.
    pub fn client(&self) -> kube::Client {
        self.sim.client()
    }

    /// Stops the cluster.
    pub async fn shutdown(self) {
        self.sim.shutdown().await;
    }
}

/// Creates the add-on's CRDs (as `cargo xtask codegen` generates them) through `client`.
pub async fn install_crds(client: &kube::Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (_, crd) in http_add_on_types::crd::generated_crds() {
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("the CRD is created");
    }
}
