//! Every kind of manifest the suite applies on a cluster (kind in CI), built by the same
//! functions the scenarios and the kind testbed use, without a cluster: `http-add-on-e2e
//! manifests` prints them and `cargo xtask chart check` validates them strictly against the
//! Kubernetes schemas (KEDA's for ScaledObjects, the generated CRDs' for ours), as a first
//! `kubectl apply` on a real cluster would.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::app::{self, App};
use crate::kind::{INTERCEPTOR_SELECTOR, node_port_service};
use crate::scenarios::scaling;

/// (what, manifest) for every manifest shape: the namespace of a scenario, sample apps (with
/// and without delays and replicas), HTTPScaledObjects with the kinds of spec additions the
/// scenarios make (copied from them), the user-written InterceptorRoutes with their
/// ScaledObjects, and the kind testbed's NodePort Service.
pub fn kind_manifests() -> Vec<(String, Value)> {
    let ns = "e2e-manifests";
    let host = format!("{ns}.test");
    let plain = App::new(ns, "app");
    let delayed = App::new(ns, "slow")
        .startup_delay("120s")
        .response_delay("200ms")
        .replicas(1);
    let mut out = vec![("scenario namespace".to_owned(), app::namespace(ns))];
    for (what, app) in [("sample app", &plain), ("sample app with delays", &delayed)] {
        out.push((format!("{what} Deployment"), app.deployment()));
        out.push((format!("{what} Service"), app.service()));
    }
    for extra in [
        json!({}),
        json!({"timeouts": {"conditionWait": "1s"}}),
        json!({"coldStartTimeoutFailoverRef": {"service": "fallback", "port": 8080, "timeoutSeconds": 1}}),
        // The additions of the scaling, resilience and routing scenarios.
        json!({"scalingMetric": {"concurrency": {"targetValue": 4}}, "replicas": {"min": 0, "max": 5}, "scaledownPeriod": 3}),
        json!({
            "scalingMetric": {"requestRate": {"targetValue": 10, "window": "10s", "granularity": "1s"}},
            "replicas": {"min": 0, "max": 4}, "scaledownPeriod": 3
        }),
        json!({"replicas": {"min": 1, "max": 2}, "scaleTargetRef": {"port": null, "portName": "http"}}),
        json!({"pathPrefixes": ["/api"], "headers": [{"name": "X-Canary", "value": "yes"}]}),
    ] {
        out.push((
            format!("HTTPScaledObject with {extra}"),
            app::http_scaled_object(&plain, &[&host], extra),
        ));
    }
    for (what, metrics) in [
        ("InterceptorRoute by both metrics", scaling::route_metrics()),
        (
            "InterceptorRoute by concurrency under load",
            scaling::both_metrics(4),
        ),
    ] {
        let [route, scaled_object] = scaling::user_route(ns, &host, metrics, 8, 1);
        out.push((what.to_owned(), route));
        out.push((format!("{what}: the user's ScaledObject"), scaled_object));
    }
    let [route, scaled_object] = crate::scenarios::pending::limited_route(ns, &host);
    out.push(("InterceptorRoute with a pending limit".to_owned(), route));
    out.push((
        "InterceptorRoute with a pending limit: the user's ScaledObject".to_owned(),
        scaled_object,
    ));
    let selector: BTreeMap<String, String> = INTERCEPTOR_SELECTOR
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    out.push((
        "kind testbed's NodePort Service".to_owned(),
        node_port_service("keda", &selector, 8080, json!("proxy")),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_manifest_names_its_kind_and_object() {
        let manifests = kind_manifests();
        for (what, m) in &manifests {
            assert!(
                m["apiVersion"].is_string() && m["kind"].is_string(),
                "{what}: {m}"
            );
            assert!(m["metadata"]["name"].is_string(), "{what}: {m}");
        }
        for kind in [
            "Namespace",
            "Deployment",
            "Service",
            "HTTPScaledObject",
            "InterceptorRoute",
            "ScaledObject",
        ] {
            assert!(
                manifests.iter().any(|(_, m)| m["kind"] == kind),
                "no {kind}"
            );
        }
    }
}
