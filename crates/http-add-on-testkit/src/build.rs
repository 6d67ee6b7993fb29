//! Typed builders of the objects tests create. Each starts from the smallest valid object and
//! takes what a test cares about; `build()` returns the typed object (checked against its
//! Rust type), `json()` the manifest for tests that add fields the builder does not know.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use http_add_on_types::crd::{HTTPScaledObject, InterceptorRoute};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use serde_json::{Value, json};

/// Merges `extra` into `base` as a JSON merge patch (RFC 7386): objects key by key
/// (recursively), a `null` removes the key, anything else replaces.
pub fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(base), Value::Object(extra)) => {
            for (key, value) in extra {
                if value.is_null() {
                    base.remove(&key);
                } else {
                    merge(base.entry(key).or_insert(Value::Null), value);
                }
            }
        }
        (base, extra) => *base = extra,
    }
}

/// Builds an object of kind `K` from its manifest: what every builder of this module shares.
/// The kind's own setters are in `impl Builder<Kind>` blocks.
#[derive(Debug, Clone)]
pub struct Builder<K> {
    manifest: Value,
    kind: PhantomData<fn() -> K>,
}

/// Builds a Deployment; see [`deployment`].
pub type DeploymentBuilder = Builder<Deployment>;
/// Builds a Service; see [`service`].
pub type ServiceBuilder = Builder<Service>;
/// Builds an HTTPScaledObject; see [`http_scaled_object`].
pub type HttpScaledObjectBuilder = Builder<HTTPScaledObject>;
/// Builds an InterceptorRoute; see [`interceptor_route`].
pub type InterceptorRouteBuilder = Builder<InterceptorRoute>;

impl<K> Builder<K>
where
    K: kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned,
{
    fn from_manifest(manifest: Value) -> Self {
        Self {
            manifest,
            kind: PhantomData,
        }
    }

    /// `metadata.namespace`.
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.manifest["metadata"]["namespace"] = json!(namespace);
        self
    }

    /// Any further `spec` fields, merged in (a `null` removes one).
    pub fn spec(mut self, extra: Value) -> Self {
        merge(&mut self.manifest["spec"], extra);
        self
    }

    /// The manifest.
    pub fn json(&self) -> Value {
        self.manifest.clone()
    }

    /// The typed object.
    pub fn build(&self) -> K {
        serde_json::from_value(self.json())
            .unwrap_or_else(|e| panic!("the builder made an invalid {}: {e}", K::kind(&())))
    }

    /// The list at `pointer` (a JSON pointer into the manifest), created when absent.
    fn list(&mut self, pointer: &str) -> &mut Vec<Value> {
        let mut node = &mut self.manifest;
        for key in pointer.split('/').skip(1) {
            node = match key.parse::<usize>() {
                Ok(index) => &mut node[index],
                Err(_) => &mut node[key],
            };
        }
        if node.is_null() {
            *node = json!([]);
        }
        node.as_array_mut().expect("a list in the manifest")
    }
}

/// A Deployment `name` whose pods are labelled `app: <name>` and run one container `app`
/// (image `sim/echo`).
pub fn deployment(name: &str) -> DeploymentBuilder {
    Builder::from_manifest(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": "app", "image": "sim/echo" }] },
            },
        },
    }))
}

const CONTAINERS: &str = "/spec/template/spec/containers";

impl DeploymentBuilder {
    /// `spec.replicas` (default 1).
    pub fn replicas(mut self, replicas: i32) -> Self {
        self.manifest["spec"]["replicas"] = json!(replicas);
        self
    }

    /// The container image (default `sim/echo`).
    pub fn image(self, image: &str) -> Self {
        self.container(json!({ "image": image }))
    }

    /// A named container port.
    pub fn port(mut self, name: &str, number: i32) -> Self {
        self.list(&format!("{CONTAINERS}/0/ports"))
            .push(json!({ "name": name, "containerPort": number }));
        self
    }

    /// Further fields of the container (env, probes, …), merged in.
    pub fn container(mut self, extra: Value) -> Self {
        merge(&mut self.list(CONTAINERS)[0], extra);
        self
    }

    /// An annotation of the pod template (e.g. the sim's startup or response delay).
    pub fn pod_annotation(mut self, key: &str, value: &str) -> Self {
        self.manifest["spec"]["template"]["metadata"]["annotations"][key] = json!(value);
        self
    }
}

