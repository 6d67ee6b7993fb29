//! The KEDA external scaler service: metric specs, values and activity per ScaledObject.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::Stream;
use http_add_on_types::crd::{HTTPScaledObject, InterceptorRoute};
use http_add_on_types::proto::externalscaler::external_scaler_server::ExternalScaler;
use http_add_on_types::proto::externalscaler::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec,
    MetricValue, ScaledObjectRef,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};

use crate::counts::Counts;
use crate::hpa::HpaMarks;
use crate::metrics::Metrics;
use crate::naming::{
    HTTP_SCALED_OBJECT_KEY, INTERCEPTOR_ROUTE_KEY, INTERCEPTOR_TARGET_PENDING_REQUESTS_KEY,
    concurrency_metric, http_scaled_object_metric, rate_metric,
};
use crate::rate::RateConfig;
use crate::routes::{self, RouteSpecs};

/// Target when an HTTPScaledObject sets neither `scalingMetric` nor `targetPendingRequests`.
pub const DEFAULT_TARGET: i64 = 100;

/// The gRPC `externalscaler.ExternalScaler` implementation.
#[derive(Clone)]
pub struct ScalerService {
    counts: Arc<Counts>,
    routes: RouteSpecs,
    metrics: Arc<Metrics>,
    stream_interval: Duration,
    push_activation: bool,
    marks: Option<Arc<HpaMarks>>,
}

/// What a ScaledObject's trigger metadata asks about.
enum Subject {
    HttpScaledObject {
        namespace: String,
        name: String,
        object: Arc<HTTPScaledObject>,
    },
    InterceptorRoute {
        namespace: String,
        name: String,
        object: Arc<InterceptorRoute>,
    },
    Interceptor {
        metric: String,
        target: i64,
    },
}

impl ScalerService {
    /// A service answering from `counts` and `routes`; `StreamIsActive` repeats an unchanged
    /// answer every `stream_interval`.
    pub fn new(
        counts: Arc<Counts>,
        routes: RouteSpecs,
        metrics: Arc<Metrics>,
        stream_interval: Duration,
    ) -> Self {
        Self {
            counts,
            routes,
            metrics,
            stream_interval,
            push_activation: true,
            marks: None,
        }
    }

    /// Records every ScaledObject KEDA asks about in `marks` (to keep their HPAs current).
    pub fn with_hpa_marks(mut self, marks: Arc<HpaMarks>) -> Self {
        self.marks = Some(marks);
        self
    }

    fn heard(&self, sor: &ScaledObjectRef) {
        if let Some(marks) = &self.marks {
            marks.heard(sor);
        }
    }

    /// With `false`, `StreamIsActive` answers only every stream interval (upstream's
    /// behaviour), not the moment activity changes.
    pub fn with_push_activation(mut self, push_activation: bool) -> Self {
        self.push_activation = push_activation;
        self
    }

