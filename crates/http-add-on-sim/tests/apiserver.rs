//! Behaviour of the simulated API server through kube-rs, as real controllers use it.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use http_add_on_sim::{Sim, SimConfig};
use http_add_on_testkit::wait::eventually;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::watcher;
use serde_json::{Value, json};

/// Hang guard for one watch event.
const DEADLINE: Duration = http_add_on_testkit::wait::DEADLINE;

async fn sim() -> Sim {
    Sim::start(SimConfig::apiserver_only())
        .await
        .expect("sim starts")
}

fn cm(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "data": data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
    }))
    .expect("valid ConfigMap")
}

fn api_status(err: kube::Error) -> kube::core::Status {
    match err {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Creates a namespace: like Kubernetes, the sim creates nothing in one that does not exist.
async fn create_namespace(sim: &Sim, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(sim.client())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    http_add_on_testkit::build::deployment(name)
        .replicas(replicas)
        .image("echo")
        .build()
}

#[tokio::test]
async fn create_get_list_update_delete() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let created = api
        .create(&PostParams::default(), &cm("a", &[("k", "v")]))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert!(
        meta.uid.is_some() && meta.creation_timestamp.is_some() && meta.resource_version.is_some()
    );
    assert_eq!(meta.namespace.as_deref(), Some("default"));

    let got = api.get("a").await.unwrap();
    assert_eq!(got.data.unwrap()["k"], "v");

    let list = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let list_rv: u64 = list.metadata.resource_version.unwrap().parse().unwrap();
    assert!(
        list_rv
            >= created
                .metadata
                .resource_version
                .as_ref()
                .unwrap()
                .parse()
                .unwrap()
    );

    let mut changed = created.clone();
    changed.data = Some([("k".to_string(), "w".to_string())].into());
    let updated = api
        .replace("a", &PostParams::default(), &changed)
        .await
        .unwrap();
    assert_eq!(updated.data.unwrap()["k"], "w");
    assert_ne!(
        updated.metadata.resource_version,
        created.metadata.resource_version
    );
    assert_eq!(updated.metadata.uid, created.metadata.uid);

    api.delete("a", &DeleteParams::default()).await.unwrap();
    assert_eq!(api_status(api.get("a").await.unwrap_err()).code, 404);
    sim.shutdown().await;
}

#[tokio::test]
async fn stale_resource_version_conflicts() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let v1 = api
        .create(&PostParams::default(), &cm("c", &[("k", "1")]))
        .await
        .unwrap();
    let mut v2 = v1.clone();
    v2.data = Some([("k".to_string(), "2".to_string())].into());
    api.replace("c", &PostParams::default(), &v2).await.unwrap();
    let err = api_status(
        api.replace("c", &PostParams::default(), &v2)
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(
        err.message.contains("the object has been modified"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn duplicate_create_is_already_exists() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());
    api.create(&PostParams::default(), &cm("dup", &[]))
        .await
        .unwrap();
    let err = api_status(
        api.create(&PostParams::default(), &cm("dup", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(err.message, "configmaps \"dup\" already exists");
}

#[tokio::test]
async fn missing_object_is_a_not_found_status() {
    let sim = sim().await;
    let api: Api<Deployment> = Api::default_namespaced(sim.client());
    let err = api_status(api.get("nope").await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
    assert_eq!(err.message, "deployments.apps \"nope\" not found");
    let details = err.details.expect("details");
    assert_eq!(
        (
            details.name.as_str(),
            details.group.as_str(),
            details.kind.as_str()
        ),
        ("nope", "apps", "deployments")
    );
}

#[tokio::test]
async fn label_and_field_selectors_filter_lists() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());
    for (name, tier) in [("a", "fe"), ("b", "be"), ("c", "db")] {
        let mut c = cm(name, &[]);
        c.metadata.labels = Some([("tier".to_string(), tier.to_string())].into());
        api.create(&PostParams::default(), &c).await.unwrap();
    }
    let names = |l: kube::core::ObjectList<ConfigMap>| -> Vec<String> {
        l.items
            .into_iter()
            .map(|c| c.metadata.name.unwrap())
            .collect()
    };
    let list = |sel: &str| {
        let lp = ListParams::default().labels(sel);
        let api = api.clone();
        async move { api.list(&lp).await }
    };
    assert_eq!(names(list("tier=fe").await.unwrap()), ["a"]);
    assert_eq!(names(list("tier!=fe").await.unwrap()), ["b", "c"]);
    assert_eq!(names(list("tier in (fe,db)").await.unwrap()), ["a", "c"]);
    assert_eq!(names(list("tier notin (fe)").await.unwrap()), ["b", "c"]);
    assert_eq!(names(list("tier").await.unwrap()).len(), 3);
    assert!(names(list("!tier").await.unwrap()).is_empty());
    let by_name = api
        .list(&ListParams::default().fields("metadata.name=b"))
        .await
        .unwrap();
    assert_eq!(names(by_name), ["b"]);
    let all: Api<ConfigMap> = Api::all(sim.client());
    let elsewhere = all
        .list(&ListParams::default().fields("metadata.namespace!=default"))
        .await
        .unwrap();
    assert!(elsewhere.items.is_empty());
}

#[tokio::test]
async fn watch_resumes_from_a_resource_version() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let first = api
        .create(&PostParams::default(), &cm("w1", &[]))
        .await
        .unwrap();
    api.create(&PostParams::default(), &cm("w2", &[]))
        .await
        .unwrap();
    api.delete("w1", &DeleteParams::default()).await.unwrap();
    let rv = first.metadata.resource_version.unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    let mut seen = vec![];
    while seen.len() < 2 {
        match tokio::time::timeout(DEADLINE, stream.try_next())
            .await
            .unwrap()
            .unwrap()
        {
            Some(WatchEvent::Added(c)) => seen.push(format!("ADDED {}", c.metadata.name.unwrap())),
            Some(WatchEvent::Deleted(c)) => {
                seen.push(format!("DELETED {}", c.metadata.name.unwrap()))
            }
            Some(WatchEvent::Bookmark(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["ADDED w2", "DELETED w1"]);
}

#[tokio::test]
async fn watch_from_a_compacted_version_is_gone() {
    let sim = Sim::start(SimConfig {
        watch_history: 5,
        ..SimConfig::apiserver_only()
    })
    .await
    .unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let first = api
        .create(&PostParams::default(), &cm("g0", &[]))
        .await
        .unwrap();
    for i in 1..10 {
        api.create(&PostParams::default(), &cm(&format!("g{i}"), &[]))
            .await
            .unwrap();
    }
    let rv = first.metadata.resource_version.unwrap();
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(DEADLINE, stream.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        Some(WatchEvent::Error(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected a 410 error event, got {other:?}"),
    }
}

#[tokio::test]
async fn bookmarks_and_initial_events() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());
    api.create(&PostParams::default(), &cm("b1", &[]))
        .await
        .unwrap();
    let wp = WatchParams::streaming_lists().timeout(10);
    let mut stream = api.watch(&wp, "").await.unwrap().boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Added(c)) => assert_eq!(c.metadata.name.as_deref(), Some("b1")),
        other => panic!("expected the initial ADDED, got {other:?}"),
    }
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Bookmark(b)) => {
            assert_eq!(
                b.metadata
                    .annotations
                    .get("k8s.io/initial-events-end")
                    .map(String::as_str),
                Some("true")
            )
        }
        other => panic!("expected the initial-events-end BOOKMARK, got {other:?}"),
    }
}

#[tokio::test]
async fn watcher_sees_add_modify_delete() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
    // Wait for the initial list to finish before writing.
    loop {
        if let watcher::Event::InitDone = tokio::time::timeout(DEADLINE, events.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            break;
        }
    }
    api.create(&PostParams::default(), &cm("x", &[("k", "1")]))
        .await
        .unwrap();
    api.patch(
        "x",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "2"}})),
    )
    .await
    .unwrap();
    api.delete("x", &DeleteParams::default()).await.unwrap();
    let mut seen = vec![];
    while seen.len() < 3 {
        match tokio::time::timeout(DEADLINE, events.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            watcher::Event::Apply(c) => seen.push(format!("apply {}", c.data.unwrap()["k"])),
            watcher::Event::Delete(c) => seen.push(format!("delete {}", c.metadata.name.unwrap())),
            _ => {}
        }
    }
    assert_eq!(seen, ["apply 1", "apply 2", "delete x"]);
}

