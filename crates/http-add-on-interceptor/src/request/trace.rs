//! A request's trace: the server span (route, method, status, cold start, endpoint), the
//! cold-start child span with its outcome, and the W3C `traceparent`/`tracestate` continued
//! from the client and sent on to the backend.
//!
//! The span is made when the codec has routed the request ([`Policy::trace`]) and handed to
//! the request's [`super::Tally`] through [`traced`]; the tally ends it when it settles (or is
//! dropped). A request the sampler drops gets no span at all: the codecs then forward the
//! client's trace headers untouched and nothing else happens.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, Span};

use http_add_on_types::telemetry::Sampling;

use crate::routes::RouteEntry;

/// The W3C trace headers, which a traced request's own replace.
pub(crate) const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// Whether `name` is one of [`TRACE_HEADERS`], in any case.
pub(crate) fn is_trace_header(name: &str) -> bool {
    TRACE_HEADERS.iter().any(|h| name.eq_ignore_ascii_case(h))
}

tokio::task_local! {
    /// The span of the request a codec is working on (see [`traced`]).
    static CURRENT: Arc<ServerSpan>;
}

/// Runs `work` (the rest of one request) with `span` as its current request span, where
/// [`super::Policy::count`], [`super::Policy::admit`] and [`super::Attempts`] find it.
pub(crate) async fn traced<F: Future>(span: Option<Arc<ServerSpan>>, work: F) -> F::Output {
    match span {
        Some(span) => CURRENT.scope(span, work).await,
        None => work.await,
    }
}

/// The current request's span, if it is traced.
pub(crate) fn current() -> Option<Arc<ServerSpan>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// How a cold start ended for a request (the `outcome` of the cold-start span and of
/// `interceptor_cold_start_duration_seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColdStartOutcome {
    /// An endpoint became ready.
    Ready,
    /// The readiness (or request) timeout passed with no fallback: 504.
    Timeout,
    /// The readiness timeout passed and the fallback took the request.
    Fallback,
    /// The route already held its maximum of pending requests.
    Rejected,
    /// The client went away while the request was held.
    Cancelled,
}

impl ColdStartOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Timeout => "timeout",
            Self::Fallback => "fallback",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
        }
    }
}

/// The low 64 bits of the trace id and the sampled flag of a W3C `traceparent`
/// (`00-<32 hex>-<16 hex>-<2 hex>`); `None` when it is not one.
fn parse_traceparent(value: &str) -> Option<(u64, bool)> {
    let b = value.as_bytes();
    if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' || &b[..2] == b"ff" {
        return None;
    }
    let low = u64::from_str_radix(value.get(19..35)?, 16).ok()?;
    let flags = u8::from_str_radix(value.get(53..55)?, 16).ok()?;
    Some((low, flags & 1 == 1))
}

/// A uniform random number (splitmix64 per thread, seeded from the standard library's
/// random hasher keys): sampling roots needs no cryptographic randomness.
fn random_u64() -> u64 {
    use std::cell::Cell;
    use std::hash::BuildHasher as _;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(std::hash::RandomState::new().hash_one(0u64));
    }
    STATE.with(|state| {
        let next = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        state.set(next);
        let mut z = next;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

/// One sampled request's server span.
pub(crate) struct ServerSpan {
    span: Mutex<Span>,
    /// The parent of its children and what the backend is told.
    context: Context,
    tracer: SdkTracer,
}

impl std::fmt::Debug for ServerSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSpan")
            .field("context", &self.context.span().span_context())
            .finish()
    }
}

/// The request's headers as `header` returns them (`'a`: how long they live).
struct Headers<'a, F>(F, std::marker::PhantomData<&'a ()>);

impl<'a, F: Fn(&str) -> Option<&'a str>> Extractor for Headers<'a, F> {
    fn get(&self, key: &str) -> Option<&str> {
        (self.0)(key)
    }

    fn keys(&self) -> Vec<&str> {
        TRACE_HEADERS.to_vec()
    }
}

