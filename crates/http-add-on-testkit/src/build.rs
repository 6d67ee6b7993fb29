//! Typed builders of the objects tests create. Each starts from the smallest valid object and
//! takes what a test cares about; `build()` returns the typed object (checked against its
//! Rust type), `json()` the manifest for tests that add fields the builder does not know.

use std::collections::BTreeMap;

use http_add_on_types::crd::{HTTPScaledObject, InterceptorRoute};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use serde_json::{Map, Value, json};

/// Merges `extra` into `base`: objects key by key (recursively), anything else replaced.
pub fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(base), Value::Object(extra)) => {
            for (key, value) in extra {
                merge(base.entry(key).or_insert(Value::Null), value);
            }
        }
        (base, extra) => *base = extra,
    }
}

fn typed<K: serde::de::DeserializeOwned>(value: Value, kind: &str) -> K {
    serde_json::from_value(value)
        .unwrap_or_else(|e| panic!("the builder made an invalid {kind}: {e}"))
}

fn string_map(pairs: &[(String, String)]) -> Map<String, Value> {
    pairs.iter().map(|(k, v)| (k.clone(), json!(v))).collect()
}

/// A Deployment `name` whose pods are labelled `app: <name>`.
pub fn deployment(name: &str) -> DeploymentBuilder {
    DeploymentBuilder {
        name: name.to_owned(),
        replicas: 1,
        image: "sim/echo".to_owned(),
        ports: Vec::new(),
        pod_annotations: Vec::new(),
    }
}

/// Builds a Deployment; see [`deployment`].
#[derive(Debug, Clone)]
pub struct DeploymentBuilder {
    name: String,
    replicas: i32,
    image: String,
    ports: Vec<(String, i32)>,
    pod_annotations: Vec<(String, String)>,
}

impl DeploymentBuilder {
    /// `spec.replicas` (default 1).
    pub fn replicas(mut self, replicas: i32) -> Self {
        self.replicas = replicas;
        self
    }

    /// The container image (default `sim/echo`).
    pub fn image(mut self, image: &str) -> Self {
        self.image = image.to_owned();
        self
    }

    /// A named container port.
    pub fn port(mut self, name: &str, number: i32) -> Self {
        self.ports.push((name.to_owned(), number));
        self
    }

    /// An annotation of the pod template (e.g. the sim's startup or response delay).
    pub fn pod_annotation(mut self, key: &str, value: &str) -> Self {
        self.pod_annotations
            .push((key.to_owned(), value.to_owned()));
        self
    }

    /// The manifest.
    pub fn json(&self) -> Value {
        let ports: Vec<Value> = self
            .ports
            .iter()
            .map(|(name, number)| json!({ "name": name, "containerPort": number }))
            .collect();
        let mut container = json!({ "name": "app", "image": self.image });
        if !ports.is_empty() {
            container["ports"] = json!(ports);
        }
        let mut template_meta = json!({ "labels": { "app": self.name } });
        if !self.pod_annotations.is_empty() {
            template_meta["annotations"] = json!(string_map(&self.pod_annotations));
        }
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": { "name": self.name },
            "spec": {
                "replicas": self.replicas,
                "selector": { "matchLabels": { "app": self.name } },
                "template": { "metadata": template_meta, "spec": { "containers": [container] } }
            }
        })
    }

    /// The Deployment.
    pub fn build(&self) -> Deployment {
        typed(self.json(), "Deployment")
    }
}

/// A Service `name` (selectorless until [`ServiceBuilder::selector`]).
pub fn service(name: &str) -> ServiceBuilder {
    ServiceBuilder {
        name: name.to_owned(),
        selector: None,
        ports: Vec::new(),
    }
}

/// Builds a Service; see [`service`].
#[derive(Debug, Clone)]
pub struct ServiceBuilder {
    name: String,
    selector: Option<String>,
    ports: Vec<Value>,
}

impl ServiceBuilder {
    /// Selects the pods labelled `app: <app>`.
    pub fn selector(mut self, app: &str) -> Self {
        self.selector = Some(app.to_owned());
        self
    }

    /// An unnamed port `port` → `target_port`.
    pub fn port(mut self, port: i32, target_port: i32) -> Self {
        self.ports
            .push(json!({ "port": port, "targetPort": target_port }));
        self
    }

    /// A named port with `appProtocol: http` and a numeric or named (`"http"`) target port.
    pub fn named_port(mut self, name: &str, port: i32, target_port: Value) -> Self {
        self.ports.push(
            json!({ "name": name, "port": port, "targetPort": target_port, "appProtocol": "http" }),
        );
        self
    }

    /// The manifest.
    pub fn json(&self) -> Value {
        let mut spec = json!({ "ports": self.ports });
        if let Some(app) = &self.selector {
            spec["selector"] = json!({ "app": app });
        }
        json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": self.name }, "spec": spec })
    }

    /// The Service.
    pub fn build(&self) -> Service {
        typed(self.json(), "Service")
    }
}

/// An HTTPScaledObject `name` routing to Deployment and Service `app` port 8080.
pub fn http_scaled_object(name: &str) -> HttpScaledObjectBuilder {
    HttpScaledObjectBuilder {
        manifest: json!({
            "apiVersion": "http.keda.sh/v1alpha1",
            "kind": "HTTPScaledObject",
            "metadata": { "name": name },
            "spec": {
                "scaleTargetRef": {
                    "name": "app", "kind": "Deployment", "apiVersion": "apps/v1",
                    "service": "app", "port": 8080,
                },
            },
        }),
    }
}

/// Builds an HTTPScaledObject; see [`http_scaled_object`].
#[derive(Debug, Clone)]
pub struct HttpScaledObjectBuilder {
    manifest: Value,
}

