//! Shared fixtures: a simulated API server with the add-on's CRDs, an in-process operator,
//! object builders and condition polling with deadlines.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::collections::BTreeMap;
use std::time::Duration;

use http_add_on_operator::{Config, LeaderElectionConfig, Operator};
use http_add_on_sim::Sim;
use http_add_on_testkit::{Cluster, build};
use http_add_on_types::crd::{HTTPScaledObject, InterceptorRoute};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Client;
use kube::api::{Api, ListParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Hang guard for one wait.
pub const DEADLINE: Duration = http_add_on_testkit::wait::DEADLINE;

pub use http_add_on_testkit::wait::eventually;
/// The scaler Service name the tests configure.
pub const SCALER_SERVICE: &str = "keda-add-ons-http-external-scaler";

/// A simulated API server with the CRDs installed.
pub async fn cluster() -> Sim {
    let sim = Cluster::apiserver_only().await.sim;
    // The operator's own namespace (its leader-election Lease lives there).
    sim.create_namespace(&config().namespace)
        .await
        .expect("operator namespace created");
    let client = sim.client();
    eventually("the CRDs to be served", || {
        let client = client.clone();
        async move {
            let hso: Api<HTTPScaledObject> = Api::default_namespaced(client.clone());
            let ir: Api<InterceptorRoute> = Api::default_namespaced(client);
            (hso.list(&ListParams::default()).await.is_ok()
                && ir.list(&ListParams::default()).await.is_ok())
            .then_some(())
        }
    })
    .await;
    sim
}

/// Operator configuration for tests: loopback servers on free ports, namespace `keda`.
pub fn config() -> Config {
    let mut config = Config::new(SCALER_SERVICE);
    config.health_address = "127.0.0.1:0".parse().unwrap();
    config.metrics_address = "127.0.0.1:0".parse().unwrap();
    config
}

/// Test leader election: a 2s lease renewed every 200ms.
pub fn fast_lease(identity: &str) -> LeaderElectionConfig {
    LeaderElectionConfig {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(200),
        ..LeaderElectionConfig::new(identity)
    }
}

/// An operator without leader election, running in-process.
pub async fn operator(client: Client) -> Operator {
    let operator = Operator::start(client, config())
        .await
        .expect("operator starts");
    operator.wait_until_leading().await;
    operator
}

/// An HTTPScaledObject `name` for `hosts`, targeting Deployment/Service `app` port 8080.
pub fn hso(name: &str, hosts: &[&str]) -> HTTPScaledObject {
    build::http_scaled_object(name).hosts(hosts).build()
}

/// `obj` with `annotations` added.
pub fn annotated(mut obj: HTTPScaledObject, annotations: &[(&str, &str)]) -> HTTPScaledObject {
    obj.metadata.annotations = Some(
        annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
    );
    obj
}

/// An InterceptorRoute `name` for `host`.
pub fn interceptor_route(name: &str, host: &str) -> InterceptorRoute {
    build::interceptor_route(name).hosts(&[host]).build()
}

/// The `Ready` condition of `conditions`.
pub fn ready(conditions: &[Condition]) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == "Ready")
}

/// Waits until the HTTPScaledObject's `Ready` condition has `reason` (and returns the object).
pub async fn hso_with_reason(
    api: &Api<HTTPScaledObject>,
    name: &str,
    reason: &str,
) -> HTTPScaledObject {
    eventually(
        &format!("HTTPScaledObject {name} to be {reason}"),
        || async {
            let obj = api.get_opt(name).await.ok().flatten()?;
            let status = obj.status.as_ref()?;
            (ready(&status.conditions)?.reason == reason).then_some(obj)
        },
    )
    .await
}

/// Waits until the InterceptorRoute's `Ready` condition has `reason` (and returns the object).
pub async fn ir_with_reason(
    api: &Api<InterceptorRoute>,
    name: &str,
    reason: &str,
) -> InterceptorRoute {
    eventually(
        &format!("InterceptorRoute {name} to be {reason}"),
        || async {
            let obj = api.get_opt(name).await.ok().flatten()?;
            let status = obj.status.as_ref()?;
            (ready(&status.conditions)?.reason == reason).then_some(obj)
        },
    )
    .await
}

/// `GET path` on `addr` over plain HTTP/1.1: (status code, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("request is sent");
    let mut raw = String::new();
    tokio::time::timeout(DEADLINE, stream.read_to_string(&mut raw))
        .await
        .expect("response in time")
        .expect("response is read");
    let code = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}
