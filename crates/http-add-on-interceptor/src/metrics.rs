//! Prometheus metrics (`/metrics` on `OTEL_PROM_EXPORTER_PORT`), upstream-compatible names.

use std::sync::Arc;
use std::time::Duration;

use http_add_on_types::routing::RouteKey;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of a route, built once per route (cloning them is two reference-count increments).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Route (object) name.
    pub route_name: Arc<str>,
    /// Route namespace.
    pub route_namespace: Arc<str>,
}

impl RouteLabels {
    /// Labels of `key`.
    pub fn new(key: &RouteKey) -> Self {
        Self {
            route_name: key.name().into(),
            route_namespace: key.namespace().into(),
        }
    }
}

/// Labels of one finished request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Response status code.
    pub code: u16,
    /// Request method (well-known methods only; others are `_OTHER`, as upstream).
    pub method: &'static str,
    /// Route (object) name.
    pub route_name: Arc<str>,
    /// Route namespace.
    pub route_namespace: Arc<str>,
}

/// Labels of one cold-start wait.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ColdStartLabels {
    /// Route (object) name.
    pub route_name: Arc<str>,
    /// Route namespace.
    pub route_namespace: Arc<str>,
    /// How the wait ended: `ready`, `timeout`, `fallback`, `rejected` or `cancelled`.
    pub outcome: &'static str,
}

/// The request count and duration series of one label set.
#[derive(Debug, Clone)]
pub struct RequestHandles {
    count: Counter,
    duration: Histogram,
}

impl RequestHandles {
    /// Records a finished request.
    pub fn record(&self, elapsed: Duration) {
        self.count.inc();
        self.duration.observe(elapsed.as_secs_f64());
    }
}

/// The interceptor's metric families and their registry.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RequestLabels, Histogram, fn() -> Histogram>,
    concurrency: Family<RouteLabels, Gauge>,
    cold_starts: Family<ColdStartLabels, Histogram, fn() -> Histogram>,
    rejections: Family<RouteLabels, Counter>,
    checks: Family<RequestLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Upstream's buckets of `interceptor_request_duration_seconds`.
pub const REQUEST_DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// `service_name` of the interceptor's `target_info` series (upstream's).
pub const SERVICE_NAME: &str = "keda-http-interceptor";

/// Label set of `target_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    service_name: &'static str,
}

fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_DURATION_BUCKETS)
}

