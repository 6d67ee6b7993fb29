//! The REST layer: path routing, request decoding, responses and watch streams.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::Shared;
use super::discovery;
use super::error::{ApiError, ApiResult};
use super::openapi;
use super::ops::{DeleteOptions, ListOptions, Sub, WriteOptions};
use super::patch::{self, PatchKind};
use super::protobuf;
use super::registry::ResourceType;
use super::selector::{FieldSelector, LabelSelector};
use super::store::{Event, EventType};

/// How often an idle watch with `allowWatchBookmarks` gets a BOOKMARK.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(2);

/// The router serving the whole API.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn accept(headers: &HeaderMap) -> &str {
    headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .unwrap_or("")
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.status_code(), &e.to_status())
}

/// Query parameters, decoded.
#[derive(Debug, Default)]
struct Params(Vec<(String, String)>);

impl Params {
    fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }
}

/// A request for a resource, parsed from the path.
#[derive(Debug)]
struct ResourcePath {
    group: String,
    version: String,
    namespace: Option<String>,
    plural: String,
    name: Option<String>,
    sub: Option<String>,
    watch_prefix: bool,
}

fn parse_resource_path(group: &str, version: &str, rest: &[&str]) -> Option<ResourcePath> {
    let (watch_prefix, rest) = match rest.first() {
        Some(&"watch") => (true, &rest[1..]),
        _ => (false, rest),
    };
    let (namespace, rest) = if rest.len() >= 3
        && rest[0] == "namespaces"
        && !(rest.len() == 3 && matches!(rest[2], "status" | "finalize"))
    {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    if rest.is_empty() || rest.len() > 3 {
        return None;
    }
    Some(ResourcePath {
        group: group.into(),
        version: version.into(),
        namespace,
        plural: rest[0].into(),
        name: rest.get(1).map(|s| s.to_string()),
        sub: rest.get(2).map(|s| s.to_string()),
        watch_prefix,
    })
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Response {
    let params = Params(query);
    let path = uri.path().to_string();
    tracing::debug!(%method, %uri, "request");
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let resource = match segs.as_slice() {
        [] => {
            return json_response(
                StatusCode::OK,
                &discovery::root_paths(&shared.lock().registry),
            );
        }
        ["version"] => return json_response(StatusCode::OK, &discovery::version()),
        ["healthz" | "livez" | "readyz", ..] => return (StatusCode::OK, "ok").into_response(),
        ["api" | "apis"] if discovery::wants_aggregated(accept(&headers)) => {
            let doc = discovery::aggregated(&shared.lock().registry, segs[0] == "api");
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, discovery::AGGREGATED_DISCOVERY)],
                doc.to_string(),
            )
                .into_response();
        }
        ["api"] => {
            return json_response(
                StatusCode::OK,
                &discovery::core_versions(&shared.addr_string()),
            );
        }
        ["apis"] => {
            return json_response(
                StatusCode::OK,
                &discovery::group_list(&shared.lock().registry),
            );
        }
        ["api", v] => {
            return discovery_or_404(
                discovery::resource_list(&shared.lock().registry, "", v),
                &path,
            );
        }
        ["apis", g] => {
            return discovery_or_404(discovery::group(&shared.lock().registry, g), &path);
        }
        ["apis", g, v] => {
            return discovery_or_404(
                discovery::resource_list(&shared.lock().registry, g, v),
                &path,
            );
        }
        ["openapi", "v2"] if !accept(&headers).contains("protobuf") => {
            return json_response(StatusCode::OK, &openapi::v2(&shared.lock().registry));
        }
        ["openapi", "v3"] => {
            return json_response(StatusCode::OK, &openapi::v3_root(&shared.lock().registry));
        }
        ["openapi", "v3", "api", v] => {
            return discovery_or_404(openapi::v3_group(&shared.lock().registry, "", v), &path);
        }
        ["openapi", "v3", "apis", g, v] => {
            return discovery_or_404(openapi::v3_group(&shared.lock().registry, g, v), &path);
        }
        ["openapi", "v2"] => {
            // Protobuf (what client-go asks for) stays an empty message, a valid, empty
            // OpenAPI v2 document: kubectl then finds no schema for any type and skips
            // client-side validation. JSON clients get the schemas.
            return (
                StatusCode::OK,
                [(
                    header::CONTENT_TYPE,
                    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                )],
                Bytes::new(),
            )
                .into_response();
        }
        ["api", v, rest @ ..] => parse_resource_path("", v, rest),
        ["apis", g, v, rest @ ..] => parse_resource_path(g, v, rest),
        _ => None,
    };
    let Some(rp) = resource else {
        return error_response(&ApiError::no_route(&path));
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|c| c.to_str().ok())
        .unwrap_or("");
    let mut body = body;
    if !body.is_empty() && (content_type.contains("protobuf") || content_type.contains("cbor")) {
        // JSON (and YAML) are spoken here, plus the protobuf of the few types kubectl's
        // generators send that way; anything else gets a 415.
        match protobuf::decode(&body) {
            Some(obj) if content_type.contains("protobuf") => body = Bytes::from(obj.to_string()),
            _ => return error_response(&ApiError::unsupported_media_type(content_type)),
        }
    }
    let result = serve_resource(&shared, &method, &headers, &params, rp, body);
    if method != Method::GET {
        // Any write may have deleted something (finalizer removal, namespace or CRD deletion).
        shared.gc_notify.notify_one();
    }
    match result {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%method, %uri, code = e.code, message = %e.message, "request failed");
            error_response(&e)
        }
    }
}

