//! Route table entries built from HTTPScaledObjects and InterceptorRoutes, and the watch task
//! that rebuilds the table whenever they, their Services or their EndpointSlices change.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use http::HeaderMap;
use http_add_on_types::crd::interceptor_route::{
    ColdStartOverflow, ProxyMode, RESPONSE_BODY_LABEL, ResponseMode, StaticResponse,
};
use http_add_on_types::crd::routes::{
    http_scaled_object_route, interceptor_route_route, routing_rule,
};
use http_add_on_types::crd::{HTTPScaledObject, InterceptorRoute};
use http_add_on_types::duration::parse_duration;
use http_add_on_types::routing::{
    RequestHeaders, RouteKey, RouteRule, RouteTable, SharedRouteTable,
};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use tokio::sync::{Notify, watch};

use crate::backends::{Backend, BackendKey, PortRef, resolve};
use crate::config::Config;
use crate::counts::{Counts, RouteCounter};

/// Label linking an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Readiness timeout of a route with a fallback when none is configured.
const DEFAULT_FALLBACK_READINESS: Duration = Duration::from_secs(30);

/// Where a static response's body comes from.
#[derive(Debug, Clone)]
pub enum ReplyBody {
    /// An inline body.
    Inline(bytes::Bytes),
    /// A ConfigMap's entries (`data` and `binaryData`), as of the last table rebuild.
    ConfigMap {
        /// `<namespace>/<name>` of the ConfigMap (for error messages).
        source: String,
        /// Its entries; `None` when the ConfigMap does not exist (or lacks the label).
        files: Option<Arc<HashMap<String, bytes::Bytes>>>,
        /// The key; `None` derives it from the request path (`index.html` for `/`).
        key: Option<String>,
    },
}

/// A static response ready to send.
#[derive(Debug, Clone)]
pub struct StaticReply {
    /// Status code.
    pub status: http::StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: ReplyBody,
}

/// The ConfigMap key a request path maps to, as upstream: the path without its leading `/`,
/// `index.html` for `/`.
pub fn key_for_path(path: &str) -> &str {
    match path.strip_prefix('/').unwrap_or(path) {
        "" => "index.html",
        key => key,
    }
}

/// A `Content-Type` guessed from a file name's extension.
fn content_type_for(key: &str) -> Option<&'static str> {
    let ext = key.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        "xml" => "text/xml; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/vnd.microsoft.icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        _ => return None,
    })
}

impl StaticReply {
    /// The reply of `spec`; `default_status` applies without a `statusCode` (503 for a
    /// placeholder, 200 for a static route, as upstream).
    fn from_spec(
        spec: &StaticResponse,
        key: &RouteKey,
        config_maps: &dyn Fn(&str, &str) -> Option<Arc<ConfigMap>>,
        default_status: http::StatusCode,
    ) -> Self {
        let status = spec
            .status_code
            .and_then(|c| u16::try_from(c).ok())
            .and_then(|c| http::StatusCode::from_u16(c).ok())
            .unwrap_or(default_status);
        let mut headers = HeaderMap::new();
        for (name, value) in &spec.headers {
            match (
                http::HeaderName::try_from(name.as_str()),
                http::HeaderValue::try_from(value.as_str()),
            ) {
                (Ok(n), Ok(v)) => {
                    headers.append(n, v);
                }
                _ => {
                    tracing::warn!(route = %key, header = name, "invalid static response header ignored")
                }
            }
        }
        let body = match &spec.body_from_config_map {
            Some(cm) => ReplyBody::ConfigMap {
                source: format!("{}/{}", key.namespace(), cm.name),
                files: config_maps(key.namespace(), &cm.name).map(|map| {
                    let mut files = HashMap::new();
                    for (k, v) in map.data.iter().flatten() {
                        files.insert(k.clone(), bytes::Bytes::from(v.clone()));
                    }
                    for (k, v) in map.binary_data.iter().flatten() {
                        files.insert(k.clone(), bytes::Bytes::from(v.0.clone()));
                    }
                    Arc::new(files)
                }),
                key: cm.key.clone(),
            },
            None => ReplyBody::Inline(bytes::Bytes::from(spec.body.clone().unwrap_or_default())),
        };
        Self {
            status,
            headers,
            body,
        }
    }

