//! OpenTelemetry: the interceptor's spans and OTLP metrics reach an in-test OTLP receiver (the
//! collector's gRPC and HTTP/protobuf services, from the OTLP protobuf definitions) over
//! loopback; the client's W3C trace is continued and handed on to the backend; a sampler at 0
//! sends nothing; `console` prints spans on stdout.

mod common;

use std::convert::Infallible;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{TIMEOUT, TestBackend, World, eventually, hso};
use http::{Request, Response, StatusCode};
use http_add_on_interceptor::Config;
use http_add_on_types::telemetry::{OtelConfig, OtlpProtocol, Sampling, TracesProtocol};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;
use serde_json::json;
use tokio::net::TcpListener;

/// What the receiver got.
#[derive(Clone, Default)]
struct Received {
    traces: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
}

impl Received {
    /// Every span received, with its resource's `service.name`.
    fn spans(&self) -> Vec<(String, Span)> {
        let mut out = Vec::new();
        for request in self.traces.lock().unwrap().iter() {
            for rs in &request.resource_spans {
                let service = rs
                    .resource
                    .as_ref()
                    .and_then(|r| string_attr(&r.attributes, "service.name"))
                    .unwrap_or_default();
                for ss in &rs.scope_spans {
                    for span in &ss.spans {
                        out.push((service.clone(), span.clone()));
                    }
                }
            }
        }
        out
    }

    /// The names of every metric received, with their resource's `service.name`.
    fn metric_names(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for request in self.metrics.lock().unwrap().iter() {
            for rm in &request.resource_metrics {
                let service = rm
                    .resource
                    .as_ref()
                    .and_then(|r| string_attr(&r.attributes, "service.name"))
                    .unwrap_or_default();
                for sm in &rm.scope_metrics {
                    for m in &sm.metrics {
                        out.push((service.clone(), m.name.clone()));
                    }
                }
            }
        }
        out
    }
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.traces.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.metrics.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// An OTLP receiver: the collector's gRPC services on one port, `/v1/traces` and
/// `/v1/metrics` (protobuf bodies) on another.
struct Receiver {
    received: Received,
    grpc: SocketAddr,
    http: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Receiver {
    async fn start() -> Self {
        let received = Received::default();
        let grpc_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = grpc_listener.local_addr().unwrap();
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(received.clone()))
            .add_service(MetricsServiceServer::new(received.clone()));
        let grpc_task = tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc_listener);
            let _ = server.serve_with_incoming(incoming).await;
        });
        let http_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = http_listener.local_addr().unwrap();
        let state = received.clone();
        let http_task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = http_listener.accept().await else {
                    return;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer_http(&state, req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            received,
            grpc,
            http,
            tasks: vec![grpc_task, http_task],
        }
    }
}

