//! KEDA HTTP Add-on scaler: configuration from the environment, then [`http_add_on_scaler::run`]
//! until SIGTERM or SIGINT.

use anyhow::Context;
use http_add_on_scaler::Config;
use http_add_on_scaler::config::KNOWN_VARIABLES;
use http_add_on_types::config::Env;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    http_add_on_types::telemetry::init();
    let env = Env::process();
    let config = Config::from_env(&env).context("invalid configuration")?;
    env.warn_unknown(KNOWN_VARIABLES);
    config.warn_unsupported();
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    http_add_on_scaler::run(config, client, http_add_on_types::shutdown::signal()).await?;
    Ok(())
}
