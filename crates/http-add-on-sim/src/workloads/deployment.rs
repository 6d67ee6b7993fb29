//! The Deployment controller: one ReplicaSet per pod-template revision of each Deployment, as
//! Kubernetes keeps them. A ReplicaSet is named `<deploy>-<pod-template-hash>`, carries the hash
//! as the `pod-template-hash` label (in its selector and template too), is owned by the
//! Deployment (`controller: true`) and numbered by the annotation [`REVISION_ANNOTATION`], which
//! the Deployment carries too. The ReplicaSet of the current template gets `spec.replicas`
//! (changing the template back, as `kubectl rollout undo` does, reuses the old ReplicaSet under
//! a new revision); the older ones are scaled to 0 once it is fully ready, and kept, up to
//! `spec.revisionHistoryLimit` (default 10), for `kubectl rollout history/undo`. The
//! Deployment's status sums its ReplicaSets' statuses; the ReplicaSet controller runs the pods.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use super::informer::{Change, Informer};
use super::queue::{self, Key, Reconcile, key_of};
use super::{Error, podutil, random};

/// Label carrying the hash of the pod template a ReplicaSet and its pods were created from.
const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// Annotation numbering a Deployment's revisions (on its ReplicaSets and on itself).
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// Annotation of a ReplicaSet: the Deployment's `spec.replicas` when it was last synced.
const DESIRED_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/desired-replicas";
/// Deployment annotations not copied to its ReplicaSets (Kubernetes' `annotationsToSkip`).
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION_ANNOTATION,
    "deployment.kubernetes.io/revision-history",
    DESIRED_REPLICAS_ANNOTATION,
    "deployment.kubernetes.io/max-replicas",
];
struct Controller {
    client: Client,
    deployments: Store<Deployment>,
    sets: Store<ReplicaSet>,
}

/// Runs the controller until its informers stop.
pub(crate) async fn run(
    client: Client,
    deployments: Informer<Deployment>,
    sets: Informer<ReplicaSet>,
) -> Result<(), Error> {
    let deployment_changes = deployments.subscribe();
    let set_changes = sets.subscribe();
    deployments.ready().await?;
    sets.ready().await?;
    let controller = Controller {
        client,
        deployments: deployments.store().clone(),
        sets: sets.store().clone(),
    };
    queue::drive(controller, deployment_changes, set_changes).await
}

