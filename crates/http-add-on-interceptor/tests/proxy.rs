//! Routing, forwarding, balancing, route updates, protocol handling and bad input, through a
//! real interceptor in front of test backends registered in the simulated cluster.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{TestBackend, World, eventually, hso};
use http::{Request, StatusCode};
use http_add_on_interceptor::Config;
use http_add_on_types::crd::HTTPScaledObject;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kube::Api;
use kube::api::DeleteParams;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_wildcard_path_header_and_port_name() {
    let w = World::start().await;
    let (a, b, c, d) = (
        TestBackend::start("a").await,
        TestBackend::start("b").await,
        TestBackend::start("c").await,
        TestBackend::start("d").await,
    );
    w.expose("svc-a", "http", &[&a]).await;
    w.expose("svc-b", "web", &[&b]).await;
    w.expose("svc-c", "http", &[&c]).await;
    w.expose("svc-d", "http", &[&d]).await;
    w.apply_hso(hso("exact", &["app.example.com"], &[], "svc-a", json!(80)))
        .await;
    w.apply_hso(hso("wild", &["*.example.com"], &[], "svc-b", json!("web")))
        .await;
    w.apply_hso(hso(
        "api",
        &["app.example.com"],
        &["/api"],
        "svc-c",
        json!(80),
    ))
    .await;
    w.apply_ir(json!({
        "apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
        "metadata": { "name": "canary" },
        "spec": {
            "target": { "service": "svc-d", "port": 80 },
            "rules": [{ "hosts": ["app.example.com"], "headers": [{ "name": "x-canary", "value": "1" }] }],
            "scalingMetric": { "concurrency": { "targetValue": 100 } }
        }
    }))
    .await;
    // The routes arrive one by one (the exact host's may route `/api/v1` until the longer
    // prefix's does): wait for all four.
    eventually("all four routes", || async {
        (w.get("app.example.com", "/api/v1")
            .await
            .header("x-backend")
            == Some("c")
            && w.get("other.example.com", "/").await.header("x-backend") == Some("b")
            && w.send(
                Request::get(w.proxy_url("/"))
                    .header("host", "app.example.com")
                    .header("x-canary", "1"),
            )
            .await
            .header("x-backend")
                == Some("d"))
        .then_some(())
    })
    .await;

    let exact = w.get("app.example.com:8080", "/index.html").await;
    assert_eq!(exact.status, StatusCode::OK);
    assert_eq!(exact.json()["backend"], "a", "exact host, port ignored");
    assert_eq!(exact.header("x-keda-http-cold-start"), Some("false"));
    assert_eq!(
        w.get("deep.sub.example.com", "/").await.json()["backend"],
        "b",
        "wildcard + port name"
    );
    assert_eq!(
        w.get("APP.example.com", "/api").await.json()["backend"],
        "c",
        "longest path prefix"
    );
    let canary = w
        .send(
            Request::get(w.proxy_url("/"))
                .header("host", "app.example.com")
                .header("x-canary", "1"),
        )
        .await;
    assert_eq!(
        canary.json()["backend"],
        "d",
        "header match wins among equal paths"
    );
    let not_canary = w
        .send(
            Request::get(w.proxy_url("/"))
                .header("host", "app.example.com")
                .header("x-canary", "2"),
        )
        .await;
    assert_eq!(not_canary.json()["backend"], "a");

    let missing = w.get("nowhere.test", "/some/path").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let text = missing.text();
    assert!(
        text.contains("nowhere.test") && text.contains("/some/path"),
        "{text}"
    );
    // The admin endpoints are not on the proxy port: /queue is just another path.
    let queue = w.get("nowhere.test", "/queue").await;
    assert_eq!(queue.status, StatusCode::NOT_FOUND);
    assert!(queue.text().starts_with("no route"));
    assert_eq!(
        w.get("app.example.com", "/queue").await.json()["path"],
        "/queue"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_sets_forwarded_headers_and_strips_hop_by_hop() {
    let w = World::start().await;
    let a = TestBackend::start("a").await;
    w.expose("svc", "http", &[&a]).await;
    w.apply_hso(hso("app", &["app.test"], &[], "svc", json!(80)))
        .await;
    w.wait_routed("app.test", "/").await;
    let reply = w
        .send(
            Request::post(w.proxy_url("/echo?q=1"))
                .header("host", "app.test")
                .header("connection", "x-drop")
                .header("x-drop", "secret")
                .header("keep-alive", "timeout=5")
                .header("proxy-authorization", "Basic eA==")
                .header("te", "trailers")
                .header("x-forwarded-for", "10.1.2.3")
                .header("x-kept", "yes"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let echo = reply.json();
    let headers = &echo["headers"];
    assert_eq!(headers["host"], "app.test");
    assert_eq!(headers["x-forwarded-for"], "10.1.2.3, 127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], "app.test");
    assert_eq!(headers["x-kept"], "yes");
    for gone in ["x-drop", "keep-alive", "proxy-authorization", "te"] {
        assert!(
            headers.get(gone).is_none(),
            "{gone} must be stripped: {headers}"
        );
    }
    assert_eq!(echo["path"], "/echo");
    assert_eq!(reply.header("x-backend"), Some("a"));
    assert!(reply.header("keep-alive").is_none());

    // A streamed request body arrives whole.
    let big = Bytes::from(vec![b'x'; 3 * 1024 * 1024]);
    let response = w
        .http
        .request(
            Request::post(w.proxy_url("/upload"))
                .header("host", "app.test")
                .body(Full::new(big))
                .unwrap(),
        )
        .await
        .unwrap();
    let reply = common::Reply::read(response).await;
    assert_eq!(reply.json()["bodyLen"], 3 * 1024 * 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_inbound_and_h2c_outbound() {
    let w = World::start().await;
    let h1 = TestBackend::start("h1").await;
    let h2 = TestBackend::start_h2c("h2").await;
    w.expose("svc-h1", "http", &[&h1]).await;
    w.expose_with("svc-h2", "grpc", Some("kubernetes.io/h2c"), &[&h2])
        .await;
    w.apply_hso(hso(
        "h1",
        &["h1.test", "127.0.0.1"],
        &[],
        "svc-h1",
        json!(80),
    ))
    .await;
    w.apply_hso(hso("h2", &["h2.test"], &[], "svc-h2", json!("grpc")))
        .await;
    w.wait_routed("h1.test", "/").await;
    w.wait_routed("h2.test", "/").await;

    let h2_client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    // HTTP/2 carries the host in :authority; the proxy routes on it and hands it on as Host.
    let req = Request::get(format!("http://{}/x", w.interceptor.proxy_addr()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = common::Reply::read(h2_client.request(req).await.expect("h2c to the proxy")).await;
    assert_eq!(reply.status, StatusCode::OK);
    let echo = reply.json();
    assert_eq!(echo["version"], "HTTP/1.1", "outbound HTTP/1.1 by default");
    assert_eq!(
        echo["headers"]["host"],
        w.interceptor.proxy_addr().to_string()
    );

    let reply = w.get("h2.test", "/y").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json()["version"],
        "HTTP/2.0",
        "h2c to an appProtocol h2c port"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_outstanding_spreads_held_requests_over_three_backends() {
    let w = World::start().await;
    let backends = [
        TestBackend::start("a").await,
        TestBackend::start("b").await,
        TestBackend::start("c").await,
    ];
    w.expose("svc", "http", &backends.iter().collect::<Vec<_>>())
        .await;
    w.apply_hso(hso("app", &["lb.test"], &[], "svc", json!(80)))
        .await;
    eventually("three endpoints", || async {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..12 {
            if let Some(b) = w.get("lb.test", "/").await.header("x-backend") {
                seen.insert(b.to_owned());
            }
        }
        (seen.len() == 3).then_some(())
    })
    .await;
    let hits_before: Vec<usize> = backends.iter().map(TestBackend::hits).collect();

    let mut requests = Vec::new();
    for _ in 0..9 {
        let http = w.http.clone();
        let url = w.proxy_url("/hold");
        requests.push(tokio::spawn(async move {
            let req = Request::get(url)
                .header("host", "lb.test")
                .body(Full::new(Bytes::new()))
                .unwrap();
            common::Reply::read(http.request(req).await.unwrap()).await
        }));
    }
    eventually("9 held requests", || async {
        (backends
            .iter()
            .map(|b| b.held.load(std::sync::atomic::Ordering::SeqCst))
            .sum::<usize>()
            == 9)
            .then_some(())
    })
    .await;
    for (backend, before) in backends.iter().zip(&hits_before) {
        let got = backend.hits() - before;
        assert!(
            (2..=4).contains(&got),
            "backend {} got {got} of 9 held requests",
            backend.name
        );
    }
    w.wait_concurrency("default/app", 9).await;
    for backend in &backends {
        backend.release();
    }
    for request in requests {
        assert_eq!(request.await.unwrap().status, StatusCode::OK);
    }
    w.wait_concurrency("default/app", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_updates_and_deletions_take_effect() {
    let w = World::start().await;
    let (a, b) = (TestBackend::start("a").await, TestBackend::start("b").await);
    w.expose("svc-a", "http", &[&a]).await;
    w.expose("svc-b", "http", &[&b]).await;
    w.apply_hso(hso("app", &["upd.test"], &[], "svc-a", json!(80)))
        .await;
    assert_eq!(w.wait_routed("upd.test", "/").await.json()["backend"], "a");
    assert!(w.queue().await.contains_key("default/app"));

    w.apply_hso(hso("app", &["upd.test"], &[], "svc-b", json!(80)))
        .await;
    eventually("the route to point at b", || async {
        (w.get("upd.test", "/").await.header("x-backend") == Some("b")).then_some(())
    })
    .await;

    Api::<HTTPScaledObject>::default_namespaced(w.client.clone())
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the route to disappear", || async {
        (w.get("upd.test", "/").await.status == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    assert!(!w.queue().await.contains_key("default/app"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_failures_and_timeouts_answer_502_and_504_with_a_cause() {
    let w = World::start().await;
    let slow = TestBackend::start("slow").await;
    // A port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    w.expose("svc-slow", "http", &[&slow]).await;
    w.expose("svc-dead", "http", &[]).await;
    w.set_slice("svc-dead", "svc-dead-0", "http", closed, true)
        .await;
    w.apply_hso(hso("dead", &["dead.test"], &[], "svc-dead", json!(80)))
        .await;
    w.apply_ir(json!({
        "apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
        "metadata": { "name": "slow-headers" },
        "spec": {
            "target": { "service": "svc-slow", "port": 80 },
            "rules": [{ "hosts": ["slow.test"] }],
            "scalingMetric": { "concurrency": { "targetValue": 100 } },
            "timeouts": { "responseHeader": "200ms" }
        }
    }))
    .await;
    w.apply_ir(json!({
        "apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
        "metadata": { "name": "slow-request" },
        "spec": {
            "target": { "service": "svc-slow", "port": 80 },
            "rules": [{ "hosts": ["deadline.test"] }],
            "scalingMetric": { "concurrency": { "targetValue": 100 } },
            "timeouts": { "request": "200ms" }
        }
    }))
    .await;

    let dead = w.wait_routed("dead.test", "/").await;
    assert_eq!(dead.status, StatusCode::BAD_GATEWAY);
    assert!(dead.text().contains(&closed.to_string()), "{}", dead.text());

    w.wait_routed("slow.test", "/").await;
    let timed_out = w.get("slow.test", "/sleep/3000").await;
    assert_eq!(timed_out.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        timed_out.text().contains("response headers"),
        "{}",
        timed_out.text()
    );
    assert_eq!(w.get("slow.test", "/sleep/10").await.status, StatusCode::OK);

    w.wait_routed("deadline.test", "/").await;
    let timed_out = w.get("deadline.test", "/sleep/3000").await;
    assert_eq!(timed_out.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        timed_out.text().contains("request timeout"),
        "{}",
        timed_out.text()
    );
    w.wait_concurrency("default/slow-headers", 0).await;
    w.wait_concurrency("default/slow-request", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_retry_another_endpoint() {
    let w = World::start().await;
    let live = TestBackend::start("live").await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    w.expose("svc", "http", &[&live]).await;
    w.set_slice("svc", "svc-dead", "http", closed, true).await;
    w.apply_hso(hso("app", &["retry.test"], &[], "svc", json!(80)))
        .await;
    w.wait_routed("retry.test", "/").await;
    for _ in 0..10 {
        let reply = w
            .send(Request::post(w.proxy_url("/")).header("host", "retry.test"))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.json()["backend"], "live");
    }
}

async fn raw(w: &World, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(w.interceptor.proxy_addr())
        .await
        .unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(common::TIMEOUT, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_rejected() {
    let w = World::with_config(Config {
        header_read_timeout: Duration::from_millis(300),
        max_header_bytes: 16 * 1024,
        ..Config::for_tests()
    })
    .await;
    let malformed = raw(&w, b"THIS IS NOT HTTP\r\n\r\n").await;
    assert!(malformed.starts_with("HTTP/1.1 400"), "{malformed:?}");

    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let too_large = raw(&w, big.as_bytes()).await;
    assert!(too_large.starts_with("HTTP/1.1 431"), "{too_large:?}");

    // A client that never finishes its headers is cut off.
    let started = tokio::time::Instant::now();
    let mut stream = TcpStream::connect(w.interceptor.proxy_addr())
        .await
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(common::TIMEOUT, stream.read_to_end(&mut out))
        .await
        .expect("the connection is closed by the header read timeout")
        .ok();
    assert!(started.elapsed() >= Duration::from_millis(250));
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text:?}"
    );

    let no_route = w.get("unknown.test", "/x").await;
    assert_eq!(no_route.status, StatusCode::NOT_FOUND);
    assert_eq!(
        no_route.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_metrics_are_served() {
    let w = World::start().await;
    let a = TestBackend::start("a").await;
    w.expose("svc", "http", &[&a]).await;
    w.apply_hso(hso("app", &["m.test"], &[], "svc", json!(80)))
        .await;
    w.wait_routed("m.test", "/").await;
    assert_eq!(
        w.get("m.test", "/status/201").await.status,
        StatusCode::CREATED
    );
    let url = format!(
        "http://{}/metrics",
        w.interceptor.metrics_addr().expect("metrics enabled")
    );
    let text = common::Reply::read(w.http.get(url.parse().unwrap()).await.unwrap())
        .await
        .text();
    assert!(text.contains(r#"interceptor_request_count_total{code="201",method="GET",route_name="app",route_namespace="default"} 1"#), "{text}");
    assert!(
        text.contains(
            r#"interceptor_request_concurrency{route_name="app",route_namespace="default"} 0"#
        ),
        "{text}"
    );
    assert!(
        text.contains("interceptor_request_duration_seconds_bucket"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_metrics_endpoint_off_nothing_is_bound_and_requests_still_proxy() {
    // Something else holds the metrics address: a second bind of it fails, so the interceptor
    // starting at all shows that it did not try to bind it.
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let taken_addr = taken.local_addr().unwrap();
    assert!(tokio::net::TcpListener::bind(taken_addr).await.is_err());
    let w = World::with_config(Config {
        metrics_enabled: false,
        metrics_listen: taken_addr,
        ..Config::for_tests()
    })
    .await;
    assert_eq!(w.interceptor.metrics_addr(), None);
    let a = TestBackend::start("a").await;
    w.expose("svc", "http", &[&a]).await;
    w.apply_hso(hso("app", &["m.test"], &[], "svc", json!(80)))
        .await;
    w.wait_routed("m.test", "/").await;
    assert_eq!(
        w.get("m.test", "/status/201").await.status,
        StatusCode::CREATED
    );
    drop(taken);
}

/// `KEDA_HTTP_MAX_CONNECTIONS`: with two connections open, a third is closed at once without
/// an answer; once one of the two closes, a new connection is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_closed_at_once() {
    let mut config = Config::for_tests();
    config.max_connections = Some(2);
    let w = World::with_config(config).await;
    let a = TestBackend::start("a").await;
    w.expose("svc", "http", &[&a]).await;
    w.apply_hso(hso("app", &["limit.test"], &[], "svc", json!(80)))
        .await;
    let addr = w.interceptor.proxy_addr();
    let request = b"GET / HTTP/1.1\r\nHost: limit.test\r\n\r\n";
    let ask = |mut conn: TcpStream| async move {
        conn.write_all(request).await.unwrap();
        let mut buf = vec![0; 4096];
        let n = conn.read(&mut buf).await.unwrap_or(0);
        (conn, String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    // Two kept-alive connections, each answered once routing is in place.
    let first = eventually("the route on a first connection", || async {
        let (conn, head) = ask(TcpStream::connect(addr).await.unwrap()).await;
        head.starts_with("HTTP/1.1 200").then_some(conn)
    })
    .await;
    let (second, head) = ask(TcpStream::connect(addr).await.unwrap()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "second: {head}");

    let (_third, head) = ask(TcpStream::connect(addr).await.unwrap()).await;
    assert_eq!(head, "", "the third connection is closed without an answer");

    drop(first);
    eventually("a place freed by the closed connection", || async {
        let (_conn, head) = ask(TcpStream::connect(addr).await.unwrap()).await;
        head.starts_with("HTTP/1.1 200").then_some(())
    })
    .await;
    drop(second);
}