impl HttpScaledObjectBuilder {
    /// `metadata.namespace`.
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.manifest["metadata"]["namespace"] = json!(namespace);
        self
    }

    /// `spec.hosts`.
    pub fn hosts(mut self, hosts: &[&str]) -> Self {
        self.manifest["spec"]["hosts"] = json!(hosts);
        self
    }

    /// `spec.pathPrefixes`.
    pub fn path_prefixes(mut self, paths: &[&str]) -> Self {
        self.manifest["spec"]["pathPrefixes"] = json!(paths);
        self
    }

    /// The target Deployment and Service (both `name`).
    pub fn target(mut self, name: &str) -> Self {
        let target = &mut self.manifest["spec"]["scaleTargetRef"];
        target["name"] = json!(name);
        target["service"] = json!(name);
        self
    }

    /// The target Service alone.
    pub fn service(mut self, service: &str) -> Self {
        self.manifest["spec"]["scaleTargetRef"]["service"] = json!(service);
        self
    }

    /// The Service port by number.
    pub fn port(mut self, port: i32) -> Self {
        let target = self.manifest["spec"]["scaleTargetRef"]
            .as_object_mut()
            .expect("scaleTargetRef is an object");
        target.remove("portName");
        target.insert("port".into(), json!(port));
        self
    }

    /// The Service port by name.
    pub fn port_name(mut self, port_name: &str) -> Self {
        let target = self.manifest["spec"]["scaleTargetRef"]
            .as_object_mut()
            .expect("scaleTargetRef is an object");
        target.remove("port");
        target.insert("portName".into(), json!(port_name));
        self
    }

    /// `metadata.annotations` entries.
    pub fn annotations(mut self, annotations: &[(&str, &str)]) -> Self {
        let map: BTreeMap<&str, &str> = annotations.iter().copied().collect();
        merge(
            &mut self.manifest,
            json!({ "metadata": { "annotations": map } }),
        );
        self
    }

    /// Any further `spec` fields, merged in.
    pub fn spec(mut self, extra: Value) -> Self {
        merge(&mut self.manifest["spec"], extra);
        self
    }

    /// The manifest.
    pub fn json(&self) -> Value {
        self.manifest.clone()
    }

    /// The HTTPScaledObject.
    pub fn build(&self) -> HTTPScaledObject {
        typed(self.json(), "HTTPScaledObject")
    }
}

/// An InterceptorRoute `name` to Service `web` port 80, scaled by concurrency 10.
pub fn interceptor_route(name: &str) -> InterceptorRouteBuilder {
    InterceptorRouteBuilder {
        manifest: json!({
            "apiVersion": "http.keda.sh/v1beta1",
            "kind": "InterceptorRoute",
            "metadata": { "name": name },
            "spec": {
                "target": { "service": "web", "port": 80 },
                "rules": [],
                "scalingMetric": { "concurrency": { "targetValue": 10 } },
            },
        }),
    }
}

/// Builds an InterceptorRoute; see [`interceptor_route`].
#[derive(Debug, Clone)]
pub struct InterceptorRouteBuilder {
    manifest: Value,
}

impl InterceptorRouteBuilder {
    /// `metadata.namespace`.
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.manifest["metadata"]["namespace"] = json!(namespace);
        self
    }

    /// A rule matching these hosts.
    pub fn hosts(self, hosts: &[&str]) -> Self {
        self.rule(json!({ "hosts": hosts }))
    }

    /// A rule as written in the manifest.
    pub fn rule(mut self, rule: Value) -> Self {
        self.manifest["spec"]["rules"]
            .as_array_mut()
            .expect("rules is a list")
            .push(rule);
        self
    }

    /// The target Service and port number.
    pub fn target(mut self, service: &str, port: i32) -> Self {
        self.manifest["spec"]["target"] = json!({ "service": service, "port": port });
        self
    }

    /// `spec.scalingMetric`, replaced.
    pub fn scaling_metric(mut self, metric: Value) -> Self {
        self.manifest["spec"]["scalingMetric"] = metric;
        self
    }

    /// Any further `spec` fields, merged in.
    pub fn spec(mut self, extra: Value) -> Self {
        merge(&mut self.manifest["spec"], extra);
        self
    }

    /// The manifest.
    pub fn json(&self) -> Value {
        self.manifest.clone()
    }

    /// The InterceptorRoute.
    pub fn build(&self) -> InterceptorRoute {
        typed(self.json(), "InterceptorRoute")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::ResourceExt;

    #[test]
    fn builders_make_valid_typed_objects() {
        let deploy = deployment("web")
            .replicas(2)
            .port("http", 8080)
            .pod_annotation("a", "b")
            .build();
        let spec = deploy.spec.unwrap();
        assert_eq!(spec.replicas, Some(2));
        let template = spec.template;
        assert_eq!(template.metadata.unwrap().annotations.unwrap()["a"], "b");
        let ports = template.spec.unwrap().containers[0].ports.clone().unwrap();
        assert_eq!(ports[0].container_port, 8080);

        let svc = service("web").selector("web").port(80, 8080).build();
        assert_eq!(svc.spec.unwrap().selector.unwrap()["app"], "web");

        let hso = http_scaled_object("app")
            .hosts(&["app.test"])
            .port_name("http")
            .annotations(&[("k", "v")])
            .spec(json!({ "replicas": { "min": 1 } }))
            .build();
        assert_eq!(hso.annotations()["k"], "v");
        assert_eq!(hso.spec.scale_target_ref.port, None);
        assert_eq!(hso.spec.scale_target_ref.port_name.as_deref(), Some("http"));

        let route = interceptor_route("r")
            .hosts(&["r.test"])
            .target("svc", 8080)
            .build();
        assert_eq!(route.spec.rules.len(), 1);
    }
}
