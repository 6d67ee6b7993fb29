//! Routing rules of both CRD kinds, in the form the route table takes.

use kube::ResourceExt;

use super::interceptor_route::RoutingRule;
use super::{HTTPScaledObject, InterceptorRoute};
use crate::routing::{HeaderMatch, Route, RouteKey, RouteKind, RouteRule};

/// The single rule of an HTTPScaledObject: its hosts, path prefixes and headers.
pub fn http_scaled_object_rules(hso: &HTTPScaledObject) -> Vec<RouteRule> {
    vec![RouteRule {
        hosts: hso.spec.hosts.clone(),
        paths: hso.spec.path_prefixes.clone(),
        headers: hso
            .spec
            .headers
            .iter()
            .map(|h| HeaderMatch {
                name: h.name.clone(),
                value: h.value.clone(),
            })
            .collect(),
    }]
}

/// One InterceptorRoute routing rule (also used by static routes) as the route table takes it.
pub fn routing_rule(rule: &RoutingRule) -> RouteRule {
    RouteRule {
        hosts: rule.hosts.clone(),
        paths: rule.paths.iter().map(|p| p.value.clone()).collect(),
        headers: rule
            .headers
            .iter()
            .map(|h| HeaderMatch {
                name: h.name.clone(),
                value: h.value.clone(),
            })
            .collect(),
    }
}

/// The rules of an InterceptorRoute; a route without rules matches every request.
pub fn interceptor_route_rules(ir: &InterceptorRoute) -> Vec<RouteRule> {
    if ir.spec.rules.is_empty() {
        return vec![RouteRule::default()];
    }
    ir.spec.rules.iter().map(routing_rule).collect()
}

/// The `<namespace>/<name>` key of any namespaced object.
pub fn route_key<K: kube::Resource>(obj: &K) -> RouteKey {
    RouteKey::new(&obj.namespace().unwrap_or_default(), &obj.name_any())
}

/// Creation time in unix seconds (0 when unset, i.e. oldest).
pub fn created_seconds<K: kube::Resource>(obj: &K) -> i64 {
    obj.meta()
        .creation_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_second())
}

/// A route table entry for an HTTPScaledObject carrying `target`.
pub fn http_scaled_object_route<T>(hso: &HTTPScaledObject, target: T) -> Route<T> {
    Route {
        key: route_key(hso),
        kind: RouteKind::HttpScaledObject,
        created: created_seconds(hso),
        rules: http_scaled_object_rules(hso),
        target,
    }
}

/// A route table entry for an InterceptorRoute carrying `target`.
pub fn interceptor_route_route<T>(ir: &InterceptorRoute, target: T) -> Route<T> {
    Route {
        key: route_key(ir),
        kind: RouteKind::InterceptorRoute,
        created: created_seconds(ir),
        rules: interceptor_route_rules(ir),
        target,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::RouteTable;
    use http::HeaderMap;

    fn hso(yaml: &str) -> HTTPScaledObject {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn ir(yaml: &str) -> InterceptorRoute {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn both_kinds_feed_one_table_and_interceptor_route_wins_a_shared_key() {
        let a = hso(r#"
apiVersion: http.keda.sh/v1alpha1
kind: HTTPScaledObject
metadata: {name: app, namespace: ns, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  hosts: [app.example.com]
  pathPrefixes: [/api]
  headers: [{name: X-Env, value: prod}]
  scaleTargetRef: {name: app, service: app, port: 80}
"#);
        let b = ir(r#"
apiVersion: http.keda.sh/v1beta1
kind: InterceptorRoute
metadata: {name: app, namespace: ns}
spec:
  target: {service: app-v2, port: 80}
  rules: [{hosts: [app.example.com], paths: [{value: /}]}]
  scalingMetric: {concurrency: {targetValue: 100}}
"#);
        let catch_all = ir(r#"
apiVersion: http.keda.sh/v1beta1
kind: InterceptorRoute
metadata: {name: default, namespace: other}
spec:
  target: {service: web, port: 80}
  scalingMetric: {concurrency: {targetValue: 100}}
"#);
        assert_eq!(created_seconds(&a), 1_767_225_600);
        assert_eq!(
            http_scaled_object_rules(&a)[0].headers[0].value.as_deref(),
            Some("prod")
        );
        let table = RouteTable::build(vec![
            http_scaled_object_route(&a, "hso"),
            interceptor_route_route(&b, "ir"),
            interceptor_route_route(&catch_all, "catch-all"),
        ]);
        let mut headers = HeaderMap::new();
        headers.insert("x-env", "prod".parse().unwrap());
        let hit = table.lookup("app.example.com", "/api/x", &headers).unwrap();
        assert_eq!((hit.key.as_str(), hit.target), ("ns/app", "ir"));
        let other = table
            .lookup("elsewhere.test", "/", &HeaderMap::new())
            .unwrap();
        assert_eq!(other.target, "catch-all");
    }
}