    /// The status, headers and body for a request to `path`; `Err` names a missing ConfigMap
    /// or key.
    pub fn render(
        &self,
        path: &str,
    ) -> Result<(http::StatusCode, HeaderMap, bytes::Bytes), String> {
        match &self.body {
            ReplyBody::Inline(body) => Ok((self.status, self.headers.clone(), body.clone())),
            ReplyBody::ConfigMap { source, files, key } => {
                let Some(files) = files else {
                    return Err(format!(
                        "ConfigMap {source} (labelled {RESPONSE_BODY_LABEL}=true) not found"
                    ));
                };
                let (key, body) = match key {
                    Some(key) => match files.get(key) {
                        Some(body) => (key.as_str(), body.clone()),
                        None => return Err(format!("ConfigMap {source} has no key {key:?}")),
                    },
                    // A key derived from the path that is missing answers an empty body.
                    None => {
                        let key = key_for_path(path);
                        (key, files.get(key).cloned().unwrap_or_default())
                    }
                };
                let mut headers = self.headers.clone();
                if !headers.contains_key(http::header::CONTENT_TYPE)
                    && let Some(ct) = content_type_for(key)
                {
                    headers.insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static(ct),
                    );
                }
                Ok((self.status, headers, body))
            }
        }
    }
}

/// One of a route's `staticRoutes`.
#[derive(Debug)]
pub struct StaticRoute {
    rules: Vec<RouteRule>,
    /// When it applies.
    pub always: bool,
    /// What it answers.
    pub reply: StaticReply,
}

impl StaticRoute {
    /// Whether a request matches one of the rules (hosts, path prefixes, headers).
    pub fn matches<H: RequestHeaders + ?Sized>(&self, host: &str, path: &str, headers: &H) -> bool {
        let host = host_without_port(host);
        self.rules.iter().any(|rule| {
            let host_ok = rule.hosts.is_empty()
                || rule.hosts.iter().any(|pattern| host_matches(pattern, host));
            let path_ok =
                rule.paths.is_empty() || rule.paths.iter().any(|p| path.starts_with(p.as_str()));
            let headers_ok = rule.headers.iter().all(|h| {
                let Ok(name) = http::HeaderName::from_bytes(h.name.as_bytes()) else {
                    return false;
                };
                match &h.value {
                    None => headers.contains(&name),
                    Some(v) => headers.has_value(&name, v.as_bytes()),
                }
            });
            host_ok && path_ok && headers_ok
        })
    }
}

fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split(']').next().map_or(host, |h| &h[1..]);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
    .trim_end_matches('.')
}

fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix("*.") {
        Some(suffix) => host.len().checked_sub(suffix.len() + 1).is_some_and(|cut| {
            host.as_bytes()[cut] == b'.' && host[cut + 1..].eq_ignore_ascii_case(suffix)
        }),
        None => pattern.trim_end_matches('.').eq_ignore_ascii_case(host),
    }
}

/// Everything a request routed to one route needs; the payload of the route table.
#[derive(Debug)]
pub struct RouteEntry {
    /// The route's counts.
    pub counter: Arc<RouteCounter>,
    /// Where requests go.
    pub backend: Arc<Backend>,
    /// Where requests go when the backend is not ready in time.
    pub fallback: Option<Arc<Backend>>,
    /// Dial pod endpoints (true) or the Service address (false).
    pub direct: bool,
    /// Wait for a ready endpoint at most this long (`None` = no limit).
    pub readiness_timeout: Option<Duration>,
    /// Limit from arrival to response headers.
    pub request_timeout: Option<Duration>,
    /// Limit on waiting for response headers.
    pub response_header_timeout: Option<Duration>,
    /// Answer while the backend is cold instead of holding (with `max_pending`: only the
    /// requests beyond it, when `overflow_placeholder`).
    pub placeholder: Option<StaticReply>,
    /// Requests held at once while the backend is cold (`None` = unlimited).
    pub max_pending: Option<u32>,
    /// Requests beyond `max_pending` get the placeholder rather than a 503.
    pub overflow_placeholder: bool,
    /// Static responses, first match wins.
    pub static_routes: Vec<StaticRoute>,
    /// Scaled by concurrency alone, which admission checks (arrivals only) cannot drive.
    pub concurrency_only: bool,
}

/// The shared, atomically swapped route table.
pub type Table = SharedRouteTable<Arc<RouteEntry>>;

