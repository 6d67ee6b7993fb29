//! OpenTelemetry: the scaler's spans (the KEDA calls and its fetches from interceptors,
//! through the `tracing` layer the binary installs) and its OTLP metrics reach the kit's
//! in-test OTLP receiver over gRPC.

mod support;

use std::time::Duration;

use http_add_on_scaler::naming::HTTP_SCALED_OBJECT_KEY;
use http_add_on_testkit::OtlpReceiver;
use http_add_on_types::telemetry::{OtelConfig, OtlpProtocol, Telemetry, TracesProtocol};
use serde_json::json;
use support::{Cluster, eventually};
use tracing_subscriber::layer::SubscriberExt as _;

// One thread: the test's `tracing` subscriber (as the binary installs it, for the whole
// process) sees the scaler's tasks.
#[tokio::test(flavor = "current_thread")]
async fn keda_calls_and_interceptor_fetches_are_traced_and_metrics_pushed() {
    let receiver = OtlpReceiver::start().await;
    let mut otel = OtelConfig {
        traces_enabled: true,
        traces_protocol: TracesProtocol::Grpc,
        ..OtelConfig::default()
    };
    otel.traces.endpoint = receiver.grpc_endpoint();
    let traces = Telemetry::start(http_add_on_scaler::metrics::SERVICE_NAME, &otel, None)
        .expect("exporter starts");
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(traces.tracer().expect("traces on")));
    let guard = tracing::subscriber::set_default(subscriber);

    let cluster = Cluster::start(1, |config| {
        config.otel.metrics_enabled = true;
        config.otel.metrics_protocol = OtlpProtocol::Grpc;
        config.otel.metrics.endpoint = receiver.grpc_endpoint();
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
    let metrics = receiver
        .wait_for("the pinger series pushed", |r| {
            let names = r.metric_names();
            names
                .iter()
                .any(|(_, n)| n == "scaler_pinger_fetch_duration_seconds")
                .then_some(names)
        })
        .await;
    assert!(
        metrics
            .iter()
            .all(|(s, _)| s == "keda-http-external-scaler"),
        "{metrics:?}"
    );

    drop(cluster);
    drop(guard);
    traces.shutdown().await;
    let spans = receiver.span_names();
    for name in [
        "IsActive",
        "GetMetricSpec",
        "GetMetrics",
        "connect to interceptor",
    ] {
        assert!(spans.iter().any(|(_, n)| n == name), "{name} in {spans:?}");
    }
    assert!(
        spans.iter().all(|(s, _)| s == "keda-http-external-scaler"),
        "{spans:?}"
    );
}
