//! Route conflicts across both kinds, and re-reconciling the objects whose conflict state
//! changed.
//!
//! The index keeps its own reflector stores of all HTTPScaledObjects and InterceptorRoutes.
//! A reconciler asks for the conflict of the object it reconciles ([`RouteIndex::conflict_for`]):
//! the answer is computed from the stores (with the reconciler's own, possibly newer, copy of
//! the object) and *recorded*. After every change the index sees, it recomputes the answers of
//! all recorded objects and, where one differs from the recorded answer, triggers a
//! reconciliation of that kind. Recording and comparing happen under one lock, so a change
//! that lands after a reconciler read the stores is always caught by the next comparison: no
//! loser stays marked (or unmarked) after the winner changed or went away.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::{FutureExt, Stream, StreamExt};
use http_add_on_types::crd::routes::{
    http_scaled_object_route, interceptor_route_route, route_key,
};
use http_add_on_types::crd::{HTTPScaledObject, InterceptorRoute};
use http_add_on_types::routing::{Route, RouteConflict, RouteKey, RouteKind, RouteTable};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

/// The object a reconciler asks about, in its own (possibly newer) version.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    /// An HTTPScaledObject.
    HttpScaledObject(&'a HTTPScaledObject),
    /// An InterceptorRoute.
    InterceptorRoute(&'a InterceptorRoute),
}

impl Subject<'_> {
    fn id(&self) -> (RouteKind, RouteKey) {
        match self {
            Self::HttpScaledObject(o) => (RouteKind::HttpScaledObject, route_key(*o)),
            Self::InterceptorRoute(o) => (RouteKind::InterceptorRoute, route_key(*o)),
        }
    }
}

/// Conflicts of the current routes, by loser.
struct Answers {
    /// The first conflict (smallest winner) of each losing key.
    lost: HashMap<RouteKey, RouteConflict>,
    /// Keys of InterceptorRoutes, which shadow HTTPScaledObjects of the same key.
    interceptor_routes: HashSet<RouteKey>,
    /// Every object present, by kind and key.
    present: HashSet<(RouteKind, RouteKey)>,
}

impl Answers {
    fn of(&self, kind: RouteKind, key: &RouteKey) -> Option<RouteConflict> {
        if kind == RouteKind::HttpScaledObject && self.interceptor_routes.contains(key) {
            // Shadowed by the InterceptorRoute of the same name: not in the table at all.
            return None;
        }
        self.lost.get(key).cloned()
    }
}

/// Route conflicts over all objects of both kinds (see the module docs).
pub struct RouteIndex {
    hso: Store<HTTPScaledObject>,
    ir: Store<InterceptorRoute>,
    recorded: Mutex<HashMap<(RouteKind, RouteKey), Option<RouteConflict>>>,
    hso_trigger: mpsc::UnboundedSender<()>,
    ir_trigger: mpsc::UnboundedSender<()>,
}

/// What [`RouteIndex::new`] returns besides the index.
pub struct RouteIndexParts {
    /// Drives the index's watches; must be polled for the index to follow changes.
    pub driver: futures::future::BoxFuture<'static, ()>,
    /// Emits when HTTPScaledObjects must be reconciled again.
    pub hso_trigger: Box<dyn Stream<Item = ()> + Send + Unpin>,
    /// Emits when InterceptorRoutes must be reconciled again.
    pub ir_trigger: Box<dyn Stream<Item = ()> + Send + Unpin>,
}

impl RouteIndex {
    /// An index over the objects `hso_api` and `ir_api` list.
    pub fn new(
        hso_api: Api<HTTPScaledObject>,
        ir_api: Api<InterceptorRoute>,
    ) -> (Arc<Self>, RouteIndexParts) {
        let (hso_store, hso_writer) = reflector::store();
        let (ir_store, ir_writer) = reflector::store();
        let (hso_tx, hso_rx) = mpsc::unbounded_channel();
        let (ir_tx, ir_rx) = mpsc::unbounded_channel();
        let index = Arc::new(Self {
            hso: hso_store,
            ir: ir_store,
            recorded: Mutex::default(),
            hso_trigger: hso_tx,
            ir_trigger: ir_tx,
        });
        let hso_events = reflector::reflector(
            hso_writer,
            watcher(hso_api, watcher::Config::default()).default_backoff(),
        )
        .map(|r| r.map(|_| ()));
        let ir_events = reflector::reflector(
            ir_writer,
            watcher(ir_api, watcher::Config::default()).default_backoff(),
        )
        .map(|r| r.map(|_| ()));
        let driver = {
            let index = index.clone();
            async move {
                let mut events = futures::stream::select(hso_events.boxed(), ir_events.boxed());
                while let Some(event) = events.next().await {
                    if let Err(error) = event {
                        tracing::warn!(%error, "route watch failed; retrying");
                        continue;
                    }
                    // Coalesce a burst of events into one recomputation.
                    while let Some(Some(_)) = events.next().now_or_never() {}
                    index.retrigger_changed();
                }
            }
            .boxed()
        };
        let parts = RouteIndexParts {
            driver,
            hso_trigger: Box::new(UnboundedReceiverStream::new(hso_rx)),
            ir_trigger: Box::new(UnboundedReceiverStream::new(ir_rx)),
        };
        (index, parts)
    }

