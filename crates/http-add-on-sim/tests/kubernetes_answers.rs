//! The simulated API server answers as kube-apiserver does where it once answered wrongly
//! (issue #16): one test per answer, each asserting what Kubernetes answers (status code,
//! reason, message wording, resulting object).

use std::time::Duration;

use http_add_on_sim::{Sim, SimConfig};
use http_body_util::BodyExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::{Value, json};

/// How long a wait on a condition may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(10);

async fn sim() -> Sim {
    Sim::start(SimConfig::apiserver_only())
        .await
        .expect("sim starts")
}

/// A sim that keeps only a few change events, so versions expire quickly.
async fn sim_with_short_history() -> Sim {
    Sim::start(SimConfig {
        watch_history: 3,
        ..SimConfig::apiserver_only()
    })
    .await
    .expect("sim starts")
}

/// Sends a raw request and returns the status code and the JSON body.
async fn raw(sim: &Sim, method: &str, path: &str, content_type: &str, body: Value) -> (u16, Value) {
    let body = if body.is_null() {
        vec![]
    } else {
        body.to_string().into_bytes()
    };
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .header("accept", "application/json")
        .body(kube::client::Body::from(body))
        .expect("valid request");
    let resp = sim.client().send(req).await.expect("request sent");
    let code = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .expect("body read")
        .to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| panic!("JSON body, got {:?}", String::from_utf8_lossy(&bytes)));
    (code, value)
}

fn configmap(name: &str, data: Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": data})).expect("ConfigMap")
}

fn api_status(err: kube::Error) -> kube::core::Status {
    match err {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn apply(manager: &str) -> PatchParams {
    PatchParams::apply(manager)
}

/// The FieldsV1 set a manager's entry records, `None` when it has no entry.
fn fields_of(obj: &impl kube::Resource, manager: &str, operation: &str) -> Option<Value> {
    obj.meta()
        .managed_fields
        .as_ref()?
        .iter()
        .find(|e| {
            e.manager.as_deref() == Some(manager) && e.operation.as_deref() == Some(operation)
        })
        .and_then(|e| e.fields_v1.as_ref())
        .map(|f| f.0.clone())
}

fn widget_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}
                }}
            }]
        }
    })
}

async fn install_widgets(sim: &Sim) {
    let crds: Api<CustomResourceDefinition> = Api::all(sim.client());
    crds.create(
        &PostParams::default(),
        &serde_json::from_value(widget_crd()).expect("CRD"),
    )
    .await
    .expect("CRD created");
    tokio::time::timeout(
        DEADLINE,
        await_condition(
            crds,
            "widgets.example.com",
            conditions::is_crd_established(),
        ),
    )
    .await
    .expect("CRD established in time")
    .expect("CRD watch");
}

