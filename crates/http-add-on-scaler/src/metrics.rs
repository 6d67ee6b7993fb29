//! Prometheus metrics of the scaler, served at `/metrics`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::counts::{Counts, Reachability};

/// Label set naming a route (`<namespace>/<name>`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route key.
    pub route: String,
}

/// Upstream's buckets of `scaler_pinger_fetch_duration_seconds`.
pub const FETCH_DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
];

/// `service_name` of the scaler's `target_info` series (upstream's).
pub const SERVICE_NAME: &str = "keda-http-external-scaler";

/// Label set of `target_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    service_name: String,
}

/// The scaler's instruments: upstream's `scaler_pinger_*` series and our `keda_http_scaler_*`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Duration of one fetch of an interceptor's counts (a `/queue` poll, or a stream's
    /// connection up to its first snapshot) (`scaler_pinger_fetch_duration_seconds`).
    pub pinger_fetch_duration: Histogram,
    /// Failed fetches (`scaler_pinger_fetch_errors_total`).
    pub pinger_fetch_errors: Counter,
    /// Interceptor endpoints listed in the admin Service (`scaler_pinger_endpoints`).
    pub pinger_endpoints: Gauge,
    /// Listed interceptors with neither an open stream nor recent data
    /// (`scaler_pinger_unreachable_pods`).
    pub pinger_unreachable_pods: Gauge,
    /// Interceptors with an open stream or a successful last poll.
    pub connected_interceptors: Gauge,
    /// Stream (re)connection attempts after a failure or an ended stream.
    pub stream_reconnects: Counter,
    /// Failed connects, polls and broken streams.
    pub fetch_errors: Counter,
    /// Concurrency per route as last reported to KEDA.
    pub route_concurrency: Family<RouteLabels, Gauge<f64, AtomicU64>>,
    /// Request rate per route as last reported to KEDA.
    pub route_rate: Family<RouteLabels, Gauge<f64, AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every instrument registered.
    pub fn new() -> Self {
        let mut root = Registry::default();
        let pinger_fetch_duration = Histogram::new(FETCH_DURATION_BUCKETS);
        let pinger_fetch_errors = Counter::default();
        let pinger_endpoints = Gauge::default();
        let pinger_unreachable_pods = Gauge::default();
        root.register(
            "scaler_pinger_fetch_duration_seconds",
            "Duration of fetching counts from an interceptor",
            pinger_fetch_duration.clone(),
        );
        root.register(
            "scaler_pinger_fetch_errors",
            "Failed fetches of counts from interceptors",
            pinger_fetch_errors.clone(),
        );
        root.register(
            "scaler_pinger_endpoints",
            "Interceptor endpoints the scaler fetches counts from",
            pinger_endpoints.clone(),
        );
        root.register(
            "scaler_pinger_unreachable_pods",
            "Listed interceptors that cannot be reached",
            pinger_unreachable_pods.clone(),
        );
        let target = Family::<TargetLabels, Gauge>::default();
        target
            .get_or_create(&TargetLabels {
                service_name: SERVICE_NAME.to_owned(),
            })
            .set(1);
        root.register("target_info", "Target metadata", target);
        // Go's client exports these by default, so upstream's dashboards may chart them.
        root.register_collector(Box::new(http_add_on_types::process::ProcessCollector));
        let registry = root.sub_registry_with_prefix("keda_http_scaler");
        let connected_interceptors = Gauge::default();
        let stream_reconnects = Counter::default();
        let fetch_errors = Counter::default();
        let route_concurrency = Family::<RouteLabels, Gauge<f64, AtomicU64>>::default();
        let route_rate = Family::<RouteLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "connected_interceptors",
            "Interceptors the scaler currently receives counts from",
            connected_interceptors.clone(),
        );
        registry.register(
            "stream_reconnects",
            "Reconnections of interceptor count streams",
            stream_reconnects.clone(),
        );
        registry.register(
            "fetch_errors",
            "Failed fetches of interceptor counts (connect, poll or stream errors)",
            fetch_errors.clone(),
        );
        registry.register(
            "route_concurrency",
            "Requests in flight per route, as reported to KEDA",
            route_concurrency.clone(),
        );
        registry.register(
            "route_request_rate",
            "Requests per second per route, as reported to KEDA",
            route_rate.clone(),
        );
        Self {
            registry: root,
            pinger_fetch_duration,
            pinger_fetch_errors,
            pinger_endpoints,
            pinger_unreachable_pods,
            connected_interceptors,
            stream_reconnects,
            fetch_errors,
            route_concurrency,
            route_rate,
        }
    }

    /// Records the values of a route just reported to KEDA.
    pub fn report(&self, route: &str, concurrency: f64, rate: f64) {
        let labels = RouteLabels {
            route: route.to_owned(),
        };
        self.route_concurrency
            .get_or_create(&labels)
            .set(concurrency);
        self.route_rate.get_or_create(&labels).set(rate);
    }

    /// Drops the series of a route that no longer exists.
    pub fn forget(&self, route: &str) {
        let labels = RouteLabels {
            route: route.to_owned(),
        };
        self.route_concurrency.remove(&labels);
        self.route_rate.remove(&labels);
    }

    /// Sets `scaler_pinger_endpoints` and `scaler_pinger_unreachable_pods`.
    pub fn observe_reachability(&self, reach: Reachability) {
        self.pinger_endpoints.set(reach.listed as i64);
        self.pinger_unreachable_pods
            .set(reach.listed.saturating_sub(reach.reachable) as i64);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `GET /metrics` on `listener` until the task is dropped; the pinger gauges are read
/// from `counts` at each scrape.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, counts: Arc<Counts>) {
    serve_http(listener, "metrics", move |req| {
        metrics.observe_reachability(counts.reachability(std::time::Instant::now()));
        respond(req, &metrics)
    })
    .await;
}