    /// Resolves the metadata, in upstream's order of precedence: `interceptorRoute`, then
    /// `httpScaledObject`, then `interceptorTargetPendingRequests`.
    fn resolve(&self, sor: &ScaledObjectRef) -> Result<Subject, Status> {
        let metadata = &sor.scaler_metadata;
        let value = |key: &str| -> Result<Option<String>, Status> {
            match metadata.get(key).map(|v| v.trim()) {
                None => Ok(None),
                Some("") => Err(Status::invalid_argument(format!(
                    "scalerMetadata key {key:?} is empty"
                ))),
                Some(v) => Ok(Some(v.to_owned())),
            }
        };
        let namespace = || -> Result<String, Status> {
            if sor.namespace.is_empty() {
                Err(Status::invalid_argument(
                    "ScaledObjectRef has no namespace (needed to find the route)",
                ))
            } else {
                Ok(sor.namespace.clone())
            }
        };
        let unsynced = |e: routes::NotSynced| Status::unavailable(e.to_string());
        if let Some(name) = value(INTERCEPTOR_ROUTE_KEY)? {
            let namespace = namespace()?;
            let object = self
                .routes
                .interceptor_route(&namespace, &name)
                .map_err(unsynced)?
                .ok_or_else(|| {
                    Status::not_found(format!(
                        "InterceptorRoute {namespace}/{name} (scalerMetadata key {INTERCEPTOR_ROUTE_KEY:?}) not found"
                    ))
                })?;
            return Ok(Subject::InterceptorRoute {
                namespace,
                name,
                object,
            });
        }
        if let Some(name) = value(HTTP_SCALED_OBJECT_KEY)? {
            let namespace = namespace()?;
            let object = self
                .routes
                .http_scaled_object(&namespace, &name)
                .map_err(unsynced)?
                .ok_or_else(|| {
                    Status::not_found(format!(
                        "HTTPScaledObject {namespace}/{name} (scalerMetadata key {HTTP_SCALED_OBJECT_KEY:?}) not found"
                    ))
                })?;
            return Ok(Subject::HttpScaledObject {
                namespace,
                name,
                object,
            });
        }
        if let Some(raw) = value(INTERCEPTOR_TARGET_PENDING_REQUESTS_KEY)? {
            let target = raw.parse::<i64>().map_err(|e| {
                Status::invalid_argument(format!(
                    "scalerMetadata key {INTERCEPTOR_TARGET_PENDING_REQUESTS_KEY:?}={raw:?} is not an integer: {e}"
                ))
            })?;
            return Ok(Subject::Interceptor {
                metric: http_scaled_object_metric(&sor.namespace, &sor.name),
                target,
            });
        }
        Err(Status::invalid_argument(format!(
            "scalerMetadata needs one of the keys {INTERCEPTOR_ROUTE_KEY:?}, {HTTP_SCALED_OBJECT_KEY:?} or {INTERCEPTOR_TARGET_PENDING_REQUESTS_KEY:?}"
        )))
    }

    /// The `GetMetricSpec` answer for `sor`.
    pub fn metric_spec(&self, sor: &ScaledObjectRef) -> Result<GetMetricSpecResponse, Status> {
        let specs = match self.resolve(sor)? {
            Subject::HttpScaledObject {
                namespace,
                name,
                object,
            } => vec![MetricSpec {
                metric_name: http_scaled_object_metric(&namespace, &name),
                target_size: http_scaled_object_target(&object),
                target_size_float: 0.0,
            }],
            Subject::InterceptorRoute { name, object, .. } => {
                let metric = &object.spec.scaling_metric;
                let mut specs = Vec::new();
                if let Some(c) = &metric.concurrency {
                    specs.push(MetricSpec {
                        metric_name: concurrency_metric(&name),
                        target_size: 0,
                        target_size_float: f64::from(c.target_value),
                    });
                }
                if let Some(r) = &metric.request_rate {
                    specs.push(MetricSpec {
                        metric_name: rate_metric(&name),
                        target_size: 0,
                        target_size_float: f64::from(r.target_value),
                    });
                }
                specs
            }
            Subject::Interceptor { metric, target } => vec![MetricSpec {
                metric_name: metric,
                target_size: target,
                target_size_float: 0.0,
            }],
        };
        Ok(GetMetricSpecResponse {
            metric_specs: specs,
        })
    }

    /// The metric values of `sor` and whether its route is active.
    fn evaluate(&self, sor: &ScaledObjectRef) -> Result<(Vec<MetricValue>, bool), Status> {
        let subject = self.resolve(sor)?;
        let now = Instant::now();
        let reach = self.counts.reachability(now);
        if reach.all_failing() {
            return Err(Status::unavailable(format!(
                "none of the {} listed interceptors can be reached",
                reach.listed
            )));
        }
        let route_counts = |namespace: &str, name: &str, rate: Option<RateConfig>| {
            let key = format!("{namespace}/{name}");
            if let Some(config) = rate {
                self.counts.configure_route(&key, config, now);
            }
            let counts = self.counts.route(&key, now);
            self.metrics
                .report(&key, counts.concurrency as f64, counts.rate);
            counts
        };
        Ok(match subject {
            Subject::HttpScaledObject {
                namespace,
                name,
                object,
            } => {
                let rate = routes::http_scaled_object_rate(&object);
                let counts = route_counts(&namespace, &name, rate);
                let value = if rate.is_some() {
                    counts.rate.ceil() as i64
                } else {
                    counts.concurrency
                };
                let values = vec![MetricValue {
                    metric_name: http_scaled_object_metric(&namespace, &name),
                    metric_value: value,
                    metric_value_float: 0.0,
                }];
                // ceil(rate) makes a single request in the window count as activity.
                (values, value > 0)
            }
            Subject::InterceptorRoute {
                namespace,
                name,
                object,
            } => {
                let rate = routes::interceptor_route_rate(&object);
                let counts = route_counts(&namespace, &name, rate);
                let metric = &object.spec.scaling_metric;
                let mut values = Vec::new();
                if metric.concurrency.is_some() {
                    values.push(MetricValue {
                        metric_name: concurrency_metric(&name),
                        metric_value: 0,
                        metric_value_float: counts.concurrency as f64,
                    });
                }
                if metric.request_rate.is_some() {
                    values.push(MetricValue {
                        metric_name: rate_metric(&name),
                        metric_value: 0,
                        metric_value_float: counts.rate,
                    });
                }
                let active = values.iter().any(|v| v.metric_value_float > 0.0);
                (values, active)
            }
            Subject::Interceptor { metric, .. } => {
                let total = self.counts.total_concurrency();
                (
                    vec![MetricValue {
                        metric_name: metric,
                        metric_value: total,
                        metric_value_float: 0.0,
                    }],
                    total > 0,
                )
            }
        })
    }
}

