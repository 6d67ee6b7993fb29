//! Building blocks of scenarios: namespaces, sample apps (Deployment + Service), HTTPScaledObjects
//! and observations of replicas.

use std::time::Duration;

use anyhow::Context;
use http_add_on_testkit::build;
use http_add_on_types::crd::HTTPScaledObject;
use http_add_on_types::crd::scaled_object::ScaledObject;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::testbed::Testbed;
use crate::wait;

/// Published image of the sample app on real clusters: the `echo` binary of `http-add-on-sim`
/// (the `e2e-echo` target of the root `Dockerfile`), as the release of this version pushes it.
/// The simulated cluster runs the same app built in, whatever the image says.
pub const ECHO_IMAGE: &str = concat!(
    "ghcr.io/kedacore/http-add-on-rs/e2e-echo:",
    env!("CARGO_PKG_VERSION")
);
/// Environment variable overriding [`ECHO_IMAGE`] (`cargo xtask e2e --cluster kind` sets it to
/// the image it built and loaded into the cluster).
pub const ECHO_IMAGE_ENV: &str = "E2E_ECHO_IMAGE";
/// Pod annotation of the simulated cluster: the app's start-up delay (Go duration).
pub const STARTUP_DELAY_ANNOTATION: &str = "sim.http.keda.sh/startup-delay";
/// Pod annotation of the simulated cluster: the delay added to every response (Go duration).
pub const RESPONSE_DELAY_ANNOTATION: &str = "sim.http.keda.sh/response-delay";
/// Field manager of everything the suite applies.
pub const FIELD_MANAGER: &str = "http-add-on-e2e";

/// Image of the sample app: `$E2E_ECHO_IMAGE` when set and not empty, else [`ECHO_IMAGE`].
pub fn echo_image() -> String {
    std::env::var(ECHO_IMAGE_ENV)
        .ok()
        .map(|image| image.trim().to_owned())
        .filter(|image| !image.is_empty())
        .unwrap_or_else(|| ECHO_IMAGE.to_owned())
}

/// The manifest of namespace `name`.
pub fn namespace(name: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

/// Creates namespace `name` (fails if it exists, so scenarios never share one).
pub async fn create_namespace(tb: &Testbed, name: &str) -> anyhow::Result<()> {
    let api: Api<Namespace> = Api::all(tb.client.clone());
    let ns: Namespace = serde_json::from_value(namespace(name))?;
    api.create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    Ok(())
}

/// Deletes namespace `name` (best effort, at the end of a scenario).
pub async fn delete_namespace(tb: &Testbed, name: &str) {
    let api: Api<Namespace> = Api::all(tb.client.clone());
    let _ = api.delete(name, &DeleteParams::default()).await;
}

/// Service port of every sample app (to the pods' port `http`, 8080).
pub const APP_PORT: i32 = 8080;

/// A sample HTTP app: Deployment + Service with one port named `http`, built with the test kit's
/// builders.
#[derive(Debug, Clone)]
pub struct App {
    namespace: String,
    name: String,
    deployment: build::DeploymentBuilder,
}

impl App {
    /// An app with 0 replicas on Service port [`APP_PORT`]. The delays are pod annotations,
    /// which the simulated kubelet reads; on real clusters the downward API hands them to the
    /// echo image as environment variables (an empty string when the annotation is absent, which
    /// the image reads as none).
    pub fn new(namespace: &str, name: &str) -> Self {
        let env = [
            env_from_field("POD_NAME", "metadata.name".into()),
            env_from_field("POD_NAMESPACE", "metadata.namespace".into()),
            env_from_field("POD_IP", "status.podIP".into()),
            env_from_field(
                "ECHO_STARTUP_DELAY",
                format!("metadata.annotations['{STARTUP_DELAY_ANNOTATION}']"),
            ),
            env_from_field(
                "ECHO_RESPONSE_DELAY",
                format!("metadata.annotations['{RESPONSE_DELAY_ANNOTATION}']"),
            ),
        ];
        let deployment = build::deployment(name)
            .namespace(namespace)
            .replicas(0)
            .image(&echo_image())
            .port("http", 8080)
            .container(json!({
                // A kind node has the image only because it was loaded there.
                "imagePullPolicy": "IfNotPresent",
                "env": env,
                "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1}
            }));
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            deployment,
        }
    }

    /// Sets the pods' start-up delay (sim annotation, `ECHO_STARTUP_DELAY` on real clusters).
    pub fn startup_delay(mut self, delay: &str) -> Self {
        self.deployment = self
            .deployment
            .pod_annotation(STARTUP_DELAY_ANNOTATION, delay);
        self
    }

    /// Sets the delay added to every response (sim annotation, `ECHO_RESPONSE_DELAY` on real
    /// clusters).
    pub fn response_delay(mut self, delay: &str) -> Self {
        self.deployment = self
            .deployment
            .pod_annotation(RESPONSE_DELAY_ANNOTATION, delay);
        self
    }

    /// Sets the initial replicas.
    pub fn replicas(mut self, replicas: i32) -> Self {
        self.deployment = self.deployment.replicas(replicas);
        self
    }

    /// Applies the Deployment and the Service.
    pub async fn deploy(&self, tb: &Testbed) -> anyhow::Result<()> {
        apply::<Deployment>(tb, &self.namespace, &self.name, self.deployment()).await?;
        apply::<Service>(tb, &self.namespace, &self.name, self.service()).await?;
        Ok(())
    }

    /// The Deployment manifest.
    pub fn deployment(&self) -> serde_json::Value {
        self.deployment.json()
    }

    /// The Service manifest: port `http` to the pods' port `http`.
    pub fn service(&self) -> serde_json::Value {
        build::service(&self.name)
            .namespace(&self.namespace)
            .selector(&self.name)
            .named_port("http", APP_PORT, json!("http"))
            .json()
    }
}

