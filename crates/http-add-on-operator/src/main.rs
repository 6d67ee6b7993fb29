//! The `operator` binary: configuration from the environment, tracing, run until SIGTERM/SIGINT.

use std::process::ExitCode;

use anyhow::Context as _;
use http_add_on_operator::Config;
use http_add_on_types::config::Env;

#[tokio::main]
async fn main() -> ExitCode {
    http_add_on_types::telemetry::init();
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
    env.warn_unknown(http_add_on_operator::config::KNOWN_VARIABLES);
    let client = kube::Client::try_default()
        .await
        .context("building the Kubernetes client (in-cluster config or KUBECONFIG)")?;
    http_add_on_operator::run(client, config, http_add_on_types::shutdown::signal()).await?;
    Ok(())
}