/// The int64 target of an HTTPScaledObject: `scalingMetric` (request rate wins if both are
/// set, as upstream), else `targetPendingRequests`, else 100.
pub fn http_scaled_object_target(object: &HTTPScaledObject) -> i64 {
    let spec = &object.spec;
    if let Some(metric) = &spec.scaling_metric {
        if let Some(r) = &metric.request_rate {
            return r.target_value;
        }
        if let Some(c) = &metric.concurrency {
            return c.target_value;
        }
    }
    spec.target_pending_requests
        .map_or(DEFAULT_TARGET, i64::from)
}

/// The values KEDA asked for: only the one named `wanted` (KEDA labels every returned value
/// with the name it asked for and the HPA adds them up, so answering more over-scales), or all
/// of them when no name is given. A name the route does not have is `NOT_FOUND`.
fn select_metric(values: Vec<MetricValue>, wanted: &str) -> Result<Vec<MetricValue>, Status> {
    if wanted.is_empty() {
        return Ok(values);
    }
    let known: Vec<String> = values.iter().map(|v| v.metric_name.clone()).collect();
    let selected: Vec<MetricValue> = values
        .into_iter()
        .filter(|v| v.metric_name == wanted)
        .collect();
    if selected.is_empty() {
        return Err(Status::not_found(format!(
            "metric {wanted:?} is not one of this ScaledObject's metrics {known:?}"
        )));
    }
    Ok(selected)
}

fn log_error(rpc: &str, sor: &ScaledObjectRef, status: &Status) {
    if status.code() == Code::Unavailable {
        tracing::debug!(rpc, namespace = %sor.namespace, name = %sor.name, error = %status.message(), "request failed");
    } else {
        tracing::warn!(rpc, namespace = %sor.namespace, name = %sor.name, error = %status.message(), "request failed");
    }
}

type ActivityStream = Pin<Box<dyn Stream<Item = Result<IsActiveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalScaler for ScalerService {
    #[tracing::instrument(name = "IsActive", skip_all, fields(
        scaled_object.namespace = %request.get_ref().namespace,
        scaled_object.name = %request.get_ref().name,
    ))]
    async fn is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<IsActiveResponse>, Status> {
        let sor = request.into_inner();
        self.heard(&sor);
        let (_, result) = self
            .evaluate(&sor)
            .inspect_err(|s| log_error("IsActive", &sor, s))?;
        Ok(Response::new(IsActiveResponse { result }))
    }

    type StreamIsActiveStream = ActivityStream;

    async fn stream_is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        let sor = request.into_inner();
        self.heard(&sor);
        // Bad metadata or an unknown route fail the call itself.
        let (_, first) = match self.evaluate(&sor) {
            Ok(v) => (v.0, Some(v.1)),
            Err(s) if s.code() == Code::Unavailable => (Vec::new(), None),
            Err(s) => {
                log_error("StreamIsActive", &sor, &s);
                return Err(s);
            }
        };
        let (tx, rx) = mpsc::channel(4);
        let service = self.clone();
        tokio::spawn(async move { service.stream_activity(sor, first, tx).await });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[tracing::instrument(name = "GetMetricSpec", skip_all, fields(
        scaled_object.namespace = %request.get_ref().namespace,
        scaled_object.name = %request.get_ref().name,
    ))]
    async fn get_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        let sor = request.into_inner();
        self.heard(&sor);
        self.metric_spec(&sor)
            .inspect_err(|s| log_error("GetMetricSpec", &sor, s))
            .map(Response::new)
    }

    #[tracing::instrument(name = "GetMetrics", skip_all, fields(
        metric = %request.get_ref().metric_name,
    ))]
    async fn get_metrics(
        &self,
        request: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        let request = request.into_inner();
        let sor = request.scaled_object_ref.unwrap_or_default();
        self.heard(&sor);
        let metric_values = self
            .evaluate(&sor)
            .and_then(|(values, _)| select_metric(values, &request.metric_name))
            .inspect_err(|s| log_error("GetMetrics", &sor, s))?;
        Ok(Response::new(GetMetricsResponse { metric_values }))
    }
}

