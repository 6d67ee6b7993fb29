//! Invalid objects and the skip annotation.

use std::time::Duration;

use futures::FutureExt;
use http_add_on_types::crd::HTTPScaledObject;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::check;
use crate::app::{self, App};
use crate::runner::Scenario;
use crate::testbed::Testbed;
use crate::wait;

const SKIP: &str = "httpscaledobject.keda.sh/skip-scaledobject-creation";

pub(super) fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "skip-annotation",
            timeout: Duration::from_secs(60),
            exclusive: false,
            run: |tb, ns| skip_annotation(tb, ns).boxed(),
        },
        Scenario {
            name: "invalid-objects",
            timeout: Duration::from_secs(60),
            exclusive: false,
            run: |tb, ns| invalid_objects(tb, ns).boxed(),
        },
    ]
}

/// The `Ready` condition's (status, reason) of an HTTPScaledObject.
async fn ready_condition(
    tb: &Testbed,
    ns: &str,
    name: &str,
) -> anyhow::Result<Option<(String, String, Option<i64>)>> {
    let api: Api<HTTPScaledObject> = Api::namespaced(tb.client.clone(), ns);
    let hso = api.get(name).await?;
    Ok(hso
        .status
        .unwrap_or_default()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status, c.reason, c.observed_generation)))
}

/// Waits until the object's `Ready` condition for its current generation satisfies `pred`.
async fn wait_ready(
    tb: &Testbed,
    ns: &str,
    name: &str,
    what: &str,
    pred: impl Fn(&str, &str) -> bool,
) -> anyhow::Result<(String, String)> {
    let api: Api<HTTPScaledObject> = Api::namespaced(tb.client.clone(), ns);
    wait::until(
        what,
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async {
            let generation = api.get(name).await?.metadata.generation;
            Ok(ready_condition(tb, ns, name)
                .await?
                .filter(|(status, reason, observed)| {
                    *observed == generation && pred(status, reason)
                })
                .map(|(status, reason, _)| (status, reason)))
        },
    )
    .await
}

/// `skip-scaledobject-creation: "true"` → no ScaledObject; removing it creates one; adding it
/// back deletes it.
async fn skip_annotation(tb: Testbed, ns: String) -> anyhow::Result<()> {
    let app = App::new(&ns, "app");
    app.deploy(&tb).await?;
    let mut manifest = app::http_scaled_object(&app, &[&format!("{ns}.test")], json!({}));
    manifest["metadata"]["annotations"] = json!({SKIP: "true"});
    app::apply_http_scaled_object(&tb, manifest.clone()).await?;
    wait_ready(
        &tb,
        &ns,
        "app",
        "the skipped object to be reconciled",
        |s, _| s == "True",
    )
    .await?;
    let scaled_objects: Api<http_add_on_types::crd::ScaledObject> =
        Api::namespaced(tb.client.clone(), &ns);
    check(scaled_objects.get_opt("app").await?.is_none(), || {
        "a ScaledObject was created despite the skip annotation".into()
    })?;

    let hsos: Api<HTTPScaledObject> = Api::namespaced(tb.client.clone(), &ns);
    hsos.patch(
        "app",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {SKIP: null}}})),
    )
    .await?;
    app::wait_scaled_object(&tb, &ns, "app", true, Duration::from_secs(20)).await?;
    hsos.patch(
        "app",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {SKIP: "true"}}})),
    )
    .await?;
    app::wait_scaled_object(&tb, &ns, "app", false, Duration::from_secs(20)).await?;
    Ok(())
}

/// `port` and `portName` both set → rejected by the API server with the CEL message; both scaling
/// metrics → `Ready=False, reason=InvalidSpec`.
async fn invalid_objects(tb: Testbed, ns: String) -> anyhow::Result<()> {
    let app = App::new(&ns, "app");
    app.deploy(&tb).await?;
    let both_ports = app::http_scaled_object(
        &app,
        &[&format!("{ns}.test")],
        json!({"scaleTargetRef": {"portName": "http"}}),
    );
    match app::apply_http_scaled_object(&tb, both_ports).await {
        Ok(_) => anyhow::bail!("an HTTPScaledObject with both port and portName was accepted"),
        Err(e) => {
            let text = format!("{e:#}");
            check(
                text.contains("must define either the 'portName' or the 'port'"),
                || format!("rejection does not carry the CEL message: {text}"),
            )?;
        }
    }
    let both_metrics = app::http_scaled_object(
        &app,
        &[&format!("{ns}.test")],
        json!({"scalingMetric": {"concurrency": {"targetValue": 10}, "requestRate": {"targetValue": 10}}}),
    );
    app::apply_http_scaled_object(&tb, both_metrics).await?;
    let (status, reason) = wait_ready(&tb, &ns, "app", "an InvalidSpec condition", |_, reason| {
        reason == "InvalidSpec"
    })
    .await?;
    check(status == "False", || {
        format!("Ready={status} with reason {reason}")
    })?;
    Ok(())
}
