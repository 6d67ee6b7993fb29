//! Static replies as upstream answers them: default status codes of placeholders and static
//! routes, and content types of ConfigMap bodies by extension.

mod common;

use common::World;
use http::StatusCode;
use kube::Api;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_status_codes_and_content_types() {
    let w = World::start().await;
    w.expose("cold", "http", &[]).await;
    let cm: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "assets", "labels": { "http.keda.sh/response-body": "true" } },
        "data": { "logo.svg": "<svg/>", "font.woff2": "woff" }
    }))
    .unwrap();
    common::apply(&Api::default_namespaced(w.client.clone()), &cm).await;
    w.apply_ir(json!({
        "apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
        "metadata": { "name": "defaults" },
        "spec": {
            "target": { "service": "cold", "port": 80 },
            "rules": [{ "hosts": ["defaults.test"] }],
            "scalingMetric": { "concurrency": { "targetValue": 1 } },
            "coldStart": { "placeholder": { "response": { "body": "warming up" } } },
            "staticRoutes": [
                { "rules": [{ "paths": [{ "value": "/static" }] }], "responseMode": "Always",
                  "response": { "body": "static" } },
                { "rules": [{ "paths": [{ "value": "/font" }] }], "responseMode": "Always",
                  "response": { "bodyFromConfigMap": { "name": "assets", "key": "font.woff2" } } }
            ]
        }
    }))
    .await;
    // A placeholder without statusCode: 503, served at once.
    let placeholder = w.wait_routed("defaults.test", "/").await;
    assert_eq!(placeholder.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(placeholder.text(), "warming up");
    // A static route without statusCode: 200.
    let stat = w.get("defaults.test", "/static").await;
    assert_eq!(
        (stat.status, stat.text().as_str()),
        (StatusCode::OK, "static")
    );
    let font = common::eventually("the ConfigMap body", || async {
        let r = w.get("defaults.test", "/font").await;
        (r.text() == "woff").then_some(r)
    })
    .await;
    assert_eq!(font.status, StatusCode::OK);
    assert_eq!(font.header("content-type"), Some("font/woff2"));
}
