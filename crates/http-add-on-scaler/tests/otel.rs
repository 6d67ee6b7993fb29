//! OpenTelemetry: the scaler's spans (the KEDA calls and its fetches from interceptors,
//! through the `tracing` layer the binary installs) and its OTLP metrics reach an in-test
//! OTLP gRPC receiver (the collector's services, from the OTLP protobuf definitions).

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_add_on_scaler::naming::HTTP_SCALED_OBJECT_KEY;
use http_add_on_types::telemetry::{OtelConfig, OtlpProtocol, Telemetry, TracesProtocol};
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
use serde_json::json;
use support::{Cluster, eventually};
use tracing_subscriber::layer::SubscriberExt as _;

#[derive(Clone, Default)]
struct Received {
    traces: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
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

/// The receiver's address; it serves until the test's runtime ends.
async fn receiver(received: &Received) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(received.clone()))
        .add_service(MetricsServiceServer::new(received.clone()));
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let _ = server.serve_with_incoming(incoming).await;
    });
    addr
}

fn service_name(attributes: &[KeyValue]) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        })
}

// One thread: the test's `tracing` subscriber (as the binary installs it, for the whole
// process) sees the scaler's tasks.
#[tokio::test(flavor = "current_thread")]
async fn keda_calls_and_interceptor_fetches_are_traced_and_metrics_pushed() {
    let received = Received::default();
    let addr = receiver(&received).await;
    let mut otel = OtelConfig {
        traces_enabled: true,
        traces_protocol: TracesProtocol::Grpc,
        ..OtelConfig::default()
    };
    otel.traces.endpoint = format!("http://{addr}");
    let traces = Telemetry::start(http_add_on_scaler::metrics::SERVICE_NAME, &otel, None)
        .expect("exporter starts");
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(traces.tracer().expect("traces on")));
    let guard = tracing::subscriber::set_default(subscriber);

    let cluster = Cluster::start(1, |config| {
        config.otel.metrics_enabled = true;
        config.otel.metrics_protocol = OtlpProtocol::Grpc;
        config.otel.metrics.endpoint = format!("http://{addr}");
        config.otel.metrics_interval = Duration::from_millis(50);
    })
    .await;
    cluster
        .create_http_scaled_object("app", "app.test", "app", json!({}))
        .await;
    cluster.wait_routed("default/app").await;
    let sor = Cluster::sor("app", HTTP_SCALED_OBJECT_KEY, "app");
    eventually("IsActive answers", || async {
        cluster.is_active(&sor).await.ok()
    })
    .await;
    cluster
        .keda
        .clone()
        .get_metric_spec(sor.clone())
        .await
        .expect("GetMetricSpec");
    cluster.get_metrics(&sor).await.expect("GetMetrics");
    let metrics = eventually("the pinger series pushed", || async {
        let names: Vec<(Option<String>, String)> = received
            .metrics
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| &r.resource_metrics)
            .flat_map(|rm| {
                let service = rm
                    .resource
                    .as_ref()
                    .and_then(|r| service_name(&r.attributes));
                rm.scope_metrics
                    .iter()
                    .flat_map(|sm| &sm.metrics)
                    .map(move |m| (service.clone(), m.name.clone()))
            })
            .collect();
        names
            .iter()
            .any(|(_, n)| n == "scaler_pinger_fetch_duration_seconds")
            .then_some(names)
    })
    .await;
    assert!(
        metrics
            .iter()
            .all(|(s, _)| s.as_deref() == Some("keda-http-external-scaler")),
        "{metrics:?}"
    );

    drop(cluster);
    drop(guard);
    traces.shutdown().await;
    let spans: Vec<(Option<String>, String)> = received
        .traces
        .lock()
        .unwrap()
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| service_name(&r.attributes));
            rs.scope_spans
                .iter()
                .flat_map(|ss| &ss.spans)
                .map(move |s| (service.clone(), s.name.clone()))
        })
        .collect();
    for name in [
        "IsActive",
        "GetMetricSpec",
        "GetMetrics",
        "connect to interceptor",
    ] {
        assert!(spans.iter().any(|(_, n)| n == name), "{name} in {spans:?}");
    }
    assert!(
        spans
            .iter()
            .all(|(s, _)| s.as_deref() == Some("keda-http-external-scaler")),
        "{spans:?}"
    );
}
