//! The HTTP/1.1 fast path: plain keep-alive requests to warm backends, relayed in the
//! connection's own task over pooled upstream connections.
//!
//! Most proxied traffic is an HTTP/1.1 request (without a body, or with a `Content-Length` or
//! chunked one, relayed as is) to a backend that has ready endpoints.
//! For those, this module parses the request head in place, rewrites it into one buffer, sends
//! it on an idle upstream connection of the least-loaded endpoint, and relays the response head
//! and body byte for byte (the body is never decoded, only followed to its end). No task
//! hand-offs, no channels, no per-request allocation on the common path.
//!
//! Protocol upgrades (WebSocket) are relayed too: the `101` response is passed on and the two
//! connections are joined until either side closes; the request counts as in flight until then.
//!
//! Everything else — HTTP/2, HTTP/1.0, other transfer codings, `Expect`, cold starts,
//! static routes, Service-address routing, h2c backends, bad or oversized heads — hands the
//! connection (with the bytes read so far) to the general hyper-based path for the rest of its
//! life, so both paths answer the same way.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderName;
use http_add_on_types::routing::RequestHeaders;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use crate::backends::Upstream;
use crate::counts::InFlight;
use crate::framing::{Fed, Framing};
use crate::h1::{
    BodyFraming, Verdict, inspect_request, is, is_hop_by_hop, is_protected, named_by_connection,
    tokens,
};
use crate::metrics::method_label;
use crate::proxy::{MAX_CONNECT_ATTEMPTS, Proxy, record};
use crate::routes::RouteEntry;

/// Header lines parsed in place on the stack; a head with more is parsed again with room for
/// [`MAX_HEADERS_SLOW`].
const MAX_HEADERS: usize = 64;
/// Most header lines of a request (as on the general path) or a response.
const MAX_HEADERS_SLOW: usize = 256;
/// Bytes reserved before each read.
const READ_CHUNK: usize = 16 * 1024;
/// Largest response head accepted from a backend.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Request bodies up to this size are read whole (and checked) before the request is
/// forwarded; larger ones stream on the general path, which relays them full duplex.
const MAX_BUFFERED_BODY: usize = 64 * 1024;

/// How a connection left the fast path.
pub(crate) enum Outcome<C> {
    /// The connection is finished.
    Done,
    /// The general path serves the rest of the connection, starting with `buffered`.
    HandOff {
        /// The client connection.
        stream: C,
        /// Bytes read from it and not yet served.
        buffered: Bytes,
    },
}

/// Parses a request head with `MAX_HEADERS` header lines on the stack, again with
/// `MAX_HEADERS_SLOW` on the heap when it has more, and hands the result to `then`.
pub(crate) fn parse_request<T>(
    buf: &[u8],
    then: impl FnOnce(Result<httparse::Status<usize>, httparse::Error>, &httparse::Request<'_, '_>) -> T,
) -> T {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Err(httparse::Error::TooManyHeaders) => {
            let mut headers = vec![httparse::EMPTY_HEADER; MAX_HEADERS_SLOW];
            let mut request = httparse::Request::new(&mut headers);
            let status = request.parse(buf);
            then(status, &request)
        }
        status => then(status, &request),
    }
}