impl Reconcile for Controller {
    type Owner = Deployment;
    type Owned = ReplicaSet;
    const KINDS: [&'static str; 2] = ["Deployment", "ReplicaSet"];

    fn all_keys(&self) -> BTreeSet<Key> {
        self.deployments
            .state()
            .iter()
            .map(|deploy| key_of(deploy.as_ref()))
            .collect()
    }

    async fn on_owner_change(&mut self, change: Change<Deployment>, dirty: &mut BTreeSet<Key>) {
        match change {
            Change::Applied(deploy) => {
                dirty.insert(key_of(deploy.as_ref()));
            }
            Change::Deleted(deploy) => self.delete_owned_sets(&deploy).await,
            Change::Resync => dirty.extend(self.all_keys()),
        }
    }

    fn on_owned_change(&mut self, change: Change<ReplicaSet>, dirty: &mut BTreeSet<Key>) {
        let set = match change {
            Change::Applied(set) | Change::Deleted(set) => set,
            Change::Resync => {
                dirty.extend(self.all_keys());
                return;
            }
        };
        if let Some(owner) =
            podutil::controller_of(set.as_ref()).filter(|owner| owner.kind == "Deployment")
        {
            dirty.insert((set.namespace().unwrap_or_default(), owner.name.clone()));
        }
    }

    async fn reconcile(&mut self, key: &Key) -> Result<(), kube::Error> {
        let (namespace, name) = key;
        let Some(deploy) = self
            .deployments
            .get(&ObjectRef::new(name).within(namespace))
        else {
            return Ok(());
        };
        if deploy.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let Some(uid) = deploy.uid() else {
            return Ok(());
        };
        let spec = deploy.spec.clone().unwrap_or_default();
        let desired = spec.replicas.unwrap_or(1).max(0);
        let wanted = normalized(&spec.template);
        let (mut current, mut old): (Vec<_>, Vec<_>) = self
            .owned_sets(namespace, &uid)
            .into_iter()
            .partition(|set| set_template(set).is_some_and(|t| normalized(t) == wanted));
        // Two ReplicaSets of one template (never made here): the newest revision is current.
        current.sort_by_key(|set| revision(set));
        old.extend(current.drain(..current.len().saturating_sub(1)));
        let max_old_revision = old.iter().map(|set| revision(set)).max().unwrap_or(0);
        let sets = Api::<ReplicaSet>::namespaced(self.client.clone(), namespace);
        let current = match current.pop() {
            Some(set) => set,
            None => match self
                .create_set(&deploy, &wanted, max_old_revision + 1, desired)
                .await?
            {
                Some(set) => set,
                // A hash collision: the status change brings us back with the next name.
                None => return Ok(()),
            },
        };

        // The current template's ReplicaSet: the desired replicas, the newest revision and the
        // Deployment's annotations (so `kubectl rollout history` shows its change-cause).
        let current_revision = revision(&current).max(max_old_revision + 1);
        let annotations = set_annotations(&deploy, current_revision, desired);
        let synced = current.spec.as_ref().and_then(|spec| spec.replicas) == Some(desired)
            && annotations
                .iter()
                .all(|(k, v)| current.annotations().get(k) == Some(v));
        if !synced {
            sets.patch(
                &current.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({
                    "metadata": { "annotations": annotations },
                    "spec": { "replicas": desired },
                })),
            )
            .await?;
        }
        let revision_text = current_revision.to_string();
        if deploy.annotations().get(REVISION_ANNOTATION) != Some(&revision_text) {
            Api::<Deployment>::namespaced(self.client.clone(), namespace)
                .patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({
                        "metadata": { "annotations": { REVISION_ANNOTATION: revision_text } }
                    })),
                )
                .await?;
        }

        // Rollout: the old templates' ReplicaSets go to 0 once the current one is fully ready.
        let ready = |set: &ReplicaSet| set.status.as_ref().and_then(|s| s.ready_replicas);
        let available = |set: &ReplicaSet| set.status.as_ref().and_then(|s| s.available_replicas);
        let replicas = |set: &ReplicaSet| set.status.as_ref().map_or(0, |s| s.replicas);
        let rolled_out = synced && ready(&current).unwrap_or(0) >= desired;
        if rolled_out {
            for set in old
                .iter()
                .filter(|set| set.spec.as_ref().and_then(|spec| spec.replicas) != Some(0))
            {
                sets.patch(
                    &set.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "spec": { "replicas": 0 } })),
                )
                .await?;
            }
        }
        // History: scaled-down old ReplicaSets beyond revisionHistoryLimit go, oldest first.
        let limit = usize::try_from(spec.revision_history_limit.unwrap_or(10)).unwrap_or(0);
        let mut idle: Vec<&Arc<ReplicaSet>> = old
            .iter()
            .filter(|set| set.spec.as_ref().and_then(|spec| spec.replicas) == Some(0))
            .filter(|set| replicas(set) == 0)
            .collect();
        idle.sort_by_key(|set| revision(set));
        for set in idle.iter().take(idle.len().saturating_sub(limit)) {
            match sets.delete(&set.name_any(), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error),
            }
        }

        let as_usize = |n: i32| usize::try_from(n).unwrap_or(0);
        let all = || old.iter().chain(std::iter::once(&current));
        let counts = ReplicaCounts {
            desired: as_usize(desired),
            replicas: all().map(|set| as_usize(replicas(set))).sum(),
            updated: as_usize(replicas(&current)),
            ready: all().map(|set| as_usize(ready(set).unwrap_or(0))).sum(),
            available: all().map(|set| as_usize(available(set).unwrap_or(0))).sum(),
        };
        let status = desired_status(&deploy, &counts);
        queue::write_status::<Deployment, _>(
            &self.client,
            namespace,
            name,
            deploy.status.as_ref(),
            &status,
            same_status,
        )
        .await
    }
}

impl Controller {
    /// Falls back on deleting a deleted Deployment's ReplicaSets ourselves, in case the API
    /// server's garbage collector has not (deleting twice is harmless).
    async fn delete_owned_sets(&self, deploy: &Deployment) {
        let Some(uid) = deploy.uid() else { return };
        let namespace = deploy.namespace().unwrap_or_default();
        let api = Api::<ReplicaSet>::namespaced(self.client.clone(), &namespace);
        for set in self.owned_sets(&namespace, &uid) {
            match api.delete(&set.name_any(), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => {
                    tracing::debug!(replicaset = %set.name_any(), %error, "deleting an orphaned ReplicaSet failed");
                }
            }
        }
    }

