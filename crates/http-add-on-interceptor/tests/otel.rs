//! OpenTelemetry: the interceptor's spans and OTLP metrics reach an in-test OTLP receiver (the
//! collector's gRPC and HTTP/protobuf services, from the OTLP protobuf definitions) over
//! loopback; the client's W3C trace is continued and handed on to the backend; a sampler at 0
//! sends nothing; `console` prints spans on stdout.

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::{TIMEOUT, TestBackend, World, eventually, hso};
use http::{Request, StatusCode};
use http_add_on_interceptor::Config;
use http_add_on_testkit::otlp::{OtlpReceiver, SpanKind};
use http_add_on_types::telemetry::{OtelConfig, OtlpProtocol, Sampling, TracesProtocol};
use http_body_util::Full;
use hyper_util::rt::TokioExecutor;
use serde_json::json;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Traces on with `protocol` to `endpoint`, every request sampled unless its client says no.
fn traced(protocol: TracesProtocol, endpoint: String) -> Config {
    let mut otel = OtelConfig {
        traces_enabled: true,
        traces_protocol: protocol,
        ..OtelConfig::default()
    };
    otel.traces.endpoint = endpoint;
    Config {
        otel,
        ..Config::for_tests()
    }
}

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// A cold request with the client's `traceparent`: the server span continues the client's
/// trace, the cold-start span is its child with outcome `ready`, and the backend is told the
/// server span as its parent.
async fn cold_request_is_traced(config: Config, receiver: &OtlpReceiver, h2c: bool) {
    let w = World::with_config(config).await;
    let a = TestBackend::start("a").await;
    w.expose("svc", "http", &[]).await;
    w.set_slice("svc", "svc-0", "http", a.addr, false).await;
    w.apply_hso(hso("app", &["cold.test"], &[], "svc", json!(80)))
        .await;
    eventually("the route in /queue", || async {
        w.queue().await.contains_key("default/app").then_some(())
    })
    .await;
    // `Host` over HTTP/1.1, `:authority` over HTTP/2.
    let req = Request::get("http://cold.test/first")
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .header("tracestate", "vendor=opaque")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(h2c)
        .build(common::DialProxy(w.interceptor.proxy_addr()));
    let request = tokio::spawn(async move {
        let response = client.request(req).await.expect("the proxy answers");
        assert_eq!(response.version() == http::Version::HTTP_2, h2c);
        common::Reply::read(response).await
    });
    w.wait_concurrency("default/app", 1).await;
    w.set_slice("svc", "svc-0", "http", a.addr, true).await;
    let reply = tokio::time::timeout(TIMEOUT, request)
        .await
        .expect("woken")
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    w.wait_concurrency("default/app", 0).await;
    // Shutting down flushes the batch of spans.
    w.interceptor.shutdown().await;
    let spans = receiver.wait_for_spans(2).await;
    let server = spans
        .iter()
        .find(|s| s.span.kind == SpanKind::Server as i32)
        .expect("a server span");
    assert_eq!(server.service, "keda-http-interceptor");
    assert_eq!(server.span.name, "GET");
    assert_eq!(
        hex(&server.span.trace_id),
        CLIENT_TRACE,
        "continues the client's trace"
    );
    assert_eq!(hex(&server.span.parent_span_id), CLIENT_SPAN);
    assert_eq!(server.span.trace_state, "vendor=opaque");
    let attr = |key| server.attr(key);
    assert_eq!(attr("keda.route.name").as_deref(), Some("app"));
    assert_eq!(attr("keda.route.namespace").as_deref(), Some("default"));
    assert_eq!(attr("http.request.method").as_deref(), Some("GET"));
    assert_eq!(attr("http.response.status_code").as_deref(), Some("200"));
    assert_eq!(attr("keda.cold_start").as_deref(), Some("true"));
    assert_eq!(attr("server.endpoint"), Some(a.addr.to_string()));
    let cold = spans
        .iter()
        .find(|s| s.span.name == "cold start")
        .expect("a cold-start span");
    assert_eq!(cold.span.trace_id, server.span.trace_id);
    assert_eq!(
        cold.span.parent_span_id, server.span.span_id,
        "a child of the server span"
    );
    assert_eq!(
        cold.attr("keda.cold_start.outcome").as_deref(),
        Some("ready")
    );
    // The backend is told the server span as its parent, in the same trace.
    let headers = &reply.json()["headers"];
    let traceparent = headers["traceparent"].as_str().expect("a traceparent");
    assert_eq!(
        traceparent,
        format!("00-{CLIENT_TRACE}-{}-01", hex(&server.span.span_id)),
    );
    assert_eq!(headers["tracestate"], "vendor=opaque");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_request_is_traced_over_otlp_grpc() {
    let receiver = OtlpReceiver::start().await;
    let config = traced(TracesProtocol::Grpc, receiver.grpc_endpoint());
    cold_request_is_traced(config, &receiver, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_h2c_request_is_traced_over_otlp_http() {
    let receiver = OtlpReceiver::start().await;
    let config = traced(
        TracesProtocol::HttpProtobuf,
        receiver.http_traces_endpoint(),
    );
    cold_request_is_traced(config, &receiver, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sampler_at_zero_sends_nothing_and_forwards_the_clients_trace() {
    let receiver = OtlpReceiver::start().await;
    let mut config = traced(TracesProtocol::Grpc, receiver.grpc_endpoint());
    config.otel.sampling = Sampling::Ratio(0.0);
    let w = World::with_config(config).await;
    let a = TestBackend::start("a").await;
    w.expose("svc", "http", &[&a]).await;
    w.apply_hso(hso("app", &["warm.test"], &[], "svc", json!(80)))
        .await;
    w.wait_routed("warm.test", "/").await;
    let client = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    for _ in 0..20 {
        let reply = w
            .send(
                Request::get(w.proxy_url("/"))
                    .header("host", "warm.test")
                    .header("traceparent", &client),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.json()["headers"]["traceparent"],
            client,
            "not traced: the client's own header, untouched"
        );
    }
    w.interceptor.shutdown().await;
    assert_eq!(receiver.spans().len(), 0);
    assert_eq!(receiver.trace_exports(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_metrics_arrive_when_enabled() {
    for protocol in [OtlpProtocol::Grpc, OtlpProtocol::HttpProtobuf] {
        let receiver = OtlpReceiver::start().await;
        let mut config = Config::for_tests();
        config.otel.metrics_enabled = true;
        config.otel.metrics_protocol = protocol;
        config.otel.metrics_interval = Duration::from_millis(50);
        config.otel.metrics.endpoint = match protocol {
            OtlpProtocol::Grpc => receiver.grpc_endpoint(),
            OtlpProtocol::HttpProtobuf => receiver.http_metrics_endpoint(),
        };
        let w = World::with_config(config).await;
        let a = TestBackend::start("a").await;
        w.expose("svc", "http", &[&a]).await;
        w.apply_hso(hso("app", &["warm.test"], &[], "svc", json!(80)))
            .await;
        w.wait_routed("warm.test", "/").await;
        assert_eq!(w.get("warm.test", "/").await.status, StatusCode::OK);
        let names = receiver
            .wait_for("the request count pushed", |r| {
                let names = r.metric_names();
                names
                    .iter()
                    .any(|(_, n)| n == "interceptor_request_count")
                    .then_some(names)
            })
            .await;
        assert!(
            names
                .iter()
                .all(|(service, _)| service == "keda-http-interceptor"),
            "{protocol:?}: {names:?}"
        );
        for name in [
            "interceptor_request_duration_seconds",
            "interceptor_request_concurrency",
        ] {
            assert!(
                names.iter().any(|(_, n)| n == name),
                "{protocol:?}: {name} in {names:?}"
            );
        }
        assert_eq!(receiver.trace_exports(), 0);
    }
}

/// `console`: the binary prints each span as a JSON line on stdout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_prints_spans_on_stdout() {
    let w = World::start().await;
    let a = TestBackend::start("a").await;
    w.expose("svc", "http", &[&a]).await;
    w.apply_hso(hso("app", &["warm.test"], &[], "svc", json!(80)))
        .await;
    w.wait_routed("warm.test", "/").await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_interceptor"))
        .env_clear()
        .env("KUBECONFIG", w.sim.kubeconfig_path())
        .env("RUST_LOG", "info")
        .env("LOG_FORMAT", "json")
        .env("KEDA_HTTP_PROXY_PORT", "0")
        .env("KEDA_HTTP_ADMIN_PORT", "0")
        .env("OTEL_PROM_EXPORTER_ENABLED", "false")
        .env("OTEL_EXPORTER_OTLP_TRACES_ENABLED", "true")
        .env("OTEL_BSP_SCHEDULE_DELAY", "50")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("interceptor runs");
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (proxy_tx, proxy_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let Ok(log) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if let Some(port) = log["fields"]["proxy_addr"]
                .as_str()
                .and_then(|addr| addr.rsplit_once(':'))
                .map(|(_, port)| port.to_owned())
            {
                let _ = proxy_tx.send(port);
            }
        }
    });
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (span_tx, span_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = span_tx.send(line);
        }
    });
    let port: u16 = proxy_rx
        .recv_timeout(TIMEOUT)
        .expect("the binary listens")
        .parse()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/");
    // Until its route table has synced the binary answers 404.
    let reply = eventually("the binary routes warm.test", || async {
        let reply = w.send(Request::get(&url).header("host", "warm.test")).await;
        (reply.status == StatusCode::OK).then_some(reply)
    })
    .await;
    assert_eq!(reply.json()["backend"], "a");
    let line = tokio::task::spawn_blocking(move || {
        loop {
            let line = span_rx.recv_timeout(TIMEOUT).expect("a span on stdout");
            if let Ok(span) = serde_json::from_str::<serde_json::Value>(&line)
                && span["name"] == "GET"
                && span["attributes"]["http.response.status_code"] == "200"
            {
                return span;
            }
        }
    })
    .await
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(line["attributes"]["keda.route.name"], "app");
    assert_eq!(line["attributes"]["keda.cold_start"], "false");
    assert_eq!(line["trace_id"].as_str().map(str::len), Some(32));
}

/// A client that gives up while its request is held: the cold start is `cancelled` (metric and
/// span), the request is counted as 499 (client closed request), not as a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_cancels_a_held_request_is_counted_cancelled() {
    for h2c in [false, true] {
        let receiver = OtlpReceiver::start().await;
        let config = traced(TracesProtocol::Grpc, receiver.grpc_endpoint());
        let w = World::with_config(config).await;
        w.expose("svc", "http", &[]).await;
        w.apply_hso(hso("app", &["cold.test"], &[], "svc", json!(80)))
            .await;
        eventually("the route in /queue", || async {
            w.queue().await.contains_key("default/app").then_some(())
        })
        .await;
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .http2_only(h2c)
            .build(common::DialProxy(w.interceptor.proxy_addr()));
        let held = tokio::spawn(async move {
            let req = Request::get("http://cold.test/")
                .body(Full::new(Bytes::new()))
                .unwrap();
            client.request(req).await
        });
        w.wait_concurrency("default/app", 1).await;
        // Dropping the client's request closes its connection (HTTP/1.1) or resets its
        // stream (HTTP/2).
        held.abort();
        w.wait_concurrency("default/app", 0).await;
        let text = eventually("the cancelled request in /metrics", || async {
            let text = w.metrics_text().await;
            text.contains(r#"interceptor_request_count_total{code="499",method="GET",route_name="app",route_namespace="default"} 1"#)
                .then_some(text)
        })
        .await;
        assert!(
            text.contains(r#"interceptor_cold_start_duration_seconds_count{route_name="app",route_namespace="default",outcome="cancelled"} 1"#),
            "h2c {h2c}: {text}"
        );
        assert!(!text.contains(r#"code="502""#), "h2c {h2c}: {text}");
        w.interceptor.shutdown().await;
        let spans = receiver.wait_for_spans(2).await;
        let cold = spans
            .iter()
            .find(|s| s.span.name == "cold start")
            .expect("a cold-start span");
        assert_eq!(
            cold.attr("keda.cold_start.outcome").as_deref(),
            Some("cancelled"),
            "h2c {h2c}"
        );
        let server = spans
            .iter()
            .find(|s| s.span.kind == SpanKind::Server as i32)
            .expect("a server span");
        assert_eq!(
            server.attr("http.response.status_code").as_deref(),
            Some("499"),
            "h2c {h2c}"
        );
    }
}
