//! The OTLP metrics push: the very series `/metrics` serves (the component's Prometheus
//! registry, encoded as OpenMetrics text), turned into OTLP metrics and sent every interval
//! over gRPC or HTTP/protobuf. One source of truth: nothing is counted twice.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{Encode, OtlpProtocol, OtlpTarget, TelemetryError};

/// Series that are resource attributes in OTLP, not metrics.
const SKIPPED: [&str; 1] = ["target_info"];

fn string_value(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// One sample line: `name{labels} value`.
struct Sample<'a> {
    name: &'a str,
    labels: Vec<(String, String)>,
    value: f64,
}

/// Parses `name{a="x",b="y"} 1.5` (label values with `\\`, `\"` and `\n` escapes).
fn parse_sample(line: &str) -> Option<Sample<'_>> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        let mut key = String::new();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '}' => {
                    end = Some(i + 1);
                    break;
                }
                ',' => {}
                '=' => {
                    if chars.next().map(|(_, c)| c) != Some('"') {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()? {
                            (_, '\\') => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            (_, '"') => break,
                            (_, c) => value.push(c),
                        }
                    }
                    labels.push((std::mem::take(&mut key), value));
                }
                c => key.push(c),
            }
        }
        rest = &body[end?..];
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// A histogram's points being gathered, keyed by their labels without `le`.
#[derive(Default)]
struct HistogramPoint {
    labels: Vec<(String, String)>,
    /// `(le, cumulative count)`, in text order (ascending).
    buckets: Vec<(f64, f64)>,
    sum: f64,
    count: f64,
}

/// The OTLP metrics of an OpenMetrics text exposition (counters as monotonic cumulative
/// sums, gauges, histograms with their explicit bounds), stamped `now`, cumulative from
/// `start`.
pub fn from_openmetrics(text: &str, start: SystemTime, now: SystemTime) -> Vec<Metric> {
    let (start, now) = (nanos(start), nanos(now));
    let mut metrics = Vec::new();
    let mut family: Option<(String, String, String)> = None; // name, type, help
    let mut numbers: Vec<NumberDataPoint> = Vec::new();
    let mut histograms: Vec<HistogramPoint> = Vec::new();
    let mut help = String::new();
    let flush = |family: &mut Option<(String, String, String)>,
                 numbers: &mut Vec<NumberDataPoint>,
                 histograms: &mut Vec<HistogramPoint>,
                 metrics: &mut Vec<Metric>| {
        let Some((name, kind, help)) = family.take() else {
            return;
        };
        let data = match kind.as_str() {
            "counter" => Some(metric::Data::Sum(Sum {
                data_points: std::mem::take(numbers),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })),
            "gauge" | "unknown" => Some(metric::Data::Gauge(Gauge {
                data_points: std::mem::take(numbers),
            })),
            "histogram" => Some(metric::Data::Histogram(Histogram {
                data_points: std::mem::take(histograms)
                    .into_iter()
                    .map(|h| {
                        let mut previous = 0.0;
                        let mut bucket_counts = Vec::with_capacity(h.buckets.len());
                        let mut explicit_bounds = Vec::with_capacity(h.buckets.len());
                        for (le, cumulative) in &h.buckets {
                            bucket_counts.push((cumulative - previous).max(0.0) as u64);
                            previous = *cumulative;
                            if le.is_finite() {
                                explicit_bounds.push(*le);
                            }
                        }
                        HistogramDataPoint {
                            attributes: h.labels.iter().map(|(k, v)| string_value(k, v)).collect(),
                            start_time_unix_nano: start,
                            time_unix_nano: now,
                            count: h.count as u64,
                            sum: Some(h.sum),
                            bucket_counts,
                            explicit_bounds,
                            ..Default::default()
                        }
                    })
                    .collect(),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            })),
            _ => None,
        };
        numbers.clear();
        histograms.clear();
        if let Some(data) = data
            && !SKIPPED.contains(&name.as_str())
        {
            metrics.push(Metric {
                name,
                description: help,
                data: Some(data),
                ..Default::default()
            });
        }
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = rest.split_once(' ').map_or("", |(_, h)| h).to_owned();
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            flush(&mut family, &mut numbers, &mut histograms, &mut metrics);
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            family = Some((name.to_owned(), kind.to_owned(), std::mem::take(&mut help)));
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (Some((name, kind, _)), Some(sample)) = (&family, parse_sample(line)) else {
            continue;
        };
        let suffix = sample.name.strip_prefix(name.as_str()).unwrap_or("");
        if kind == "histogram" {
            let mut labels = sample.labels;
            let le = labels
                .iter()
                .position(|(k, _)| k == "le")
                .map(|i| labels.remove(i).1);
            let point = match histograms.iter_mut().find(|h| h.labels == labels) {
                Some(point) => point,
                None => {
                    histograms.push(HistogramPoint {
                        labels,
                        ..Default::default()
                    });
                    histograms.last_mut().expect("just pushed")
                }
            };
            match (suffix, le) {
                ("_bucket", Some(le)) => {
                    let le = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().unwrap_or(f64::INFINITY)
                    };
                    point.buckets.push((le, sample.value));
                }
                ("_sum", _) => point.sum = sample.value,
                ("_count", _) => point.count = sample.value,
                _ => {}
            }
            continue;
        }
        if kind == "counter" && suffix != "_total" && !suffix.is_empty() {
            continue; // `_created` and the like
        }
        numbers.push(NumberDataPoint {
            attributes: sample
                .labels
                .iter()
                .map(|(k, v)| string_value(k, v))
                .collect(),
            start_time_unix_nano: if kind == "counter" { start } else { 0 },
            time_unix_nano: now,
            value: Some(number_data_point::Value::AsDouble(sample.value)),
            ..Default::default()
        });
    }
    flush(&mut family, &mut numbers, &mut histograms, &mut metrics);
    metrics
}