    /// The live ReplicaSets in `namespace` whose controller is the object with `uid`.
    fn owned_sets(&self, namespace: &str, uid: &str) -> Vec<Arc<ReplicaSet>> {
        self.sets
            .state()
            .into_iter()
            .filter(|set| set.namespace().as_deref() == Some(namespace))
            .filter(|set| set.metadata.deletion_timestamp.is_none())
            .filter(|set| {
                podutil::controller_of(set.as_ref()).is_some_and(|owner| owner.uid == uid)
            })
            .collect()
    }

    /// Creates the ReplicaSet of the Deployment's current template. `None` when its name is
    /// taken by another template: then `status.collisionCount` goes up and so the next name
    /// differs, as in Kubernetes.
    async fn create_set(
        &self,
        deploy: &Deployment,
        wanted: &Value,
        revision: u64,
        desired: i32,
    ) -> Result<Option<Arc<ReplicaSet>>, kube::Error> {
        let namespace = deploy.namespace().unwrap_or_default();
        let api = Api::<ReplicaSet>::namespaced(self.client.clone(), &namespace);
        let collisions = deploy.status.as_ref().and_then(|s| s.collision_count);
        let set = set_from_template(
            deploy,
            &template_hash(wanted, collisions),
            revision,
            desired,
        );
        match api.create(&PostParams::default(), &set).await {
            Ok(created) => {
                tracing::debug!(replicaset = %created.name_any(), "created ReplicaSet");
                Ok(Some(Arc::new(created)))
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let existing = api.get(&set.name_any()).await?;
                let ours = podutil::controller_of(&existing)
                    .is_some_and(|owner| Some(&owner.uid) == deploy.uid().as_ref());
                if ours && set_template(&existing).is_some_and(|t| normalized(t) == *wanted) {
                    // Ours already; the watch has not caught up with it yet.
                    return Ok(Some(Arc::new(existing)));
                }
                Api::<Deployment>::namespaced(self.client.clone(), &namespace)
                    .patch_status(
                        &deploy.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(json!({
                            "status": { "collisionCount": collisions.unwrap_or(0) + 1 }
                        })),
                    )
                    .await?;
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }
}

/// A ReplicaSet's revision number (0 when it has none).
fn revision(set: &ReplicaSet) -> u64 {
    set.annotations()
        .get(REVISION_ANNOTATION)
        .and_then(|revision| revision.parse().ok())
        .unwrap_or(0)
}

fn set_template(set: &ReplicaSet) -> Option<&PodTemplateSpec> {
    set.spec.as_ref()?.template.as_ref()
}

/// A pod template as compared between a Deployment and its ReplicaSets (Kubernetes'
/// `EqualIgnoreHash`): without the `pod-template-hash` label, and without nulls and empty maps
/// or lists, so that a template written back by another client (`kubectl rollout undo` sends
/// Go's `creationTimestamp: null` and `resources: {}`) still matches.
fn normalized(template: &PodTemplateSpec) -> Value {
    fn prune(value: &mut Value) -> bool {
        match value {
            Value::Null => true,
            Value::Object(map) => {
                map.retain(|_, v| !prune(v));
                map.is_empty()
            }
            Value::Array(items) => {
                items.iter_mut().for_each(|item| {
                    prune(item);
                });
                items.is_empty()
            }
            _ => false,
        }
    }
    let mut value = serde_json::to_value(template).unwrap_or_default();
    if let Some(labels) = value
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(POD_TEMPLATE_HASH_LABEL);
    }
    prune(&mut value);
    value
}

/// The `pod-template-hash` of a normalized template, encoded like Kubernetes' label; the
/// collision count, when there is one, is hashed in too.
fn template_hash(normalized: &Value, collisions: Option<i32>) -> String {
    let mut bytes = serde_json::to_vec(normalized).unwrap_or_default();
    if let Some(count) = collisions {
        bytes.extend_from_slice(&count.to_le_bytes());
    }
    random::safe_encode(random::fnv1a32(&bytes))
}

/// The annotations the Deployment's current ReplicaSet carries.
fn set_annotations(deploy: &Deployment, revision: u64, desired: i32) -> BTreeMap<String, String> {
    let mut annotations: BTreeMap<String, String> = deploy
        .annotations()
        .iter()
        .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    annotations.insert(REVISION_ANNOTATION.to_owned(), revision.to_string());
    annotations.insert(DESIRED_REPLICAS_ANNOTATION.to_owned(), desired.to_string());
    annotations
}

/// The ReplicaSet of the Deployment's current template, `<deploy>-<hash>`.
fn set_from_template(deploy: &Deployment, hash: &str, revision: u64, desired: i32) -> ReplicaSet {
    let spec = deploy.spec.clone().unwrap_or_default();
    let mut template = spec.template;
    let template_meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    let labels = template_meta.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(POD_TEMPLATE_HASH_LABEL.to_owned(), hash.to_owned());
    let labels = labels.clone();
    let mut selector = spec.selector;
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(POD_TEMPLATE_HASH_LABEL.to_owned(), hash.to_owned());
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", deploy.name_any())),
            namespace: deploy.namespace(),
            labels: Some(labels),
            annotations: Some(set_annotations(deploy, revision, desired)),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: deploy.name_any(),
                uid: deploy.uid().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(desired),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    }
}

