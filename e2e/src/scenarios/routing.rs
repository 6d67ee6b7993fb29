//! Routing by host, wildcard, catch-all, path prefix, header and port name; route updates and
//! deletion.

use std::time::{Duration, Instant};

use futures::FutureExt;
use http_add_on_testkit::build;
use http_add_on_types::crd::HTTPScaledObject;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

use super::{check, wait_route_gone, wait_route_known, wait_status};
use crate::app::{self, App};
use crate::http::HttpClient;
use crate::runner::Scenario;
use crate::testbed::Testbed;

pub(super) fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "routing",
            timeout: Duration::from_secs(90),
            exclusive: false,
            run: |tb, ns| routing(tb, ns).boxed(),
        },
        Scenario {
            name: "route-update",
            timeout: Duration::from_secs(90),
            exclusive: false,
            run: |tb, ns| route_update(tb, ns).boxed(),
        },
    ]
}

/// Deploys an always-on app with an HTTPScaledObject built from `spec`.
async fn routed_app(
    tb: &Testbed,
    ns: &str,
    name: &str,
    hosts: &[&str],
    spec: serde_json::Value,
) -> anyhow::Result<()> {
    let app = App::new(ns, name).replicas(1);
    app.deploy(tb).await?;
    let mut extra = json!({"replicas": {"min": 1, "max": 2}});
    build::merge(&mut extra, spec);
    app::apply_http_scaled_object(tb, app::http_scaled_object(&app, hosts, extra)).await?;
    wait_route_known(tb, &format!("{ns}/{name}")).await?;
    Ok(())
}

/// Asserts a request is answered 200 by a pod of `deployment`.
async fn expect_pod(
    tb: &Testbed,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    deployment: &str,
) -> anyhow::Result<()> {
    let reply = HttpClient::default()
        .get(tb.proxy, host, path, headers)
        .await?;
    let pod = reply.pod().unwrap_or_default();
    check(
        reply.status == 200 && pod.starts_with(&format!("{deployment}-")),
        || {
            format!(
                "{host}{path} {headers:?}: expected {deployment}, got {} from {pod:?}: {}",
                reply.status,
                reply.text()
            )
        },
    )
}

/// Two hosts, a wildcard host, catch-all, longest path prefix, header match and `portName`.
async fn routing(tb: Testbed, ns: String) -> anyhow::Result<()> {
    let a = format!("a.{ns}.test");
    let b = format!("b.{ns}.test");
    let wild = format!("*.wild.{ns}.test");
    let catch_path = format!("/{ns}-catch-all");
    routed_app(&tb, &ns, "app-a", &[&a], json!({})).await?;
    routed_app(
        &tb,
        &ns,
        "app-b",
        &[&b],
        json!({"scaleTargetRef": {"port": null, "portName": "http"}}),
    )
    .await?;
    routed_app(&tb, &ns, "app-wild", &[&wild], json!({})).await?;
    routed_app(
        &tb,
        &ns,
        "app-api",
        &[&a],
        json!({"pathPrefixes": ["/api"]}),
    )
    .await?;
    routed_app(
        &tb,
        &ns,
        "app-api-v2",
        &[&a],
        json!({"pathPrefixes": ["/api/v2"]}),
    )
    .await?;
    routed_app(
        &tb,
        &ns,
        "app-canary",
        &[&a],
        json!({"pathPrefixes": ["/api"], "headers": [{"name": "X-Canary", "value": "yes"}]}),
    )
    .await?;
    routed_app(
        &tb,
        &ns,
        "app-catch",
        &[],
        json!({"pathPrefixes": [catch_path]}),
    )
    .await?;
    for name in [
        "app-a",
        "app-b",
        "app-wild",
        "app-api",
        "app-api-v2",
        "app-canary",
        "app-catch",
    ] {
        app::wait_replicas(
            &tb,
            &ns,
            name,
            &format!("{name} to run"),
            Duration::from_secs(30),
            |r| r >= 1,
        )
        .await?;
    }

    expect_pod(&tb, &a, "/", &[], "app-a").await?;
    expect_pod(&tb, &b, "/anything", &[], "app-b").await?;
    expect_pod(&tb, &format!("x.wild.{ns}.test"), "/", &[], "app-wild").await?;
    expect_pod(&tb, &format!("y.z.wild.{ns}.test"), "/", &[], "app-wild").await?;
    expect_pod(&tb, &a, "/api/users", &[], "app-api").await?;
    expect_pod(&tb, &a, "/api/v2/users", &[], "app-api-v2").await?;
    expect_pod(&tb, &a, "/api/users", &[("X-Canary", "yes")], "app-canary").await?;
    expect_pod(&tb, &a, "/api/users", &[("X-Canary", "no")], "app-api").await?;
    expect_pod(
        &tb,
        &format!("unknown.{ns}.test"),
        &format!("{catch_path}/x"),
        &[],
        "app-catch",
    )
    .await?;
    let miss = HttpClient::default()
        .get(
            tb.proxy,
            &format!("unknown.{ns}.test"),
            "/nothing-here",
            &[],
        )
        .await?;
    check(miss.status == 404, || {
        format!("unrouted request got {}", miss.status)
    })?;
    check(miss.text().contains(&format!("unknown.{ns}.test")), || {
        format!("404 body should name the host: {:?}", miss.text())
    })?;
    Ok(())
}

/// Hosts changed → new host served, old host 404 within 1 s; deletion → 404 and the ScaledObject
/// is gone.
async fn route_update(tb: Testbed, ns: String) -> anyhow::Result<()> {
    let old = format!("old.{ns}.test");
    let new = format!("new.{ns}.test");
    routed_app(&tb, &ns, "app", &[&old], json!({})).await?;
    app::wait_replicas(
        &tb,
        &ns,
        "app",
        "app to run",
        Duration::from_secs(30),
        |r| r >= 1,
    )
    .await?;
    wait_status(&tb, &old, "/", 200, Duration::from_secs(20)).await?;
    app::wait_scaled_object(&tb, &ns, "app", true, Duration::from_secs(20)).await?;

    let api: Api<HTTPScaledObject> = Api::namespaced(tb.client.clone(), &ns);
    let changed = Instant::now();
    api.patch(
        "app",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"hosts": [new]}})),
    )
    .await?;
    wait_status(&tb, &new, "/", 200, Duration::from_secs(5)).await?;
    wait_status(&tb, &old, "/", 404, Duration::from_secs(5)).await?;
    let took = changed.elapsed();
    check(took <= Duration::from_secs(1), || {
        format!("the update took {took:?} to take effect (goal: within 1s)")
    })?;

    api.delete("app", &DeleteParams::default()).await?;
    wait_route_gone(&tb, &format!("{ns}/app")).await?;
    wait_status(&tb, &new, "/", 404, Duration::from_secs(5)).await?;
    app::wait_scaled_object(&tb, &ns, "app", false, Duration::from_secs(20)).await?;
    Ok(())
}
