//! APIs the simulated API server serves because kube-rs's cluster tests (`cargo xtask
//! conformance`) and kubectl reach them (issue #16): review APIs, service-account tokens,
//! aggregated discovery, metadata-only answers, subresources and the objects every cluster
//! has. Each test asserts what kube-apiserver answers.

use std::collections::BTreeMap;
use std::time::Duration;

use http_add_on_sim::apiserver::reviews::{AccessRule, AuthConfig, UserInfo};
use http_add_on_sim::{Sim, SimConfig};
use http_body_util::BodyExt;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec, TokenReview};
use k8s_openapi::api::authorization::v1::{SelfSubjectAccessReview, SubjectAccessReview};
use k8s_openapi::api::core::v1::{ComponentStatus, ConfigMap, Node, Pod, Service, ServiceAccount};
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

async fn sim_with_auth(auth: AuthConfig) -> Sim {
    Sim::start(SimConfig {
        auth,
        ..SimConfig::apiserver_only()
    })
    .await
    .expect("sim starts")
}

/// Sends a request with the given headers; returns the status, the Content-Type and the body.
async fn send(
    sim: &Sim,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> (u16, String, Value) {
    let mut req = http::Request::builder().method(method).uri(path);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let body = if body.is_null() {
        vec![]
    } else {
        body.to_string().into_bytes()
    };
    let resp = sim
        .client()
        .send(req.body(kube::client::Body::from(body)).expect("request"))
        .await
        .expect("request sent");
    let code = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|c| c.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| panic!("JSON body, got {:?}", String::from_utf8_lossy(&bytes)));
    (code, content_type, value)
}

fn review(token: &str, audiences: &[&str]) -> TokenReview {
    serde_json::from_value(json!({"spec": {"token": token, "audiences": audiences}}))
        .expect("TokenReview")
}

async fn service_account_token(sim: &Sim, name: &str, audiences: &[&str]) -> String {
    let accounts: Api<ServiceAccount> = Api::namespaced(sim.client(), "default");
    accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}})).expect("SA"),
        )
        .await
        .expect("service account created");
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audiences.iter().map(|a| a.to_string()).collect(),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let answer = accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .expect("token request");
    let status = answer.status.expect("status");
    assert!(
        status.expiration_timestamp.0 > jiff::Timestamp::now(),
        "the token expires in the future"
    );
    assert_eq!(
        answer.spec.expiration_seconds,
        Some(3600),
        "the default lifetime is an hour"
    );
    status.token
}

#[tokio::test]
async fn a_service_account_token_passes_token_review_with_the_service_account_as_user() {
    let sim = sim().await;
    let token = service_account_token(&sim, "scraper", &["api"]).await;
    let reviews: Api<TokenReview> = Api::all(sim.client());
    let answer = reviews
        .create(&PostParams::default(), &review(&token, &["api"]))
        .await
        .expect("review");
    let status = answer.status.expect("status");
    assert_eq!(status.authenticated, Some(true));
    assert_eq!(status.error, None);
    assert_eq!(status.audiences, Some(vec!["api".to_string()]));
    let user = status.user.expect("user");
    assert_eq!(
        user.username.as_deref(),
        Some("system:serviceaccount:default:scraper")
    );
    let groups = user.groups.unwrap_or_default();
    for group in [
        "system:serviceaccounts",
        "system:serviceaccounts:default",
        "system:authenticated",
    ] {
        assert!(groups.iter().any(|g| g == group), "{group} in {groups:?}");
    }
}

