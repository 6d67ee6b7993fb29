//! `HTTPScaledObject` (`http.keda.sh/v1alpha1`): one app scaled on its HTTP traffic, with a
//! KEDA `ScaledObject` created for it by the operator.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Annotation that stops the operator from creating a ScaledObject (and deletes an owned one).
pub const SKIP_SCALEDOBJECT_CREATION_ANNOTATION: &str =
    "httpscaledobject.keda.sh/skip-scaledobject-creation";
/// Annotation that makes the operator drop the owner reference of the ScaledObject.
pub const ORPHAN_SCALEDOBJECT_ANNOTATION: &str = "httpscaledobject.keda.sh/orphan-scaledobject";
/// Finalizer the operator puts on every HTTPScaledObject it manages.
pub const FINALIZER: &str = "httpscaledobject.http.keda.sh";

/// Default of `spec.replicas.min`.
pub const DEFAULT_MIN_REPLICAS: i32 = 0;
/// Default of `spec.replicas.max`.
pub const DEFAULT_MAX_REPLICAS: i32 = 100;
/// Target used when neither `scalingMetric` nor `targetPendingRequests` is set.
pub const DEFAULT_TARGET_PENDING_REQUESTS: i32 = 100;
/// Default of `spec.scaledownPeriod` in seconds.
pub const DEFAULT_SCALEDOWN_PERIOD: i32 = 300;

/// Desired state of an HTTPScaledObject: which requests it receives, where they go and how the
/// target workload scales.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "http.keda.sh",
    version = "v1alpha1",
    kind = "HTTPScaledObject",
    plural = "httpscaledobjects",
    singular = "httpscaledobject",
    shortname = "httpso",
    namespaced,
    status = "HTTPScaledObjectStatus",
    doc = "HTTPScaledObject scales a workload on the HTTP traffic the interceptor routes to it.",
    printcolumn = r#"{"name":"TargetWorkload","type":"string","jsonPath":".status.targetWorkload"}"#,
    printcolumn = r#"{"name":"TargetService","type":"string","jsonPath":".status.targetService"}"#,
    printcolumn = r#"{"name":"MinReplicas","type":"integer","jsonPath":".spec.replicas.min"}"#,
    printcolumn = r#"{"name":"MaxReplicas","type":"integer","jsonPath":".spec.replicas.max"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct HTTPScaledObjectSpec {
    /// Hosts whose requests are routed to the target. Wildcards such as `*.example.com` are
    /// allowed; an empty list or `*` matches every host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Path prefixes whose requests are routed to the target; the longest matching prefix wins.
    /// Empty means every path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path_prefixes: Vec<String>,
    /// Headers a request must carry (all of them) to be routed here. A header without a value
    /// only has to be present. Routes with more matching headers take precedence.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub headers: Vec<Header>,
    /// The workload to scale and the Service that routes to it.
    pub scale_target_ref: ScaleTargetRef,
    /// Service that answers instead of the target when it does not become ready in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold_start_timeout_failover_ref: Option<ColdStartTimeoutFailoverRef>,
    /// Replica bounds of the target workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<ReplicaStruct>,
    /// Deprecated: use `scalingMetric`. Target number of pending requests per replica (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_pending_requests: Option<i32>,
    /// Seconds without traffic before the workload scales back to its minimum (default 300).
    #[serde(
        default,
        rename = "scaledownPeriod",
        skip_serializing_if = "Option::is_none"
    )]
    pub scaledown_period: Option<i32>,
    /// Seconds after creation before the workload may first scale down (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_cooldown_period: Option<i32>,
    /// The metric the workload scales on. Empty means concurrency with target 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling_metric: Option<ScalingMetricSpec>,
    /// Timeouts that override the interceptor's global ones for this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<HTTPScaledObjectTimeoutsSpec>,
}

/// The workload to scale and the Service to route to. Exactly one of `port` and `portName`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.portName) != has(self.port)").message("must define either the 'portName' or the 'port'"))]
pub struct ScaleTargetRef {
    /// Name of the workload to scale.
    #[serde(default)]
    pub name: String,
    /// API version of the workload (default `apps/v1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Kind of the workload; any kind with a `/scale` subresource (default `Deployment`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name of the Service that routes to the workload.
    pub service: String,
    /// Port of the Service to route to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Name of the Service port to route to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_name: Option<String>,
}

/// Failover Service used when the target is not ready within `timeoutSeconds`. Exactly one of
/// `port` and `portName`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.portName) != has(self.port)").message("must define either the 'portName' or the 'port'"))]
pub struct ColdStartTimeoutFailoverRef {
    /// Name of the failover Service.
    pub service: String,
    /// Port of the failover Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Name of the failover Service's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_name: Option<String>,
    /// Seconds to wait for the target before routing to the failover Service (default 30).
    #[serde(default = "default_failover_timeout_seconds")]
    pub timeout_seconds: i32,
}

fn default_failover_timeout_seconds() -> i32 {
    30
}

/// Minimum and maximum replicas of the target workload.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStruct {
    /// Minimum replicas (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i32>,
    /// Maximum replicas (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i32>,
}

/// The metric the workload scales on: `concurrency` or `requestRate`, not both.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScalingMetricSpec {
    /// Scale on the number of requests in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<ConcurrencyMetricSpec>,
    /// Scale on the average request rate over a time window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_rate: Option<RateMetricSpec>,
}

/// Concurrency scaling.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConcurrencyMetricSpec {
    /// Target requests in flight per replica (default 100).
    #[serde(default = "default_target_value")]
    pub target_value: i64,
}

/// Request-rate scaling.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RateMetricSpec {
    /// Target requests per second per replica (default 100).
    #[serde(default = "default_target_value")]
    pub target_value: i64,
    /// Time window the rate is averaged over, e.g. `1m` (default).
    #[serde(default = "default_window")]
    pub window: String,
    /// Bucket size of the rate calculation, e.g. `1s` (default).
    #[serde(default = "default_granularity")]
    pub granularity: String,
}

pub(crate) fn default_target_value() -> i64 {
    100
}

pub(crate) fn default_window() -> String {
    "1m".to_owned()
}

pub(crate) fn default_granularity() -> String {
    "1s".to_owned()
}

/// Timeouts that override the interceptor's global ones (Go duration strings such as `30s`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HTTPScaledObjectTimeoutsSpec {
    /// How long a request waits for the workload to have a ready replica (default: the
    /// interceptor's `KEDA_HTTP_READINESS_TIMEOUT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition_wait: Option<String>,
    /// How long to wait for the response headers once the request was sent (default: the
    /// interceptor's `KEDA_HTTP_RESPONSE_HEADER_TIMEOUT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header: Option<String>,
}

/// A header a request must carry.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Header {
    /// Header name (case-insensitive).
    #[schemars(length(min = 1))]
    pub name: String,
    /// Exact value the header must have; omitted means the header only has to be present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// Observed state of an HTTPScaledObject.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HTTPScaledObjectStatus {
    /// The scaled workload as `apiVersion/kind/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_workload: Option<String>,
    /// The routed Service as `service:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_service: Option<String>,
    /// Current conditions; `Ready` tells whether the object is reconciled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
