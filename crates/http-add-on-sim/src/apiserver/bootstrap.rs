//! Objects every Kubernetes cluster has from its first second, which clients take for granted:
//! the `default/kubernetes` Service (with the EndpointSlice the API server keeps for itself)
//! and the ComponentStatuses of the control plane.

use std::net::SocketAddr;

use serde_json::json;

use super::error::ApiResult;
use super::ops::{Cluster, WriteOptions};

/// The control-plane components `kubectl get componentstatuses` lists.
const COMPONENTS: [&str; 3] = ["scheduler", "controller-manager", "etcd-0"];

/// Creates the built-in objects; `api` is where the API server listens.
pub(super) fn install(cluster: &mut Cluster, api: SocketAddr) -> ApiResult<()> {
    let opts = WriteOptions {
        field_manager: Some("kube-apiserver".into()),
        ..WriteOptions::default()
    };
    let services = cluster.registry.get("", "services").expect("built-in type");
    // As the API server's own reconciler writes it: port 443 named https, no selector (the
    // endpoints are the API server's), labels component=apiserver, provider=kubernetes. The
    // cluster IP is a loopback address like every Service here, and the target port is the
    // simulator's real one, so the Service proxy reaches this API server.
    cluster.create(
        &services,
        "v1",
        Some("default"),
        json!({
            "metadata": {
                "name": "kubernetes",
                "namespace": "default",
                "labels": {"component": "apiserver", "provider": "kubernetes"},
            },
            "spec": {
                "type": "ClusterIP",
                "sessionAffinity": "None",
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": api.port()}],
            },
        }),
        &opts,
    )?;
    let slices = cluster
        .registry
        .get("discovery.k8s.io", "endpointslices")
        .expect("built-in type");
    cluster.create(
        &slices,
        "v1",
        Some("default"),
        json!({
            "metadata": {
                "name": "kubernetes",
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": "kubernetes"},
            },
            "addressType": if api.is_ipv4() { "IPv4" } else { "IPv6" },
            "endpoints": [{"addresses": [api.ip().to_string()], "conditions": {"ready": true}}],
            "ports": [{"name": "https", "port": api.port(), "protocol": "TCP"}],
        }),
        &opts,
    )?;
    let statuses = cluster
        .registry
        .get("", "componentstatuses")
        .expect("built-in type");
    for name in COMPONENTS {
        cluster.create(
            &statuses,
            "v1",
            None,
            json!({
                "metadata": {"name": name},
                "conditions": [{"type": "Healthy", "status": "True", "message": "ok"}],
            }),
            &opts,
        )?;
    }
    Ok(())
}