#[tokio::test]
async fn token_review_rejects_other_audiences_unknown_tokens_and_deleted_accounts() {
    let sim = sim().await;
    let token = service_account_token(&sim, "scraper", &["api"]).await;
    let reviews: Api<TokenReview> = Api::all(sim.client());
    let rejected = |answer: TokenReview| {
        let status = answer.status.expect("status");
        assert_ne!(status.authenticated, Some(true), "{status:?}");
        status.error.expect("an error says why")
    };

    let wrong_audience = reviews
        .create(&PostParams::default(), &review(&token, &["other"]))
        .await
        .expect("review");
    let error = rejected(wrong_audience);
    assert!(error.contains("audiences"), "{error}");

    let unknown = reviews
        .create(&PostParams::default(), &review("not-a-token", &[]))
        .await
        .expect("review");
    assert!(rejected(unknown).contains("invalid bearer token"));

    let accounts: Api<ServiceAccount> = Api::namespaced(sim.client(), "default");
    accounts
        .delete("scraper", &DeleteParams::default())
        .await
        .expect("deleted");
    let deleted = reviews
        .create(&PostParams::default(), &review(&token, &["api"]))
        .await
        .expect("review");
    assert!(rejected(deleted).contains("deleted"));
}

#[tokio::test]
async fn a_token_request_for_less_than_ten_minutes_is_invalid() {
    let sim = sim().await;
    let accounts: Api<ServiceAccount> = Api::namespaced(sim.client(), "default");
    accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "sa"}})).expect("SA"),
        )
        .await
        .expect("created");
    let (code, _, status) = send(
        &sim,
        "POST",
        "/api/v1/namespaces/default/serviceaccounts/sa/token",
        &[("content-type", "application/json")],
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 60}}),
    )
    .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(
        status["details"]["causes"][0]["field"],
        "spec.expirationSeconds"
    );
    let (code, _, status) = send(
        &sim,
        "POST",
        "/api/v1/namespaces/default/serviceaccounts/missing/token",
        &[("content-type", "application/json")],
        json!({"spec": {}}),
    )
    .await;
    assert_eq!(code, 404, "{status}");
    assert_eq!(status["message"], "serviceaccounts \"missing\" not found");
}

#[tokio::test]
async fn a_configured_static_token_authenticates_as_its_user() {
    let sim = sim_with_auth(AuthConfig {
        tokens: BTreeMap::from([(
            "prometheus-token".to_string(),
            UserInfo::new("prometheus", &["monitoring"]),
        )]),
        ..AuthConfig::default()
    })
    .await;
    let reviews: Api<TokenReview> = Api::all(sim.client());
    let status = reviews
        .create(&PostParams::default(), &review("prometheus-token", &[]))
        .await
        .expect("review")
        .status
        .expect("status");
    assert_eq!(status.authenticated, Some(true));
    let user = status.user.expect("user");
    assert_eq!(user.username.as_deref(), Some("prometheus"));
    assert_eq!(
        user.groups,
        Some(vec![
            "monitoring".to_string(),
            "system:authenticated".to_string()
        ])
    );
}

fn access_review(user: &str, verb: &str, resource: Value) -> SubjectAccessReview {
    let mut spec = json!({"user": user});
    if resource.get("path").is_some() {
        spec["nonResourceAttributes"] = resource;
        spec["nonResourceAttributes"]["verb"] = json!(verb);
    } else {
        spec["resourceAttributes"] = resource;
        spec["resourceAttributes"]["verb"] = json!(verb);
    }
    serde_json::from_value(json!({"spec": spec})).expect("SubjectAccessReview")
}