// 1. DELETE answers a Status when the object is gone at once.
#[tokio::test]
async fn delete_answers_a_status_unless_finalizers_hold_the_object() {
    let sim = sim().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let created = cms
        .create(&PostParams::default(), &configmap("gone", json!({})))
        .await
        .unwrap();
    let (code, status) = raw(
        &sim,
        "DELETE",
        "/api/v1/namespaces/default/configmaps/gone",
        "application/json",
        Value::Null,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        status,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": {"name": "gone", "kind": "configmaps", "uid": created.metadata.uid.unwrap()},
        })
    );

    // A grouped resource names its group; kube-rs sees the Status as such.
    let deployments: Api<Deployment> = Api::default_namespaced(sim.client());
    deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "d"},
                "spec": {"selector": {"matchLabels": {"app": "d"}},
                         "template": {"metadata": {"labels": {"app": "d"}},
                                      "spec": {"containers": [{"name": "c", "image": "i"}]}}}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let status = deployments
        .delete("d", &DeleteParams::default())
        .await
        .unwrap()
        .right()
        .expect("a Status for an object gone at once");
    let details = status.details.expect("details");
    assert_eq!(
        (
            details.group.as_str(),
            details.kind.as_str(),
            details.name.as_str()
        ),
        ("apps", "deployments", "d")
    );

    // Services' storage returns the deleted object (ReturnDeletedObject), as pods' does.
    let services: Api<k8s_openapi::api::core::v1::Service> = Api::default_namespaced(sim.client());
    services
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let deleted = services
        .delete("s", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .expect("the deleted Service");
    assert_eq!(deleted.metadata.name.as_deref(), Some("s"));

    // While a finalizer holds it, the answer is the object, marked for deletion.
    let mut held = configmap("held", json!({}));
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    cms.create(&PostParams::default(), &held).await.unwrap();
    let (code, obj) = raw(
        &sim,
        "DELETE",
        "/api/v1/namespaces/default/configmaps/held",
        "application/json",
        Value::Null,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(obj["kind"], "ConfigMap");
    assert!(obj["metadata"]["deletionTimestamp"].is_string(), "{obj}");
}

// 2. Fields written by create/update/patch are owned: applying over them conflicts, and a
//    co-owned field survives when the applier drops it.
#[tokio::test]
async fn apply_conflicts_with_fields_other_writes_own() {
    let sim = sim().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let created = cms
        .create(
            &PostParams {
                field_manager: Some("creator".into()),
                ..PostParams::default()
            },
            &configmap("owned", json!({"a": "1", "b": "1"})),
        )
        .await
        .unwrap();
    assert_eq!(
        fields_of(&created, "creator", "Update"),
        Some(json!({"f:data": {".": {}, "f:a": {}, "f:b": {}}}))
    );

    let conflict = api_status(
        cms.patch(
            "owned",
            &apply("applier"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "2"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        conflict.message,
        r#"Apply failed with 1 conflict: conflict with "creator" using v1: .data.a"#
    );

    // A merge patch takes the field it changes from its previous owner.
    let patched = cms
        .patch(
            "owned",
            &PatchParams {
                field_manager: Some("editor".into()),
                ..PatchParams::default()
            },
            &Patch::Merge(json!({"data": {"a": "3"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        fields_of(&patched, "creator", "Update"),
        Some(json!({"f:data": {".": {}, "f:b": {}}}))
    );
    assert_eq!(
        fields_of(&patched, "editor", "Update"),
        Some(json!({"f:data": {"f:a": {}}}))
    );

    // Applying the value a field already has co-owns it; dropping it later leaves it to
    // the other owner.
    cms.patch(
        "owned",
        &apply("applier"),
        &Patch::Apply(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"b": "1", "c": "1"}}),
        ),
    )
    .await
    .unwrap();
    let after = cms
        .patch(
            "owned",
            &apply("applier"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap"})),
        )
        .await
        .unwrap();
    let data = after.data.unwrap();
    assert_eq!(
        data.get("b").map(String::as_str),
        Some("1"),
        "co-owned: kept"
    );
    assert!(!data.contains_key("c"), "only the applier's: removed");
}

// 3. A forced apply takes ownership; when the new owner drops the field, it goes.
#[tokio::test]
async fn forced_apply_takes_ownership() {
    let sim = sim().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let cm =
        |data: Value| Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "data": data}));
    cms.patch("taken", &apply("first"), &cm(json!({"k": "1"})))
        .await
        .unwrap();
    let forced = cms
        .patch("taken", &apply("second").force(), &cm(json!({"k": "2"})))
        .await
        .unwrap();
    assert_eq!(
        fields_of(&forced, "first", "Apply"),
        None,
        "first owns nothing left"
    );
    assert_eq!(
        fields_of(&forced, "second", "Apply"),
        Some(json!({"f:data": {"f:k": {}}}))
    );
    let conflict = api_status(
        cms.patch("taken", &apply("first"), &cm(json!({"k": "1"})))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        conflict.message,
        r#"Apply failed with 1 conflict: conflict with "second": .data.k"#
    );
    let dropped = cms
        .patch("taken", &apply("second"), &cm(json!({"other": "x"})))
        .await
        .unwrap();
    assert!(
        !dropped.data.unwrap_or_default().contains_key("k"),
        "the new owner dropped it and no one else owns it"
    );
}

// 4. Keyed lists and sets are owned per item.
#[tokio::test]
async fn keyed_and_set_lists_are_owned_per_item() {
    let sim = sim().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let mut owner_refs = vec![];
    for name in ["owner-1", "owner-2"] {
        let o = cms
            .create(&PostParams::default(), &configmap(name, json!({})))
            .await
            .unwrap();
        owner_refs.push(json!({"apiVersion": "v1", "kind": "ConfigMap", "name": name, "uid": o.metadata.uid.unwrap()}));
    }
    let deployments: Api<Deployment> = Api::default_namespaced(sim.client());
    let deploy = |meta: Value, containers: Value| {
        let mut metadata = json!({"name": "lists"});
        metadata
            .as_object_mut()
            .unwrap()
            .extend(meta.as_object().unwrap().clone());
        Patch::Apply(json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata,
            "spec": {"selector": {"matchLabels": {"app": "l"}},
                     "template": {"metadata": {"labels": {"app": "l"}},
                                  "spec": {"containers": containers}}}
        }))
    };
    deployments
        .patch(
            "lists",
            &apply("a"),
            &deploy(
                json!({"finalizers": ["a.example.com/f"], "ownerReferences": [owner_refs[0]]}),
                json!([{"name": "a", "image": "x", "ports": [{"containerPort": 80}],
                        "env": [{"name": "A", "value": "1"}]}]),
            ),
        )
        .await
        .unwrap();
    // Another manager adds items to every keyed list and the set: no conflict.
    let both = deployments
        .patch(
            "lists",
            &apply("b"),
            &deploy(
                json!({"finalizers": ["b.example.com/f"], "ownerReferences": [owner_refs[1]]}),
                json!([
                    {"name": "a", "ports": [{"containerPort": 81}], "env": [{"name": "B", "value": "2"}]},
                    {"name": "b", "image": "y"}
                ]),
            ),
        )
        .await
        .expect("adding list items owned by no one is not a conflict");
    let meta = &both.metadata;
    assert_eq!(
        meta.finalizers.as_deref(),
        Some(&["a.example.com/f".to_string(), "b.example.com/f".to_string()][..])
    );
    assert_eq!(meta.owner_references.as_ref().map(Vec::len), Some(2));
    let containers = both.spec.unwrap().template.spec.unwrap().containers;
    assert_eq!(
        containers
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    let ports: Vec<i32> = containers[0]
        .ports
        .iter()
        .flatten()
        .map(|p| p.container_port)
        .collect();
    assert_eq!(ports, [80, 81]);
    assert_eq!(containers[0].env.as_ref().map(Vec::len), Some(2));

    // Changing an item another manager owns conflicts on that item's field only.
    let conflict = api_status(
        deployments
            .patch(
                "lists",
                &apply("b"),
                &deploy(json!({}), json!([{"name": "a", "image": "changed"}])),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(
        conflict.message,
        r#"Apply failed with 1 conflict: conflict with "a": .spec.template.spec.containers[name="a"].image"#
    );
    // A forced apply replaces only what it applies, not the whole list.
    let forced = deployments
        .patch(
            "lists",
            &apply("b").force(),
            &deploy(
                json!({"finalizers": ["b.example.com/f"]}),
                json!([{"name": "b", "image": "z"}]),
            ),
        )
        .await
        .unwrap();
    let containers = forced.spec.unwrap().template.spec.unwrap().containers;
    assert_eq!(
        containers
            .iter()
            .map(|c| (c.name.as_str(), c.image.as_deref()))
            .collect::<Vec<_>>(),
        [("a", Some("x")), ("b", Some("z"))]
    );
    assert_eq!(
        forced.metadata.finalizers.as_deref(),
        Some(&["a.example.com/f".to_string(), "b.example.com/f".to_string()][..])
    );
    assert_eq!(
        forced.metadata.owner_references.as_ref().map(Vec::len),
        Some(1),
        "b dropped its owner reference; a's stays"
    );
}

// 5. Applying an empty map does not conflict with another manager's keys.
#[tokio::test]
async fn applying_an_empty_map_does_not_conflict() {
    let sim = sim().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let cm =
        |data: Value| Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "data": data}));
    cms.patch("shared", &apply("keys"), &cm(json!({"k": "v"})))
        .await
        .unwrap();
    let after = cms
        .patch("shared", &apply("empty"), &cm(json!({})))
        .await
        .expect("an empty map changes nothing another manager owns");
    assert_eq!(
        after.data.as_ref().unwrap().get("k").map(String::as_str),
        Some("v")
    );
    assert_eq!(
        fields_of(&after, "empty", "Apply"),
        Some(json!({"f:data": {}}))
    );
}

