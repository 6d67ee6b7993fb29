//! The request policy: what happens to a request, whatever protocol it arrived in.
//!
//! The codecs (`h1` for HTTP/1.1, `h2` for HTTP/2) read and write their wire format and ask
//! this module everything else, in this order:
//! 1. [`Policy::route`]: the route, a static route's reply, or a 404.
//! 2. [`Policy::count`]: the request's [`Tally`] (in flight and total, settled once).
//! 3. [`Policy::admit`]: at once when the target has a ready endpoint, else the hold for a cold
//!    start (readiness timeout, fallback, placeholder), within the route's pending limit.
//! 4. [`Attempts`]: the endpoint (least outstanding) and the connect attempts. Outbound TLS
//!    goes where the codecs connect to what it returns.
//! 5. [`Deadlines`]: one rule for every timeout (the request timeout and readiness timeout run
//!    from arrival, the response-header timeout from each attempt's send).
//! 6. Forwarded and hop-by-hop headers: the rules in [`crate::headers`].
//! 7. Every synthetic response (4xx, 5xx, static, placeholder): a [`Reply`].
//!
//! 8. The request's trace ([`trace`]): [`Policy::trace`] makes the server span once the
//!    request is routed, the codec runs the rest [`trace::traced`], the tally ends the span,
//!    `admit` adds the cold-start span and `Attempts` the endpoint.

mod reply;
mod tally;
pub mod trace;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use http::StatusCode;
use http_add_on_types::routing::RequestHeaders;
use opentelemetry_sdk::trace::SdkTracer;
use tokio::sync::Notify;
use tokio::time::Instant;

pub(crate) use reply::Reply;
pub(crate) use tally::Tally;
pub use trace::ColdStartOutcome;
pub(crate) use trace::{ServerSpan, traced};

use crate::backends::{Backend, IdleBudget, Readiness, Upstream};
use crate::config::Config;
use crate::limit::Connections;
use crate::metrics::{Metrics, RouteLabels};
use crate::routes::{RouteEntry, Table};

/// How many endpoints a request tries when connecting fails before it was sent.
pub(crate) const MAX_CONNECT_ATTEMPTS: usize = 3;

/// What the codecs share: the route table, metrics, configuration and drain state.
pub struct Policy {
    pub(crate) table: Arc<Table>,
    table_changed: Arc<Notify>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) config: Config,
    draining: Arc<AtomicBool>,
    /// Idle upstream connections over all endpoints (`KEDA_HTTP_MAX_IDLE_CONNS`).
    pub(crate) idle: Arc<IdleBudget>,
    /// Open client connections of the proxy listeners (`KEDA_HTTP_MAX_CONNECTIONS`).
    pub(crate) connections: Arc<Connections>,
    /// Request spans go here when traces are on.
    tracer: Option<SdkTracer>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy").finish_non_exhaustive()
    }
}

/// Where a request goes, before it is counted.
pub(crate) enum Route {
    /// No route matches, or a static route answers (neither is counted).
    Reply(Reply),
    /// The route to count, admit and forward to.
    Forward(Arc<RouteEntry>),
}

/// The outcome of [`Policy::admit`].
pub(crate) enum Admission {
    /// Forward to `backend`: the route's own, or its fallback after a readiness timeout.
    Forward {
        /// The route as it is now (it may have changed while the request was held).
        entry: Arc<RouteEntry>,
        /// Where to send the request.
        backend: Arc<Backend>,
        /// Whether the request waited for a cold start.
        cold: bool,
    },
    /// Answer with this (a placeholder, a readiness timeout, the route removed while held);
    /// the request was cold.
    Reply(Reply),
}

impl Policy {
    /// A policy over `table`; `table_changed` is notified after every table swap, `draining` is
    /// set when shutdown begins.
    pub fn new(
        config: Config,
        table: Arc<Table>,
        table_changed: Arc<Notify>,
        metrics: Arc<Metrics>,
        draining: Arc<AtomicBool>,
    ) -> Self {
        Self {
            idle: IdleBudget::new(config.max_idle_conns),
            connections: Connections::new(config.max_connections),
            table,
            table_changed,
            metrics,
            config,
            draining,
            tracer: None,
        }
    }