#[tokio::test]
async fn finalizers_delay_deletion_until_removed() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let mut c = cm("fin", &[]);
    c.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    api.create(&PostParams::default(), &c).await.unwrap();
    let deleted = api.delete("fin", &DeleteParams::default()).await.unwrap();
    let marked = deleted
        .left()
        .expect("the object is returned while finalizers remain");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert!(
        api.get("fin")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    api.patch(
        "fin",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(api_status(api.get("fin").await.unwrap_err()).code, 404);
}

#[tokio::test]
async fn dependents_of_a_deleted_owner_are_garbage_collected() {
    let sim = sim().await;
    let owners: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let owner = owners
        .create(&PostParams::default(), &cm("owner", &[]))
        .await
        .unwrap();
    let mut dep = cm("dependent", &[]);
    dep.metadata.owner_references = Some(vec![serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid.unwrap()
    }))
    .unwrap()]);
    owners.create(&PostParams::default(), &dep).await.unwrap();
    let unowned = owners
        .create(&PostParams::default(), &cm("bystander", &[]))
        .await
        .unwrap();
    owners
        .delete("owner", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the dependent to be collected", || async {
        owners
            .get_opt("dependent")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(
        owners.get("bystander").await.unwrap().metadata.uid,
        unowned.metadata.uid
    );
}