async fn answer_http(state: &Received, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let path = req.uri().path().to_owned();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let status = if content_type != "application/x-protobuf" {
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    } else {
        match path.as_str() {
            "/v1/traces" => match ExportTraceServiceRequest::decode(body) {
                Ok(r) => {
                    state.traces.lock().unwrap().push(r);
                    StatusCode::OK
                }
                Err(_) => StatusCode::BAD_REQUEST,
            },
            "/v1/metrics" => match ExportMetricsServiceRequest::decode(body) {
                Ok(r) => {
                    state.metrics.lock().unwrap().push(r);
                    StatusCode::OK
                }
                Err(_) => StatusCode::BAD_REQUEST,
            },
            _ => StatusCode::NOT_FOUND,
        }
    };
    Response::builder()
        .status(status)
        .header("content-type", "application/x-protobuf")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn string_attr(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            any_value::Value::BoolValue(b) => Some(b.to_string()),
            any_value::Value::IntValue(i) => Some(i.to_string()),
            _ => None,
        }
    })
}

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
async fn cold_request_is_traced(config: Config, receiver: &Receiver, h2c: bool) {
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
    let spans = eventually("the spans at the receiver", || async {
        let spans = receiver.received.spans();
        (spans.len() >= 2).then_some(spans)
    })
    .await;
    let (service, server) = spans
        .iter()
        .find(|(_, s)| s.kind == SpanKind::Server as i32)
        .expect("a server span");
    assert_eq!(service, "keda-http-interceptor");
    assert_eq!(server.name, "GET");
    assert_eq!(
        hex(&server.trace_id),
        CLIENT_TRACE,
        "continues the client's trace"
    );
    assert_eq!(hex(&server.parent_span_id), CLIENT_SPAN);
    assert_eq!(server.trace_state, "vendor=opaque");
    let attr = |key| string_attr(&server.attributes, key);
    assert_eq!(attr("keda.route.name").as_deref(), Some("app"));
    assert_eq!(attr("keda.route.namespace").as_deref(), Some("default"));
    assert_eq!(attr("http.request.method").as_deref(), Some("GET"));
    assert_eq!(attr("http.response.status_code").as_deref(), Some("200"));
    assert_eq!(attr("keda.cold_start").as_deref(), Some("true"));
    assert_eq!(attr("server.endpoint"), Some(a.addr.to_string()));
    let (_, cold) = spans
        .iter()
        .find(|(_, s)| s.name == "cold start")
        .expect("a cold-start span");
    assert_eq!(cold.trace_id, server.trace_id);
    assert_eq!(
        cold.parent_span_id, server.span_id,
        "a child of the server span"
    );
    assert_eq!(
        string_attr(&cold.attributes, "keda.cold_start.outcome").as_deref(),
        Some("ready")
    );
    // The backend is told the server span as its parent, in the same trace.
    let headers = &reply.json()["headers"];
    let traceparent = headers["traceparent"].as_str().expect("a traceparent");
    assert_eq!(
        traceparent,
        format!("00-{CLIENT_TRACE}-{}-01", hex(&server.span_id)),
    );
    assert_eq!(headers["tracestate"], "vendor=opaque");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_request_is_traced_over_otlp_grpc() {
    let receiver = Receiver::start().await;
    let config = traced(TracesProtocol::Grpc, format!("http://{}", receiver.grpc));
    cold_request_is_traced(config, &receiver, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_h2c_request_is_traced_over_otlp_http() {
    let receiver = Receiver::start().await;
    let config = traced(
        TracesProtocol::HttpProtobuf,
        format!("http://{}/v1/traces", receiver.http),
    );
    cold_request_is_traced(config, &receiver, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sampler_at_zero_sends_nothing_and_forwards_the_clients_trace() {
    let receiver = Receiver::start().await;
    let mut config = traced(TracesProtocol::Grpc, format!("http://{}", receiver.grpc));
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
    assert_eq!(receiver.received.spans().len(), 0);
    assert!(receiver.received.traces.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_metrics_arrive_when_enabled() {
    for protocol in [OtlpProtocol::Grpc, OtlpProtocol::HttpProtobuf] {
        let receiver = Receiver::start().await;
        let mut config = Config::for_tests();
        config.otel.metrics_enabled = true;
        config.otel.metrics_protocol = protocol;
        config.otel.metrics_interval = Duration::from_millis(50);
        config.otel.metrics.endpoint = match protocol {
            OtlpProtocol::Grpc => format!("http://{}", receiver.grpc),
            OtlpProtocol::HttpProtobuf => format!("http://{}/v1/metrics", receiver.http),
        };
        let w = World::with_config(config).await;
        let a = TestBackend::start("a").await;
        w.expose("svc", "http", &[&a]).await;
        w.apply_hso(hso("app", &["warm.test"], &[], "svc", json!(80)))
            .await;
        w.wait_routed("warm.test", "/").await;
        assert_eq!(w.get("warm.test", "/").await.status, StatusCode::OK);
        let names = eventually("the request count pushed", || async {
            let names = receiver.received.metric_names();
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
        assert!(receiver.received.traces.lock().unwrap().is_empty());
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
        let receiver = Receiver::start().await;
        let config = traced(TracesProtocol::Grpc, format!("http://{}", receiver.grpc));
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
        let spans = eventually("the spans at the receiver", || async {
            let spans = receiver.received.spans();
            (spans.len() >= 2).then_some(spans)
        })
        .await;
        let (_, cold) = spans
            .iter()
            .find(|(_, s)| s.name == "cold start")
            .expect("a cold-start span");
        assert_eq!(
            string_attr(&cold.attributes, "keda.cold_start.outcome").as_deref(),
            Some("cancelled"),
            "h2c {h2c}"
        );
        let (_, server) = spans
            .iter()
            .find(|(_, s)| s.kind == SpanKind::Server as i32)
            .expect("a server span");
        assert_eq!(
            string_attr(&server.attributes, "http.response.status_code").as_deref(),
            Some("499"),
            "h2c {h2c}"
        );
    }
}
