//! Runs scenarios: each in its own namespace, bounded in time, in parallel where safe; one line
//! per scenario and a final `N passed, M failed`.

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::task::JoinSet;

use crate::app;
use crate::testbed::Testbed;

/// A scenario's body: gets the testbed and its own (already created) namespace.
pub type ScenarioFn = fn(Testbed, String) -> BoxFuture<'static, anyhow::Result<()>>;

/// One end-to-end scenario.
#[derive(Clone, Copy)]
pub struct Scenario {
    /// Short kebab-case name (also the filter key and namespace prefix).
    pub name: &'static str,
    /// Upper bound on its duration.
    pub timeout: Duration,
    /// Runs alone (it disturbs shared components or needs the machine to itself).
    pub exclusive: bool,
    /// The body.
    pub run: ScenarioFn,
}

/// Outcome of one scenario.
#[derive(Debug)]
pub struct Outcome {
    /// Scenario name.
    pub name: &'static str,
    /// How long it took.
    pub elapsed: Duration,
    /// `Err` with the reason when it failed.
    pub result: Result<(), String>,
}

/// Keeps the scenarios whose name contains any of `filters` (all when empty).
pub fn select(all: Vec<Scenario>, filters: &[String]) -> Vec<Scenario> {
    all.into_iter()
        .filter(|s| filters.is_empty() || filters.iter().any(|f| s.name.contains(f.as_str())))
        .collect()
}

async fn run_one(tb: Testbed, scenario: Scenario) -> Outcome {
    let started = Instant::now();
    let namespace = format!("e2e-{}-{}", scenario.name, std::process::id() % 100_000);
    let result = async {
        app::create_namespace(&tb, &namespace).await?;
        match tokio::time::timeout(
            scenario.timeout,
            (scenario.run)(tb.clone(), namespace.clone()),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => anyhow::bail!("timed out after {:?}", scenario.timeout),
        }
    }
    .await
    .map_err(|e| format!("{e:#}"));
    if result.is_ok() {
        app::delete_namespace(&tb, &namespace).await;
    }
    let outcome = Outcome {
        name: scenario.name,
        elapsed: started.elapsed(),
        result,
    };
    match &outcome.result {
        Ok(()) => println!(
            "PASS {:<28} {:>7.2}s",
            outcome.name,
            outcome.elapsed.as_secs_f64()
        ),
        Err(e) => println!(
            "FAIL {:<28} {:>7.2}s  {e}",
            outcome.name,
            outcome.elapsed.as_secs_f64()
        ),
    }
    outcome
}

/// Runs `scenarios`: shared-safe ones `parallel` at a time, then the exclusive ones alone.
pub async fn run(tb: &Testbed, scenarios: Vec<Scenario>, parallel: usize) -> Vec<Outcome> {
    let (exclusive, shared): (Vec<_>, Vec<_>) = scenarios.into_iter().partition(|s| s.exclusive);
    let mut outcomes = Vec::new();
    let mut pending = shared.into_iter();
    let mut running = JoinSet::new();
    loop {
        while running.len() < parallel.max(1) {
            let Some(scenario) = pending.next() else {
                break;
            };
            running.spawn(run_one(tb.clone(), scenario));
        }
        let Some(done) = running.join_next().await else {
            break;
        };
        match done {
            Ok(outcome) => outcomes.push(outcome),
            Err(e) => println!("FAIL scenario task panicked: {e}"),
        }
    }
    for scenario in exclusive {
        outcomes.push(run_one(tb.clone(), scenario).await);
    }
    outcomes
}
