//! The work queue of the sim's Deployment and ReplicaSet controllers: the objects to reconcile
//! (by namespace and name), each once per round, and the failed ones again after a delay; and
//! [`drive`], the event loop both run on.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tokio::time::Instant;

use super::Error;
use super::informer::{Change, Subscription};

/// Delay before retrying a reconcile that failed.
const RETRY_DELAY: Duration = Duration::from_millis(250);

/// `(namespace, name)` of a reconciled object.
pub(super) type Key = (String, String);

/// The key of `obj`.
pub(super) fn key_of<K: ResourceExt>(obj: &K) -> Key {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Keys waiting for a reconcile, and failed ones waiting for their retry.
#[derive(Debug, Default)]
pub(super) struct WorkQueue {
    /// Keys to reconcile in the next round.
    pub dirty: BTreeSet<Key>,
    retries: HashMap<Key, Instant>,
}

impl WorkQueue {
    /// A queue with every one of `keys` dirty.
    pub(super) fn new(keys: BTreeSet<Key>) -> Self {
        Self {
            dirty: keys,
            retries: HashMap::new(),
        }
    }

    /// The keys of this round (each once); the queue's dirty set starts empty again.
    pub(super) fn take(&mut self) -> BTreeSet<Key> {
        let keys = std::mem::take(&mut self.dirty);
        for key in &keys {
            self.retries.remove(key);
        }
        keys
    }

    /// The reconcile of `key` (a `kind`) failed: it is retried after a delay.
    pub(super) fn failed(&mut self, kind: &str, key: Key, error: &dyn std::fmt::Display) {
        tracing::warn!(namespace = %key.0, kind, name = %key.1, %error, "reconcile failed, retrying");
        self.retries.insert(key, Instant::now() + RETRY_DELAY);
    }

    /// Waits for the earliest retry (forever when there is none), then marks every due key
    /// dirty.
    pub(super) async fn retries_due(&mut self) {
        match self.retries.values().min().copied() {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
        let now = Instant::now();
        let dirty = &mut self.dirty;
        self.retries.retain(|key, at| {
            if *at <= now {
                dirty.insert(key.clone());
                false
            } else {
                true
            }
        });
    }
}

/// A controller of objects of one kind (the owners) that also follows the objects they own.
pub(super) trait Reconcile {
    /// The kind reconciled: the queue's keys are its objects'.
    type Owner;
    /// The kind its objects own.
    type Owned;
    /// The names of the owner and the owned kind, for logs and errors.
    const KINDS: [&'static str; 2];

    /// The keys of every owner object.
    fn all_keys(&self) -> BTreeSet<Key>;

    /// Marks dirty what a change of an owner object calls for (and acts on a deletion).
    fn on_owner_change(
        &mut self,
        change: Change<Self::Owner>,
        dirty: &mut BTreeSet<Key>,
    ) -> impl Future<Output = ()> + Send;

    /// Marks dirty the owner of a changed owned object.
    fn on_owned_change(&mut self, change: Change<Self::Owned>, dirty: &mut BTreeSet<Key>);

    /// Brings the owner object `key` and what it owns to its desired state.
    fn reconcile(&mut self, key: &Key) -> impl Future<Output = Result<(), kube::Error>> + Send;
}

/// Runs `controller` until an informer stops: each round reconciles every dirty key once (a
/// failed one again after a delay), then waits for a change or a due retry and folds every
/// change already queued into the next round, so a burst costs one reconcile per object.
pub(super) async fn drive<C: Reconcile>(
    mut controller: C,
    mut owners: Subscription<C::Owner>,
    mut owned: Subscription<C::Owned>,
) -> Result<(), Error> {
    let [owner_kind, owned_kind] = C::KINDS;
    let mut queue = WorkQueue::new(controller.all_keys());
    loop {
        for key in queue.take() {
            if let Err(error) = controller.reconcile(&key).await {
                queue.failed(owner_kind, key, &error);
            }
        }
        tokio::select! {
            change = owners.next() => {
                let change = change.ok_or_else(|| Error::InformerStopped(owner_kind.into()))?;
                controller.on_owner_change(change, &mut queue.dirty).await;
            }
            change = owned.next() => {
                let change = change.ok_or_else(|| Error::InformerStopped(owned_kind.into()))?;
                controller.on_owned_change(change, &mut queue.dirty);
            }
            () = queue.retries_due() => {}
        }
        while let Some(change) = owners.try_next() {
            controller.on_owner_change(change, &mut queue.dirty).await;
        }
        while let Some(change) = owned.try_next() {
            controller.on_owned_change(change, &mut queue.dirty);
        }
    }
}

/// Writes `status` to the `K` `namespace/name` unless its `current` status is the same by
/// `same` (the fields the controller owns), so an unchanged status costs no request.
pub(super) async fn write_status<K, S>(
    client: &Client,
    namespace: &str,
    name: &str,
    current: Option<&S>,
    status: &S,
    same: fn(&S, &S) -> bool,
) -> Result<(), kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    S: serde::Serialize,
{
    if current.is_some_and(|current| same(current, status)) {
        return Ok(());
    }
    Api::<K>::namespaced(client.clone(), namespace)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await?;
    Ok(())
}
