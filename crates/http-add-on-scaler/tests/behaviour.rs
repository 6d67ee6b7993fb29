//! The scaler as KEDA sees it, with real interceptors on a simulated API server.

mod support;

use std::time::{Duration, Instant};

use http_add_on_scaler::naming::{
    HTTP_SCALED_OBJECT_KEY, INTERCEPTOR_ROUTE_KEY, INTERCEPTOR_TARGET_PENDING_REQUESTS_KEY,
};
use http_add_on_scaler::{LIVENESS_SERVICE, READINESS_SERVICE};
use http_add_on_types::proto::externalscaler::{MetricSpec, ScaledObjectRef};
use serde_json::json;
use support::{ADMIN_NAMESPACE, Cluster, FakeAdmin, eventually};
use tokio::io::AsyncReadExt;
use tonic::Code;

fn httpso(name: &str) -> ScaledObjectRef {
    Cluster::sor(name, HTTP_SCALED_OBJECT_KEY, name)
}

fn route(name: &str) -> ScaledObjectRef {
    Cluster::sor(&format!("{name}-so"), INTERCEPTOR_ROUTE_KEY, name)
}

async fn metric_specs(cluster: &Cluster, sor: &ScaledObjectRef) -> Vec<MetricSpec> {
    eventually(&format!("metric spec of {sor:?}"), || async {
        cluster
            .keda
            .clone()
            .get_metric_spec(sor.clone())
            .await
            .ok()
            .map(|r| r.into_inner().metric_specs)
    })
    .await
}

fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_is_summed_across_interceptors() {
    let cluster = Cluster::start(3, |_| {}).await;
    cluster
        .create_http_scaled_object("app", "app.test", "app", json!({}))
        .await;
    cluster.wait_routed("default/app").await;
    let mut held = Vec::new();
    for (i, n) in [(0, 1), (1, 2), (2, 3)] {
        for _ in 0..n {
            held.push(cluster.send_request(i, "app.test").await);
        }
    }
    let sor = httpso("app");
    cluster.wait_int_metric(&sor, 6).await;
    let values = cluster.get_metrics(&sor).await.expect("GetMetrics");
    assert_eq!(values.len(), 1);
    assert_eq!(values[0].metric_name, "http-default_002Fapp");
    assert_eq!(values[0].metric_value_float, 0.0);
    // The interceptor's own ScaledObject sees the total over every route.
    let interceptor = ScaledObjectRef {
        namespace: ADMIN_NAMESPACE.to_owned(),
        ..Cluster::sor(
            "keda-add-ons-http-interceptor",
            INTERCEPTOR_TARGET_PENDING_REQUESTS_KEY,
            "200",
        )
    };
    cluster.wait_int_metric(&interceptor, 6).await;
    // Clients giving up count out.
    held.truncate(1);
    cluster.wait_int_metric(&sor, 1).await;
    let text = cluster.scrape().await;
    assert_eq!(
        metric_value(&text, "keda_http_scaler_connected_interceptors"),
        Some(3.0),
        "{text}"
    );
    assert!(
        text.contains("keda_http_scaler_route_concurrency{route=\"default/app\"} 1.0"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_rate_over_a_window() {
    let cluster = Cluster::start(2, |_| {}).await;
    cluster
        .create_interceptor_route(
            "rated",
            "rated.test",
            "rated",
            json!({
                "concurrency": {"targetValue": 10},
                "requestRate": {"targetValue": 5, "window": "10s", "granularity": "1s"}
            }),
        )
        .await;
    cluster
        .create_http_scaled_object(
            "hrate",
            "hrate.test",
            "hrate",
            json!({"scalingMetric": {"requestRate": {"targetValue": 1, "window": "1m", "granularity": "1s"}}}),
        )
        .await;
    let _rated = cluster.make_app_ready("rated").await;
    let _hrate = cluster.make_app_ready("hrate").await;
    cluster.wait_routed("default/rated").await;
    cluster.wait_routed("default/hrate").await;
    // Both routes idle: rate 0, not active.
    let sor = route("rated");
    let values = eventually("rated metrics", || async {
        cluster.get_metrics(&sor).await.ok()
    })
    .await;
    let names: Vec<_> = values.iter().map(|v| v.metric_name.as_str()).collect();
    assert_eq!(names, ["http_rated_concurrency", "http_rated_rate"]);
    assert!(
        values
            .iter()
            .all(|v| v.metric_value_float == 0.0 && v.metric_value == 0)
    );
    assert!(!cluster.is_active(&httpso("hrate")).await.expect("IsActive"));

    let started = Instant::now();
    for i in 0..20 {
        assert_eq!(cluster.request(i % 2, "rated.test").await, 200);
    }
    // 20 requests over a 10 s window: 2 requests per second.
    let rate = eventually("rate of 2/s", || async {
        let values = cluster.get_metrics(&sor).await.ok()?;
        let rate = values.iter().find(|v| v.metric_name == "http_rated_rate")?;
        (rate.metric_value_float >= 2.0).then_some(rate.metric_value_float)
    })
    .await;
    if started.elapsed() < Duration::from_secs(9) {
        assert!((rate - 2.0).abs() < 1e-9, "rate {rate}");
    }

    // A single request makes a request-rate HTTPScaledObject active: ceil(1/60) = 1.
    assert_eq!(cluster.request(1, "hrate.test").await, 200);
    cluster.wait_int_metric(&httpso("hrate"), 1).await;
    assert!(cluster.is_active(&httpso("hrate")).await.expect("IsActive"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_metrics_answers_only_the_metric_asked_for() {
    let cluster = Cluster::start(1, |_| {}).await;
    cluster
        .create_interceptor_route(
            "pair",
            "pair.test",
            "pair",
            json!({
                "concurrency": {"targetValue": 1},
                "requestRate": {"targetValue": 1, "window": "1m", "granularity": "1s"}
            }),
        )
        .await;
    cluster.wait_routed("default/pair").await;
    // No ready endpoint: three requests stay in flight (held for the cold start).
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(cluster.send_request(0, "pair.test").await);
    }
    let sor = route("pair");
    let concurrency = eventually("concurrency 3", || async {
        let values = cluster
            .get_named_metric(&sor, "http_pair_concurrency")
            .await
            .ok()?;
        (values.first()?.metric_value_float == 3.0).then_some(values)
    })
    .await;
    assert_eq!(concurrency.len(), 1, "{concurrency:?}");
    assert_eq!(concurrency[0].metric_name, "http_pair_concurrency");

    let rate = eventually("a request rate", || async {
        let values = cluster
            .get_named_metric(&sor, "http_pair_rate")
            .await
            .ok()?;
        (values.first()?.metric_value_float > 0.0).then_some(values)
    })
    .await;
    assert_eq!(rate.len(), 1, "{rate:?}");
    assert_eq!(rate[0].metric_name, "http_pair_rate");
    // 3 requests in a 1-minute window: the rate is 3/60 per second, not the concurrency.
    assert!(rate[0].metric_value_float < 1.0, "{rate:?}");

    // Without a name (not KEDA) both come back; a name the route lacks is an error naming it.
    let all = cluster.get_metrics(&sor).await.expect("GetMetrics");
    assert_eq!(all.len(), 2, "{all:?}");
    let status = cluster
        .get_named_metric(&sor, "http_other_rate")
        .await
        .expect_err("unknown metric name");
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("http_other_rate"), "{status:?}");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_specs_for_each_metadata_kind() {
    let cluster = Cluster::start(1, |_| {}).await;
    cluster
        .create_http_scaled_object("plain", "plain.test", "plain", json!({}))
        .await;
    cluster
        .create_http_scaled_object(
            "legacy",
            "legacy.test",
            "legacy",
            json!({"targetPendingRequests": 42}),
        )
        .await;
    cluster
        .create_http_scaled_object(
            "conc",
            "conc.test",
            "conc",
            json!({"targetPendingRequests": 42, "scalingMetric": {"concurrency": {"targetValue": 7}}}),
        )
        .await;
    cluster
        .create_interceptor_route(
            "both",
            "both.test",
            "both",
            json!({"concurrency": {"targetValue": 3}, "requestRate": {"targetValue": 9}}),
        )
        .await;
    let int_spec = |name: &str, target| MetricSpec {
        metric_name: name.to_owned(),
        target_size: target,
        target_size_float: 0.0,
    };
    let float_spec = |name: &str, target| MetricSpec {
        metric_name: name.to_owned(),
        target_size: 0,
        target_size_float: target,
    };
    assert_eq!(
        metric_specs(&cluster, &httpso("plain")).await,
        [int_spec("http-default_002Fplain", 100)]
    );
    assert_eq!(
        metric_specs(&cluster, &httpso("legacy")).await,
        [int_spec("http-default_002Flegacy", 42)]
    );
    assert_eq!(
        metric_specs(&cluster, &httpso("conc")).await,
        [int_spec("http-default_002Fconc", 7)]
    );
    assert_eq!(
        metric_specs(&cluster, &route("both")).await,
        [
            float_spec("http_both_concurrency", 3.0),
            float_spec("http_both_rate", 9.0)
        ]
    );
    let interceptor = ScaledObjectRef {
        namespace: ADMIN_NAMESPACE.to_owned(),
        ..Cluster::sor(
            "keda-add-ons-http-interceptor",
            INTERCEPTOR_TARGET_PENDING_REQUESTS_KEY,
            "200",
        )
    };
    assert_eq!(
        metric_specs(&cluster, &interceptor).await,
        [int_spec("http-keda_002Fkeda-add-ons-http-interceptor", 200)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn is_active_goes_false_true_false() {
    let cluster = Cluster::start(2, |_| {}).await;
    cluster
        .create_http_scaled_object("act", "act.test", "act", json!({}))
        .await;
    cluster.wait_routed("default/act").await;
    let sor = httpso("act");
    eventually("IsActive false", || async {
        (!cluster.is_active(&sor).await.ok()?).then_some(())
    })
    .await;
    // A request arrives while the app has no ready endpoint: it is held, and counted.
    let mut held = cluster.send_request(1, "act.test").await;
    eventually("IsActive true", || async {
        cluster.is_active(&sor).await.ok()?.then_some(())
    })
    .await;
    // The app becomes ready: the held request is answered and the route goes idle.
    let _backend = cluster.make_app_ready("act").await;
    let mut response = vec![0u8; 12];
    tokio::time::timeout(
        http_add_on_testkit::wait::DEADLINE,
        held.read_exact(&mut response),
    )
    .await
    .expect("held request answered in time")
    .expect("response read");
    assert_eq!(&response, b"HTTP/1.1 200");
    eventually("IsActive false again", || async {
        (!cluster.is_active(&sor).await.ok()?).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_is_active_pushes_true_when_a_held_request_arrives() {
    // A repeat interval far beyond the wait's deadline: an answer that arrives at all was
    // pushed by the change notification (no timed bound needed).
    let cluster = Cluster::start(2, |c| c.stream_interval = Duration::from_secs(3600)).await;
    cluster
        .create_http_scaled_object("cold", "cold.test", "cold", json!({}))
        .await;
    cluster.wait_routed("default/cold").await;
    let sor = httpso("cold");
    // Wait until the scaler answers for the route (the route cache has synced).
    eventually("IsActive answers", || async {
        cluster.is_active(&sor).await.ok()
    })
    .await;
    let mut stream = cluster
        .keda
        .clone()
        .stream_is_active(sor.clone())
        .await
        .expect("StreamIsActive")
        .into_inner();
    let first = tokio::time::timeout(http_add_on_testkit::wait::DEADLINE, stream.message())
        .await
        .expect("first answer in time")
        .expect("stream open")
        .expect("an answer");
    assert!(!first.result);
    // Twice: the second time requests from the first are still in the rate window, and the
    // concurrency crossing zero must still be pushed.
    for round in 0..2 {
        let held = cluster.send_request(round, "cold.test").await;
        let next = tokio::time::timeout(http_add_on_testkit::wait::DEADLINE, stream.message())
            .await
            .expect("activation in time")
            .expect("stream open")
            .expect("an answer");
        assert!(next.result, "round {round}: expected true");
        // The client gives up: `false` is pushed too.
        drop(held);
        let next = tokio::time::timeout(http_add_on_testkit::wait::DEADLINE, stream.message())
            .await
            .expect("deactivation in time")
            .expect("stream open")
            .expect("an answer");
        assert!(!next.result, "round {round}: expected false");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_interceptor_keeps_its_last_value_until_it_leaves_the_endpoint_slice() {
    let mut cluster = Cluster::start(2, |_| {}).await;
    cluster
        .create_http_scaled_object("kill", "kill.test", "kill", json!({}))
        .await;
    cluster.wait_routed("default/kill").await;
    let _held0 = cluster.send_request(0, "kill.test").await;
    let _held1 = [
        cluster.send_request(1, "kill.test").await,
        cluster.send_request(1, "kill.test").await,
    ];
    let sor = httpso("kill");
    cluster.wait_int_metric(&sor, 3).await;

    cluster.kill_interceptor(1).await;
    // The scaler notices (its stream broke and reconnects fail)...
    eventually("the scaler notices the dead interceptor", || async {
        let text = cluster.scrape().await;
        (metric_value(&text, "keda_http_scaler_connected_interceptors")? == 1.0
            && metric_value(&text, "keda_http_scaler_fetch_errors_total")? >= 1.0)
            .then_some(())
    })
    .await;
    // ...but keeps its last-known concurrency while it is listed.
    let values = cluster.get_metrics(&sor).await.expect("GetMetrics");
    assert_eq!(values[0].metric_value, 3);

    cluster.unlist_admin_endpoint(1).await;
    cluster.wait_int_metric(&sor, 1).await;

    // Every listed interceptor unreachable: an error, not a guess.
    cluster.kill_interceptor(0).await;
    eventually("UNAVAILABLE when all interceptors fail", || async {
        match cluster.get_metrics(&sor).await {
            Err(status) if status.code() == Code::Unavailable => Some(()),
            _ => None,
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_serving_while_the_api_server_restarts() {
    let mut cluster = Cluster::start(1, |_| {}).await;
    cluster
        .create_http_scaled_object("rs", "rs.test", "rs", json!({}))
        .await;
    cluster.wait_routed("default/rs").await;
    let sor = httpso("rs");
    let _a = cluster.send_request(0, "rs.test").await;
    cluster.wait_int_metric(&sor, 1).await;

    cluster.sim.stop_apiserver().await;
    // Counts still flow from the interceptor, and answers come from the caches.
    let _b = cluster.send_request(0, "rs.test").await;
    cluster.wait_int_metric(&sor, 2).await;
    assert!(cluster.is_active(&sor).await.expect("IsActive"));
    let specs = metric_specs(&cluster, &sor).await;
    assert_eq!(specs[0].target_size, 100);

    cluster
        .sim
        .start_apiserver()
        .await
        .expect("API server back");
    // Discovery resumes: a new interceptor is followed.
    let interceptor = {
        let mut config = http_add_on_interceptor::Config::for_tests();
        config.drain_timeout = Duration::from_millis(1);
        http_add_on_interceptor::Interceptor::start(config, cluster.sim.client())
            .await
            .expect("interceptor starts")
    };
    let addr = interceptor.admin_addr();
    cluster.interceptors.push(Some(interceptor));
    cluster.list_admin_endpoint(1, addr).await;
    cluster.wait_routed("default/rs").await;
    let _c = cluster.send_request(1, "rs.test").await;
    cluster.wait_int_metric(&sor, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_interceptors_without_the_push_stream() {
    let cluster = Cluster::start(0, |_| {}).await;
    cluster
        .create_http_scaled_object("legacy", "legacy.test", "legacy", json!({}))
        .await;
    let polled = FakeAdmin::start(false).await;
    let streamed = FakeAdmin::start(true).await;
    polled.set("default/legacy", 4, 10);
    streamed.set("default/legacy", 1, 1);
    cluster.list_admin_endpoint(0, polled.addr).await;
    cluster.list_admin_endpoint(1, streamed.addr).await;
    let sor = httpso("legacy");
    cluster.wait_int_metric(&sor, 5).await;
    polled.set("default/legacy", 0, 12);
    cluster.wait_int_metric(&sor, 1).await;
    let text = cluster.scrape().await;
    assert_eq!(
        metric_value(&text, "keda_http_scaler_connected_interceptors"),
        Some(2.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_metrics_endpoint_off_nothing_is_bound_and_keda_is_still_answered() {
    // Something else holds the metrics address: a second bind of it fails, so the scaler
    // starting at all shows that it did not try to bind it.
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let taken_addr = taken.local_addr().unwrap();
    assert!(tokio::net::TcpListener::bind(taken_addr).await.is_err());
    let cluster = Cluster::start(0, |c| {
        c.metrics_enabled = false;
        c.metrics_listen = taken_addr;
    })
    .await;
    assert_eq!(cluster.scaler.metrics_addr(), None);
    cluster
        .create_http_scaled_object("quiet", "quiet.test", "quiet", json!({}))
        .await;
    let fake = FakeAdmin::start(true).await;
    fake.set("default/quiet", 3, 3);
    cluster.list_admin_endpoint(0, fake.addr).await;
    cluster.wait_int_metric(&httpso("quiet"), 3).await;
    drop(taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_metadata_is_rejected_with_the_key_named() {
    let cluster = Cluster::start(0, |_| {}).await;
    let mut keda = cluster.keda.clone();
    let cases = [
        (
            ScaledObjectRef {
                name: "so".into(),
                namespace: "default".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
            HTTP_SCALED_OBJECT_KEY,
        ),
        (
            Cluster::sor("so", INTERCEPTOR_TARGET_PENDING_REQUESTS_KEY, "lots"),
            Code::InvalidArgument,
            INTERCEPTOR_TARGET_PENDING_REQUESTS_KEY,
        ),
        (
            Cluster::sor("so", HTTP_SCALED_OBJECT_KEY, " "),
            Code::InvalidArgument,
            HTTP_SCALED_OBJECT_KEY,
        ),
        (
            Cluster::sor("so", HTTP_SCALED_OBJECT_KEY, "missing"),
            Code::NotFound,
            "default/missing",
        ),
        (
            Cluster::sor("so", INTERCEPTOR_ROUTE_KEY, "missing"),
            Code::NotFound,
            INTERCEPTOR_ROUTE_KEY,
        ),
    ];
    for (sor, code, named) in cases {
        let status = eventually(&format!("{code:?} for {sor:?}"), || {
            let mut keda = keda.clone();
            let sor = sor.clone();
            async move {
                // UNAVAILABLE until the route caches have synced.
                match keda.get_metric_spec(sor).await {
                    Err(s) if s.code() == Code::Unavailable => None,
                    other => Some(other),
                }
            }
        })
        .await
        .expect_err("bad metadata must fail");
        assert_eq!(status.code(), code, "{sor:?}: {status:?}");
        assert!(status.message().contains(named), "{status:?}");
        let status = keda
            .is_active(sor.clone())
            .await
            .expect_err("IsActive fails");
        assert_eq!(status.code(), code);
        let status = keda
            .stream_is_active(sor.clone())
            .await
            .expect_err("StreamIsActive fails");
        assert_eq!(status.code(), code);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_interceptor_data_and_reflection_lists_the_scaler() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let cluster = Cluster::start(0, |_| {}).await;
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", cluster.scaler.grpc_addr()))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
    let health = HealthClient::new(channel.clone());
    let status = |service: &'static str| {
        let mut health = health.clone();
        async move {
            health
                .check(HealthCheckRequest {
                    service: service.to_owned(),
                })
                .await
                .expect("health check")
                .into_inner()
                .status()
        }
    };
    assert_eq!(status(LIVENESS_SERVICE).await, ServingStatus::Serving);
    assert_eq!(status(READINESS_SERVICE).await, ServingStatus::NotServing);
    let fake = FakeAdmin::start(true).await;
    cluster.list_admin_endpoint(0, fake.addr).await;
    eventually("ready once interceptor data arrives", || async {
        (status(READINESS_SERVICE).await == ServingStatus::Serving).then_some(())
    })
    .await;
    drop(fake);
    eventually("not ready once the data is stale", || async {
        (status(READINESS_SERVICE).await == ServingStatus::NotServing).then_some(())
    })
    .await;

    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("reflection answer")
        .expect("a response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer {response:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains(&"externalscaler.ExternalScaler"),
        "{names:?}"
    );
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_is_active_repeats_the_answer_every_interval() {
    let cluster = Cluster::start(1, |c| c.stream_interval = Duration::from_millis(50)).await;
    cluster
        .create_http_scaled_object("rep", "rep.test", "rep", json!({}))
        .await;
    let sor = httpso("rep");
    eventually("IsActive answers", || async {
        cluster.is_active(&sor).await.ok()
    })
    .await;
    let mut stream = cluster
        .keda
        .clone()
        .stream_is_active(sor)
        .await
        .expect("StreamIsActive")
        .into_inner();
    for _ in 0..4 {
        let answer = tokio::time::timeout(http_add_on_testkit::wait::DEADLINE, stream.message())
            .await
            .expect("an answer in time")
            .expect("stream open")
            .expect("an answer");
        assert!(!answer.result);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiling_bind_address_serves_the_debug_endpoint() {
    let cluster = Cluster::start(0, |c| {
        c.profiling_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let addr = cluster.scaler.profiling_addr().expect("debug endpoint on");
    let (status, text) = support::http_get(addr, "/debug/stats").await;
    assert_eq!(status, hyper::StatusCode::OK, "{text}");
    for series in [
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "tokio_workers ",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(series)),
            "{series}in\n{text}"
        );
    }
    let (status, text) = support::http_get(addr, "/debug/pprof/heap").await;
    assert_eq!(status, hyper::StatusCode::NOT_IMPLEMENTED, "{text}");
    let off = Cluster::start(0, |_| {}).await;
    assert_eq!(off.scaler.profiling_addr(), None, "off unless set");
}
