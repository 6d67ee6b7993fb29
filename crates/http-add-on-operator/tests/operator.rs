//! The operator against the simulated API server: HTTPScaledObject → ScaledObject, status,
//! annotations, deletion, route conflicts, InterceptorRoutes, probes and metrics.

mod common;

use std::collections::BTreeMap;

use common::*;
use http_add_on_types::crd::http_scaled_object::{
    ORPHAN_SCALEDOBJECT_ANNOTATION, ReplicaStruct, SKIP_SCALEDOBJECT_CREATION_ANNOTATION,
};
use http_add_on_types::crd::{HTTPScaledObject, InterceptorRoute, ScaledObject};
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

#[tokio::test]
async fn create_makes_a_scaled_object_with_trigger_replicas_and_cooldown() {
    let sim = cluster().await;
    let op = operator(sim.client()).await;
    let hsos: Api<HTTPScaledObject> = Api::default_namespaced(sim.client());
    let sos: Api<ScaledObject> = Api::default_namespaced(sim.client());

    let mut obj = hso("app", &["app.example.com"]);
    obj.metadata.labels = Some(BTreeMap::from([("team".into(), "web".into())]));
    obj.metadata.annotations = Some(BTreeMap::from([("note".into(), "hello".into())]));
    obj.spec.replicas = Some(ReplicaStruct {
        min: Some(1),
        max: Some(5),
    });
    obj.spec.scaledown_period = Some(120);
    obj.spec.initial_cooldown_period = Some(30);
    hsos.create(&PostParams::default(), &obj).await.unwrap();

    let so = eventually("the ScaledObject", || async {
        sos.get_opt("app").await.ok().flatten()
    })
    .await;
    let trigger = &so.spec.triggers[0];
    assert_eq!(so.spec.triggers.len(), 1);
    assert_eq!(trigger.type_, "external-push");
    assert_eq!(
        trigger.metadata.get("scalerAddress").map(String::as_str),
        Some("keda-add-ons-http-external-scaler.keda:8091")
    );
    assert_eq!(
        trigger.metadata.get("httpScaledObject").map(String::as_str),
        Some("app")
    );
    assert_eq!(
        (so.spec.min_replica_count, so.spec.max_replica_count),
        (Some(1), Some(5))
    );
    assert_eq!(so.spec.cooldown_period, Some(120));
    assert_eq!(so.spec.initial_cooldown_period, Some(30));
    assert_eq!(so.spec.polling_interval, Some(15));
    assert_eq!(so.spec.scale_target_ref.name, "app");
    assert_eq!(so.spec.scale_target_ref.kind.as_deref(), Some("Deployment"));
    assert_eq!(
        so.spec
            .advanced
            .as_ref()
            .and_then(|a| a.restore_to_original_replica_count),
        Some(true)
    );
    assert_eq!(so.labels().get("team").map(String::as_str), Some("web"));
    assert_eq!(
        so.annotations().get("note").map(String::as_str),
        Some("hello")
    );
    let owner = &so.owner_references()[0];
    let live = hsos.get("app").await.unwrap();
    assert_eq!(owner.uid, live.uid().unwrap());
    assert_eq!(
        (owner.controller, owner.block_owner_deletion),
        (Some(true), Some(true))
    );
    assert!(
        so.managed_fields()
            .iter()
            .any(|m| m.manager.as_deref() == Some("keda-http-add-on-operator")),
        "applied with our field manager"
    );

    let live = hso_with_reason(&hsos, "app", "Reconciled").await;
    assert!(
        live.finalizers()
            .iter()
            .any(|f| f == "httpscaledobject.http.keda.sh")
    );
    let status = live.status.unwrap();
    assert_eq!(
        status.target_workload.as_deref(),
        Some("apps/v1/Deployment/app")
    );
    assert_eq!(status.target_service.as_deref(), Some("app:8080"));
    let cond = ready(&status.conditions).unwrap();
    assert_eq!(cond.status, "True");
    assert_eq!(cond.observed_generation, live.metadata.generation);

    // A Kubernetes Event records the transition.
    let events: Api<Event> = Api::default_namespaced(sim.client());
    eventually("a Reconciled event", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("Reconciled")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("app")
            })
            .then_some(())
    })
    .await;
    op.shutdown().await;
}

