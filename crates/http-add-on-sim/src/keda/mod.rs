//! KEDA stand-in: drives external scalers over gRPC and scales workloads through `/scale`.
//!
//! Like real KEDA it talks to the API server only through a [`kube::Client`]: it watches
//! `keda.sh/v1alpha1` ScaledObjects, runs one independent loop per ScaledObject (restarted when
//! the spec changes, stopped when the object is deleted) and writes the ScaledObject's status.
//! For every `external` / `external-push` trigger it speaks the real external-scaler protocol to
//! `metadata.scalerAddress`. KEDA's rules (activation from zero, cooldown to zero) and the HPA's
//! (metric math, tolerance, scale-down stabilization) are in [`autoscaler`], free of I/O.
//!
//! The HPA's "current replicas" is the target's `spec.replicas` (from `/scale`), not the count
//! of ready pods.
//!
//! Each ScaledObject gets its HorizontalPodAutoscaler object (`keda-hpa-<name>`, owned by the
//! ScaledObject, named in `status.hpaName`) built from the scalers' `GetMetricSpec` answers.
//! As with KEDA, the metric names and targets are read again only when the HPA is rebuilt: the
//! ScaledObject's spec changed, or the HPA's labels or annotations did (KEDA's controller
//! watches its HPAs with those predicates), or it was deleted. Between rebuilds `GetMetrics`
//! is asked for the metrics the HPA holds.
//!
//! Not modelled: non-external trigger types (a ScaledObject with one is reported `Ready=False`
//! and left alone), fallback, paused annotations, idle replicas, HPA scaling policies (scale-up
//! is immediate), a finalizer (the original replica count is restored when the deletion is
//! observed).

pub mod autoscaler;
pub mod crd;
mod hpa;
mod scaled_object;
mod scaler_client;
pub mod spec;
pub mod status;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use scaled_object::{Carry, Context, Stop, run_scaled_object};
pub use spec::scaled_object_resource;

/// Turns a trigger's `scalerAddress` (e.g. `keda-add-ons-http-external-scaler.keda:9090`) into a
/// socket address. IP literals (`127.0.0.1:9090`) are dialled without asking the resolver.
///
/// Any `Fn(&str) -> Option<SocketAddr>` closure is a resolver; [`crate::Sim`] uses one backed by
/// [`crate::workloads::resolve_service`] (Service names, as the cluster DNS would resolve them).
pub trait Resolver: Send + Sync + 'static {
    /// The socket address for `address`, or why it is unknown (retried at the next attempt).
    fn resolve(&self, address: &str) -> impl Future<Output = Result<SocketAddr, String>> + Send;
}

impl<F> Resolver for F
where
    F: Fn(&str) -> Option<SocketAddr> + Send + Sync + 'static,
{
    fn resolve(&self, address: &str) -> impl Future<Output = Result<SocketAddr, String>> + Send {
        std::future::ready(self(address).ok_or_else(|| "unknown address".to_owned()))
    }
}

/// A running ScaledObject loop.
struct Running {
    uid: Option<String>,
    spec: serde_json::Value,
    stop: oneshot::Sender<Stop>,
    handle: JoinHandle<Carry>,
}

type Key = (String, String);

fn key_of(obj: &DynamicObject) -> Key {
    (
        obj.metadata.namespace.clone().unwrap_or_default(),
        obj.metadata.name.clone().unwrap_or_default(),
    )
}

/// The set of ScaledObject loops, keyed by namespace and name.
struct Supervisor<R> {
    ctx: Arc<Context<R>>,
    running: HashMap<Key, Running>,
}

impl<R: Resolver> Supervisor<R> {
    fn spawn(&mut self, obj: DynamicObject, previous: Option<(JoinHandle<Carry>, bool)>) {
        let (stop, stop_rx) = oneshot::channel();
        let uid = obj.metadata.uid.clone();
        let spec = obj.data.get("spec").cloned().unwrap_or_default();
        let key = key_of(&obj);
        let ctx = self.ctx.clone();
        let handle = tokio::spawn(async move {
            // The previous loop finishes (and restores, if deleted) before this one scales.
            let carry = match previous {
                Some((handle, keep)) => handle.await.ok().filter(|_| keep).unwrap_or_default(),
                None => Carry::default(),
            };
            run_scaled_object(ctx, obj, carry, stop_rx).await
        });
        self.running.insert(
            key,
            Running {
                uid,
                spec,
                stop,
                handle,
            },
        );
    }

    fn apply(&mut self, obj: DynamicObject) {
        let key = key_of(&obj);
        let spec = obj.data.get("spec").cloned().unwrap_or_default();
        let previous = match self.running.remove(&key) {
            Some(running) if running.uid == obj.metadata.uid && running.spec == spec => {
                // A status or metadata change: nothing to do.
                self.running.insert(key, running);
                return;
            }
            Some(running) => {
                let same_object = running.uid == obj.metadata.uid;
                tracing::info!(namespace = %key.0, name = %key.1, same_object, "ScaledObject changed, restarting its loop");
                let _ = running.stop.send(if same_object {
                    Stop::Replaced
                } else {
                    Stop::Deleted
                });
                Some((running.handle, same_object))
            }
            None => {
                tracing::info!(namespace = %key.0, name = %key.1, "ScaledObject found");
                None
            }
        };
        self.spawn(obj, previous);
    }

    fn delete(&mut self, key: &Key) {
        if let Some(running) = self.running.remove(key) {
            tracing::info!(namespace = %key.0, name = %key.1, "ScaledObject deleted");
            let _ = running.stop.send(Stop::Deleted);
        }
    }

    fn abort_all(&mut self) {
        for (_, running) in self.running.drain() {
            running.handle.abort();
        }
    }
}

/// Runs the KEDA stand-in until `shutdown` resolves.
///
/// Watch errors are retried with a backoff, so this returns only at shutdown; the loops of all
/// ScaledObjects are cancelled then (without restoring replica counts).
pub async fn run(
    client: kube::Client,
    resolver: impl Resolver,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let ctx = Arc::new(Context {
        client: client.clone(),
        resolver: Arc::new(resolver),
    });
    let api = Api::<DynamicObject>::all_with(client, &scaled_object_resource());
    let mut events = pin!(watcher::watcher(api, watcher::Config::default()).default_backoff());
    let mut shutdown = pin!(shutdown);
    let mut supervisor = Supervisor {
        ctx,
        running: HashMap::new(),
    };
    // Keys listed since the last (re)list: the others were deleted while the watch was down.
    let mut listed: Option<HashSet<Key>> = None;
    loop {
        let event = tokio::select! {
            () = &mut shutdown => break,
            event = events.next() => event,
        };
        match event {
            None => break,
            Some(Err(error)) => tracing::warn!(%error, "watching ScaledObjects failed; retrying"),
            Some(Ok(Event::Init)) => listed = Some(HashSet::new()),
            Some(Ok(Event::InitApply(obj))) => {
                if let Some(listed) = &mut listed {
                    listed.insert(key_of(&obj));
                }
                supervisor.apply(obj);
            }
            Some(Ok(Event::InitDone)) => {
                let listed = listed.take().unwrap_or_default();
                let gone: Vec<Key> = supervisor
                    .running
                    .keys()
                    .filter(|k| !listed.contains(*k))
                    .cloned()
                    .collect();
                for key in gone {
                    supervisor.delete(&key);
                }
            }
            Some(Ok(Event::Apply(obj))) => supervisor.apply(obj),
            Some(Ok(Event::Delete(obj))) => supervisor.delete(&key_of(&obj)),
        }
    }
    supervisor.abort_all();
    Ok(())
}
