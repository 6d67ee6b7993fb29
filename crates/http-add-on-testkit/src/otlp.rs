//! One in-test OTLP receiver, a fake OpenTelemetry collector on loopback: the collector's gRPC
//! trace and metrics services (from the OTLP protobuf definitions) on one port, and the
//! HTTP/protobuf endpoints `/v1/traces` and `/v1/metrics` on another. It keeps every export it
//! is sent, and lists what tests assert on: spans, span and metric names, each with its
//! resource's `service.name`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
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
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use tokio::net::TcpListener;

pub use opentelemetry_proto::tonic::trace::v1::Span;
pub use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

use crate::wait;

/// A fake OTLP collector on loopback; its servers stop when it is dropped.
pub struct OtlpReceiver {
    exports: Exports,
    grpc: SocketAddr,
    http: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// A span received, with its resource's `service.name`.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    /// The resource's `service.name` (empty when it has none).
    pub service: String,
    /// The span as exported.
    pub span: Span,
}

impl ReceivedSpan {
    /// The span's attribute `key` as text (strings, booleans and integers).
    pub fn attr(&self, key: &str) -> Option<String> {
        text_attribute(&self.span.attributes, key)
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl OtlpReceiver {
    /// Starts the gRPC and the HTTP/protobuf servers on ephemeral loopback ports.
    pub async fn start() -> Self {
        let exports = Exports::default();
        let grpc_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = grpc_listener.local_addr().unwrap();
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(exports.clone()))
            .add_service(MetricsServiceServer::new(exports.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(grpc_listener));
        let grpc_task = tokio::spawn(async move {
            let _ = server.await;
        });
        let http_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = http_listener.local_addr().unwrap();
        let http_task = tokio::spawn(serve_http(http_listener, exports.clone()));
        Self {
            exports,
            grpc,
            http,
            tasks: vec![grpc_task, http_task],
        }
    }

    /// The endpoint of the gRPC services (traces and metrics), `http://<addr>`.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// The HTTP/protobuf traces endpoint, `http://<addr>/v1/traces`.
    pub fn http_traces_endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.http)
    }

    /// The HTTP/protobuf metrics endpoint, `http://<addr>/v1/metrics`.
    pub fn http_metrics_endpoint(&self) -> String {
        format!("http://{}/v1/metrics", self.http)
    }

    /// How many trace exports arrived (over either protocol), empty ones included.
    pub fn trace_exports(&self) -> usize {
        self.exports.traces.lock().unwrap().len()
    }

    /// Every span received, in the order received.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        let traces = self.exports.traces.lock().unwrap();
        let mut out = Vec::new();
        for rs in traces.iter().flat_map(|r| &r.resource_spans) {
            let service = service_name(rs.resource.as_ref());
            for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                out.push(ReceivedSpan {
                    service: service.clone(),
                    span: span.clone(),
                });
            }
        }
        out
    }

    /// `(service.name, span name)` of every span received.
    pub fn span_names(&self) -> Vec<(String, String)> {
        self.spans()
            .into_iter()
            .map(|s| (s.service, s.span.name))
            .collect()
    }

    /// `(service.name, metric name)` of every metric received.
    pub fn metric_names(&self) -> Vec<(String, String)> {
        let metrics = self.exports.metrics.lock().unwrap();
        let mut out = Vec::new();
        for rm in metrics.iter().flat_map(|r| &r.resource_metrics) {
            let service = service_name(rm.resource.as_ref());
            for m in rm.scope_metrics.iter().flat_map(|sm| &sm.metrics) {
                out.push((service.clone(), m.name.clone()));
            }
        }
        out
    }

    /// Checks `check` against what has arrived until it returns `Some`, and returns that;
    /// panics naming `what` after [`wait::DEADLINE`].
    pub async fn wait_for<T>(&self, what: &str, mut check: impl FnMut(&Self) -> Option<T>) -> T {
        wait::until(what, wait::DEADLINE, || std::future::ready(check(self))).await
    }

    /// Waits until at least `count` spans have arrived, and returns every span received.
    pub async fn wait_for_spans(&self, count: usize) -> Vec<ReceivedSpan> {
        let what = format!("{count} spans at the OTLP receiver");
        self.wait_for(&what, |r| {
            let spans = r.spans();
            (spans.len() >= count).then_some(spans)
        })
        .await
    }
}

