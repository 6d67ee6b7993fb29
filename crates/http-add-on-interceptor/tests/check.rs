//! The check endpoint (`KEDA_HTTP_CHECK_PORT`, issue #17): admission checks as nginx
//! `auth_request`, Traefik `forwardAuth` and Envoy `ext_authz` send them, answered by the real
//! interceptor against the sim with the proxy's route table, count, hold and replies.

mod common;

use std::net::SocketAddr;

use bytes::Bytes;
use common::{Reply, TestBackend, World, eventually, hso};
use http::{Request, StatusCode};
use http_add_on_interceptor::Config;
use http_body_util::Full;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A world whose interceptor serves checks; Envoy-style checks carry the prefix `/keda`.
async fn world() -> World {
    World::with_config(Config {
        check_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        check_path_prefix: "/keda".into(),
        ..Config::for_tests()
    })
    .await
}

fn check_url(w: &World, path: &str) -> String {
    let addr = w
        .interceptor
        .check_addr()
        .expect("the check listener is on");
    format!("http://{addr}{path}")
}

/// A check request to `path` on the check port with `headers`; a `:method` entry sets its
/// method (Envoy sends the original one), else GET.
fn check_request(w: &World, path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut builder = Request::get(check_url(w, path));
    if let Some((_, method)) = headers.iter().find(|(n, _)| *n == ":method") {
        builder = builder.method(*method);
    }
    let headers = headers.iter().filter(|(n, _)| !n.starts_with(':'));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(Bytes::new())).unwrap()
}

async fn check(w: &World, path: &str, headers: &[(&str, &str)]) -> Reply {
    let response = w
        .http
        .request(check_request(w, path, headers))
        .await
        .expect("the check port answers");
    Reply::read(response).await
}

fn spawn_check(w: &World, path: &str, headers: &[(&str, &str)]) -> tokio::task::JoinHandle<Reply> {
    let http = w.http.clone();
    let req = check_request(w, path, headers);
    tokio::spawn(async move { Reply::read(http.request(req).await.expect("check answers")).await })
}

/// nginx `auth_request`: a GET subrequest, the original in `X-Original-*`.
fn nginx(host: &str, method: &str, uri: &str) -> Vec<(String, String)> {
    vec![
        ("host".into(), "keda-check".into()),
        ("x-original-host".into(), host.into()),
        ("x-original-method".into(), method.into()),
        ("x-original-uri".into(), uri.into()),
    ]
}

fn pairs(headers: &[(String, String)]) -> Vec<(&str, &str)> {
    headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect()
}