impl ScalerService {
    /// Sends the activity of `sor` the moment it changes and repeats it every stream interval.
    /// Transient unavailability skips a beat; a route that disappears ends the stream with its
    /// status.
    async fn stream_activity(
        self,
        sor: ScaledObjectRef,
        first: Option<bool>,
        tx: mpsc::Sender<Result<IsActiveResponse, Status>>,
    ) {
        let mut changes = self.counts.subscribe();
        changes.mark_unchanged();
        let push = self.push_activation;
        let mut last = first;
        if let Some(result) = first
            && tx.send(Ok(IsActiveResponse { result })).await.is_err()
        {
            return;
        }
        let mut repeat = tokio::time::interval_at(
            tokio::time::Instant::now() + self.stream_interval,
            self.stream_interval,
        );
        repeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let on_change = tokio::select! {
                biased;
                () = tx.closed() => return,
                changed = changes.changed(), if push => {
                    if changed.is_err() {
                        return;
                    }
                    true
                }
                _ = repeat.tick() => false,
            };
            let result = match self.evaluate(&sor) {
                Ok((_, active)) => active,
                Err(s) if s.code() == Code::Unavailable => continue,
                Err(s) => {
                    log_error("StreamIsActive", &sor, &s);
                    let _ = tx.send(Err(s)).await;
                    return;
                }
            };
            if on_change && last == Some(result) {
                continue;
            }
            last = Some(result);
            if tx.send(Ok(IsActiveResponse { result })).await.is_err() {
                return;
            }
            if on_change {
                repeat.reset();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use serde_json::json;

    fn service() -> ScalerService {
        let route: InterceptorRoute = serde_json::from_value(json!({
            "apiVersion": "http.keda.sh/v1beta1",
            "kind": "InterceptorRoute",
            "metadata": {"name": "ir", "namespace": "ns"},
            "spec": {
                "target": {"service": "app", "port": 8080},
                "scalingMetric": {"concurrency": {"targetValue": 2}},
            },
        }))
        .unwrap();
        ScalerService::new(
            Arc::new(Counts::new(Duration::from_secs(1))),
            RouteSpecs::from_objects(vec![hso(json!({}))], vec![route]),
            Arc::new(Metrics::new()),
            Duration::from_millis(200),
        )
    }

    fn sor(namespace: &str, pairs: &[(&str, &str)]) -> ScaledObjectRef {
        ScaledObjectRef {
            name: "so".into(),
            namespace: namespace.into(),
            scaler_metadata: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<HashMap<_, _>>(),
        }
    }

    #[test]
    fn metadata_errors_name_the_key() {
        let s = service();
        let cases = [
            (
                sor("ns", &[]),
                Code::InvalidArgument,
                HTTP_SCALED_OBJECT_KEY,
            ),
            (
                sor("ns", &[("other", "x")]),
                Code::InvalidArgument,
                INTERCEPTOR_ROUTE_KEY,
            ),
            (
                sor("ns", &[(HTTP_SCALED_OBJECT_KEY, "")]),
                Code::InvalidArgument,
                HTTP_SCALED_OBJECT_KEY,
            ),
            (
                sor("ns", &[(INTERCEPTOR_TARGET_PENDING_REQUESTS_KEY, "1e3")]),
                Code::InvalidArgument,
                INTERCEPTOR_TARGET_PENDING_REQUESTS_KEY,
            ),
            (
                sor("", &[(INTERCEPTOR_ROUTE_KEY, "ir")]),
                Code::InvalidArgument,
                "namespace",
            ),
            (
                sor("ns", &[(HTTP_SCALED_OBJECT_KEY, "nope")]),
                Code::NotFound,
                HTTP_SCALED_OBJECT_KEY,
            ),
            (
                sor("other", &[(INTERCEPTOR_ROUTE_KEY, "ir")]),
                Code::NotFound,
                "other/ir",
            ),
        ];
        for (sor, code, named) in cases {
            for status in [
                s.metric_spec(&sor).unwrap_err(),
                s.evaluate(&sor).unwrap_err(),
            ] {
                assert_eq!(status.code(), code, "{sor:?}: {status:?}");
                assert!(status.message().contains(named), "{sor:?}: {status:?}");
            }
        }
    }

    #[test]
    fn known_routes_answer_with_zeros_before_any_count() {
        let s = service();
        let (values, active) = s
            .evaluate(&sor("ns", &[(HTTP_SCALED_OBJECT_KEY, "app")]))
            .unwrap();
        assert_eq!(values[0].metric_name, "http-ns_002Fapp");
        assert_eq!((values[0].metric_value, active), (0, false));
        let (values, _) = s
            .evaluate(&sor("ns", &[(INTERCEPTOR_ROUTE_KEY, "ir")]))
            .unwrap();
        assert_eq!(values.len(), 1);
        assert_eq!(values[0].metric_name, "http_ir_concurrency");
        // interceptorRoute wins over httpScaledObject, as upstream.
        let spec = s
            .metric_spec(&sor(
                "ns",
                &[
                    (INTERCEPTOR_ROUTE_KEY, "ir"),
                    (HTTP_SCALED_OBJECT_KEY, "app"),
                ],
            ))
            .unwrap();
        assert_eq!(spec.metric_specs[0].target_size_float, 2.0);
    }

    #[test]
    fn get_metrics_selects_the_named_metric() {
        let value = |name: &str, v: f64| MetricValue {
            metric_name: name.to_owned(),
            metric_value: 0,
            metric_value_float: v,
        };
        let values = || {
            vec![
                value("http_ir_concurrency", 4.0),
                value("http_ir_rate", 1.5),
            ]
        };
        assert_eq!(
            select_metric(values(), "http_ir_rate").unwrap(),
            [value("http_ir_rate", 1.5)]
        );
        assert_eq!(
            select_metric(values(), "http_ir_concurrency").unwrap(),
            [value("http_ir_concurrency", 4.0)]
        );
        assert_eq!(select_metric(values(), "").unwrap(), values());
        let status = select_metric(values(), "s0-http_ir_rate").unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
        assert!(status.message().contains("s0-http_ir_rate"), "{status:?}");
    }

    #[test]
    fn route_keys_exist_for_either_kind() {
        let routes = service().routes;
        assert_eq!(routes.exists("ns/app"), Ok(true), "the HTTPScaledObject");
        assert_eq!(routes.exists("ns/ir"), Ok(true), "the InterceptorRoute");
        assert_eq!(routes.exists("ns/gone"), Ok(false));
        assert_eq!(routes.exists("other/app"), Ok(false));
        assert_eq!(routes.exists("no-slash"), Ok(false));
    }

    fn hso(spec: serde_json::Value) -> HTTPScaledObject {
        let mut spec = spec;
        spec["scaleTargetRef"] = json!({"name": "app", "service": "app", "port": 8080});
        serde_json::from_value(json!({
            "apiVersion": "http.keda.sh/v1alpha1",
            "kind": "HTTPScaledObject",
            "metadata": {"name": "app", "namespace": "ns"},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn http_scaled_object_targets() {
        assert_eq!(http_scaled_object_target(&hso(json!({}))), 100);
        assert_eq!(
            http_scaled_object_target(&hso(json!({"targetPendingRequests": 7}))),
            7
        );
        assert_eq!(
            http_scaled_object_target(&hso(json!({
                "targetPendingRequests": 7,
                "scalingMetric": {"concurrency": {"targetValue": 20}}
            }))),
            20
        );
        assert_eq!(
            http_scaled_object_target(&hso(json!({
                "scalingMetric": {"requestRate": {"targetValue": 30}}
            }))),
            30
        );
        assert_eq!(
            http_scaled_object_target(&hso(json!({"scalingMetric": {"concurrency": {}}}))),
            100
        );
    }
}
