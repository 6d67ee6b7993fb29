//! A request's count and metrics, settled once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Policy;
use crate::backends::Outstanding;
use crate::counts::{InFlight, RouteCounter};
use crate::metrics::Metrics;
use crate::routes::RouteEntry;

/// One counted request: in flight from [`Policy::count`] until [`Tally::settle`] (when the
/// codec hands the last bytes of the response to its connection) or until dropped (the client
/// went away or the response was cut short: counted out, not recorded).
pub(crate) struct Tally {
    in_flight: Option<InFlight>,
    outstanding: Option<Outstanding>,
    policy: Arc<Policy>,
    method: &'static str,
    remote: SocketAddr,
    /// When the request arrived.
    pub start: Instant,
    cold: bool,
}

impl Tally {
    pub(super) fn new(
        policy: Arc<Policy>,
        entry: &RouteEntry,
        method: &'static str,
        remote: SocketAddr,
        start: Instant,
    ) -> Self {
        Self {
            in_flight: Some(entry.counter.start()),
            outstanding: None,
            policy,
            method,
            remote,
            start,
            cold: false,
        }
    }

    /// The request was sent to an upstream: it counts there (least-outstanding balancing)
    /// until the tally settles or drops.
    pub(crate) fn sent(&mut self, outstanding: Outstanding) {
        self.outstanding = Some(outstanding);
    }

    /// The request waited for a cold start.
    pub(crate) fn cold(&mut self, cold: bool) {
        self.cold = cold;
    }

    /// Records the request with `status` and counts it out; later calls do nothing.
    pub(crate) fn settle(&mut self, status: u16) {
        let Some(in_flight) = self.in_flight.take() else {
            return;
        };
        self.outstanding = None;
        let elapsed = self.start.elapsed();
        record(
            &self.policy.metrics,
            in_flight.counter(),
            self.method,
            status,
            elapsed,
        );
        if self.policy.config.log_requests {
            tracing::info!(remote = %self.remote, route = %in_flight.counter().key(), status, cold = self.cold, elapsed_ms = elapsed.as_millis() as u64, "request");
        }
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        if let Some(in_flight) = &self.in_flight {
            tracing::debug!(remote = %self.remote, route = %in_flight.counter().key(), "request aborted");
        }
    }
}

/// Records one finished request of `counter`'s route in the request metrics.
fn record(
    metrics: &Metrics,
    counter: &RouteCounter,
    method: &'static str,
    status: u16,
    elapsed: Duration,
) {
    if status == 200 && method == "GET" {
        counter.get_ok().record(elapsed);
    } else {
        metrics.record_request(counter.labels(), method, status, elapsed);
    }
}
