//! CRD tests: realistic manifests round-trip through the Rust types, the generated schemas carry
//! upstream's defaults and CEL rules, and the committed CRD files are structural and current.

use std::path::PathBuf;

use http_add_on_testkit::build;
use http_add_on_types::crd::generated_crds;
use http_add_on_types::crd::http_scaled_object::HTTPScaledObject;
use http_add_on_types::crd::interceptor_route::{InterceptorRoute, ProxyMode, ResponseMode};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};

fn from_yaml<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
    serde_yaml::from_str(yaml).expect("manifest parses")
}

/// Serialises `obj` and checks every field of the original manifest survived unchanged.
fn assert_round_trip<T: serde::Serialize>(manifest: &str, obj: &T) {
    let original: Value = serde_yaml::from_str(manifest).unwrap();
    assert_json_round_trip(&original, obj);
}

/// [`assert_round_trip`] of a manifest that is already JSON.
fn assert_json_round_trip<T: serde::Serialize>(original: &Value, obj: &T) {
    let back = serde_json::to_value(obj).unwrap();
    assert_contains(&back, original, "");
}

fn assert_contains(actual: &Value, expected: &Value, path: &str) {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => {
            for (k, v) in e {
                let child = a
                    .get(k)
                    .unwrap_or_else(|| panic!("{path}.{k} lost in round trip"));
                assert_contains(child, v, &format!("{path}.{k}"));
            }
        }
        (Value::Array(a), Value::Array(e)) => {
            assert_eq!(a.len(), e.len(), "{path}: list length changed");
            for (i, (x, y)) in a.iter().zip(e).enumerate() {
                assert_contains(x, y, &format!("{path}[{i}]"));
            }
        }
        _ => assert_eq!(actual, expected, "{path} changed in round trip"),
    }
}

const FULL_HSO: &str = r#"
apiVersion: http.keda.sh/v1alpha1
kind: HTTPScaledObject
metadata:
  name: shop
  namespace: prod
  labels: {team: web}
  annotations:
    httpscaledobject.keda.sh/skip-scaledobject-creation: "false"
spec:
  hosts: ["shop.example.com", "*.shop.example.com"]
  pathPrefixes: ["/api", "/cart"]
  headers:
    - name: X-Tenant
      value: blue
    - name: X-Canary
  scaleTargetRef:
    name: shop
    kind: StatefulSet
    apiVersion: apps/v1
    service: shop
    portName: http
  coldStartTimeoutFailoverRef:
    service: shop-sorry
    port: 80
    timeoutSeconds: 10
  replicas: {min: 1, max: 20}
  targetPendingRequests: 50
  scaledownPeriod: 120
  initialCooldownPeriod: 60
  scalingMetric:
    requestRate:
      targetValue: 20
      window: 2m
      granularity: 2s
  timeouts:
    conditionWait: 45s
    responseHeader: 10s
"#;

#[test]
fn minimal_http_scaled_object_round_trips() {
    let manifest = build::http_scaled_object("xkcd")
        .namespace("default")
        .hosts(&["myhost.com"])
        .target("xkcd")
        .json();
    let hso: HTTPScaledObject = serde_json::from_value(manifest.clone()).unwrap();
    assert_eq!(hso.spec.hosts, ["myhost.com"]);
    assert_eq!(hso.spec.scale_target_ref.port, Some(8080));
    assert_eq!(hso.spec.scale_target_ref.port_name, None);
    assert_eq!(hso.spec.replicas, None);
    assert_json_round_trip(&manifest, &hso);
}

#[test]
fn full_http_scaled_object_round_trips() {
    let hso: HTTPScaledObject = from_yaml(FULL_HSO);
    let spec = &hso.spec;
    assert_eq!(spec.hosts[1], "*.shop.example.com");
    assert_eq!(spec.headers[1].value, None);
    assert_eq!(spec.scale_target_ref.port_name.as_deref(), Some("http"));
    assert_eq!(
        spec.cold_start_timeout_failover_ref
            .as_ref()
            .unwrap()
            .timeout_seconds,
        10
    );
    assert_eq!(spec.replicas.as_ref().unwrap().max, Some(20));
    assert_eq!(spec.scaledown_period, Some(120));
    let rate = spec
        .scaling_metric
        .as_ref()
        .unwrap()
        .request_rate
        .as_ref()
        .unwrap();
    assert_eq!((rate.target_value, rate.window.as_str()), (20, "2m"));
    assert_eq!(
        spec.timeouts.as_ref().unwrap().condition_wait.as_deref(),
        Some("45s")
    );
    assert_round_trip(FULL_HSO, &hso);
}

