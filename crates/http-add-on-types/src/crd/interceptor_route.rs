//! `InterceptorRoute` (`http.keda.sh/v1beta1`): routing and scaling metrics for a Service, the
//! successor of HTTPScaledObject. The user writes their own KEDA ScaledObject for it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::http_scaled_object::{default_granularity, default_window};

/// Label a ConfigMap must carry to be used by `bodyFromConfigMap`.
pub const RESPONSE_BODY_LABEL: &str = "http.keda.sh/response-body";
/// Largest inline static response body, in bytes.
pub const MAX_BODY_BYTES: usize = 32768;

/// Desired state of an InterceptorRoute: where requests go, how they are matched, and which
/// metrics drive scaling.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "http.keda.sh",
    version = "v1beta1",
    kind = "InterceptorRoute",
    plural = "interceptorroutes",
    singular = "interceptorroute",
    namespaced,
    status = "InterceptorRouteStatus",
    doc = "InterceptorRoute routes HTTP requests to a Service through the interceptor and reports their concurrency and rate for scaling.",
    printcolumn = r#"{"name":"TargetService","type":"string","jsonPath":".spec.target.service"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct InterceptorRouteSpec {
    /// The Service requests are forwarded to.
    pub target: TargetRef,
    /// How the interceptor reaches the target: `Endpoint` (ready pods directly) or `Service`
    /// (the Service's cluster address, for meshes). Unset: the interceptor's global setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_mode: Option<ProxyMode>,
    /// Matching rules; a request matching any rule is routed here. Within a rule, hosts, paths
    /// and headers must all match. No rules: every request (lowest precedence).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub rules: Vec<RoutingRule>,
    /// Metrics that drive scaling; when both are set the larger replica count wins.
    pub scaling_metric: ScalingMetricSpec,
    /// What happens while the target has no ready endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold_start: Option<ColdStartSpec>,
    /// Per-route timeouts; unset fields use the interceptor's global settings, `0s` disables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<InterceptorRouteTimeouts>,
    /// Fixed responses for matching requests, evaluated in order; the first match wins. They
    /// are not counted for scaling.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub static_routes: Vec<StaticRoute>,
}

/// A Service and one of its ports. Exactly one of `port` and `portName`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.port) != has(self.portName)").message("exactly one of 'port' or 'portName' must be set"))]
pub struct TargetRef {
    /// Name of the Service.
    #[schemars(length(min = 1))]
    pub service: String,
    /// Port number of the Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 1, "maximum" = 65535))]
    pub port: Option<i32>,
    /// Name of the Service port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub port_name: Option<String>,
}

/// How the interceptor forwards to the target.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    /// Through the Service's cluster address (compatible with service meshes).
    Service,
    /// Directly to ready pod endpoints from EndpointSlices.
    Endpoint,
}

/// One matching rule: hosts, paths and headers must all match.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RoutingRule {
    /// Hosts to match; `*.example.com` wildcards allowed; empty or `*` matches every host.
    /// Exact hosts take precedence over wildcards, more specific wildcards over less specific.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub hosts: Vec<String>,
    /// Path prefixes to match; the longest matching prefix wins. Empty matches every path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub paths: Vec<PathMatch>,
    /// Headers that must all match; a header without a value only has to be present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub headers: Vec<HeaderMatch>,
}

/// A path prefix.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PathMatch {
    /// The prefix, e.g. `/api`.
    #[schemars(length(min = 1))]
    pub value: String,
}

/// A header a request must carry.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HeaderMatch {
    /// Header name (case-insensitive).
    #[schemars(length(min = 1))]
    pub name: String,
    /// Exact value to match; omitted means any value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// Scaling metrics; at least one must be set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.concurrency) || has(self.requestRate)").message("at least one of 'concurrency' or 'requestRate' must be set"))]
pub struct ScalingMetricSpec {
    /// Scale on the number of requests in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<ConcurrencyTargetSpec>,
    /// Scale on the request rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_rate: Option<RequestRateTargetSpec>,
}

/// Concurrency scaling.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConcurrencyTargetSpec {
    /// Target requests in flight per replica; required, no default (as upstream).
    #[schemars(extend("minimum" = 1))]
    pub target_value: i32,
}

/// Request-rate scaling.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RequestRateTargetSpec {
    /// Target requests per second per replica; required, no default (as upstream).
    #[schemars(extend("minimum" = 1))]
    pub target_value: i32,
    /// Sliding window the rate is computed over (default `1m`).
    #[serde(default = "default_window")]
    pub window: String,
    /// Bucket size within the window (default `1s`).
    #[serde(default = "default_granularity")]
    pub granularity: String,
}

