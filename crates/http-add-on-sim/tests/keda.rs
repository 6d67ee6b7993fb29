//! Behaviour of the KEDA stand-in against the simulated API server and a fake external scaler
//! that speaks the real gRPC protocol.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use http_add_on_sim::keda;
use http_add_on_sim::{Sim, SimConfig};
use http_add_on_types::proto::externalscaler::external_scaler_server::{
    ExternalScaler, ExternalScalerServer,
};
use http_add_on_types::proto::externalscaler::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec,
    MetricValue, ScaledObjectRef,
};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{
    Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::watcher::{self, watcher};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_stream::wrappers::{TcpListenerStream, WatchStream};
use tonic::{Request, Response, Status};

const SCALER_ADDRESS: &str = "fake-scaler.test:9090";
const METRIC: &str = "http-default_002Fapp";
const WAIT: Duration = Duration::from_secs(10);

/// What the fake scaler answers, and what it saw.
struct FakeState {
    active: watch::Sender<bool>,
    value: AtomicI64,
    target: AtomicI64,
    is_active_calls: AtomicUsize,
    streams_opened: AtomicUsize,
    /// Every activity message sent on a stream.
    sent: Mutex<Vec<(Instant, bool)>>,
    /// Every metric value served.
    served: Mutex<Vec<(Instant, i64)>>,
    last_ref: Mutex<Option<ScaledObjectRef>>,
}

impl FakeState {
    fn set_active(&self, active: bool) {
        self.active.send_replace(active);
    }

    fn set_value(&self, value: i64) {
        self.value.store(value, Ordering::SeqCst);
    }

    fn first_sent(&self, active: bool) -> Option<Instant> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .find(|(_, a)| *a == active)
            .map(|(t, _)| *t)
    }

    fn last_served(&self, value: i64) -> Option<Instant> {
        self.served
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(_, v)| *v == value)
            .map(|(t, _)| *t)
    }

    fn served_count(&self) -> usize {
        self.served.lock().unwrap().len()
    }
}

#[derive(Clone)]
struct FakeScaler(Arc<FakeState>);

#[tonic::async_trait]
impl ExternalScaler for FakeScaler {
    async fn is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<IsActiveResponse>, Status> {
        *self.0.last_ref.lock().unwrap() = Some(request.into_inner());
        self.0.is_active_calls.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(IsActiveResponse {
            result: *self.0.active.borrow(),
        }))
    }

    type StreamIsActiveStream =
        futures::stream::BoxStream<'static, Result<IsActiveResponse, Status>>;

    async fn stream_is_active(
        &self,
        _request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        self.0.streams_opened.fetch_add(1, Ordering::SeqCst);
        let state = self.0.clone();
        let stream = WatchStream::new(self.0.active.subscribe()).map(move |result| {
            state.sent.lock().unwrap().push((Instant::now(), result));
            tracing::debug!(result, "fake scaler: StreamIsActive sends");
            Ok(IsActiveResponse { result })
        });
        Ok(Response::new(stream.boxed()))
    }

    async fn get_metric_spec(
        &self,
        _request: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        let spec = MetricSpec {
            metric_name: METRIC.into(),
            target_size: self.0.target.load(Ordering::SeqCst),
            target_size_float: 0.0,
        };
        Ok(Response::new(GetMetricSpecResponse {
            metric_specs: vec![spec],
        }))
    }

    async fn get_metrics(
        &self,
        request: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        let request = request.into_inner();
        if request.metric_name != METRIC {
            return Err(Status::not_found(format!(
                "no metric {}",
                request.metric_name
            )));
        }
        let value = self.0.value.load(Ordering::SeqCst);
        self.0.served.lock().unwrap().push((Instant::now(), value));
        let metric_value = MetricValue {
            metric_name: METRIC.into(),
            metric_value: value,
            metric_value_float: 0.0,
        };
        Ok(Response::new(GetMetricsResponse {
            metric_values: vec![metric_value],
        }))
    }
}

/// A simulated API server, a fake scaler reachable as [`SCALER_ADDRESS`] and the KEDA stand-in.
struct Cluster {
    sim: Sim,
    scaler: Arc<FakeState>,
    /// Where [`SCALER_ADDRESS`] resolves to (the fake scaler unless a test moves it).
    scaler_addr: Arc<Mutex<SocketAddr>>,
    /// The stand-in started by the test (none when the Sim runs its own).
    keda: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    )>,
    deployments: Api<Deployment>,
    scaled_objects: Api<DynamicObject>,
}