/// Serves `stream` (received over TLS when `tls`) on the fast path until it closes or needs
/// the general path.
pub(crate) async fn serve<C: AsyncRead + AsyncWrite + Unpin>(
    proxy: &Proxy,
    stream: C,
    remote: SocketAddr,
    tls: bool,
    stop: &mut watch::Receiver<bool>,
) -> Outcome<C> {
    let mut conn = Conn {
        client: stream,
        buf: BytesMut::with_capacity(READ_CHUNK),
        ubuf: BytesMut::with_capacity(READ_CHUNK),
        out: Vec::with_capacity(1024),
        timer: Box::pin(tokio::time::sleep(Duration::from_secs(86_400))),
        remote,
        watch_client: true,
    };
    // One stop future for the connection's life (creating one per request costs more).
    let mut stop_watch = stop.clone();
    let mut stopping = std::pin::pin!(async move {
        let _ = stop_watch.wait_for(|stopped| *stopped).await;
    });
    // The client address as X-Forwarded-For lists it, formatted once per connection.
    let client_ip = remote.ip().to_string();
    let config = &proxy.config;
    // The first request must arrive within the header read timeout of the connection's
    // start; later ones within the idle timeout of the previous response, and then whole
    // within the header read timeout of their first byte.
    let mut head_deadline: Option<Instant> = Some(Instant::now() + config.header_read_timeout);
    let mut idle_deadline: Option<Instant> = None;
    loop {
        // One parse per request head: it is planned from as soon as it is complete.
        let parsed = if conn.buf.is_empty() {
            None
        } else {
            parse_request(&conn.buf, |status, request| match status {
                Ok(httparse::Status::Complete(len)) => Some((
                    len,
                    plan(proxy, remote, &client_ip, tls, request, &mut conn.out),
                )),
                Ok(httparse::Status::Partial) if conn.buf.len() < config.max_header_bytes => None,
                // Oversized or malformed: the general path answers 431 / 400.
                _ => Some((0, Plan::General)),
            })
        };
        let Some((head_len, plan)) = parsed else {
            let deadline = if conn.buf.is_empty() {
                head_deadline.or(idle_deadline)
            } else {
                Some(
                    *head_deadline
                        .get_or_insert_with(|| Instant::now() + config.header_read_timeout),
                )
            };
            match conn
                .read_more(deadline, stopping.as_mut(), conn.buf.is_empty())
                .await
            {
                Read::Data => continue,
                Read::TimedOut if !conn.buf.is_empty() => {
                    // A head that does not arrive in time: 408, as the general path answers.
                    write_plain(
                        &mut conn.out,
                        408,
                        "timed out reading the request head",
                        true,
                        false,
                    );
                    let _ = send(&mut conn.client, &conn.out).await;
                    let _ = conn.client.shutdown().await;
                    return Outcome::Done;
                }
                Read::TimedOut | Read::Closed | Read::Stopped => {
                    let _ = conn.client.shutdown().await;
                    return Outcome::Done;
                }
            }
        };
        head_deadline = None;
        let next = match plan {
            Plan::General => return conn.hand_off(),
            Plan::Reply {
                status,
                message,
                close,
            } => {
                conn.buf.advance(head_len);
                write_plain(&mut conn.out, status, &message, close, false);
                match send(&mut conn.client, &conn.out).await {
                    Ok(()) if !close => Next::KeepAlive,
                    _ => Next::Close,
                }
            }
            Plan::Forward(request) => {
                // The body is read whole (and checked) before anything is forwarded, so the
                // request and its body go out in one write and can be resent; a body too large
                // for that streams on the general path.
                let mut framing = request.body_framing();
                let mut body_len = 0;
                let complete = loop {
                    let fed = framing.feed(&conn.buf[head_len + body_len..]);
                    match fed {
                        Ok(Fed::End(len)) => break Some(body_len + len),
                        Ok(Fed::More) => body_len = conn.buf.len() - head_len,
                        Err(_) => break None,
                    }
                    if body_len >= MAX_BUFFERED_BODY {
                        return conn.hand_off();
                    }
                    let deadline = config.request_body_timeout.map(|t| Instant::now() + t);
                    match conn.read_more(deadline, stopping.as_mut(), false).await {
                        Read::Data => {}
                        Read::TimedOut => {
                            write_plain(
                                &mut conn.out,
                                408,
                                "timed out reading the request body",
                                true,
                                false,
                            );
                            let _ = send(&mut conn.client, &conn.out).await;
                            let _ = conn.client.shutdown().await;
                            return Outcome::Done;
                        }
                        Read::Closed | Read::Stopped => return Outcome::Done,
                    }
                };
                let Some(body_len) = complete else {
                    // Nothing was forwarded; the connection's framing is lost, so it closes.
                    write_plain(
                        &mut conn.out,
                        400,
                        "malformed chunked request body",
                        true,
                        false,
                    );
                    let _ = send(&mut conn.client, &conn.out).await;
                    let _ = conn.client.shutdown().await;
                    return Outcome::Done;
                };
                conn.buf.advance(head_len);
                conn.out.extend_from_slice(&conn.buf[..body_len]);
                conn.buf.advance(body_len);
                conn.forward(proxy, request).await
            }
        };
        if next == Next::Close || *stop.borrow() {
            let _ = conn.client.shutdown().await;
            return Outcome::Done;
        }
        idle_deadline = config.idle_timeout.map(|t| Instant::now() + t);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    KeepAlive,
    Close,
}

/// What to do with one parsed request head.
enum Plan {
    /// Not for the fast path.
    General,
    /// Answer locally.
    Reply {
        status: u16,
        message: String,
        close: bool,
    },
    /// Forward; the rewritten head is in the connection's `out` buffer.
    Forward(Forward),
}

struct Forward {
    entry: Arc<RouteEntry>,
    method: &'static str,
    /// `GET`, `HEAD`, … (the body is always buffered whole): may be resent on a fresh
    /// connection when a pooled one was stale.
    idempotent: bool,
    head: bool,
    client_close: bool,
    /// How the request body is framed.
    body: BodyFraming,
    /// The request asks for a protocol upgrade (`Connection: upgrade` + `Upgrade`).
    upgrade: bool,
}

/// A request's header lines as the route table sees them.
struct ParsedHeaders<'a, 'b>(&'a [httparse::Header<'b>]);