#[test]
fn http_scaled_object_defaults_apply_when_deserialising() {
    let hso: HTTPScaledObject = from_yaml(
        r#"
apiVersion: http.keda.sh/v1alpha1
kind: HTTPScaledObject
metadata: {name: a}
spec:
  scaleTargetRef: {service: a, port: 80}
  coldStartTimeoutFailoverRef: {service: b, port: 80}
  scalingMetric:
    requestRate: {}
    concurrency: {}
"#,
    );
    assert_eq!(
        hso.spec
            .cold_start_timeout_failover_ref
            .unwrap()
            .timeout_seconds,
        30
    );
    let metric = hso.spec.scaling_metric.unwrap();
    let rate = metric.request_rate.unwrap();
    assert_eq!(
        (
            rate.target_value,
            rate.window.as_str(),
            rate.granularity.as_str()
        ),
        (100, "1m", "1s")
    );
    assert_eq!(metric.concurrency.unwrap().target_value, 100);
    assert_eq!(hso.spec.scale_target_ref.name, "");
}

const FULL_IR: &str = r#"
apiVersion: http.keda.sh/v1beta1
kind: InterceptorRoute
metadata:
  name: api
  namespace: prod
spec:
  target:
    service: api
    portName: http
  proxyMode: Endpoint
  rules:
    - hosts: ["api.example.com", "*.api.example.com"]
      paths: [{value: /v1}, {value: /v2}]
      headers:
        - name: X-Version
          value: "2"
        - name: X-Debug
    - hosts: ["*"]
  scalingMetric:
    concurrency: {targetValue: 10}
    requestRate: {targetValue: 50, window: 30s, granularity: 1s}
  coldStart:
    fallback:
      service: {name: api-fallback, port: 8080}
    placeholder:
      response:
        statusCode: 503
        body: "<h1>waking up</h1>"
        headers: {Retry-After: "2"}
  timeouts: {readiness: 20s, request: 1m, responseHeader: 0s}
  staticRoutes:
    - rules: [{paths: [{value: /healthz}]}]
      response: {statusCode: 200, body: ok}
      responseMode: Always
    - rules: [{hosts: [maintenance.example.com]}]
      response:
        statusCode: 503
        bodyFromConfigMap: {name: maint, key: index.html}
"#;

#[test]
fn full_interceptor_route_round_trips() {
    let ir: InterceptorRoute = from_yaml(FULL_IR);
    let spec = &ir.spec;
    assert_eq!(spec.proxy_mode, Some(ProxyMode::Endpoint));
    assert_eq!(spec.rules.len(), 2);
    assert_eq!(spec.rules[0].paths[1].value, "/v2");
    assert_eq!(spec.rules[0].headers[1].value, None);
    assert_eq!(
        spec.scaling_metric
            .concurrency
            .as_ref()
            .unwrap()
            .target_value,
        10
    );
    let cold = spec.cold_start.as_ref().unwrap();
    assert_eq!(cold.fallback.as_ref().unwrap().service.port, Some(8080));
    assert_eq!(
        cold.placeholder.as_ref().unwrap().response.status_code,
        Some(503)
    );
    assert_eq!(spec.static_routes[0].response_mode, ResponseMode::Always);
    assert_eq!(
        spec.static_routes[1].response_mode,
        ResponseMode::WhenUnavailable
    );
    assert_round_trip(FULL_IR, &ir);
}

#[test]
fn minimal_interceptor_route_round_trips() {
    // The kit's smallest route without its (empty) rules: they default to none.
    let manifest = build::interceptor_route("web")
        .spec(json!({"rules": null}))
        .scaling_metric(json!({"requestRate": {"targetValue": 100}}))
        .json();
    let ir: InterceptorRoute = serde_json::from_value(manifest.clone()).unwrap();
    assert!(ir.spec.rules.is_empty());
    let rate = ir.spec.scaling_metric.request_rate.as_ref().unwrap();
    assert_eq!(rate.target_value, 100);
    assert_json_round_trip(&manifest, &ir);
}

// ----- schema contents ---------------------------------------------------------------------

fn crd(name: &str) -> CustomResourceDefinition {
    generated_crds()
        .into_iter()
        .find(|(_, c)| c.metadata.name.as_deref() == Some(name))
        .map(|(_, c)| c)
        .unwrap_or_else(|| panic!("no CRD {name}"))
}

