//! The check endpoint (`KEDA_HTTP_CHECK_PORT`): admission checks from an ingress that stays on
//! the data path and asks the add-on only to count a request and to wake its app.
//!
//! It speaks the contract nginx `auth_request`, Envoy's HTTP `ext_authz` and Traefik's
//! `forwardAuth` already use: a bodiless request naming the original request, answered 2xx to
//! let it through. The original request is read from, in this order:
//! - method: `X-Original-Method` (nginx), `X-Forwarded-Method` (Traefik), the check's own;
//! - path: `X-Original-URI` (nginx), `X-Original-URL` (ingress-nginx's `auth-url`, an absolute
//!   URL), `X-Forwarded-Uri` (Traefik), the check's own path
//!   without `KEDA_HTTP_CHECK_PATH_PREFIX` (Envoy forwards the original path after its
//!   `path_prefix`); the query is not part of routing;
//! - host: `X-Original-Host`, the host of `X-Original-URL`, `X-Forwarded-Host` (Traefik),
//!   `Host` (Envoy forwards the original one).
//!
//! Everything else is the request policy's ([`crate::request`]), as for proxied requests: the
//! route (a 404 for none; static routes and placeholders answer with their reply), the count
//! (in flight while the answer is held, settled when it is given), the cold-start hold with its
//! readiness timeout (504) and metrics. A warm route answers 200 at once with
//! `X-Keda-Http-Endpoint: <ip>:<port>`, the endpoint the proxy would pick, for an ingress that
//! routes to it directly. Since the check sees arrivals and not how long requests run, routes
//! reached only through checks scale by request rate, not concurrency.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::headers::COLD_START;
use crate::metrics::method_label;
use crate::request::{Admission, Attempts, Deadlines, Policy, Reply, Route};
use crate::routes::RouteEntry;

/// The response header naming the ready endpoint (`ip:port`) a warm check chose.
pub static ENDPOINT: HeaderName = HeaderName::from_static("x-keda-http-endpoint");

static ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
static ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
static ORIGINAL_HOST: HeaderName = HeaderName::from_static("x-original-host");
static ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
static FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
static FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
static FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The request a check asks about.
#[derive(Debug, PartialEq, Eq)]
struct Original<'a> {
    method: Method,
    host: &'a str,
    path: &'a str,
}

/// The first of `names` in `headers` with a non-empty text value, trimmed.
fn first<'a>(headers: &'a HeaderMap, names: &[&HeaderName]) -> Option<&'a str> {
    names
        .iter()
        .filter_map(|name| headers.get(*name)?.to_str().ok())
        .map(str::trim)
        .find(|value| !value.is_empty())
}

/// The original method, host and path of a check request, or the 400 that says why not.
fn original<'a>(
    method: &Method,
    uri: &'a http::Uri,
    headers: &'a HeaderMap,
    prefix: &str,
) -> Result<Original<'a>, Reply> {
    let bad = |message: String| Reply::error(StatusCode::BAD_REQUEST, message);
    let method = match first(headers, &[&ORIGINAL_METHOD, &FORWARDED_METHOD]) {
        Some(name) => Method::from_bytes(name.as_bytes())
            .map_err(|_| bad(format!("check: {name:?} is not an HTTP method")))?,
        None => method.clone(),
    };
    let (authority, path) = match first(headers, &[&ORIGINAL_URI, &ORIGINAL_URL, &FORWARDED_URI]) {
        Some(target) => {
            // An absolute URL (ingress-nginx's X-Original-URL, or an absolute-form target)
            // names its host before its path.
            let (authority, rest) = match target.split_once("://") {
                Some((_, rest)) => {
                    let at = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                    let path = if rest[at..].starts_with('/') {
                        &rest[at..]
                    } else {
                        "/"
                    };
                    (Some(&rest[..at]).filter(|a| !a.is_empty()), path)
                }
                None => (None, target),
            };
            let path = rest.split(['?', '#']).next().unwrap_or_default();
            if !path.starts_with('/') {
                return Err(bad(format!(
                    "check: the original URI {target:?} is not a path"
                )));
            }
            (authority, path)
        }
        None => (
            None,
            match uri.path().strip_prefix(prefix) {
                Some("") => "/",
                Some(rest) if rest.starts_with('/') => rest,
                _ => {
                    return Err(bad(format!(
                        "check: no X-Original-URI, X-Original-URL or X-Forwarded-Uri, and the path \
                     {:?} does not start with the check path prefix {prefix:?}",
                        uri.path()
                    )));
                }
            },
        ),
    };
    let host = first(headers, &[&ORIGINAL_HOST])
        .or(authority)
        // Behind several proxies X-Forwarded-Host may list hosts: the first is the client's.
        .or_else(|| first(headers, &[&FORWARDED_HOST]))
        .map(|hosts| hosts.split(',').next().unwrap_or_default().trim())
        .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()))
        .or_else(|| uri.authority().map(http::uri::Authority::as_str))
        .unwrap_or_default();
    Ok(Original { method, host, path })
}

