//! Tracing set-up shared by the binaries: logs, and OpenTelemetry traces and OTLP metrics as
//! upstream 0.16 configures them (`OTEL_EXPORTER_OTLP_TRACES_ENABLED`, `…_TRACES_PROTOCOL`,
//! `OTEL_EXPORTER_OTLP_METRICS_ENABLED`, the standard endpoint, header and timeout variables,
//! `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`).
//!
//! Spans reach OpenTelemetry two ways: `tracing` spans (`#[instrument]` in the scaler and the
//! operator) through one [`tracing_opentelemetry`] layer, and the interceptor's request spans,
//! made directly with the [`SdkTracer`] so that a request the sampler drops costs one sampler
//! call and nothing else.

pub mod otlp_metrics;

use std::fmt;
use std::io::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanData, SpanExporter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::layer::{Layer, Layered};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::{ConfigError, Env, EnvSource};

/// The OpenTelemetry layer, installed by [`export_spans`] once the configuration is read.
type OtelLayer = tracing_opentelemetry::OpenTelemetryLayer<Registry, SdkTracer>;
type OtelSlot = reload::Layer<Option<OtelLayer>, Registry>;

static OTEL_SLOT: OnceLock<reload::Handle<Option<OtelLayer>, Registry>> = OnceLock::new();

/// Initialises logging once: filter from `RUST_LOG` (default `info`), JSON lines when
/// `LOG_FORMAT=json`, plain text otherwise; logs go to stderr. It leaves a slot for the one
/// OpenTelemetry layer that [`export_spans`] fills.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt: Box<dyn Layer<Layered<OtelSlot, Registry>> + Send + Sync> = if json {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    let (otel, handle) = reload::Layer::new(None);
    // A second initialisation (tests, embedded use) is not an error worth failing for.
    if tracing_subscriber::registry()
        .with(otel)
        .with(fmt)
        .with(filter)
        .try_init()
        .is_ok()
    {
        let _ = OTEL_SLOT.set(handle);
    }
}

/// From now on, `tracing` spans (`#[instrument]`) become OpenTelemetry spans of `tracer`
/// (from [`Telemetry::tracer`]; `None`: traces are off). Needs [`init`] first.
pub fn export_spans(tracer: Option<SdkTracer>) {
    if let (Some(tracer), Some(slot)) = (tracer, OTEL_SLOT.get()) {
        let _ = slot.reload(Some(tracing_opentelemetry::layer().with_tracer(tracer)));
    }
}

/// Where traces go when `OTEL_EXPORTER_OTLP_TRACES_ENABLED` is true
/// (`OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, upstream's default `console`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TracesProtocol {
    /// One JSON line per span on stdout.
    Console,
    /// OTLP protobuf over HTTP (`http/protobuf`, port 4318 by default).
    HttpProtobuf,
    /// OTLP over gRPC (`grpc`, port 4317 by default).
    Grpc,
}

/// An OTLP transport (`grpc` or `http/protobuf`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP protobuf over HTTP.
    HttpProtobuf,
    /// OTLP over gRPC.
    Grpc,
}

/// The sampler (`OTEL_TRACES_SAMPLER`, default `parentbased_always_on` as in the Go SDK
/// upstream uses; `OTEL_TRACES_SAMPLER_ARG` is the ratio of the `traceidratio` ones).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// `always_on`.
    AlwaysOn,
    /// `always_off`.
    AlwaysOff,
    /// `traceidratio`.
    Ratio(f64),
    /// `parentbased_always_on`: the client's decision, else on.
    ParentOrOn,
    /// `parentbased_always_off`: the client's decision, else off.
    ParentOrOff,
    /// `parentbased_traceidratio`: the client's decision, else the ratio.
    ParentOrRatio(f64),
}