fn schema_of(crd: &CustomResourceDefinition) -> Value {
    let version = &crd.spec.versions[0];
    serde_json::to_value(
        version
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap()
}

fn at<'a>(schema: &'a Value, path: &[&str]) -> &'a Value {
    let mut node = schema;
    for p in path {
        node = if *p == "[]" {
            &node["items"]
        } else {
            &node["properties"][*p]
        };
        assert!(!node.is_null(), "no schema at {path:?} (stopped at {p})");
    }
    node
}

fn rules(node: &Value) -> Vec<(String, String)> {
    node["x-kubernetes-validations"]
        .as_array()
        .map(|rules| {
            rules
                .iter()
                .map(|r| {
                    (
                        r["rule"].as_str().unwrap_or_default().to_owned(),
                        r["message"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn http_scaled_object_crd_matches_upstream_shape() {
    let crd = crd("httpscaledobjects.http.keda.sh");
    assert_eq!(crd.spec.group, "http.keda.sh");
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.kind, "HTTPScaledObject");
    assert_eq!(
        crd.spec.names.short_names.as_deref(),
        Some(&["httpso".to_owned()][..])
    );
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(version.subresources.as_ref().unwrap().status.is_some());
    let columns: Vec<_> = version
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "TargetWorkload",
            "TargetService",
            "MinReplicas",
            "MaxReplicas",
            "Age",
            "Ready"
        ]
    );

    let schema = schema_of(&crd);
    let spec = at(&schema, &["spec"]);
    let required: Vec<_> = spec["required"].as_array().unwrap().iter().collect();
    assert_eq!(required, [&json!("scaleTargetRef")]);
    let target = at(&schema, &["spec", "scaleTargetRef"]);
    assert_eq!(
        rules(target),
        [(
            "has(self.portName) != has(self.port)".to_owned(),
            "must define either the 'portName' or the 'port'".to_owned()
        )]
    );
    assert_eq!(target["required"], json!(["service"]));
    assert_eq!(
        rules(at(&schema, &["spec", "coldStartTimeoutFailoverRef"])).len(),
        1,
        "failover ref has the port/portName rule"
    );
    assert_eq!(
        at(
            &schema,
            &["spec", "coldStartTimeoutFailoverRef", "timeoutSeconds"]
        )["default"],
        json!(30)
    );
    let headers = at(&schema, &["spec", "headers"]);
    assert_eq!(headers["x-kubernetes-list-type"], "map");
    assert_eq!(headers["x-kubernetes-list-map-keys"], json!(["name"]));
    assert_eq!(
        at(&schema, &["spec", "headers", "[]", "name"])["minLength"],
        json!(1)
    );
    let rate = at(&schema, &["spec", "scalingMetric", "requestRate"]);
    assert_eq!(rate["properties"]["window"]["default"], "1m");
    assert_eq!(rate["properties"]["granularity"]["default"], "1s");
    assert_eq!(rate["properties"]["targetValue"]["default"], 100);
    assert_eq!(
        at(
            &schema,
            &["spec", "scalingMetric", "concurrency", "targetValue"]
        )["default"],
        100
    );
    assert!(at(&schema, &["spec", "scaledownPeriod"])["type"] == "integer");
    assert_eq!(
        at(&schema, &["status", "conditions"])["x-kubernetes-list-map-keys"],
        json!(["type"])
    );
    // Doc comments become descriptions, so `kubectl explain` has something to show.
    assert!(
        at(&schema, &["spec", "hosts"])["description"]
            .as_str()
            .is_some_and(|d| d.contains("Wildcards"))
    );
}

#[test]
fn interceptor_route_crd_has_its_rules() {
    let crd = crd("interceptorroutes.http.keda.sh");
    assert_eq!(crd.spec.versions[0].name, "v1beta1");
    let schema = schema_of(&crd);
    let spec = at(&schema, &["spec"]);
    let mut required: Vec<_> = spec["required"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    required.sort_unstable();
    assert_eq!(required, ["scalingMetric", "target"]);
    assert_eq!(
        rules(at(&schema, &["spec", "target"]))[0].0,
        "has(self.port) != has(self.portName)"
    );
    assert_eq!(
        at(&schema, &["spec", "target", "port"])["maximum"],
        json!(65535.0)
    );
    assert_eq!(
        at(&schema, &["spec", "target", "service"])["minLength"],
        json!(1)
    );
    assert_eq!(
        rules(at(&schema, &["spec", "scalingMetric"]))[0].0,
        "has(self.concurrency) || has(self.requestRate)"
    );
    assert_eq!(
        at(
            &schema,
            &["spec", "scalingMetric", "concurrency", "targetValue"]
        )["minimum"],
        json!(1.0)
    );
    assert_eq!(
        rules(at(&schema, &["spec", "coldStart"]))[0].0,
        "has(self.fallback) || has(self.placeholder) || has(self.maxPendingRequests)"
    );
    assert_eq!(
        rules(at(&schema, &["spec", "coldStart"]))[1].0,
        "!has(self.overflow) || self.overflow != 'Placeholder' || has(self.placeholder)"
    );
    assert_eq!(
        at(&schema, &["spec", "coldStart", "maxPendingRequests"])["minimum"],
        json!(1.0)
    );
    assert_eq!(
        at(&schema, &["spec", "coldStart", "overflow"])["enum"],
        json!(["Reject", "Placeholder"])
    );
    assert_eq!(
        rules(at(&schema, &["spec", "coldStart", "fallback", "service"]))[0].0,
        "has(self.port) != has(self.portName)"
    );
    assert_eq!(
        at(&schema, &["spec", "rules", "[]", "hosts"])["x-kubernetes-list-type"],
        "set"
    );
    let response = at(&schema, &["spec", "staticRoutes", "[]", "response"]);
    assert_eq!(response["properties"]["body"]["maxLength"], json!(32768));
    assert_eq!(
        response["properties"]["statusCode"]["minimum"],
        json!(100.0)
    );
    assert_eq!(
        response["properties"]["statusCode"]["maximum"],
        json!(599.0)
    );
    assert_eq!(
        rules(response)[0].0,
        "!(has(self.body) && has(self.bodyFromConfigMap))"
    );
    let mode = at(&schema, &["spec", "staticRoutes", "[]", "responseMode"]);
    assert_eq!(mode["enum"], json!(["WhenUnavailable", "Always"]));
    assert_eq!(
        at(&schema, &["spec", "staticRoutes", "[]", "rules"])["minItems"],
        json!(1)
    );
}

// ----- committed files ---------------------------------------------------------------------

fn crd_files() -> Vec<PathBuf> {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../charts/keda-http-add-on/files/crds");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn committed_crd_files_are_current_and_structural() {
    let files = crd_files();
    assert_eq!(
        files.len(),
        generated_crds().len(),
        "one file per generated CRD"
    );
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let parsed: CustomResourceDefinition =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = parsed.metadata.name.clone().unwrap();
        assert_eq!(
            parsed,
            crd(&name),
            "{} is stale: run `cargo xtask codegen`",
            path.display()
        );
        for version in &parsed.spec.versions {
            let schema = serde_json::to_value(
                version
                    .schema
                    .as_ref()
                    .unwrap()
                    .open_api_v3_schema
                    .as_ref()
                    .unwrap(),
            )
            .unwrap();
            let mut problems = Vec::new();
            structural_problems(&schema, "", false, &mut problems);
            assert!(
                problems.is_empty(),
                "{name}/{}: not structural: {problems:#?}",
                version.name
            );
        }
    }
}

/// Checks the rules of a structural schema (Kubernetes docs, "Specifying a structural schema"):
/// every node has a type (unless int-or-string or preserve-unknown-fields), no `$ref`, and
/// logical junctors (`allOf`, `anyOf`, `oneOf`, `not`) carry no type, default or nullable.
fn structural_problems(node: &Value, path: &str, in_junctor: bool, problems: &mut Vec<String>) {
    let Some(obj) = node.as_object() else {
        problems.push(format!("{path}: schema is not an object"));
        return;
    };
    if obj.contains_key("$ref") {
        problems.push(format!("{path}: $ref is not allowed"));
    }
    let typed = obj.contains_key("type");
    let exempt = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
        || obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if in_junctor {
        for key in [
            "type",
            "default",
            "nullable",
            "description",
            "additionalProperties",
        ] {
            if obj.contains_key(key) {
                problems.push(format!("{path}: `{key}` inside a logical junctor"));
            }
        }
    } else if !typed && !exempt {
        problems.push(format!("{path}: missing type"));
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            structural_problems(v, &format!("{path}.{k}"), in_junctor, problems);
        }
    }
    if let Some(items) = obj.get("items") {
        structural_problems(items, &format!("{path}[]"), in_junctor, problems);
    }
    if let Some(additional) = obj.get("additionalProperties").filter(|v| v.is_object()) {
        structural_problems(additional, &format!("{path}{{}}"), in_junctor, problems);
    }
    for junctor in ["allOf", "anyOf", "oneOf"] {
        if let Some(list) = obj.get(junctor).and_then(Value::as_array) {
            for (i, v) in list.iter().enumerate() {
                structural_problems(v, &format!("{path}/{junctor}[{i}]"), true, problems);
            }
        }
    }
    if let Some(not) = obj.get("not") {
        structural_problems(not, &format!("{path}/not"), true, problems);
    }
}