    /// Traces requests with `tracer` (`None`: no spans).
    pub fn with_tracer(mut self, tracer: Option<SdkTracer>) -> Self {
        self.tracer = tracer;
        self
    }

    /// The server span of a routed request of `entry`, continuing the client's trace headers
    /// (as `header` returns them); `None` when traces are off or the sampler drops it, and
    /// then the codec forwards the client's trace headers as they are.
    pub(crate) fn trace<'a>(
        &self,
        entry: &RouteEntry,
        method: &'static str,
        host: &str,
        path: &str,
        header: impl Fn(&str) -> Option<&'a str>,
    ) -> Option<Arc<ServerSpan>> {
        let tracer = self.tracer.as_ref()?;
        ServerSpan::start(
            tracer,
            self.config.otel.sampling,
            entry,
            method,
            host,
            path,
            header,
        )
    }

    /// Whether shutdown has begun (HTTP/1.1 responses then close their connection, so
    /// clients stop reusing it before the listener closes).
    pub(crate) fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// The route of a request for `host` and `path` (without its query).
    pub(crate) fn route<H: RequestHeaders + ?Sized>(
        &self,
        remote: SocketAddr,
        host: &str,
        path: &str,
        headers: &H,
    ) -> Route {
        let entry = self
            .table
            .load()
            .lookup(host, path, headers)
            .map(|route| route.target.clone());
        let Some(entry) = entry else {
            if self.config.log_requests {
                tracing::info!(%remote, host, path, status = 404, "request");
            }
            return Route::Reply(Reply::error(
                StatusCode::NOT_FOUND,
                format!("no route for host {host:?} and path {path:?}"),
            ));
        };
        if let Some(static_route) = entry
            .static_routes
            .iter()
            .find(|s| s.matches(host, path, headers))
            && (static_route.always || !entry.backend.has_ready())
        {
            return Route::Reply(Reply::from_static(&static_route.reply, path));
        }
        Route::Forward(entry)
    }

    /// Counts a request of `entry` (in flight until its tally settles or drops).
    pub(crate) fn count(
        self: &Arc<Self>,
        entry: &RouteEntry,
        method: &'static str,
        remote: SocketAddr,
        start: Instant,
    ) -> Tally {
        Tally::new(self.clone(), entry, method, remote, start)
    }

    /// Admits a counted request: at once when its backend has a ready endpoint; otherwise the
    /// placeholder, or a hold until an endpoint is ready (woken by the EndpointSlice watch),
    /// the readiness timeout (then the fallback, or 504) or the request timeout. A route that
    /// changes while the request is held is followed by looking the request up again.
    pub(crate) async fn admit<H: RequestHeaders + ?Sized>(
        &self,
        entry: Arc<RouteEntry>,
        host: &str,
        path: &str,
        headers: &H,
        deadlines: &Deadlines,
    ) -> Admission {
        let mut backend = entry.backend.clone();
        if backend.has_ready() {
            return Admission::Forward {
                entry,
                backend,
                cold: false,
            };
        }
        let mut cold_start = ColdStart {
            metrics: &self.metrics,
            labels: entry.counter.labels().clone(),
            start: deadlines.start,
            trace: trace::current().map(|span| (span, SystemTime::now())),
            done: false,
        };
        // Held requests take one of the route's pending places; beyond them, the overflow.
        let _pending = match entry.max_pending {
            None => {
                if let Some(placeholder) = &entry.placeholder {
                    cold_start.forget();
                    return Admission::Reply(Reply::from_static(placeholder, path));
                }
                None
            }
            Some(limit) => match entry.counter.hold(limit) {
                Some(place) => Some(place),
                None => {
                    self.metrics
                        .record_cold_start_rejection(entry.counter.labels());
                    cold_start.end(ColdStartOutcome::Rejected);
                    return Admission::Reply(match &entry.placeholder {
                        Some(placeholder) if entry.overflow_placeholder => {
                            Reply::from_static(placeholder, path)
                        }
                        _ => Reply::overloaded(limit),
                    });
                }
            },
        };
        let mut entry = entry;
        let wait_until = deadlines.readiness(&entry);
        let readiness = loop {
            let changed = self.table_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let found = self
                .table
                .load()
                .lookup(host, path, headers)
                .map(|r| r.target.clone());
            match found {
                Some(next) if next.counter.key() == entry.counter.key() => {
                    if !Arc::ptr_eq(&next.backend, &backend) {
                        backend = next.backend.clone();
                    }
                    entry = next;
                }
                _ => {
                    cold_start.forget();
                    return Admission::Reply(Reply::error(
                        StatusCode::NOT_FOUND,
                        format!(
                            "no route: {} was removed while the request waited for a ready endpoint",
                            entry.counter.key()
                        ),
                    ));
                }
            }
            let limit = wait_until.map(|w| w.saturating_duration_since(Instant::now()));
            tokio::select! {
                readiness = backend.wait_ready(limit) => break readiness,
                _ = changed => {}
            }
        };
        cold_start.labels = entry.counter.labels().clone();
        if readiness == Readiness::TimedOut {
            let request_expired = deadlines.request_expired();
            match &entry.fallback {
                Some(fallback) if !request_expired && fallback.has_ready() => {
                    cold_start.end(ColdStartOutcome::Fallback);
                    backend = fallback.clone();
                }
                _ if request_expired => {
                    cold_start.end(ColdStartOutcome::Timeout);
                    return Admission::Reply(Reply::error(
                        StatusCode::GATEWAY_TIMEOUT,
                        "request timeout exceeded while waiting for a ready endpoint",
                    ));
                }
                _ => {
                    cold_start.end(ColdStartOutcome::Timeout);
                    return Admission::Reply(Reply::error(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!(
                            "timed out waiting for a ready endpoint of service {}",
                            backend.key()
                        ),
                    ));
                }
            }
        } else {
            cold_start.end(ColdStartOutcome::Ready);
        }
        Admission::Forward {
            entry,
            backend,
            cold: true,
        }
    }
}