#[tokio::test]
async fn orphan_propagation_keeps_dependents() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let owner = api
        .create(&PostParams::default(), &cm("owner", &[]))
        .await
        .unwrap();
    let mut dep = cm("dep", &[]);
    dep.metadata.owner_references = Some(vec![serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid.unwrap()
    }))
    .unwrap()]);
    api.create(&PostParams::default(), &dep).await.unwrap();
    api.delete("owner", &DeleteParams::orphan()).await.unwrap();
    let kept = api.get("dep").await.unwrap();
    assert!(
        kept.metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );
}

#[tokio::test]
async fn server_side_apply_creates_then_removes_dropped_fields() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let pp = PatchParams::apply("test-manager").force();
    let first = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa", "labels": {"a": "1"}}, "data": {"keep": "1", "drop": "1"}});
    let created = api.patch("ssa", &pp, &Patch::Apply(&first)).await.unwrap();
    assert_eq!(created.data.as_ref().unwrap().len(), 2);
    // Another manager's field survives the first manager's re-apply.
    api.patch("ssa", &PatchParams::apply("other").force(), &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"theirs": "x"}})))
        .await
        .unwrap();
    let second = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"keep": "2"}});
    let updated = api.patch("ssa", &pp, &Patch::Apply(&second)).await.unwrap();
    let data = updated.data.unwrap();
    assert_eq!(data.get("keep").map(String::as_str), Some("2"));
    assert_eq!(data.get("theirs").map(String::as_str), Some("x"));
    assert!(!data.contains_key("drop"));
    assert!(
        updated.metadata.labels.unwrap_or_default().is_empty(),
        "labels applied before and omitted now are removed"
    );
    let managers: Vec<String> = updated
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(
        managers.contains(&"test-manager".to_string()) && managers.contains(&"other".to_string())
    );
}

#[tokio::test]
async fn status_subresource_is_split_from_the_main_resource() {
    let sim = sim().await;
    let api: Api<Deployment> = Api::default_namespaced(sim.client());
    api.create(&PostParams::default(), &deployment("d", 1))
        .await
        .unwrap();
    // Writes to the main resource ignore status.
    let patched = api
        .patch(
            "d",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 7}, "spec": {"replicas": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.status.and_then(|s| s.replicas), None);
    assert_eq!(patched.spec.as_ref().unwrap().replicas, Some(2));
    // Writes to /status change only status.
    let st = api
        .patch_status(
            "d",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 3}, "spec": {"replicas": 9}})),
        )
        .await
        .unwrap();
    assert_eq!(st.status.and_then(|s| s.replicas), Some(3));
    assert_eq!(st.spec.unwrap().replicas, Some(2));
    // SSA on /status too.
    let applied = api
        .patch_status("d", &PatchParams::apply("st").force(), &Patch::Apply(json!({"apiVersion": "apps/v1", "kind": "Deployment", "status": {"readyReplicas": 1}})))
        .await
        .unwrap();
    assert_eq!(applied.status.unwrap().ready_replicas, Some(1));
}

#[tokio::test]
async fn generation_changes_only_with_the_spec() {
    let sim = sim().await;
    let api: Api<Deployment> = Api::default_namespaced(sim.client());
    let d = api
        .create(&PostParams::default(), &deployment("gen", 1))
        .await
        .unwrap();
    assert_eq!(d.metadata.generation, Some(1));
    let labelled = api
        .patch(
            "gen",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(1));
    let status = api
        .patch_status(
            "gen",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 1}})),
        )
        .await
        .unwrap();
    assert_eq!(status.metadata.generation, Some(1));
    let scaled = api
        .patch(
            "gen",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(scaled.metadata.generation, Some(2));
}