struct Put<F>(F);

impl<F: FnMut(&'static str, String)> Injector for Put<F> {
    fn set(&mut self, key: &str, value: String) {
        if let Some(name) = TRACE_HEADERS.iter().find(|h| **h == key) {
            (self.0)(name, value);
        }
    }
}

impl ServerSpan {
    /// A server span for a request of `entry`, continuing the client's trace (its
    /// `traceparent`/`tracestate` as `header` returns them); `None` when the sampler drops it.
    pub(crate) fn start<'a>(
        tracer: &SdkTracer,
        sampling: Sampling,
        entry: &RouteEntry,
        method: &'static str,
        host: &str,
        path: &str,
        header: impl Fn(&str) -> Option<&'a str>,
    ) -> Option<Arc<Self>> {
        // Decided here, before the SDK is asked for anything (whose sampler is then always
        // on): a dropped request costs a header lookup and a random number.
        let client = header("traceparent").and_then(parse_traceparent);
        let draw = client.map_or_else(random_u64, |(low, _)| low);
        if !sampling.decide(client.map(|(_, sampled)| sampled), draw) {
            return None;
        }
        let parent =
            TraceContextPropagator::new().extract(&Headers(header, std::marker::PhantomData));
        let mut span = tracer.build_with_context(
            tracer.span_builder(method).with_kind(SpanKind::Server),
            &parent,
        );
        if !span.is_recording() {
            return None;
        }
        let key = entry.counter.key();
        span.set_attributes([
            KeyValue::new("http.request.method", method),
            KeyValue::new("server.address", host.to_owned()),
            KeyValue::new("url.path", path.to_owned()),
            KeyValue::new("keda.route.name", key.name().to_owned()),
            KeyValue::new("keda.route.namespace", key.namespace().to_owned()),
        ]);
        let context = parent.with_remote_span_context(span.span_context().clone());
        Some(Arc::new(Self {
            span: Mutex::new(span),
            context,
            tracer: tracer.clone(),
        }))
    }

    /// The headers the backend gets instead of the client's: `put(name, value)` for each.
    pub(crate) fn inject(&self, put: impl FnMut(&'static str, String)) {
        TraceContextPropagator::new().inject_context(&self.context, &mut Put(put));
    }

    fn with<R>(&self, f: impl FnOnce(&mut Span) -> R) -> R {
        f(&mut self.span.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The endpoint the request was sent to (the last one, after failed connects).
    pub(crate) fn endpoint(&self, addr: SocketAddr) {
        self.with(|span| {
            span.set_attribute(KeyValue::new("server.endpoint", addr.to_string()));
        });
    }

    /// Records the cold-start span: from `began` until now, ended with `outcome`.
    pub(crate) fn cold_start(&self, began: SystemTime, outcome: ColdStartOutcome) {
        let mut span = self.tracer.build_with_context(
            self.tracer
                .span_builder("cold start")
                .with_kind(SpanKind::Internal)
                .with_start_time(began)
                .with_attributes([KeyValue::new("keda.cold_start.outcome", outcome.as_str())]),
            &self.context,
        );
        if outcome == ColdStartOutcome::Timeout {
            span.set_status(Status::error("timed out waiting for a ready endpoint"));
        }
        span.end();
    }

    /// Ends the span with the response's `status` (`None`: the client went away first).
    pub(crate) fn finish(&self, status: Option<u16>, cold: bool) {
        self.with(|span| {
            span.set_attribute(KeyValue::new("keda.cold_start", cold));
            match status {
                Some(code) => {
                    span.set_attribute(KeyValue::new("http.response.status_code", i64::from(code)));
                    if code >= 500 {
                        span.set_status(Status::error(""));
                    }
                }
                None => span.set_attribute(KeyValue::new("keda.aborted", true)),
            }
            span.end_with_timestamp(SystemTime::now());
        });
    }
}