#[tokio::test]
async fn subject_access_reviews_allow_everything_but_the_configured_denials() {
    let sim = sim_with_auth(AuthConfig {
        deny: vec![
            "intruder:get:/metrics".parse::<AccessRule>().expect("rule"),
            "*:delete:apps/deployments".parse().expect("rule"),
        ],
        ..AuthConfig::default()
    })
    .await;
    let reviews: Api<SubjectAccessReview> = Api::all(sim.client());
    let allowed = |user: &'static str, verb: &'static str, resource: Value| {
        let reviews = reviews.clone();
        async move {
            reviews
                .create(&PostParams::default(), &access_review(user, verb, resource))
                .await
                .expect("review")
                .status
                .expect("status")
                .allowed
        }
    };
    assert!(allowed("scraper", "get", json!({"path": "/metrics"})).await);
    assert!(!allowed("intruder", "get", json!({"path": "/metrics"})).await);
    assert!(
        allowed(
            "anyone",
            "get",
            json!({"group": "apps", "resource": "deployments"})
        )
        .await
    );
    assert!(
        !allowed(
            "anyone",
            "delete",
            json!({"group": "apps", "resource": "deployments", "namespace": "default"})
        )
        .await
    );

    // Neither user nor groups: Kubernetes refuses the review.
    let (code, _, _) = send(
        &sim,
        "POST",
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        &[("content-type", "application/json")],
        json!({"spec": {"nonResourceAttributes": {"path": "/metrics", "verb": "get"}}}),
    )
    .await;
    assert!(code >= 400, "{code}");
}

#[tokio::test]
async fn self_subject_access_review_acts_as_the_bearer_of_the_token() {
    let sim = sim_with_auth(AuthConfig {
        tokens: BTreeMap::from([("t".to_string(), UserInfo::new("limited", &[]))]),
        deny: vec!["limited:list:secrets".parse().expect("rule")],
    })
    .await;
    let body = json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"verb": "list", "resource": "secrets", "namespace": "default"}},
    });
    let path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
    let json_ct = ("content-type", "application/json");
    let (code, _, as_admin) = send(&sim, "POST", path, &[json_ct], body.clone()).await;
    assert_eq!(code, 201);
    let as_admin: SelfSubjectAccessReview = serde_json::from_value(as_admin).expect("review");
    assert!(as_admin.status.expect("status").allowed);
    let (_, _, as_limited) = send(
        &sim,
        "POST",
        path,
        &[json_ct, ("authorization", "Bearer t")],
        body,
    )
    .await;
    assert_eq!(as_limited["status"]["allowed"], false, "{as_limited}");

    // kubectl auth whoami.
    let (code, _, whoami) = send(
        &sim,
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        &[json_ct, ("authorization", "Bearer t")],
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}),
    )
    .await;
    assert_eq!(code, 201);
    assert_eq!(whoami["status"]["userInfo"]["username"], "limited");
}

#[tokio::test]
async fn review_apis_are_create_only() {
    let sim = sim().await;
    let (code, _, status) = send(
        &sim,
        "GET",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        &[],
        Value::Null,
    )
    .await;
    assert_eq!(code, 405, "{status}");
    assert_eq!(status["reason"], "MethodNotAllowed");
    let (_, _, list) = send(
        &sim,
        "GET",
        "/apis/authorization.k8s.io/v1",
        &[],
        Value::Null,
    )
    .await;
    let ssar = list["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["name"] == "selfsubjectaccessreviews")
        .expect("listed");
    assert_eq!(ssar["verbs"], json!(["create"]));
}

#[tokio::test]
async fn every_cluster_has_the_kubernetes_service_and_component_statuses() {
    let sim = sim().await;
    let services: Api<Service> = Api::namespaced(sim.client(), "default");
    let kubernetes = services
        .get("kubernetes")
        .await
        .expect("default/kubernetes");
    let labels = kubernetes.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels.get("component").map(String::as_str),
        Some("apiserver")
    );
    let spec = kubernetes.spec.expect("spec");
    assert!(
        spec.selector.is_none(),
        "the API server's endpoints are its own"
    );
    let port = &spec.ports.expect("ports")[0];
    assert_eq!((port.name.as_deref(), port.port), (Some("https"), 443));

    let statuses: Api<ComponentStatus> = Api::all(sim.client());
    let scheduler = statuses.get("scheduler").await.expect("scheduler");
    let healthy = &scheduler.conditions.expect("conditions")[0];
    assert_eq!(
        (healthy.type_.as_str(), healthy.status.as_str()),
        ("Healthy", "True")
    );

    // The API server's own group versions are local APIServices, always Available.
    let (code, _, apps) = send(
        &sim,
        "GET",
        "/apis/apiregistration.k8s.io/v1/apiservices/v1.apps",
        &[],
        Value::Null,
    )
    .await;
    assert_eq!(code, 200, "{apps}");
    assert_eq!(apps["spec"]["group"], "apps");
    assert!(apps["spec"].get("service").is_none());
    assert_eq!(apps["status"]["conditions"][0]["type"], "Available");
    assert_eq!(apps["status"]["conditions"][0]["status"], "True");
}

