//! Objects every Kubernetes cluster has from its first second, which clients take for granted:
//! the `default/kubernetes` Service (with the EndpointSlice the API server keeps for itself)
//! the ComponentStatuses of the control plane, and a local APIService per built-in group version.

use std::net::SocketAddr;

use serde_json::json;

use super::error::ApiResult;
use super::ops::{Cluster, Sub, WriteOptions};

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
    let api_services = cluster
        .registry
        .get("apiregistration.k8s.io", "apiservices")
        .expect("built-in type");
    let mut group_versions = vec![(String::new(), "v1".to_string())];
    for (group, versions) in cluster.registry.groups() {
        group_versions.extend(versions.into_iter().map(|v| (group.clone(), v)));
    }
    for (group, version) in group_versions {
        // Served by the API server itself: no service, and always Available.
        let name = format!("{version}.{group}");
        cluster.create(
            &api_services,
            "v1",
            None,
            json!({
                "metadata": {"name": name, "labels": {"kube-aggregator.kubernetes.io/automanaged": "onstart"}},
                "spec": {"group": group, "version": version, "groupPriorityMinimum": 1000, "versionPriority": 15},
            }),
            &opts,
        )?;
        cluster.replace(
            &api_services,
            "v1",
            None,
            &name,
            json!({"status": {"conditions": [{
                "type": "Available", "status": "True", "reason": "Local",
                "message": "Local APIServices are always available",
            }]}}),
            Sub::Status,
            &opts,
        )?;
    }
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