fn cold_start_histogram() -> Histogram {
    Histogram::new([
        0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
    ])
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every family.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let durations = Family::new_with_constructor(request_histogram as fn() -> Histogram);
        let concurrency = Family::<RouteLabels, Gauge>::default();
        let cold_starts = Family::new_with_constructor(cold_start_histogram as fn() -> Histogram);
        registry.register(
            "interceptor_request_count",
            "Requests handled by the interceptor",
            requests.clone(),
        );
        registry.register(
            "interceptor_request_duration_seconds",
            "Time from request arrival to the end of the response",
            durations.clone(),
        );
        registry.register(
            "interceptor_request_concurrency",
            "Requests in flight, including requests held during a cold start",
            concurrency.clone(),
        );
        registry.register(
            "interceptor_cold_start_duration_seconds",
            "Time requests waited for a ready endpoint, by how the wait ended",
            cold_starts.clone(),
        );
        let rejections = Family::<RouteLabels, Counter>::default();
        registry.register(
            "interceptor_cold_start_rejections",
            "Requests rejected because the route already held its maximum of pending requests",
            rejections.clone(),
        );
        let checks = Family::<RequestLabels, Counter>::default();
        registry.register(
            "interceptor_check_count",
            "(ours) Admission checks answered on the check port; also counted as requests",
            checks.clone(),
        );
        let target = Family::<TargetLabels, Gauge>::default();
        target
            .get_or_create(&TargetLabels {
                service_name: SERVICE_NAME,
            })
            .set(1);
        registry.register("target_info", "Target metadata", target);
        // Go's client exports these by default, so upstream's dashboards may chart them.
        registry.register_collector(Box::new(http_add_on_types::process::ProcessCollector));
        Self {
            registry,
            requests,
            durations,
            concurrency,
            cold_starts,
            rejections,
            checks,
        }
    }

    /// The concurrency gauge of a route (kept by the route's counter).
    pub fn concurrency_gauge(&self, labels: &RouteLabels) -> Gauge {
        self.concurrency.get_or_create(labels).clone()
    }

    /// Forgets a deleted route's gauge.
    pub fn remove_route(&self, labels: &RouteLabels) {
        self.concurrency.remove(labels);
    }

    /// Handles of the request series for one route, method and code, to record without a
    /// family lookup (kept per route for the most common label set).
    pub fn request_handles(
        &self,
        labels: &RouteLabels,
        method: &'static str,
        code: u16,
    ) -> RequestHandles {
        let labels = RequestLabels {
            code,
            method,
            route_name: labels.route_name.clone(),
            route_namespace: labels.route_namespace.clone(),
        };
        RequestHandles {
            count: self.requests.get_or_create(&labels).clone(),
            duration: self.durations.get_or_create(&labels).clone(),
        }
    }

    /// Records a finished request.
    pub fn record_request(
        &self,
        labels: &RouteLabels,
        method: &'static str,
        code: u16,
        elapsed: Duration,
    ) {
        let labels = RequestLabels {
            code,
            method,
            route_name: labels.route_name.clone(),
            route_namespace: labels.route_namespace.clone(),
        };
        self.requests.get_or_create(&labels).inc();
        self.durations
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Records an answered admission check (besides its request series).
    pub fn record_check(&self, labels: &RouteLabels, method: &'static str, code: u16) {
        self.checks
            .get_or_create(&RequestLabels {
                code,
                method,
                route_name: labels.route_name.clone(),
                route_namespace: labels.route_namespace.clone(),
            })
            .inc();
    }

    /// Counts a request rejected beyond its route's pending limit.
    pub fn record_cold_start_rejection(&self, labels: &RouteLabels) {
        self.rejections.get_or_create(labels).inc();
    }

    /// Records how long a request waited for a ready endpoint and how the wait ended.
    pub fn record_cold_start(
        &self,
        labels: &RouteLabels,
        outcome: crate::request::ColdStartOutcome,
        waited: Duration,
    ) {
        self.cold_starts
            .get_or_create(&ColdStartLabels {
                route_name: labels.route_name.clone(),
                route_namespace: labels.route_namespace.clone(),
                outcome: outcome.as_str(),
            })
            .observe(waited.as_secs_f64());
    }

    /// The OpenMetrics text exposition of every family.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// A static label value for `method` (no allocation per request).
pub fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::PATCH => "PATCH",
        http::Method::CONNECT => "CONNECT",
        http::Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_upstream_series() {
        let m = Metrics::new();
        let labels = RouteLabels::new(&RouteKey::new("ns", "app"));
        m.concurrency_gauge(&labels).inc();
        m.record_request(&labels, "GET", 200, Duration::from_millis(3));
        m.record_cold_start(
            &labels,
            crate::request::ColdStartOutcome::Ready,
            Duration::from_millis(300),
        );
        let text = m.encode();
        assert!(text.contains(
            r#"interceptor_request_count_total{code="200",method="GET",route_name="app",route_namespace="ns"} 1"#
        ), "{text}");
        assert!(
            text.contains(
                r#"interceptor_request_concurrency{route_name="app",route_namespace="ns"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains("interceptor_request_duration_seconds_bucket"),
            "{text}"
        );
        assert!(
            text.contains(r#"interceptor_cold_start_duration_seconds_count{route_name="app",route_namespace="ns",outcome="ready"} 1"#),
            "{text}"
        );
        for le in ["0.075", "0.75", "7.5"] {
            assert!(
                text.contains(&format!(
                    r#"interceptor_request_duration_seconds_bucket{{le="{le}",code="200",method="GET",route_name="app",route_namespace="ns"}} 1"#
                )),
                "bucket {le}: {text}"
            );
        }
        assert!(
            text.contains(r#"target_info{service_name="keda-http-interceptor"} 1"#),
            "{text}"
        );
        if cfg!(target_os = "linux") {
            assert!(
                text.lines()
                    .any(|l| l.starts_with("process_resident_memory_bytes ")),
                "{text}"
            );
        }
    }

    #[test]
    fn unusual_methods_are_other_with_an_underscore() {
        let purge = http::Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(method_label(&purge), "_OTHER");
        assert_eq!(method_label(&http::Method::PATCH), "PATCH");
    }
}
