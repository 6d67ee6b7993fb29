//! The ReplicaSet controller: keeps `spec.replicas` Pods of its template per ReplicaSet (named
//! `<replicaset>-<rand5>`, owned by the ReplicaSet) and keeps the ReplicaSet's status true.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use tokio::time::Instant;

use super::informer::{Change, Informer};
use super::queue::{self, Key, Reconcile, key_of};
use super::{Error, NODE_NAME, POD_FINALIZER, podutil, random};

/// How long a create or delete we issued may stay unobserved before we stop waiting for it.
const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(10);
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
    replica_sets: Store<ReplicaSet>,
    pods: Store<Pod>,
    expectations: HashMap<Key, Expectations>,
}

/// Runs the controller until its informers stop.
pub(crate) async fn run(
    client: Client,
    replica_sets: Informer<ReplicaSet>,
    pods: Informer<Pod>,
) -> Result<(), Error> {
    let set_changes = replica_sets.subscribe();
    let pod_changes = pods.subscribe();
    replica_sets.ready().await?;
    pods.ready().await?;
    let controller = Controller {
        client,
        replica_sets: replica_sets.store().clone(),
        pods: pods.store().clone(),
        expectations: HashMap::new(),
    };
    queue::drive(controller, set_changes, pod_changes).await
}

