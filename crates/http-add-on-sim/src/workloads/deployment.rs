//! The Deployment controller: keeps `spec.replicas` Pods of the current pod template per
//! Deployment (no ReplicaSet layer) and keeps the Deployment's status true.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::time::Instant;

use super::informer::{Change, Informer};
use super::{Error, NODE_NAME, POD_FINALIZER, podutil, random};

/// Label carrying the hash of the pod template a pod was created from.
const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// How long a create or delete we issued may stay unobserved before we stop waiting for it.
const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Delay before retrying a reconcile that failed.
const RETRY_DELAY: Duration = Duration::from_millis(250);

/// `(namespace, name)` of a Deployment.
type Key = (String, String);

/// Writes we issued but have not seen in the pod cache yet (the ReplicaSet controller's
/// "expectations"): without them a reconcile that runs before the watch catches up would
/// create or delete pods twice.
#[derive(Debug, Default)]
struct Expectations {
    creates: HashMap<String, Instant>,
    deletes: HashMap<String, Instant>,
}

struct Controller {
    client: Client,
    deployments: Store<Deployment>,
    pods: Store<Pod>,
    expectations: HashMap<Key, Expectations>,
}

/// Runs the controller until its informers stop.
pub(crate) async fn run(
    client: Client,
    deployments: Informer<Deployment>,
    pods: Informer<Pod>,
) -> Result<(), Error> {
    let mut deployment_changes = deployments.subscribe();
    let mut pod_changes = pods.subscribe();
    deployments.ready().await?;
    pods.ready().await?;
    let mut controller = Controller {
        client,
        deployments: deployments.store().clone(),
        pods: pods.store().clone(),
        expectations: HashMap::new(),
    };
    let mut dirty: BTreeSet<Key> = controller.all_keys();
    let mut retries: HashMap<Key, Instant> = HashMap::new();
    loop {
        for key in std::mem::take(&mut dirty) {
            retries.remove(&key);
            if let Err(error) = controller.reconcile(&key).await {
                tracing::warn!(namespace = %key.0, deployment = %key.1, %error, "reconcile failed, retrying");
                retries.insert(key, Instant::now() + RETRY_DELAY);
            }
        }
        let next_retry = retries.values().min().copied();
        tokio::select! {
            change = deployment_changes.next() => {
                let change = change.ok_or_else(|| Error::InformerStopped("Deployment".into()))?;
                controller.on_deployment_change(change, &mut dirty).await;
            }
            change = pod_changes.next() => {
                let change = change.ok_or_else(|| Error::InformerStopped("Pod".into()))?;
                controller.on_pod_change(change, &mut dirty);
            }
            () = tokio::time::sleep_until(next_retry.unwrap_or_else(Instant::now)), if next_retry.is_some() => {
                let now = Instant::now();
                retries.retain(|key, at| if *at <= now { dirty.insert(key.clone()); false } else { true });
            }
        }
        // Coalesce bursts: fold every change already queued into this round.
        while let Some(change) = deployment_changes.try_next() {
            controller.on_deployment_change(change, &mut dirty).await;
        }
        while let Some(change) = pod_changes.try_next() {
            controller.on_pod_change(change, &mut dirty);
        }
    }
}

impl Controller {
    fn all_keys(&self) -> BTreeSet<Key> {
        self.deployments
            .state()
            .iter()
            .map(|deploy| key_of(deploy.as_ref()))
            .collect()
    }

    async fn on_deployment_change(
        &mut self,
        change: Change<Deployment>,
        dirty: &mut BTreeSet<Key>,
    ) {
        match change {
            Change::Applied(deploy) => {
                dirty.insert(key_of(deploy.as_ref()));
            }
            Change::Deleted(deploy) => {
                let key = key_of(deploy.as_ref());
                self.expectations.remove(&key);
                self.delete_owned_pods(&deploy).await;
            }
            Change::Resync => {
                self.expectations.clear();
                dirty.extend(self.all_keys());
            }
        }
    }

    fn on_pod_change(&mut self, change: Change<Pod>, dirty: &mut BTreeSet<Key>) {
        let (pod, gone) = match change {
            Change::Applied(pod) => (pod, false),
            Change::Deleted(pod) => (pod, true),
            Change::Resync => {
                self.expectations.clear();
                dirty.extend(self.all_keys());
                return;
            }
        };
        let Some(owner) = podutil::controller_of(&pod).filter(|owner| owner.kind == "Deployment")
        else {
            return;
        };
        let key = (pod.namespace().unwrap_or_default(), owner.name.clone());
        if let Some(expectations) = self.expectations.get_mut(&key) {
            let name = pod.name_any();
            expectations.creates.remove(&name);
            if gone || podutil::is_terminating(&pod) {
                expectations.deletes.remove(&name);
            }
        }
        dirty.insert(key);
    }