fn discovery_or_404(doc: Option<Value>, path: &str) -> Response {
    match doc {
        Some(d) => json_response(StatusCode::OK, &d),
        None => error_response(&ApiError::no_route(path)),
    }
}

fn decode_body(body: &Bytes) -> ApiResult<Value> {
    if body.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body).or_else(|_| {
        serde_yaml::from_slice::<Value>(body)
            .map_err(|e| ApiError::bad_request(format!("unable to decode the request body: {e}")))
    })
}

fn write_options(params: &Params, headers: &HeaderMap) -> WriteOptions {
    WriteOptions {
        field_manager: params
            .get("fieldManager")
            .filter(|m| !m.is_empty())
            .map(String::from),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|u| u.to_str().ok())
            .map(String::from),
        applied: false,
        force: params.flag("force"),
        dry_run: params.get("dryRun") == Some("All"),
    }
}

fn selectors(params: &Params, rt: &ResourceType) -> ApiResult<(LabelSelector, FieldSelector)> {
    Ok((
        LabelSelector::parse(params.get("labelSelector").unwrap_or_default())?,
        FieldSelector::parse(params.get("fieldSelector").unwrap_or_default())?.for_type(rt)?,
    ))
}

fn list_options(params: &Params) -> ApiResult<ListOptions> {
    let limit = params
        .get("limit")
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))
        })
        .transpose()?;
    Ok(ListOptions {
        limit,
        continue_token: params
            .get("continue")
            .filter(|c| !c.is_empty())
            .map(String::from),
        resource_version: params.get("resourceVersion").map(String::from),
        resource_version_match: params
            .get("resourceVersionMatch")
            .filter(|m| !m.is_empty())
            .map(String::from),
    })
}

