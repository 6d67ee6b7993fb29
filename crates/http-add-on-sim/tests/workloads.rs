//! Behaviour of the simulated cluster's workloads (Deployment and ReplicaSet controllers,
//! kubelet, EndpointSlice controller, Service proxy), observed through the API server and the network like a user would.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_add_on_sim::workloads::{
    self, MANAGED_BY, MANAGED_BY_LABEL, ResolveError, SERVICE_NAME_LABEL,
};
use http_add_on_sim::{Sim, SimConfig};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use http_add_on_testkit::build;
use http_add_on_testkit::wait::{self, eventually};

/// Hang guard for one read or one wait of several things at once.
const TIMEOUT: Duration = wait::DEADLINE;

async fn start_sim() -> Sim {
    http_add_on_testkit::init_tracing();
    Sim::start(SimConfig::default())
        .await
        .expect("the simulated cluster starts")
}

/// A Deployment of `replicas` pods labelled `app: <name>`, with the given container ports
/// (`(name, number)`) and pod annotations.
fn deployment(
    name: &str,
    replicas: i32,
    ports: &[(&str, i32)],
    annotations: &[(&str, &str)],
) -> Deployment {
    let mut deployment = build::deployment(name).replicas(replicas);
    for (port_name, number) in ports {
        deployment = deployment.port(port_name, *number);
    }
    for (key, value) in annotations {
        deployment = deployment.pod_annotation(key, value);
    }
    deployment.build()
}

/// A Service selecting `app: <selector>` (selectorless when `None`) with ports
/// `(name, port, targetPort)`.
fn service(name: &str, selector: Option<&str>, ports: &[(&str, i32, Value)]) -> Service {
    let mut service = build::service(name);
    if let Some(app) = selector {
        service = service.selector(app);
    }
    for (port_name, port, target) in ports {
        service = service.named_port(port_name, *port, target.clone());
    }
    service.build()
}

async fn create<K>(api: &Api<K>, obj: &K) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.create(&PostParams::default(), obj)
        .await
        .expect("create succeeds")
}

async fn scale(client: &kube::Client, name: &str, replicas: i32) {
    Api::<Deployment>::default_namespaced(client.clone())
        .patch_scale(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": replicas } })),
        )
        .await
        .expect("scaling succeeds");
}

async fn pods_of(client: &kube::Client, app: &str) -> Vec<Pod> {
    Api::<Pod>::default_namespaced(client.clone())
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("listing pods succeeds")
        .items
}

/// The ReplicaSets of `app` (labelled `app: <app>`), oldest revision first.
async fn replica_sets_of(client: &kube::Client, app: &str) -> Vec<ReplicaSet> {
    let mut sets = Api::<ReplicaSet>::default_namespaced(client.clone())
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("listing ReplicaSets succeeds")
        .items;
    sets.sort_by_key(revision);
    sets
}