impl Sampling {
    /// Whether a span is sampled, decided as the SDK's sampler decides it: `parent` is the
    /// caller's sampled flag (`None`: a root), `draw` the low 64 bits of the trace id (the
    /// parent's, or a uniform random number for a root). Lets a caller drop a span before
    /// asking the SDK for anything.
    pub fn decide(self, parent: Option<bool>, draw: u64) -> bool {
        // The SDK's `TraceIdRatioBased`: the trace id's low 63 bits below ratio × 2^63.
        let ratio = |r: f64| r >= 1.0 || (draw >> 1) < (r.max(0.0) * (1u64 << 63) as f64) as u64;
        match (self, parent) {
            (Self::AlwaysOn, _) => true,
            (Self::AlwaysOff, _) => false,
            (Self::Ratio(r), _) => ratio(r),
            (Self::ParentOrOn | Self::ParentOrOff | Self::ParentOrRatio(_), Some(sampled)) => {
                sampled
            }
            (Self::ParentOrOn, None) => true,
            (Self::ParentOrOff, None) => false,
            (Self::ParentOrRatio(r), None) => ratio(r),
        }
    }
}

/// Where one signal is exported to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpTarget {
    /// The full URL: the signal's `OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT` as given, else
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (plus `/v1/<signal>` over HTTP), else localhost's
    /// 4317 (gRPC) or 4318 (HTTP).
    pub endpoint: String,
    /// Extra request headers (`OTEL_EXPORTER_OTLP_<SIGNAL>_HEADERS`, else
    /// `OTEL_EXPORTER_OTLP_HEADERS`: `key=value,…`, values percent-decoded).
    pub headers: Vec<(String, String)>,
    /// Export timeout (`OTEL_EXPORTER_OTLP_<SIGNAL>_TIMEOUT`, else `OTEL_EXPORTER_OTLP_TIMEOUT`,
    /// milliseconds, 10000).
    pub timeout: Duration,
}

/// Everything OpenTelemetry is configured with, read from the environment by
/// [`OtelConfig::from_env`].
#[derive(Debug, Clone, PartialEq)]
pub struct OtelConfig {
    /// Export spans at all (`OTEL_EXPORTER_OTLP_TRACES_ENABLED`, false).
    pub traces_enabled: bool,
    /// How (`OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, `console`).
    pub traces_protocol: TracesProtocol,
    /// Where, for the OTLP protocols.
    pub traces: OtlpTarget,
    /// Which traces are recorded.
    pub sampling: Sampling,
    /// Push the Prometheus series over OTLP too (`OTEL_EXPORTER_OTLP_METRICS_ENABLED`, false).
    pub metrics_enabled: bool,
    /// How (`OTEL_EXPORTER_OTLP_METRICS_PROTOCOL`, else `OTEL_EXPORTER_OTLP_PROTOCOL`,
    /// `http/protobuf` as upstream's HTTP metrics exporter).
    pub metrics_protocol: OtlpProtocol,
    /// Where.
    pub metrics: OtlpTarget,
    /// Time between pushes (`OTEL_METRIC_EXPORT_INTERVAL`, milliseconds, 60000).
    pub metrics_interval: Duration,
}

impl Default for OtelConfig {
    fn default() -> Self {
        Self {
            traces_enabled: false,
            traces_protocol: TracesProtocol::Console,
            traces: OtlpTarget {
                endpoint: "http://localhost:4317".into(),
                headers: Vec::new(),
                timeout: DEFAULT_TIMEOUT,
            },
            sampling: Sampling::ParentOrOn,
            metrics_enabled: false,
            metrics_protocol: OtlpProtocol::HttpProtobuf,
            metrics: OtlpTarget {
                endpoint: "http://localhost:4318/v1/metrics".into(),
                headers: Vec::new(),
                timeout: DEFAULT_TIMEOUT,
            },
            metrics_interval: Duration::from_secs(60),
        }
    }
}

// The only floats are sampler ratios, which `from_env` keeps within 0..=1 (never NaN).
impl Eq for OtelConfig {}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Every OpenTelemetry variable [`OtelConfig::from_env`] reads.
pub const OTEL_VARIABLES: &[&str] = &[
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_METRICS_ENABLED",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_ENABLED",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_METRIC_EXPORT_INTERVAL",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
];