/// Pod counts a Deployment's status is computed from (summed over its ReplicaSets).
#[derive(Debug, Clone, Copy)]
struct ReplicaCounts {
    desired: usize,
    replicas: usize,
    updated: usize,
    ready: usize,
    available: usize,
}

fn desired_status(deploy: &Deployment, counts: &ReplicaCounts) -> DeploymentStatus {
    let as_i32 = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let available = counts.available;
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
    fn replica_sets_are_named_labelled_and_owned_like_kubernetes() {
        let mut deploy = deployment(2);
        deploy.metadata.annotations = Some(
            [
                ("kubernetes.io/change-cause".to_owned(), "v2".to_owned()),
                (REVISION_ANNOTATION.to_owned(), "1".to_owned()),
            ]
            .into(),
        );
        let set = set_from_template(&deploy, "5d4f8b7c9", 4, 2);
        assert_eq!(set.name_any(), "app-5d4f8b7c9");
        let spec = set.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(2));
        let hash = |labels: Option<&BTreeMap<String, String>>| {
            labels.and_then(|l| l.get(POD_TEMPLATE_HASH_LABEL).cloned())
        };
        assert_eq!(
            hash(spec.selector.match_labels.as_ref()).as_deref(),
            Some("5d4f8b7c9")
        );
        let template_labels = spec.template.as_ref().unwrap().metadata.as_ref().unwrap();
        assert_eq!(
            hash(template_labels.labels.as_ref()).as_deref(),
            Some("5d4f8b7c9")
        );
        assert_eq!(
            hash(set.metadata.labels.as_ref()).as_deref(),
            Some("5d4f8b7c9")
        );
        let owner = &set.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("Deployment", "uid-1", Some(true))
        );
        assert_eq!(
            revision(&set),
            4,
            "the ReplicaSet's own revision, not the Deployment's"
        );
        assert_eq!(
            set.annotations()
                .get("kubernetes.io/change-cause")
                .map(String::as_str),
            Some("v2"),
            "the change-cause is copied for kubectl rollout history"
        );
    }

    #[test]
    fn template_hash_changes_with_the_template_and_the_collision_count() {
        let mut template = PodTemplateSpec::default();
        let before = template_hash(&normalized(&template), None);
        assert_eq!(before, template_hash(&normalized(&template), None));
        assert_ne!(before, template_hash(&normalized(&template), Some(1)));
        template.metadata = Some(ObjectMeta {
            labels: Some([("a".to_owned(), "b".to_owned())].into()),
            ..ObjectMeta::default()
        });
        assert_ne!(before, template_hash(&normalized(&template), None));
    }

    #[test]
    fn templates_compare_without_the_hash_label_and_empty_fields() {
        let ours: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "echo"}]},
        }))
        .unwrap();
        // What kubectl rollout undo writes back: Go's zero values, and the hash label removed
        // (or, from a ReplicaSet, still there).
        let from_go: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"creationTimestamp": null, "labels": {"app": "web", POD_TEMPLATE_HASH_LABEL: "x"}},
            "spec": {"containers": [{"name": "app", "image": "echo", "resources": {}}]},
        }))
        .unwrap();
        assert_eq!(normalized(&ours), normalized(&from_go));
        let other: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "echo:2"}]},
        }))
        .unwrap();
        assert_ne!(normalized(&ours), normalized(&other));
    }

    #[test]
    fn status_is_stable_when_recomputed() {
        let mut deploy = deployment(3);
        let counts = ReplicaCounts {
            desired: 3,
            replicas: 3,
            updated: 3,
            ready: 2,
            available: 2,
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
                available: 3,
            },
        );
        assert_eq!(available(&four), "True");
    }
}