impl Forward {
    /// How the request body is framed.
    fn body_framing(&self) -> Framing {
        match self.body {
            BodyFraming::None => Framing::Empty,
            BodyFraming::Length(n) => Framing::Length(n),
            BodyFraming::Chunked => Framing::Chunked(Default::default()),
        }
    }
}

impl RequestHeaders for ParsedHeaders<'_, '_> {
    fn contains(&self, name: &HeaderName) -> bool {
        self.0
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case(name.as_str()))
    }

    fn has_value(&self, name: &HeaderName, value: &[u8]) -> bool {
        self.0
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case(name.as_str()) && h.value == value)
    }
}

/// Decides how to serve `request`; for a forward, writes the upstream request head to `out`.
fn plan(
    proxy: &Proxy,
    remote: SocketAddr,
    client_ip: &str,
    tls: bool,
    request: &httparse::Request<'_, '_>,
    out: &mut Vec<u8>,
) -> Plan {
    let (Some(method), Some(path), Some(1)) = (request.method, request.path, request.version)
    else {
        return Plan::General;
    };
    let headers: &[httparse::Header<'_>] = request.headers;
    let head = match inspect_request(method, path, headers) {
        Ok(head) => head,
        Err(Verdict::General) => return Plan::General,
        Err(Verdict::Reject(status, message)) => {
            if proxy.config.log_requests {
                tracing::info!(%remote, path, status, reason = message, "request");
            }
            return Plan::Reply {
                status,
                message: message.to_owned(),
                close: true,
            };
        }
    };
    let host = head.host;
    let route_path = path.split_once('?').map_or(path, |(p, _)| p);
    let entry = {
        let table = proxy.table.load();
        match table.lookup(host, route_path, &ParsedHeaders(headers)) {
            Some(route) => route.target.clone(),
            None => {
                if proxy.config.log_requests {
                    tracing::info!(%remote, host, path = route_path, status = 404, "request");
                }
                // A body the client sent along cannot be skipped reliably: close after.
                return Plan::Reply {
                    status: 404,
                    message: format!("no route for host {host:?} and path {route_path:?}"),
                    close: head.close || head.body != BodyFraming::None,
                };
            }
        }
    };
    if !entry.direct || !entry.static_routes.is_empty() || !entry.backend.is_ready_http1() {
        return Plan::General;
    }

    // The upstream request head: hop-by-hop headers dropped, X-Forwarded-* added.
    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for h in headers {
        let name = h.name;
        if is_hop_by_hop(name)
            || is(name, "x-forwarded-for")
            || (head.connection_names_headers && named_by_connection(headers, name))
        {
            continue;
        }
        push_header(out, name.as_bytes(), h.value);
    }
    out.extend_from_slice(b"X-Forwarded-For: ");
    if head.forwarded_for {
        for h in headers.iter().filter(|h| is(h.name, "x-forwarded-for")) {
            out.extend_from_slice(h.value);
            out.extend_from_slice(b", ");
        }
    }
    out.extend_from_slice(client_ip.as_bytes());
    out.extend_from_slice(b"\r\n");
    if !head.forwarded_proto {
        out.extend_from_slice(if tls {
            b"X-Forwarded-Proto: https\r\n"
        } else {
            b"X-Forwarded-Proto: http\r\n"
        });
    }
    if !head.forwarded_host {
        push_header(out, b"X-Forwarded-Host", host.as_bytes());
    }
    if let Some(protocol) = head.upgrade {
        push_header(out, b"Connection", b"upgrade");
        push_header(out, b"Upgrade", protocol);
    }
    out.extend_from_slice(b"\r\n");

    Plan::Forward(Forward {
        entry,
        method: method_label_bytes(method),
        idempotent: matches!(
            method,
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        ),
        head: method == "HEAD",
        client_close: head.close,
        body: head.body,
        upgrade: head.upgrade.is_some(),
    })
}

fn method_label_bytes(method: &str) -> &'static str {
    http::Method::from_bytes(method.as_bytes()).map_or("_OTHER", |m| method_label(&m))
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A complete small plain-text response, as the general path writes them.
fn write_plain(out: &mut Vec<u8>, status: u16, message: &str, close: bool, cold_header: bool) {
    use std::io::Write;
    out.clear();
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n",
        message.len() + 1
    );
    if cold_header {
        out.extend_from_slice(b"x-keda-http-cold-start: false\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(message.as_bytes());
    out.push(b'\n');
}

/// Why waiting for upstream bytes ended without any.
enum Stalled {
    Eof,
    ClientGone,
    TimedOut,
    Failed(io::Error),
}

/// How one exchange with an upstream connection failed.
enum Failure {
    /// Nothing reached the client; the message says why (502).
    BadGateway(String),
    /// Response headers did not arrive in time (504).
    Timeout(&'static str),
    /// The connection was stale before any response byte: resend on a fresh one.
    Stale,
    /// The client went away or the response broke after its head was relayed.
    Aborted,
}

struct Conn<C> {
    client: C,
    /// Bytes read from the client and not yet served.
    buf: BytesMut,
    /// Bytes read from the upstream.
    ubuf: BytesMut,
    /// The next write (request head to the upstream, or response bytes to the client).
    out: Vec<u8>,
    /// One timer per connection, re-armed lazily (see [`Conn::wait_deadline`]).
    timer: Pin<Box<Sleep>>,
    remote: SocketAddr,
    /// Watch the client for EOF while waiting on the upstream (off once it pipelined a lot).
    watch_client: bool,
}

/// How reading from the client ended.
enum Read {
    /// More bytes are in the buffer.
    Data,
    /// The client closed the connection (or it failed).
    Closed,
    /// The deadline passed.
    TimedOut,
    /// The interceptor is stopping and the connection was idle.
    Stopped,
}

impl<C: AsyncRead + AsyncWrite + Unpin> Conn<C> {
    fn hand_off(self) -> Outcome<C> {
        Outcome::HandOff {
            stream: self.client,
            buffered: self.buf.freeze(),
        }
    }

    /// Reads more of a request into `buf`, until `deadline`; `stopping` ends the wait too
    /// when `idle` (between requests).
    async fn read_more(
        &mut self,
        deadline: Option<Instant>,
        stopping: Pin<&mut impl Future<Output = ()>>,
        idle: bool,
    ) -> Read {
        self.buf.reserve(READ_CHUNK);
        let read = tokio::select! {
            biased;
            read = self.client.read_buf(&mut self.buf) => read,
            () = wait_deadline(&mut self.timer, deadline) => {
                tracing::debug!(remote = %self.remote, idle, "client read timeout");
                return Read::TimedOut;
            }
            () = stopping, if idle => return Read::Stopped,
        };
        match read {
            Ok(n) if n > 0 => Read::Data,
            _ => Read::Closed,
        }
    }

    /// Forwards one request whose upstream head is in `out`, and relays the response.
    async fn forward(&mut self, proxy: &Proxy, request: Forward) -> Next {
        let start = Instant::now();
        let entry = &request.entry;
        let mut tally = Tally {
            in_flight: Some(entry.counter.start()),
            proxy,
            entry,
            method: request.method,
            start,
            remote: self.remote,
        };
        let backend = &entry.backend;
        let attempts = MAX_CONNECT_ATTEMPTS;
        let mut excluded: [Option<SocketAddr>; MAX_CONNECT_ATTEMPTS] = [None; MAX_CONNECT_ATTEMPTS];
        let mut last_error = String::new();
        let mut result = Err(Failure::BadGateway(String::new()));
        'endpoints: for attempt in 0..attempts {
            let exclude_buf: [SocketAddr; MAX_CONNECT_ATTEMPTS] =
                excluded.map(|e| e.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))));
            let Some(upstream) = backend.pick_endpoint(&exclude_buf[..attempt]) else {
                break;
            };
            excluded[attempt] = Some(upstream.addr());
            let _outstanding = upstream.begin();
            let mut pooled = upstream.take_idle(start, proxy.config.idle_conn_timeout);
            loop {
                let reused = pooled.is_some();
                let stream = match pooled.take() {
                    Some(stream) => stream,
                    None => match connect(upstream.addr(), proxy.config.connect_timeout).await {
                        Ok(stream) => stream,
                        Err(error) => {
                            last_error =
                                format!("connecting to {} failed: {error}", upstream.addr());
                            tracing::debug!(backend = %backend.key(), error = last_error, "connect failed");
                            continue 'endpoints;
                        }
                    },
                };
                result = self
                    .exchange(proxy, &request, &upstream, stream, &mut tally)
                    .await;
                match &result {
                    Err(Failure::Stale) if reused && request.idempotent => continue,
                    _ => break 'endpoints,
                }
            }
        }
        let status = match result {
            Ok(status) => status,
            Err(Failure::Aborted) => {
                // The client is gone or saw a truncated response: count out, record nothing.
                drop(tally);
                return Next::Close;
            }
            Err(failure) => {
                let (status, message) = match failure {
                    Failure::Timeout(message) => (504, message.to_owned()),
                    Failure::BadGateway(message) if !message.is_empty() => (502, message),
                    Failure::Stale => (
                        502,
                        "backend closed the connection before responding".to_owned(),
                    ),
                    _ if !last_error.is_empty() => (502, last_error),
                    _ => (
                        502,
                        format!("no ready endpoint of service {}", backend.key()),
                    ),
                };
                let close = request.client_close || proxy.draining.load(Ordering::Acquire);
                write_plain(
                    &mut self.out,
                    status,
                    &message,
                    close,
                    proxy.config.enable_cold_start_header,
                );
                tally.settle(status);
                let written = send(&mut self.client, &self.out).await;
                return if written.is_ok() && !close {
                    Next::KeepAlive
                } else {
                    Next::Close
                };
            }
        };
        tally.settle(status.code);
        if status.close {
            Next::Close
        } else {
            Next::KeepAlive
        }
    }

    /// Sends the head in `out` on `stream` and relays the response to the client.
    async fn exchange(
        &mut self,
        proxy: &Proxy,
        request: &Forward,
        upstream: &Upstream,
        mut stream: TcpStream,
        tally: &mut Tally<'_>,
    ) -> Result<Relayed, Failure> {
        let entry = &request.entry;
        let start = tally.start;
        let header_deadline = match (entry.request_timeout, entry.response_header_timeout) {
            (Some(r), Some(h)) => Some(start + r.min(h)),
            (Some(r), None) => Some(start + r),
            (None, Some(h)) => Some(start + h),
            (None, None) => None,
        };
        if let Err(error) = stream.write_all(&self.out).await {
            tracing::debug!(upstream = %upstream.addr(), %error, "writing the request failed");
            return Err(Failure::Stale);
        }

        // The response head (after any informational 1xx heads, which are passed on).
        self.ubuf.clear();
        let (code, mut framing, upstream_reusable, close) = loop {
            let head = {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut slow_headers;
                let mut response = httparse::Response::new(&mut headers);
                let mut parsed = response.parse(&self.ubuf);
                if parsed == Err(httparse::Error::TooManyHeaders) {
                    slow_headers = vec![httparse::EMPTY_HEADER; MAX_HEADERS_SLOW];
                    response = httparse::Response::new(&mut slow_headers);
                    parsed = response.parse(&self.ubuf);
                }
                match parsed {
                    Ok(httparse::Status::Complete(len)) => Some(response_head(
                        &mut self.out,
                        proxy,
                        request,
                        &response,
                        len,
                    )?),
                    Ok(httparse::Status::Partial) if self.ubuf.len() < MAX_RESPONSE_HEAD => None,
                    Ok(httparse::Status::Partial) => {
                        return Err(Failure::BadGateway(format!(
                            "backend {} sent a response head over {MAX_RESPONSE_HEAD} bytes",
                            upstream.addr()
                        )));
                    }
                    Err(error) => {
                        return Err(Failure::BadGateway(format!(
                            "backend {} sent an invalid response: {error}",
                            upstream.addr()
                        )));
                    }
                }
            };
            match head {
                Some(HeadOut::Final {
                    len,
                    code,
                    framing,
                    reusable,
                    close,
                }) => {
                    self.ubuf.advance(len);
                    break (code, framing, reusable, close);
                }
                Some(HeadOut::Switching { len }) => {
                    let tunnelled = self
                        .tunnel(upstream, stream, len, proxy.config.enable_cold_start_header)
                        .await;
                    if tunnelled.is_ok() {
                        tally.settle(101);
                    }
                    return tunnelled;
                }
                Some(HeadOut::Informational { len }) => {
                    let informational = self.ubuf.split_to(len);
                    if send(&mut self.client, &informational).await.is_err() {
                        return Err(Failure::Aborted);
                    }
                    continue;
                }
                None => {}
            }
            match self.read_upstream(&mut stream, header_deadline).await {
                Ok(()) => {}
                Err(Stalled::Eof) if self.ubuf.is_empty() => return Err(Failure::Stale),
                Err(Stalled::Eof) => {
                    return Err(Failure::BadGateway(format!(
                        "backend {} closed the connection in the middle of the response head",
                        upstream.addr()
                    )));
                }
                Err(Stalled::Failed(error)) if self.ubuf.is_empty() => {
                    tracing::debug!(upstream = %upstream.addr(), %error, "reading the response failed");
                    return Err(Failure::Stale);
                }
                Err(Stalled::Failed(error)) => {
                    return Err(Failure::BadGateway(format!(
                        "backend {} failed: {error}",
                        upstream.addr()
                    )));
                }
                Err(Stalled::ClientGone) => return Err(Failure::Aborted),
                Err(Stalled::TimedOut) => {
                    let request_expired = entry
                        .request_timeout
                        .is_some_and(|r| Instant::now() >= start + r);
                    return Err(Failure::Timeout(if request_expired {
                        "request timeout exceeded waiting for the backend's response headers"
                    } else {
                        "timed out waiting for the backend's response headers"
                    }));
                }
            }
        };

        // The body: what is buffered goes out with the head, then relay until it ends.
        // Counts and metrics settle before the last bytes go out, so a client that reads its
        // response and then looks at them sees this request accounted for.
        // Nothing reached the client yet: a malformed start of the body is still a clean 502.
        let mut done = match self.take_body(&mut framing) {
            Ok(done) => done,
            Err(_) => {
                return Err(Failure::BadGateway(format!(
                    "backend {} sent a malformed chunked body",
                    upstream.addr()
                )));
            }
        };
        if done {
            tally.settle(code);
        }
        if send(&mut self.client, &self.out).await.is_err() {
            return Err(Failure::Aborted);
        }
        while !done {
            match self.read_upstream(&mut stream, None).await {
                Ok(()) => {}
                Err(Stalled::Eof) if matches!(framing, Framing::UntilClose) => break,
                Err(_) => return Err(Failure::Aborted),
            }
            self.out.clear();
            done = self.take_body(&mut framing)?;
            if done {
                tally.settle(code);
            }
            if send(&mut self.client, &self.out).await.is_err() {
                return Err(Failure::Aborted);
            }
        }
        tally.settle(code);
        if upstream_reusable && framing.is_done() && self.ubuf.is_empty() {
            upstream.put_idle(stream, Instant::now(), proxy.config.max_idle_conns_per_host);
        } else {
            tracing::debug!(upstream = %upstream.addr(), upstream_reusable, done = framing.is_done(), left = self.ubuf.len(), "not pooling");
        }
        Ok(Relayed { code, close })
    }

    /// Relays the `101` head (the first `len` bytes of `ubuf`) and joins the client and the
    /// upstream connection until either closes.
    async fn tunnel(
        &mut self,
        upstream: &Upstream,
        mut stream: TcpStream,
        len: usize,
        cold_header: bool,
    ) -> Result<Relayed, Failure> {
        // The head (with the cold-start header) and whatever followed it go to the client;
        // whatever the client sent after its request goes to the upstream.
        self.out.clear();
        if cold_header && self.ubuf[..len].ends_with(b"\r\n\r\n") {
            self.out.extend_from_slice(&self.ubuf[..len - 2]);
            self.out
                .extend_from_slice(b"x-keda-http-cold-start: false\r\n\r\n");
            self.out.extend_from_slice(&self.ubuf[len..]);
        } else {
            self.out.extend_from_slice(&self.ubuf);
        }
        if send(&mut self.client, &self.out).await.is_err()
            || stream.write_all(&self.buf).await.is_err()
        {
            return Err(Failure::Aborted);
        }
        self.ubuf.clear();
        self.buf.clear();
        match tokio::io::copy_bidirectional(&mut self.client, &mut stream).await {
            Ok((up, down)) => {
                tracing::debug!(upstream = %upstream.addr(), up, down, "upgraded connection closed");
            }
            Err(error) => {
                tracing::debug!(upstream = %upstream.addr(), %error, "upgraded connection failed");
            }
        }
        Ok(Relayed {
            code: 101,
            close: true,
        })
    }

    /// Moves the body bytes in `ubuf` to `out`; whether the body is complete.
    fn take_body(&mut self, framing: &mut Framing) -> Result<bool, Failure> {
        match framing.feed(&self.ubuf) {
            Ok(Fed::More) => {
                self.out.extend_from_slice(&self.ubuf);
                self.ubuf.clear();
                Ok(false)
            }
            Ok(Fed::End(n)) => {
                self.out.extend_from_slice(&self.ubuf[..n]);
                self.ubuf.advance(n);
                Ok(true)
            }
            // The head is out already; all that is left is to cut the response short.
            Err(_) => Err(Failure::Aborted),
        }
    }

    /// Reads more upstream bytes into `ubuf`, watching the client for EOF meanwhile.
    async fn read_upstream(
        &mut self,
        stream: &mut TcpStream,
        deadline: Option<Instant>,
    ) -> Result<(), Stalled> {
        let Self {
            client,
            buf,
            ubuf,
            timer,
            watch_client,
            ..
        } = self;
        ubuf.reserve(READ_CHUNK);
        loop {
            if *watch_client {
                buf.reserve(4096);
            }
            tokio::select! {
                biased;
                read = stream.read_buf(ubuf) => return match read {
                    Ok(0) => Err(Stalled::Eof),
                    Ok(_) => Ok(()),
                    Err(error) => Err(Stalled::Failed(error)),
                },
                // The client sent something while its request is served: EOF (gone) or the
                // next pipelined request, kept for later.
                read = client.read_buf(buf), if *watch_client => match read {
                    Ok(0) | Err(_) => return Err(Stalled::ClientGone),
                    Ok(_) => {
                        if buf.len() > 2 * MAX_RESPONSE_HEAD {
                            *watch_client = false;
                        }
                    }
                },
                () = wait_deadline(timer, deadline) => return Err(Stalled::TimedOut),
            }
        }
    }
}

