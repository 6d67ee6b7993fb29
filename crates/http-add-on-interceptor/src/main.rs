//! The interceptor binary: reads its configuration from the environment and runs until SIGTERM
//! or SIGINT, then shuts down gracefully.

use anyhow::Context;
use http_add_on_interceptor::Config;
use http_add_on_types::config::Env;

// mimalloc: per request, the proxy allocates and frees many small objects (header maps, h2
// stream state); measured with `cargo xtask bench proxy`, glibc's malloc cost about 5% of the
// CPU per request over h2c.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    http_add_on_types::telemetry::init();
    // One worker (`TOKIO_WORKER_THREADS=1`, e.g. a pod limited to one CPU) runs on tokio's
    // current-thread scheduler: tasks run in the order they were woken, so an HTTP/2
    // connection writes the responses of all its streams that became ready together in one
    // go, and nothing is spent on work stealing. Otherwise tokio's multi-thread scheduler,
    // one worker per CPU unless `TOKIO_WORKER_THREADS` says otherwise.
    let one_worker = std::env::var("TOKIO_WORKER_THREADS").is_ok_and(|v| v.trim() == "1");
    let runtime = if one_worker {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("interceptor: starting the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
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