    /// Falls back on deleting a deleted Deployment's pods ourselves, in case the API server's
    /// garbage collector has not (deleting twice is harmless).
    async fn delete_owned_pods(&self, deploy: &Deployment) {
        let Some(uid) = deploy.uid() else { return };
        let namespace = deploy.namespace().unwrap_or_default();
        let api = Api::<Pod>::namespaced(self.client.clone(), &namespace);
        for pod in self.pods.state() {
            let owned = podutil::controller_of(&pod).is_some_and(|owner| owner.uid == uid);
            if owned
                && !podutil::is_terminating(&pod)
                && pod.namespace().as_deref() == Some(&namespace)
                && let Err(error) = delete_pod(&api, &pod.name_any()).await
            {
                tracing::debug!(pod = %pod.name_any(), %error, "deleting an orphaned pod failed");
            }
        }
    }

    async fn reconcile(&mut self, key: &Key) -> Result<(), kube::Error> {
        let (namespace, name) = key;
        let Some(deploy) = self
            .deployments
            .get(&ObjectRef::new(name).within(namespace))
        else {
            self.expectations.remove(key);
            return Ok(());
        };
        if deploy.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let Some(uid) = deploy.uid() else {
            return Ok(());
        };
        let spec = deploy.spec.clone().unwrap_or_default();
        let desired = usize::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0);
        let hash = template_hash(&spec.template);
        let pod_api = Api::<Pod>::namespaced(self.client.clone(), namespace);

        let owned: Vec<Arc<Pod>> = self
            .pods
            .state()
            .into_iter()
            .filter(|pod| pod.namespace().as_deref() == Some(namespace.as_str()))
            .filter(|pod| podutil::controller_of(pod).is_some_and(|owner| owner.uid == uid))
            .collect();
        let expectations = self.expectations.entry(key.clone()).or_default();
        let now = Instant::now();
        expectations.creates.retain(|pod_name, at| {
            now < *at + EXPECTATION_TIMEOUT && !owned.iter().any(|pod| pod.name_any() == *pod_name)
        });
        expectations.deletes.retain(|pod_name, at| {
            now < *at + EXPECTATION_TIMEOUT
                && owned
                    .iter()
                    .any(|pod| pod.name_any() == *pod_name && !podutil::is_terminating(pod))
        });

        // Finished pods are replaced: delete them (a Deployment's pods should never finish).
        for pod in owned
            .iter()
            .filter(|pod| podutil::is_terminal(pod) && !podutil::is_terminating(pod))
        {
            let pod_name = pod.name_any();
            if let std::collections::hash_map::Entry::Vacant(entry) =
                expectations.deletes.entry(pod_name)
            {
                delete_pod(&pod_api, entry.key()).await?;
                entry.insert(Instant::now());
            }
        }
        let active: Vec<&Arc<Pod>> = owned
            .iter()
            .filter(|pod| !podutil::is_terminating(pod) && !podutil::is_terminal(pod))
            .filter(|pod| !expectations.deletes.contains_key(&pod.name_any()))
            .collect();
        let (mut current, old): (Vec<&Arc<Pod>>, Vec<&Arc<Pod>>) = active
            .iter()
            .partition(|pod| pod.labels().get(POD_TEMPLATE_HASH_LABEL) == Some(&hash));

        let current_count = current.len() + expectations.creates.len();
        if current_count < desired {
            for _ in current_count..desired {
                let pod_name = create_pod(&pod_api, &deploy, &hash).await?;
                expectations.creates.insert(pod_name, Instant::now());
            }
        } else if current_count > desired {
            let excess = (current_count - desired).min(current.len());
            // Delete not-ready pods first, then the newest ones (as the ReplicaSet controller does).
            current.sort_by_key(|pod| {
                (
                    podutil::is_ready(pod),
                    Reverse(pod.metadata.creation_timestamp.clone()),
                )
            });
            for pod in current.drain(..excess) {
                let pod_name = pod.name_any();
                delete_pod(&pod_api, &pod_name).await?;
                expectations.deletes.insert(pod_name, Instant::now());
            }
        }
        // Rollout: old-template pods go once the new template's pods are all ready.
        let current_ready = current.iter().filter(|pod| podutil::is_ready(pod)).count();
        if !old.is_empty() && current_ready >= desired {
            for pod in &old {
                let pod_name = pod.name_any();
                delete_pod(&pod_api, &pod_name).await?;
                expectations.deletes.insert(pod_name, Instant::now());
            }
        }

