//! Shared fixtures of the workspace's tests (a dev-dependency only): [`wait::until`] (a
//! condition with a deadline, never a sleep), typed builders for the objects tests create
//! ([`build`]), one loopback HTTP test backend ([`backend::TestBackend`]) and one cluster
//! fixture, the simulated cluster with the add-on's CRDs (`cluster::Cluster`, with the feature
//! `sim`; the e2e suite, which starts the sim as a process, goes without it), a binary run
//! with only the environment a start-up test names ([`process::run_with_only`]), and one OTLP
//! receiver, a fake OpenTelemetry collector (`otlp::OtlpReceiver`, with the feature `otlp`).

pub mod backend;
pub mod build;
#[cfg(feature = "sim")]
pub mod cluster;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod process;
pub mod wait;

pub use backend::TestBackend;
#[cfg(feature = "sim")]
pub use cluster::Cluster;
#[cfg(feature = "otlp")]
pub use otlp::OtlpReceiver;

/// Installs a `tracing` subscriber for tests once (filtered by `RUST_LOG`, written to the
/// test's captured output); later calls do nothing.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
