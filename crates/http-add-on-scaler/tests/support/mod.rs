//! Shared fixtures of the scaler's behaviour tests: a simulated API server, real interceptors
//! registered as endpoints of the admin Service, the scaler, and a gRPC client acting as KEDA.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_add_on_scaler::{Config, RunningScaler};
use http_add_on_sim::{Sim, SimConfig};
use http_add_on_types::crd::{HTTPScaledObject, InterceptorRoute};
use http_add_on_types::proto::externalscaler::external_scaler_client::ExternalScalerClient;
use http_add_on_types::proto::externalscaler::{GetMetricsRequest, MetricValue, ScaledObjectRef};
use http_add_on_types::queue::{QueueCount, QueueCounts, QueueUpdate};
use http_body_util::{Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::Channel;

use http_add_on_testkit::{TestBackend, build};

/// Namespace of the interceptors' admin Service.
pub const ADMIN_NAMESPACE: &str = "keda";
/// Name of the interceptors' admin Service.
pub const ADMIN_SERVICE: &str = "keda-add-ons-http-interceptor-admin";
/// Namespace of the apps.
pub const APP_NAMESPACE: &str = "default";
pub use http_add_on_testkit::wait::eventually;

/// One test's cluster: the sim, interceptors, the scaler and a KEDA-like client.
pub struct Cluster {
    /// The simulated API server.
    pub sim: Sim,
    /// The interceptors, by index (`None` once killed).
    pub interceptors: Vec<Option<http_add_on_interceptor::Interceptor>>,
    /// The scaler.
    pub scaler: RunningScaler,
    /// A client acting as KEDA.
    pub keda: ExternalScalerClient<Channel>,
    /// The scaler's config.
    pub config: Config,
}

impl Cluster {
    /// Starts the sim with the CRDs, `interceptors` real interceptors listed in the admin
    /// Service's EndpointSlices (one slice each), and the scaler with `tweak` applied to its
    /// config.
    pub async fn start(interceptors: usize, tweak: impl FnOnce(&mut Config)) -> Self {
        let sim = Sim::start(SimConfig::apiserver_only())
            .await
            .expect("sim starts");
        http_add_on_testkit::cluster::install_crds(&sim.client()).await;
        sim.create_namespace(ADMIN_NAMESPACE)
            .await
            .expect("admin namespace created");
        let services: Api<Service> = Api::namespaced(sim.client(), ADMIN_NAMESPACE);
        services
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": {"name": ADMIN_SERVICE},
                    "spec": {"ports": [{"name": "admin", "port": 9090}]}
                }))
                .expect("valid Service"),
            )
            .await
            .expect("admin Service created");
        let mut cluster_interceptors = Vec::new();
        for _ in 0..interceptors {
            cluster_interceptors.push(Some(start_interceptor(&sim).await));
        }
        let mut config = Config::local(ADMIN_NAMESPACE, ADMIN_SERVICE);
        config.queue_tick = Duration::from_millis(200);
        config.stream_interval = Duration::from_millis(100);
        tweak(&mut config);
        let scaler = http_add_on_scaler::start(config.clone(), sim.client())
            .await
            .expect("scaler starts");
        let keda = ExternalScalerClient::connect(format!("http://{}", scaler.grpc_addr()))
            .await
            .expect("KEDA connects to the scaler");
        let cluster = Self {
            sim,
            interceptors: cluster_interceptors,
            scaler,
            keda,
            config,
        };
        for i in 0..interceptors {
            let addr = cluster.admin_addr(i);
            cluster.list_admin_endpoint(i, addr).await;
        }
        cluster
    }

    /// Admin address of interceptor `i`.
    pub fn admin_addr(&self, i: usize) -> SocketAddr {
        self.interceptors[i]
            .as_ref()
            .expect("interceptor running")
            .admin_addr()
    }

    /// Proxy address of interceptor `i`.
    pub fn proxy_addr(&self, i: usize) -> SocketAddr {
        self.interceptors[i]
            .as_ref()
            .expect("interceptor running")
            .proxy_addr()
    }

    /// Lists `addr` as the ready admin endpoint `slice_index` of the admin Service.
    pub async fn list_admin_endpoint(&self, slice_index: usize, addr: SocketAddr) {
        let api: Api<EndpointSlice> = Api::namespaced(self.sim.client(), ADMIN_NAMESPACE);
        api.create(&PostParams::default(), &admin_slice(slice_index, addr))
            .await
            .expect("admin EndpointSlice created");
    }

    /// Removes the admin EndpointSlice `slice_index`.
    pub async fn unlist_admin_endpoint(&self, slice_index: usize) {
        let api: Api<EndpointSlice> = Api::namespaced(self.sim.client(), ADMIN_NAMESPACE);
        api.delete(&admin_slice_name(slice_index), &DeleteParams::default())
            .await
            .expect("admin EndpointSlice deleted");
    }

    /// Stops interceptor `i` at once: its admin port closes and its push streams break.
    pub async fn kill_interceptor(&mut self, i: usize) {
        let interceptor = self.interceptors[i].take().expect("interceptor running");
        interceptor.shutdown().await;
    }

    /// Creates an HTTPScaledObject for `host`, targeting Service `service` port 8080.
    pub async fn create_http_scaled_object(
        &self,
        name: &str,
        host: &str,
        service: &str,
        extra: serde_json::Value,
    ) {
        let object = build::http_scaled_object(name)
            .namespace(APP_NAMESPACE)
            .hosts(&[host])
            .target(service)
            .spec(extra)
            .build();
        Api::<HTTPScaledObject>::namespaced(self.sim.client(), APP_NAMESPACE)
            .create(&PostParams::default(), &object)
            .await
            .expect("HTTPScaledObject created");
        self.create_app_service(service).await;
    }

    /// Creates an InterceptorRoute for `host` with `scaling_metric`, targeting `service:8080`.
    pub async fn create_interceptor_route(
        &self,
        name: &str,
        host: &str,
        service: &str,
        scaling_metric: serde_json::Value,
    ) {
        let object = build::interceptor_route(name)
            .namespace(APP_NAMESPACE)
            .hosts(&[host])
            .target(service, 8080)
            .scaling_metric(scaling_metric)
            .build();
        Api::<InterceptorRoute>::namespaced(self.sim.client(), APP_NAMESPACE)
            .create(&PostParams::default(), &object)
            .await
            .expect("InterceptorRoute created");
        self.create_app_service(service).await;
    }

    async fn create_app_service(&self, service: &str) {
        let services: Api<Service> = Api::namespaced(self.sim.client(), APP_NAMESPACE);
        let result = services
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": {"name": service},
                    "spec": {"ports": [{"port": 8080, "targetPort": 8080}]}
                }))
                .expect("valid Service"),
            )
            .await;
        match result {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(e) => panic!("creating Service {service}: {e}"),
        }
    }

    /// Starts a backend answering 200 and lists it as the ready endpoint of `service`.
    pub async fn make_app_ready(&self, service: &str) -> TestBackend {
        let backend = TestBackend::start(service).await;
        let api: Api<EndpointSlice> = Api::namespaced(self.sim.client(), APP_NAMESPACE);
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {
                "name": format!("{service}-ready"),
                "labels": {"kubernetes.io/service-name": service},
            },
            "addressType": "IPv4",
            "ports": [{"port": backend.addr.port()}],
            "endpoints": [{"addresses": [backend.addr.ip().to_string()], "conditions": {"ready": true}}],
        }))
        .expect("valid EndpointSlice");
        api.create(&PostParams::default(), &slice)
            .await
            .expect("app EndpointSlice created");
        backend
    }

    /// Waits until every running interceptor has the route `key` (`<namespace>/<name>`) in
    /// its table (it then appears in `/queue`).
    pub async fn wait_routed(&self, key: &str) {
        for interceptor in self.interceptors.iter().flatten() {
            eventually(&format!("interceptor routes {key}"), || async move {
                interceptor
                    .counts()
                    .snapshot()
                    .contains_key(key)
                    .then_some(())
            })
            .await;
        }
    }

    /// Sends `GET /` for `host` to interceptor `i` and returns the open connection (the
    /// request stays in flight until the response comes or the connection is dropped).
    pub async fn send_request(&self, i: usize, host: &str) -> TcpStream {
        let mut stream = TcpStream::connect(self.proxy_addr(i))
            .await
            .expect("connect to the interceptor");
        stream
            .write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
            .await
            .expect("request written");
        stream
    }

    /// Sends `GET /` for `host` to interceptor `i` and waits for the response status.
    pub async fn request(&self, i: usize, host: &str) -> StatusCode {
        let stream = TcpStream::connect(self.proxy_addr(i))
            .await
            .expect("connect to the interceptor");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let request = Request::get("/")
            .header("host", host)
            .body(http_body_util::Empty::<Bytes>::new())
            .expect("request");
        let response = sender.send_request(request).await.expect("response");
        let status = response.status();
        let _ = http_body_util::BodyExt::collect(response.into_body()).await;
        status
    }

    /// `ScaledObjectRef` of a ScaledObject named `so` with one metadata entry.
    pub fn sor(so: &str, key: &str, value: &str) -> ScaledObjectRef {
        ScaledObjectRef {
            name: so.to_owned(),
            namespace: APP_NAMESPACE.to_owned(),
            scaler_metadata: HashMap::from([(key.to_owned(), value.to_owned())]),
        }
    }

    /// GetMetrics for `sor`.
    pub async fn get_metrics(
        &self,
        sor: &ScaledObjectRef,
    ) -> Result<Vec<MetricValue>, tonic::Status> {
        self.keda
            .clone()
            .get_metrics(GetMetricsRequest {
                scaled_object_ref: Some(sor.clone()),
                metric_name: String::new(),
            })
            .await
            .map(|r| r.into_inner().metric_values)
    }

    /// GetMetrics for `sor` asking for the metric `metric_name`, as KEDA does.
    pub async fn get_named_metric(
        &self,
        sor: &ScaledObjectRef,
        metric_name: &str,
    ) -> Result<Vec<MetricValue>, tonic::Status> {
        self.keda
            .clone()
            .get_metrics(GetMetricsRequest {
                scaled_object_ref: Some(sor.clone()),
                metric_name: metric_name.to_owned(),
            })
            .await
            .map(|r| r.into_inner().metric_values)
    }

    /// IsActive for `sor`.
    pub async fn is_active(&self, sor: &ScaledObjectRef) -> Result<bool, tonic::Status> {
        self.keda
            .clone()
            .is_active(sor.clone())
            .await
            .map(|r| r.into_inner().result)
    }

    /// Waits until the int64 value of the first metric of `sor` equals `want`.
    pub async fn wait_int_metric(&self, sor: &ScaledObjectRef, want: i64) {
        eventually(&format!("metric of {sor:?} = {want}"), || async {
            let values = self.get_metrics(sor).await.ok()?;
            (values.first()?.metric_value == want).then_some(())
        })
        .await;
    }

    /// The scaler's `/metrics` text.
    pub async fn scrape(&self) -> String {
        let addr = self.scaler.metrics_addr().expect("metrics enabled");
        http_get(addr, "/metrics").await.1
    }
}