impl Reconcile for Controller {
    type Owner = ReplicaSet;
    type Owned = Pod;
    const KINDS: [&'static str; 2] = ["ReplicaSet", "Pod"];

    fn all_keys(&self) -> BTreeSet<Key> {
        self.replica_sets
            .state()
            .iter()
            .map(|set| key_of(set.as_ref()))
            .collect()
    }

    async fn on_owner_change(&mut self, change: Change<ReplicaSet>, dirty: &mut BTreeSet<Key>) {
        match change {
            Change::Applied(set) => {
                dirty.insert(key_of(set.as_ref()));
            }
            Change::Deleted(set) => {
                self.expectations.remove(&key_of(set.as_ref()));
                self.delete_owned_pods(&set).await;
            }
            Change::Resync => {
                self.expectations.clear();
                dirty.extend(self.all_keys());
            }
        }
    }

    fn on_owned_change(&mut self, change: Change<Pod>, dirty: &mut BTreeSet<Key>) {
        let (pod, gone) = match change {
            Change::Applied(pod) => (pod, false),
            Change::Deleted(pod) => (pod, true),
            Change::Resync => {
                self.expectations.clear();
                dirty.extend(self.all_keys());
                return;
            }
        };
        let Some(owner) =
            podutil::controller_of(pod.as_ref()).filter(|owner| owner.kind == "ReplicaSet")
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

    async fn reconcile(&mut self, key: &Key) -> Result<(), kube::Error> {
        let (namespace, name) = key;
        let Some(set) = self
            .replica_sets
            .get(&ObjectRef::new(name).within(namespace))
        else {
            self.expectations.remove(key);
            return Ok(());
        };
        if set.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let Some(uid) = set.uid() else {
            return Ok(());
        };
        let desired = usize::try_from(
            set.spec
                .as_ref()
                .and_then(|spec| spec.replicas)
                .unwrap_or(1),
        )
        .unwrap_or(0);
        let pod_api = Api::<Pod>::namespaced(self.client.clone(), namespace);

        let owned: Vec<Arc<Pod>> = self
            .pods
            .state()
            .into_iter()
            .filter(|pod| pod.namespace().as_deref() == Some(namespace.as_str()))
            .filter(|pod| {
                podutil::controller_of(pod.as_ref()).is_some_and(|owner| owner.uid == uid)
            })
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

        // Finished pods are replaced: delete them (a ReplicaSet's pods should never finish).
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
        let mut active: Vec<&Arc<Pod>> = owned
            .iter()
            .filter(|pod| !podutil::is_terminating(pod) && !podutil::is_terminal(pod))
            .filter(|pod| !expectations.deletes.contains_key(&pod.name_any()))
            .collect();

        let count = active.len() + expectations.creates.len();
        if count < desired {
            for _ in count..desired {
                let pod_name = create_pod(&pod_api, &set).await?;
                expectations.creates.insert(pod_name, Instant::now());
            }
        } else if count > desired {
            let excess = (count - desired).min(active.len());
            // Delete not-ready pods first, then the newest ones (as Kubernetes does).
            active.sort_by_key(|pod| {
                (
                    podutil::is_ready(pod),
                    Reverse(pod.metadata.creation_timestamp.clone()),
                )
            });
            for pod in active.drain(..excess) {
                let pod_name = pod.name_any();
                delete_pod(&pod_api, &pod_name).await?;
                expectations.deletes.insert(pod_name, Instant::now());
            }
        }

        let as_i32 = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        let ready = as_i32(active.iter().filter(|pod| podutil::is_ready(pod)).count());
        let status = ReplicaSetStatus {
            replicas: as_i32(active.len()),
            fully_labeled_replicas: Some(as_i32(active.len())),
            ready_replicas: Some(ready),
            available_replicas: Some(ready),
            observed_generation: set.metadata.generation,
            ..ReplicaSetStatus::default()
        };
        queue::write_status::<ReplicaSet, _>(
            &self.client,
            namespace,
            name,
            set.status.as_ref(),
            &status,
            same_status,
        )
        .await
    }
}

impl Controller {
    /// Falls back on deleting a deleted ReplicaSet's pods ourselves, in case the API server's
    /// garbage collector has not (deleting twice is harmless).
    async fn delete_owned_pods(&self, set: &ReplicaSet) {
        let Some(uid) = set.uid() else { return };
        let namespace = set.namespace().unwrap_or_default();
        let api = Api::<Pod>::namespaced(self.client.clone(), &namespace);
        for pod in self.pods.state() {
            let owned = podutil::controller_of(pod.as_ref()).is_some_and(|owner| owner.uid == uid);
            if owned
                && !podutil::is_terminating(&pod)
                && pod.namespace().as_deref() == Some(&namespace)
                && let Err(error) = delete_pod(&api, &pod.name_any()).await
            {
                tracing::debug!(pod = %pod.name_any(), %error, "deleting an orphaned pod failed");
            }
        }
    }
}

/// Whether the counts this controller writes already have these values.
fn same_status(old: &ReplicaSetStatus, new: &ReplicaSetStatus) -> bool {
    let count = |n: Option<i32>| n.unwrap_or(0);
    old.observed_generation == new.observed_generation
        && old.replicas == new.replicas
        && count(old.fully_labeled_replicas) == count(new.fully_labeled_replicas)
        && count(old.ready_replicas) == count(new.ready_replicas)
        && count(old.available_replicas) == count(new.available_replicas)
}

/// Creates one pod from the ReplicaSet's template and returns its name.
async fn create_pod(api: &Api<Pod>, set: &ReplicaSet) -> Result<String, kube::Error> {
    let mut attempt = 0;
    loop {
        let pod = pod_from_template(set);
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

fn pod_from_template(set: &ReplicaSet) -> Pod {
    let template = set
        .spec
        .as_ref()
        .and_then(|spec| spec.template.clone())
        .unwrap_or_default();
    let template_meta = template.metadata.unwrap_or_default();
    let mut pod_spec = template.spec.unwrap_or_default();
    pod_spec
        .node_name
        .get_or_insert_with(|| NODE_NAME.to_owned());
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("{}-{}", set.name_any(), random::name_suffix(5))),
            namespace: set.namespace(),
            labels: template_meta.labels,
            annotations: template_meta.annotations,
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                name: set.name_any(),
                uid: set.uid().unwrap_or_default(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::api::core::v1::PodTemplateSpec;

    #[test]
    fn pods_are_named_and_owned_like_kubernetes() {
        let set = ReplicaSet {
            metadata: ObjectMeta {
                name: Some("app-5d4f8b7c9".into()),
                namespace: Some("ns".into()),
                uid: Some("uid-1".into()),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(1),
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some([("pod-template-hash".into(), "5d4f8b7c9".into())].into()),
                        ..ObjectMeta::default()
                    }),
                    spec: None,
                }),
                ..ReplicaSetSpec::default()
            }),
            status: None,
        };
        let pod = pod_from_template(&set);
        let name = pod.name_any();
        let suffix = name
            .strip_prefix("app-5d4f8b7c9-")
            .expect("name is <replicaset>-<rand>");
        assert_eq!(suffix.len(), 5);
        assert_eq!(
            pod.labels().get("pod-template-hash").map(String::as_str),
            Some("5d4f8b7c9")
        );
        let owner = &pod.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("ReplicaSet", "uid-1", Some(true))
        );
        assert_eq!(pod.finalizers(), [POD_FINALIZER.to_owned()]);
        assert_eq!(
            pod.spec.unwrap().node_name.as_deref(),
            Some(NODE_NAME),
            "pods run on the sim's node"
        );
    }
}
