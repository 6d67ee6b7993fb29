//! No request lost: an interceptor terminated under load, and load ramping across scale-up and
//! scale-down.

use std::time::Duration;

use futures::FutureExt;
use serde_json::json;

use super::{check, wait_route_known, wait_status};
use crate::app::{self, App};
use crate::load::{Load, LoadReport, Target};
use crate::runner::Scenario;
use crate::testbed::Testbed;

pub(super) fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "no-request-lost",
            timeout: Duration::from_secs(240),
            exclusive: true,
            run: |tb, ns| no_request_lost(tb, ns).boxed(),
        },
        // Last: it leaves one interceptor fewer.
        Scenario {
            name: "interceptor-sigterm",
            timeout: Duration::from_secs(120),
            exclusive: true,
            run: |tb, ns| interceptor_sigterm(tb, ns).boxed(),
        },
    ]
}

fn assert_all_ok(report: &LoadReport, what: &str) -> anyhow::Result<()> {
    check(report.total() > 0 && report.failed() == 0, || {
        format!(
            "{what}: {} of {} requests failed ({:?}): {:?}",
            report.failed(),
            report.total(),
            report.by_status,
            report.errors
        )
    })
}

/// Steady load through two interceptors while one gets SIGTERM: zero failed requests, and the
/// terminated interceptor exits 0.
async fn interceptor_sigterm(tb: Testbed, ns: String) -> anyhow::Result<()> {
    check(tb.control.interceptor_count() >= 2, || {
        "needs two interceptors".into()
    })?;
    let app = App::new(&ns, "app").replicas(1);
    app.deploy(&tb).await?;
    let host = format!("{ns}.test");
    let spec = json!({"replicas": {"min": 1, "max": 2}});
    app::apply_http_scaled_object(&tb, app::http_scaled_object(&app, &[&host], spec)).await?;
    wait_route_known(&tb, &format!("{ns}/app")).await?;
    wait_status(&tb, &host, "/", 200, Duration::from_secs(30)).await?;

    let target = Target {
        proxy: tb.proxy,
        host,
        path: "/delay/20ms".into(),
    };
    let load = Load::start(target, 8, Duration::ZERO, 1_000_000);
    let exit = tb.control.terminate_interceptor(0).await;
    // Keep the load on the remaining interceptor for a moment after the exit.
    let before = load.sent();
    crate::wait::until(
        "more requests after the interceptor exited",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async { Ok((load.sent() > before + 200).then_some(())) },
    )
    .await?;
    let report = load.stop().await;
    let exit = exit?;
    check(exit.contains("exit status: 0"), || {
        format!("the interceptor exited with {exit}")
    })?;
    assert_all_ok(&report, "under SIGTERM")
}

/// 10 000 requests while load ramps up (0 → N replicas) and down (N → 0, then a cold start
/// again): every one answered 2xx.
async fn no_request_lost(tb: Testbed, ns: String) -> anyhow::Result<()> {
    const TOTAL: u64 = 10_000;
    let app = App::new(&ns, "app")
        .startup_delay("300ms")
        .response_delay("100ms");
    app.deploy(&tb).await?;
    let host = format!("{ns}.test");
    let spec = json!({"scalingMetric": {"concurrency": {"targetValue": 4}}, "replicas": {"min": 0, "max": 5}, "scaledownPeriod": 2});
    app::apply_http_scaled_object(&tb, app::http_scaled_object(&app, &[&host], spec)).await?;
    wait_route_known(&tb, &format!("{ns}/app")).await?;
    let target = Target {
        proxy: tb.proxy,
        host,
        path: "/".into(),
    };
    let mut sent = 0u64;

    // From zero with a trickle, then 16 workers (≈ 4× the target) until the app scaled out.
    let mut load = Load::start(target.clone(), 2, Duration::ZERO, 100);
    let report = load.finish().await;
    assert_all_ok(&report, "first requests from zero")?;
    sent += report.total();
    let load = Load::start(target.clone(), 16, Duration::ZERO, 7_000);
    let scaled = app::wait_replicas(
        &tb,
        &ns,
        "app",
        "the load to scale the app out",
        Duration::from_secs(60),
        |r| r >= 3,
    )
    .await;
    let report = load.stop().await;
    assert_all_ok(&report, "ramp up with 16 workers")?;
    sent += report.total();
    scaled?;
    // Ramp down to silence: the app scales back to zero.
    let mut load = Load::start(target.clone(), 1, Duration::from_millis(20), 100);
    let report = load.finish().await;
    assert_all_ok(&report, "ramp down")?;
    sent += report.total();
    app::wait_replicas(
        &tb,
        &ns,
        "app",
        "scale to zero after the load",
        Duration::from_secs(60),
        |r| r == 0,
    )
    .await?;
    // And back up from zero for the rest of the 10 000.
    let mut load = Load::start(target, 16, Duration::ZERO, TOTAL - sent);
    let report = load.finish().await;
    assert_all_ok(&report, "second cold start")?;
    sent += report.total();
    check(sent == TOTAL, || {
        format!("sent {sent} requests instead of {TOTAL}")
    })
}