async fn start_interceptor(sim: &Sim) -> http_add_on_interceptor::Interceptor {
    let mut config = http_add_on_interceptor::Config::for_tests();
    // A kill, not a drain: connections close at once.
    config.drain_timeout = Duration::from_millis(1);
    http_add_on_interceptor::Interceptor::start(config, sim.client())
        .await
        .expect("interceptor starts")
}

fn admin_slice_name(index: usize) -> String {
    format!("{ADMIN_SERVICE}-{index}")
}

fn admin_slice(index: usize, addr: SocketAddr) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {
            "name": admin_slice_name(index),
            "labels": {"kubernetes.io/service-name": ADMIN_SERVICE},
        },
        "addressType": "IPv4",
        "ports": [{"name": "admin", "port": addr.port()}],
        "endpoints": [{"addresses": [addr.ip().to_string()], "conditions": {"ready": true}}],
    }))
    .expect("valid EndpointSlice")
}

/// A plain HTTP GET on loopback: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (StatusCode, String) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let request = Request::get(path)
        .header("host", addr.to_string())
        .body(http_body_util::Empty::<Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A stand-in for an interceptor's admin port, for protocol corner cases: serves `/queue` and,
/// when `stream` is set, `/queue/stream` (a snapshot, then the full table as a change line
/// whenever it changes, heartbeats every second); without it the stream answers 404.
pub struct FakeAdmin {
    /// Where it listens.
    pub addr: SocketAddr,
    table: Arc<Mutex<QueueCounts>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeAdmin {
    /// Starts serving on a fresh loopback port.
    pub async fn start(stream: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake admin");
        let addr = listener.local_addr().expect("fake admin addr");
        let table = Arc::new(Mutex::new(QueueCounts::new()));
        let t = table.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    continue;
                };
                let table = t.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let table = table.clone();
                        async move { Ok::<_, Infallible>(fake_admin_response(&req, stream, table)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(conn), service)
                        .await;
                });
            }
        });
        Self { addr, table, task }
    }

    /// Sets the counts of `route`.
    pub fn set(&self, route: &str, concurrency: i64, request_count: u64) {
        self.table.lock().expect("table").insert(
            route.to_owned(),
            QueueCount {
                concurrency,
                request_count,
            },
        );
    }
}

