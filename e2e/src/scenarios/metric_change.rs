//! A route's scaling metric changes under load and the HPA follows, with nothing deleted
//! (upstream's open #1656): the scaler marks the ScaledObject's HPA so KEDA rebuilds it from
//! the new metric specs.

use std::time::Duration;

use futures::FutureExt;
use http_add_on_types::crd::{InterceptorRoute, ScaledObject};
use serde_json::json;

use super::scaling::user_route;
use super::{check, wait_route_known};
use crate::app::{self, App};
use crate::load::{Load, Target};
use crate::runner::Scenario;
use crate::testbed::Testbed;

pub(super) fn scenarios() -> Vec<Scenario> {
    vec![Scenario {
        name: "scaling-metric-change",
        timeout: Duration::from_secs(180),
        exclusive: false,
        run: |tb, ns| scaling_metric_change(tb, ns).boxed(),
    }]
}

/// Twelve workers, one request each in flight taking ≥ 500 ms: concurrency ≈ 12, rate ≤ 24/s.
/// Concurrency target 12 → 1 replica; the route's target becomes 4 → 3 replicas; the route
/// switches to request rate with target 4 → ≥ 5 replicas. Without the HPA rebuild the first
/// change leaves 1 replica (the HPA still divides by 12) and the second holds still (the HPA
/// asks for a metric the route no longer has).
async fn scaling_metric_change(tb: Testbed, ns: String) -> anyhow::Result<()> {
    const WORKERS: usize = 12;
    const MAX: i32 = 8;
    let app = App::new(&ns, "app").response_delay("500ms");
    app.deploy(&tb).await?;
    let host = format!("{ns}.test");
    let route_with = |metric: serde_json::Value| user_route(&ns, &host, metric, MAX, 1);
    let [route, scaled_object] = route_with(json!({"concurrency": {"targetValue": 12}}));
    app::apply::<InterceptorRoute>(&tb, &ns, "app", route).await?;
    app::apply::<ScaledObject>(&tb, &ns, "app", scaled_object).await?;
    wait_route_known(&tb, &format!("{ns}/app")).await?;
    let target = Target {
        proxy: tb.proxy,
        host: host.clone(),
        path: "/".into(),
    };
    let load = Load::start(target, WORKERS, Duration::ZERO, 1_000_000);
    let outcome = async {
        let replicas = |what: &'static str, pred: fn(i32) -> bool| {
            app::wait_replicas(&tb, &ns, "app", what, Duration::from_secs(60), pred)
        };
        let first = replicas("1 replica at concurrency target 12", |r| r >= 1).await?;
        check(first == 1, || {
            format!("{first} replicas at concurrency target 12; want 1")
        })?;

        let [route, _] = route_with(json!({"concurrency": {"targetValue": 4}}));
        app::apply::<InterceptorRoute>(&tb, &ns, "app", route).await?;
        let second = replicas("3 replicas after the target became 4", |r| r >= 3).await?;
        check(second == 3, || {
            format!("{second} replicas at concurrency target 4; want 3")
        })?;

        let rate = json!({"requestRate": {"targetValue": 4, "window": "10s", "granularity": "1s"}});
        let [route, _] = route_with(rate);
        app::apply::<InterceptorRoute>(&tb, &ns, "app", route).await?;
        replicas("≥ 5 replicas after switching to request rate", |r| r >= 5).await?;
        anyhow::Ok(())
    }
    .await;
    let report = load.stop().await;
    outcome?;
    check(report.failed() == 0, || {
        format!(
            "{} of {} requests failed: {:?}",
            report.failed(),
            report.total(),
            report.errors
        )
    })
}
