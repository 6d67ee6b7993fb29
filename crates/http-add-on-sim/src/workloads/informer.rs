//! A shared informer: one watch per resource kind feeding a reflector store, plus a broadcast
//! of what changed so that several controllers react to the same events without polling.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher;
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;

/// First delay before re-watching after an error.
const MIN_BACKOFF: Duration = Duration::from_millis(20);
/// Longest delay between re-watch attempts.
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// Re-watch backoff for a local, simulated API server: much shorter than kube's default
/// (800 ms up to 30 s), so that the cluster recovers quickly after tests restart the API server.
#[derive(Debug)]
struct QuickBackoff {
    next: Duration,
}

impl Default for QuickBackoff {
    fn default() -> Self {
        Self { next: MIN_BACKOFF }
    }
}

impl Iterator for QuickBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.next;
        self.next = (delay * 2).min(MAX_BACKOFF);
        Some(delay)
    }
}

impl Backoff for QuickBackoff {
    fn reset(&mut self) {
        self.next = MIN_BACKOFF;
    }
}

/// How many changes a slow subscriber may fall behind before it must resync from the store.
const CHANGE_BUFFER: usize = 4096;

/// One observed change. The store already reflects it when subscribers receive it.
#[derive(Debug)]
pub(crate) enum Change<K> {
    /// An object was created or modified.
    Applied(Arc<K>),
    /// An object was deleted (its last known state).
    Deleted(Arc<K>),
    /// The store was (re)built from a full list, or the subscriber lagged: everything may have changed.
    Resync,
}

impl<K> Clone for Change<K> {
    fn clone(&self) -> Self {
        match self {
            Self::Applied(obj) => Self::Applied(Arc::clone(obj)),
            Self::Deleted(obj) => Self::Deleted(Arc::clone(obj)),
            Self::Resync => Self::Resync,
        }
    }
}

/// A cache of every object of kind `K` in the cluster, kept current by a watch.
pub(crate) struct Informer<K: Resource + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    store: Store<K>,
    changes: broadcast::Sender<Change<K>>,
    /// Turns true after the first full list. (Not `Store::wait_until_ready`: it wakes only one
    /// of several concurrent waiters.)
    ready: watch::Receiver<bool>,
}

impl<K: Resource + 'static> Clone for Informer<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            changes: self.changes.clone(),
            ready: self.ready.clone(),
        }
    }
}

impl<K> Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// Starts watching `api` in a task owned by `tasks`.
    pub(crate) fn spawn(api: Api<K>, tasks: &mut JoinSet<Result<(), super::Error>>) -> Self {
        let (store, writer) = reflector::store();
        let (changes, _) = broadcast::channel(CHANGE_BUFFER);
        let sender = changes.clone();
        let (ready_tx, ready) = watch::channel(false);
        tasks.spawn(async move {
            let stream = reflector::reflector(
                writer,
                watcher(api, watcher::Config::default()).backoff(QuickBackoff::default()),
            );
            let mut stream = std::pin::pin!(stream);
            let mut failing = false;
            while let Some(event) = stream.next().await {
                if event.is_ok() {
                    failing = false;
                }
                let change = match event {
                    Ok(watcher::Event::Apply(obj)) => Change::Applied(Arc::new(obj)),
                    Ok(watcher::Event::Delete(obj)) => Change::Deleted(Arc::new(obj)),
                    Ok(watcher::Event::InitDone) => {
                        ready_tx.send_replace(true);
                        Change::Resync
                    }
                    Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => continue,
                    Err(error) => {
                        // Once per outage at warn level; the retries that follow at debug.
                        if std::mem::replace(&mut failing, true) {
                            tracing::debug!(kind = %K::kind(&()), %error, "watch still failing, retrying");
                        } else {
                            tracing::warn!(kind = %K::kind(&()), %error, "watch failed, retrying");
                        }
                        continue;
                    }
                };
                // No subscriber yet is fine: subscribers resync from the store when they start.
                let _ = sender.send(change);
            }
            Ok(())
        });
        Self {
            store,
            changes,
            ready,
        }
    }

    /// The cache (read-only).
    pub(crate) fn store(&self) -> &Store<K> {
        &self.store
    }

    /// Subscribes to changes; subscribe before reading the store to miss nothing.
    pub(crate) fn subscribe(&self) -> Subscription<K> {
        Subscription {
            receiver: self.changes.subscribe(),
        }
    }

    /// Waits until the first full list is in the store.
    pub(crate) async fn ready(&self) -> Result<(), super::Error> {
        let mut ready = self.ready.clone();
        let outcome = ready.wait_for(|ready| *ready).await.map(|_| ());
        outcome.map_err(|_| super::Error::InformerStopped(K::kind(&()).into_owned()))
    }
}

/// A stream of changes of one informer.
pub(crate) struct Subscription<K> {
    receiver: broadcast::Receiver<Change<K>>,
}

impl<K> Subscription<K> {
    /// The next change; a lag is reported as [`Change::Resync`]. `None` when the informer stopped.
    pub(crate) async fn next(&mut self) -> Option<Change<K>> {
        match self.receiver.recv().await {
            Ok(change) => Some(change),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(Change::Resync),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// A change that is already waiting, without blocking.
    pub(crate) fn try_next(&mut self) -> Option<Change<K>> {
        match self.receiver.try_recv() {
            Ok(change) => Some(change),
            Err(broadcast::error::TryRecvError::Lagged(_)) => Some(Change::Resync),
            Err(_) => None,
        }
    }
}