#[tokio::test]
async fn no_op_writes_keep_the_resource_version() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let c = api
        .create(&PostParams::default(), &cm("same", &[("k", "v")]))
        .await
        .unwrap();
    let again = api
        .patch(
            "same",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "v"}})),
        )
        .await
        .unwrap();
    assert_eq!(again.metadata.resource_version, c.metadata.resource_version);
}

#[tokio::test]
async fn repeated_identical_server_side_apply_is_a_no_op() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let manifest = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "applied"}, "data": {"k": "v"}
    });
    let pp = PatchParams::apply("tester").force();
    let first = api
        .patch("applied", &pp, &Patch::Apply(&manifest))
        .await
        .unwrap();
    let second = api
        .patch("applied", &pp, &Patch::Apply(&manifest))
        .await
        .unwrap();
    assert_eq!(
        second.metadata.resource_version,
        first.metadata.resource_version
    );
    let changed = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "applied"}, "data": {"k": "w"}
    });
    let third = api
        .patch("applied", &pp, &Patch::Apply(&changed))
        .await
        .unwrap();
    assert_ne!(
        third.metadata.resource_version,
        first.metadata.resource_version
    );
    assert_eq!(third.data.unwrap()["k"], "w");
}

#[tokio::test]
async fn scale_subresource_reads_and_writes_replicas() {
    let sim = sim().await;
    let api: Api<Deployment> = Api::default_namespaced(sim.client());
    api.create(&PostParams::default(), &deployment("s", 1))
        .await
        .unwrap();
    let scale = api.get_scale("s").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(1));
    assert_eq!(scale.status.unwrap().selector.as_deref(), Some("app=s"));
    let scaled = api
        .patch_scale(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
    assert_eq!(scaled.spec.unwrap().replicas, Some(0));
    assert_eq!(api.get("s").await.unwrap().spec.unwrap().replicas, Some(0));
    let mut s = api.get_scale("s").await.unwrap();
    s.spec.as_mut().unwrap().replicas = Some(4);
    api.replace_scale("s", &PostParams::default(), &s)
        .await
        .unwrap();
    assert_eq!(api.get("s").await.unwrap().spec.unwrap().replicas, Some(4));
}

#[tokio::test]
async fn generate_name_appends_a_random_suffix() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let mut c = cm("", &[]);
    c.metadata.name = None;
    c.metadata.generate_name = Some("gen-".into());
    let a = api
        .create(&PostParams::default(), &c)
        .await
        .unwrap()
        .metadata
        .name
        .unwrap();
    let b = api
        .create(&PostParams::default(), &c)
        .await
        .unwrap()
        .metadata
        .name
        .unwrap();
    assert!(a.starts_with("gen-") && a.len() == 9, "{a}");
    assert_ne!(a, b);
}

#[tokio::test]
async fn services_get_a_cluster_ip_unless_headless() {
    let sim = sim().await;
    let api: Api<Service> = Api::default_namespaced(sim.client());
    let svc = |name: &str, ip: Option<&str>| -> Service {
        let mut spec = json!({"selector": {"app": "x"}, "ports": [{"port": 80}]});
        if let Some(ip) = ip {
            spec["clusterIP"] = json!(ip);
        }
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
    };
    let s = api
        .create(&PostParams::default(), &svc("a", None))
        .await
        .unwrap()
        .spec
        .unwrap();
    let ip: std::net::Ipv4Addr = s.cluster_ip.unwrap().parse().unwrap();
    let o = ip.octets();
    assert!(
        o[0] == 127 && (128..192).contains(&o[1]) && o[3] != 0 && o[3] != 255,
        "{ip}"
    );
    assert_eq!(s.cluster_ips.unwrap(), [ip.to_string()]);
    let empty = api
        .create(&PostParams::default(), &svc("b", Some("")))
        .await
        .unwrap()
        .spec
        .unwrap();
    assert!(empty.cluster_ip.unwrap().starts_with("127."));
    let headless = api
        .create(&PostParams::default(), &svc("c", Some("None")))
        .await
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
    // An update without clusterIP keeps the allocated one.
    let updated = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"clusterIP": null}})),
        )
        .await
        .unwrap();
    assert_eq!(updated.spec.unwrap().cluster_ip, Some(ip.to_string()));
}