async fn start_fake_scaler() -> (Arc<FakeState>, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(FakeState {
        active: watch::Sender::new(false),
        value: AtomicI64::new(0),
        target: AtomicI64::new(100),
        is_active_calls: AtomicUsize::new(0),
        streams_opened: AtomicUsize::new(0),
        sent: Mutex::new(Vec::new()),
        served: Mutex::new(Vec::new()),
        last_ref: Mutex::new(None),
    });
    let server = tonic::transport::Server::builder()
        .add_service(ExternalScalerServer::new(FakeScaler(state.clone())))
        .serve_with_incoming(TcpListenerStream::new(listener));
    tokio::spawn(server);
    (state, addr)
}

impl Cluster {
    async fn start() -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let sim = Sim::start(SimConfig::apiserver_only()).await.unwrap();
        let (scaler, addr) = start_fake_scaler().await;
        let scaler_addr = Arc::new(Mutex::new(addr));
        let resolved = scaler_addr.clone();
        let resolver =
            move |address: &str| (address == SCALER_ADDRESS).then(|| *resolved.lock().unwrap());
        let (stop_keda, stopped) = tokio::sync::oneshot::channel::<()>();
        let client = sim.client();
        let keda = tokio::spawn(keda::run(client.clone(), resolver, async move {
            let _ = stopped.await;
        }));
        Self {
            deployments: Api::namespaced(client.clone(), "default"),
            scaled_objects: Api::namespaced_with(
                client,
                "default",
                &keda::scaled_object_resource(),
            ),
            sim,
            scaler,
            scaler_addr,
            keda: Some((stop_keda, keda)),
        }
    }

    /// Stops the test's stand-in, then the simulated cluster.
    async fn shutdown(self) {
        if let Some((stop, keda)) = self.keda {
            let _ = stop.send(());
            let result = tokio::time::timeout(WAIT, keda)
                .await
                .expect("the stand-in stops");
            result.unwrap().unwrap();
        }
        self.sim.shutdown().await;
    }

    async fn create_deployment(&self, name: &str, replicas: i32) {
        let deployment: Deployment = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "app", "image": "sim/echo"}]}
                }
            }
        }))
        .unwrap();
        self.deployments
            .create(&PostParams::default(), &deployment)
            .await
            .unwrap();
    }

    async fn create_scaled_object(&self, name: &str, spec: Value) {
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": name, "namespace": "default"},
            "spec": spec
        }))
        .unwrap();
        // After an API server restart the client's first request may go out on a pooled
        // connection the old server closed; a client retries that (a fresh connection follows).
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self
                .scaled_objects
                .create(&PostParams::default(), &obj)
                .await
            {
                Ok(_) => return,
                Err(kube::Error::Api(status)) if status.code == 409 && attempts > 1 => return,
                Err(error @ (kube::Error::HyperError(_) | kube::Error::Service(_)))
                    if attempts < 5 =>
                {
                    eprintln!("creating ScaledObject {name}: {error}; retrying");
                }
                Err(error) => panic!("creating ScaledObject {name}: {error}"),
            }
        }
    }

    /// Waits (watching, bounded) until the Deployment's `spec.replicas` satisfies `done`.
    async fn wait_replicas(&self, name: &str, done: impl Fn(i32) -> bool) -> (i32, Instant) {
        let replicas_of = |d: &Deployment| d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let events = watcher(self.deployments.clone(), watcher::Config::default());
        let mut objects = std::pin::pin!(kube::runtime::WatchStreamExt::applied_objects(events));
        let wait = async {
            while let Some(d) = objects.try_next().await.unwrap() {
                if d.metadata.name.as_deref() == Some(name) && done(replicas_of(&d)) {
                    return (replicas_of(&d), Instant::now());
                }
            }
            panic!("watch ended");
        };
        match tokio::time::timeout(WAIT, wait).await {
            Ok(result) => result,
            Err(_) => {
                let d = self.deployments.get(name).await.unwrap();
                panic!(
                    "timed out waiting for {name}'s replicas; now {}",
                    replicas_of(&d)
                )
            }
        }
    }

    async fn replicas(&self, name: &str) -> i32 {
        self.deployments
            .get_scale(name)
            .await
            .unwrap()
            .spec
            .and_then(|s| s.replicas)
            .unwrap_or(0)
    }

    /// Waits (polling, bounded) until the ScaledObject's status satisfies `done`.
    async fn wait_status(&self, name: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let status = self
                .scaled_objects
                .get(name)
                .await
                .unwrap()
                .data
                .get("status")
                .cloned()
                .unwrap_or_default();
            if done(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {name}'s status; now {status}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the scaler has served `n` more metric readings (so `n` polls happened).
    async fn wait_polls(&self, n: usize) {
        let target = self.scaler.served_count() + n;
        let deadline = Instant::now() + WAIT;
        while self.scaler.served_count() < target {
            assert!(Instant::now() < deadline, "timed out waiting for {n} polls");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn condition<'a>(status: &'a Value, type_: &str) -> Option<&'a Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn condition_is(status: &Value, type_: &str, value: &str) -> bool {
    condition(status, type_).is_some_and(|c| c["status"] == value)
}

fn trigger(kind: &str) -> Value {
    json!([{"type": kind, "metadata": {"scalerAddress": SCALER_ADDRESS, "httpScaledObject": "app"}}])
}

async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_activation_scales_from_zero_quickly() {
    let cluster = Cluster::start().await;
    cluster.create_deployment("app", 0).await;
    cluster
        .create_scaled_object(
            "app",
            json!({
                "scaleTargetRef": {"name": "app"},
                // Far beyond WAIT: reaching 1 replica at all means the push did it.
                "pollingInterval": 3600,
                "triggers": trigger("external-push"),
            }),
        )
        .await;
    cluster
        .wait_status("app", |s| condition_is(s, "Ready", "True"))
        .await;
    wait_until("the stream to open", || {
        cluster.scaler.streams_opened.load(Ordering::SeqCst) > 0
    })
    .await;
    wait_until("the stream's first message", || {
        cluster.scaler.first_sent(false).is_some()
    })
    .await;

    // Watch first (the call returns once the API server accepted the watch), so the measurement
    // ends at the watch event and not at a later GET.
    let version = cluster
        .deployments
        .get("app")
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let events = cluster
        .deployments
        .watch(&WatchParams::default(), &version)
        .await
        .unwrap();
    cluster.scaler.set_active(true);
    let wait = async {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.try_next().await.unwrap() {
            if let WatchEvent::Modified(d) = event
                && d.spec.as_ref().and_then(|s| s.replicas) == Some(1)
            {
                return Instant::now();
            }
        }
        panic!("watch ended")
    };
    let scaled_at = tokio::time::timeout(WAIT, wait)
        .await
        .expect("the Deployment never reached 1 replica");
    let sent_at = cluster
        .scaler
        .first_sent(true)
        .expect("the stream sent true");
    let latency = scaled_at - sent_at;
    // How fast is for `cargo xtask bench activation`; printed here for information.
    println!("activation latency (stream says true → watch sees replicas 1): {latency:?}");
    let reference = cluster.scaler.last_ref.lock().unwrap().clone().unwrap();
    assert_eq!(
        (reference.name.as_str(), reference.namespace.as_str()),
        ("app", "default")
    );
    assert_eq!(
        reference
            .scaler_metadata
            .get("httpScaledObject")
            .map(String::as_str),
        Some("app")
    );
    assert_eq!(
        reference
            .scaler_metadata
            .get("scalerAddress")
            .map(String::as_str),
        Some(SCALER_ADDRESS)
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpa_math_with_tolerance() {
    let cluster = Cluster::start().await;
    cluster.scaler.set_active(true);
    cluster.scaler.set_value(250);
    cluster.create_deployment("app", 1).await;
    cluster
        .create_scaled_object(
            "app",
            json!({
                "scaleTargetRef": {"name": "app"},
                "pollingInterval": 1,
                "triggers": trigger("external-push"),
            }),
        )
        .await;
    // 250 / 100 per replica → 3.
    let (replicas, _) = cluster.wait_replicas("app", |r| r != 1).await;
    assert_eq!(replicas, 3);
    // 310 / (100 × 3) = 1.03: within the 10% tolerance, stays at 3 for two polls.
    cluster.scaler.set_value(310);
    cluster.wait_polls(2).await;
    assert_eq!(cluster.replicas("app").await, 3);
    // 340 / 300 = 1.13: outside, ceil(3.4) = 4.
    cluster.scaler.set_value(340);
    let (replicas, _) = cluster.wait_replicas("app", |r| r != 3).await;
    assert_eq!(replicas, 4);
    let status = cluster
        .wait_status("app", |s| s["externalMetricNames"].is_array())
        .await;
    assert_eq!(
        status["externalMetricNames"],
        json!([format!("s0-{METRIC}")])
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_down_waits_for_the_stabilization_window() {
    let cluster = Cluster::start().await;
    cluster.scaler.set_active(true);
    cluster.scaler.set_value(300);
    cluster.create_deployment("app", 1).await;
    cluster
        .create_scaled_object("app", json!({
            "scaleTargetRef": {"name": "app"},
            "pollingInterval": 1,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 2}}}},
            "triggers": trigger("external-push"),
        }))
        .await;
    let (replicas, _) = cluster.wait_replicas("app", |r| r == 3).await;
    assert_eq!(replicas, 3);
    cluster.scaler.set_value(100);
    let (_, scaled_down_at) = cluster.wait_replicas("app", |r| r < 3).await;
    let last_high = cluster.scaler.last_served(300).unwrap();
    let waited = scaled_down_at - last_high;
    println!("scale-down came {waited:?} after the last recommendation of 3");
    assert!(
        waited > Duration::from_secs(2),
        "scaled down after {waited:?}, within the 2 s window"
    );
    assert_eq!(cluster.replicas("app").await, 1);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooldown_scales_to_zero_after_the_trigger_goes_quiet() {
    let cluster = Cluster::start().await;
    cluster.create_deployment("app", 0).await;
    cluster
        .create_scaled_object(
            "app",
            json!({
                "scaleTargetRef": {"name": "app"},
                "pollingInterval": 30,
                "cooldownPeriod": 1,
                "triggers": trigger("external-push"),
            }),
        )
        .await;
    wait_until("the stream's first message", || {
        cluster.scaler.first_sent(false).is_some()
    })
    .await;
    cluster.scaler.set_active(true);
    cluster.wait_replicas("app", |r| r == 1).await;
    cluster
        .wait_status("app", |s| condition_is(s, "Active", "True"))
        .await;
    cluster.scaler.set_active(false);
    let (_, zero_at) = cluster.wait_replicas("app", |r| r == 0).await;
    let quiet_at = cluster
        .scaler
        .sent
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|(_, a)| !*a)
        .unwrap()
        .0;
    let cooled = zero_at - quiet_at;
    println!("scaled to zero {cooled:?} after the trigger went quiet");
    assert!(
        cooled >= Duration::from_secs(1),
        "scaled to zero after {cooled:?}, before the 1 s cooldown"
    );
    assert!(
        cooled < Duration::from_secs(4),
        "scaled to zero only after {cooled:?}"
    );
    let status = cluster
        .wait_status("app", |s| condition_is(s, "Active", "False"))
        .await;
    assert!(
        status["lastActiveTime"]
            .as_str()
            .is_some_and(|t| t.parse::<jiff::Timestamp>().is_ok()),
        "{status}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_trigger_is_polled() {
    let cluster = Cluster::start().await;
    cluster.create_deployment("app", 0).await;
    cluster
        .create_scaled_object(
            "app",
            json!({
                "scaleTargetRef": {"name": "app"},
                "pollingInterval": 1,
                "triggers": trigger("external"),
            }),
        )
        .await;
    cluster
        .wait_status("app", |s| condition_is(s, "Ready", "True"))
        .await;
    let calls = cluster.scaler.is_active_calls.load(Ordering::SeqCst);
    assert!(calls >= 1);
    cluster.scaler.set_active(true);
    cluster.wait_replicas("app", |r| r == 1).await;
    assert!(
        cluster.scaler.is_active_calls.load(Ordering::SeqCst) > calls,
        "activated by a later poll"
    );
    assert_eq!(
        cluster.scaler.streams_opened.load(Ordering::SeqCst),
        0,
        "no stream for `external`"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_to_original_replica_count_on_delete() {
    let cluster = Cluster::start().await;
    cluster.create_deployment("app", 2).await;
    cluster
        .create_scaled_object(
            "app",
            json!({
                "scaleTargetRef": {"name": "app"},
                "pollingInterval": 1,
                "cooldownPeriod": 0,
                "advanced": {"restoreToOriginalReplicaCount": true},
                "triggers": trigger("external"),
            }),
        )
        .await;
    // Never active and no initial cooldown: scaled to zero at once.
    cluster.wait_replicas("app", |r| r == 0).await;
    let status = cluster
        .wait_status("app", |s| s["originalReplicaCount"].is_number())
        .await;
    assert_eq!(status["originalReplicaCount"], 2);
    assert_eq!(status["scaleTargetKind"], "apps/v1.Deployment");
    cluster
        .scaled_objects
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    let (replicas, _) = cluster.wait_replicas("app", |r| r != 0).await;
    assert_eq!(replicas, 2);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_without_restore_leaves_the_replicas() {
    let cluster = Cluster::start().await;
    cluster.scaler.set_active(true);
    cluster.scaler.set_value(200);
    cluster.create_deployment("app", 1).await;
    cluster
        .create_scaled_object(
            "app",
            json!({
                "scaleTargetRef": {"name": "app"},
                "pollingInterval": 1,
                "triggers": trigger("external"),
            }),
        )
        .await;
    cluster.wait_replicas("app", |r| r == 2).await;
    cluster
        .scaled_objects
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    // After the deletion nothing scales any more, whatever the scaler says.
    cluster.scaler.set_value(900);
    let polls = cluster.scaler.served_count();
    tokio::time::timeout(Duration::from_secs(3), async {
        while cluster.scaler.served_count() == polls {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect_err("the scaler is still polled after the ScaledObject was deleted");
    assert_eq!(cluster.replicas("app").await, 2);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_update_restarts_the_loop() {
    let cluster = Cluster::start().await;
    cluster.scaler.set_active(true);
    cluster.scaler.set_value(500);
    cluster.create_deployment("app", 1).await;
    cluster
        .create_scaled_object("app", json!({
            "scaleTargetRef": {"name": "app"},
            "pollingInterval": 1,
            "maxReplicaCount": 10,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}}},
            "triggers": trigger("external-push"),
        }))
        .await;
    cluster.wait_replicas("app", |r| r == 5).await;
    let patch = json!({"spec": {"maxReplicaCount": 2}});
    cluster
        .scaled_objects
        .patch("app", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    cluster.wait_replicas("app", |r| r == 2).await;
    let status = cluster
        .wait_status("app", |s| condition_is(s, "Ready", "True"))
        .await;
    assert_eq!(status["originalReplicaCount"], 1, "kept across the restart");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_conditions_report_problems() {
    let cluster = Cluster::start().await;
    cluster.create_deployment("app", 0).await;
    cluster.create_deployment("busy", 2).await;
    cluster
        .create_scaled_object(
            "ok",
            json!({
                "scaleTargetRef": {"name": "app"},
                "triggers": trigger("external-push"),
            }),
        )
        .await;
    cluster
        .create_scaled_object(
            "no-target",
            json!({
                "scaleTargetRef": {"name": "missing"},
                "triggers": trigger("external"),
            }),
        )
        .await;
    cluster
        .create_scaled_object(
            "bad-spec",
            json!({
                "scaleTargetRef": {"name": "app"},
                "minReplicaCount": 5, "maxReplicaCount": 2,
                "triggers": trigger("external"),
            }),
        )
        .await;
    cluster
        .create_scaled_object("unknown-scaler", json!({
            "scaleTargetRef": {"name": "busy"},
            "triggers": [{"type": "external", "metadata": {"scalerAddress": "nowhere.test:9090"}}],
        }))
        .await;
    cluster
        .create_scaled_object(
            "cpu",
            json!({
                "scaleTargetRef": {"name": "busy"},
                "triggers": [{"type": "cpu", "metadata": {"value": "50"}}],
            }),
        )
        .await;

    let ok = cluster
        .wait_status("ok", |s| condition_is(s, "Ready", "True"))
        .await;
    assert!(condition_is(&ok, "Active", "False"), "{ok}");
    assert_eq!(condition(&ok, "Fallback").unwrap()["status"], "False");
    assert_eq!(
        ok["scaleTargetGVKR"],
        json!({"group": "apps", "version": "v1", "kind": "Deployment", "resource": "deployments"})
    );
    for (name, reason) in [
        ("no-target", "ScaleTargetNotFound"),
        ("bad-spec", "ScaledObjectCheckFailed"),
        ("unknown-scaler", "TriggerError"),
        ("cpu", "ScaledObjectCheckFailed"),
    ] {
        let status = cluster
            .wait_status(name, |s| condition_is(s, "Ready", "False"))
            .await;
        let ready = condition(&status, "Ready").unwrap();
        assert_eq!(ready["reason"], reason, "{name}: {status}");
        assert!(ready["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    cluster.scaler.set_active(true);
    let active = cluster
        .wait_status("ok", |s| condition_is(s, "Active", "True"))
        .await;
    assert_eq!(
        condition(&active, "Active").unwrap()["reason"],
        "ScalerActive"
    );
    assert!(active["lastActiveTime"].is_string(), "{active}");
    assert_eq!(active["originalReplicaCount"], 0);
    // Neither a failing scaler nor an unsupported trigger scales a workload to zero.
    assert_eq!(cluster.replicas("busy").await, 2);
    cluster.shutdown().await;
}

/// The whole simulated cluster: `Sim::start`'s own KEDA stand-in finds the scaler through a
/// selectorless Service, its EndpointSlice and the Service proxy, as in a real cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_keda_reaches_the_scaler_through_a_service() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let client = sim.client();
    let (scaler, addr) = start_fake_scaler().await;
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(client.clone(), "default");
    let service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "fake-scaler", "namespace": "default"},
        "spec": {"ports": [{"port": 9090, "targetPort": addr.port()}]}
    }))
    .unwrap();
    services
        .create(&PostParams::default(), &service)
        .await
        .unwrap();
    let slices: Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
        Api::namespaced(client.clone(), "default");
    let slice = serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "fake-scaler-1", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "fake-scaler"}},
        "addressType": "IPv4",
        "ports": [{"port": addr.port(), "protocol": "TCP"}],
        "endpoints": [{"addresses": [addr.ip().to_string()], "conditions": {"ready": true}}]
    }))
    .unwrap();
    slices.create(&PostParams::default(), &slice).await.unwrap();

    let cluster = Cluster {
        deployments: Api::namespaced(client.clone(), "default"),
        scaled_objects: Api::namespaced_with(client, "default", &keda::scaled_object_resource()),
        sim,
        scaler,
        scaler_addr: Arc::new(Mutex::new(addr)),
        keda: None,
    };
    cluster.create_deployment("app", 0).await;
    cluster
        .create_scaled_object("app", json!({
            "scaleTargetRef": {"name": "app"},
            "pollingInterval": 30,
            "triggers": [{"type": "external-push",
                          "metadata": {"scalerAddress": "fake-scaler.default.svc.cluster.local:9090"}}],
        }))
        .await;
    cluster
        .wait_status("app", |s| condition_is(s, "Ready", "True"))
        .await;
    wait_until("the stream's first message", || {
        cluster.scaler.first_sent(false).is_some()
    })
    .await;
    cluster.scaler.set_active(true);
    let (_, scaled_at) = cluster.wait_replicas("app", |r| r == 1).await;
    let latency = scaled_at - cluster.scaler.first_sent(true).unwrap();
    println!("activation through the Service proxy (incl. a fresh watch's list): {latency:?}");
    assert!(
        latency < Duration::from_secs(2),
        "activation took {latency:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_stream_reconnects_when_the_scaler_comes_back() {
    let cluster = Cluster::start().await;
    let fake = *cluster.scaler_addr.lock().unwrap();
    // Point the scaler's name at a port nobody listens on.
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    *cluster.scaler_addr.lock().unwrap() = dead;
    cluster.create_deployment("app", 0).await;
    cluster
        .create_scaled_object(
            "app",
            json!({
                "scaleTargetRef": {"name": "app"},
                "pollingInterval": 30,
                "triggers": trigger("external-push"),
            }),
        )
        .await;
    let status = cluster
        .wait_status("app", |s| condition_is(s, "Ready", "False"))
        .await;
    assert_eq!(
        condition(&status, "Ready").unwrap()["reason"],
        "TriggerError"
    );
    assert_eq!(cluster.scaler.streams_opened.load(Ordering::SeqCst), 0);

    // The scaler is back: the stream reconnects (backoff ≤ 5 s) and marks the ScaledObject Ready
    // without waiting for the next 30 s poll.
    *cluster.scaler_addr.lock().unwrap() = fake;
    cluster
        .wait_status("app", |s| condition_is(s, "Ready", "True"))
        .await;
    cluster.scaler.set_active(true);
    cluster.wait_replicas("app", |r| r == 1).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_watching_across_an_apiserver_restart() {
    let cluster = Cluster::start().await;
    cluster.create_deployment("app", 0).await;
    cluster.create_deployment("other", 0).await;
    cluster
        .create_scaled_object(
            "app",
            json!({"scaleTargetRef": {"name": "app"}, "pollingInterval": 30,
                   "triggers": trigger("external-push")}),
        )
        .await;
    cluster
        .wait_status("app", |s| condition_is(s, "Ready", "True"))
        .await;
    cluster.sim.restart_apiserver().await.unwrap();
    // A ScaledObject created after the restart is found by the re-established watch.
    cluster
        .create_scaled_object(
            "other",
            json!({"scaleTargetRef": {"name": "other"}, "pollingInterval": 30,
                   "triggers": trigger("external-push")}),
        )
        .await;
    cluster
        .wait_status("other", |s| condition_is(s, "Ready", "True"))
        .await;
    cluster.scaler.set_active(true);
    cluster.wait_replicas("app", |r| r == 1).await;
    cluster.wait_replicas("other", |r| r == 1).await;
    cluster.shutdown().await;
}

/// The API server checks ScaledObjects against KEDA's own CRD schema (KEDA 2.16.1), as a
/// cluster with KEDA installed does: an undeclared field (by create and by server-side apply,
/// the operator's write), a wrong type or a missing required field is a 422 naming the field;
/// a ScaledObject shaped like the operator's is accepted unchanged.
#[tokio::test]
async fn scaled_objects_are_checked_against_kedas_schema() {
    let sim = Sim::start(SimConfig::apiserver_only()).await.unwrap();
    let api: Api<DynamicObject> =
        Api::namespaced_with(sim.client(), "default", &keda::scaled_object_resource());
    let object = |name: &str, spec: Value| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": name}, "spec": spec,
        }))
        .unwrap()
    };
    let refused = |result: kube::Result<DynamicObject>| -> (u16, Vec<(String, String)>) {
        match result {
            Err(kube::Error::Api(status)) => (
                status.code,
                status
                    .details
                    .map(|d| d.causes.into_iter().map(|c| (c.field, c.message)).collect())
                    .unwrap_or_default(),
            ),
            other => panic!("expected a refusal, got {other:?}"),
        }
    };
    let operators = json!({
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "app"},
        "pollingInterval": 15, "minReplicaCount": 0, "maxReplicaCount": 10,
        "cooldownPeriod": 300, "initialCooldownPeriod": 0,
        "advanced": {"restoreToOriginalReplicaCount": true},
        "triggers": [{"type": "external-push", "metadata": {
            "scalerAddress": "keda-add-ons-http-external-scaler.keda:9090",
            "httpScaledObject": "app"}}],
    });
    let created = api
        .create(&PostParams::default(), &object("app", operators.clone()))
        .await
        .expect("the operator's shape is valid");
    assert_eq!(created.data["spec"], operators);

    let mut unknown = operators.clone();
    unknown["triggers"][0]["metadata2"] = json!({});
    unknown["pollingIntervall"] = json!(15);
    let (code, causes) = refused(
        api.create(&PostParams::default(), &object("unknown", unknown.clone()))
            .await,
    );
    assert_eq!(code, 422);
    let fields: Vec<&str> = causes.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        fields,
        ["spec.pollingIntervall", "spec.triggers[0].metadata2"],
        "{causes:?}"
    );
    assert!(
        causes
            .iter()
            .all(|(_, m)| m == "field not declared in schema"),
        "{causes:?}"
    );
    let mut applied = object("app", unknown);
    applied.metadata.managed_fields = None;
    let (code, causes) = refused(
        api.patch(
            "app",
            &PatchParams::apply("test").force(),
            &Patch::Apply(&applied),
        )
        .await,
    );
    assert_eq!(code, 422);
    assert_eq!(causes[0].0, "spec.pollingIntervall", "{causes:?}");

    let mut wrong_type = operators.clone();
    wrong_type["minReplicaCount"] = json!("one");
    wrong_type["triggers"][0]["metadata"]["httpScaledObject"] = json!(1);
    let (code, causes) = refused(
        api.create(&PostParams::default(), &object("typed", wrong_type))
            .await,
    );
    assert_eq!(code, 422);
    let fields: Vec<&str> = causes.iter().map(|(f, _)| f.as_str()).collect();
    assert!(
        fields.contains(&"spec.minReplicaCount")
            && fields.contains(&"spec.triggers[0].metadata[httpScaledObject]"),
        "{causes:?}"
    );

    let (code, causes) = refused(
        api.create(
            &PostParams::default(),
            &object("bare", json!({"scaleTargetRef": {"kind": "Deployment"}})),
        )
        .await,
    );
    assert_eq!(code, 422);
    let mut fields: Vec<&str> = causes.iter().map(|(f, _)| f.as_str()).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        ["spec.scaleTargetRef.name", "spec.triggers"],
        "{causes:?}"
    );
    // The stored object is untouched by the refused apply.
    let stored = api.get("app").await.unwrap();
    assert_eq!(stored.data["spec"], operators);
    sim.shutdown().await;
}