/// A cold-start wait being timed: recorded once, with its outcome, in
/// `interceptor_cold_start_duration_seconds` and the cold-start span; dropped unrecorded (the
/// admission future dropped: the client went away) it is `cancelled`.
struct ColdStart<'a> {
    metrics: &'a Metrics,
    /// The route's labels as of the end of the wait.
    labels: RouteLabels,
    start: Instant,
    /// The request's span and when the wait began, when it is traced.
    trace: Option<(Arc<ServerSpan>, SystemTime)>,
    done: bool,
}

impl ColdStart<'_> {
    /// Records the wait with `outcome`.
    fn end(&mut self, outcome: ColdStartOutcome) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        self.metrics
            .record_cold_start(&self.labels, outcome, self.start.elapsed());
        if let Some((span, began)) = self.trace.take() {
            span.cold_start(began, outcome);
        }
    }

    /// Not a wait after all (a placeholder's answer, the route removed): nothing recorded.
    fn forget(&mut self) {
        self.done = true;
    }
}

impl Drop for ColdStart<'_> {
    fn drop(&mut self) {
        self.end(ColdStartOutcome::Cancelled);
    }
}

/// A request's deadlines: the request timeout and the readiness timeout run from its arrival,
/// the response-header timeout from each attempt's send.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadlines {
    /// When the request arrived.
    pub start: Instant,
    /// Arrival + the route's request timeout.
    request: Option<Instant>,
}

impl Deadlines {
    /// The deadlines of a request of `entry` that arrived at `start`.
    pub(crate) fn new(entry: &RouteEntry, start: Instant) -> Self {
        Self {
            start,
            request: entry.request_timeout.map(|t| start + t),
        }
    }

    /// Until when a cold request is held.
    fn readiness(&self, entry: &RouteEntry) -> Option<Instant> {
        earliest(
            entry.readiness_timeout.map(|t| self.start + t),
            self.request,
        )
    }