fn invalid(name: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name: name.to_owned(),
        value: value.to_owned(),
        reason: reason.into(),
    }
}

fn otlp_protocol(name: &str, value: &str) -> Result<OtlpProtocol, ConfigError> {
    match value {
        "grpc" => Ok(OtlpProtocol::Grpc),
        "http/protobuf" => Ok(OtlpProtocol::HttpProtobuf),
        _ => Err(invalid(name, value, "must be grpc or http/protobuf")),
    }
}

/// `key=value,…` with percent-encoded values (the OpenTelemetry header syntax).
fn parse_headers(name: &str, value: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut headers = Vec::new();
    for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, val)) = pair.split_once('=') else {
            return Err(invalid(name, value, format!("{pair:?} is not key=value")));
        };
        let val = percent_decode(val.trim())
            .ok_or_else(|| invalid(name, value, "bad percent-encoding"))?;
        let key = key.trim();
        if http::HeaderName::from_bytes(key.as_bytes()).is_err()
            || http::HeaderValue::from_str(&val).is_err()
        {
            return Err(invalid(
                name,
                value,
                format!("{key:?} is not a valid header"),
            ));
        }
        headers.push((key.to_owned(), val));
    }
    Ok(headers)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl OtelConfig {
    /// Reads every variable of [`OTEL_VARIABLES`]; a bad value is an error naming it.
    pub fn from_env<S: EnvSource>(env: &Env<S>) -> Result<Self, ConfigError> {
        let d = Self::default();
        let traces_protocol = match env.string("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") {
            None => d.traces_protocol,
            Some(v) => match v.as_str() {
                "console" => TracesProtocol::Console,
                "grpc" => TracesProtocol::Grpc,
                "http/protobuf" => TracesProtocol::HttpProtobuf,
                _ => {
                    return Err(invalid(
                        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                        &v,
                        "must be console, grpc or http/protobuf",
                    ));
                }
            },
        };
        let metrics_protocol = match env.string("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL") {
            Some(v) => otlp_protocol("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", &v)?,
            None => match env.string("OTEL_EXPORTER_OTLP_PROTOCOL") {
                Some(v) => otlp_protocol("OTEL_EXPORTER_OTLP_PROTOCOL", &v)?,
                None => d.metrics_protocol,
            },
        };
        let traces = target(
            env,
            "TRACES",
            "/v1/traces",
            traces_protocol != TracesProtocol::HttpProtobuf,
        )?;
        let metrics = target(
            env,
            "METRICS",
            "/v1/metrics",
            metrics_protocol == OtlpProtocol::Grpc,
        )?;
        let ratio = match env.string("OTEL_TRACES_SAMPLER_ARG") {
            None => 1.0,
            Some(v) => match v.trim().parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => r,
                _ => {
                    return Err(invalid(
                        "OTEL_TRACES_SAMPLER_ARG",
                        &v,
                        "must be a ratio from 0 to 1",
                    ));
                }
            },
        };
        let sampling = match env.string("OTEL_TRACES_SAMPLER").as_deref() {
            None | Some("parentbased_always_on") => Sampling::ParentOrOn,
            Some("always_on") => Sampling::AlwaysOn,
            Some("always_off") => Sampling::AlwaysOff,
            Some("traceidratio") => Sampling::Ratio(ratio),
            Some("parentbased_always_off") => Sampling::ParentOrOff,
            Some("parentbased_traceidratio") => Sampling::ParentOrRatio(ratio),
            Some(other) => {
                return Err(invalid(
                    "OTEL_TRACES_SAMPLER",
                    other,
                    "must be always_on, always_off, traceidratio, parentbased_always_on, \
                     parentbased_always_off or parentbased_traceidratio",
                ));
            }
        };
        let interval_ms: u64 = env.parse(
            "OTEL_METRIC_EXPORT_INTERVAL",
            d.metrics_interval.as_millis() as u64,
        )?;
        if interval_ms == 0 {
            return Err(invalid(
                "OTEL_METRIC_EXPORT_INTERVAL",
                "0",
                "must be greater than zero",
            ));
        }
        Ok(Self {
            traces_enabled: env.bool("OTEL_EXPORTER_OTLP_TRACES_ENABLED", d.traces_enabled)?,
            traces_protocol,
            traces,
            sampling,
            metrics_enabled: env.bool("OTEL_EXPORTER_OTLP_METRICS_ENABLED", d.metrics_enabled)?,
            metrics_protocol,
            metrics,
            metrics_interval: Duration::from_millis(interval_ms),
        })
    }
}