        let counts = ReplicaCounts {
            desired,
            replicas: active.len(),
            updated: current.len(),
            ready: active.iter().filter(|pod| podutil::is_ready(pod)).count(),
        };
        let status = desired_status(&deploy, &counts);
        if !deploy
            .status
            .as_ref()
            .is_some_and(|old| same_status(old, &status))
        {
            let api = Api::<Deployment>::namespaced(self.client.clone(), namespace);
            api.patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await?;
        }
        Ok(())
    }
}

fn key_of<K: ResourceExt>(obj: &K) -> Key {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}

/// The hash of a pod template, encoded like Kubernetes' `pod-template-hash` label.
fn template_hash(template: &PodTemplateSpec) -> String {
    let bytes = serde_json::to_vec(template).unwrap_or_default();
    random::safe_encode(random::fnv1a32(&bytes))
}

/// Creates one pod from the Deployment's template and returns its name.
async fn create_pod(
    api: &Api<Pod>,
    deploy: &Deployment,
    hash: &str,
) -> Result<String, kube::Error> {
    let mut attempt = 0;
    loop {
        let pod = pod_from_template(deploy, hash);
        let pod_name = pod.name_any();
        match api.create(&PostParams::default(), &pod).await {
            Ok(_) => {
                tracing::debug!(pod = %pod_name, "created pod");
                return Ok(pod_name);
            }
            // A name collision: draw another suffix.
            Err(kube::Error::Api(status)) if status.code == 409 && attempt < 5 => attempt += 1,
            Err(error) => return Err(error),
        }
    }
}

fn pod_from_template(deploy: &Deployment, hash: &str) -> Pod {
    let spec = deploy.spec.clone().unwrap_or_default();
    let template_meta = spec.template.metadata.unwrap_or_default();
    let mut labels = template_meta.labels.unwrap_or_default();
    labels.insert(POD_TEMPLATE_HASH_LABEL.to_owned(), hash.to_owned());
    let mut pod_spec = spec.template.spec.unwrap_or_default();
    pod_spec
        .node_name
        .get_or_insert_with(|| NODE_NAME.to_owned());
    Pod {
        metadata: ObjectMeta {
            name: Some(format!(
                "{}-{hash}-{}",
                deploy.name_any(),
                random::name_suffix(5)
            )),
            namespace: deploy.namespace(),
            labels: Some(labels),
            annotations: template_meta.annotations,
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: deploy.name_any(),
                uid: deploy.uid().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            finalizers: Some(vec![POD_FINALIZER.to_owned()]),
            ..ObjectMeta::default()
        },
        spec: Some(pod_spec),
        status: None,
    }
}

async fn delete_pod(api: &Api<Pod>, name: &str) -> Result<(), kube::Error> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}

/// Pod counts a Deployment's status is computed from.
#[derive(Debug, Clone, Copy)]
struct ReplicaCounts {
    desired: usize,
    replicas: usize,
    updated: usize,
    ready: usize,
}

fn desired_status(deploy: &Deployment, counts: &ReplicaCounts) -> DeploymentStatus {
    let as_i32 = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let available = counts.ready;
    let max_unavailable = max_unavailable(deploy, counts.desired);
    let minimum_available = available + max_unavailable >= counts.desired;
    let complete = counts.updated == counts.desired
        && counts.replicas == counts.desired
        && available == counts.desired;
    let old_conditions = deploy
        .status
        .as_ref()
        .and_then(|status| status.conditions.clone())
        .unwrap_or_default();
    let conditions = vec![
        condition(
            &old_conditions,
            "Available",
            minimum_available,
            if minimum_available {
                "MinimumReplicasAvailable"
            } else {
                "MinimumReplicasUnavailable"
            },
            if minimum_available {
                "Deployment has minimum availability."
            } else {
                "Deployment does not have minimum availability."
            },
        ),
        condition(
            &old_conditions,
            "Progressing",
            true,
            if complete {
                "NewReplicaSetAvailable"
            } else {
                "ReplicaSetUpdated"
            },
            if complete {
                "Deployment has successfully progressed."
            } else {
                "Deployment is progressing."
            },
        ),
    ];
    DeploymentStatus {
        observed_generation: deploy.metadata.generation,
        replicas: Some(as_i32(counts.replicas)),
        updated_replicas: Some(as_i32(counts.updated)),
        ready_replicas: Some(as_i32(counts.ready)),
        available_replicas: Some(as_i32(available)),
        unavailable_replicas: Some(as_i32(counts.desired.saturating_sub(available))),
        conditions: Some(conditions),
        ..DeploymentStatus::default()
    }
}

