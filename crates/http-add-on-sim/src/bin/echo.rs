//! `echo`: the app every pod of the simulated cluster runs, as a standalone server. It is the e2e
//! suite's sample app on real clusters (the `e2e-echo` image of the root `Dockerfile`).
//!
//! It answers every request with a JSON description of it (`pod`, `namespace`, `podIp`,
//! `method`, `protocol`, `host`, `path`, `query`, `headers`, `body`), `/status/<code>` with that
//! code and `/delay/<go duration>` after that delay: the very code of the sim's pods.
//!
//! Environment (a bad value stops it with a message naming the variable; empty = unset):
//! - `PORT` (default 8080), `LISTEN_ADDRESS` (default `0.0.0.0`): where it listens.
//! - `POD_NAME` (else `HOSTNAME`, which Kubernetes sets to the pod name), `POD_NAMESPACE`,
//!   `POD_IP`: the identity it reports (default `unknown`); set them from the downward API.
//! - `ECHO_STARTUP_DELAY`: Go duration to wait before listening, so that a readiness probe fails
//!   until then (the sim's `sim.http.keda.sh/startup-delay` annotation).
//! - `ECHO_RESPONSE_DELAY`: Go duration added to every response (the sim's
//!   `sim.http.keda.sh/response-delay` annotation).
//!
//! Prints `echo listening <address>` on stdout once it listens. On SIGTERM or SIGINT it drains
//! like a sim pod (requests in flight finish) and exits 0.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use http_add_on_sim::workloads::echo::{PodIdentity, serve};
use http_add_on_types::config::{ConfigError, Env, EnvSource};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// Identity reported when the environment does not say.
const UNKNOWN: &str = "unknown";

/// The app's configuration, from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Config {
    /// Where to listen.
    listen: SocketAddr,
    /// Pod name reported in every response.
    pod_name: String,
    /// Pod namespace reported in every response.
    pod_namespace: String,
    /// Pod IP reported in every response.
    pod_ip: String,
    /// Wait before listening.
    startup_delay: Duration,
    /// Added to every response.
    response_delay: Duration,
}

impl Config {
    /// Reads the variables listed in the module documentation.
    fn from_env<S: EnvSource>(env: &Env<S>) -> Result<Self, ConfigError> {
        let address = env.parse("LISTEN_ADDRESS", IpAddr::V4(Ipv4Addr::UNSPECIFIED))?;
        let port = env.parse("PORT", 8080_u16)?;
        let identity = |names: &[&str]| {
            names
                .iter()
                .find_map(|name| env.string(name))
                .unwrap_or_else(|| UNKNOWN.to_owned())
        };
        Ok(Self {
            listen: SocketAddr::new(address, port),
            pod_name: identity(&["POD_NAME", "HOSTNAME"]),
            pod_namespace: identity(&["POD_NAMESPACE"]),
            pod_ip: identity(&["POD_IP"]),
            startup_delay: env.duration("ECHO_STARTUP_DELAY", Duration::ZERO)?,
            response_delay: env.duration("ECHO_RESPONSE_DELAY", Duration::ZERO)?,
        })
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    http_add_on_types::telemetry::init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` prints the chain on one line, naming the bad variable.
            eprintln!("echo: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let config = Config::from_env(&Env::process()).context("invalid configuration")?;
    // Handlers first, so that a signal during the start-up delay is a clean exit too.
    let mut terminate = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    };
    let mut shutdown = std::pin::pin!(shutdown);

    if !config.startup_delay.is_zero() {
        tracing::info!(delay = ?config.startup_delay, "starting up");
        tokio::select! {
            () = tokio::time::sleep(config.startup_delay) => {}
            () = shutdown.as_mut() => {
                tracing::info!("stopped before listening");
                return Ok(());
            }
        }
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let address = listener.local_addr()?;
    let pod = Arc::new(PodIdentity {
        name: config.pod_name,
        namespace: config.pod_namespace,
        ip: config.pod_ip,
        response_delay: config.response_delay,
        in_flight: watch::channel(0).0,
    });
    let (drain, draining) = watch::channel(false);
    let server = tokio::spawn(serve(listener, pod, draining));
    tracing::info!(%address, "listening");
    println!("echo listening {address}");

    shutdown.await;
    tracing::info!("shutdown signal received, draining");
    drain.send_replace(true);
    server.await.context("the server failed")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn from_pairs(pairs: &[(&'static str, &'static str)]) -> Result<Config, ConfigError> {
        Config::from_env(&Env::new(pairs.iter().copied().collect::<BTreeMap<_, _>>()))
    }

    #[test]
    fn defaults_listen_on_every_interface_at_8080() {
        let config = from_pairs(&[]).unwrap();
        assert_eq!(config.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(config.pod_name, UNKNOWN);
        assert_eq!(config.pod_ip, UNKNOWN);
        assert_eq!(config.startup_delay, Duration::ZERO);
    }

    #[test]
    fn empty_delays_from_missing_annotations_mean_none() {
        // The downward API gives "" for an annotation the pod does not have.
        let config = from_pairs(&[
            ("ECHO_STARTUP_DELAY", ""),
            ("ECHO_RESPONSE_DELAY", ""),
            ("HOSTNAME", "app-1"),
        ])
        .unwrap();
        assert_eq!(
            (config.startup_delay, config.response_delay),
            (Duration::ZERO, Duration::ZERO)
        );
        assert_eq!(config.pod_name, "app-1");
    }

    #[test]
    fn values_are_read_and_bad_ones_named() {
        let config = from_pairs(&[
            ("PORT", "9000"),
            ("LISTEN_ADDRESS", "127.0.0.1"),
            ("POD_NAME", "app-2"),
            ("HOSTNAME", "ignored"),
            ("ECHO_STARTUP_DELAY", "1m30s"),
            ("ECHO_RESPONSE_DELAY", "250ms"),
        ])
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(config.pod_name, "app-2");
        assert_eq!(config.startup_delay, Duration::from_secs(90));
        assert_eq!(config.response_delay, Duration::from_millis(250));
        for (name, value) in [
            ("PORT", "http"),
            ("LISTEN_ADDRESS", "localhost"),
            ("ECHO_STARTUP_DELAY", "soon"),
        ] {
            let error = from_pairs(&[(name, value)]).unwrap_err();
            assert!(error.to_string().contains(name), "{error}");
        }
    }
}
