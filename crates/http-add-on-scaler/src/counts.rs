//! The counts aggregator: per-interceptor tables of the latest counts, summed per route, with a
//! request-rate window per route and a notification whenever a route's activity may flip.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http_add_on_types::queue::{QueueCount, QueueCounts, QueueUpdate};
use tokio::sync::watch;

use crate::rate::{RateConfig, RateWindow, counter_delta};

/// An interceptor pod, identified by its admin address.
pub type PodId = SocketAddr;

/// What the scaler knows about one route right now.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RouteCounts {
    /// Requests in flight summed over all interceptors (never negative).
    pub concurrency: i64,
    /// Requests per second over the route's window.
    pub rate: f64,
    /// Requests counted in the route's window.
    pub window_total: u64,
}

impl RouteCounts {
    /// Whether the route shows any activity: requests in flight, or any request in the window.
    /// Change notifications fire when this flips.
    pub fn active(&self) -> bool {
        self.concurrency > 0 || self.window_total > 0
    }
}

/// Reachability of the interceptors, for readiness and error reporting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reachability {
    /// Interceptors listed as ready endpoints of the admin Service.
    pub listed: usize,
    /// Listed interceptors with an open stream or recent data.
    pub reachable: usize,
    /// Whether any interceptor delivered data (or held a stream open) within the staleness limit.
    pub fresh_data: bool,
}

impl Reachability {
    /// Interceptors are listed but none can be reached: counts are not trustworthy.
    pub fn all_failing(&self) -> bool {
        self.listed > 0 && self.reachable == 0
    }
}

#[derive(Debug, Default)]
struct PodState {
    counts: QueueCounts,
    /// Whether a first table has been received: its RequestCounts are a baseline, not new
    /// requests.
    baselined: bool,
    /// A stream is open (or the last poll succeeded).
    live: bool,
    last_data: Option<Instant>,
}

#[derive(Debug)]
struct RouteState {
    concurrency: i64,
    window: RateWindow,
}

#[derive(Debug)]
struct Inner {
    pods: HashMap<PodId, PodState>,
    routes: HashMap<String, RouteState>,
}

/// Counts from all interceptors, shared by the fetchers (writers) and the gRPC service
/// (readers). Critical sections are short and never await.
#[derive(Debug)]
pub struct Counts {
    inner: Mutex<Inner>,
    origin: Instant,
    stale_after: Duration,
    activity: watch::Sender<u64>,
}