/// Checks a complete response head and writes the client's version of it to `out`.
fn response_head(
    out: &mut Vec<u8>,
    proxy: &Proxy,
    request: &Forward,
    response: &httparse::Response<'_, '_>,
    len: usize,
) -> Result<HeadOut, Failure> {
    let code = response.code.unwrap_or(0);
    if (100..200).contains(&code) && code != 101 {
        return Ok(HeadOut::Informational { len });
    }
    if code == 101 && request.upgrade {
        return Ok(HeadOut::Switching { len });
    }
    if code == 101 || !(200..=999).contains(&code) {
        return Err(Failure::BadGateway(format!(
            "backend answered with status {code}, which this proxy does not relay"
        )));
    }
    let mut upstream_keep_alive = response.version == Some(1);
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut connection_names_headers = false;
    for h in response.headers.iter() {
        if is(h.name, "connection") {
            for token in tokens(h.value) {
                if token.eq_ignore_ascii_case(b"close") {
                    upstream_keep_alive = false;
                } else if !token.eq_ignore_ascii_case(b"keep-alive") && !is_protected(token) {
                    connection_names_headers = true;
                }
            }
        } else if is(h.name, "transfer-encoding") {
            transfer_encoding = true;
            chunked = tokens(h.value)
                .last()
                .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
        } else if is(h.name, "content-length") {
            match (crate::h1::content_length(h.value), content_length) {
                (Some(n), None) => content_length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => {
                    return Err(Failure::BadGateway(
                        "backend sent an invalid Content-Length".to_owned(),
                    ));
                }
            }
        }
    }
    let framing = if request.head || code == 204 || code == 304 {
        Framing::Empty
    } else if transfer_encoding {
        if chunked {
            Framing::Chunked(Default::default())
        } else {
            Framing::UntilClose
        }
    } else {
        match content_length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    let close = request.client_close
        || matches!(framing, Framing::UntilClose)
        || proxy.draining.load(Ordering::Acquire);
    let cold_header = proxy.config.enable_cold_start_header;

    out.clear();
    {
        // `code` is within 200..=999 here: three digits.
        let digits = [
            b'0' + (code / 100) as u8,
            b'0' + (code / 10 % 10) as u8,
            b'0' + (code % 10) as u8,
        ];
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(&digits);
        out.push(b' ');
        out.extend_from_slice(response.reason.unwrap_or_default().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for h in response.headers.iter() {
        let name = h.name;
        if is_hop_by_hop(name)
            || (cold_header && is(name, "x-keda-http-cold-start"))
            // With Transfer-Encoding the length is the chunks' (RFC 9112 §6.3): a
            // Content-Length next to it must not reach the client.
            || (transfer_encoding && is(name, "content-length"))
            || (connection_names_headers && named_by_connection(response.headers, name))
        {
            continue;
        }
        push_header(out, name.as_bytes(), h.value);
    }
    if cold_header {
        out.extend_from_slice(b"x-keda-http-cold-start: false\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(HeadOut::Final {
        len,
        code,
        framing,
        reusable: upstream_keep_alive,
        close,
    })
}

/// One request's count and metrics, settled once.
struct Tally<'a> {
    in_flight: Option<InFlight>,
    proxy: &'a Proxy,
    entry: &'a RouteEntry,
    method: &'static str,
    start: Instant,
    remote: SocketAddr,
}

impl Tally<'_> {
    /// Records the request with `status` and counts it out (later calls do nothing). Dropping
    /// an unsettled tally counts the request out without recording it (the client went away).
    fn settle(&mut self, status: u16) {
        let Some(in_flight) = self.in_flight.take() else {
            return;
        };
        let elapsed = self.start.elapsed();
        record(
            &self.proxy.metrics,
            in_flight.counter(),
            self.method,
            status,
            elapsed,
        );
        if self.proxy.config.log_requests {
            tracing::info!(remote = %self.remote, route = %self.entry.counter.key(), status, cold = false, elapsed_ms = elapsed.as_millis() as u64, "request");
        }
    }
}

/// The response went out; its status and whether the client connection closes after it.
struct Relayed {
    code: u16,
    close: bool,
}

enum HeadOut {
    Informational {
        len: usize,
    },
    /// `101 Switching Protocols` to an upgrade request: relayed as is, then a tunnel.
    Switching {
        len: usize,
    },
    Final {
        len: usize,
        code: u16,
        framing: Framing,
        reusable: bool,
        close: bool,
    },
}

/// Resolves once `deadline` passed (never for `None`). The timer is only moved when it would
/// fire too late, so a connection serving many requests re-arms it rarely: firing early just
/// re-checks the current deadline.
async fn wait_deadline(timer: &mut Pin<Box<Sleep>>, deadline: Option<Instant>) {
    let Some(deadline) = deadline else {
        return std::future::pending().await;
    };
    loop {
        if timer.is_elapsed() || timer.deadline() > deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().await;
        if Instant::now() >= deadline {
            return;
        }
    }
}

/// Writes `bytes` to the client and flushes (a no-op on TCP; TLS may buffer a record).
async fn send<C: AsyncWrite + Unpin>(client: &mut C, bytes: &[u8]) -> io::Result<()> {
    client.write_all(bytes).await?;
    client.flush().await
}

async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timeout"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A client connection handed to the general path: the bytes already read come first.
pub(crate) struct Prefixed<C> {
    prefix: Bytes,
    io: C,
}

impl<C> Prefixed<C> {
    /// `io`, reading `prefix` before anything else.
    pub(crate) fn new(prefix: Bytes, io: C) -> Self {
        Self { prefix, io }
    }
}

impl<C: AsyncRead + Unpin> AsyncRead for Prefixed<C> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return std::task::Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<C: AsyncWrite + Unpin> AsyncWrite for Prefixed<C> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