#[tokio::test]
async fn a_node_without_spec_unschedulable_matches_unschedulable_false() {
    let sim = sim().await;
    let nodes: Api<Node> = Api::all(sim.client());
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "n1"}})).expect("node"),
        )
        .await
        .expect("created");
    let schedulable = ListParams::default().fields("spec.unschedulable==false");
    let names = |list: kube::core::ObjectList<Node>| -> Vec<String> {
        list.items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect()
    };
    assert_eq!(names(nodes.list(&schedulable).await.expect("list")), ["n1"]);
    nodes.cordon("n1").await.expect("cordoned");
    assert!(names(nodes.list(&schedulable).await.expect("list")).is_empty());
}

#[tokio::test]
async fn aggregated_discovery_is_served_to_clients_that_ask_for_it() {
    let sim = sim().await;
    let accept =
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
    let (code, content_type, apis) =
        send(&sim, "GET", "/apis", &[("accept", accept)], Value::Null).await;
    assert_eq!(code, 200);
    assert_eq!(
        content_type,
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    );
    assert_eq!(apis["kind"], "APIGroupDiscoveryList");
    assert_eq!(apis["apiVersion"], "apidiscovery.k8s.io/v2");
    let apps = apis["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|g| g["metadata"]["name"] == "apps")
        .expect("apps group");
    let deployments = apps["versions"][0]["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["resource"] == "deployments")
        .expect("deployments");
    assert_eq!(deployments["scope"], "Namespaced");
    assert_eq!(
        deployments["responseKind"],
        json!({"group": "apps", "version": "v1", "kind": "Deployment"})
    );
    let scale = deployments["subresources"]
        .as_array()
        .expect("subresources")
        .iter()
        .find(|s| s["subresource"] == "scale")
        .expect("scale");
    assert_eq!(scale["responseKind"]["group"], "autoscaling");

    let (_, _, core) = send(&sim, "GET", "/api", &[("accept", accept)], Value::Null).await;
    assert_eq!(core["items"][0]["versions"][0]["version"], "v1");

    // Without the media type: the legacy documents.
    let (_, content_type, legacy) = send(&sim, "GET", "/apis", &[], Value::Null).await;
    assert_eq!(content_type, "application/json");
    assert_eq!(legacy["kind"], "APIGroupList");
}

#[tokio::test]
async fn metadata_only_answers_are_partial_object_metadata() {
    let sim = sim().await;
    let pods: Api<Pod> = Api::namespaced(sim.client(), "default");
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "p", "labels": {"app": "x"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
        }))
        .expect("pod"),
    )
    .await
    .expect("created");
    let one = pods.get_metadata("p").await.expect("metadata");
    let types = one.types.expect("types");
    assert_eq!(
        (types.kind.as_str(), types.api_version.as_str()),
        ("PartialObjectMetadata", "meta.k8s.io/v1")
    );
    assert_eq!(
        one.metadata
            .labels
            .unwrap_or_default()
            .get("app")
            .map(String::as_str),
        Some("x")
    );

    let accept_list = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
    let (code, _, list) = send(
        &sim,
        "GET",
        "/api/v1/namespaces/default/pods",
        &[("accept", accept_list)],
        Value::Null,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(list["kind"], "PartialObjectMetadataList");
    assert_eq!(list["items"][0]["kind"], "PartialObjectMetadata");
    assert!(list["items"][0].get("spec").is_none(), "{list}");

    // A list asked for as one object, or the reverse, is not acceptable.
    let (code, _, status) = send(
        &sim,
        "GET",
        "/api/v1/namespaces/default/pods",
        &[(
            "accept",
            "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
        )],
        Value::Null,
    )
    .await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (406, Some("NotAcceptable"))
    );
    let (code, _, _) = send(
        &sim,
        "GET",
        "/api/v1/namespaces/default/pods/p",
        &[("accept", accept_list)],
        Value::Null,
    )
    .await;
    assert_eq!(code, 406);
}