async fn metrics(w: &World) -> String {
    let url = format!(
        "http://{}/metrics",
        w.interceptor.metrics_addr().expect("metrics enabled")
    );
    Reply::read(w.http.get(url.parse().unwrap()).await.unwrap())
        .await
        .text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_port_is_off_unless_configured() {
    let w = World::start().await;
    assert_eq!(w.interceptor.check_addr(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_routes_answer_200_at_once_for_each_header_convention() {
    let w = world().await;
    let a = TestBackend::start("a").await;
    w.expose("svc", "http", &[&a]).await;
    w.apply_hso(hso("app", &["app.test"], &["/api"], "svc", json!(80)))
        .await;
    w.apply_hso(hso("other", &["app.test"], &[], "svc", json!(80)))
        .await;
    w.wait_routed("app.test", "/api").await;
    let before = w.queue().await;
    let hits = a.hits();
    let endpoint = a.addr.to_string();

    let traefik = [
        ("host", "keda-check:9091"),
        ("x-forwarded-method", "POST"),
        ("x-forwarded-uri", "/api/items?page=2"),
        ("x-forwarded-host", "app.test"),
    ];
    let envoy = [(":method", "PUT"), ("host", "app.test")];
    // ingress-nginx's auth-url: the whole URL; Host names the check Service.
    let ingress_nginx = [
        ("host", "keda-add-ons-http-interceptor-proxy.keda"),
        ("x-original-method", "DELETE"),
        ("x-original-url", "https://app.test/api/cart?id=1"),
    ];
    for (convention, reply) in [
        (
            "nginx",
            check(
                &w,
                "/_keda_check",
                &pairs(&nginx("app.test", "GET", "/api/x")),
            )
            .await,
        ),
        ("traefik", check(&w, "/", &traefik).await),
        ("envoy", check(&w, "/keda/api/items/7?x=1", &envoy).await),
        ("ingress-nginx", check(&w, "/", &ingress_nginx).await),
    ] {
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{convention}: {}",
            reply.text()
        );
        assert_eq!(
            reply.header("x-keda-http-endpoint"),
            Some(endpoint.as_str()),
            "{convention}"
        );
        assert_eq!(
            reply.header("x-keda-http-cold-start"),
            Some("false"),
            "{convention}"
        );
        assert!(reply.body.is_empty(), "{convention}: {}", reply.text());
    }

    // Counted for the route the original path chose (longest prefix), settled at the answer;
    // the route under `/` saw none of them.
    let after = w.queue().await;
    assert_eq!(
        after["default/app"].request_count,
        before["default/app"].request_count + 4
    );
    assert_eq!(after["default/app"].concurrency, 0);
    assert_eq!(
        after["default/other"].request_count,
        before["default/other"].request_count
    );
    assert_eq!(a.hits(), hits, "a check forwards nothing to the app");

    // The same request metrics as proxied requests, plus the checks' own series.
    let text = metrics(&w).await;
    for series in [
        r#"interceptor_request_count_total{code="200",method="POST",route_name="app",route_namespace="default"} 1"#,
        r#"interceptor_request_count_total{code="200",method="PUT",route_name="app",route_namespace="default"} 1"#,
        r#"interceptor_check_count_total{code="200",method="GET",route_name="app",route_namespace="default"} 1"#,
        r#"interceptor_check_count_total{code="200",method="POST",route_name="app",route_namespace="default"} 1"#,
        r#"interceptor_check_count_total{code="200",method="PUT",route_name="app",route_namespace="default"} 1"#,
        r#"interceptor_check_count_total{code="200",method="DELETE",route_name="app",route_namespace="default"} 1"#,
    ] {
        assert!(text.contains(series), "{series}\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_routes_hold_the_answer_until_an_endpoint_is_ready() {
    let w = world().await;
    let a = TestBackend::start("a").await;
    w.expose("svc", "http", &[]).await;
    w.set_slice("svc", "svc-0", "http", a.addr, false).await;
    w.apply_hso(hso("app", &["cold.test"], &[], "svc", json!(80)))
        .await;
    eventually("the route in /queue", || async {
        w.queue().await.contains_key("default/app").then_some(())
    })
    .await;

    let held = spawn_check(
        &w,
        "/_keda_check",
        &pairs(&nginx("cold.test", "GET", "/first")),
    );
    // In flight while held: what activates the app's scaling.
    w.wait_concurrency("default/app", 1).await;
    assert!(!held.is_finished(), "no answer while no endpoint is ready");
    w.set_slice("svc", "svc-0", "http", a.addr, true).await;
    let reply = held.await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.header("x-keda-http-cold-start"), Some("true"));
    assert_eq!(
        reply.header("x-keda-http-endpoint"),
        Some(a.addr.to_string().as_str())
    );
    w.wait_concurrency("default/app", 0).await;
    assert_eq!(w.queue().await["default/app"].request_count, 1);
    assert_eq!(a.hits(), 0, "the ingress, not the check, sends the request");
    let text = metrics(&w).await;
    assert!(
        text.contains(r#"interceptor_cold_start_duration_seconds_count{route_name="app",route_namespace="default",outcome="ready"} 1"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_timeouts_and_aborts_answer_as_proxied_requests() {
    let w = world().await;
    w.expose("cold", "http", &[]).await;
    w.apply_ir(json!({
        "apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
        "metadata": { "name": "timeout" },
        "spec": {
            "target": { "service": "cold", "port": 80 },
            "rules": [{ "hosts": ["timeout.test"] }],
            "scalingMetric": { "requestRate": { "targetValue": 10 } },
            "timeouts": { "readiness": "200ms" }
        }
    }))
    .await;
    w.apply_hso(hso("held", &["held.test"], &[], "cold", json!(80)))
        .await;
    eventually("both routes in /queue", || async {
        let queue = w.queue().await;
        (queue.contains_key("default/timeout") && queue.contains_key("default/held")).then_some(())
    })
    .await;

    // No route: the proxy's 404 and body; nothing counted.
    let reply = check(&w, "/", &pairs(&nginx("unknown.test", "GET", "/x"))).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(reply.text().starts_with("no route"), "{}", reply.text());
    assert_eq!(reply.header("x-keda-http-endpoint"), None);

    // A readiness timeout: the proxy's 504 and body, counted for the route.
    let reply = check(&w, "/keda/", &[("host", "timeout.test")]).await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(reply.text().contains("ready endpoint"), "{}", reply.text());
    assert_eq!(reply.header("x-keda-http-cold-start"), Some("true"));
    let queue = w.queue().await;
    assert_eq!(queue["default/timeout"].request_count, 1);
    assert_eq!(queue["default/timeout"].concurrency, 0);

    // A malformed check (no original URI and not under the prefix) is a 400.
    let reply = check(&w, "/elsewhere", &[("host", "timeout.test")]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.text().contains("/keda"), "{}", reply.text());

    // An ingress that gives up while the answer is held: counted out.
    let mut stream = TcpStream::connect(w.interceptor.check_addr().unwrap())
        .await
        .unwrap();
    stream
        .write_all(
            b"GET /_keda_check HTTP/1.1\r\nHost: keda-check\r\nX-Original-Host: held.test\r\n\
              X-Original-URI: /\r\n\r\n",
        )
        .await
        .unwrap();
    w.wait_concurrency("default/held", 1).await;
    drop(stream);
    w.wait_concurrency("default/held", 0).await;
    assert_eq!(w.queue().await["default/held"].request_count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_routes_answer_the_check_with_their_reply() {
    let w = world().await;
    w.expose("cold", "http", &[]).await;
    w.apply_ir(json!({
        "apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
        "metadata": { "name": "maintenance" },
        "spec": {
            "target": { "service": "cold", "port": 80 },
            "rules": [{ "hosts": ["static.test"] }],
            "scalingMetric": { "requestRate": { "targetValue": 10 } },
            "coldStart": { "placeholder": { "response": {
                "statusCode": 503, "body": "waking up", "headers": { "retry-after": "5" }
            } } }
        }
    }))
    .await;
    eventually("the route in /queue", || async {
        w.queue()
            .await
            .contains_key("default/maintenance")
            .then_some(())
    })
    .await;
    let reply = check(
        &w,
        "/",
        &[("host", "static.test"), ("x-forwarded-uri", "/")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.text(), "waking up");
    assert_eq!(reply.header("retry-after"), Some("5"));
    // A placeholder answers a counted request (it wakes the app), as on the proxy port.
    assert_eq!(w.queue().await["default/maintenance"].request_count, 1);
}