#[tokio::test]
async fn pods_are_created_pending_in_a_new_namespace() {
    let sim = sim().await;
    create_namespace(&sim, "fresh").await;
    let api: Api<Pod> = Api::namespaced(sim.client(), "fresh");
    let pod: Pod = serde_json::from_value(
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
    )
    .unwrap();
    let created = api.create(&PostParams::default(), &pod).await.unwrap();
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Pending"));
    let ns: Api<Namespace> = Api::all(sim.client());
    assert!(ns.get("fresh").await.is_ok());
    assert!(ns.get("default").await.is_ok());
}

fn widget_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "shortNames": ["wd"]},
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "properties": {
                                "replicas": {"type": "integer", "default": 1},
                                "port": {"type": "integer"},
                                "portName": {"type": "string"}
                            },
                            "x-kubernetes-validations": [{"rule": "has(self.port) || has(self.portName)", "message": "must define either the 'portName' or the 'port'"}]
                        },
                        "status": {"type": "object", "properties": {"replicas": {"type": "integer"}}}
                    }
                }}
            }]
        }
    })
}

#[tokio::test]
async fn crd_registration_serves_custom_objects_with_validation() {
    let sim = sim().await;
    let crds: Api<CustomResourceDefinition> = Api::all(sim.client());
    let crd: CustomResourceDefinition = serde_json::from_value(widget_crd()).unwrap();
    let created = crds.create(&PostParams::default(), &crd).await.unwrap();
    let conditions = created.status.unwrap().conditions.unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    );

    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(sim.client(), "default", &ar);
    let w: DynamicObject = serde_json::from_value(json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"port": 80}})).unwrap();
    let w = api.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(w.data["spec"]["replicas"], 1, "schema defaults are applied");
    assert_eq!(
        api.get_scale("w").await.unwrap().spec.unwrap().replicas,
        Some(1)
    );

    let bad: DynamicObject = serde_json::from_value(json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "bad"}, "spec": {}})).unwrap();
    let err = api_status(api.create(&PostParams::default(), &bad).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        err.message,
        "Widget.example.com \"bad\" is invalid: spec: Invalid value: \"object\": must define either the 'portName' or the 'port'"
    );
    let causes = err.details.unwrap().causes;
    assert_eq!(causes[0].field, "spec");

    crds.delete("widgets.example.com", &DeleteParams::default())
        .await
        .unwrap();
    let gone = api_status(api.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(gone.code, 404);
}

#[tokio::test]
async fn the_keda_scaled_object_crd_is_preinstalled() {
    let sim = sim().await;
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("keda.sh", "v1alpha1", "ScaledObject"),
        "scaledobjects",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(sim.client(), "default", &ar);
    // KEDA's own CRD: its schema applies (see tests/keda.rs for what it refuses).
    let so: DynamicObject = serde_json::from_value(json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "so"}, "spec": {"scaleTargetRef": {"name": "app"}, "triggers": [{"type": "external", "metadata": {"scalerAddress": "scaler:9090"}}]}})).unwrap();
    let created = api.create(&PostParams::default(), &so).await.unwrap();
    assert_eq!(created.data["spec"]["triggers"][0]["type"], "external");
    let st = api
        .patch_status(
            "so",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}})),
        )
        .await
        .unwrap();
    assert_eq!(st.data["status"]["conditions"][0]["type"], "Ready");
}

#[tokio::test]
async fn restarting_the_api_server_keeps_state_and_watches_resume() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());
    api.create(&PostParams::default(), &cm("before", &[]))
        .await
        .unwrap();
    let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
    loop {
        if let watcher::Event::InitDone = tokio::time::timeout(DEADLINE, events.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            break;
        }
    }
    sim.stop_apiserver().await;
    assert!(
        api.get("before").await.is_err(),
        "requests fail while the server is down"
    );
    sim.start_apiserver().await.unwrap();
    api.create(&PostParams::default(), &cm("after", &[]))
        .await
        .unwrap();
    assert!(api.get("before").await.is_ok());
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let next = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("the watcher resumes");
        if let Some(Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c))) = next
            && c.metadata.name.as_deref() == Some("after")
        {
            break;
        }
    }
}