/// Behaviour while the target has no ready endpoint: at least one of a fallback, a placeholder
/// and a pending limit (as upstream 0.16).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.fallback) || has(self.placeholder) || has(self.maxPendingRequests)").message("at least one of 'fallback', 'placeholder' or 'maxPendingRequests' must be set"))]
#[x_kube(validation = Rule::new("!has(self.overflow) || self.overflow != 'Placeholder' || has(self.placeholder)").message("overflow 'Placeholder' requires 'placeholder'"))]
pub struct ColdStartSpec {
    /// Service that answers when the target is not ready before the readiness timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<FallbackSpec>,
    /// Response returned while the target starts: at once, or with `maxPendingRequests` to
    /// the requests beyond the limit (`overflow: Placeholder`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placeholder: Option<PlaceholderSpec>,
    /// Requests held per interceptor replica while the target starts; unset: the global
    /// `KEDA_HTTP_COLD_START_MAX_PENDING_REQUESTS` (0 = unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 1))]
    pub max_pending_requests: Option<i32>,
    /// What requests beyond `maxPendingRequests` get: `Reject` (503, the default) or
    /// `Placeholder`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overflow: Option<ColdStartOverflow>,
}

/// The answer to a request beyond a route's pending limit.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ColdStartOverflow {
    /// 503 with `Retry-After`.
    #[default]
    Reject,
    /// The route's placeholder.
    Placeholder,
}

/// The fallback of a cold start.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FallbackSpec {
    /// The fallback Service.
    pub service: ServiceRef,
}

/// A Service by name and one of its ports. Exactly one of `port` and `portName`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.port) != has(self.portName)").message("exactly one of 'port' or 'portName' must be set"))]
pub struct ServiceRef {
    /// Name of the Service.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Port number of the Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 1, "maximum" = 65535))]
    pub port: Option<i32>,
    /// Name of the Service port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub port_name: Option<String>,
}

/// A response returned while the target starts.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlaceholderSpec {
    /// The response (status defaults to 503).
    pub response: StaticResponse,
}

/// A fixed HTTP response. At most one of `body` and `bodyFromConfigMap`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.body) && has(self.bodyFromConfigMap))").message("at most one of 'body' or 'bodyFromConfigMap' may be set"))]
pub struct StaticResponse {
    /// HTTP status code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 100, "maximum" = 599))]
    pub status_code: Option<i32>,
    /// Inline body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32768))]
    pub body: Option<String>,
    /// Body read from a ConfigMap labelled `http.keda.sh/response-body: "true"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_from_config_map: Option<ConfigMapKeyRef>,
    /// Response headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// A key of a ConfigMap in the route's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeyRef {
    /// Name of the ConfigMap.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key in the ConfigMap; omitted: derived from the request path (`index.html` for `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Per-route timeouts (Go duration strings such as `30s`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InterceptorRouteTimeouts {
    /// How long a request waits for the target to become ready; unset: the global
    /// `KEDA_HTTP_READINESS_TIMEOUT`; `0s`: no separate deadline (30s when a fallback exists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<String>,
    /// Time allowed for the whole request; unset: the global `KEDA_HTTP_REQUEST_TIMEOUT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// Time allowed for response headers once the request was sent; unset: the global
    /// `KEDA_HTTP_RESPONSE_HEADER_TIMEOUT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header: Option<String>,
}

/// A fixed response for matching requests.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StaticRoute {
    /// Matching rules (at least one); any rule matching selects this static route.
    #[schemars(length(min = 1))]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub rules: Vec<RoutingRule>,
    /// The response.
    pub response: StaticResponse,
    /// `WhenUnavailable` (default): only while the target has no ready endpoint; `Always`.
    #[serde(default)]
    pub response_mode: ResponseMode,
}

/// When a static route answers.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResponseMode {
    /// Only while the target has no ready endpoint.
    #[default]
    WhenUnavailable,
    /// For every matching request.
    Always,
}

/// Observed state of an InterceptorRoute.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InterceptorRouteStatus {
    /// Current conditions; `Ready` tells whether the route is accepted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;
    use serde_json::{Value, json};

    use super::*;

    /// Upstream 0.16 requires both `targetValue`s: no serde default fills them in, and the
    /// schema lists them as required (so the API server rejects a manifest without one).
    #[test]
    fn target_values_are_required() {
        let missing = serde_json::from_value::<ScalingMetricSpec>(json!({"concurrency": {}}));
        assert!(
            missing
                .unwrap_err()
                .to_string()
                .contains("missing field `targetValue`")
        );
        let missing = serde_json::from_value::<ScalingMetricSpec>(json!({"requestRate": {}}));
        assert!(
            missing
                .unwrap_err()
                .to_string()
                .contains("missing field `targetValue`")
        );

        let crd = serde_json::to_value(InterceptorRoute::crd()).unwrap();
        let metric = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]["scalingMetric"]["properties"];
        for name in ["concurrency", "requestRate"] {
            assert_eq!(metric[name]["required"], json!(["targetValue"]), "{name}");
            let target = &metric[name]["properties"]["targetValue"];
            assert_eq!(target["default"], Value::Null, "{name}: no default");
            assert_eq!(target["minimum"], json!(1.0), "{name}");
        }
    }
}