/// Serves the debug endpoint (`PROFILING_BIND_ADDRESS`) on `listener` until the task is
/// dropped: process and runtime figures as text (see
/// [`http_add_on_types::process::debug_text`]).
pub async fn serve_debug(listener: TcpListener) {
    serve_http(listener, "debug", |req| {
        let answer = http_add_on_types::process::debug_text("scaler", req.uri().path());
        let status =
            StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        text_response(status, "text/plain; charset=utf-8", answer.body)
    })
    .await;
}

/// Accepts HTTP/1.1 connections on `listener` (the `what` endpoint) and answers each request
/// with `respond`, until the task is dropped.
async fn serve_http<F>(listener: TcpListener, what: &'static str, respond: F)
where
    F: Fn(&Request<Incoming>) -> Response<Full<Bytes>> + Send + Sync + 'static,
{
    let respond = Arc::new(respond);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(error) => {
                tracing::warn!(what, %error, "accepting a connection");
                continue;
            }
        };
        let respond = respond.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let response = respond(&req);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(req: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    if req.uri().path() == "/metrics" {
        text_response(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        )
    } else {
        text_response(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: try /metrics\n".to_owned(),
        )
    }
}

fn text_response(
    status: StatusCode,
    content_type: &'static str,
    body: String,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_every_instrument() {
        let m = Metrics::new();
        m.connected_interceptors.set(2);
        m.stream_reconnects.inc();
        m.fetch_errors.inc_by(3);
        m.report("ns/app", 4.0, 1.5);
        m.pinger_fetch_errors.inc();
        m.pinger_fetch_duration.observe(0.07);
        m.observe_reachability(Reachability {
            listed: 3,
            reachable: 2,
            fresh_data: true,
        });
        let text = m.encode();
        for line in [
            "scaler_pinger_fetch_errors_total 1",
            "scaler_pinger_fetch_duration_seconds_bucket{le=\"0.075\"} 1",
            "scaler_pinger_fetch_duration_seconds_bucket{le=\"0.05\"} 0",
            "scaler_pinger_endpoints 3",
            "scaler_pinger_unreachable_pods 1",
            "target_info{service_name=\"keda-http-external-scaler\"} 1",
            "keda_http_scaler_connected_interceptors 2",
            "keda_http_scaler_stream_reconnects_total 1",
            "keda_http_scaler_fetch_errors_total 3",
            "keda_http_scaler_route_concurrency{route=\"ns/app\"} 4.0",
            "keda_http_scaler_route_request_rate{route=\"ns/app\"} 1.5",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        if cfg!(target_os = "linux") {
            assert!(
                text.lines()
                    .any(|l| l.starts_with("process_cpu_seconds_total ")),
                "{text}"
            );
        }
        m.forget("ns/app");
        assert!(
            !m.encode().contains("ns/app"),
            "a forgotten route has no series"
        );
    }
}
