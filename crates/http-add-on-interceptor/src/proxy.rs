//! The proxy handler: route lookup, counting, cold-start hold, forwarding.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::time::Instant;

use crate::backends::{Backend, Outstanding, Readiness, Upstream};
use crate::config::Config;
use crate::counts::{InFlight, RouteCounter};
use crate::headers::{self, COLD_START};
use crate::metrics::{Metrics, method_label};
use crate::routes::{RouteEntry, StaticReply, Table};

/// How many endpoints a request tries when connecting fails before it was sent.
pub(crate) const MAX_CONNECT_ATTEMPTS: usize = 3;

/// Errors forwarding a body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every proxy response: the backend's streamed body or a small local one, plus
/// the guards that count the request out when the body is finished or dropped.
pub struct ProxyBody {
    inner: Inner,
    _done: Option<Completion>,
    _active: Option<crate::idle::Active>,
}

enum Inner {
    Upstream(Incoming),
    Full(Option<Bytes>),
}

impl ProxyBody {
    fn full(bytes: impl Into<Bytes>) -> Self {
        Self {
            inner: Inner::Full(Some(bytes.into())),
            _done: None,
            _active: None,
        }
    }

    /// Keeps the connection counted as busy until this body is finished or dropped.
    pub(crate) fn hold(&mut self, active: crate::idle::Active) {
        self._active = Some(active);
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.inner {
            Inner::Upstream(body) => Pin::new(body).poll_frame(cx),
            Inner::Full(bytes) => Poll::Ready(
                bytes
                    .take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream(body) => body.is_end_stream(),
            Inner::Full(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(body) => body.size_hint(),
            Inner::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

/// Counts a request out and records its metrics when dropped.
struct Completion {
    in_flight: InFlight,
    _outstanding: Option<Outstanding>,
    metrics: Arc<Metrics>,
    method: &'static str,
    status: u16,
    start: Instant,
}

impl Drop for Completion {
    fn drop(&mut self) {
        record(
            &self.metrics,
            self.in_flight.counter(),
            self.method,
            self.status,
            self.start.elapsed(),
        );
    }
}

/// Records one finished request of `counter`'s route in the request metrics.
pub(crate) fn record(
    metrics: &Metrics,
    counter: &RouteCounter,
    method: &'static str,
    status: u16,
    elapsed: Duration,
) {
    if status == 200 && method == "GET" {
        counter.get_ok().record(elapsed);
    } else {
        metrics.record_request(counter.labels(), method, status, elapsed);
    }
}

/// The request body sent upstream. If it is dropped before its first poll (the connection
/// could not be made), it hands the inner body back through `reclaim` for a retry. A body that
/// fails (malformed, or no progress within the request body timeout) says so in `failure`, so
/// the client gets a 400 or 408 rather than a 502.
pub struct OutBody {
    inner: Option<Incoming>,
    reclaim: Option<Arc<Mutex<Option<Incoming>>>>,
    polled: bool,
    progress: Option<Duration>,
    /// Armed the first time the inbound body has nothing ready.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    waiting: bool,
    failure: Arc<BodyFailure>,
}

/// Why an inbound request body ended early (set once, read after the upstream request failed).
#[derive(Default)]
struct BodyFailure(std::sync::atomic::AtomicU8);

impl BodyFailure {
    const MALFORMED: u8 = 1;
    const TIMED_OUT: u8 = 2;

    fn set(&self, why: u8) {
        self.0.store(why, Ordering::Release);
    }

    /// The client's fault, as a status and a message, if the body failed.
    fn response(&self) -> Option<(StatusCode, &'static str)> {
        match self.0.load(Ordering::Acquire) {
            Self::MALFORMED => Some((
                StatusCode::BAD_REQUEST,
                "malformed request body (invalid chunked encoding or cut short)",
            )),
            Self::TIMED_OUT => Some((
                StatusCode::REQUEST_TIMEOUT,
                "timed out reading the request body",
            )),
            _ => None,
        }
    }
}

/// The request body made no progress within the request body timeout.
#[derive(Debug, thiserror::Error)]
#[error("no request body bytes within the request body timeout")]
struct BodyTimedOut;

impl Body for OutBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.polled = true;
        let this = &mut *self;
        let Some(body) = &mut this.inner else {
            return Poll::Ready(None);
        };
        match Pin::new(body).poll_frame(cx) {
            Poll::Ready(Some(Err(error))) => {
                this.failure.set(BodyFailure::MALFORMED);
                Poll::Ready(Some(Err(error.into())))
            }
            Poll::Pending => {
                let Some(limit) = this.progress else {
                    return Poll::Pending;
                };
                let deadline = Instant::now() + limit;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if !this.waiting {
                    timer.as_mut().reset(deadline);
                    this.waiting = true;
                }
                if timer.as_mut().poll(cx).is_ready() {
                    this.failure.set(BodyFailure::TIMED_OUT);
                    return Poll::Ready(Some(Err(Box::new(BodyTimedOut))));
                }
                Poll::Pending
            }
            ready => {
                this.waiting = false;
                ready.map_err(Into::into)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for OutBody {
    fn drop(&mut self) {
        if !self.polled
            && let (Some(slot), Some(body)) = (&self.reclaim, self.inner.take())
            && let Ok(mut slot) = slot.lock()
        {
            *slot = Some(body);
        }
    }
}

type HttpClient = Client<HttpConnector, OutBody>;

/// Shared state of the proxy listener.
pub struct Proxy {
    pub(crate) table: Arc<Table>,
    table_changed: Arc<tokio::sync::Notify>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) config: Config,
    /// Set when shutting down: HTTP/1 responses then close their connection.
    pub(crate) draining: Arc<AtomicBool>,
    http1: HttpClient,
    h2c: HttpClient,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").finish_non_exhaustive()
    }
}

fn plain(status: StatusCode, message: String) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(message + "\n"));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn static_response(reply: &StaticReply, path: &str) -> Response<ProxyBody> {
    match reply.render(path) {
        Ok((status, headers, body)) => {
            let mut response = Response::new(ProxyBody::full(body));
            *response.status_mut() = status;
            *response.headers_mut() = headers;
            response
        }
        Err(message) => plain(StatusCode::NOT_FOUND, message),
    }
}

/// What went wrong forwarding one request.
enum Failure {
    Refused(String),
    Timeout(&'static str),
}

impl Proxy {
    /// A proxy over `table`; `table_changed` is notified after every table swap, `draining` is
    /// set when shutdown begins.
    pub fn new(
        config: Config,
        table: Arc<Table>,
        table_changed: Arc<tokio::sync::Notify>,
        metrics: Arc<Metrics>,
        draining: Arc<AtomicBool>,
    ) -> Self {
        let client = |h2c: bool| {
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            connector.set_connect_timeout(Some(config.connect_timeout));
            connector.enforce_http(true);
            let mut builder = Client::builder(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(config.idle_conn_timeout)
                .pool_max_idle_per_host(config.max_idle_conns_per_host)
                .http2_only(h2c);
            builder.build(connector)
        };
        Self {
            http1: client(false),
            h2c: client(true),
            table,
            table_changed,
            metrics,
            config,
            draining,
        }
    }

    /// Handles one request from `remote`.
    pub async fn handle(
        self: Arc<Self>,
        remote: SocketAddr,
        req: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let http1 = req.version() < Version::HTTP_2;
        let mut response = self.route(remote, req).await;
        // While draining, every HTTP/1 response closes its connection, so clients stop reusing
        // it before the listener closes; closing an idle keep-alive connection later could race
        // a request being sent on it.
        if http1 && self.draining.load(Ordering::Acquire) {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        Ok(response)
    }

    async fn route(&self, remote: SocketAddr, mut req: Request<Incoming>) -> Response<ProxyBody> {
        let start = Instant::now();
        let host_value = match check_request(&req) {
            Ok(host) => host,
            Err((status, message)) => {
                if self.config.log_requests {
                    tracing::info!(%remote, path = req.uri().path(), status = status.as_u16(), reason = message, "request");
                }
                let mut response = plain(status, message.to_owned());
                if req.version() < Version::HTTP_2 {
                    // The request's framing or target cannot be trusted: no further requests.
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                return response;
            }
        };
        let host = host_value.to_str().unwrap_or("");
        let host_value = Some(host_value.clone());
        let entry = {
            let table = self.table.load();
            table
                .lookup(host, req.uri().path(), req.headers())
                .map(|route| route.target.clone())
        };
        let Some(entry) = entry else {
            let message = format!("no route for host {host:?} and path {:?}", req.uri().path());
            if self.config.log_requests {
                tracing::info!(%remote, host, path = req.uri().path(), status = 404, "request");
            }
            return plain(StatusCode::NOT_FOUND, message);
        };

        // Static routes answer without counting.
        if let Some(static_route) = entry
            .static_routes
            .iter()
            .find(|s| s.matches(host, req.uri().path(), req.headers()))
            && (static_route.always || !entry.backend.has_ready())
        {
            return static_response(&static_route.reply, req.uri().path());
        }

        let method = method_label(req.method());
        let client_upgrade = headers::upgrade_protocol(req.headers())
            .is_some()
            .then(|| hyper::upgrade::on(&mut req));
        let in_flight = entry.counter.start();
        let deadline = entry.request_timeout.map(|t| start + t);
        let (response, outstanding, cold) = self
            .serve(&entry, remote, req, host_value, deadline, start)
            .await;
        let mut response = match response {
            Ok(r) => r,
            Err(Failure::Refused(message)) => plain(StatusCode::BAD_GATEWAY, message),
            Err(Failure::Timeout(message)) => {
                plain(StatusCode::GATEWAY_TIMEOUT, message.to_owned())
            }
        };
        if self.config.enable_cold_start_header {
            response.headers_mut().insert(
                COLD_START.clone(),
                HeaderValue::from_static(if cold { "true" } else { "false" }),
            );
        }
        let status = response.status().as_u16();
        if self.config.log_requests {
            tracing::info!(%remote, route = %entry.counter.key(), status, cold, elapsed_ms = start.elapsed().as_millis() as u64, "request");
        }
        let completion = Completion {
            in_flight,
            _outstanding: outstanding,
            metrics: self.metrics.clone(),
            method,
            status,
            start,
        };
        let upstream_upgrade = response.extensions_mut().remove::<UpstreamUpgrade>();
        let (parts, body) = response.into_parts();
        if let (Some(client), Some(UpstreamUpgrade(upstream))) = (client_upgrade, upstream_upgrade)
        {
            // The request stays in flight until the upgraded connection closes.
            tokio::spawn(tunnel(client, upstream, completion));
            return Response::from_parts(parts, ProxyBody::full(Bytes::new()));
        }
        Response::from_parts(
            parts,
            ProxyBody {
                inner: body.inner,
                _done: Some(completion),
                _active: None,
            },
        )
    }

    /// Waits for readiness as needed and forwards; returns the response, the outstanding guard
    /// of the chosen upstream and whether the request waited for a cold start.
    async fn serve(
        &self,
        entry: &Arc<RouteEntry>,
        remote: SocketAddr,
        req: Request<Incoming>,
        host: Option<HeaderValue>,
        deadline: Option<Instant>,
        start: Instant,
    ) -> (
        Result<Response<ProxyBody>, Failure>,
        Option<Outstanding>,
        bool,
    ) {
        let mut entry: Arc<RouteEntry> = entry.clone();
        let mut backend: Arc<Backend> = entry.backend.clone();
        let mut cold = false;
        if !backend.has_ready() {
            cold = true;
            if let Some(placeholder) = &entry.placeholder {
                return (
                    Ok(static_response(placeholder, req.uri().path())),
                    None,
                    true,
                );
            }
            let wait_until = match (entry.readiness_timeout, deadline) {
                (Some(t), Some(d)) => Some((start + t).min(d)),
                (Some(t), None) => Some(start + t),
                (None, d) => d,
            };
            let readiness = loop {
                let changed = self.table_changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                // Follow the route into the current table: it may have been retargeted or
                // deleted since the request arrived (or since the last wake-up).
                let found = {
                    let host = host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or("");
                    self.table
                        .load()
                        .lookup(host, req.uri().path(), req.headers())
                        .map(|r| r.target.clone())
                };
                match found {
                    Some(next) if next.counter.key() == entry.counter.key() => {
                        if !Arc::ptr_eq(&next.backend, &backend) {
                            backend = next.backend.clone();
                        }
                        entry = next;
                    }
                    _ => {
                        let message = format!(
                            "no route: {} was removed while the request waited for a ready endpoint",
                            entry.counter.key()
                        );
                        return (Ok(plain(StatusCode::NOT_FOUND, message)), None, true);
                    }
                }
                let limit = wait_until.map(|w| w.saturating_duration_since(Instant::now()));
                tokio::select! {
                    readiness = backend.wait_ready(limit) => break readiness,
                    _ = changed => {}
                }
            };
            self.metrics
                .record_cold_start(entry.counter.labels(), start.elapsed());
            if readiness == Readiness::TimedOut {
                let request_expired = deadline.is_some_and(|d| Instant::now() >= d);
                match &entry.fallback {
                    Some(fallback) if !request_expired && fallback.has_ready() => {
                        backend = fallback.clone();
                    }
                    _ if request_expired => {
                        return (
                            Err(Failure::Timeout(
                                "request timeout exceeded while waiting for a ready endpoint",
                            )),
                            None,
                            true,
                        );
                    }
                    _ => {
                        let message = format!(
                            "timed out waiting for a ready endpoint of service {}",
                            backend.key()
                        );
                        return (Ok(plain(StatusCode::GATEWAY_TIMEOUT, message)), None, true);
                    }
                }
            }
        }
        let (result, outstanding) = self
            .forward(&entry, &backend, remote, req, host, deadline)
            .await;
        (result, outstanding, cold)
    }

    async fn forward(
        &self,
        entry: &RouteEntry,
        backend: &Backend,
        remote: SocketAddr,
        req: Request<Incoming>,
        host: Option<HeaderValue>,
        deadline: Option<Instant>,
    ) -> (Result<Response<ProxyBody>, Failure>, Option<Outstanding>) {
        let state = backend.state();
        let client = if state.h2c { &self.h2c } else { &self.http1 };
        let (mut parts, body) = req.into_parts();
        let upgrade = headers::upgrade_protocol(&parts.headers).cloned();
        headers::strip_hop_by_hop(&mut parts.headers);
        if let Some(protocol) = &upgrade {
            headers::set_upgrade(&mut parts.headers, protocol.clone());
        }
        let tls = parts.extensions.get::<ViaTls>().is_some();
        headers::add_forwarded(&mut parts.headers, remote.ip(), host.as_ref(), tls);
        if let Some(host) = host
            && !parts.headers.contains_key(header::HOST)
        {
            parts.headers.insert(header::HOST, host);
        }
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let version = if state.h2c {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };

        let mut excluded: [Option<SocketAddr>; MAX_CONNECT_ATTEMPTS] = [None; MAX_CONNECT_ATTEMPTS];
        let attempts = if entry.direct {
            state.endpoints.len().clamp(1, MAX_CONNECT_ATTEMPTS)
        } else {
            1
        };
        let reclaim = (attempts > 1).then(|| Arc::new(Mutex::new(None)));
        let failure = Arc::new(BodyFailure::default());
        let mut body = Some(body);
        let mut last_error = String::new();
        for attempt in 0..attempts {
            let upstream: Arc<Upstream> = if entry.direct {
                let exclude: Vec<SocketAddr> = excluded.iter().flatten().copied().collect();
                match backend.pick_endpoint(&exclude) {
                    Some(u) => u,
                    None => break,
                }
            } else {
                match &state.service {
                    Some(u) => u.clone(),
                    None => {
                        return (
                            Err(Failure::Refused(format!(
                                "service {} has no such port",
                                backend.key()
                            ))),
                            None,
                        );
                    }
                }
            };
            excluded[attempt] = Some(upstream.addr());
            let Some(inbound) = body.take() else { break };
            // Later attempts need the parts again; clone only when a retry is possible.
            let request_parts = if attempt + 1 < attempts {
                clone_parts(&parts)
            } else {
                std::mem::replace(&mut parts, Request::new(()).into_parts().0)
            };
            let mut out = Request::from_parts(
                request_parts,
                OutBody {
                    inner: Some(inbound),
                    reclaim: reclaim.clone(),
                    polled: false,
                    progress: self.config.request_body_timeout,
                    timer: None,
                    waiting: false,
                    failure: failure.clone(),
                },
            );
            *out.uri_mut() = Uri::builder()
                .scheme(Scheme::HTTP)
                .authority(upstream.authority().clone())
                .path_and_query(path.clone())
                .build()
                .unwrap_or_default();
            *out.version_mut() = version;
            let outstanding = upstream.begin();
            let send = client.request(out);
            let header_limit = match (entry.response_header_timeout, deadline) {
                (Some(t), Some(d)) => Some((Instant::now() + t).min(d)),
                (Some(t), None) => Some(Instant::now() + t),
                (None, d) => d,
            };
            let result = match header_limit {
                Some(limit) => match tokio::time::timeout_at(limit, send).await {
                    Ok(r) => r,
                    Err(_) => {
                        let what = if deadline == Some(limit) {
                            "request timeout exceeded waiting for the backend's response headers"
                        } else {
                            "timed out waiting for the backend's response headers"
                        };
                        return (Err(Failure::Timeout(what)), None);
                    }
                },
                None => send.await,
            };
            match result {
                Ok(mut response) => {
                    let switching =
                        upgrade.is_some() && response.status() == StatusCode::SWITCHING_PROTOCOLS;
                    if switching {
                        let upstream = hyper::upgrade::on(&mut response);
                        response.extensions_mut().insert(UpstreamUpgrade(upstream));
                    }
                    let protocol = response.headers().get(header::UPGRADE).cloned();
                    let (mut parts, incoming) = response.into_parts();
                    headers::strip_hop_by_hop(&mut parts.headers);
                    if let (true, Some(protocol)) = (switching, protocol) {
                        headers::set_upgrade(&mut parts.headers, protocol);
                    }
                    let body = ProxyBody {
                        inner: Inner::Upstream(incoming),
                        _done: None,
                        _active: None,
                    };
                    return (Ok(Response::from_parts(parts, body)), Some(outstanding));
                }
                Err(error) if error.is_connect() => {
                    last_error = format!(
                        "connecting to {} failed: {}",
                        upstream.addr(),
                        source_chain(&error)
                    );
                    tracing::debug!(backend = %backend.key(), error = last_error, "connect failed");
                    body = reclaim.as_ref().and_then(|slot| slot.lock().ok()?.take());
                    if body.is_none() {
                        break;
                    }
                }
                Err(error) => {
                    if let Some((status, message)) = failure.response() {
                        tracing::debug!(backend = %backend.key(), error = source_chain(&error), "request body failed");
                        return (Ok(plain(status, message.to_owned())), None);
                    }
                    let message = format!(
                        "backend {} failed: {}",
                        upstream.addr(),
                        source_chain(&error)
                    );
                    return (Err(Failure::Refused(message)), None);
                }
            }
        }
        if last_error.is_empty() {
            last_error = format!("no ready endpoint of service {}", backend.key());
        }
        (Err(Failure::Refused(last_error)), None)
    }
}

/// Checks what the relay's rules (`h1::inspect_request`) check, for requests hyper parsed:
/// the target's form, one valid `Host` that agrees with the target's authority (absolute-form
/// or `:authority`, which wins, RFC 9112 §3.2.2), and no transfer coding but `chunked`.
/// (With both `Content-Length` and `Transfer-Encoding`, hyper frames by the chunks, drops the
/// length and closes the connection after, as RFC 9112 §6.1 allows.)
/// Returns the host to route by.
fn check_request<B>(req: &Request<B>) -> Result<HeaderValue, (StatusCode, &'static str)> {
    let bad = |message| Err((StatusCode::BAD_REQUEST, message));
    if req.method() == http::Method::CONNECT {
        return Err((
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not supported by this proxy",
        ));
    }
    let uri = req.uri();
    let asterisk = req.method() == http::Method::OPTIONS && uri.path() == "*";
    if !uri.path().starts_with('/') && !asterisk {
        return bad("invalid request target");
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return bad("more than one Host header");
    }
    if let Some(host) = host
        && !crate::h1::valid_host(host.as_bytes())
    {
        return bad("invalid Host header");
    }
    let host = match (uri.authority(), host) {
        (Some(authority), Some(host))
            if !authority
                .as_str()
                .eq_ignore_ascii_case(host.to_str().unwrap_or("")) =>
        {
            return bad("Host header does not match the request target's authority");
        }
        (Some(authority), _) => HeaderValue::from_str(authority.as_str())
            .map_err(|_| (StatusCode::BAD_REQUEST, "invalid authority"))?,
        (None, Some(host)) => host.clone(),
        (None, None) => return bad("missing Host header"),
    };
    let codings_ok = req
        .headers()
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| crate::h1::tokens(v.as_bytes()))
        .all(|coding| coding.eq_ignore_ascii_case(b"chunked"));
    if !codings_ok {
        return Err((
            StatusCode::NOT_IMPLEMENTED,
            "transfer codings other than chunked are not supported",
        ));
    }
    Ok(host)
}

/// Marks a request received on the TLS listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ViaTls;

/// The backend's side of an upgraded connection, carried from `forward` to `route`.
#[derive(Clone)]
struct UpstreamUpgrade(hyper::upgrade::OnUpgrade);

/// Joins the client's and the backend's upgraded connections until either closes; the
/// request counts as in flight until then.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    completion: Completion,
) {
    match tokio::try_join!(client, upstream) {
        Ok((client, upstream)) => {
            let mut client = TokioIo::new(client);
            let mut upstream = TokioIo::new(upstream);
            if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                tracing::debug!(%error, "upgraded connection failed");
            }
        }
        Err(error) => tracing::debug!(%error, "protocol upgrade failed"),
    }
    drop(completion);
}

fn clone_parts(parts: &http::request::Parts) -> http::request::Parts {
    let mut builder = Request::builder()
        .method(parts.method.clone())
        .uri(parts.uri.clone())
        .version(parts.version);
    if let Some(headers) = builder.headers_mut() {
        *headers = parts.headers.clone();
    }
    builder
        .body(())
        .map(|r| r.into_parts().0)
        .unwrap_or_else(|_| Request::new(()).into_parts().0)
}

fn source_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