#[tokio::test]
async fn the_ephemeral_containers_subresource_changes_only_ephemeral_containers() {
    let sim = sim().await;
    let pods: Api<Pod> = Api::namespaced(sim.client(), "default");
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
        }))
        .expect("pod"),
    )
    .await
    .expect("created");
    let written: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p", "labels": {"ignored": "yes"}},
        "spec": {
            "containers": [{"name": "other", "image": "ignored"}],
            "ephemeralContainers": [{"name": "debug", "image": "busybox"}],
        },
    }))
    .expect("pod");
    let pod = pods
        .replace_ephemeral_containers("p", &PostParams::default(), &written)
        .await
        .expect("replaced");
    let spec = pod.spec.expect("spec");
    assert_eq!(spec.containers[0].name, "c", "containers are kept");
    assert_eq!(
        spec.ephemeral_containers.expect("ephemeral")[0].name,
        "debug"
    );
    assert!(
        !pod.metadata
            .labels
            .unwrap_or_default()
            .contains_key("ignored"),
        "metadata is not written through the subresource"
    );
}

#[tokio::test]
async fn csr_approval_changes_only_the_conditions() {
    let sim = sim().await;
    let csr = json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": "c"},
        "spec": {"request": "LS0t", "signerName": "example.com/x", "usages": ["client auth"]},
    });
    let path = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
    let json_ct = ("content-type", "application/json");
    let (code, _, _) = send(&sim, "POST", path, &[json_ct], csr).await;
    assert_eq!(code, 201);
    let (code, _, approved) = send(
        &sim,
        "PATCH",
        &format!("{path}/c/approval"),
        &[("content-type", "application/merge-patch+json")],
        json!({
            "spec": {"signerName": "example.com/changed"},
            "status": {
                "conditions": [{"type": "Approved", "status": "True", "reason": "Test"}],
                "certificate": "aWdub3JlZA==",
            },
        }),
    )
    .await;
    assert_eq!(code, 200, "{approved}");
    assert_eq!(approved["status"]["conditions"][0]["type"], "Approved");
    assert_eq!(approved["spec"]["signerName"], "example.com/x");
    assert!(
        approved["status"].get("certificate").is_none(),
        "{approved}"
    );
}

/// Waits (with a deadline) until the named ConfigMap is gone.
async fn until_deleted(cms: &Api<ConfigMap>, cm: &ConfigMap) {
    let name = cm.metadata.name.clone().expect("name");
    let uid = cm.metadata.uid.clone().expect("uid");
    tokio::time::timeout(
        DEADLINE,
        await_condition(cms.clone(), &name, conditions::is_deleted(&uid)),
    )
    .await
    .unwrap_or_else(|_| panic!("{name} deleted within {DEADLINE:?}"))
    .expect("watch");
}