/// A route-level duration override: unset → `global`, `0s` → off, unparsable → `global` (logged).
fn override_duration(
    value: Option<&str>,
    global: Option<Duration>,
    key: &RouteKey,
    field: &str,
) -> Option<Duration> {
    match value.map(parse_duration) {
        None => global,
        Some(Ok(d)) => (!d.is_zero()).then_some(d),
        Some(Err(error)) => {
            tracing::warn!(route = %key, field, %error, "invalid duration; using the global value");
            global
        }
    }
}

fn port_ref(port: Option<i32>, name: Option<&str>) -> PortRef {
    match (port, name) {
        (Some(n), _) => PortRef::Number(n),
        (None, Some(name)) => PortRef::Name(name.to_owned()),
        (None, None) => PortRef::Number(0),
    }
}

/// Backends by key, reused across rebuilds so waiting requests and outstanding counts persist.
#[derive(Default)]
struct Backends(HashMap<BackendKey, Arc<Backend>>);

impl Backends {
    fn get(&mut self, namespace: &str, service: &str, port: PortRef) -> Arc<Backend> {
        let key = BackendKey {
            namespace: namespace.to_owned(),
            service: service.to_owned(),
            port,
        };
        self.0
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Backend::new(key)))
            .clone()
    }
}

/// The inputs of one rebuild.
pub struct Snapshot<'a> {
    /// HTTPScaledObjects.
    pub http_scaled_objects: &'a [Arc<HTTPScaledObject>],
    /// InterceptorRoutes.
    pub interceptor_routes: &'a [Arc<InterceptorRoute>],
    /// Looks up a Service.
    pub service: &'a dyn Fn(&str, &str) -> Option<Arc<Service>>,
    /// EndpointSlices by (namespace, service).
    pub slices: &'a HashMap<(String, String), Vec<Arc<EndpointSlice>>>,
    /// Looks up a ConfigMap labelled for response bodies.
    pub config_map: &'a dyn Fn(&str, &str) -> Option<Arc<ConfigMap>>,
}

/// Builds route tables from watched objects, keeping counters and backends across rebuilds.
pub struct Builder {
    config: Config,
    counts: Arc<Counts>,
    backends: Backends,
    /// Counters of the last built table, published once that table is stored.
    unpublished: Option<HashMap<RouteKey, Arc<RouteCounter>>>,
}

impl Builder {
    /// A builder for `config`, counting into `counts`.
    pub fn new(config: Config, counts: Arc<Counts>) -> Self {
        Self {
            config,
            counts,
            backends: Backends::default(),
            unpublished: None,
        }
    }

    /// Publishes the counters of the last built table on `/queue`; call after storing it.
    pub fn publish(&mut self) {
        if let Some(counters) = self.unpublished.take() {
            self.counts.publish(&counters);
        }
    }

