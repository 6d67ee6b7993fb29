//! The hyper codec and the HTTP/2 codec: HTTP/2 (h2 by ALPN on the TLS listener, h2c with
//! prior knowledge on the plain one) is served by [`server`], a connection loop on the `h2`
//! crate that runs all streams of a connection in its task; the HTTP/1.1 connections the
//! HTTP/1.1 codec leaves to hyper (see [`crate::h1`]) by hyper's server. Both convert between
//! their requests and responses and the request policy ([`crate::request`]), which decides
//! everything else; HTTP/1.1 backends are reached over the endpoints' own pools
//! ([`upstream`]), h2c ones (`appProtocol: kubernetes.io/h2c`) through hyper's h2 client.

mod body;
mod server;
mod upstream;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::time::Instant;

use crate::backend_tls::{TlsFailure, TlsTarget};
use crate::backends::{Backend, Wire};
use crate::headers::{self, COLD_START};
use crate::metrics::method_label;
use crate::request::{Admission, Attempts, Deadlines, Policy, Reply, Route, Tally, backend_failed};
use crate::routes::RouteEntry;

use body::{BodyFailure, Inner};
pub use body::{BoxError, InBody, OutBody, ProxyBody};
pub(crate) use server::{H2Conn, serve_h2};

type HttpClient = Client<HttpConnector, OutBody>;

/// Why a request could not be sent to an upstream.
enum Sent {
    /// Connecting failed (nothing was sent): another endpoint may be tried.
    Connect(String),
    /// The exchange failed after the connection was made.
    Failed(String),
    /// The TLS handshake failed (nothing was sent).
    Tls(TlsFailure),
}

/// The hyper codec's state: the request policy and the h2c client (HTTP/1.1 backends are
/// reached over the endpoints' own pools, shared with the HTTP/1.1 codec).
pub struct Hyper {
    policy: Arc<Policy>,
    h2c: HttpClient,
    /// HTTP/2 over TLS (`appProtocol: h2`).
    h2_tls: upstream::H2Tls,
}

impl std::fmt::Debug for Hyper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hyper").finish_non_exhaustive()
    }
}

/// `reply` as a hyper response, its tally (if counted) settling when it is written.
fn response(reply: Reply, tally: Option<Tally>) -> Response<ProxyBody> {
    let status = reply.status;
    let tally = tally.map(|t| (t, status.as_u16()));
    let mut response = Response::new(ProxyBody::new(Inner::Full(Some(reply.body)), tally));
    *response.status_mut() = status;
    *response.headers_mut() = *reply.headers;
    response
}

fn set_cold(response: &mut Response<ProxyBody>, cold: bool) {
    response.headers_mut().insert(
        COLD_START.clone(),
        HeaderValue::from_static(if cold { "true" } else { "false" }),
    );
}

impl Hyper {
    /// The codec over `policy`, with clients configured from its config.
    pub fn new(policy: Arc<Policy>) -> Self {
        let config = &policy.config;
        let h2c = {
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
                .http2_only(true);
            builder.build(connector)
        };
        Self {
            h2c,
            h2_tls: upstream::H2Tls::default(),
            policy,
        }
    }