/// A container environment variable set from a pod field (the downward API).
fn env_from_field(name: &str, field_path: String) -> serde_json::Value {
    json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": field_path}}})
}

/// Server-side applies `object` (a full manifest) as the suite's field manager.
pub async fn apply<K>(
    tb: &Testbed,
    namespace: &str,
    name: &str,
    object: serde_json::Value,
) -> anyhow::Result<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(tb.client.clone(), namespace);
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&object),
    )
    .await
    .with_context(|| {
        format!(
            "applying {} {namespace}/{name}",
            K::kind(&K::DynamicType::default())
        )
    })
}

/// An HTTPScaledObject manifest for `app` (0 to 10 replicas, scaled down after 2 s) with
/// `extra_spec` merged in (a JSON merge patch: a `null` removes a field).
pub fn http_scaled_object(
    app: &App,
    hosts: &[&str],
    extra_spec: serde_json::Value,
) -> serde_json::Value {
    build::http_scaled_object(&app.name)
        .namespace(&app.namespace)
        .hosts(hosts)
        .target(&app.name)
        .port(APP_PORT)
        .spec(json!({"replicas": {"min": 0, "max": 10}, "scaledownPeriod": 2}))
        .spec(extra_spec)
        .json()
}

/// Applies an HTTPScaledObject manifest.
pub async fn apply_http_scaled_object(
    tb: &Testbed,
    manifest: serde_json::Value,
) -> anyhow::Result<HTTPScaledObject> {
    let namespace = manifest["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_owned();
    let name = manifest["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    apply::<HTTPScaledObject>(tb, &namespace, &name, manifest).await
}

/// The Deployment's `spec.replicas` and `status.readyReplicas`.
pub async fn replicas(tb: &Testbed, namespace: &str, name: &str) -> anyhow::Result<(i32, i32)> {
    let api: Api<Deployment> = Api::namespaced(tb.client.clone(), namespace);
    let d = api.get(name).await?;
    let desired = d.spec.and_then(|s| s.replicas).unwrap_or(1);
    let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
    Ok((desired, ready))
}

/// Waits until the Deployment's desired replicas satisfy `pred`; returns them.
pub async fn wait_replicas(
    tb: &Testbed,
    namespace: &str,
    name: &str,
    what: &str,
    timeout: Duration,
    pred: impl Fn(i32) -> bool,
) -> anyhow::Result<i32> {
    wait::until(what, timeout, Duration::from_millis(100), || async {
        let (desired, _) = replicas(tb, namespace, name).await?;
        Ok(pred(desired).then_some(desired))
    })
    .await
}

/// Waits until the ScaledObject `namespace/name` exists (or is gone, with `present = false`).
pub async fn wait_scaled_object(
    tb: &Testbed,
    namespace: &str,
    name: &str,
    present: bool,
    timeout: Duration,
) -> anyhow::Result<Option<ScaledObject>> {
    let api: Api<ScaledObject> = Api::namespaced(tb.client.clone(), namespace);
    let what = if present {
        "the ScaledObject to exist"
    } else {
        "the ScaledObject to be deleted"
    };
    wait::until(what, timeout, Duration::from_millis(100), || async {
        let found = api.get_opt(name).await?;
        Ok(match (present, found) {
            (true, Some(so)) => Some(Some(so)),
            (false, None) => Some(None),
            _ => None,
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn the_echo_image_is_a_pinned_published_reference() {
        // `latest` would make a kind node pull instead of using the loaded image.
        assert!(!ECHO_IMAGE.ends_with(":latest"), "{ECHO_IMAGE}");
        assert!(ECHO_IMAGE.contains("/e2e-echo:"), "{ECHO_IMAGE}");
    }

    #[test]
    fn the_deployment_hands_identity_and_delays_to_the_echo_image() {
        let app = App::new("ns", "app").startup_delay("1s");
        let deployment: Deployment = serde_json::from_value(app.deployment()).unwrap();
        let template = deployment.spec.unwrap().template;
        let annotations = template.metadata.unwrap().annotations.unwrap();
        assert_eq!(annotations[STARTUP_DELAY_ANNOTATION], "1s");
        assert!(!annotations.contains_key(RESPONSE_DELAY_ANNOTATION));
        let container = &template.spec.unwrap().containers[0];
        assert_eq!(container.image_pull_policy.as_deref(), Some("IfNotPresent"));
        let field_paths: BTreeMap<_, _> = container
            .env
            .iter()
            .flatten()
            .map(|var| {
                let field = var.value_from.as_ref().and_then(|v| v.field_ref.as_ref());
                (var.name.as_str(), field.unwrap().field_path.as_str())
            })
            .collect();
        assert_eq!(field_paths["POD_NAME"], "metadata.name");
        assert_eq!(field_paths["POD_NAMESPACE"], "metadata.namespace");
        assert_eq!(field_paths["POD_IP"], "status.podIP");
        assert_eq!(
            field_paths["ECHO_STARTUP_DELAY"],
            "metadata.annotations['sim.http.keda.sh/startup-delay']"
        );
        assert_eq!(
            field_paths["ECHO_RESPONSE_DELAY"],
            "metadata.annotations['sim.http.keda.sh/response-delay']"
        );
    }
}