/// The endpoint, headers and timeout of `signal` (`TRACES`, `METRICS`).
fn target<S: EnvSource>(
    env: &Env<S>,
    signal: &str,
    path: &str,
    grpc: bool,
) -> Result<OtlpTarget, ConfigError> {
    let signal_var = |what: &str| format!("OTEL_EXPORTER_OTLP_{signal}_{what}");
    let (name, endpoint) = match env.string(&signal_var("ENDPOINT")) {
        Some(url) => (signal_var("ENDPOINT"), url),
        None => match env.string("OTEL_EXPORTER_OTLP_ENDPOINT") {
            Some(base) if grpc => ("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), base),
            Some(base) => (
                "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
                format!("{}{path}", base.trim_end_matches('/')),
            ),
            None if grpc => (String::new(), "http://localhost:4317".to_owned()),
            None => (String::new(), format!("http://localhost:4318{path}")),
        },
    };
    if !name.is_empty() {
        match endpoint.parse::<http::Uri>() {
            Ok(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() => {}
            Ok(uri) if uri.scheme_str() == Some("https") => {
                return Err(invalid(
                    &name,
                    &endpoint,
                    "https is not supported: send to a collector (or sidecar) over http",
                ));
            }
            _ => return Err(invalid(&name, &endpoint, "must be an http:// URL")),
        }
    }
    let headers = match env.string(&signal_var("HEADERS")) {
        Some(v) => parse_headers(&signal_var("HEADERS"), &v)?,
        None => match env.string("OTEL_EXPORTER_OTLP_HEADERS") {
            Some(v) => parse_headers("OTEL_EXPORTER_OTLP_HEADERS", &v)?,
            None => Vec::new(),
        },
    };
    let general: u64 = env.parse(
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        DEFAULT_TIMEOUT.as_millis() as u64,
    )?;
    let timeout: u64 = env.parse(&signal_var("TIMEOUT"), general)?;
    Ok(OtlpTarget {
        endpoint,
        headers,
        timeout: Duration::from_millis(timeout),
    })
}

/// Why the exporters could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP span exporter could not be built.
    #[error("building the OTLP span exporter: {0}")]
    SpanExporter(#[from] opentelemetry_otlp::ExporterBuildError),
    /// Exporters need a Tokio runtime to run their connections on.
    #[error("OpenTelemetry exporters must be started inside a Tokio runtime")]
    NoRuntime,
    /// The metrics endpoint is not a URL the client can use.
    #[error("OTLP metrics endpoint: {0}")]
    MetricsEndpoint(String),
}

/// The running exporters of one component; [`Telemetry::shutdown`] flushes them.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    metrics: Option<otlp_metrics::Pusher>,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("traces", &self.provider.is_some())
            .field("metrics", &self.metrics.is_some())
            .finish()
    }
}

/// An encoder of the component's Prometheus registry (OpenMetrics text).
pub type Encode = Arc<dyn Fn() -> String + Send + Sync>;