    /// The request policy.
    pub(crate) fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// Handles one request from `remote`.
    pub async fn handle(
        self: Arc<Self>,
        remote: SocketAddr,
        req: Request<InBody>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let http1 = req.version() < Version::HTTP_2;
        // Boxed: hyper moves the service future into a task per stream, and the request's
        // whole state machine is large; moving a pointer instead costs one allocation.
        let mut response = Box::pin(self.serve(remote, req)).await;
        // While draining, every HTTP/1 response closes its connection, so clients stop reusing
        // it before the listener closes; closing an idle keep-alive connection later could race
        // a request being sent on it.
        if http1 && self.policy.draining() {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        Ok(response)
    }

    async fn serve(&self, remote: SocketAddr, mut req: Request<InBody>) -> Response<ProxyBody> {
        let start = Instant::now();
        let policy = &self.policy;
        let host = match check_request(&req) {
            Ok(host) => host,
            Err((status, message)) => {
                if policy.config.log_requests {
                    tracing::info!(%remote, path = req.uri().path(), status = status.as_u16(), reason = message, "request");
                }
                let mut response = response(Reply::error(status, message), None);
                if req.version() < Version::HTTP_2 {
                    // The request's framing or target cannot be trusted: no further requests.
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                return response;
            }
        };
        let host_str = host.to_str().unwrap_or("");
        let entry = match policy.route(remote, host_str, req.uri().path(), req.headers()) {
            Route::Reply(reply) => return response(reply, None),
            Route::Forward(entry) => entry,
        };
        let method = method_label(req.method());
        let trace = policy.trace(&entry, method, host_str, req.uri().path(), |name| {
            req.headers().get(name).and_then(|v| v.to_str().ok())
        });
        if let Some(span) = &trace {
            headers::set_trace(req.headers_mut(), span);
        }
        crate::request::traced(
            trace,
            self.serve_routed(remote, req, host, entry, method, start),
        )
        .await
    }

    /// [`Hyper::serve`] once the request is routed (in its trace's scope).
    async fn serve_routed(
        &self,
        remote: SocketAddr,
        mut req: Request<InBody>,
        host: HeaderValue,
        entry: Arc<RouteEntry>,
        method: &'static str,
        start: Instant,
    ) -> Response<ProxyBody> {
        let policy = &self.policy;
        let host_str = host.to_str().unwrap_or("");
        let mut tally = policy.count(&entry, method, remote, start);
        let deadlines = Deadlines::new(&entry, start);
        let cold_header = policy.config.enable_cold_start_header;
        let admission = policy
            .admit(entry, host_str, req.uri().path(), req.headers(), &deadlines)
            .await;
        let (entry, backend, cold) = match admission {
            Admission::Forward {
                entry,
                backend,
                cold,
            } => (entry, backend, cold),
            Admission::Reply(reply) => {
                tally.cold(true);
                let mut response = response(reply, Some(tally));
                if cold_header {
                    set_cold(&mut response, true);
                }
                return response;
            }
        };
        tally.cold(cold);
        let client_upgrade = headers::upgrade_protocol(req.headers())
            .is_some()
            .then(|| hyper::upgrade::on(&mut req));
        let forwarded = self
            .forward(&entry, &backend, remote, req, host, &deadlines, &mut tally)
            .await;
        let mut upstream = match forwarded {
            Ok(upstream) => upstream,
            Err(reply) => {
                let mut response = response(reply, Some(tally));
                if cold_header {
                    set_cold(&mut response, cold);
                }
                return response;
            }
        };
        let switching =
            client_upgrade.is_some() && upstream.status() == StatusCode::SWITCHING_PROTOCOLS;
        let upstream_upgrade = switching.then(|| hyper::upgrade::on(&mut upstream));
        let protocol = upstream.headers().get(header::UPGRADE).cloned();
        let (mut parts, incoming) = upstream.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        if let (true, Some(protocol)) = (switching, protocol) {
            headers::set_upgrade(&mut parts.headers, protocol);
        }
        if cold_header {
            parts.headers.insert(
                COLD_START.clone(),
                HeaderValue::from_static(if cold { "true" } else { "false" }),
            );
        }
        let status = parts.status.as_u16();
        if let (Some(client), Some(upstream)) = (client_upgrade, upstream_upgrade) {
            // The request stays in flight until the upgraded connection closes.
            tokio::spawn(tunnel(client, upstream, tally));
            return Response::from_parts(parts, ProxyBody::new(Inner::Full(None), None));
        }
        Response::from_parts(parts, ProxyBody::new(incoming, Some((tally, status))))
    }

    /// Sends the request to an endpoint of `backend` (another one after a failed connect, as
    /// [`Attempts`] allows) and returns the response (its body still to be read), or the
    /// reply that says why not.
    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        entry: &RouteEntry,
        backend: &Backend,
        remote: SocketAddr,
        req: Request<InBody>,
        host: HeaderValue,
        deadlines: &Deadlines,
        tally: &mut Tally,
    ) -> Result<Response<Inner>, Reply> {
        let state = backend.state();
        let (mut parts, body) = req.into_parts();
        let upgrade = headers::upgrade_protocol(&parts.headers).cloned();
        headers::strip_hop_by_hop(&mut parts.headers);
        if let Some(protocol) = &upgrade {
            headers::set_upgrade(&mut parts.headers, protocol.clone());
        }
        let tls = parts.extensions.get::<ViaTls>().is_some();
        headers::add_forwarded(&mut parts.headers, remote.ip(), Some(&host), tls);
        if !parts.headers.contains_key(header::HOST) {
            parts.headers.insert(header::HOST, host);
        }
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let wire = state.wire(tls);
        let version = if wire.http2() {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        let tls_target = |h2: bool| {
            let clients = self.policy.config.backend_clients();
            TlsTarget {
                config: if h2 { &clients.h2 } else { &clients.http1 },
                name: backend.server_name(),
            }
        };
        let h1_tls = (wire == Wire::Https).then(|| tls_target(false));

        let mut attempts = Attempts::new(entry, backend);
        let reclaim = attempts.may_retry().then(|| Arc::new(Mutex::new(None)));
        let failure = Arc::new(BodyFailure::default());
        let mut body = Some(body);
        loop {
            let upstream = attempts.next(entry, backend)?;
            let Some(inbound) = body.take() else {
                return Err(attempts.exhausted(backend));
            };
            // Later attempts need the parts again; clone only when a retry is possible.
            let request_parts = if attempts.more() {
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
                    progress: self.policy.config.request_body_timeout,
                    timer: None,
                    waiting: false,
                    failure: failure.clone(),
                },
            );
            // HTTP/2 needs the absolute URI (for :scheme and :authority); HTTP/1.1 on a
            // pooled connection sends the origin form.
            *out.uri_mut() = if wire.http2() {
                Uri::builder()
                    .scheme(if wire.tls() {
                        Scheme::HTTPS
                    } else {
                        Scheme::HTTP
                    })
                    .authority(upstream.authority().clone())
                    .path_and_query(path.clone())
                    .build()
                    .unwrap_or_default()
            } else {
                Uri::from(path.clone())
            };
            *out.version_mut() = version;
            tally.sent(upstream.begin());
            let send = async {
                if wire == Wire::H2 {
                    self.h2_tls
                        .send(&self.policy.config, &upstream, tls_target(true), out)
                        .await
                        .map(|response| response.map(Inner::Upstream))
                } else if wire == Wire::H2c {
                    self.h2c
                        .request(out)
                        .await
                        .map(|response| response.map(Inner::Upstream))
                        .map_err(|error| {
                            if error.is_connect() {
                                // The root cause, as the HTTP/1.1 codec names it.
                                Sent::Connect(root_cause(&error))
                            } else {
                                Sent::Failed(source_chain(&error))
                            }
                        })
                } else if upgrade.is_some() {
                    upstream::send_upgrade(&self.policy.config, &upstream, h1_tls, out)
                        .await
                        .map(|response| response.map(Inner::Upstream))
                } else {
                    upstream::send(
                        &self.policy.config,
                        &self.policy.idle,
                        &upstream,
                        h1_tls,
                        out,
                    )
                    .await
                    .map(|response| response.map(Inner::H1))
                }
            };
            let result = match deadlines.response_head(entry, Instant::now()) {
                Some(limit) => match tokio::time::timeout_at(limit, send).await {
                    Ok(result) => result,
                    Err(_) => return Err(deadlines.response_head_timeout()),
                },
                None => send.await,
            };
            match result {
                Ok(sent) => return Ok(sent),
                Err(Sent::Connect(error)) => {
                    attempts.connect_failed(backend, &upstream, &error);
                    body = reclaim.as_ref().and_then(|slot| slot.lock().ok()?.take());
                }
                Err(Sent::Tls(failure)) => return Err(Reply::backend_tls(&failure)),
                Err(Sent::Failed(error)) => {
                    if let Some((status, message)) = failure.response() {
                        tracing::debug!(backend = %backend.key(), error, "request body failed");
                        return Err(Reply::error(status, message));
                    }
                    return Err(backend_failed(&upstream, &error));
                }
            }
        }
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
        && !crate::h1::rules::valid_host(host.as_bytes())
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
        .flat_map(|v| crate::h1::rules::tokens(v.as_bytes()))
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

/// Joins the client's and the backend's upgraded connections until either closes; the
/// request counts as in flight until then.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    mut tally: Tally,
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
    tally.settle(101);
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

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
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