#[tokio::test]
async fn update_is_followed_and_observed_generation_tracks() {
    let sim = cluster().await;
    let op = operator(sim.client()).await;
    let hsos: Api<HTTPScaledObject> = Api::default_namespaced(sim.client());
    let sos: Api<ScaledObject> = Api::default_namespaced(sim.client());
    hsos.create(&PostParams::default(), &hso("app", &["app.example.com"]))
        .await
        .unwrap();
    let first = hso_with_reason(&hsos, "app", "Reconciled").await;
    let first_cond = ready(&first.status.as_ref().unwrap().conditions)
        .unwrap()
        .clone();

    let patch = json!({"spec": {"replicas": {"min": 2, "max": 9}, "scaledownPeriod": 42,
        "scaleTargetRef": {"portName": "http", "port": null}}});
    hsos.patch("app", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let generation = hsos.get("app").await.unwrap().metadata.generation;
    assert!(generation > first.metadata.generation);

    let so = eventually("the ScaledObject to follow", || async {
        let so = sos.get_opt("app").await.ok().flatten()?;
        (so.spec.max_replica_count == Some(9)).then_some(so)
    })
    .await;
    assert_eq!(so.spec.min_replica_count, Some(2));
    assert_eq!(so.spec.cooldown_period, Some(42));

    let updated = eventually("observedGeneration to follow", || async {
        let obj = hsos.get("app").await.ok()?;
        let cond = ready(&obj.status.as_ref()?.conditions)?.clone();
        (cond.observed_generation == generation).then_some(obj)
    })
    .await;
    let status = updated.status.unwrap();
    assert_eq!(status.target_service.as_deref(), Some("app:http"));
    let cond = ready(&status.conditions).unwrap();
    assert_eq!(cond.reason, "Reconciled");
    // Still ready: the transition time stays.
    assert_eq!(cond.last_transition_time, first_cond.last_transition_time);
    op.shutdown().await;
}

#[tokio::test]
async fn delete_removes_the_finalizer_and_the_scaled_object_is_collected() {
    let sim = cluster().await;
    let op = operator(sim.client()).await;
    let hsos: Api<HTTPScaledObject> = Api::default_namespaced(sim.client());
    let sos: Api<ScaledObject> = Api::default_namespaced(sim.client());
    hsos.create(&PostParams::default(), &hso("app", &[]))
        .await
        .unwrap();
    hso_with_reason(&hsos, "app", "Reconciled").await;
    eventually("the ScaledObject", || async {
        sos.get_opt("app").await.ok().flatten()
    })
    .await;

    hsos.delete("app", &DeleteParams::default()).await.unwrap();
    eventually("the HTTPScaledObject to be gone", || async {
        matches!(hsos.get_opt("app").await, Ok(None)).then_some(())
    })
    .await;
    eventually("the ScaledObject to be collected", || async {
        matches!(sos.get_opt("app").await, Ok(None)).then_some(())
    })
    .await;
    op.shutdown().await;
}

#[tokio::test]
async fn a_deleted_scaled_object_is_recreated() {
    let sim = cluster().await;
    let op = operator(sim.client()).await;
    let hsos: Api<HTTPScaledObject> = Api::default_namespaced(sim.client());
    let sos: Api<ScaledObject> = Api::default_namespaced(sim.client());
    hsos.create(&PostParams::default(), &hso("app", &[]))
        .await
        .unwrap();
    let first = eventually("the ScaledObject", || async {
        sos.get_opt("app").await.ok().flatten()
    })
    .await;
    sos.delete("app", &DeleteParams::default()).await.unwrap();
    eventually("a new ScaledObject", || async {
        let so = sos.get_opt("app").await.ok().flatten()?;
        (so.uid() != first.uid()).then_some(())
    })
    .await;
    op.shutdown().await;
}

#[tokio::test]
async fn skip_annotation_creates_none_and_deletes_an_owned_one() {
    let sim = cluster().await;
    let op = operator(sim.client()).await;
    let hsos: Api<HTTPScaledObject> = Api::default_namespaced(sim.client());
    let sos: Api<ScaledObject> = Api::default_namespaced(sim.client());

    let skipped = annotated(
        hso("skipped", &["a.test"]),
        &[(SKIP_SCALEDOBJECT_CREATION_ANNOTATION, "true")],
    );
    hsos.create(&PostParams::default(), &skipped).await.unwrap();
    hso_with_reason(&hsos, "skipped", "Reconciled").await;
    assert!(sos.get_opt("skipped").await.unwrap().is_none());

    hsos.create(&PostParams::default(), &hso("owned", &["b.test"]))
        .await
        .unwrap();
    eventually("the ScaledObject", || async {
        sos.get_opt("owned").await.ok().flatten()
    })
    .await;
    let patch =
        json!({"metadata": {"annotations": {SKIP_SCALEDOBJECT_CREATION_ANNOTATION: "true"}}});
    hsos.patch("owned", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually("the owned ScaledObject to be deleted", || async {
        matches!(sos.get_opt("owned").await, Ok(None)).then_some(())
    })
    .await;
    // The skip itself never created the first one either.
    assert!(sos.get_opt("skipped").await.unwrap().is_none());
    op.shutdown().await;
}

#[tokio::test]
async fn orphan_annotation_drops_the_owner_reference() {
    let sim = cluster().await;
    let op = operator(sim.client()).await;
    let hsos: Api<HTTPScaledObject> = Api::default_namespaced(sim.client());
    let sos: Api<ScaledObject> = Api::default_namespaced(sim.client());
    hsos.create(&PostParams::default(), &hso("app", &[]))
        .await
        .unwrap();
    eventually("an owned ScaledObject", || async {
        let so = sos.get_opt("app").await.ok().flatten()?;
        (!so.owner_references().is_empty()).then_some(())
    })
    .await;
    let patch = json!({"metadata": {"annotations": {ORPHAN_SCALEDOBJECT_ANNOTATION: "true"}}});
    hsos.patch("app", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually("the owner reference to be dropped", || async {
        let so = sos.get_opt("app").await.ok().flatten()?;
        so.owner_references().is_empty().then_some(())
    })
    .await;

    hsos.delete("app", &DeleteParams::default()).await.unwrap();
    eventually("the HTTPScaledObject to be gone", || async {
        matches!(hsos.get_opt("app").await, Ok(None)).then_some(())
    })
    .await;
    // Garbage collection must leave the orphan alone: once a sibling deleted later has been
    // collected, a collection pass has run since the orphan's owner went away.
    hsos.create(&PostParams::default(), &hso("sibling", &["s.test"]))
        .await
        .unwrap();
    eventually("the sibling's ScaledObject", || async {
        sos.get_opt("sibling").await.ok().flatten()
    })
    .await;
    hsos.delete("sibling", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the sibling's ScaledObject to be collected", || async {
        matches!(sos.get_opt("sibling").await, Ok(None)).then_some(())
    })
    .await;
    assert!(
        sos.get_opt("app").await.unwrap().is_some(),
        "the orphaned ScaledObject stays"
    );
    op.shutdown().await;
}

#[tokio::test]
async fn the_younger_of_two_conflicting_routes_waits_for_the_older() {
    let sim = cluster().await;
    let op = operator(sim.client()).await;
    let hsos: Api<HTTPScaledObject> = Api::default_namespaced(sim.client());
    let sos: Api<ScaledObject> = Api::default_namespaced(sim.client());
    // Names sort like their ages, so a tie in creation seconds resolves the same way.
    hsos.create(
        &PostParams::default(),
        &hso("a-older", &["shared.example.com"]),
    )
    .await
    .unwrap();
    hso_with_reason(&hsos, "a-older", "Reconciled").await;
    hsos.create(
        &PostParams::default(),
        &hso("b-younger", &["shared.example.com"]),
    )
    .await
    .unwrap();

    let loser = hso_with_reason(&hsos, "b-younger", "RouteConflict").await;
    let cond = ready(&loser.status.as_ref().unwrap().conditions)
        .unwrap()
        .clone();
    assert_eq!(cond.status, "False");
    assert!(cond.message.contains("default/a-older"), "{}", cond.message);
    // Decision: the loser still gets its ScaledObject.
    eventually("the loser's ScaledObject", || async {
        sos.get_opt("b-younger").await.ok().flatten()
    })
    .await;
    hso_with_reason(&hsos, "a-older", "Reconciled").await;

    hsos.delete("a-older", &DeleteParams::default())
        .await
        .unwrap();
    let winner = hso_with_reason(&hsos, "b-younger", "Reconciled").await;
    let cond = ready(&winner.status.as_ref().unwrap().conditions).unwrap();
    assert_eq!(cond.status, "True");
    op.shutdown().await;
}

#[tokio::test]
async fn a_conflict_clears_when_the_older_route_moves_away() {
    let sim = cluster().await;
    let op = operator(sim.client()).await;
    let hsos: Api<HTTPScaledObject> = Api::default_namespaced(sim.client());
    hsos.create(
        &PostParams::default(),
        &hso("a-older", &["shared.example.com"]),
    )
    .await
    .unwrap();
    hso_with_reason(&hsos, "a-older", "Reconciled").await;
    hsos.create(
        &PostParams::default(),
        &hso("b-younger", &["shared.example.com"]),
    )
    .await
    .unwrap();
    hso_with_reason(&hsos, "b-younger", "RouteConflict").await;
    let patch = json!({"spec": {"hosts": ["elsewhere.example.com"]}});
    hsos.patch("a-older", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    hso_with_reason(&hsos, "b-younger", "Reconciled").await;
    op.shutdown().await;
}

#[tokio::test]
async fn interceptor_routes_get_ready_and_conflict_with_http_scaled_objects() {
    let sim = cluster().await;
    let op = operator(sim.client()).await;
    let irs: Api<InterceptorRoute> = Api::default_namespaced(sim.client());
    let hsos: Api<HTTPScaledObject> = Api::default_namespaced(sim.client());
    let sos: Api<ScaledObject> = Api::default_namespaced(sim.client());

    irs.create(
        &PostParams::default(),
        &interceptor_route("a-route", "web.example.com"),
    )
    .await
    .unwrap();
    let route = ir_with_reason(&irs, "a-route", "Reconciled").await;
    let cond = ready(&route.status.as_ref().unwrap().conditions).unwrap();
    assert_eq!(cond.status, "True");
    assert_eq!(cond.observed_generation, route.metadata.generation);

    hsos.create(&PostParams::default(), &hso("b-app", &["web.example.com"]))
        .await
        .unwrap();
    let loser = hso_with_reason(&hsos, "b-app", "RouteConflict").await;
    assert!(
        ready(&loser.status.unwrap().conditions)
            .unwrap()
            .message
            .contains("default/a-route")
    );
    // No ScaledObject is ever made for an InterceptorRoute.
    assert!(sos.get_opt("a-route").await.unwrap().is_none());

    irs.delete("a-route", &DeleteParams::default())
        .await
        .unwrap();
    hso_with_reason(&hsos, "b-app", "Reconciled").await;

    // An invalid route is reported, and a younger InterceptorRoute loses to the HTTPScaledObject.
    let mut bad = interceptor_route("c-bad", "bad.example.com");
    bad.spec.timeouts = Some(Default::default());
    bad.spec.timeouts.as_mut().unwrap().request = Some("forever".into());
    irs.create(&PostParams::default(), &bad).await.unwrap();
    let bad = ir_with_reason(&irs, "c-bad", "InvalidSpec").await;
    assert!(
        ready(&bad.status.unwrap().conditions)
            .unwrap()
            .message
            .contains("timeouts.request")
    );
    irs.create(
        &PostParams::default(),
        &interceptor_route("d-late", "web.example.com"),
    )
    .await
    .unwrap();
    ir_with_reason(&irs, "d-late", "RouteConflict").await;
    op.shutdown().await;
}

#[tokio::test]
async fn an_invalid_object_is_reported_and_does_not_block_others() {
    let sim = cluster().await;
    let op = operator(sim.client()).await;
    let hsos: Api<HTTPScaledObject> = Api::default_namespaced(sim.client());
    let sos: Api<ScaledObject> = Api::default_namespaced(sim.client());

    let mut bad = hso("bad", &["bad.example.com"]);
    bad.spec.timeouts = Some(Default::default());
    bad.spec.timeouts.as_mut().unwrap().condition_wait = Some("ten seconds".into());
    hsos.create(&PostParams::default(), &bad).await.unwrap();
    let mut both: HTTPScaledObject = hso("both", &["both.example.com"]);
    both.spec.scaling_metric = serde_json::from_value(json!({
        "concurrency": {"targetValue": 10}, "requestRate": {"targetValue": 10}
    }))
    .unwrap();
    hsos.create(&PostParams::default(), &both).await.unwrap();
    hsos.create(&PostParams::default(), &hso("good", &["good.example.com"]))
        .await
        .unwrap();

    let bad = hso_with_reason(&hsos, "bad", "InvalidSpec").await;
    let cond = ready(&bad.status.unwrap().conditions).unwrap().clone();
    assert_eq!(cond.status, "False");
    assert!(
        cond.message.contains("timeouts.conditionWait"),
        "{}",
        cond.message
    );
    hso_with_reason(&hsos, "both", "InvalidSpec").await;
    hso_with_reason(&hsos, "good", "Reconciled").await;
    assert!(sos.get_opt("bad").await.unwrap().is_none());
    assert!(sos.get_opt("good").await.unwrap().is_some());

    // Fixing the spec makes it ready.
    let patch = json!({"spec": {"timeouts": {"conditionWait": "10s"}}});
    hsos.patch("bad", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    hso_with_reason(&hsos, "bad", "Reconciled").await;
    op.shutdown().await;
}

#[tokio::test]
async fn watch_namespace_limits_what_is_reconciled() {
    let sim = cluster().await;
    for ns in ["watched", "other"] {
        sim.create_namespace(ns).await.unwrap();
    }
    let mut config = config();
    config.watch_namespace = Some("watched".into());
    let op = http_add_on_operator::Operator::start(sim.client(), config)
        .await
        .unwrap();
    op.wait_until_leading().await;
    let watched: Api<HTTPScaledObject> = Api::namespaced(sim.client(), "watched");
    let other: Api<HTTPScaledObject> = Api::namespaced(sim.client(), "other");
    other
        .create(&PostParams::default(), &hso("ignored", &["x.test"]))
        .await
        .unwrap();
    watched
        .create(&PostParams::default(), &hso("seen", &["x.test"]))
        .await
        .unwrap();
    hso_with_reason(&watched, "seen", "Reconciled").await;
    // The reconcile of "seen" happened after "ignored" was created; a cluster-wide operator
    // would have reconciled it (and conflicted them) by now.
    let ignored = other.get("ignored").await.unwrap();
    assert!(ignored.status.is_none() && ignored.finalizers().is_empty());
    let sos: Api<ScaledObject> = Api::namespaced(sim.client(), "watched");
    assert!(sos.get_opt("seen").await.unwrap().is_some());
    op.shutdown().await;
}

#[tokio::test]
async fn health_and_metrics_endpoints() {
    let sim = cluster().await;
    let op = operator(sim.client()).await;
    assert_eq!(http_get(op.health_addr(), "/healthz").await.0, 200);
    assert_eq!(http_get(op.health_addr(), "/readyz").await.0, 200);
    assert_eq!(http_get(op.health_addr(), "/nope").await.0, 404);
    let hsos: Api<HTTPScaledObject> = Api::default_namespaced(sim.client());
    hsos.create(&PostParams::default(), &hso("app", &[]))
        .await
        .unwrap();
    hso_with_reason(&hsos, "app", "Reconciled").await;
    let (code, body) = http_get(op.metrics_addr(), "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        body.contains(
            r#"controller_runtime_reconcile_total{controller="httpscaledobject",result="success"}"#
        ),
        "{body}"
    );
    assert!(
        body.contains("controller_runtime_reconcile_time_seconds_bucket"),
        "{body}"
    );
    op.shutdown().await;
}

#[tokio::test]
async fn a_failing_apply_is_reported_retried_and_does_not_block_others() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let sim = cluster().await;
    let crds: Api<CustomResourceDefinition> = Api::all(sim.client());
    // Without KEDA's CRD every ScaledObject write fails.
    let mut keda = crds.get("scaledobjects.keda.sh").await.unwrap();
    crds.delete("scaledobjects.keda.sh", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the ScaledObject CRD to be gone", || async {
        matches!(crds.get_opt("scaledobjects.keda.sh").await, Ok(None)).then_some(())
    })
    .await;
    let op = operator(sim.client()).await;
    let hsos: Api<HTTPScaledObject> = Api::default_namespaced(sim.client());
    hsos.create(&PostParams::default(), &hso("app", &["app.test"]))
        .await
        .unwrap();
    let irs: Api<InterceptorRoute> = Api::default_namespaced(sim.client());
    irs.create(
        &PostParams::default(),
        &interceptor_route("route", "route.test"),
    )
    .await
    .unwrap();

    let failed = hso_with_reason(&hsos, "app", "CreateError").await;
    let cond = ready(&failed.status.unwrap().conditions).unwrap().clone();
    assert_eq!(cond.status, "False");
    assert!(
        cond.message.contains("ScaledObject default/app"),
        "{}",
        cond.message
    );
    ir_with_reason(&irs, "route", "Reconciled").await;
    eventually("an error to be counted", || async {
        let (_, body) = http_get(op.metrics_addr(), "/metrics").await;
        body.contains(r#"controller_runtime_reconcile_errors_total{controller="httpscaledobject"}"#)
            .then_some(())
    })
    .await;

    // Once KEDA's CRD is back, the backoff retry succeeds.
    keda.metadata = kube::api::ObjectMeta {
        name: keda.metadata.name.clone(),
        ..Default::default()
    };
    keda.status = None;
    crds.create(&PostParams::default(), &keda).await.unwrap();
    hso_with_reason(&hsos, "app", "Reconciled").await;
    let sos: Api<ScaledObject> = Api::default_namespaced(sim.client());
    assert!(sos.get_opt("app").await.unwrap().is_some());
    op.shutdown().await;
}

#[tokio::test]
async fn an_interceptor_route_shadows_the_http_scaled_object_of_the_same_name() {
    let sim = cluster().await;
    let op = operator(sim.client()).await;
    let hsos: Api<HTTPScaledObject> = Api::default_namespaced(sim.client());
    let irs: Api<InterceptorRoute> = Api::default_namespaced(sim.client());
    // The migration path: an InterceptorRoute replaces the HTTPScaledObject of the same name.
    hsos.create(&PostParams::default(), &hso("app", &["app.test"]))
        .await
        .unwrap();
    hso_with_reason(&hsos, "app", "Reconciled").await;
    irs.create(
        &PostParams::default(),
        &interceptor_route("app", "app.test"),
    )
    .await
    .unwrap();
    ir_with_reason(&irs, "app", "Reconciled").await;
    // A third object on the same host does conflict, with the route that serves it.
    irs.create(
        &PostParams::default(),
        &interceptor_route("later", "app.test"),
    )
    .await
    .unwrap();
    let later = ir_with_reason(&irs, "later", "RouteConflict").await;
    assert!(
        ready(&later.status.unwrap().conditions)
            .unwrap()
            .message
            .contains("default/app")
    );
    hso_with_reason(&hsos, "app", "Reconciled").await;
    op.shutdown().await;
}