impl Telemetry {
    /// Starts what `config` enables for `service_name` (the resource's `service.name`): the
    /// span exporter, and the metrics push of what `encode` returns. Must run inside a Tokio
    /// runtime; exports run on it.
    pub fn start(
        service_name: &'static str,
        config: &OtelConfig,
        encode: Option<Encode>,
    ) -> Result<Self, TelemetryError> {
        let handle =
            tokio::runtime::Handle::try_current().map_err(|_| TelemetryError::NoRuntime)?;
        let resource = opentelemetry_sdk::Resource::builder_empty()
            .with_service_name(service_name)
            .build();
        let provider = if config.traces_enabled {
            let builder = SdkTracerProvider::builder()
                .with_resource(resource)
                .with_sampler(sampler(config.sampling));
            let target = &config.traces;
            let builder = match config.traces_protocol {
                TracesProtocol::Console => builder.with_batch_exporter(Console),
                TracesProtocol::Grpc => {
                    // The channel's worker is spawned on the runtime, so build it there.
                    let _guard = handle.enter();
                    let mut metadata = tonic::metadata::MetadataMap::new();
                    for (k, v) in &target.headers {
                        if let (Ok(k), Ok(v)) = (
                            tonic::metadata::MetadataKey::from_bytes(k.as_bytes()),
                            v.parse(),
                        ) {
                            metadata.insert(k, v);
                        }
                    }
                    let exporter = opentelemetry_otlp::SpanExporter::builder()
                        .with_tonic()
                        .with_endpoint(target.endpoint.clone())
                        .with_timeout(target.timeout)
                        .with_metadata(metadata)
                        .build()?;
                    builder.with_batch_exporter(OnRuntime::new(exporter, handle.clone()))
                }
                TracesProtocol::HttpProtobuf => {
                    let _guard = handle.enter();
                    let exporter = opentelemetry_otlp::SpanExporter::builder()
                        .with_http()
                        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                        .with_endpoint(target.endpoint.clone())
                        .with_timeout(target.timeout)
                        .with_headers(target.headers.iter().cloned().collect())
                        .build()?;
                    builder.with_batch_exporter(OnRuntime::new(exporter, handle.clone()))
                }
            };
            Some(builder.build())
        } else {
            None
        };
        let metrics = match (config.metrics_enabled, encode) {
            (true, Some(encode)) => Some(otlp_metrics::Pusher::start(
                service_name,
                config.metrics_protocol,
                &config.metrics,
                config.metrics_interval,
                encode,
            )?),
            _ => None,
        };
        Ok(Self { provider, metrics })
    }

    /// The tracer of the enabled span exporter (`None` when traces are off).
    pub fn tracer(&self) -> Option<SdkTracer> {
        self.provider
            .as_ref()
            .map(|p| p.tracer(env!("CARGO_PKG_NAME")))
    }

    /// Exports what is left (spans, one last metrics push) and stops the exporters.
    pub async fn shutdown(self) {
        if let Some(metrics) = self.metrics {
            metrics.shutdown().await;
        }
        if let Some(provider) = self.provider {
            // The batch processor's thread waits for exports that run on this runtime.
            let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        }
    }
}

fn sampler(sampling: Sampling) -> opentelemetry_sdk::trace::Sampler {
    use opentelemetry_sdk::trace::Sampler;
    match sampling {
        Sampling::AlwaysOn => Sampler::AlwaysOn,
        Sampling::AlwaysOff => Sampler::AlwaysOff,
        Sampling::Ratio(r) => Sampler::TraceIdRatioBased(r),
        Sampling::ParentOrOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        Sampling::ParentOrOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        Sampling::ParentOrRatio(r) => Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r))),
    }
}

/// Runs an exporter's exports on the Tokio runtime: the batch processor calls them from its
/// own thread, where tonic's and hyper's timers and connections have no runtime.
#[derive(Debug)]
struct OnRuntime<E> {
    inner: Arc<E>,
    handle: tokio::runtime::Handle,
}

impl<E> OnRuntime<E> {
    fn new(inner: E, handle: tokio::runtime::Handle) -> Self {
        Self {
            inner: Arc::new(inner),
            handle,
        }
    }
}

impl<E: SpanExporter + Send + Sync + 'static> SpanExporter for OnRuntime<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let inner = self.inner.clone();
        self.handle
            .spawn(async move { inner.export(batch).await })
            .await
            .map_err(|e| OTelSdkError::InternalFailure(e.to_string()))?
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