/// The `deployment.kubernetes.io/revision` of a ReplicaSet or Deployment (0 when absent).
fn revision(obj: &impl ResourceExt) -> u64 {
    obj.annotations()
        .get(workloads::REVISION_ANNOTATION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn controller_uid(obj: &impl ResourceExt) -> Option<String> {
    obj.owner_references()
        .iter()
        .find(|owner| owner.controller == Some(true))
        .map(|owner| owner.uid.clone())
}

fn spec_replicas(set: &ReplicaSet) -> Option<i32> {
    set.spec.as_ref().and_then(|spec| spec.replicas)
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

fn pod_ip(pod: &Pod) -> Option<String> {
    pod.status.as_ref()?.pod_ip.clone()
}

/// Waits until exactly `count` pods of `app` exist and are Ready, and returns them.
async fn ready_pods(client: &kube::Client, app: &str, count: usize) -> Vec<Pod> {
    eventually(&format!("{count} ready pods of {app}"), || async {
        let pods = pods_of(client, app).await;
        (pods.len() == count
            && pods
                .iter()
                .all(|pod| is_ready(pod) && pod.metadata.deletion_timestamp.is_none()))
        .then_some(pods)
    })
    .await
}

/// The managed EndpointSlices of a Service.
async fn slices_of(client: &kube::Client, service: &str) -> Vec<EndpointSlice> {
    Api::<EndpointSlice>::default_namespaced(client.clone())
        .list(&ListParams::default().labels(&format!("{SERVICE_NAME_LABEL}={service}")))
        .await
        .expect("listing EndpointSlices succeeds")
        .items
}

/// `(address, ready)` of every endpoint of a Service, sorted.
async fn endpoints_of(client: &kube::Client, service: &str) -> Vec<(String, bool)> {
    let mut endpoints: Vec<(String, bool)> = slices_of(client, service)
        .await
        .iter()
        .flat_map(|slice| slice.endpoints.clone())
        .map(|endpoint| {
            let ready = endpoint
                .conditions
                .and_then(|conditions| conditions.ready)
                .unwrap_or(true);
            (endpoint.addresses[0].clone(), ready)
        })
        .collect();
    endpoints.sort();
    endpoints
}

async fn cluster_ip(client: &kube::Client, name: &str) -> String {
    let service = Api::<Service>::default_namespaced(client.clone())
        .get(name)
        .await
        .expect("the Service exists");
    service
        .spec
        .and_then(|spec| spec.cluster_ip)
        .expect("the Service has a cluster IP")
}

/// GETs `http://<addr><path>` over HTTP/1.1 (or h2c with prior knowledge) and returns the status and JSON body.
async fn get(addr: &str, path: &str, http2: bool) -> (StatusCode, Value) {
    let client = HttpClient::builder(TokioExecutor::new())
        .http2_only(http2)
        .build_http::<Empty<Bytes>>();
    let response = client
        .get(format!("http://{addr}{path}").parse().expect("a valid URI"))
        .await
        .expect("the request succeeds");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("the body arrives")
        .to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn scale_zero_to_three_to_zero_follows_readiness() {
    let sim = start_sim().await;
    let client = sim.client();
    let deployments = Api::<Deployment>::default_namespaced(client.clone());
    create(&deployments, &deployment("web", 0, &[("http", 8080)], &[])).await;
    create(
        &Api::default_namespaced(client.clone()),
        &service("web", Some("web"), &[("http", 80, json!(8080))]),
    )
    .await;

    // No pods: one managed slice, no endpoints, ports listed.
    let slice = eventually("an empty EndpointSlice", || async {
        slices_of(&client, "web")
            .await
            .into_iter()
            .find(|slice| slice.endpoints.is_empty())
    })
    .await;
    assert_eq!(
        slice.labels().get(MANAGED_BY_LABEL).map(String::as_str),
        Some(MANAGED_BY)
    );
    assert!(slice.name_any().starts_with("web-"));
    assert_eq!(slice.address_type, "IPv4");
    let port = &slice.ports.as_ref().expect("ports are listed")[0];
    assert_eq!(
        (
            port.name.as_deref(),
            port.port,
            port.app_protocol.as_deref()
        ),
        (Some("http"), Some(8080), Some("http"))
    );

    scale(&client, "web", 3).await;
    let pods = ready_pods(&client, "web", 3).await;
    let deploy = deployments.get("web").await.unwrap();
    let sets = replica_sets_of(&client, "web").await;
    assert_eq!(sets.len(), 1, "one ReplicaSet for one template");
    assert_eq!(
        controller_uid(&sets[0]),
        deploy.uid(),
        "the ReplicaSet is the Deployment's"
    );
    for pod in &pods {
        let name = pod.name_any();
        let suffix = name.rsplit('-').next().unwrap();
        assert!(
            name.starts_with("web-") && name.matches('-').count() == 2 && suffix.len() == 5,
            "pod name {name}"
        );
        let owner = &pod.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("ReplicaSet", sets[0].uid().unwrap().as_str(), Some(true))
        );
        assert!(name.starts_with(&format!("{}-", sets[0].name_any())));
        assert_eq!(pod.labels().get("app").map(String::as_str), Some("web"));
        assert_eq!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Running")
        );
        let ip: std::net::Ipv4Addr = pod_ip(pod).expect("a pod IP").parse().unwrap();
        assert!(
            ip.octets()[0] == 127 && (64..128).contains(&ip.octets()[1]),
            "pod IP {ip} in 127.64.0.0/10"
        );
    }
    let expected: Vec<(String, bool)> = {
        let mut ips: Vec<(String, bool)> = pods
            .iter()
            .map(|pod| (pod_ip(pod).unwrap(), true))
            .collect();
        ips.sort();
        ips
    };
    eventually("3 ready endpoints", || async {
        (endpoints_of(&client, "web").await == expected).then_some(())
    })
    .await;
    let status = eventually("the Deployment status to show 3 ready replicas", || async {
        let deploy = deployments.get("web").await.unwrap();
        let status = deploy.status.clone()?;
        (status.ready_replicas == Some(3)
            && status.observed_generation == deploy.metadata.generation)
            .then_some(status)
    })
    .await;
    assert_eq!(
        (
            status.replicas,
            status.updated_replicas,
            status.available_replicas
        ),
        (Some(3), Some(3), Some(3))
    );

    scale(&client, "web", 0).await;
    eventually("all pods gone", || async {
        pods_of(&client, "web").await.is_empty().then_some(())
    })
    .await;
    eventually("no endpoints", || async {
        endpoints_of(&client, "web").await.is_empty().then_some(())
    })
    .await;
    assert_eq!(
        slices_of(&client, "web").await.len(),
        1,
        "the empty slice stays"
    );
    eventually("the Deployment status to show 0 replicas", || async {
        let status = deployments.get("web").await.unwrap().status?;
        (status.replicas == Some(0) && status.ready_replicas == Some(0)).then_some(())
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test]
async fn startup_delay_holds_readiness_back() {
    let sim = start_sim().await;
    let client = sim.client();
    let delay = Duration::from_millis(800);
    let started = Instant::now();
    create(
        &Api::default_namespaced(client.clone()),
        &deployment(
            "slow",
            1,
            &[("http", 8080)],
            &[(workloads::STARTUP_DELAY_ANNOTATION, "800ms")],
        ),
    )
    .await;
    create(
        &Api::default_namespaced(client.clone()),
        &service("slow", Some("slow"), &[("http", 80, json!(8080))]),
    )
    .await;

    // The pod gets its IP at once and shows in the slice as not ready, and does not listen yet.
    let ip = eventually("a not-ready endpoint", || async {
        endpoints_of(&client, "slow")
            .await
            .into_iter()
            .find(|(_, ready)| !ready)
            .map(|(ip, _)| ip)
    })
    .await;
    if TcpStream::connect((ip.as_str(), 8080)).await.is_ok() {
        assert!(
            started.elapsed() >= delay,
            "the app listened during its startup delay"
        );
    }
    let pods = ready_pods(&client, "slow", 1).await;
    assert!(
        started.elapsed() >= delay,
        "the pod turned ready after {:?}, before its startup delay",
        started.elapsed()
    );
    let (status, echo) = get(&format!("{}:8080", pod_ip(&pods[0]).unwrap()), "/", false).await;
    assert_eq!(
        (status, echo["pod"].as_str()),
        (StatusCode::OK, Some(pods[0].name_any().as_str()))
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn echo_app_answers_on_the_pod_ip_with_the_pod_name() {
    let sim = start_sim().await;
    let client = sim.client();
    create(
        &Api::default_namespaced(client.clone()),
        &deployment("echo", 1, &[("http", 8080), ("admin", 9090)], &[]),
    )
    .await;
    let pod = ready_pods(&client, "echo", 1).await.remove(0);
    let ip = pod_ip(&pod).unwrap();

    let (status, echo) = get(&format!("{ip}:8080"), "/hello/world?x=1&y=2", false).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echo["pod"], pod.name_any());
    assert_eq!(echo["namespace"], "default");
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/hello/world");
    assert_eq!(echo["query"], "x=1&y=2");
    assert_eq!(echo["host"], format!("{ip}:8080"));
    assert_eq!(echo["protocol"], "HTTP/1.1");
    // Every declared container port is served, over h2c too.
    let (status, echo) = get(&format!("{ip}:9090"), "/", true).await;
    assert_eq!(
        (status, echo["pod"].as_str(), echo["protocol"].as_str()),
        (
            StatusCode::OK,
            Some(pod.name_any().as_str()),
            Some("HTTP/2.0")
        )
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn status_and_delay_paths_and_response_delay() {
    let sim = start_sim().await;
    let client = sim.client();
    create(
        &Api::default_namespaced(client.clone()),
        &deployment("paths", 1, &[], &[]),
    )
    .await;
    create(
        &Api::default_namespaced(client.clone()),
        &deployment(
            "lagging",
            1,
            &[],
            &[(workloads::RESPONSE_DELAY_ANNOTATION, "300ms")],
        ),
    )
    .await;
    // No declared port: the app listens on 8080.
    let addr = format!(
        "{}:8080",
        pod_ip(&ready_pods(&client, "paths", 1).await[0]).unwrap()
    );

    assert_eq!(
        get(&addr, "/status/503", false).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        get(&addr, "/status/204", false).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        get(&addr, "/status/nope", false).await.0,
        StatusCode::BAD_REQUEST
    );
    let started = Instant::now();
    assert_eq!(get(&addr, "/delay/500ms", false).await.0, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(
        get(&addr, "/delay/forever", false).await.0,
        StatusCode::BAD_REQUEST
    );

    let lagging = format!(
        "{}:8080",
        pod_ip(&ready_pods(&client, "lagging", 1).await[0]).unwrap()
    );
    let started = Instant::now();
    assert_eq!(get(&lagging, "/", false).await.0, StatusCode::OK);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "the response delay applies"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn service_proxy_reaches_every_ready_pod_via_the_cluster_ip() {
    let sim = start_sim().await;
    let client = sim.client();
    create(
        &Api::default_namespaced(client.clone()),
        &deployment("rr", 2, &[("http", 8080)], &[]),
    )
    .await;
    create(
        &Api::default_namespaced(client.clone()),
        &service("rr", Some("rr"), &[("http", 80, json!(8080))]),
    )
    .await;
    let pods = ready_pods(&client, "rr", 2).await;
    eventually("2 ready endpoints", || async {
        (endpoints_of(&client, "rr")
            .await
            .iter()
            .filter(|(_, ready)| *ready)
            .count()
            == 2)
            .then_some(())
    })
    .await;
    let addr = format!("{}:80", cluster_ip(&client, "rr").await);

    let mut seen = BTreeSet::new();
    for _ in 0..6 {
        let (status, echo) = get(&addr, "/via-proxy", false).await;
        assert_eq!(status, StatusCode::OK);
        seen.insert(echo["pod"].as_str().unwrap().to_owned());
    }
    let expected: BTreeSet<String> = pods.iter().map(|pod| pod.name_any()).collect();
    assert_eq!(seen, expected, "round robin reaches both pods");
    let (status, echo) = get(&addr, "/h2", true).await;
    assert_eq!(
        (status, echo["protocol"].as_str()),
        (StatusCode::OK, Some("HTTP/2.0"))
    );

    // Without ready endpoints the proxy closes connections; once the Service is gone it stops listening.
    scale(&client, "rr", 0).await;
    eventually("no endpoints", || async {
        endpoints_of(&client, "rr").await.is_empty().then_some(())
    })
    .await;
    let mut stream = TcpStream::connect(&addr)
        .await
        .expect("the proxy still listens");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(TIMEOUT, stream.read(&mut buf))
        .await
        .expect("the proxy closes the connection");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "connection closed without data"
    );
    Api::<Service>::default_namespaced(client.clone())
        .delete("rr", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the proxy to stop listening", || async {
        TcpStream::connect(&addr).await.is_err().then_some(())
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test]
async fn selectorless_service_with_a_hand_made_slice_is_reachable() {
    let sim = start_sim().await;
    let client = sim.client();
    // A process outside the cluster.
    let outside = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let outside_port = outside.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut stream, _) = outside.accept().await.unwrap();
        let mut request = vec![0u8; 1024];
        let _ = stream.read(&mut request).await.unwrap();
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\noutside")
            .await
            .unwrap();
    });

    create(
        &Api::default_namespaced(client.clone()),
        &service("external", None, &[("http", 80, json!(8080))]),
    )
    .await;
    let slice: EndpointSlice = serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": { "name": "external-manual", "labels": { SERVICE_NAME_LABEL: "external" } },
        "addressType": "IPv4",
        "endpoints": [{ "addresses": ["127.0.0.1"], "conditions": { "ready": true } }],
        "ports": [{ "name": "http", "port": outside_port, "protocol": "TCP" }]
    }))
    .unwrap();
    create(&Api::default_namespaced(client.clone()), &slice).await;

    let addr = format!("{}:80", cluster_ip(&client, "external").await);
    let client_http = HttpClient::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let response = eventually("the proxy to forward to the hand-made endpoint", || async {
        client_http
            .get(format!("http://{addr}/").parse().unwrap())
            .await
            .ok()
    })
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "outside"
    );
    server.await.unwrap();
    let slices = slices_of(&client, "external").await;
    assert_eq!(
        slices.iter().map(|s| s.name_any()).collect::<Vec<_>>(),
        ["external-manual"],
        "the controller leaves selectorless Services alone"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn scale_down_lets_an_in_flight_request_finish() {
    let sim = start_sim().await;
    let client = sim.client();
    create(
        &Api::default_namespaced(client.clone()),
        &deployment("drain", 1, &[("http", 8080)], &[]),
    )
    .await;
    create(
        &Api::default_namespaced(client.clone()),
        &service("drain", Some("drain"), &[("http", 80, json!(8080))]),
    )
    .await;
    let pod = ready_pods(&client, "drain", 1).await.remove(0);
    eventually("a ready endpoint", || async {
        (endpoints_of(&client, "drain")
            .await
            .iter()
            .any(|(_, ready)| *ready))
        .then_some(())
    })
    .await;
    let addr = format!("{}:80", cluster_ip(&client, "drain").await);

    // The request is on the wire (through the Service proxy) before the scale-down starts.
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(format!("GET /delay/1s HTTP/1.1\r\nhost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let started = Instant::now();
    let response = tokio::spawn(async move {
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response).await;
        String::from_utf8_lossy(&response).into_owned()
    });
    scale(&client, "drain", 0).await;
    // While the request runs, the pod is terminating and no longer a ready endpoint.
    eventually("the endpoint to turn not ready", || async {
        endpoints_of(&client, "drain")
            .await
            .iter()
            .all(|(_, ready)| !ready)
            .then_some(())
    })
    .await;
    let response = response.await.unwrap();
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "in-flight request finished: {response:?}"
    );
    assert!(response.contains(&pod.name_any()));
    assert!(started.elapsed() >= Duration::from_secs(1));
    eventually("the pod to be gone", || async {
        pods_of(&client, "drain").await.is_empty().then_some(())
    })
    .await;
    let ip = pod_ip(&pod).unwrap();
    assert!(
        TcpStream::connect((ip.as_str(), 8080)).await.is_err(),
        "the app stopped listening"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn named_target_port_resolves_to_the_container_port() {
    let sim = start_sim().await;
    let client = sim.client();
    create(
        &Api::default_namespaced(client.clone()),
        &deployment("named", 1, &[("web", 9376)], &[]),
    )
    .await;
    create(
        &Api::default_namespaced(client.clone()),
        &service("named", Some("named"), &[("http", 80, json!("web"))]),
    )
    .await;
    let pod = ready_pods(&client, "named", 1).await.remove(0);
    let slice = eventually("a slice with a ready endpoint", || async {
        slices_of(&client, "named")
            .await
            .into_iter()
            .find(|slice| !slice.endpoints.is_empty())
    })
    .await;
    let port = &slice.ports.as_ref().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.port),
        (Some("http"), Some(9376))
    );
    let target = slice.endpoints[0].target_ref.as_ref().unwrap();
    assert_eq!(
        (target.kind.as_deref(), target.name.clone()),
        (Some("Pod"), Some(pod.name_any()))
    );
    let addr = format!("{}:80", cluster_ip(&client, "named").await);
    let (status, echo) = eventually("the proxy to reach the pod", || async {
        let (status, echo) = get(&addr, "/", false).await;
        (status == StatusCode::OK).then_some((status, echo))
    })
    .await;
    assert_eq!(
        (status, echo["pod"].as_str()),
        (StatusCode::OK, Some(pod.name_any().as_str()))
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn resolve_service_finds_the_cluster_ip() {
    let sim = start_sim().await;
    let client = sim.client();
    create(
        &Api::default_namespaced(client.clone()),
        &service("scaler", None, &[("grpc", 9090, json!(9090))]),
    )
    .await;
    let ip = cluster_ip(&client, "scaler").await;
    let expected: SocketAddr = format!("{ip}:9090").parse().unwrap();
    for address in [
        "scaler.default:9090",
        "scaler.default.svc:9090",
        "scaler.default.svc.cluster.local:9090",
    ] {
        assert_eq!(
            workloads::resolve_service(&client, address).await.unwrap(),
            expected,
            "{address}"
        );
    }
    assert!(matches!(
        workloads::resolve_service(&client, "missing.default:80").await,
        Err(ResolveError::NotFound { .. })
    ));
    assert!(matches!(
        workloads::resolve_service(&client, "scaler:9090").await,
        Err(ResolveError::InvalidAddress(_))
    ));
    sim.shutdown().await;
}

#[tokio::test]
async fn deleted_pods_are_replaced_and_deleting_the_deployment_stops_them() {
    let sim = start_sim().await;
    let client = sim.client();
    let pods_api = Api::<Pod>::default_namespaced(client.clone());
    create(
        &Api::default_namespaced(client.clone()),
        &deployment("phoenix", 2, &[("http", 8080)], &[]),
    )
    .await;
    let before = ready_pods(&client, "phoenix", 2).await;
    let victim = before[0].name_any();
    pods_api
        .delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    let after = eventually("a replacement pod", || async {
        let pods = pods_of(&client, "phoenix").await;
        let replaced = pods.len() == 2
            && pods
                .iter()
                .all(|pod| pod.name_any() != victim && is_ready(pod));
        replaced.then_some(pods)
    })
    .await;
    assert!(
        after
            .iter()
            .any(|pod| pod.name_any() == before[1].name_any()),
        "the other pod stays"
    );

    Api::<Deployment>::default_namespaced(client.clone())
        .delete("phoenix", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the pods and the ReplicaSet to be gone", || async {
        let gone = pods_of(&client, "phoenix").await.is_empty()
            && replica_sets_of(&client, "phoenix").await.is_empty();
        gone.then_some(())
    })
    .await;
    for pod in &after {
        let ip = pod_ip(pod).unwrap();
        eventually("the app to stop listening", || async {
            TcpStream::connect((ip.as_str(), 8080))
                .await
                .is_err()
                .then_some(())
        })
        .await;
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn controllers_recover_after_an_api_server_restart() {
    let sim = start_sim().await;
    let client = sim.client();
    create(
        &Api::default_namespaced(client.clone()),
        &deployment("phoenix", 1, &[("http", 8080)], &[]),
    )
    .await;
    create(
        &Api::default_namespaced(client.clone()),
        &service("phoenix", Some("phoenix"), &[("http", 80, json!(8080))]),
    )
    .await;
    ready_pods(&client, "phoenix", 1).await;

    sim.restart_apiserver()
        .await
        .expect("the API server restarts");
    scale(&client, "phoenix", 2).await;
    let pods = ready_pods(&client, "phoenix", 2).await;
    let mut expected: Vec<(String, bool)> = pods
        .iter()
        .map(|pod| (pod_ip(pod).unwrap(), true))
        .collect();
    expected.sort();
    eventually("2 ready endpoints after the restart", || async {
        (endpoints_of(&client, "phoenix").await == expected).then_some(())
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test]
async fn pod_readiness_reaches_the_endpoint_slice() {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};

    let sim = start_sim().await;
    let client = sim.client();
    let pod_ready_at = {
        let pods = watcher(
            Api::<Pod>::default_namespaced(client.clone()),
            watcher::Config::default().labels("app=fast"),
        );
        tokio::spawn(async move {
            let mut pods = std::pin::pin!(pods.applied_objects());
            while let Some(Ok(pod)) = pods.next().await {
                if is_ready(&pod) {
                    return Instant::now();
                }
            }
            panic!("the pod watch ended");
        })
    };
    let slice_ready_at = {
        let slices = watcher(
            Api::<EndpointSlice>::default_namespaced(client.clone()),
            watcher::Config::default().labels(&format!("{SERVICE_NAME_LABEL}=fast")),
        );
        tokio::spawn(async move {
            let mut slices = std::pin::pin!(slices.applied_objects());
            while let Some(Ok(slice)) = slices.next().await {
                let ready = |e: &k8s_openapi::api::discovery::v1::Endpoint| {
                    e.conditions.as_ref().and_then(|c| c.ready) == Some(true)
                };
                if slice.endpoints.iter().any(ready) {
                    return Instant::now();
                }
            }
            panic!("the EndpointSlice watch ended");
        })
    };
    create(
        &Api::default_namespaced(client.clone()),
        &service("fast", Some("fast"), &[("http", 80, json!(8080))]),
    )
    .await;
    create(
        &Api::default_namespaced(client.clone()),
        &deployment("fast", 1, &[("http", 8080)], &[]),
    )
    .await;

    let (pod_ready_at, slice_ready_at) = tokio::time::timeout(TIMEOUT, async {
        (pod_ready_at.await.unwrap(), slice_ready_at.await.unwrap())
    })
    .await
    .expect("the pod and its endpoint turn ready");
    // How fast is for benchmarks; here: the slice follows the pod, through the watch.
    assert!(
        slice_ready_at >= pod_ready_at,
        "the EndpointSlice turned ready before its pod"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn template_change_rolls_pods_over_to_the_new_template() {
    let sim = start_sim().await;
    let client = sim.client();
    let deployments = Api::<Deployment>::default_namespaced(client.clone());
    create(&deployments, &deployment("roll", 2, &[("http", 8080)], &[])).await;
    let old: BTreeSet<String> = ready_pods(&client, "roll", 2)
        .await
        .iter()
        .map(|pod| pod.name_any())
        .collect();
    let old_hash = old
        .iter()
        .next()
        .unwrap()
        .split('-')
        .nth(1)
        .unwrap()
        .to_owned();

    let patch = json!({ "spec": { "template": { "metadata": { "annotations": { workloads::RESPONSE_DELAY_ANNOTATION: "1ms" } } } } });
    deployments
        .patch("roll", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    let new = eventually("the pods to be replaced", || async {
        let pods = pods_of(&client, "roll").await;
        let replaced = pods.len() == 2
            && pods
                .iter()
                .all(|pod| is_ready(pod) && !old.contains(&pod.name_any()));
        replaced.then_some(pods)
    })
    .await;
    for pod in &new {
        assert_ne!(
            pod.labels().get("pod-template-hash"),
            Some(&old_hash),
            "{} has the new template hash",
            pod.name_any()
        );
        assert_eq!(
            pod.annotations()
                .get(workloads::RESPONSE_DELAY_ANNOTATION)
                .map(String::as_str),
            Some("1ms")
        );
    }
    eventually(
        "the Deployment status to show the finished rollout",
        || async {
            let deploy = deployments.get("roll").await.unwrap();
            let status = deploy.status?;
            let done = status.observed_generation == deploy.metadata.generation
                && status.replicas == Some(2)
                && status.updated_replicas == Some(2)
                && status.available_replicas == Some(2);
            done.then_some(())
        },
    )
    .await;
    sim.shutdown().await;
}

#[tokio::test]
async fn a_template_change_makes_a_new_replica_set_and_keeps_the_old_one_at_zero() {
    let sim = start_sim().await;
    let client = sim.client();
    let deployments = Api::<Deployment>::default_namespaced(client.clone());
    let deploy = create(&deployments, &deployment("rev", 2, &[("http", 8080)], &[])).await;
    ready_pods(&client, "rev", 2).await;
    let first = eventually("the first ReplicaSet with its revision", || async {
        let sets = replica_sets_of(&client, "rev").await;
        let deploy = deployments.get("rev").await.unwrap();
        (sets.len() == 1 && revision(&sets[0]) == 1 && revision(&deploy) == 1)
            .then(|| sets[0].clone())
    })
    .await;
    let hash = first.labels()["pod-template-hash"].clone();
    assert_eq!(first.name_any(), format!("rev-{hash}"));
    let owner = &first.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("Deployment", deploy.uid().unwrap().as_str(), Some(true))
    );
    let first_spec = first.spec.clone().unwrap();
    assert_eq!(
        first_spec
            .selector
            .match_labels
            .unwrap()
            .get("pod-template-hash"),
        Some(&hash),
        "the selector tells this revision's pods apart"
    );

    // Scaling the Deployment scales its current ReplicaSet.
    scale(&client, "rev", 3).await;
    ready_pods(&client, "rev", 3).await;
    let sets = replica_sets_of(&client, "rev").await;
    assert_eq!(spec_replicas(&sets[0]), Some(3));

    let patch = json!({ "spec": { "template": { "metadata": { "annotations": { workloads::RESPONSE_DELAY_ANNOTATION: "1ms" } } } } });
    deployments
        .patch("rev", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    let sets = eventually("revision 2 to take over", || async {
        let sets = replica_sets_of(&client, "rev").await;
        let pods = pods_of(&client, "rev").await;
        let done = sets.len() == 2
            && revision(&sets[1]) == 2
            && spec_replicas(&sets[0]) == Some(0)
            && spec_replicas(&sets[1]) == Some(3)
            && pods.len() == 3
            && pods.iter().all(|pod| {
                is_ready(pod) && pod.owner_references()[0].uid == sets[1].uid().unwrap()
            });
        done.then_some(sets)
    })
    .await;
    assert_eq!(sets[0].uid(), first.uid(), "the old ReplicaSet is kept");
    assert_ne!(sets[1].labels()["pod-template-hash"], hash);
    eventually("the Deployment to name revision 2", || async {
        let deploy = deployments.get("rev").await.unwrap();
        let status = deploy.status.clone()?;
        let done = revision(&deploy) == 2
            && status.replicas == Some(3)
            && status.updated_replicas == Some(3)
            && status.available_replicas == Some(3);
        done.then_some(())
    })
    .await;

    // The old template again: its ReplicaSet comes back as revision 3, no new one is made.
    let patch = json!({ "spec": { "template": { "metadata": { "annotations": null } } } });
    deployments
        .patch("rev", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    eventually("the first ReplicaSet to return as revision 3", || async {
        let sets = replica_sets_of(&client, "rev").await;
        let done = sets.len() == 2
            && sets[1].uid() == first.uid()
            && revision(&sets[1]) == 3
            && spec_replicas(&sets[1]) == Some(3)
            && spec_replicas(&sets[0]) == Some(0);
        done.then_some(())
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test]
async fn replica_sets_beyond_the_revision_history_limit_are_deleted() {
    let sim = start_sim().await;
    let client = sim.client();
    let deployments = Api::<Deployment>::default_namespaced(client.clone());
    let mut deploy = deployment("history", 1, &[("http", 8080)], &[]);
    deploy.spec.as_mut().unwrap().revision_history_limit = Some(1);
    create(&deployments, &deploy).await;
    for delay in ["1ms", "2ms", "3ms"] {
        let patch = json!({ "spec": { "template": { "metadata": { "annotations": { workloads::RESPONSE_DELAY_ANNOTATION: delay } } } } });
        deployments
            .patch("history", &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap();
        eventually(&format!("the rollout to {delay}"), || async {
            let pods = pods_of(&client, "history").await;
            let done = pods.len() == 1
                && is_ready(&pods[0])
                && pods[0]
                    .annotations()
                    .get(workloads::RESPONSE_DELAY_ANNOTATION)
                    == Some(&delay.to_owned());
            done.then_some(())
        })
        .await;
    }
    let sets = eventually("one old ReplicaSet besides the current one", || async {
        let sets = replica_sets_of(&client, "history").await;
        (sets.len() == 2 && revision(&sets[1]) == 4).then_some(sets)
    })
    .await;
    assert_eq!(
        (revision(&sets[0]), spec_replicas(&sets[0])),
        (3, Some(0)),
        "the newest old revision is the one kept"
    );
    sim.shutdown().await;
}