    /// A new table from `snap`; also refreshes every referenced backend's endpoints.
    pub fn build(&mut self, snap: &Snapshot<'_>) -> RouteTable<Arc<RouteEntry>> {
        let keys: Vec<RouteKey> = snap
            .http_scaled_objects
            .iter()
            .map(|o| http_add_on_types::crd::routes::route_key(o.as_ref()))
            .chain(
                snap.interceptor_routes
                    .iter()
                    .map(|o| http_add_on_types::crd::routes::route_key(o.as_ref())),
            )
            .collect();
        let counters = self.counts.prepare(&keys);
        let c = &self.config;
        let mut used: HashMap<BackendKey, Arc<Backend>> = HashMap::new();
        let mut routes = Vec::with_capacity(keys.len());

        for hso in snap.http_scaled_objects {
            let ns = hso.namespace().unwrap_or_default();
            let key = http_add_on_types::crd::routes::route_key(hso.as_ref());
            let target = &hso.spec.scale_target_ref;
            let backend = self.backends.get(
                &ns,
                &target.service,
                port_ref(target.port, target.port_name.as_deref()),
            );
            let failover = hso.spec.cold_start_timeout_failover_ref.as_ref();
            let fallback = failover.map(|f| {
                self.backends
                    .get(&ns, &f.service, port_ref(f.port, f.port_name.as_deref()))
            });
            let timeouts = hso.spec.timeouts.as_ref();
            let readiness_timeout = match failover {
                Some(f) => Some(Duration::from_secs(
                    u64::try_from(f.timeout_seconds.max(1)).unwrap_or(30),
                )),
                None => override_duration(
                    timeouts.and_then(|t| t.condition_wait.as_deref()),
                    c.readiness_timeout,
                    &key,
                    "timeouts.conditionWait",
                ),
            };
            let entry = RouteEntry {
                counter: counters[&key].clone(),
                backend: backend.clone(),
                fallback: fallback.clone(),
                direct: c.direct_pod_routing,
                readiness_timeout,
                request_timeout: c.request_timeout,
                response_header_timeout: override_duration(
                    timeouts.and_then(|t| t.response_header.as_deref()),
                    c.response_header_timeout,
                    &key,
                    "timeouts.responseHeader",
                ),
                placeholder: None,
                max_pending: c.max_pending_requests,
                overflow_placeholder: false,
                static_routes: Vec::new(),
                // No scalingMetric is upstream's targetPendingRequests: concurrency.
                concurrency_only: hso
                    .spec
                    .scaling_metric
                    .as_ref()
                    .is_none_or(|m| m.request_rate.is_none()),
            };
            for b in std::iter::once(backend).chain(fallback) {
                used.insert(b.key().clone(), b);
            }
            routes.push(http_scaled_object_route(hso, Arc::new(entry)));
        }

        for ir in snap.interceptor_routes {
            let ns = ir.namespace().unwrap_or_default();
            let key = http_add_on_types::crd::routes::route_key(ir.as_ref());
            let spec = &ir.spec;
            let backend = self.backends.get(
                &ns,
                &spec.target.service,
                port_ref(spec.target.port, spec.target.port_name.as_deref()),
            );
            let cold = spec.cold_start.as_ref();
            let fallback = cold.and_then(|c| c.fallback.as_ref()).map(|f| {
                self.backends.get(
                    &ns,
                    &f.service.name,
                    port_ref(f.service.port, f.service.port_name.as_deref()),
                )
            });
            let timeouts = spec.timeouts.as_ref();
            let mut readiness_timeout = override_duration(
                timeouts.and_then(|t| t.readiness.as_deref()),
                c.readiness_timeout,
                &key,
                "timeouts.readiness",
            );
            if fallback.is_some() && readiness_timeout.is_none() {
                readiness_timeout = Some(DEFAULT_FALLBACK_READINESS);
            }
            let direct = match spec.proxy_mode {
                Some(ProxyMode::Service) => false,
                Some(ProxyMode::Endpoint) => true,
                None => c.direct_pod_routing,
            };
            let entry = RouteEntry {
                counter: counters[&key].clone(),
                backend: backend.clone(),
                fallback: fallback.clone(),
                direct,
                readiness_timeout,
                request_timeout: override_duration(
                    timeouts.and_then(|t| t.request.as_deref()),
                    c.request_timeout,
                    &key,
                    "timeouts.request",
                ),
                response_header_timeout: override_duration(
                    timeouts.and_then(|t| t.response_header.as_deref()),
                    c.response_header_timeout,
                    &key,
                    "timeouts.responseHeader",
                ),
                placeholder: cold.and_then(|c| c.placeholder.as_ref()).map(|p| {
                    StaticReply::from_spec(
                        &p.response,
                        &key,
                        snap.config_map,
                        http::StatusCode::SERVICE_UNAVAILABLE,
                    )
                }),
                max_pending: match cold.and_then(|c| c.max_pending_requests) {
                    Some(n) => u32::try_from(n).ok().filter(|n| *n > 0),
                    // A placeholder alone is served at once: nothing is held.
                    None if cold.is_some_and(|c| c.placeholder.is_some()) => None,
                    None => c.max_pending_requests,
                },
                overflow_placeholder: cold
                    .and_then(|c| c.overflow)
                    .is_some_and(|o| o == ColdStartOverflow::Placeholder),
                static_routes: spec
                    .static_routes
                    .iter()
                    .map(|s| StaticRoute {
                        rules: s.rules.iter().map(routing_rule).collect(),
                        always: s.response_mode == ResponseMode::Always,
                        reply: StaticReply::from_spec(
                            &s.response,
                            &key,
                            snap.config_map,
                            http::StatusCode::OK,
                        ),
                    })
                    .collect(),
                concurrency_only: spec.scaling_metric.request_rate.is_none(),
            };
            for b in std::iter::once(backend).chain(fallback) {
                used.insert(b.key().clone(), b);
            }
            routes.push(interceptor_route_route(ir, Arc::new(entry)));
        }

        // Refresh every used backend; forget the others.
        for (key, backend) in &used {
            let service = (snap.service)(&key.namespace, &key.service);
            let slices: Vec<&EndpointSlice> = snap
                .slices
                .get(&(key.namespace.clone(), key.service.clone()))
                .map(|v| v.iter().map(AsRef::as_ref).collect())
                .unwrap_or_default();
            backend.set_state(resolve(key, service.as_deref(), &slices));
        }
        self.backends.0.retain(|key, _| used.contains_key(key));
        self.unpublished = Some(counters);
        RouteTable::build(routes)
    }
}