/// `reply` as the check's answer.
fn response(reply: Reply, cold: Option<bool>, policy: &Policy) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(reply.body));
    *response.status_mut() = reply.status;
    *response.headers_mut() = *reply.headers;
    if let Some(cold) = cold
        && policy.config.enable_cold_start_header
    {
        response.headers_mut().insert(
            COLD_START.clone(),
            HeaderValue::from_static(if cold { "true" } else { "false" }),
        );
    }
    if policy.draining() {
        // As on the proxy port: clients stop reusing the connection before the listener closes.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Routes scaled by concurrency alone that checks reached, each warned about once: a check
/// counts an arrival and is in flight only while held, so it cannot drive concurrency.
#[derive(Default)]
struct Warned(std::sync::Mutex<std::collections::HashSet<String>>);

impl Warned {
    fn once(&self, entry: &RouteEntry) {
        let key = entry.counter.key().to_string();
        let mut warned = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if warned.insert(key.clone()) {
            tracing::warn!(
                route = key,
                "admission checks reach a route scaled by concurrency only; checks see arrivals, \
                 not how long requests run: scale it by requestRate"
            );
        }
    }
}

/// Answers one check request from `remote`.
async fn answer(
    policy: &Arc<Policy>,
    warned: &Warned,
    remote: SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let start = Instant::now();
    let (parts, _body) = req.into_parts();
    let original = match original(
        &parts.method,
        &parts.uri,
        &parts.headers,
        &policy.config.check_path_prefix,
    ) {
        Ok(original) => original,
        Err(reply) => return response(reply, None, policy),
    };
    let Original { method, host, path } = original;
    let entry = match policy.route(remote, host, path, &parts.headers) {
        Route::Reply(reply) => return response(reply, None, policy),
        Route::Forward(entry) => entry,
    };
    if entry.concurrency_only {
        warned.once(&entry);
    }
    let method = method_label(&method);
    let mut tally = policy.count(&entry, method, remote, start);
    let deadlines = Deadlines::new(&entry, start);
    let labels = entry.counter.clone();
    let (reply, cold) = match policy
        .admit(entry, host, path, &parts.headers, &deadlines)
        .await
    {
        Admission::Forward {
            entry,
            backend,
            cold,
        } => {
            let mut reply = Reply {
                status: StatusCode::OK,
                headers: Box::default(),
                body: Bytes::new(),
            };
            // The endpoint the proxy would try first (least outstanding; the Service address
            // without direct pod routing); none when it went away since admission.
            if let Ok(upstream) = Attempts::new(&entry, &backend).next(&entry, &backend)
                && let Ok(value) = HeaderValue::from_str(&upstream.addr().to_string())
            {
                reply.headers.insert(ENDPOINT.clone(), value);
            }
            (reply, cold)
        }
        Admission::Reply(reply) => (reply, true),
    };
    let status = reply.status.as_u16();
    tally.cold(cold);
    tally.settle(status);
    policy.metrics.record_check(labels.labels(), method, status);
    response(reply, Some(cold), policy)
}

/// Serves admission checks on `listener` until `stop` (graceful) or `force`; every connection
/// holds a `conns` receiver until it ends, as proxy connections do (a held check is a request
/// in flight: shutdown drains it).
pub(crate) async fn serve(
    listener: TcpListener,
    policy: Arc<Policy>,
    stop: watch::Receiver<bool>,
    force: watch::Receiver<bool>,
    conns: watch::Receiver<()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(policy.config.header_read_timeout)
        .max_buf_size(policy.config.max_header_bytes)
        .keep_alive(true);
    let builder = Arc::new(builder.http1_only());
    let warned = Arc::new(Warned::default());
    crate::serve(
        "check",
        listener,
        builder,
        move |remote| {
            let (policy, warned) = (policy.clone(), warned.clone());
            service_fn(move |req| {
                let (policy, warned) = (policy.clone(), warned.clone());
                async move { Ok::<_, Infallible>(answer(&policy, &warned, remote, req).await) }
            })
        },
        stop,
        force,
        conns,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(method: &str, target: &str, headers: &[(&str, &str)], prefix: &str) -> String {
        let mut builder = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(target);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let (parts, ()) = builder.body(()).unwrap().into_parts();
        match original(&parts.method, &parts.uri, &parts.headers, prefix) {
            Ok(o) => format!("{} {} {}", o.method, o.host, o.path),
            Err(reply) => format!("{}", reply.status.as_u16()),
        }
    }

    #[test]
    fn each_header_convention_names_the_original_request() {
        // nginx auth_request: a GET subrequest with the original in X-Original-*.
        let nginx = [
            ("host", "keda-check"),
            ("x-original-method", "POST"),
            ("x-original-uri", "/api/items?page=2"),
            ("x-original-host", "app.example.com"),
        ];
        assert_eq!(
            read("GET", "/_keda_check", &nginx, ""),
            "POST app.example.com /api/items"
        );
        // nginx with `proxy_set_header Host $host` instead of X-Original-Host.
        let nginx_host = [("host", "app.example.com"), ("x-original-uri", "/a")];
        assert_eq!(
            read("GET", "/_keda_check", &nginx_host, ""),
            "GET app.example.com /a"
        );
        // Traefik forwardAuth: X-Forwarded-*.
        let traefik = [
            ("host", "keda-check:9091"),
            ("x-forwarded-method", "DELETE"),
            ("x-forwarded-uri", "/v1/x#frag"),
            ("x-forwarded-host", "shop.example.com, edge.example.com"),
        ];
        assert_eq!(
            read("GET", "/", &traefik, ""),
            "DELETE shop.example.com /v1/x"
        );
        // Envoy ext_authz: the request itself, after the configured path prefix.
        let envoy = [("host", "app.example.com")];
        assert_eq!(
            read("PUT", "/keda/items/7?x=1", &envoy, "/keda"),
            "PUT app.example.com /items/7"
        );
        assert_eq!(
            read("GET", "/keda", &envoy, "/keda"),
            "GET app.example.com /"
        );
        assert_eq!(
            read("GET", "/items", &envoy, ""),
            "GET app.example.com /items"
        );
        // X-Original-* wins over X-Forwarded-*, which wins over the request itself.
        let both = [
            ("host", "h3"),
            ("x-forwarded-host", "h2"),
            ("x-original-host", "h1"),
            ("x-forwarded-uri", "/two"),
            ("x-original-uri", "/one"),
        ];
        assert_eq!(read("GET", "/", &both, ""), "GET h1 /one");
        // An absolute-form original target.
        let absolute = [("host", "a.test"), ("x-original-uri", "http://a.test/p?q")];
        assert_eq!(read("GET", "/", &absolute, ""), "GET a.test /p");
        // ingress-nginx's auth-url: the whole original URL, Host naming the check service.
        let ingress_nginx = [
            ("host", "keda-add-ons-http-interceptor-proxy.keda"),
            ("x-original-method", "PATCH"),
            ("x-original-url", "https://shop.example.com:8443/cart?id=1"),
        ];
        assert_eq!(
            read("GET", "/", &ingress_nginx, ""),
            "PATCH shop.example.com:8443 /cart"
        );
        let bare = [
            ("host", "x"),
            ("x-original-url", "http://shop.example.com?q"),
        ];
        assert_eq!(read("GET", "/", &bare, ""), "GET shop.example.com /");
        // An empty header is no header.
        let empty = [
            ("host", "h"),
            ("x-original-host", ""),
            ("x-original-uri", " "),
        ];
        assert_eq!(read("GET", "/p", &empty, ""), "GET h /p");
    }

    #[test]
    fn malformed_checks_are_bad_requests() {
        assert_eq!(read("GET", "/other", &[("host", "a")], "/keda"), "400");
        assert_eq!(read("GET", "/kedax", &[("host", "a")], "/keda"), "400");
        assert_eq!(
            read("GET", "/", &[("x-original-uri", "not-a-path")], ""),
            "400"
        );
        assert_eq!(
            read("GET", "/", &[("x-original-method", "GE T")], ""),
            "400"
        );
    }
}
