//! Cold start, concurrent cold start, readiness timeout and fallback.

use std::time::{Duration, Instant};

use futures::FutureExt;
use serde_json::json;

use super::{check, wait_route_known};
use crate::app::{self, App};
use crate::http::HttpClient;
use crate::runner::Scenario;
use crate::testbed::Testbed;

pub(super) fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "cold-start",
            timeout: Duration::from_secs(60),
            exclusive: false,
            run: |tb, ns| cold_start(tb, ns).boxed(),
        },
        Scenario {
            name: "cold-start-burst",
            timeout: Duration::from_secs(90),
            exclusive: false,
            run: |tb, ns| cold_start_burst(tb, ns).boxed(),
        },
        Scenario {
            name: "readiness-timeout",
            timeout: Duration::from_secs(60),
            exclusive: false,
            run: |tb, ns| readiness_timeout(tb, ns).boxed(),
        },
    ]
}

/// App at 0 replicas with a 1 s start-up delay: the first request is held and answered 200 with
/// the cold-start header, and the Deployment went to 1 replica.
async fn cold_start(tb: Testbed, ns: String) -> anyhow::Result<()> {
    let app = App::new(&ns, "app").startup_delay("1s");
    app.deploy(&tb).await?;
    let host = format!("{ns}.test");
    app::apply_http_scaled_object(&tb, app::http_scaled_object(&app, &[&host], json!({}))).await?;
    wait_route_known(&tb, &format!("{ns}/app")).await?;
    check(app::replicas(&tb, &ns, "app").await?.0 == 0, || {
        "app should start at 0 replicas".into()
    })?;

    let started = Instant::now();
    let reply = HttpClient::default()
        .get(tb.proxy, &host, "/hello", &[])
        .await?;
    let took = started.elapsed();
    check(reply.status == 200, || {
        format!("cold request got {}: {}", reply.status, reply.text())
    })?;
    check(reply.cold_start() == Some(true), || {
        format!("cold-start header was {:?}", reply.cold_start())
    })?;
    check(took >= Duration::from_millis(900), || {
        format!("answered in {took:?}, before the 1s start-up delay")
    })?;
    let (desired, ready) = app::replicas(&tb, &ns, "app").await?;
    check(desired >= 1 && ready >= 1, || {
        format!("replicas desired={desired} ready={ready}")
    })?;
    // A warm request is not a cold start.
    let warm = HttpClient::default()
        .get(tb.proxy, &host, "/again", &[])
        .await?;
    check(
        warm.status == 200 && warm.cold_start() == Some(false),
        || format!("warm request: {} cold={:?}", warm.status, warm.cold_start()),
    )?;
    Ok(())
}

/// 200 concurrent requests arriving at a scaled-to-zero app all succeed.
async fn cold_start_burst(tb: Testbed, ns: String) -> anyhow::Result<()> {
    let app = App::new(&ns, "app").startup_delay("500ms");
    app.deploy(&tb).await?;
    let host = format!("{ns}.test");
    app::apply_http_scaled_object(&tb, app::http_scaled_object(&app, &[&host], json!({}))).await?;
    wait_route_known(&tb, &format!("{ns}/app")).await?;
    let http = HttpClient::default();
    let requests = (0..200).map(|i| {
        let (http, host) = (http.clone(), host.clone());
        let proxy = tb.proxy;
        async move { http.get(proxy, &host, &format!("/r/{i}"), &[]).await }
    });
    let replies = futures::future::join_all(requests).await;
    let failures: Vec<String> = replies
        .iter()
        .filter_map(|r| match r {
            Ok(reply) if reply.status == 200 => None,
            Ok(reply) => Some(format!("{}: {}", reply.status, reply.text().trim())),
            Err(e) => Some(format!("{e:#}")),
        })
        .collect();
    check(failures.is_empty(), || {
        format!(
            "{} of 200 failed, e.g. {:?}",
            failures.len(),
            &failures[..failures.len().min(3)]
        )
    })
}

/// Without a fallback a target that never becomes ready in time gets 504; with
/// `coldStartTimeoutFailoverRef` the fallback Service answers.
async fn readiness_timeout(tb: Testbed, ns: String) -> anyhow::Result<()> {
    let slow = App::new(&ns, "slow").startup_delay("120s");
    slow.deploy(&tb).await?;
    let fallback = App::new(&ns, "fallback").replicas(1);
    fallback.deploy(&tb).await?;
    let host = format!("{ns}.test");
    let manifest = app::http_scaled_object(
        &slow,
        &[&host],
        json!({"timeouts": {"conditionWait": "1s"}}),
    );
    app::apply_http_scaled_object(&tb, manifest).await?;
    wait_route_known(&tb, &format!("{ns}/slow")).await?;
    let started = Instant::now();
    let reply = HttpClient::default().get(tb.proxy, &host, "/", &[]).await?;
    check(reply.status == 504, || {
        format!("expected 504, got {}: {}", reply.status, reply.text())
    })?;
    check(started.elapsed() < Duration::from_secs(10), || {
        format!("504 took {:?}", started.elapsed())
    })?;

    // A second slow app: real KEDA allows one ScaledObject per workload.
    let slow2 = App::new(&ns, "slow2").startup_delay("120s");
    slow2.deploy(&tb).await?;
    let other = format!("failover.{ns}.test");
    let manifest = app::http_scaled_object(
        &slow2,
        &[&other],
        json!({"coldStartTimeoutFailoverRef": {"service": "fallback", "port": 8080, "timeoutSeconds": 1}}),
    );
    app::apply_http_scaled_object(&tb, manifest).await?;
    wait_route_known(&tb, &format!("{ns}/slow2")).await?;
    app::wait_replicas(
        &tb,
        &ns,
        "fallback",
        "the fallback to be up",
        Duration::from_secs(20),
        |r| r >= 1,
    )
    .await?;
    let reply = super::wait_status(&tb, &other, "/", 200, Duration::from_secs(20)).await?;
    let pod = reply.pod().unwrap_or_default();
    check(pod.starts_with("fallback-"), || {
        format!("answered by {pod:?}, not the fallback")
    })
}