// 6. limit + continue: pages of one consistent snapshot.
#[tokio::test]
async fn lists_are_paged_consistently() {
    let sim = sim().await;
    sim.create_namespace("paged").await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(sim.client(), "paged");
    for name in ["b", "c", "d", "e", "f"] {
        cms.create(&PostParams::default(), &configmap(name, json!({})))
            .await
            .unwrap();
    }
    let names = |l: &kube::core::ObjectList<ConfigMap>| {
        l.items
            .iter()
            .map(|c| c.metadata.name.clone().unwrap())
            .collect::<Vec<_>>()
    };
    let first = cms.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(names(&first), ["b", "c"]);
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    let token = first.metadata.continue_.clone().expect("a continue token");
    let snapshot = first.metadata.resource_version.clone();

    // Changes after the first page do not show in the next pages.
    cms.create(&PostParams::default(), &configmap("a", json!({})))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &configmap("g", json!({})))
        .await
        .unwrap();
    cms.delete("d", &DeleteParams::default()).await.unwrap();

    let second = cms
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(&second), ["d", "e"]);
    assert_eq!(second.metadata.resource_version, snapshot);
    let last = cms
        .list(
            &ListParams::default()
                .limit(2)
                .continue_token(second.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(names(&last), ["f"]);
    assert_eq!(last.metadata.continue_, None);
    assert_eq!(last.metadata.remaining_item_count, None);

    // A fresh first page sees the current state.
    let now = cms.list(&ListParams::default().limit(1)).await.unwrap();
    assert_eq!(names(&now), ["a"]);
    assert_eq!(now.metadata.remaining_item_count, Some(5));

    // A token older than the kept history is 410 Expired.
    let short = sim_with_short_history().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(short.client());
    for name in ["x", "y"] {
        cms.create(&PostParams::default(), &configmap(name, json!({})))
            .await
            .unwrap();
    }
    let page = cms.list(&ListParams::default().limit(1)).await.unwrap();
    for i in 0..4 {
        cms.create(
            &PostParams::default(),
            &configmap(&format!("z{i}"), json!({})),
        )
        .await
        .unwrap();
    }
    let expired = api_status(
        cms.list(
            &ListParams::default()
                .limit(1)
                .continue_token(page.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((expired.code, expired.reason.as_str()), (410, "Expired"));
    assert!(
        expired
            .message
            .starts_with("The provided continue parameter is too old"),
        "{}",
        expired.message
    );
}

// 7. No new finalizers on an object being deleted.
#[tokio::test]
async fn no_new_finalizers_on_an_object_being_deleted() {
    let sim = sim().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let mut cm = configmap("dying", json!({}));
    cm.metadata.finalizers = Some(vec!["example.com/one".into()]);
    cms.create(&PostParams::default(), &cm).await.unwrap();
    cms.delete("dying", &DeleteParams::default()).await.unwrap();
    let err = api_status(
        cms.patch(
            "dying",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"finalizers": ["example.com/one", "example.com/two"]}}),
            ),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        err.message,
        r#"ConfigMap "dying" is invalid: metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{"example.com/two"}"#
    );
    let cause = &err.details.unwrap().causes[0];
    assert_eq!(
        (cause.reason.as_str(), cause.field.as_str()),
        ("FieldValueForbidden", "metadata.finalizers")
    );
    // Removing the finalizer is allowed and completes the deletion.
    cms.patch(
        "dying",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(cms.get_opt("dying").await.unwrap().is_none());
}

// 8. Creating in a missing namespace is 404; a deleted namespace takes its objects along.
#[tokio::test]
async fn creating_in_a_missing_namespace_is_not_found() {
    let sim = sim().await;
    let namespaces: Api<Namespace> = Api::all(sim.client());
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(namespaces.get_opt(ns).await.unwrap().is_some(), "{ns}");
    }
    let nowhere: Api<ConfigMap> = Api::namespaced(sim.client(), "nowhere");
    for result in [
        nowhere
            .create(&PostParams::default(), &configmap("c", json!({})))
            .await,
        nowhere
            .patch(
                "c",
                &apply("m"),
                &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap"})),
            )
            .await,
    ] {
        let err = api_status(result.unwrap_err());
        assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
        assert_eq!(err.message, r#"namespaces "nowhere" not found"#);
    }
    assert!(namespaces.get_opt("nowhere").await.unwrap().is_none());

    sim.create_namespace("doomed").await.unwrap();
    let doomed: Api<ConfigMap> = Api::namespaced(sim.client(), "doomed");
    // A finalizer keeps the namespace Terminating until the test lets it go.
    let mut held = configmap("inside", json!({}));
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    let inside = doomed.create(&PostParams::default(), &held).await.unwrap();
    let ns = namespaces
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .expect("the namespace, Terminating");
    let created = doomed
        .create(&PostParams::default(), &configmap("late", json!({})))
        .await;
    if let Err(e) = created {
        let err = api_status(e);
        assert_eq!(err.code, 403);
        assert_eq!(
            err.message,
            r#"configmaps "late" is forbidden: unable to create new content in namespace doomed because it is being terminated"#
        );
    } else {
        panic!("created in a terminating namespace");
    }
    // The namespace's objects are being deleted; releasing the finalizer lets both go.
    let marked = tokio::time::timeout(
        DEADLINE,
        await_condition(doomed.clone(), "inside", |cm: Option<&ConfigMap>| {
            cm.is_some_and(|c| c.metadata.deletion_timestamp.is_some())
        }),
    )
    .await
    .expect("the namespace's objects marked for deletion in time")
    .unwrap();
    assert!(marked.is_some());
    doomed
        .patch(
            "inside",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    tokio::time::timeout(
        DEADLINE,
        await_condition(
            doomed,
            "inside",
            conditions::is_deleted(&inside.metadata.uid.unwrap()),
        ),
    )
    .await
    .expect("the namespace's objects deleted in time")
    .unwrap();
    tokio::time::timeout(
        DEADLINE,
        await_condition(
            namespaces,
            "doomed",
            conditions::is_deleted(&ns.metadata.uid.unwrap()),
        ),
    )
    .await
    .expect("the namespace gone in time")
    .unwrap();
}

// 9. Dependents whose owners do not exist are garbage-collected.
#[tokio::test]
async fn dependents_of_missing_owners_are_collected() {
    let sim = sim().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let owner = cms
        .create(&PostParams::default(), &configmap("owner", json!({})))
        .await
        .unwrap();
    let owner_ref = |name: &str, uid: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "name": name, "uid": uid});
    let with_owners = |name: &str, refs: Vec<Value>| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name, "ownerReferences": refs}}))
            .unwrap()
    };
    let orphan = cms
        .create(
            &PostParams::default(),
            &with_owners(
                "orphan",
                vec![owner_ref("ghost", "00000000-0000-4000-a000-000000000000")],
            ),
        )
        .await
        .unwrap();
    let owner_uid = owner.metadata.uid.clone().unwrap();
    // Right uid, wrong name: the kube garbage collector does not count it as the owner.
    let misnamed = cms
        .create(
            &PostParams::default(),
            &with_owners("misnamed", vec![owner_ref("not-the-owner", &owner_uid)]),
        )
        .await
        .unwrap();
    cms.create(
        &PostParams::default(),
        &with_owners(
            "half",
            vec![
                owner_ref("owner", &owner_uid),
                owner_ref("ghost", "00000000-0000-4000-a000-000000000001"),
            ],
        ),
    )
    .await
    .unwrap();
    for dependent in [orphan, misnamed] {
        let name = dependent.metadata.name.unwrap();
        tokio::time::timeout(
            DEADLINE,
            await_condition(
                cms.clone(),
                &name,
                conditions::is_deleted(&dependent.metadata.uid.unwrap()),
            ),
        )
        .await
        .unwrap_or_else(|_| panic!("{name} collected in time"))
        .unwrap();
    }
    // With one owner left, only the dangling reference goes.
    let half = tokio::time::timeout(
        DEADLINE,
        await_condition(cms.clone(), "half", |cm: Option<&ConfigMap>| {
            cm.is_some_and(|c| c.metadata.owner_references.as_ref().map(Vec::len) == Some(1))
        }),
    )
    .await
    .expect("the dangling reference dropped in time")
    .unwrap()
    .expect("half stays");
    assert_eq!(half.metadata.owner_references.unwrap()[0].uid, owner_uid);
}