fn api<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs one reflector, bumping `changed` on every event, until the stream ends.
async fn reflect<K>(
    api: Api<K>,
    cfg: watcher::Config,
    writer: reflector::store::Writer<K>,
    changed: Arc<Notify>,
) where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let stream = reflector(writer, watcher(api, cfg).default_backoff());
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(_) => changed.notify_one(),
            Err(error) => tracing::warn!(kind, %error, "watch failed; retrying with backoff"),
        }
    }
}

use kube::runtime::reflector::reflector;

/// What the watch task publishes.
#[derive(Debug, Clone)]
pub struct SyncTargets {
    /// Route counters, kept across rebuilds.
    pub counts: Arc<Counts>,
    /// The table, swapped on every change.
    pub table: Arc<Table>,
    /// Turns true after the first full listing of every watched kind.
    pub synced: Arc<AtomicBool>,
    /// Notified when `synced` turns true.
    pub synced_notify: Arc<Notify>,
    /// Notified after every table swap (held requests re-check their route).
    pub table_changed: Arc<Notify>,
}

/// The reflector caches one rebuild reads.
struct Stores {
    hso: Store<HTTPScaledObject>,
    ir: Store<InterceptorRoute>,
    svc: Store<Service>,
    slices: Store<EndpointSlice>,
    config_maps: Store<ConfigMap>,
}

/// Watches HTTPScaledObjects, InterceptorRoutes, Services, EndpointSlices and response-body
/// ConfigMaps and rebuilds the table on every change, and every `config.resync_period`, until
/// `stop` turns true.
pub async fn run_sync(
    client: kube::Client,
    config: Config,
    targets: SyncTargets,
    mut stop: watch::Receiver<bool>,
) {
    let SyncTargets {
        counts,
        table,
        synced,
        synced_notify,
        table_changed,
    } = targets;
    let ns = config.watch_namespace.clone();
    let changed = Arc::new(Notify::new());
    let (hso_store, hso_writer) = reflector::store::<HTTPScaledObject>();
    let (ir_store, ir_writer) = reflector::store::<InterceptorRoute>();
    let (svc_store, svc_writer) = reflector::store::<Service>();
    let (slice_store, slice_writer) = reflector::store::<EndpointSlice>();
    let (cm_store, cm_writer) = reflector::store::<ConfigMap>();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(reflect(
        api::<ConfigMap>(&client, ns.as_deref()),
        watcher::Config::default().labels(&format!("{RESPONSE_BODY_LABEL}=true")),
        cm_writer,
        changed.clone(),
    ));
    tasks.spawn(reflect(
        api::<HTTPScaledObject>(&client, ns.as_deref()),
        watcher::Config::default(),
        hso_writer,
        changed.clone(),
    ));
    tasks.spawn(reflect(
        api::<InterceptorRoute>(&client, ns.as_deref()),
        watcher::Config::default(),
        ir_writer,
        changed.clone(),
    ));
    tasks.spawn(reflect(
        api::<Service>(&client, ns.as_deref()),
        watcher::Config::default(),
        svc_writer,
        changed.clone(),
    ));
    tasks.spawn(reflect(
        api::<EndpointSlice>(&client, ns.as_deref()),
        watcher::Config::default().labels(SERVICE_NAME_LABEL),
        slice_writer,
        changed.clone(),
    ));

    let all_ready = async {
        let _ = hso_store.wait_until_ready().await;
        let _ = ir_store.wait_until_ready().await;
        let _ = svc_store.wait_until_ready().await;
        let _ = slice_store.wait_until_ready().await;
        let _ = cm_store.wait_until_ready().await;
    };
    tokio::select! {
        _ = all_ready => {}
        _ = crate::stopped(&mut stop) => return,
    }

    let stores = Stores {
        hso: hso_store,
        ir: ir_store,
        svc: svc_store,
        slices: slice_store,
        config_maps: cm_store,
    };
    // Upstream's informer resync, as its nearest meaning here: a full rebuild from the stores
    // every period even without events (one rebuild per period; nothing is re-listed).
    let mut resync = config.resync_period.map(|period| {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks
    });
    let mut builder = Builder::new(config, counts);
    loop {
        rebuild(&mut builder, &stores, &table);
        // Synced before anyone hears of the new table, so a listener woken by it sees both.
        if !synced.swap(true, Ordering::AcqRel) {
            tracing::info!(routes = table.load().len(), "route table synced");
            synced_notify.notify_waiters();
        }
        // Requests held for a cold start re-check their route in the new table.
        table_changed.notify_waiters();
        tokio::select! {
            _ = changed.notified() => {}
            () = next_resync(&mut resync) => tracing::debug!("periodic route table resync"),
            _ = crate::stopped(&mut stop) => break,
        }
        // Coalesce a burst of events into one rebuild without delaying the first.
        while changed.notified().now_or_never().is_some() {}
    }
    tasks.abort_all();
}