impl Counts {
    /// An empty aggregator; a pod without an open stream counts as unreachable once its last
    /// data is older than `stale_after`.
    pub fn new(stale_after: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner {
                pods: HashMap::new(),
                routes: HashMap::new(),
            }),
            origin: Instant::now(),
            stale_after,
            activity: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere cannot leave the maps half-updated in a way worse than stale data.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A receiver whose value changes whenever some route's activity may have flipped (a
    /// concurrency crossing zero, a first request in an empty window, a pod dropping out).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.activity.subscribe()
    }

    fn notify(&self) {
        self.activity.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Starts tracking a pod listed in the admin Service's EndpointSlices.
    pub fn add_pod(&self, pod: PodId) {
        self.lock().pods.entry(pod).or_default();
    }

    /// Drops a pod that left the EndpointSlices, and its contribution to every route.
    pub fn remove_pod(&self, pod: PodId) {
        let flipped = {
            let mut inner = self.lock();
            let Some(state) = inner.pods.remove(&pod) else {
                return;
            };
            let mut flipped = false;
            for (route, count) in state.counts {
                if let Some(r) = inner.routes.get_mut(&route) {
                    let before = r.concurrency;
                    r.concurrency -= count.concurrency;
                    flipped |= (before > 0) != (r.concurrency > 0);
                }
            }
            flipped
        };
        if flipped {
            self.notify();
        }
    }

    /// Pods currently tracked.
    pub fn pods(&self) -> Vec<PodId> {
        self.lock().pods.keys().copied().collect()
    }

    /// Records that a pod's stream opened or closed (or a poll succeeded or failed).
    pub fn set_live(&self, pod: PodId, live: bool, now: Instant) {
        if let Some(state) = self.lock().pods.get_mut(&pod) {
            state.live = live;
            state.last_data = Some(now);
        }
    }

    /// Applies one update received from a pod at `now`. Updates from pods no longer tracked
    /// are ignored.
    pub fn apply(&self, pod: PodId, update: &QueueUpdate, now: Instant) {
        let flipped = {
            let mut guard = self.lock();
            let Inner { pods, routes } = &mut *guard;
            let Some(state) = pods.get_mut(&pod) else {
                return;
            };
            state.last_data = Some(now);
            let mut flipped = false;
            let mut change = |route: &str, old: QueueCount, new: QueueCount, count_requests| {
                let origin = self.origin;
                let r = routes
                    .entry(route.to_owned())
                    .or_insert_with(|| RouteState {
                        concurrency: 0,
                        window: RateWindow::new(RateConfig::default(), origin),
                    });
                // Either signal may be the one KEDA is asked about (concurrency, or a rate
                // that a single request in an empty window makes non-zero): notify when
                // either crosses zero.
                let before = (r.concurrency > 0, r.window.total(now) > 0);
                r.concurrency += new.concurrency - old.concurrency;
                if count_requests {
                    r.window
                        .add(now, counter_delta(old.request_count, new.request_count));
                }
                let after = (r.concurrency > 0, r.window.total(now) > 0);
                flipped |= before != after;
            };
            let baselined = state.baselined;
            if update.snapshot {
                let gone: Vec<String> = state
                    .counts
                    .keys()
                    .filter(|k| !update.counts.contains_key(*k))
                    .cloned()
                    .collect();
                for route in gone {
                    if let Some(old) = state.counts.remove(&route) {
                        let new = QueueCount {
                            concurrency: 0,
                            request_count: old.request_count,
                        };
                        change(&route, old, new, false);
                    }
                }
            }
            for (route, &new) in &update.counts {
                let old = state.counts.get(route).copied();
                // Before the first table all RequestCounts are history, not new requests; a
                // route first seen later is new since then.
                let count_requests = baselined || !update.snapshot;
                change(route, old.unwrap_or_default(), new, count_requests);
                state.counts.insert(route.clone(), new);
            }
            if update.snapshot {
                state.baselined = true;
            }
            flipped
        };
        if flipped {
            self.notify();
        }
    }

    /// Sets the rate window of a route (from its HTTPScaledObject or InterceptorRoute); counts
    /// already recorded are re-bucketed.
    pub fn configure_route(&self, route: &str, config: RateConfig, now: Instant) {
        let config = config.sanitized();
        let origin = self.origin;
        let mut inner = self.lock();
        let r = inner
            .routes
            .entry(route.to_owned())
            .or_insert_with(|| RouteState {
                concurrency: 0,
                window: RateWindow::new(config, origin),
            });
        if r.window.config() != config {
            r.window = r.window.reconfigured(config, now);
        }
    }

    /// Forgets the aggregated state of every route that `keep` rejects and that has nothing in
    /// flight and nothing in its rate window at `now`; returns the routes forgotten. (Each
    /// interceptor's last counts stay, so a route created again counts from where it was.)
    pub fn prune(&self, now: Instant, keep: impl Fn(&str) -> bool) -> Vec<String> {
        let mut inner = self.lock();
        let gone: Vec<String> = inner
            .routes
            .iter()
            .filter(|(route, r)| r.concurrency <= 0 && r.window.total(now) == 0 && !keep(route))
            .map(|(route, _)| route.clone())
            .collect();
        for route in &gone {
            inner.routes.remove(route);
        }
        gone
    }

    /// Routes with aggregated state.
    pub fn routes(&self) -> Vec<String> {
        self.lock().routes.keys().cloned().collect()
    }

    /// Counts of `route` at `now`; a route nobody has reported yet has all zeros.
    pub fn route(&self, route: &str, now: Instant) -> RouteCounts {
        self.lock()
            .routes
            .get(route)
            .map(|r| RouteCounts {
                concurrency: r.concurrency.max(0),
                rate: r.window.rate(now),
                window_total: r.window.total(now),
            })
            .unwrap_or_default()
    }

    /// Requests in flight over all routes and interceptors.
    pub fn total_concurrency(&self) -> i64 {
        self.lock()
            .routes
            .values()
            .map(|r| r.concurrency.max(0))
            .fold(0i64, i64::saturating_add)
    }

    /// Which interceptors can be reached at `now`.
    pub fn reachability(&self, now: Instant) -> Reachability {
        let inner = self.lock();
        let mut out = Reachability {
            listed: inner.pods.len(),
            ..Reachability::default()
        };
        for pod in inner.pods.values() {
            let recent = pod
                .last_data
                .is_some_and(|t| now.saturating_duration_since(t) <= self.stale_after);
            if pod.live || recent {
                out.reachable += 1;
            }
            out.fresh_data |= pod.live || recent;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(n: u8) -> PodId {
        SocketAddr::from(([127, 0, 0, n], 9090))
    }

    fn update(snapshot: bool, routes: &[(&str, i64, u64)]) -> QueueUpdate {
        QueueUpdate {
            snapshot,
            counts: routes
                .iter()
                .map(|&(r, c, n)| {
                    (
                        r.to_owned(),
                        QueueCount {
                            concurrency: c,
                            request_count: n,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn prune_forgets_only_idle_routes_that_are_not_kept() {
        let counts = Counts::new(Duration::from_secs(1));
        let now = Instant::now();
        counts.add_pod(pod(1));
        counts.apply(
            pod(1),
            &update(
                true,
                &[("ns/busy", 2, 0), ("ns/idle", 0, 50), ("ns/kept", 0, 0)],
            ),
            now,
        );
        // A request in the rate window keeps a route too.
        counts.apply(pod(1), &update(false, &[("ns/recent", 0, 1)]), now);
        let mut gone = counts.prune(now, |route| route == "ns/kept");
        gone.sort();
        assert_eq!(gone, ["ns/idle"]);
        let mut left = counts.routes();
        left.sort();
        assert_eq!(left, ["ns/busy", "ns/kept", "ns/recent"]);
        // A forgotten route that comes back counts from the interceptor's last numbers: its
        // old request total is not mistaken for new requests.
        counts.apply(pod(1), &update(false, &[("ns/idle", 1, 50)]), now);
        let back = counts.route("ns/idle", now);
        assert_eq!((back.concurrency, back.window_total), (1, 0));
    }

    #[test]
    fn sums_concurrency_and_drops_pods() {
        let counts = Counts::new(Duration::from_secs(1));
        let now = Instant::now();
        for n in 1..=2 {
            counts.add_pod(pod(n));
        }
        counts.apply(pod(1), &update(true, &[("ns/a", 2, 10)]), now);
        counts.apply(
            pod(2),
            &update(true, &[("ns/a", 3, 5), ("ns/b", 1, 1)]),
            now,
        );
        assert_eq!(counts.route("ns/a", now).concurrency, 5);
        assert_eq!(counts.total_concurrency(), 6);
        // Baselines are not new requests.
        assert_eq!(counts.route("ns/a", now).window_total, 0);
        counts.remove_pod(pod(2));
        assert_eq!(counts.route("ns/a", now).concurrency, 2);
        assert_eq!(counts.route("ns/b", now).concurrency, 0);
        // Updates from a removed pod are ignored.
        counts.apply(pod(2), &update(false, &[("ns/a", 9, 9)]), now);
        assert_eq!(counts.route("ns/a", now).concurrency, 2);
    }

    #[test]
    fn snapshots_replace_and_changes_merge() {
        let counts = Counts::new(Duration::from_secs(1));
        let now = Instant::now();
        counts.add_pod(pod(1));
        counts.apply(
            pod(1),
            &update(true, &[("ns/a", 2, 10), ("ns/b", 1, 3)]),
            now,
        );
        counts.apply(pod(1), &update(false, &[("ns/a", 1, 12)]), now);
        assert_eq!(counts.route("ns/a", now).concurrency, 1);
        assert_eq!(counts.route("ns/a", now).window_total, 2);
        assert_eq!(counts.route("ns/b", now).concurrency, 1);
        // A reconnect snapshot without ns/b: it has gone.
        counts.apply(pod(1), &update(true, &[("ns/a", 0, 14)]), now);
        assert_eq!(counts.route("ns/b", now).concurrency, 0);
        assert_eq!(counts.route("ns/a", now).window_total, 4);
        // A counter drop is a restart: the new value is all new requests.
        counts.apply(pod(1), &update(true, &[("ns/a", 0, 3)]), now);
        assert_eq!(counts.route("ns/a", now).window_total, 7);
        // A route first seen after the baseline counts in full.
        counts.apply(pod(1), &update(false, &[("ns/c", 0, 1)]), now);
        let c = counts.route("ns/c", now);
        assert_eq!(c.window_total, 1);
        assert!(c.active() && c.rate > 0.0);
    }

    #[test]
    fn notifies_when_activity_flips() {
        let counts = Counts::new(Duration::from_secs(1));
        let mut rx = counts.subscribe();
        let now = Instant::now();
        counts.add_pod(pod(1));
        counts.apply(pod(1), &update(true, &[("ns/a", 0, 0)]), now);
        assert!(!rx.has_changed().unwrap());
        counts.apply(pod(1), &update(false, &[("ns/a", 1, 1)]), now);
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        // More requests on an active route: no flip.
        counts.apply(pod(1), &update(false, &[("ns/a", 2, 2)]), now);
        assert!(!rx.has_changed().unwrap());
        // Concurrency back to 0: a flip for concurrency metrics, though requests are still
        // in the window.
        counts.apply(pod(1), &update(false, &[("ns/a", 0, 2)]), now);
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        assert!(counts.route("ns/a", now).active());
        // A new request while the window is non-empty: concurrency 0 -> 1 still notifies.
        counts.apply(pod(1), &update(false, &[("ns/a", 1, 3)]), now);
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        counts.apply(pod(1), &update(false, &[("ns/a", 0, 3)]), now);
        assert!(!counts.route("ns/a", now + Duration::from_secs(61)).active());
    }

    #[test]
    fn reachability_follows_liveness_and_staleness() {
        let counts = Counts::new(Duration::from_secs(1));
        let now = Instant::now();
        assert!(!counts.reachability(now).all_failing());
        counts.add_pod(pod(1));
        counts.add_pod(pod(2));
        assert!(counts.reachability(now).all_failing());
        counts.set_live(pod(1), true, now);
        let r = counts.reachability(now + Duration::from_secs(10));
        assert_eq!((r.listed, r.reachable, r.fresh_data), (2, 1, true));
        counts.set_live(pod(1), false, now);
        assert!(!counts.reachability(now).all_failing());
        assert!(
            counts
                .reachability(now + Duration::from_secs(2))
                .all_failing()
        );
    }

    #[test]
    fn configured_windows_apply() {
        let counts = Counts::new(Duration::from_secs(1));
        let now = Instant::now();
        counts.configure_route(
            "ns/a",
            RateConfig {
                window: Duration::from_secs(10),
                granularity: Duration::from_secs(1),
            },
            now,
        );
        counts.add_pod(pod(1));
        counts.apply(pod(1), &update(true, &[]), now);
        counts.apply(pod(1), &update(false, &[("ns/a", 0, 20)]), now);
        assert!((counts.route("ns/a", now).rate - 2.0).abs() < 1e-9);
        assert_eq!(
            counts.route("ns/a", now + Duration::from_secs(10)).rate,
            0.0
        );
    }
}