// 10. Strategic merge patch of a custom resource is 415.
#[tokio::test]
async fn strategic_merge_patch_of_a_custom_resource_is_unsupported() {
    let sim = sim().await;
    install_widgets(&sim).await;
    let path = "/apis/example.com/v1/namespaces/default/widgets";
    let (code, _) = raw(
        &sim,
        "POST",
        path,
        "application/json",
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 1}}),
    )
    .await;
    assert_eq!(code, 201);
    let (code, status) = raw(
        &sim,
        "PATCH",
        &format!("{path}/w"),
        "application/strategic-merge-patch+json",
        json!({"spec": {"size": 2}}),
    )
    .await;
    assert_eq!(code, 415);
    assert_eq!(status["reason"], "UnsupportedMediaType");
    assert_eq!(
        status["message"],
        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
    );
    let (code, merged) = raw(
        &sim,
        "PATCH",
        &format!("{path}/w"),
        "application/merge-patch+json",
        json!({"spec": {"size": 2}}),
    )
    .await;
    assert_eq!((code, merged["spec"]["size"].as_i64()), (200, Some(2)));
}

// 11. Unsupported field selectors are 400.
#[tokio::test]
async fn unsupported_field_selectors_are_bad_requests() {
    let sim = sim().await;
    install_widgets(&sim).await;
    let list = |path: &str, selector: &str| {
        let path = format!("{path}?fieldSelector={selector}");
        let sim = &sim;
        async move { raw(sim, "GET", &path, "application/json", Value::Null).await }
    };
    let cases = [
        (
            "/api/v1/configmaps",
            "data.x%3D1",
            r#""data.x" is not a known field selector: only "metadata.name", "metadata.namespace""#,
        ),
        (
            "/api/v1/pods",
            "status.hostIP%3D10.0.0.1",
            "field label not supported: status.hostIP",
        ),
        (
            "/api/v1/namespaces",
            "metadata.namespace%3Dx",
            "field label not supported: metadata.namespace",
        ),
        (
            "/apis/example.com/v1/widgets",
            "spec.size%3D1",
            "field label not supported: spec.size",
        ),
    ];
    for (path, selector, message) in cases {
        let (code, status) = list(path, selector).await;
        assert_eq!(code, 400, "{path}?{selector}: {status}");
        assert_eq!(status["reason"], "BadRequest");
        assert_eq!(status["message"], message);
    }
    for (path, selector) in [
        ("/api/v1/pods", "status.phase%3DRunning,spec.nodeName%3Dn"),
        ("/api/v1/secrets", "type%3DOpaque"),
        ("/api/v1/events", "involvedObject.kind%3DPod"),
        (
            "/apis/example.com/v1/widgets",
            "metadata.namespace%3Ddefault",
        ),
    ] {
        let (code, list) = list(path, selector).await;
        assert_eq!(code, 200, "{path}?{selector}: {list}");
    }
}