/// The next resync tick; never when resync is off.
async fn next_resync(resync: &mut Option<tokio::time::Interval>) {
    match resync {
        Some(ticks) => {
            ticks.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn rebuild(builder: &mut Builder, stores: &Stores, table: &Table) {
    let mut by_service: HashMap<(String, String), Vec<Arc<EndpointSlice>>> = HashMap::new();
    for slice in stores.slices.state() {
        let Some(service) = slice.labels().get(SERVICE_NAME_LABEL).cloned() else {
            continue;
        };
        by_service
            .entry((slice.namespace().unwrap_or_default(), service))
            .or_default()
            .push(slice);
    }
    let lookup = |ns: &str, name: &str| stores.svc.get(&ObjectRef::new(name).within(ns));
    let config_map =
        |ns: &str, name: &str| stores.config_maps.get(&ObjectRef::new(name).within(ns));
    let hsos = stores.hso.state();
    let irs = stores.ir.state();
    let snap = Snapshot {
        http_scaled_objects: &hsos,
        interceptor_routes: &irs,
        service: &lookup,
        slices: &by_service,
        config_map: &config_map,
    };
    table.store(builder.build(&snap));
    builder.publish();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_route_host_and_path_matching() {
        assert!(host_matches("*.example.com", "a.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(host_matches("Example.com", "example.com"));
        assert_eq!(host_without_port("a.b:8080"), "a.b");
        assert_eq!(host_without_port("[::1]:80"), "::1");
        let route = StaticRoute {
            rules: vec![RouteRule {
                hosts: vec!["*.example.com".into()],
                paths: vec!["/maintenance".into()],
                headers: vec![],
            }],
            always: true,
            reply: StaticReply {
                status: http::StatusCode::SERVICE_UNAVAILABLE,
                headers: HeaderMap::new(),
                body: ReplyBody::Inline(bytes::Bytes::new()),
            },
        };
        assert!(route.matches("x.example.com:80", "/maintenance/now", &HeaderMap::new()));
        assert!(!route.matches("x.example.com", "/other", &HeaderMap::new()));
    }

    #[test]
    fn config_map_keys_from_paths() {
        assert_eq!(key_for_path("/"), "index.html");
        assert_eq!(key_for_path(""), "index.html");
        assert_eq!(key_for_path("/app.css"), "app.css");
        assert_eq!(key_for_path("/static/app.css"), "static/app.css");
        assert_eq!(content_type_for("font.woff2"), Some("font/woff2"));
        assert_eq!(content_type_for("photo.JPG"), Some("image/jpeg"));
        assert_eq!(content_type_for("app.CSS"), Some("text/css; charset=utf-8"));
        assert_eq!(content_type_for("README"), None);
    }

    #[test]
    fn route_overrides() {
        let key = RouteKey::new("a", "b");
        let global = Some(Duration::from_secs(9));
        assert_eq!(override_duration(None, global, &key, "f"), global);
        assert_eq!(override_duration(Some("0s"), global, &key, "f"), None);
        assert_eq!(
            override_duration(Some("2s"), global, &key, "f"),
            Some(Duration::from_secs(2))
        );
        assert_eq!(override_duration(Some("bad"), global, &key, "f"), global);
    }
}
