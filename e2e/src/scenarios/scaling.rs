//! Scaling on concurrency and on request rate; InterceptorRoute with a user-written ScaledObject.

use std::time::Duration;

use futures::FutureExt;
use http_add_on_testkit::build;
use http_add_on_types::crd::{InterceptorRoute, ScaledObject};
use serde_json::json;

use super::{check, wait_route_known};
use crate::app::{self, App};
use crate::http::HttpClient;
use crate::load::{Load, Target};
use crate::runner::Scenario;
use crate::sim::{ADDON_NAMESPACE, SCALER_SERVICE};
use crate::testbed::Testbed;

pub(super) fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "concurrency-scaling",
            timeout: Duration::from_secs(120),
            exclusive: false,
            run: |tb, ns| concurrency_scaling(tb, ns).boxed(),
        },
        Scenario {
            name: "rate-scaling",
            timeout: Duration::from_secs(120),
            exclusive: false,
            run: |tb, ns| rate_scaling(tb, ns).boxed(),
        },
        Scenario {
            name: "interceptor-route",
            timeout: Duration::from_secs(90),
            exclusive: false,
            run: |tb, ns| interceptor_route(tb, ns).boxed(),
        },
        Scenario {
            name: "both-metrics-scaling",
            timeout: Duration::from_secs(150),
            exclusive: false,
            run: |tb, ns| both_metrics_scaling(tb, ns).boxed(),
        },
    ]
}

/// Sustained load at ≈ 3× the concurrency target → 3 replicas; load stops → back to 0 after
/// `scaledownPeriod`.
async fn concurrency_scaling(tb: Testbed, ns: String) -> anyhow::Result<()> {
    let app = App::new(&ns, "app").response_delay("200ms");
    app.deploy(&tb).await?;
    let host = format!("{ns}.test");
    let spec = json!({"scalingMetric": {"concurrency": {"targetValue": 4}}, "replicas": {"min": 0, "max": 5}, "scaledownPeriod": 3});
    app::apply_http_scaled_object(&tb, app::http_scaled_object(&app, &[&host], spec)).await?;
    wait_route_known(&tb, &format!("{ns}/app")).await?;
    let target = Target {
        proxy: tb.proxy,
        host: host.clone(),
        path: "/".into(),
    };
    let load = Load::start(target, 12, Duration::ZERO, 1_000_000);
    let reached = app::wait_replicas(
        &tb,
        &ns,
        "app",
        "3 replicas under load",
        Duration::from_secs(60),
        |r| r >= 3,
    )
    .await;
    let report = load.stop().await;
    let reached = reached?;
    check(reached <= 5, || format!("scaled to {reached}, above max 5"))?;
    check(report.failed() == 0, || {
        format!(
            "{} of {} requests failed: {:?}",
            report.failed(),
            report.total(),
            report.errors
        )
    })?;
    app::wait_replicas(
        &tb,
        &ns,
        "app",
        "scale back to 0 after the load",
        Duration::from_secs(45),
        |r| r == 0,
    )
    .await?;
    Ok(())
}

/// A steady request rate above the `requestRate` target scales the app out.
async fn rate_scaling(tb: Testbed, ns: String) -> anyhow::Result<()> {
    let app = App::new(&ns, "app");
    app.deploy(&tb).await?;
    let host = format!("{ns}.test");
    let spec = json!({
        "scalingMetric": {"requestRate": {"targetValue": 10, "window": "10s", "granularity": "1s"}},
        "replicas": {"min": 0, "max": 4}, "scaledownPeriod": 3
    });
    app::apply_http_scaled_object(&tb, app::http_scaled_object(&app, &[&host], spec)).await?;
    wait_route_known(&tb, &format!("{ns}/app")).await?;
    // 4 workers pausing 50 ms: roughly 60-80 requests/s, several times the target of 10/s.
    let target = Target {
        proxy: tb.proxy,
        host,
        path: "/".into(),
    };
    let load = Load::start(target, 4, Duration::from_millis(50), 1_000_000);
    let reached = app::wait_replicas(
        &tb,
        &ns,
        "app",
        "2+ replicas from the request rate",
        Duration::from_secs(60),
        |r| r >= 2,
    )
    .await;
    let report = load.stop().await;
    reached?;
    check(report.failed() == 0, || {
        format!(
            "{} of {} requests failed: {:?}",
            report.failed(),
            report.total(),
            report.errors
        )
    })?;
    Ok(())
}

/// The scaling metrics of [`interceptor_route`]'s route.
pub(crate) fn route_metrics() -> serde_json::Value {
    json!({"concurrency": {"targetValue": 5}, "requestRate": {"targetValue": 20, "window": "10s"}})
}

/// The scaling metrics of [`both_metrics_scaling`]'s route, by `concurrency` and a rate target
/// well above its load.
pub(crate) fn both_metrics(concurrency: usize) -> serde_json::Value {
    json!({
        "concurrency": {"targetValue": concurrency},
        "requestRate": {"targetValue": 50, "window": "10s", "granularity": "1s"}
    })
}