/// Every export request received, shared by the servers and the receiver.
#[derive(Clone, Default)]
struct Exports {
    traces: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Exports {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.traces.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Exports {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.metrics.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// The HTTP/protobuf endpoints, HTTP/1.1 or h2c, one task a connection.
async fn serve_http(listener: TcpListener, exports: Exports) {
    while let Ok((stream, _)) = listener.accept().await {
        let exports = exports.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let exports = exports.clone();
                async move { Ok::<_, Infallible>(answer_http(&exports, req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Records a protobuf export posted to `/v1/traces` or `/v1/metrics`: 415 for another content
/// type, 400 for a body that does not decode, 404 for another path.
async fn answer_http(exports: &Exports, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let protobuf = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v == "application/x-protobuf");
    let path = req.uri().path().to_owned();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let status = if !protobuf {
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    } else {
        match path.as_str() {
            "/v1/traces" => record(&exports.traces, ExportTraceServiceRequest::decode(body)),
            "/v1/metrics" => record(&exports.metrics, ExportMetricsServiceRequest::decode(body)),
            _ => StatusCode::NOT_FOUND,
        }
    };
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/x-protobuf")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn record<T>(into: &Mutex<Vec<T>>, decoded: Result<T, prost::DecodeError>) -> StatusCode {
    match decoded {
        Ok(export) => {
            into.lock().unwrap().push(export);
            StatusCode::OK
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

fn service_name(resource: Option<&Resource>) -> String {
    resource
        .and_then(|r| text_attribute(&r.attributes, "service.name"))
        .unwrap_or_default()
}

fn text_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    let kv = attributes.iter().find(|kv| kv.key == key)?;
    match kv.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::metrics::v1::{Metric, ResourceMetrics, ScopeMetrics};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};

    fn string(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.to_owned())),
            }),
            ..KeyValue::default()
        }
    }

    fn export(service: &str, span: &str) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![string("service.name", service)],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        name: span.to_owned(),
                        attributes: vec![string("route", "app")],
                        ..Span::default()
                    }],
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        }
    }

    fn metrics(service: &str, metric: &str) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![string("service.name", service)],
                    ..Resource::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: metric.to_owned(),
                        ..Metric::default()
                    }],
                    ..ScopeMetrics::default()
                }],
                ..ResourceMetrics::default()
            }],
        }
    }

    async fn post(url: &str, content_type: &str, body: Vec<u8>) -> StatusCode {
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
        let req = Request::post(url)
            .header(http::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        client
            .request(req)
            .await
            .expect("the receiver answers")
            .status()
    }

    #[tokio::test]
    async fn spans_arrive_over_grpc_and_http_protobuf() {
        let receiver = OtlpReceiver::start().await;
        let mut client = TraceServiceClient::connect(receiver.grpc_endpoint())
            .await
            .expect("the gRPC service answers");
        client.export(export("over-grpc", "a")).await.unwrap();
        let body = export("over-http", "b").encode_to_vec();
        let url = receiver.http_traces_endpoint();
        assert_eq!(
            post(&url, "application/x-protobuf", body.clone()).await,
            StatusCode::OK
        );
        assert_eq!(
            post(&url, "application/json", body.clone()).await,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        assert_eq!(
            post(&url, "application/x-protobuf", vec![0xff]).await,
            StatusCode::BAD_REQUEST
        );
        let elsewhere = url.replace("/v1/traces", "/v1/logs");
        assert_eq!(
            post(&elsewhere, "application/x-protobuf", body).await,
            StatusCode::NOT_FOUND
        );
        let spans = receiver.wait_for_spans(2).await;
        assert_eq!(spans.len(), 2);
        assert_eq!(
            receiver.span_names(),
            [
                ("over-grpc".to_owned(), "a".to_owned()),
                ("over-http".to_owned(), "b".to_owned())
            ]
        );
        assert_eq!(receiver.trace_exports(), 2);
        assert_eq!(receiver.spans()[0].attr("route").as_deref(), Some("app"));
        assert!(receiver.metric_names().is_empty());
    }

    #[tokio::test]
    async fn metrics_arrive_over_http_protobuf() {
        let receiver = OtlpReceiver::start().await;
        let body = metrics("svc", "requests").encode_to_vec();
        assert_eq!(
            post(
                &receiver.http_metrics_endpoint(),
                "application/x-protobuf",
                body
            )
            .await,
            StatusCode::OK
        );
        assert_eq!(
            receiver.metric_names(),
            [("svc".to_owned(), "requests".to_owned())]
        );
        assert_eq!(receiver.trace_exports(), 0);
    }
}
