//! The work queue of the sim's Deployment and ReplicaSet controllers: the objects to reconcile
//! (by namespace and name), each once per round, and the failed ones again after a delay.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use kube::ResourceExt;
use tokio::time::Instant;

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
