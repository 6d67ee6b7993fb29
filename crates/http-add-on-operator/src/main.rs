//! The `operator` binary: configuration from the environment, tracing, run until SIGTERM/SIGINT.

use std::process::ExitCode;

use anyhow::Context as _;
use http_add_on_operator::Config;
use http_add_on_types::config::Env;
use http_add_on_types::telemetry::{self, OtelConfig, Telemetry};

/// `service.name` of the operator's spans.
const SERVICE_NAME: &str = "keda-http-add-on-operator";

#[tokio::main]
async fn main() -> ExitCode {
    telemetry::init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line naming the cause (e.g. the bad variable), without a backtrace.
            eprintln!("operator: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let flags = http_add_on_operator::flags::parse(std::env::args().skip(1))?;
    let env = Env::new(http_add_on_operator::flags::WithFlags::new(
        flags,
        http_add_on_types::config::ProcessEnv,
    ));
    let config = Config::from_env(&env).context("invalid operator configuration")?;
    // A span per reconcile (`#[instrument]`), exported as the interceptor and the scaler
    // export theirs when `OTEL_EXPORTER_OTLP_TRACES_ENABLED` is set; no OTLP metrics.
    let otel = OtelConfig {
        metrics_enabled: false,
        ..OtelConfig::from_env(&env).context("invalid operator configuration")?
    };
    let traces = Telemetry::start(SERVICE_NAME, &otel, None)
        .context("starting the OpenTelemetry exporter")?;
    telemetry::export_spans(traces.tracer());
    env.warn_unknown(http_add_on_operator::config::KNOWN_VARIABLES);
    let client = kube::Client::try_default()
        .await
        .context("building the Kubernetes client (in-cluster config or KUBECONFIG)")?;
    let result =
        http_add_on_operator::run(client, config, http_add_on_types::shutdown::signal()).await;
    traces.shutdown().await;
    result?;
    Ok(())
}