// 12. Create with metadata.resourceVersion set is the storage layer's 500.
#[tokio::test]
async fn create_with_a_resource_version_is_an_internal_error() {
    let sim = sim().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let mut cm = configmap("versioned", json!({}));
    cm.metadata.resource_version = Some("5".into());
    let err = api_status(cms.create(&PostParams::default(), &cm).await.unwrap_err());
    // The storage layer's plain error: no reason, as StatusReasonUnknown is empty.
    assert_eq!((err.code, err.reason.as_str()), (500, ""));
    assert_eq!(
        err.message,
        "resourceVersion should not be set on objects to be created"
    );
    assert!(cms.get_opt("versioned").await.unwrap().is_none());
}

// 13. resourceVersionMatch=Exact reads at that version; an expired one is 410.
#[tokio::test]
async fn exact_list_at_an_expired_version_is_gone() {
    let sim = sim_with_short_history().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let first = cms
        .create(&PostParams::default(), &configmap("first", json!({})))
        .await
        .unwrap();
    let at_first = first.metadata.resource_version.unwrap();
    let second = cms
        .create(&PostParams::default(), &configmap("second", json!({})))
        .await
        .unwrap();
    // Still in the history: the list as it was.
    let then = cms
        .list(
            &ListParams::default()
                .matching(kube::api::VersionMatch::Exact)
                .at(&at_first),
        )
        .await
        .unwrap();
    assert_eq!(then.items.len(), 1);
    assert_eq!(
        then.metadata.resource_version.as_deref(),
        Some(at_first.as_str())
    );
    for i in 0..4 {
        cms.create(
            &PostParams::default(),
            &configmap(&format!("more-{i}"), json!({})),
        )
        .await
        .unwrap();
    }
    let err = api_status(
        cms.list(
            &ListParams::default()
                .matching(kube::api::VersionMatch::Exact)
                .at(&at_first),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (410, "Expired"));
    assert!(
        err.message
            .starts_with(&format!("too old resource version: {at_first}")),
        "{}",
        err.message
    );
    // A version the server has not reached is a 504 Timeout (which kube-rs retries by
    // default, so this client does not).
    let future = (second
        .metadata
        .resource_version
        .unwrap()
        .parse::<u64>()
        .unwrap()
        + 1000)
        .to_string();
    let mut config = kube::Config::new(sim.url().parse().unwrap());
    config.default_retry = false;
    let cms: Api<ConfigMap> =
        Api::default_namespaced(kube::Client::try_from(config).expect("client"));
    let err = api_status(
        cms.list(
            &ListParams::default()
                .matching(kube::api::VersionMatch::Exact)
                .at(&future),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (504, "Timeout"));
    // Exact needs a version to match.
    let (code, status) = raw(
        &sim,
        "GET",
        "/api/v1/namespaces/default/configmaps?resourceVersionMatch=Exact",
        "application/json",
        Value::Null,
    )
    .await;
    assert_eq!((code, status["reason"].as_str()), (422, Some("Invalid")));
    assert_eq!(
        status["message"],
        r#"ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided"#
    );
}