impl Drop for FakeAdmin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type FakeBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn fake_admin_response(
    req: &Request<Incoming>,
    stream: bool,
    table: Arc<Mutex<QueueCounts>>,
) -> Response<FakeBody> {
    use http_body_util::BodyExt;
    let full = |status: StatusCode, body: Vec<u8>| {
        let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
        *r.status_mut() = status;
        r
    };
    match req.uri().path() {
        "/queue" => full(
            StatusCode::OK,
            serde_json::to_vec(&*table.lock().expect("table")).expect("json"),
        ),
        "/queue/stream" if stream => {
            let body = StreamBody::new(
                stream_lines(table).map(|line| Ok::<_, Infallible>(Frame::data(line))),
            );
            Response::new(BodyExt::boxed(body))
        }
        _ => full(StatusCode::NOT_FOUND, b"not found".to_vec()),
    }
}

fn stream_lines(table: Arc<Mutex<QueueCounts>>) -> impl futures::Stream<Item = Bytes> {
    let snapshot = |table: &Arc<Mutex<QueueCounts>>, snapshot: bool| {
        let update = QueueUpdate {
            snapshot,
            counts: table.lock().expect("table").clone(),
        };
        let mut line = serde_json::to_vec(&update).expect("json");
        line.push(b'\n');
        Bytes::from(line)
    };
    let first = snapshot(&table, true);
    let ticks = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_millis(50),
        Duration::from_millis(50),
    ));
    // Poll the table every 50 ms and send it whole when it changed (a change line may carry
    // unchanged routes too); a heartbeat every second otherwise.
    let state = Arc::new(Mutex::new((BTreeMap::new(), 0u32)));
    let first_table = table.lock().expect("table").clone();
    state.lock().expect("state").0 = first_table;
    futures::stream::once(async move { first }).chain(ticks.filter_map(move |_| {
        let table = table.clone();
        let state = state.clone();
        async move {
            let now = table.lock().expect("table").clone();
            let mut state = state.lock().expect("state");
            if now != state.0 {
                state.0 = now;
                state.1 = 0;
                return Some(snapshot(&table, false));
            }
            state.1 += 1;
            if state.1 >= 20 {
                state.1 = 0;
                return Some(Bytes::from_static(b"{}\n"));
            }
            None
        }
    }))
}