/// A Service `name` (selectorless until [`ServiceBuilder::selector`]).
pub fn service(name: &str) -> ServiceBuilder {
    Builder::from_manifest(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": name },
        "spec": { "ports": [] },
    }))
}

impl ServiceBuilder {
    /// Selects the pods labelled `app: <app>`.
    pub fn selector(mut self, app: &str) -> Self {
        self.manifest["spec"]["selector"] = json!({ "app": app });
        self
    }

    /// An unnamed port `port` → `target_port`.
    pub fn port(mut self, port: i32, target_port: i32) -> Self {
        self.list("/spec/ports")
            .push(json!({ "port": port, "targetPort": target_port }));
        self
    }

    /// A named port with `appProtocol: http` and a numeric or named (`"http"`) target port.
    pub fn named_port(mut self, name: &str, port: i32, target_port: Value) -> Self {
        self.list("/spec/ports").push(
            json!({ "name": name, "port": port, "targetPort": target_port, "appProtocol": "http" }),
        );
        self
    }
}

/// An HTTPScaledObject `name` routing to Deployment and Service `app` port 8080.
pub fn http_scaled_object(name: &str) -> HttpScaledObjectBuilder {
    Builder::from_manifest(json!({
        "apiVersion": "http.keda.sh/v1alpha1",
        "kind": "HTTPScaledObject",
        "metadata": { "name": name },
        "spec": {
            "scaleTargetRef": {
                "name": "app", "kind": "Deployment", "apiVersion": "apps/v1",
                "service": "app", "port": 8080,
            },
        },
    }))
}

impl HttpScaledObjectBuilder {
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
    pub fn target(self, name: &str) -> Self {
        self.spec(json!({ "scaleTargetRef": { "name": name, "service": name } }))
    }

    /// The target Service alone.
    pub fn service(self, service: &str) -> Self {
        self.spec(json!({ "scaleTargetRef": { "service": service } }))
    }

    /// The Service port by number.
    pub fn port(self, port: i32) -> Self {
        self.spec(json!({ "scaleTargetRef": { "port": port, "portName": null } }))
    }

    /// The Service port by name.
    pub fn port_name(self, port_name: &str) -> Self {
        self.spec(json!({ "scaleTargetRef": { "port": null, "portName": port_name } }))
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
}

/// An InterceptorRoute `name` to Service `web` port 80, scaled by concurrency 10.
pub fn interceptor_route(name: &str) -> InterceptorRouteBuilder {
    Builder::from_manifest(json!({
        "apiVersion": "http.keda.sh/v1beta1",
        "kind": "InterceptorRoute",
        "metadata": { "name": name },
        "spec": {
            "target": { "service": "web", "port": 80 },
            "rules": [],
            "scalingMetric": { "concurrency": { "targetValue": 10 } },
        },
    }))
}

impl InterceptorRouteBuilder {
    /// A rule matching these hosts.
    pub fn hosts(self, hosts: &[&str]) -> Self {
        self.rule(json!({ "hosts": hosts }))
    }

    /// A rule as written in the manifest.
    pub fn rule(mut self, rule: Value) -> Self {
        self.list("/spec/rules").push(rule);
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::ResourceExt;

    #[test]
    fn builders_make_valid_typed_objects() {
        let deploy = deployment("web")
            .namespace("apps")
            .replicas(2)
            .port("http", 8080)
            .container(json!({ "imagePullPolicy": "IfNotPresent" }))
            .pod_annotation("a", "b")
            .build();
        assert_eq!(deploy.namespace().as_deref(), Some("apps"));
        let spec = deploy.spec.unwrap();
        assert_eq!(spec.replicas, Some(2));
        let template = spec.template;
        assert_eq!(template.metadata.unwrap().annotations.unwrap()["a"], "b");
        let container = template.spec.unwrap().containers[0].clone();
        assert_eq!(container.ports.unwrap()[0].container_port, 8080);
        assert_eq!(container.image.as_deref(), Some("sim/echo"));
        assert_eq!(container.image_pull_policy.as_deref(), Some("IfNotPresent"));

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

    #[test]
    fn merge_is_a_json_merge_patch() {
        let mut base = json!({ "a": { "b": 1, "c": 2 }, "d": [1] });
        merge(&mut base, json!({ "a": { "b": null, "e": 3 }, "d": [2] }));
        assert_eq!(base, json!({ "a": { "c": 2, "e": 3 }, "d": [2] }));
    }
}
