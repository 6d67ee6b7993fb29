//! Counting, the admin endpoints and push stream, cold-start holding, readiness timeouts,
//! fallbacks, placeholders, static routes, API server outages and graceful shutdown.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Reply, TestBackend, World, eventually, hso};
use http::{Request, StatusCode};
use http_add_on_interceptor::Config;
use http_add_on_types::queue::{QUEUE_STREAM_PATH, QueueUpdate};
use http_body_util::Full;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;

fn spawn_get(w: &World, host: &str, path: &str) -> tokio::task::JoinHandle<Reply> {
    let http = w.http.clone();
    let req = Request::get(w.proxy_url(path))
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    tokio::spawn(async move { Reply::read(http.request(req).await.expect("proxy answers")).await })
}

async fn admin_get(w: &World, path: &str) -> Reply {
    let url = format!("http://{}{path}", w.interceptor.admin_addr());
    Reply::read(w.http.get(url.parse().unwrap()).await.unwrap()).await
}

/// Sends a raw request for `host` + `path` and returns the open connection.
async fn raw_request(w: &World, host: &str, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(w.interceptor.proxy_addr())
        .await
        .unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_held_requests_and_releases_them_on_completion_and_abort() {
    let w = World::start().await;
    let a = TestBackend::start("a").await;
    w.expose("svc", "http", &[&a]).await;
    w.expose("cold-svc", "http", &[]).await;
    w.apply_hso(hso("app", &["count.test"], &[], "svc", json!(80)))
        .await;
    w.apply_hso(hso("cold", &["cold.test"], &[], "cold-svc", json!(80)))
        .await;
    w.wait_routed("count.test", "/").await;
    assert_eq!(admin_get(&w, "/livez").await.status, StatusCode::OK);
    assert_eq!(admin_get(&w, "/readyz").await.status, StatusCode::OK);
    let before = w.queue().await["default/app"].request_count;

    // Held at the backend: counted while in flight, released on completion.
    let held = spawn_get(&w, "count.test", "/hold");
    w.wait_concurrency("default/app", 1).await;
    let queue = w.queue().await;
    assert_eq!(queue["default/app"].request_count, before + 1);
    a.release();
    assert_eq!(held.await.unwrap().status, StatusCode::OK);
    w.wait_concurrency("default/app", 0).await;

    // A client that gives up while its request is held at the backend.
    let b = TestBackend::start("b").await;
    w.expose("svc2", "http", &[&b]).await;
    w.apply_hso(hso("app2", &["abort.test"], &[], "svc2", json!(80)))
        .await;
    w.wait_routed("abort.test", "/").await;
    let stream = raw_request(&w, "abort.test", "/hold").await;
    w.wait_concurrency("default/app2", 1).await;
    drop(stream);
    w.wait_concurrency("default/app2", 0).await;

    // A client that gives up during a cold-start hold.
    let stream = raw_request(&w, "cold.test", "/").await;
    w.wait_concurrency("default/cold", 1).await;
    drop(stream);
    w.wait_concurrency("default/cold", 0).await;
    assert_eq!(w.queue().await["default/cold"].request_count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_stream_sends_a_snapshot_then_activations_immediately() {
    let w = World::with_config(Config {
        // Coalesced updates would take an hour, far beyond the reads' hang guard: an update
        // that arrives at all came by the immediate activation path (no timed bound needed).
        queue_stream_interval: Duration::from_secs(3600),
        ..Config::for_tests()
    })
    .await;
    w.expose("svc", "http", &[]).await;
    w.apply_hso(hso("app", &["stream.test"], &[], "svc", json!(80)))
        .await;
    eventually("the route in /queue", || async {
        w.queue().await.contains_key("default/app").then_some(())
    })
    .await;

    let mut stream = TcpStream::connect(w.interceptor.admin_addr())
        .await
        .unwrap();
    stream
        .write_all(format!("GET {QUEUE_STREAM_PATH} HTTP/1.1\r\nHost: admin\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut lines = Vec::new();
    // Status line, headers, then chunked JSON lines (a chunk-size line precedes each).
    let mut next_json = async || -> QueueUpdate {
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(common::TIMEOUT, reader.read_line(&mut line))
                .await
                .expect("a line in time")
                .unwrap();
            assert!(n > 0, "stream ended");
            lines.push(line.clone());
            if line.starts_with('{') {
                return serde_json::from_str(line.trim()).expect("a QueueUpdate line");
            }
        }
    };
    let snapshot = next_json().await;
    assert!(snapshot.snapshot);
    assert_eq!(snapshot.counts["default/app"].concurrency, 0);

    let held = spawn_get(&w, "stream.test", "/");
    let update = loop {
        let update = next_json().await;
        if !update.counts.is_empty() {
            break update;
        }
    };
    assert!(!update.snapshot);
    assert_eq!(update.counts["default/app"].concurrency, 1);
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_start_is_woken_by_an_endpoint_becoming_ready() {
    let w = World::start().await;
    let a = TestBackend::start("a").await;
    w.expose("svc", "http", &[]).await;
    w.set_slice("svc", "svc-0", "http", a.addr, false).await;
    w.apply_hso(hso("app", &["cold.test"], &[], "svc", json!(80)))
        .await;
    eventually("the route in /queue", || async {
        w.queue().await.contains_key("default/app").then_some(())
    })
    .await;

    let request = spawn_get(&w, "cold.test", "/first");
    w.wait_concurrency("default/app", 1).await;
    assert_eq!(
        a.hits(),
        0,
        "nothing is forwarded while no endpoint is ready"
    );
    w.set_slice("svc", "svc-0", "http", a.addr, true).await;
    let reply = tokio::time::timeout(common::TIMEOUT, request)
        .await
        .expect("woken")
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["path"], "/first");
    assert_eq!(reply.header("x-keda-http-cold-start"), Some("true"));
    let warm = w.get("cold.test", "/").await;
    assert_eq!(warm.header("x-keda-http-cold-start"), Some("false"));
    w.wait_concurrency("default/app", 0).await;
    let url = format!(
        "http://{}/metrics",
        w.interceptor.metrics_addr().expect("metrics enabled")
    );
    let metrics = Reply::read(w.http.get(url.parse().unwrap()).await.unwrap())
        .await
        .text();
    assert!(metrics.contains(r#"interceptor_cold_start_duration_seconds_count{route_name="app",route_namespace="default",outcome="ready"} 1"#), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_start_is_woken_by_a_deployment_scaling_from_zero() {
    common::init_tracing();
    let sim = http_add_on_sim::Sim::start(http_add_on_sim::SimConfig::default())
        .await
        .unwrap();
    let client = sim.client();
    common::install_crds(&client).await;
    let interceptor =
        http_add_on_interceptor::Interceptor::start(Config::for_tests(), client.clone())
            .await
            .unwrap();
    interceptor.wait_synced().await;
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "app" },
        "spec": {
            "replicas": 0,
            "selector": { "matchLabels": { "app": "app" } },
            "template": {
                "metadata": { "labels": { "app": "app" } },
                "spec": { "containers": [{ "name": "app", "image": "sim/echo", "ports": [{ "name": "http", "containerPort": 8080 }] }] }
            }
        }
    }))
    .unwrap();
    common::apply(
        &Api::<Deployment>::default_namespaced(client.clone()),
        &deployment,
    )
    .await;
    let service: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": "app" },
        "spec": { "selector": { "app": "app" }, "ports": [{ "name": "http", "port": 80, "targetPort": "http" }] }
    }))
    .unwrap();
    common::apply(
        &Api::<Service>::default_namespaced(client.clone()),
        &service,
    )
    .await;
    let route: http_add_on_types::crd::HTTPScaledObject =
        serde_json::from_value(hso("app", &["deploy.test"], &[], "app", json!(80))).unwrap();
    common::apply(&Api::default_namespaced(client.clone()), &route).await;
    eventually("the route", || async {
        interceptor
            .counts()
            .snapshot()
            .contains_key("default/app")
            .then_some(())
    })
    .await;

    let http = common::http_client();
    let req = Request::get(format!("http://{}/hello", interceptor.proxy_addr()))
        .header("host", "deploy.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let request = tokio::spawn(async move { Reply::read(http.request(req).await.unwrap()).await });
    eventually("the held request", || async {
        (interceptor.counts().snapshot()["default/app"].concurrency == 1).then_some(())
    })
    .await;
    Api::<Deployment>::default_namespaced(client.clone())
        .patch_scale(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": 1 } })),
        )
        .await
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(20), request)
        .await
        .expect("woken by the new pod")
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.header("x-keda-http-cold-start"), Some("true"));
    assert_eq!(reply.json()["path"], "/hello");
    interceptor.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_timeout_answers_504_and_fallbacks_take_over() {
    let w = World::start().await;
    let fb = TestBackend::start("fallback").await;
    w.expose("cold", "http", &[]).await;
    w.expose("fb", "http", &[&fb]).await;
    w.apply_ir(json!({
        "apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
        "metadata": { "name": "timeout" },
        "spec": {
            "target": { "service": "cold", "port": 80 },
            "rules": [{ "hosts": ["timeout.test"] }],
            "scalingMetric": { "concurrency": { "targetValue": 100 } },
            "timeouts": { "readiness": "200ms" }
        }
    }))
    .await;
    w.apply_ir(json!({
        "apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
        "metadata": { "name": "with-fallback" },
        "spec": {
            "target": { "service": "cold", "port": 80 },
            "rules": [{ "hosts": ["fallback.test"] }],
            "scalingMetric": { "concurrency": { "targetValue": 100 } },
            "coldStart": { "fallback": { "service": { "name": "fb", "port": 80 } } },
            "timeouts": { "readiness": "200ms" }
        }
    }))
    .await;
    let mut failover = hso("failover", &["failover.test"], &[], "cold", json!(80));
    failover["spec"]["coldStartTimeoutFailoverRef"] =
        json!({ "service": "fb", "port": 80, "timeoutSeconds": 1 });
    w.apply_hso(failover).await;

    let started = Instant::now();
    let reply = w.wait_routed("timeout.test", "/").await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(reply.text().contains("ready endpoint"), "{}", reply.text());
    assert_eq!(reply.header("x-keda-http-cold-start"), Some("true"));
    assert!(started.elapsed() >= Duration::from_millis(200));

    let reply = w.wait_routed("fallback.test", "/fb").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["backend"], "fallback");

    let started = Instant::now();
    let reply = w.wait_routed("failover.test", "/").await;
    assert_eq!(reply.json()["backend"], "fallback");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited the failover's timeoutSeconds"
    );
    w.wait_concurrency("default/timeout", 0).await;
    w.wait_concurrency("default/failover", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placeholder_and_static_routes() {
    let w = World::start().await;
    let a = TestBackend::start("a").await;
    w.expose("cold", "http", &[]).await;
    w.expose("warm", "http", &[&a]).await;
    w.apply_ir(json!({
        "apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
        "metadata": { "name": "placeholder" },
        "spec": {
            "target": { "service": "cold", "port": 80 },
            "rules": [{ "hosts": ["ph.test"] }],
            "scalingMetric": { "concurrency": { "targetValue": 100 } },
            "coldStart": { "placeholder": { "response": { "statusCode": 503, "body": "warming up", "headers": { "retry-after": "5" } } } }
        }
    }))
    .await;
    w.apply_ir(json!({
        "apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
        "metadata": { "name": "statics" },
        "spec": {
            "target": { "service": "warm", "port": 80 },
            "rules": [{ "hosts": ["static.test"] }],
            "scalingMetric": { "concurrency": { "targetValue": 100 } },
            "staticRoutes": [
                { "rules": [{ "paths": [{ "value": "/robots.txt" }] }], "responseMode": "Always",
                  "response": { "statusCode": 200, "body": "User-agent: *" } },
                { "rules": [{ "paths": [{ "value": "/" }] }],
                  "response": { "statusCode": 503, "body": "down" } }
            ]
        }
    }))
    .await;
    let reply = w.wait_routed("ph.test", "/").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.text(), "warming up");
    assert_eq!(reply.header("retry-after"), Some("5"));
    assert_eq!(reply.header("x-keda-http-cold-start"), Some("true"));

    let robots = w.wait_routed("static.test", "/robots.txt").await;
    assert_eq!(robots.text(), "User-agent: *");
    let hits = a.hits();
    let app = w.get("static.test", "/page").await;
    assert_eq!(
        app.json()["backend"],
        "a",
        "WhenUnavailable does not apply while ready"
    );
    assert_eq!(a.hits(), hits + 1);
    assert_eq!(
        w.queue().await["default/statics"].request_count,
        1,
        "static responses are not counted"
    );

    // Bodies from a labelled ConfigMap, as upstream: the key named, or derived from the path
    // (without its leading `/`, `index.html` for `/`); a missing ConfigMap or named key is a
    // 500, a missing derived key an empty body.
    w.apply_ir(json!({
        "apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
        "metadata": { "name": "pages" },
        "spec": {
            "target": { "service": "cold", "port": 80 },
            "rules": [{ "hosts": ["pages.test"] }],
            "scalingMetric": { "concurrency": { "targetValue": 100 } },
            "staticRoutes": [
                { "rules": [{ "paths": [{ "value": "/maintenance" }] }], "responseMode": "Always",
                  "response": { "statusCode": 503, "bodyFromConfigMap": { "name": "pages", "key": "maint.txt" } } },
                { "rules": [{ "paths": [{ "value": "/" }] }],
                  "response": { "bodyFromConfigMap": { "name": "pages" } } }
            ]
        }
    }))
    .await;
    let missing = w.wait_routed("pages.test", "/").await;
    assert_eq!(missing.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        missing.text().contains("ConfigMap default/pages"),
        "{}",
        missing.text()
    );
    let cm: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "pages", "labels": { "http.keda.sh/response-body": "true" } },
        "data": { "index.html": "<h1>soon</h1>", "app.css": "h1{}", "maint.txt": "down for maintenance" }
    }))
    .unwrap();
    common::apply(&Api::default_namespaced(w.client.clone()), &cm).await;
    let index = eventually("the ConfigMap body", || async {
        let r = w.get("pages.test", "/").await;
        (r.status == StatusCode::OK).then_some(r)
    })
    .await;
    assert_eq!(index.text(), "<h1>soon</h1>");
    assert_eq!(
        index.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(w.get("pages.test", "/app.css").await.text(), "h1{}");
    let derived_missing = w.get("pages.test", "/static/app.css").await;
    assert_eq!(derived_missing.status, StatusCode::OK);
    assert_eq!(derived_missing.text(), "");
    let maint = w.get("pages.test", "/maintenance").await;
    assert_eq!(maint.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(maint.text(), "down for maintenance");

    // A named key the ConfigMap lacks: 500 naming the key.
    w.apply_ir(json!({
        "apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
        "metadata": { "name": "pages2" },
        "spec": {
            "target": { "service": "cold", "port": 80 },
            "rules": [{ "hosts": ["pages2.test"] }],
            "scalingMetric": { "concurrency": { "targetValue": 100 } },
            "staticRoutes": [
                { "rules": [{ "paths": [{ "value": "/" }] }], "responseMode": "Always",
                  "response": { "bodyFromConfigMap": { "name": "pages", "key": "gone.txt" } } }
            ]
        }
    }))
    .await;
    let gone = w.wait_routed("pages2.test", "/").await;
    assert_eq!(gone.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(gone.text().contains("gone.txt"), "{}", gone.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_routing_while_the_api_server_is_down_and_resumes_watches() {
    let w = World::start().await;
    let a = TestBackend::start("a").await;
    w.expose("svc", "http", &[&a]).await;
    w.apply_hso(hso("app", &["outage.test"], &[], "svc", json!(80)))
        .await;
    w.wait_routed("outage.test", "/").await;
    w.sim.stop_apiserver().await;
    for _ in 0..5 {
        assert_eq!(w.get("outage.test", "/").await.status, StatusCode::OK);
    }
    w.sim.start_apiserver().await.unwrap();
    w.apply_hso(hso("later", &["later.test"], &[], "svc", json!(80)))
        .await;
    let reply = w.wait_routed("later.test", "/").await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_closes_keep_alive_connections_after_their_response() {
    let w = World::start().await;
    let a = TestBackend::start("a").await;
    w.expose("svc", "http", &[&a]).await;
    w.apply_hso(hso("app", &["drain.test"], &[], "svc", json!(80)))
        .await;
    w.wait_routed("drain.test", "/").await;
    let before = w.get("drain.test", "/").await;
    assert_ne!(before.header("connection"), Some("close"));
    w.interceptor.begin_draining();
    let during = w.get("drain.test", "/").await;
    assert_eq!(during.status, StatusCode::OK);
    assert_eq!(
        during.header("connection"),
        Some("close"),
        "clients must stop reusing connections before the listener closes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let w = World::with_config(Config {
        shutdown_delay: Duration::from_millis(300),
        ..Config::for_tests()
    })
    .await;
    let a = TestBackend::start("a").await;
    w.expose("svc", "http", &[&a]).await;
    w.apply_hso(hso("app", &["bye.test"], &[], "svc", json!(80)))
        .await;
    w.wait_routed("bye.test", "/").await;
    let in_flight = spawn_get(&w, "bye.test", "/hold");
    w.wait_concurrency("default/app", 1).await;

    let admin = w.interceptor.admin_addr();
    let proxy = w.interceptor.proxy_addr();
    let shutdown = async {
        w.interceptor.shutdown().await;
    };
    let observe = async {
        let http = common::http_client();
        let readyz = Reply::read(
            http.get(format!("http://{admin}/readyz").parse().unwrap())
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(readyz.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(readyz.text(), "shutting down\n");
        // After the delay the proxy stops accepting.
        eventually("the proxy listener to close", || async {
            TcpStream::connect(proxy).await.is_err().then_some(())
        })
        .await;
        assert_eq!(
            a.held.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "the in-flight request is still held"
        );
        a.release();
        let reply = in_flight.await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        let body = reply.body.clone();
        assert!(!body.is_empty());
    };
    tokio::time::timeout(common::TIMEOUT, async { tokio::join!(shutdown, observe) })
        .await
        .expect("shutdown completes once the in-flight request is done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_requests_follow_their_route_when_it_is_retargeted_or_deleted() {
    let w = World::start().await;
    let a = TestBackend::start("a").await;
    w.expose("cold", "http", &[]).await;
    w.expose("warm", "http", &[&a]).await;
    w.apply_hso(hso("app", &["move.test"], &[], "cold", json!(80)))
        .await;
    w.apply_hso(hso("gone", &["gone.test"], &[], "cold", json!(80)))
        .await;
    eventually("both routes", || async {
        let q = w.queue().await;
        (q.contains_key("default/app") && q.contains_key("default/gone")).then_some(())
    })
    .await;

    let moved = spawn_get(&w, "move.test", "/moved");
    let deleted = spawn_get(&w, "gone.test", "/");
    w.wait_concurrency("default/app", 1).await;
    w.wait_concurrency("default/gone", 1).await;
    w.apply_hso(hso("app", &["move.test"], &[], "warm", json!(80)))
        .await;
    let reply = tokio::time::timeout(common::TIMEOUT, moved)
        .await
        .expect("followed")
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["backend"], "a");
    assert_eq!(reply.header("x-keda-http-cold-start"), Some("true"));

    Api::<http_add_on_types::crd::HTTPScaledObject>::default_namespaced(w.client.clone())
        .delete("gone", &Default::default())
        .await
        .unwrap();
    let reply = tokio::time::timeout(common::TIMEOUT, deleted)
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(reply.text().contains("removed"), "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_proxy_mode_dials_the_cluster_ip() {
    common::init_tracing();
    let sim = http_add_on_sim::Sim::start(http_add_on_sim::SimConfig::default())
        .await
        .unwrap();
    let client = sim.client();
    common::install_crds(&client).await;
    let interceptor = http_add_on_interceptor::Interceptor::start(
        Config {
            direct_pod_routing: false,
            ..Config::for_tests()
        },
        client.clone(),
    )
    .await
    .unwrap();
    interceptor.wait_synced().await;
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "svcmode" },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": "svcmode" } },
            "template": {
                "metadata": { "labels": { "app": "svcmode" } },
                "spec": { "containers": [{ "name": "app", "image": "sim/echo", "ports": [{ "name": "http", "containerPort": 8080 }] }] }
            }
        }
    }))
    .unwrap();
    common::apply(
        &Api::<Deployment>::default_namespaced(client.clone()),
        &deployment,
    )
    .await;
    let service: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": "svcmode" },
        "spec": { "selector": { "app": "svcmode" }, "ports": [{ "name": "http", "port": 80, "targetPort": "http" }] }
    }))
    .unwrap();
    common::apply(
        &Api::<Service>::default_namespaced(client.clone()),
        &service,
    )
    .await;
    let route: http_add_on_types::crd::HTTPScaledObject =
        serde_json::from_value(hso("svcmode", &["svcmode.test"], &[], "svcmode", json!(80)))
            .unwrap();
    common::apply(&Api::default_namespaced(client.clone()), &route).await;
    let http = common::http_client();
    let reply = eventually("a response through the Service address", || async {
        let req = Request::get(format!("http://{}/via-service", interceptor.proxy_addr()))
            .header("host", "svcmode.test")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let reply = Reply::read(http.request(req).await.unwrap()).await;
        (reply.status == StatusCode::OK).then_some(reply)
    })
    .await;
    let echo = reply.json();
    assert_eq!(echo["path"], "/via-service");
    assert_eq!(echo["host"], "svcmode.test");
    interceptor.shutdown().await;
    sim.shutdown().await;
}
