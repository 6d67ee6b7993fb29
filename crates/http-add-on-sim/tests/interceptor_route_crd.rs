//! The InterceptorRoute CRD's `coldStart` rules (upstream 0.16), enforced by the simulated API
//! server from the CRD `cargo xtask codegen` generates: a 0.16 manifest that sets only
//! `maxPendingRequests` applies unchanged, and the invalid shapes are 422s with the rule's message.

use http_add_on_testkit::cluster::Cluster;
use http_add_on_types::crd::InterceptorRoute;
use kube::Api;
use kube::api::{DynamicObject, PostParams};
use kube::discovery::ApiResource;
use serde_json::{Value, json};

/// An upstream 0.16 InterceptorRoute with `cold_start` as its `spec.coldStart`.
fn route(name: &str, cold_start: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
        "metadata": { "name": name, "namespace": "default" },
        "spec": {
            "target": { "service": "app", "port": 8080 },
            "rules": [{ "hosts": ["app.example.com"] }],
            "scalingMetric": { "concurrency": { "targetValue": 10 } },
            "coldStart": cold_start
        }
    }))
    .expect("a DynamicObject")
}

async fn create(api: &Api<DynamicObject>, obj: &DynamicObject) -> Result<(), (u16, String)> {
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) => Err((status.code, status.message)),
        Err(error) => panic!("the API server answers: {error}"),
    }
}

#[tokio::test]
async fn cold_start_rules_of_upstream_0_16() {
    let cluster = Cluster::apiserver_only().await;
    let resource = ApiResource::erase::<InterceptorRoute>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(cluster.client(), "default", &resource);

    for (name, cold_start) in [
        ("pending-only", json!({ "maxPendingRequests": 100 })),
        (
            "overflow-placeholder",
            json!({
                "maxPendingRequests": 5, "overflow": "Placeholder",
                "placeholder": { "response": { "body": "starting" } }
            }),
        ),
        (
            "reject",
            json!({ "maxPendingRequests": 1, "overflow": "Reject",
                    "fallback": { "service": { "name": "fb", "port": 80 } } }),
        ),
    ] {
        create(&api, &route(name, cold_start.clone()))
            .await
            .unwrap_or_else(|e| panic!("{name} ({cold_start}) is valid: {e:?}"));
        let typed: Api<InterceptorRoute> = Api::default_namespaced(cluster.client());
        let stored = typed.get(name).await.expect("stored");
        let cold = stored.spec.cold_start.expect("coldStart kept");
        assert_eq!(
            cold.max_pending_requests,
            cold_start["maxPendingRequests"].as_i64().map(|n| n as i32),
            "{name}"
        );
    }

    for (name, cold_start, message) in [
        (
            "nothing",
            json!({}),
            "at least one of 'fallback', 'placeholder' or 'maxPendingRequests' must be set",
        ),
        (
            "overflow-without-placeholder",
            json!({ "maxPendingRequests": 5, "overflow": "Placeholder" }),
            "overflow 'Placeholder' requires 'placeholder'",
        ),
        (
            "zero",
            json!({ "maxPendingRequests": 0 }),
            "should be greater than or equal to 1",
        ),
        (
            "unknown-overflow",
            json!({ "maxPendingRequests": 5, "overflow": "Drop" }),
            "Unsupported value: \"Drop\"",
        ),
    ] {
        let (code, text) = create(&api, &route(name, cold_start))
            .await
            .expect_err(name);
        assert_eq!(code, 422, "{name}: {text}");
        assert!(text.contains(message), "{name}: {text:?} lacks {message:?}");
        assert!(
            text.contains("spec.coldStart"),
            "{name}: {text:?} names the field"
        );
    }
    cluster.shutdown().await;
}