/// An InterceptorRoute `app` for `host` with `metrics` and the ScaledObject a user writes for
/// it (up to `max` replicas, polled every `polling` seconds, streamed by the scaler).
pub(crate) fn user_route(
    ns: &str,
    host: &str,
    metrics: serde_json::Value,
    max: i32,
    polling: i32,
) -> [serde_json::Value; 2] {
    let route = build::interceptor_route("app")
        .namespace(ns)
        .hosts(&[host])
        .spec(json!({"target": {"service": "app", "port": null, "portName": "http"}}))
        .scaling_metric(metrics)
        .json();
    let scaled_object = json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": "app", "namespace": ns},
        "spec": {
            "scaleTargetRef": {"name": "app"},
            "minReplicaCount": 0, "maxReplicaCount": max, "cooldownPeriod": 3,
            "pollingInterval": polling,
            "triggers": [{"type": "external-push", "metadata": {
                "scalerAddress": format!("{SCALER_SERVICE}.{ADDON_NAMESPACE}:9090"),
                "interceptorRoute": "app"
            }}]
        }
    });
    [route, scaled_object]
}

/// An InterceptorRoute with both metrics and a ScaledObject written by the user: a cold request
/// is served and the app scales.
async fn interceptor_route(tb: Testbed, ns: String) -> anyhow::Result<()> {
    let app = App::new(&ns, "app").startup_delay("300ms");
    app.deploy(&tb).await?;
    let host = format!("{ns}.test");
    let [route, scaled_object] = user_route(&ns, &host, route_metrics(), 3, 2);
    app::apply::<InterceptorRoute>(&tb, &ns, "app", route).await?;
    app::apply::<ScaledObject>(&tb, &ns, "app", scaled_object).await?;
    wait_route_known(&tb, &format!("{ns}/app")).await?;
    let reply = HttpClient::default().get(tb.proxy, &host, "/", &[]).await?;
    check(
        reply.status == 200 && reply.cold_start() == Some(true),
        || {
            format!(
                "cold request: {} cold={:?}: {}",
                reply.status,
                reply.cold_start(),
                reply.text()
            )
        },
    )?;
    app::wait_replicas(
        &tb,
        &ns,
        "app",
        "the app to scale up",
        Duration::from_secs(10),
        |r| r >= 1,
    )
    .await?;
    app::wait_replicas(
        &tb,
        &ns,
        "app",
        "the app to scale back to 0",
        Duration::from_secs(45),
        |r| r == 0,
    )
    .await?;
    Ok(())
}

/// An InterceptorRoute with both metrics under steady load that needs exactly 3 replicas by
/// concurrency and 1 by rate: the app settles at 3, never more (each HPA metric gets only its
/// own value; answering both made the HPA add them up and over-scale).
async fn both_metrics_scaling(tb: Testbed, ns: String) -> anyhow::Result<()> {
    const WORKERS: usize = 12;
    const CONCURRENCY_TARGET: usize = 4;
    const WANT: i32 = (WORKERS / CONCURRENCY_TARGET) as i32;
    const MAX: i32 = 8;
    // Each worker has one request in flight taking ≥ 500 ms: concurrency ≤ 12 (→ 3 replicas),
    // rate ≤ 24/s, well under the rate target of 50 (→ 1 replica). The sum of both values,
    // ≈ 36, over the concurrency target would ask for 9, capped at MAX.
    let app = App::new(&ns, "app").response_delay("500ms");
    app.deploy(&tb).await?;
    let host = format!("{ns}.test");
    let [route, scaled_object] = user_route(&ns, &host, both_metrics(CONCURRENCY_TARGET), MAX, 1);
    app::apply::<InterceptorRoute>(&tb, &ns, "app", route).await?;
    app::apply::<ScaledObject>(&tb, &ns, "app", scaled_object).await?;
    wait_route_known(&tb, &format!("{ns}/app")).await?;
    let target = Target {
        proxy: tb.proxy,
        host,
        path: "/".into(),
    };
    let load = Load::start(target, WORKERS, Duration::ZERO, 1_000_000);
    let outcome = settle_at(&tb, &ns, &load, WANT).await;
    let report = load.stop().await;
    outcome?;
    check(report.failed() == 0, || {
        format!(
            "{} of {} requests failed: {:?}",
            report.failed(),
            report.total(),
            report.errors
        )
    })?;
    Ok(())
}

/// Waits until the app has `want` replicas, then keeps watching while `load` sends 300 more
/// requests (≥ 6 s of steady load, several polls): any count above `want` fails.
async fn settle_at(tb: &Testbed, ns: &str, load: &Load, want: i32) -> anyhow::Result<()> {
    let reached = app::wait_replicas(
        tb,
        ns,
        "app",
        &format!("{want} replicas under load"),
        Duration::from_secs(60),
        |r| r >= want,
    )
    .await?;
    check(reached == want, || {
        format!("scaled to {reached} replicas; the load needs exactly {want}")
    })?;
    let until_sent = load.sent() + 300;
    let highest = crate::wait::until(
        "300 more requests of steady load",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async {
            let (desired, _) = app::replicas(tb, ns, "app").await?;
            Ok((desired > want || load.sent() >= until_sent).then_some(desired))
        },
    )
    .await?;
    check(highest == want, || {
        format!("{highest} replicas under steady load that needs exactly {want}")
    })
}
