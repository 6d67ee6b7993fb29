//! The process-wide set-up the binaries use: `telemetry::init` first (logs), then
//! `telemetry::export_spans` once the configuration is read; from then on `tracing` spans reach
//! the kit's OTLP receiver (over gRPC, on loopback). Its own process: it installs the global
//! subscriber.

use http_add_on_testkit::OtlpReceiver;
use http_add_on_types::telemetry::{self, OtelConfig, Telemetry, TracesProtocol};

#[tokio::test]
async fn spans_before_export_spans_stay_local_and_after_it_are_exported() {
    let receiver = OtlpReceiver::start().await;

    telemetry::init();
    tracing::info_span!("before").in_scope(|| tracing::info!("not exported"));
    let mut config = OtelConfig {
        traces_enabled: true,
        traces_protocol: TracesProtocol::Grpc,
        ..OtelConfig::default()
    };
    config.traces.endpoint = receiver.grpc_endpoint();
    let traces = Telemetry::start("probe-service", &config, None).expect("exporter starts");
    telemetry::export_spans(traces.tracer());
    tracing::info_span!("after", answer = 42).in_scope(|| tracing::info!("exported"));
    traces.shutdown().await;

    let spans = receiver.span_names();
    let names: Vec<&str> = spans.iter().map(|(_, n)| n.as_str()).collect();
    assert!(names.contains(&"after"), "{spans:?}");
    assert!(!names.contains(&"before"), "{spans:?}");
    assert!(
        spans.iter().all(|(service, _)| service == "probe-service"),
        "{spans:?}"
    );
}