/// Whether the fields this controller writes already have these values (other writers' fields
/// and timestamps are ignored, so recomputing never loops).
fn same_status(old: &DeploymentStatus, new: &DeploymentStatus) -> bool {
    let count = |n: Option<i32>| n.unwrap_or(0);
    let conditions = |status: &DeploymentStatus| {
        let mut conditions: Vec<(String, String, Option<String>)> = status
            .conditions
            .iter()
            .flatten()
            .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
            .collect();
        conditions.sort();
        conditions
    };
    old.observed_generation == new.observed_generation
        && count(old.replicas) == count(new.replicas)
        && count(old.updated_replicas) == count(new.updated_replicas)
        && count(old.ready_replicas) == count(new.ready_replicas)
        && count(old.available_replicas) == count(new.available_replicas)
        && count(old.unavailable_replicas) == count(new.unavailable_replicas)
        && conditions(old) == conditions(new)
}

/// `spec.strategy.rollingUpdate.maxUnavailable` as a pod count (default 25%, rounded down).
fn max_unavailable(deploy: &Deployment, desired: usize) -> usize {
    let value = deploy
        .spec
        .as_ref()
        .and_then(|spec| spec.strategy.as_ref())
        .and_then(|strategy| strategy.rolling_update.as_ref())
        .and_then(|rolling| rolling.max_unavailable.clone())
        .unwrap_or(IntOrString::String("25%".into()));
    match value {
        IntOrString::Int(n) => usize::try_from(n).unwrap_or(0),
        IntOrString::String(percent) => {
            let percent: usize = percent.trim_end_matches('%').parse().unwrap_or(25);
            desired * percent / 100
        }
    }
}

/// A condition that keeps its timestamps while its status and reason stay the same, so that
/// recomputing the status is idempotent.
fn condition(
    old: &[DeploymentCondition],
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
) -> DeploymentCondition {
    let status = if status { "True" } else { "False" };
    let previous = old.iter().find(|condition| condition.type_ == type_);
    let now = || Some(Time(jiff::Timestamp::now()));
    let last_transition_time = match previous {
        Some(previous) if previous.status == status => previous.last_transition_time.clone(),
        _ => now(),
    };
    let last_update_time = match previous {
        Some(previous)
            if previous.status == status && previous.reason.as_deref() == Some(reason) =>
        {
            previous.last_update_time.clone()
        }
        _ => now(),
    };
    DeploymentCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_transition_time,
        last_update_time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentSpec;

    fn deployment(replicas: i32) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("app".into()),
                namespace: Some("ns".into()),
                uid: Some("uid-1".into()),
                generation: Some(3),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                ..DeploymentSpec::default()
            }),
            status: None,
        }
    }

    #[test]
    fn pods_are_named_and_owned_like_kubernetes() {
        let deploy = deployment(1);
        let pod = pod_from_template(&deploy, "5d4f8b7c9");
        let name = pod.name_any();
        let suffix = name
            .strip_prefix("app-5d4f8b7c9-")
            .expect("name is <deploy>-<hash>-<rand>");
        assert_eq!(suffix.len(), 5);
        assert_eq!(
            pod.labels()
                .get(POD_TEMPLATE_HASH_LABEL)
                .map(String::as_str),
            Some("5d4f8b7c9")
        );
        let owner = &pod.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("Deployment", "uid-1", Some(true))
        );
        assert_eq!(pod.finalizers(), [POD_FINALIZER.to_owned()]);
    }

    #[test]
    fn template_hash_changes_with_the_template() {
        let mut template = PodTemplateSpec::default();
        let before = template_hash(&template);
        assert_eq!(before, template_hash(&template));
        template.metadata = Some(ObjectMeta {
            labels: Some([("a".to_owned(), "b".to_owned())].into()),
            ..ObjectMeta::default()
        });
        assert_ne!(before, template_hash(&template));
    }

    #[test]
    fn status_is_stable_when_recomputed() {
        let mut deploy = deployment(3);
        let counts = ReplicaCounts {
            desired: 3,
            replicas: 3,
            updated: 3,
            ready: 2,
        };
        let status = desired_status(&deploy, &counts);
        assert_eq!(status.ready_replicas, Some(2));
        assert_eq!(status.unavailable_replicas, Some(1));
        assert_eq!(status.observed_generation, Some(3));
        deploy.status = Some(status.clone());
        assert_eq!(
            desired_status(&deploy, &counts),
            status,
            "recomputing must not change timestamps"
        );
        let available =
            |status: &DeploymentStatus| status.conditions.as_ref().unwrap()[0].status.clone();
        // maxUnavailable 25% of 3 rounds down to 0: 2 ready of 3 is not minimum availability.
        assert_eq!(available(&status), "False");
        let four = desired_status(
            &deployment(4),
            &ReplicaCounts {
                desired: 4,
                replicas: 4,
                updated: 4,
                ready: 3,
            },
        );
        assert_eq!(available(&four), "True");
    }
}
