//! The interceptor binary: reads its configuration from the environment and runs until SIGTERM
//! or SIGINT, then shuts down gracefully.

use anyhow::Context;
use http_add_on_interceptor::Config;
use http_add_on_types::config::Env;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    http_add_on_types::telemetry::init();
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` prints the chain on one line, naming the bad variable.
            eprintln!("interceptor: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let env = Env::process();
    let config = Config::from_env(&env).context("invalid configuration")?;
    env.warn_unknown(http_add_on_interceptor::config::KNOWN_VARIABLES);
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API server")?;
    http_add_on_interceptor::run(config, client, http_add_on_types::shutdown::signal()).await?;
    Ok(())
}