#[tokio::test]
async fn foreground_deletion_deletes_blocking_dependents_before_the_owner() {
    let sim = sim().await;
    let cms: Api<ConfigMap> = Api::namespaced(sim.client(), "default");
    let pp = PostParams::default();
    let owner = cms
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": "owner"}})).expect("cm"),
        )
        .await
        .expect("owner");
    let reference = |block: bool| {
        json!([{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
            "uid": owner.metadata.uid, "blockOwnerDeletion": block,
        }])
    };
    let blocker = cms
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {
                "name": "blocker", "ownerReferences": reference(true), "finalizers": ["test/hold"],
            }}))
            .expect("cm"),
        )
        .await
        .expect("blocker");
    let free = cms
        .create(
            &pp,
            &serde_json::from_value(
                json!({"metadata": {"name": "free", "ownerReferences": reference(false)}}),
            )
            .expect("cm"),
        )
        .await
        .expect("free");

    // The answer is the owner, marked: deletionTimestamp and the foregroundDeletion finalizer.
    let marked = cms
        .delete("owner", &DeleteParams::foreground())
        .await
        .expect("delete")
        .left()
        .expect("the owner is still there");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(
        marked.metadata.finalizers,
        Some(vec!["foregroundDeletion".to_string()])
    );

    // Every dependent is deleted; the one whose reference blocks holds the owner.
    until_deleted(&cms, &free).await;
    let held = tokio::time::timeout(
        DEADLINE,
        await_condition(cms.clone(), "blocker", |cm: Option<&ConfigMap>| {
            cm.is_some_and(|cm| cm.metadata.deletion_timestamp.is_some())
        }),
    )
    .await
    .expect("blocker marked within the deadline")
    .expect("watch")
    .expect("blocker still there");
    assert_eq!(
        held.metadata.finalizers,
        Some(vec!["test/hold".to_string()])
    );
    let owner_now = cms.get("owner").await.expect("the owner waits for it");
    assert!(owner_now.metadata.deletion_timestamp.is_some());

    // Releasing the blocker lets the owner go.
    cms.patch(
        "blocker",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("finalizer removed");
    until_deleted(&cms, &blocker).await;
    until_deleted(&cms, &owner).await;
}

#[tokio::test]
async fn openapi_documents_carry_the_crd_schemas() {
    let sim = sim().await;
    http_add_on_testkit::cluster::install_crds(&sim.client()).await;
    let name = "sh.keda.http.v1alpha1.HTTPScaledObject";
    let (_, _, root) = send(&sim, "GET", "/openapi/v3", &[], Value::Null).await;
    let url = root["paths"]["apis/http.keda.sh/v1alpha1"]["serverRelativeURL"]
        .as_str()
        .expect("the group version is listed")
        .to_string();
    let (code, _, doc) = send(&sim, "GET", &url, &[], Value::Null).await;
    assert_eq!(code, 200);
    let schema = &doc["components"]["schemas"][name];
    assert_eq!(
        schema["x-kubernetes-group-version-kind"],
        json!([{"group": "http.keda.sh", "version": "v1alpha1", "kind": "HTTPScaledObject"}])
    );
    assert!(schema["properties"]["spec"]["properties"]["scaleTargetRef"].is_object());

    // Built-in types carry the strategic-merge keys kubectl's client-side apply reads.
    let core = root["paths"]["api/v1"]["serverRelativeURL"]
        .as_str()
        .expect("api/v1 is listed")
        .to_string();
    let (_, _, core) = send(&sim, "GET", &core, &[], Value::Null).await;
    let containers =
        &core["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
    assert_eq!(
        containers["x-kubernetes-patch-merge-key"], "name",
        "{containers}"
    );
    assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
    assert_eq!(
        core["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["get"]["x-kubernetes-group-version-kind"],
        json!({"group": "", "version": "v1", "kind": "Pod"})
    );

    // JSON clients get v2 with the same definitions; protobuf clients (client-go) an empty one.
    let (code, _, v2) = send(
        &sim,
        "GET",
        "/openapi/v2",
        &[("accept", "application/json")],
        Value::Null,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(v2["swagger"], "2.0");
    assert!(
        v2["definitions"][name]["properties"]["spec"].is_object(),
        "{v2}"
    );
}
