//! A request's count and metrics, settled once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Policy, ServerSpan, trace};
use crate::backends::Outstanding;
use crate::counts::{InFlight, RouteCounter};
use crate::metrics::Metrics;
use crate::routes::RouteEntry;

/// One counted request: in flight from [`Policy::count`] until [`Tally::settle`] (when the
/// codec hands the last bytes of the response to its connection) or until dropped (the client
/// went away or the response was cut short: counted out, not recorded; a client that went away
/// before the request was sent, while it was held for a cold start, is recorded as 499).
pub(crate) struct Tally {
    in_flight: Option<InFlight>,
    outstanding: Option<Outstanding>,
    policy: Arc<Policy>,
    method: &'static str,
    remote: SocketAddr,
    /// When the request arrived.
    pub start: Instant,
    cold: bool,
    /// The request's server span, when it is traced.
    span: Option<Arc<ServerSpan>>,
}

/// The status recorded for a request whose client went away before it was sent (nginx's
/// "client closed request", as upstream #1779 asks).
pub(crate) const CLIENT_CLOSED: u16 = 499;

impl Tally {
    pub(super) fn new(
        policy: Arc<Policy>,
        entry: &RouteEntry,
        method: &'static str,
        remote: SocketAddr,
        start: Instant,
    ) -> Self {
        let span = policy.tracer.as_ref().and_then(|_| trace::current());
        Self {
            in_flight: Some(entry.counter.start()),
            outstanding: None,
            policy,
            method,
            remote,
            start,
            cold: false,
            span,
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
        if let Some(span) = self.span.take() {
            span.finish(Some(status), self.cold);
        }
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        let Some(in_flight) = &self.in_flight else {
            return;
        };
        tracing::debug!(remote = %self.remote, route = %in_flight.counter().key(), "request aborted");
        if self.outstanding.is_none() {
            // Never sent: the client went away while the request was held (or admitted).
            record(
                &self.policy.metrics,
                in_flight.counter(),
                self.method,
                CLIENT_CLOSED,
                self.start.elapsed(),
            );
            if let Some(span) = self.span.take() {
                span.finish(Some(CLIENT_CLOSED), true);
            }
        } else if let Some(span) = self.span.take() {
            span.finish(None, self.cold);
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
