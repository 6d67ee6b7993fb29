//! The process-wide set-up the binaries use: `telemetry::init` first (logs), then
//! `telemetry::export_spans` once the configuration is read; from then on `tracing` spans reach
//! the OTLP receiver (the collector's gRPC trace service, on loopback). Its own process: it
//! installs the global subscriber.

use std::sync::{Arc, Mutex};

use http_add_on_types::telemetry::{self, OtelConfig, Telemetry, TracesProtocol};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test]
async fn spans_before_export_spans_stay_local_and_after_it_are_exported() {
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(received.clone()))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    tokio::spawn(server);

    telemetry::init();
    tracing::info_span!("before").in_scope(|| tracing::info!("not exported"));
    let mut config = OtelConfig {
        traces_enabled: true,
        traces_protocol: TracesProtocol::Grpc,
        ..OtelConfig::default()
    };
    config.traces.endpoint = format!("http://{addr}");
    let traces = Telemetry::start("probe-service", &config, None).expect("exporter starts");
    telemetry::export_spans(traces.tracer());
    tracing::info_span!("after", answer = 42).in_scope(|| tracing::info!("exported"));
    traces.shutdown().await;

    let spans: Vec<(String, String)> = received
        .0
        .lock()
        .unwrap()
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                .and_then(|kv| kv.value.as_ref())
                .map(|v| format!("{:?}", v.value))
                .unwrap_or_default();
            rs.scope_spans
                .iter()
                .flat_map(|ss| &ss.spans)
                .map(move |s| (service.clone(), s.name.clone()))
        })
        .collect();
    let names: Vec<&str> = spans.iter().map(|(_, n)| n.as_str()).collect();
    assert!(names.contains(&"after"), "{spans:?}");
    assert!(!names.contains(&"before"), "{spans:?}");
    assert!(
        spans
            .iter()
            .all(|(service, _)| service.contains("probe-service")),
        "{spans:?}"
    );
}