/// The request of one push.
fn request(service_name: &str, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![string_value("service.name", service_name)],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: env!("CARGO_PKG_NAME").to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

// One per process, made once: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
enum Transport {
    Grpc(MetricsServiceClient<tonic::transport::Channel>),
    Http {
        client: Client<HttpConnector, Full<Bytes>>,
        uri: http::Uri,
    },
}

/// The running push task; [`Pusher::shutdown`] pushes once more and stops it.
pub(super) struct Pusher {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Pusher {
    pub(super) fn start(
        service_name: &'static str,
        protocol: OtlpProtocol,
        target: &OtlpTarget,
        interval: Duration,
        encode: Encode,
    ) -> Result<Self, TelemetryError> {
        let transport = match protocol {
            OtlpProtocol::Grpc => {
                let endpoint = tonic::transport::Endpoint::from_shared(target.endpoint.clone())
                    .map_err(|e| TelemetryError::MetricsEndpoint(e.to_string()))?
                    .timeout(target.timeout);
                Transport::Grpc(MetricsServiceClient::new(endpoint.connect_lazy()))
            }
            OtlpProtocol::HttpProtobuf => Transport::Http {
                client: Client::builder(TokioExecutor::new()).build_http(),
                uri: target
                    .endpoint
                    .parse()
                    .map_err(|e: http::uri::InvalidUri| {
                        TelemetryError::MetricsEndpoint(e.to_string())
                    })?,
            },
        };
        let headers = target.headers.clone();
        let timeout = target.timeout;
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let start = SystemTime::now();
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await; // the first tick is immediate: nothing to report yet
            loop {
                let last = tokio::select! {
                    _ = ticks.tick() => false,
                    _ = &mut stopped => true,
                };
                let metrics = from_openmetrics(&encode(), start, SystemTime::now());
                let req = request(service_name, metrics);
                let sent = tokio::time::timeout(timeout, send(&transport, &headers, req)).await;
                match sent {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => tracing::warn!(%error, "OTLP metrics push failed"),
                    Err(_) => tracing::warn!(?timeout, "OTLP metrics push timed out"),
                }
                if last {
                    break;
                }
            }
        });
        Ok(Self { stop, task })
    }

    pub(super) async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn send(
    transport: &Transport,
    headers: &[(String, String)],
    req: ExportMetricsServiceRequest,
) -> Result<(), String> {
    match transport {
        Transport::Grpc(client) => {
            let mut request = tonic::Request::new(req);
            for (k, v) in headers {
                if let (Ok(k), Ok(v)) = (
                    tonic::metadata::MetadataKey::from_bytes(k.as_bytes()),
                    v.parse(),
                ) {
                    request.metadata_mut().insert(k, v);
                }
            }
            client
                .clone()
                .export(request)
                .await
                .map(drop)
                .map_err(|s| s.to_string())
        }
        Transport::Http { client, uri } => {
            let mut builder = http::Request::post(uri.clone())
                .header(http::header::CONTENT_TYPE, "application/x-protobuf");
            for (k, v) in headers {
                builder = builder.header(k.as_str(), v.as_str());
            }
            let request = builder
                .body(Full::new(Bytes::from(req.encode_to_vec())))
                .map_err(|e| e.to_string())?;
            let response = client.request(request).await.map_err(|e| e.to_string())?;
            if response.status().is_success() {
                Ok(())
            } else {
                Err(format!("collector answered {}", response.status()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP reqs Requests.
# TYPE reqs counter
reqs_total{code="200",route="a\"b"} 3
# HELP conc In flight.
# TYPE conc gauge
conc{route="x"} 2
# HELP dur Durations.
# TYPE dur histogram
dur_sum{route="x"} 0.75
dur_count{route="x"} 3
dur_bucket{le="0.1",route="x"} 1
dur_bucket{le="1.0",route="x"} 3
dur_bucket{le="+Inf",route="x"} 3
# HELP target_info Target metadata.
# TYPE target_info gauge
target_info{service_name="s"} 1
# EOF
"#;

    #[test]
    fn converts_counters_gauges_and_histograms() {
        let t = SystemTime::now();
        let metrics = from_openmetrics(TEXT, t, t);
        let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["reqs", "conc", "dur"]);
        let Some(metric::Data::Sum(sum)) = &metrics[0].data else {
            panic!("{:?}", metrics[0]);
        };
        assert!(sum.is_monotonic);
        assert_eq!(
            sum.data_points[0].value,
            Some(number_data_point::Value::AsDouble(3.0))
        );
        assert_eq!(
            sum.data_points[0].attributes[1],
            string_value("route", "a\"b")
        );
        let Some(metric::Data::Histogram(h)) = &metrics[2].data else {
            panic!("{:?}", metrics[2]);
        };
        let point = &h.data_points[0];
        assert_eq!(point.explicit_bounds, [0.1, 1.0]);
        assert_eq!(point.bucket_counts, [1, 2, 0]);
        assert_eq!((point.count, point.sum), (3, Some(0.75)));
        assert_eq!(point.attributes, [string_value("route", "x")]);
    }
}