/// `console`: one JSON object per span on stdout (what upstream's stdout exporter shows:
/// name, ids, times, attributes, status).
#[derive(Debug)]
struct Console;

fn unix_nanos(t: SystemTime) -> u128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

impl SpanExporter for Console {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let mut out = std::io::stdout().lock();
        for span in batch {
            let attributes: serde_json::Map<String, serde_json::Value> = span
                .attributes
                .iter()
                .map(|kv| {
                    (
                        kv.key.to_string(),
                        serde_json::Value::from(kv.value.to_string()),
                    )
                })
                .collect();
            let line = serde_json::json!({
                "name": span.name,
                "trace_id": span.span_context.trace_id().to_string(),
                "span_id": span.span_context.span_id().to_string(),
                "parent_span_id": span.parent_span_id.to_string(),
                "kind": format!("{:?}", span.span_kind),
                "start_time_unix_nano": unix_nanos(span.start_time).to_string(),
                "end_time_unix_nano": unix_nanos(span.end_time).to_string(),
                "attributes": attributes,
                "status": format!("{:?}", span.status),
            });
            writeln!(out, "{line}").map_err(|e| OTelSdkError::InternalFailure(e.to_string()))?;
        }
        out.flush()
            .map_err(|e| OTelSdkError::InternalFailure(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn read(pairs: &[(&'static str, &'static str)]) -> Result<OtelConfig, ConfigError> {
        OtelConfig::from_env(&Env::new(pairs.iter().copied().collect::<BTreeMap<_, _>>()))
    }

    #[test]
    fn defaults_are_upstreams() {
        let c = read(&[]).unwrap();
        assert_eq!(c, OtelConfig::default());
        assert!(!c.traces_enabled && !c.metrics_enabled);
        assert_eq!(c.traces_protocol, TracesProtocol::Console);
        assert_eq!(c.sampling, Sampling::ParentOrOn);
    }

    #[test]
    fn endpoints_follow_the_specification() {
        let c = read(&[
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
        ])
        .unwrap();
        assert_eq!(c.traces.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(c.metrics.endpoint, "http://collector:4318/v1/metrics");
        let c = read(&[
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://m:9/x"),
        ])
        .unwrap();
        assert_eq!(c.traces.endpoint, "http://collector:4317");
        assert_eq!(c.metrics.endpoint, "http://m:9/x");
    }

    #[test]
    fn headers_sampler_and_timeouts() {
        let c = read(&[
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=1, b=x%20y"),
            ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "c=3"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.01"),
        ])
        .unwrap();
        assert_eq!(
            c.traces.headers,
            [("a".into(), "1".into()), ("b".into(), "x y".into())]
        );
        assert_eq!(c.metrics.headers, [("c".into(), "3".into())]);
        assert_eq!(c.traces.timeout, Duration::from_millis(2500));
        assert_eq!(c.sampling, Sampling::ParentOrRatio(0.01));
    }

    #[test]
    fn decisions_follow_the_parent_and_the_ratio() {
        assert!(Sampling::ParentOrOff.decide(Some(true), 0));
        assert!(!Sampling::ParentOrOn.decide(Some(false), 0));
        assert!(Sampling::ParentOrOn.decide(None, u64::MAX));
        assert!(!Sampling::AlwaysOff.decide(Some(true), 0));
        assert!(Sampling::Ratio(0.01).decide(Some(false), 0));
        assert!(!Sampling::Ratio(0.0).decide(None, 0));
        let sampled = (0..10_000u64)
            .filter(|i| {
                Sampling::ParentOrRatio(0.25).decide(None, i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            })
            .count();
        assert!((2000..3000).contains(&sampled), "{sampled}");
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (name, value) in [
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENABLED", "yes please"),
            ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "udp"),
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("OTEL_TRACES_SAMPLER_ARG", "2"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector:4317"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "novalue"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "0"),
        ] {
            let err = read(&[(name, value)]).expect_err(name).to_string();
            assert!(err.contains(name), "{name}: {err}");
        }
    }
}
