//! KEDA HTTP Add-on scaler: configuration from the environment, then [`http_add_on_scaler::run`]
//! until SIGTERM or SIGINT.

use anyhow::Context;
use http_add_on_scaler::Config;
use http_add_on_scaler::config::KNOWN_VARIABLES;
use http_add_on_scaler::metrics::SERVICE_NAME;
use http_add_on_types::config::Env;
use http_add_on_types::telemetry::{self, OtelConfig, Telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    let env = Env::process();
    let config = Config::from_env(&env).context("invalid configuration")?;
    // Traces: `#[instrument]` spans (the gRPC calls, the fetches from interceptors) through
    // one `tracing` layer; the OTLP metrics push starts with the scaler.
    let traces = Telemetry::start(
        SERVICE_NAME,
        &OtelConfig {
            metrics_enabled: false,
            ..config.otel.clone()
        },
        None,
    )
    .context("starting the OpenTelemetry exporter")?;
    telemetry::export_spans(traces.tracer());
    env.warn_unknown(KNOWN_VARIABLES);
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let result =
        http_add_on_scaler::run(config, client, http_add_on_types::shutdown::signal()).await;
    traces.shutdown().await;
    result?;
    Ok(())
}
