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
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// Label set naming a route (`<namespace>/<name>`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route key.
    pub route: String,
}

/// The scaler's instruments.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
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
        let mut registry = Registry::with_prefix("keda_http_scaler");
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
            registry,
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

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `GET /metrics` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(error) => {
                tracing::warn!(%error, "accepting a metrics connection");
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(respond(&req, &metrics)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(req: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, content_type, body) = if req.uri().path() == "/metrics" {
        (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        )
    } else {
        (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: try /metrics\n".to_owned(),
        )
    };
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
        let text = m.encode();
        for line in [
            "keda_http_scaler_connected_interceptors 2",
            "keda_http_scaler_stream_reconnects_total 1",
            "keda_http_scaler_fetch_errors_total 3",
            "keda_http_scaler_route_concurrency{route=\"ns/app\"} 4.0",
            "keda_http_scaler_route_request_rate{route=\"ns/app\"} 1.5",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        m.forget("ns/app");
        assert!(
            !m.encode().contains("ns/app"),
            "a forgotten route has no series"
        );
    }
}