#[tokio::test]
async fn server_side_apply_conflicts_without_force() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let obj = |v: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owned"}, "data": {"k": v}});
    api.patch(
        "owned",
        &PatchParams::apply("first"),
        &Patch::Apply(obj("1")),
    )
    .await
    .unwrap();
    // Applying the same value is no conflict; a different value is.
    api.patch(
        "owned",
        &PatchParams::apply("second"),
        &Patch::Apply(obj("1")),
    )
    .await
    .unwrap();
    let err = api_status(
        api.patch(
            "owned",
            &PatchParams::apply("third"),
            &Patch::Apply(obj("2")),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(
        err.message.contains("conflict with \"first\"") && err.message.contains(".data.k"),
        "{}",
        err.message
    );
    let forced = api
        .patch(
            "owned",
            &PatchParams::apply("third").force(),
            &Patch::Apply(obj("2")),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["k"], "2");
}

#[tokio::test]
async fn watch_timeout_seconds_ends_the_stream() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let stream = api
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .unwrap();
    let events: Vec<_> = tokio::time::timeout(DEADLINE, stream.collect::<Vec<_>>())
        .await
        .expect("the watch ends after timeoutSeconds");
    assert!(
        events
            .iter()
            .all(|e| matches!(e, Ok(WatchEvent::Bookmark(_)))),
        "{events:?}"
    );
}

#[tokio::test]
async fn delete_collection_removes_the_selected_objects() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());
    for (name, app) in [("a", "x"), ("b", "x"), ("c", "y")] {
        let mut c = cm(name, &[]);
        c.metadata.labels = Some([("app".to_string(), app.to_string())].into());
        api.create(&PostParams::default(), &c).await.unwrap();
    }
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("app=x"),
    )
    .await
    .unwrap();
    let left: Vec<String> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert_eq!(left, ["c"]);
}

#[tokio::test]
async fn deleting_a_namespace_deletes_its_objects() {
    let sim = sim().await;
    create_namespace(&sim, "doomed").await;
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "doomed");
    api.create(&PostParams::default(), &cm("inside", &[]))
        .await
        .unwrap();
    let namespaces: Api<Namespace> = Api::all(sim.client());
    let terminating = namespaces
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .expect("a namespace is deleted asynchronously");
    assert_eq!(
        terminating.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );
    eventually("the namespace and its objects to go", || async {
        (api.get_opt("inside").await.unwrap().is_none()
            && namespaces.get_opt("doomed").await.unwrap().is_none())
        .then_some(())
    })
    .await;
    let err = api_status(
        namespaces
            .delete("default", &DeleteParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 403);
}

#[tokio::test]
async fn kube_runtime_finalizer_patches_apply() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());
    api.create(&PostParams::default(), &cm("f", &[]))
        .await
        .unwrap();
    // What kube_runtime::finalizer sends to add the first finalizer and later remove it.
    let add: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/finalizers", "value": null},
        {"op": "add", "path": "/metadata/finalizers", "value": ["example.com/f"]},
    ]))
    .unwrap();
    let added = api
        .patch(
            "f",
            &PatchParams::default(),
            &Patch::Json::<()>(add.clone()),
        )
        .await
        .unwrap();
    assert_eq!(added.metadata.finalizers.unwrap(), ["example.com/f"]);
    // The same `test` now fails: the finalizers are no longer null.
    let err = api_status(
        api.patch("f", &PatchParams::default(), &Patch::Json::<()>(add))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    api.delete("f", &DeleteParams::default()).await.unwrap();
    let remove: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/finalizers/0", "value": "example.com/f"},
        {"op": "remove", "path": "/metadata/finalizers/0"},
    ]))
    .unwrap();
    api.patch("f", &PatchParams::default(), &Patch::Json::<()>(remove))
        .await
        .unwrap();
    assert!(api.get_opt("f").await.unwrap().is_none());
}

#[tokio::test]
async fn the_kubeconfig_file_works_with_kube_rs() {
    let sim = sim().await;
    let kubeconfig = kube::config::Kubeconfig::read_from(sim.kubeconfig_path()).unwrap();
    assert_eq!(kubeconfig.current_context.as_deref(), Some("sim"));
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    assert_eq!(
        config.cluster_url.to_string().trim_end_matches('/'),
        sim.url()
    );
    let client = kube::Client::try_from(config).unwrap();
    let namespaces: Api<Namespace> = Api::all(client);
    assert!(namespaces.get("default").await.is_ok());
    let dir = sim.kubeconfig_path().parent().unwrap().to_path_buf();
    sim.shutdown().await;
    assert!(
        !dir.exists(),
        "the temporary kubeconfig directory is removed"
    );
}
