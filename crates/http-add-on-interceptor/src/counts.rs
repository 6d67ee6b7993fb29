//! Per-route request counts: in-flight and monotonic total, as atomics.
//!
//! Each route's [`RouteCounter`] lives as long as the route (it is carried by the route table
//! entry, so the hot path never looks it up). A counter going 0 → 1 bumps the activity channel
//! so the push stream can report the activation immediately.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};

use arc_swap::ArcSwap;
use http_add_on_types::queue::{QueueCount, QueueCounts};
use http_add_on_types::routing::RouteKey;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

use crate::metrics::{Metrics, RequestHandles, RouteLabels};

/// Counts of one route.
#[derive(Debug)]
pub struct RouteCounter {
    key: RouteKey,
    labels: RouteLabels,
    in_flight: AtomicI64,
    total: AtomicU64,
    /// Requests held for a cold start now (see [`RouteCounter::hold`]).
    pending: AtomicU32,
    gauge: Gauge,
    get_ok: RequestHandles,
    activity: Arc<watch::Sender<u64>>,
}

impl RouteCounter {
    /// The `GET` / `200` request series of this route (the common case, without a lookup).
    pub fn get_ok(&self) -> &RequestHandles {
        &self.get_ok
    }

    /// The route's key.
    pub fn key(&self) -> &RouteKey {
        &self.key
    }

    /// The route's metric labels.
    pub fn labels(&self) -> &RouteLabels {
        &self.labels
    }

    /// Counts a request in; the returned guard counts it out when dropped.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.total.fetch_add(1, Ordering::Relaxed);
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.gauge.inc();
        if before == 0 {
            self.activity.send_modify(|generation| *generation += 1);
        }
        InFlight(self.clone())
    }

    /// Current counts.
    pub fn count(&self) -> QueueCount {
        QueueCount {
            concurrency: self.in_flight.load(Ordering::Acquire).max(0),
            request_count: self.total.load(Ordering::Relaxed),
        }
    }
}

/// One of a route's pending places (see [`RouteCounter::hold`]); dropping it frees the place.
#[derive(Debug)]
pub struct Pending(Arc<RouteCounter>);

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

impl RouteCounter {
    /// Takes one of the route's `limit` places for a request held during a cold start, or
    /// `None` when all are taken.
    pub fn hold(self: &Arc<Self>, limit: u32) -> Option<Pending> {
        self.pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held < limit).then_some(held + 1)
            })
            .ok()
            .map(|_| Pending(self.clone()))
    }

    /// Requests held for a cold start now.
    pub fn pending(&self) -> u32 {
        self.pending.load(Ordering::Acquire)
    }
}

/// One counted request; dropping it (completion, error, client abort) counts it out.
#[derive(Debug)]
pub struct InFlight(Arc<RouteCounter>);

impl InFlight {
    /// The route's counter.
    pub fn counter(&self) -> &Arc<RouteCounter> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.gauge.dec();
    }
}

/// All current routes' counters.
#[derive(Debug)]
pub struct Counts {
    routes: ArcSwap<Vec<Arc<RouteCounter>>>,
    activity: Arc<watch::Sender<u64>>,
    metrics: Arc<Metrics>,
}

impl Counts {
    /// No routes yet.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            routes: ArcSwap::from_pointee(Vec::new()),
            activity: Arc::new(watch::channel(0).0),
            metrics,
        }
    }

    /// Notified on every 0 → non-zero transition of any route and on route set changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.activity.subscribe()
    }

    /// Counters for exactly `keys`, reusing the existing counter of every key still present,
    /// and publishes them on `/queue` at once. Route-table rebuilds use [`Counts::prepare`].
    pub fn update(&self, keys: &[RouteKey]) -> HashMap<RouteKey, Arc<RouteCounter>> {
        let next = self.prepare(keys);
        self.publish(&next);
        next
    }

    /// Counters for exactly `keys`, reusing the existing counter of every key still present,
    /// without publishing them: a rebuild publishes after it stored the table that routes to
    /// them, so `/queue` never lists a route that requests cannot reach yet.
    pub fn prepare(&self, keys: &[RouteKey]) -> HashMap<RouteKey, Arc<RouteCounter>> {
        let old = self.routes.load_full();
        let existing: HashMap<&RouteKey, &Arc<RouteCounter>> =
            old.iter().map(|c| (&c.key, c)).collect();
        let mut next: HashMap<RouteKey, Arc<RouteCounter>> = HashMap::with_capacity(keys.len());
        for key in keys {
            if next.contains_key(key) {
                continue;
            }
            let counter = match existing.get(key) {
                Some(counter) => (*counter).clone(),
                None => {
                    let labels = RouteLabels::new(key);
                    Arc::new(RouteCounter {
                        key: key.clone(),
                        gauge: self.metrics.concurrency_gauge(&labels),
                        get_ok: self.metrics.request_handles(&labels, "GET", 200),
                        labels,
                        in_flight: AtomicI64::new(0),
                        total: AtomicU64::new(0),
                        pending: AtomicU32::new(0),
                        activity: self.activity.clone(),
                    })
                }
            };
            next.insert(key.clone(), counter);
        }
        next
    }

    /// Makes `next` (from [`Counts::prepare`]) the set served on `/queue`; routes not in it are
    /// dropped with their metric series.
    pub fn publish(&self, next: &HashMap<RouteKey, Arc<RouteCounter>>) {
        let old = self.routes.load_full();
        let mut changed = next.len() != old.len();
        for gone in old.iter().filter(|c| !next.contains_key(&c.key)) {
            changed = true;
            self.metrics.remove_route(&gone.labels);
        }
        let mut list: Vec<Arc<RouteCounter>> = next.values().cloned().collect();
        list.sort_by(|a, b| a.key.as_str().cmp(b.key.as_str()));
        self.routes.store(Arc::new(list));
        if changed {
            self.activity.send_modify(|generation| *generation += 1);
        }
    }

    /// Every route's counts, as served on `/queue`.
    pub fn snapshot(&self) -> QueueCounts {
        self.routes
            .load()
            .iter()
            .map(|c| (c.key.as_str().to_owned(), c.count()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_counts_in_and_out_and_counters_survive_updates() {
        let counts = Counts::new(Arc::new(Metrics::new()));
        let key = RouteKey::new("ns", "a");
        let mut activity = counts.subscribe();
        let map = counts.update(std::slice::from_ref(&key));
        assert!(activity.has_changed().unwrap());
        activity.mark_unchanged();
        let counter = map[&key].clone();
        let first = counter.start();
        assert!(activity.has_changed().unwrap(), "0 -> 1 notifies");
        activity.mark_unchanged();
        let second = counter.start();
        assert!(!activity.has_changed().unwrap(), "1 -> 2 does not");
        assert_eq!(
            counts.snapshot()["ns/a"],
            QueueCount {
                concurrency: 2,
                request_count: 2
            }
        );
        drop(first);
        // A rebuild keeps the same counter.
        let map = counts.update(&[key.clone(), RouteKey::new("ns", "b")]);
        assert!(Arc::ptr_eq(&map[&key], &counter));
        drop(second);
        let snap = counts.snapshot();
        assert_eq!(
            snap["ns/a"],
            QueueCount {
                concurrency: 0,
                request_count: 2
            }
        );
        assert_eq!(snap["ns/b"], QueueCount::default());
        counts.update(&[]);
        assert!(counts.snapshot().is_empty());
    }
}