/// The HorizontalPodAutoscalers of namespace `default`.
fn hpas(cluster: &Cluster) -> Api<DynamicObject> {
    Api::namespaced_with(
        cluster.sim.client(),
        "default",
        &kube::api::ApiResource::erase::<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler>(
            &(),
        ),
    )
}

/// The HPA's target, as the stand-in wrote it (`spec.metrics[0].external.target.averageValue`).
async fn hpa_target(cluster: &Cluster, name: &str) -> Option<String> {
    let hpa = hpas(cluster).get_opt(name).await.unwrap()?;
    hpa.data
        .pointer("/spec/metrics/0/external/target/averageValue")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hpa_keeps_its_metric_specs_until_its_annotations_change() {
    let cluster = Cluster::start().await;
    cluster.scaler.set_active(true);
    cluster.scaler.set_value(250);
    cluster.create_deployment("app", 1).await;
    cluster
        .create_scaled_object(
            "app",
            json!({
                "scaleTargetRef": {"name": "app"},
                "pollingInterval": 1,
                "triggers": trigger("external-push"),
            }),
        )
        .await;
    // Built from GetMetricSpec: 250 / 100 per replica → 3; status names the HPA.
    let (replicas, _) = cluster.wait_replicas("app", |r| r != 1).await;
    assert_eq!(replicas, 3);
    let status = cluster
        .wait_status("app", |s| s["hpaName"].is_string())
        .await;
    assert_eq!(status["hpaName"], "keda-hpa-app");
    assert_eq!(
        hpa_target(&cluster, "keda-hpa-app").await.as_deref(),
        Some("100")
    );
    // The scaler now answers another target; KEDA does not ask again on its own.
    cluster.scaler.target.store(50, Ordering::SeqCst);
    cluster.wait_polls(3).await;
    assert_eq!(
        cluster.replicas("app").await,
        3,
        "the HPA still divides by 100"
    );
    assert_eq!(
        hpa_target(&cluster, "keda-hpa-app").await.as_deref(),
        Some("100")
    );
    // An annotation on the HPA makes KEDA rebuild it from the specs: 250 / 50 → 5.
    let hpas = hpas(&cluster);
    let patch = json!({"metadata": {"annotations": {"example.com/touched": "1"}}});
    hpas.patch(
        "keda-hpa-app",
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .unwrap();
    let (replicas, _) = cluster.wait_replicas("app", |r| r != 3).await;
    assert_eq!(replicas, 5);
    assert_eq!(
        hpa_target(&cluster, "keda-hpa-app").await.as_deref(),
        Some("50")
    );
    // The HPA belongs to the ScaledObject: deleting it takes the HPA along.
    cluster
        .scaled_objects
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while hpas.get_opt("keda-hpa-app").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the HPA is garbage-collected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.shutdown().await;
}
