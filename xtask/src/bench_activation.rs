//! `cargo xtask bench activation`: time from a request arriving at an interceptor for a route
//! with 0 replicas to a `StreamIsActive` client receiving `true`, for this project's push design
//! and for the upstream polling design (500 ms tick + 200 ms stream interval) as the baseline.
//! Prints p50/p99 of each. The measurement is the `bench_activation` example of the scaler crate
//! (simulated API server, a real interceptor and the scaler in one process), built in release.

use anyhow::{Context, bail};

/// Runs `trials` activations (at least 200 are meaningful for p99) in each design.
pub(crate) fn run(trials: usize) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let trials = trials.to_string();
    let status = crate::cargo_command()
        .args([
            "run",
            "--release",
            "--quiet",
            "-p",
            "http-add-on-scaler",
            "--example",
            "bench_activation",
            "--",
            "--trials",
            &trials,
        ])
        .current_dir(crate::workspace_root())
        .status()
        .with_context(|| format!("running {cargo} run --example bench_activation"))?;
    if !status.success() {
        bail!("the activation benchmark failed ({status})");
    }
    Ok(())
}