    /// Waits until both stores hold a complete first listing.
    pub async fn wait_until_ready(&self) {
        // An error only means the writer was dropped, i.e. the operator is stopping.
        let _ = self.hso.wait_until_ready().await;
        let _ = self.ir.wait_until_ready().await;
    }

    /// The conflict `subject` loses (if any), recorded so that a later change re-triggers it.
    pub async fn conflict_for(&self, subject: Subject<'_>) -> Option<RouteConflict> {
        self.wait_until_ready().await;
        let mut recorded = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
        let answers = self.answers(Some(subject));
        let (kind, key) = subject.id();
        let answer = answers.of(kind, &key);
        recorded.insert((kind, key), answer.clone());
        answer
    }

    /// Stops tracking an object (deleted, or invalid so its conflicts do not matter).
    pub fn forget(&self, subject: Subject<'_>) {
        let mut recorded = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
        recorded.remove(&subject.id());
    }

    /// Compares the recorded answers with the current ones and triggers the kinds that differ.
    fn retrigger_changed(&self) {
        let mut recorded = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
        let answers = self.answers(None);
        let (mut hso, mut ir) = (false, false);
        recorded.retain(|(kind, key), answer| {
            if !answers.present.contains(&(*kind, key.clone())) {
                return false;
            }
            if answers.of(*kind, key) != *answer {
                match kind {
                    RouteKind::HttpScaledObject => hso = true,
                    RouteKind::InterceptorRoute => ir = true,
                }
            }
            true
        });
        drop(recorded);
        if hso {
            tracing::debug!("route conflicts changed; reconciling HTTPScaledObjects");
            let _ = self.hso_trigger.send(());
        }
        if ir {
            tracing::debug!("route conflicts changed; reconciling InterceptorRoutes");
            let _ = self.ir_trigger.send(());
        }
    }

    /// Conflicts of all live objects, with `subject` replacing the stored copy of itself.
    fn answers(&self, subject: Option<Subject<'_>>) -> Answers {
        fn live<K: Resource>(o: &K) -> bool {
            o.meta().deletion_timestamp.is_none()
        }
        let mut routes: Vec<Route<()>> = Vec::new();
        let mut present = HashSet::new();
        let mut interceptor_routes = HashSet::new();
        let subject_id = subject.map(|s| s.id());
        let is_subject = |kind: RouteKind, key: &RouteKey| {
            subject_id
                .as_ref()
                .is_some_and(|(k, sk)| *k == kind && sk == key)
        };
        for hso in self.hso.state() {
            let key = route_key(&*hso);
            if is_subject(RouteKind::HttpScaledObject, &key) {
                continue;
            }
            present.insert((RouteKind::HttpScaledObject, key));
            if live(&*hso) {
                routes.push(http_scaled_object_route(&hso, ()));
            }
        }
        for ir in self.ir.state() {
            let key = route_key(&*ir);
            if is_subject(RouteKind::InterceptorRoute, &key) {
                continue;
            }
            present.insert((RouteKind::InterceptorRoute, key.clone()));
            if live(&*ir) {
                interceptor_routes.insert(key);
                routes.push(interceptor_route_route(&ir, ()));
            }
        }
        match subject {
            Some(Subject::HttpScaledObject(hso)) => {
                present.insert((RouteKind::HttpScaledObject, route_key(hso)));
                if live(hso) {
                    routes.push(http_scaled_object_route(hso, ()));
                }
            }
            Some(Subject::InterceptorRoute(ir)) => {
                let key = route_key(ir);
                present.insert((RouteKind::InterceptorRoute, key.clone()));
                if live(ir) {
                    interceptor_routes.insert(key);
                    routes.push(interceptor_route_route(ir, ()));
                }
            }
            None => {}
        }
        let mut lost = HashMap::new();
        for conflict in RouteTable::build(routes).conflicts() {
            // Sorted by loser, then winner: keep the first winner of each loser.
            lost.entry(conflict.loser.clone()).or_insert(conflict);
        }
        Answers {
            lost,
            interceptor_routes,
            present,
        }
    }
}