fn serve_resource(
    shared: &Arc<Shared>,
    method: &Method,
    headers: &HeaderMap,
    params: &Params,
    rp: ResourcePath,
    body: Bytes,
) -> ApiResult<Response> {
    let rt = shared
        .lock()
        .registry
        .get(&rp.group, &rp.plural)
        .filter(|t| t.serves(&rp.version))
        .ok_or_else(|| ApiError::no_route(&format!("{}/{}", rp.group, rp.plural)))?;
    if rp.namespace.is_some() && !rt.namespaced {
        return Err(ApiError::no_route(&rp.plural));
    }
    let ns = rp.namespace.as_deref();
    let v = rp.version.as_str();
    let accept = accept(headers);
    let table = discovery::wants_table(accept);
    let partial = discovery::wants_partial_metadata(accept);
    let include_object = params
        .get("includeObject")
        .unwrap_or("Metadata")
        .to_string();
    if rt.create_only {
        return match (method, &rp.name) {
            (&Method::POST, None) => {
                let c = shared.lock();
                let review = shared
                    .reviews
                    .review(&c, &rt, ns, headers, &decode_body(&body)?)?;
                Ok(json_response(StatusCode::CREATED, &review))
            }
            _ => Err(ApiError::method_not_allowed()),
        };
    }
    if rt.group.is_empty() && rt.plural == "serviceaccounts" && rp.sub.as_deref() == Some("token") {
        return match (method, &rp.name, ns) {
            (&Method::POST, Some(name), Some(ns)) => {
                let c = shared.lock();
                let token = shared
                    .reviews
                    .token_request(&c, ns, name, &decode_body(&body)?)?;
                Ok(json_response(StatusCode::CREATED, &token))
            }
            _ => Err(ApiError::method_not_allowed()),
        };
    }
    let sub = match rp.sub.as_deref() {
        None => None,
        Some("status") if rt.status => Some(Sub::Status),
        Some("ephemeralcontainers") if rt.group.is_empty() && rt.plural == "pods" => {
            Some(Sub::EphemeralContainers)
        }
        Some("approval") if rt.plural == "certificatesigningrequests" => Some(Sub::Approval),
        Some("scale") if rt.scale.is_some() => None,
        Some(other) => return Err(ApiError::no_route(other)),
    };
    let is_scale = rp.sub.as_deref() == Some("scale");
    // Objects (and lists) as metadata only when the client asks for PartialObjectMetadata.
    // A mismatch (one object asked as a list, or the reverse) is a 406, as in Kubernetes.
    let shape = |v: Value| -> ApiResult<Value> {
        let is_list = v.get("items").is_some();
        match partial {
            _ if v.get("kind").and_then(Value::as_str) == Some("Status") => Ok(v),
            None => Ok(v),
            Some(true) if is_list => Ok(discovery::partial_metadata_list(&v)),
            Some(false) if !is_list => Ok(discovery::partial_metadata(&v)),
            Some(true) => Err(ApiError::not_acceptable(
                "you requested PartialObjectMetadataList, but the requested object is not a list (*unstructured.Unstructured)",
            )),
            Some(false) => Err(ApiError::not_acceptable(
                "you requested PartialObjectMetadata, but the requested object is a list (*unstructured.UnstructuredList)",
            )),
        }
    };
    let ok = |v: Value| Ok(json_response(StatusCode::OK, &shape(v)?));
    let as_table = |obj: Value| -> Value {
        if table {
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            discovery::table(&rt, v, &[obj], &rv, true, &include_object)
        } else {
            obj
        }
    };
    match (method.clone(), rp.name.as_deref()) {
        (Method::GET, None) if rp.watch_prefix || params.flag("watch") => watch(
            shared.clone(),
            rt.clone(),
            rp,
            params,
            table,
            include_object,
            partial.is_some(),
        ),
        (Method::GET, None) => {
            let (labels, fields) = selectors(params, &rt)?;
            let list = shared
                .lock()
                .list(&rt, v, ns, &labels, &fields, &list_options(params)?)?;
            if table {
                let items = list["items"].as_array().cloned().unwrap_or_default();
                let rv = list
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                return ok(discovery::table(&rt, v, &items, &rv, true, &include_object));
            }
            ok(list)
        }
        (Method::GET, Some(name)) if rp.watch_prefix || params.flag("watch") => {
            let mut p = Params(params.0.clone());
            p.0.push(("fieldSelector".into(), format!("metadata.name={name}")));
            watch(
                shared.clone(),
                rt.clone(),
                ResourcePath { name: None, ..rp },
                &p,
                table,
                include_object,
                partial.is_some(),
            )
        }
        (Method::GET, Some(name)) if is_scale => ok(shared.lock().get_scale(&rt, ns, name)?),
        (Method::GET, Some(name)) => ok(as_table(shared.lock().get(&rt, v, ns, name)?)),
        (Method::POST, None) => {
            let obj = shared.lock().create(
                &rt,
                v,
                ns,
                decode_body(&body)?,
                &write_options(params, headers),
            )?;
            Ok(json_response(StatusCode::CREATED, &shape(obj)?))
        }
        (Method::PUT, Some(name)) if is_scale => ok(shared.lock().write_scale(
            &rt,
            v,
            ns,
            name,
            decode_body(&body)?,
            None,
            &write_options(params, headers),
        )?),
        (Method::PUT, Some(name)) => ok(shared.lock().replace(
            &rt,
            v,
            ns,
            name,
            decode_body(&body)?,
            sub.unwrap_or(Sub::Main),
            &write_options(params, headers),
        )?),
        (Method::PATCH, Some(name)) => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|c| c.to_str().ok())
                .unwrap_or("");
            let kind = PatchKind::from_content_type(ct)?;
            if rt.custom && kind == PatchKind::Strategic {
                return Err(ApiError::unsupported_patch_type(
                    &patch::CUSTOM_RESOURCE_PATCH_TYPES,
                ));
            }
            let body = decode_body(&body)?;
            let opts = write_options(params, headers);
            let mut c = shared.lock();
            if is_scale {
                return ok(c.write_scale(&rt, v, ns, name, body, Some(kind), &opts)?);
            }
            let existed = c.get(&rt, v, ns, name).is_ok();
            let obj = c.patch(
                &rt,
                v,
                ns,
                name,
                kind,
                body,
                sub.unwrap_or(Sub::Main),
                &opts,
            )?;
            Ok(json_response(
                if existed {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                },
                &shape(obj)?,
            ))
        }
        (Method::DELETE, name) => {
            let body = decode_body(&body)?;
            let opts = DeleteOptions {
                propagation: body
                    .get("propagationPolicy")
                    .and_then(Value::as_str)
                    .or(params.get("propagationPolicy"))
                    .map(String::from)
                    .or_else(|| {
                        (body.get("orphanDependents").and_then(Value::as_bool) == Some(true))
                            .then(|| "Orphan".into())
                    }),
                uid: body
                    .pointer("/preconditions/uid")
                    .and_then(Value::as_str)
                    .map(String::from),
                resource_version: body
                    .pointer("/preconditions/resourceVersion")
                    .and_then(Value::as_str)
                    .map(String::from),
                dry_run: params.get("dryRun") == Some("All")
                    || body
                        .get("dryRun")
                        .is_some_and(|d| d.as_array().is_some_and(|a| !a.is_empty())),
            };
            let mut c = shared.lock();
            let out = match name {
                Some(name) => c.delete(&rt, v, ns, name, &opts)?,
                None => {
                    let (labels, fields) = selectors(params, &rt)?;
                    c.delete_collection(&rt, v, ns, &labels, &fields, &opts)
                }
            };
            drop(c);
            ok(out)
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// Whether a watch event passes the watch's filters.
struct WatchFilter {
    group: String,
    plural: String,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl WatchFilter {
    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }

    /// The event type to send for a stored event, if any (objects moving in or out of the
    /// selection appear as ADDED / DELETED, as in the real API server).
    fn translate(&self, ev: &Event) -> Option<EventType> {
        if ev.key.group != self.group || ev.key.plural != self.plural {
            return None;
        }
        if self
            .namespace
            .as_ref()
            .is_some_and(|n| *n != ev.key.namespace)
        {
            return None;
        }
        let now = self.matches(&ev.object);
        match ev.kind {
            EventType::Modified => {
                let before = ev.old.as_ref().is_some_and(|o| self.matches(o));
                match (before, now) {
                    (true, true) => Some(EventType::Modified),
                    (false, true) => Some(EventType::Added),
                    (true, false) => Some(EventType::Deleted),
                    (false, false) => None,
                }
            }
            kind => now.then_some(kind),
        }
    }
}

struct WatchEncoder {
    rt: Arc<ResourceType>,
    version: String,
    table: bool,
    include_object: String,
    sent_columns: bool,
    /// Objects as `PartialObjectMetadata` (a metadata-only watch).
    partial: bool,
}

impl WatchEncoder {
    fn line(&mut self, typ: &str, obj: &Value) -> Bytes {
        let mut object = super::ops::Cluster::render(&self.rt, &self.version, obj);
        if self.table && typ != "BOOKMARK" && typ != "ERROR" {
            let rv = object
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            object = discovery::table(
                &self.rt,
                &self.version,
                &[object],
                &rv,
                !self.sent_columns,
                &self.include_object,
            );
            self.sent_columns = true;
        }
        if self.partial && !self.table && typ != "BOOKMARK" && typ != "ERROR" {
            object = discovery::partial_metadata(&object);
        }
        if typ == "ERROR" {
            object = obj.clone();
        }
        let mut line =
            serde_json::to_vec(&json!({"type": typ, "object": object})).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    }

    fn bookmark(&mut self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        self.line("BOOKMARK", &json!({"metadata": meta}))
    }
}

fn watch(
    shared: Arc<Shared>,
    rt: Arc<ResourceType>,
    rp: ResourcePath,
    params: &Params,
    table: bool,
    include_object: String,
    partial: bool,
) -> ApiResult<Response> {
    let (labels, fields) = selectors(params, &rt)?;
    let filter = WatchFilter {
        group: rt.group.clone(),
        plural: rt.plural.clone(),
        namespace: rp.namespace.clone(),
        labels,
        fields,
    };
    let bookmarks = params.flag("allowWatchBookmarks");
    let send_initial = params.flag("sendInitialEvents");
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    let requested = params
        .get("resourceVersion")
        .filter(|r| !r.is_empty() && *r != "0");
    let mut enc = WatchEncoder {
        rt: rt.clone(),
        version: rp.version.clone(),
        table,
        include_object,
        sent_columns: false,
        partial,
    };
    let mut stopped = shared.stopping.subscribe();

    // Snapshot and subscribe under one lock, so no event is missed or duplicated.
    let (initial, mut rx, start_rv) = {
        let c = shared.lock();
        let start_rv = c.store.rv();
        let rx = c.store.subscribe();
        let initial: Result<Vec<(EventType, Arc<Value>)>, ApiError> = match requested {
            Some(rv) if !send_initial => {
                let rv: u64 = rv.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))
                })?;
                if rv < c.store.compacted() {
                    Err(ApiError::gone(rv, c.store.compacted() + 1))
                } else {
                    Ok(c.store
                        .history_after(rv)
                        .filter_map(|ev| filter.translate(ev).map(|t| (t, ev.object.clone())))
                        .collect())
                }
            }
            _ => Ok(c
                .store
                .list(&rt.group, &rt.plural, rp.namespace.as_deref())
                .filter(|(_, o)| filter.matches(o))
                .map(|(_, o)| (EventType::Added, Arc::new(o.clone())))
                .collect()),
        };
        (initial, rx, start_rv)
    };

    let (tx, body_rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    tokio::spawn(async move {
        let initial = match initial {
            Ok(i) => i,
            Err(e) => {
                let _ = tx.send(Ok(enc.line("ERROR", &e.to_status()))).await;
                return;
            }
        };
        for (t, obj) in initial {
            if tx.send(Ok(enc.line(t.as_str(), &obj))).await.is_err() {
                return;
            }
        }
        let mut last_rv = start_rv;
        if send_initial && tx.send(Ok(enc.bookmark(last_rv, true))).await.is_err() {
            return;
        }
        let deadline = tokio::time::sleep(timeout.unwrap_or(Duration::from_secs(3600)));
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(BOOKMARK_INTERVAL);
        ticker.tick().await;
        loop {
            let line = tokio::select! {
                () = &mut deadline => return,
                () = tx.closed() => return,
                _ = stopped.changed() => return,
                _ = ticker.tick() => {
                    if !bookmarks { continue; }
                    enc.bookmark(last_rv, false)
                }
                ev = rx.recv() => match ev {
                    Ok(ev) => {
                        last_rv = ev.rv;
                        match filter.translate(&ev) {
                            Some(t) => enc.line(t.as_str(), &ev.object),
                            None => continue,
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let e = ApiError::gone(last_rv, last_rv + 1);
                        let _ = tx.send(Ok(enc.line("ERROR", &e.to_status()))).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
        }
    });
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(ReceiverStream::new(body_rx)),
    )
        .into_response())
}