    /// Whether the request timeout has passed.
    fn request_expired(&self) -> bool {
        self.request.is_some_and(|d| Instant::now() >= d)
    }

    /// Until when the response head of an attempt sent at `sent` may take.
    pub(crate) fn response_head(&self, entry: &RouteEntry, sent: Instant) -> Option<Instant> {
        earliest(
            entry.response_header_timeout.map(|t| sent + t),
            self.request,
        )
    }

    /// The 504 for a response head that did not arrive by [`Deadlines::response_head`].
    pub(crate) fn response_head_timeout(&self) -> Reply {
        Reply::error(
            StatusCode::GATEWAY_TIMEOUT,
            if self.request_expired() {
                "request timeout exceeded waiting for the backend's response headers"
            } else {
                "timed out waiting for the backend's response headers"
            },
        )
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The endpoints one request tries: least outstanding first, a different one after each
/// failed connect (pod endpoints only; a Service address is tried once).
pub(crate) struct Attempts {
    tried: [SocketAddr; MAX_CONNECT_ATTEMPTS],
    made: usize,
    limit: usize,
    last_error: Option<String>,
}

impl Attempts {
    /// The attempts for a request of `entry` to `backend`.
    pub(crate) fn new(entry: &RouteEntry, backend: &Backend) -> Self {
        let limit = if entry.direct {
            backend
                .state()
                .endpoints
                .len()
                .clamp(1, MAX_CONNECT_ATTEMPTS)
        } else {
            1
        };
        Self {
            tried: [SocketAddr::from(([0, 0, 0, 0], 0)); MAX_CONNECT_ATTEMPTS],
            made: 0,
            limit,
            last_error: None,
        }
    }

    /// The next upstream to try; once there is none, the 502 that says why.
    pub(crate) fn next(
        &mut self,
        entry: &RouteEntry,
        backend: &Backend,
    ) -> Result<Arc<Upstream>, Reply> {
        let upstream = if self.made >= self.limit {
            None
        } else if entry.direct {
            backend.pick_endpoint(&self.tried[..self.made])
        } else {
            match &backend.state().service {
                Some(service) => Some(service.clone()),
                None => {
                    return Err(Reply::error(
                        StatusCode::BAD_GATEWAY,
                        format!("service {} has no such port", backend.key()),
                    ));
                }
            }
        };
        let Some(upstream) = upstream else {
            return Err(self.exhausted(backend));
        };
        self.tried[self.made] = upstream.addr();
        self.made += 1;
        if let Some(span) = trace::current() {
            span.endpoint(upstream.addr());
        }
        Ok(upstream)
    }

    /// Connecting to `upstream` failed (nothing was sent): the next attempt tries another.
    pub(crate) fn connect_failed(
        &mut self,
        backend: &Backend,
        upstream: &Upstream,
        error: &dyn std::fmt::Display,
    ) {
        let message = format!("connecting to {} failed: {error}", upstream.addr());
        tracing::debug!(backend = %backend.key(), error = message, "connect failed");
        self.last_error = Some(message);
    }

    /// The 502 once no attempt is left: the last connect error, or that there is no endpoint.
    pub(crate) fn exhausted(&mut self, backend: &Backend) -> Reply {
        let message = self
            .last_error
            .take()
            .unwrap_or_else(|| format!("no ready endpoint of service {}", backend.key()));
        Reply::error(StatusCode::BAD_GATEWAY, message)
    }

    /// Whether another attempt may follow the last one made.
    pub(crate) fn more(&self) -> bool {
        self.made < self.limit
    }

    /// Whether more than one attempt may be made in all.
    pub(crate) fn may_retry(&self) -> bool {
        self.limit > 1
    }
}

/// The 502 for a backend that failed after the request was sent.
pub(crate) fn backend_failed(upstream: &Upstream, error: &dyn std::fmt::Display) -> Reply {
    Reply::error(
        StatusCode::BAD_GATEWAY,
        format!("backend {} failed: {error}", upstream.addr()),
    )
}
