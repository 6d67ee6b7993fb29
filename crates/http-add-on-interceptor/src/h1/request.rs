//! The HTTP/1.1 codec's request side: a parsed head becomes a plan (answer here, forward, or
//! leave to hyper), and a forwarded head is rewritten into one buffer.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_add_on_types::routing::RequestHeaders;

use super::framing::Framing;
use super::rules::{BodyFraming, Verdict, inspect_request, is, named_by_connection};
use crate::headers::is_hop_by_hop;
use crate::metrics::method_label;
use crate::request::trace::is_trace_header;
use crate::request::{Policy, Reply, Route, ServerSpan};
use crate::routes::RouteEntry;

/// Header lines parsed in place on the stack; a head with more is parsed again with room for
/// [`MAX_HEADERS_SLOW`].
pub(super) const MAX_HEADERS: usize = 64;
/// Most header lines of a request (as hyper's server allows) or a response.
pub(super) const MAX_HEADERS_SLOW: usize = 256;
/// Request bodies up to this size are read whole (and checked) before the request is
/// forwarded; a larger `Content-Length` body streams on hyper's HTTP/1.1 server.
pub(super) const MAX_BUFFERED_BODY: usize = 64 * 1024;

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

/// What to do with one parsed request head.
pub(super) enum Plan {
    /// Leave the connection to hyper's HTTP/1.1 server (HTTP/1.0, rare framings, large
    /// bodies, h2c backends).
    General,
    /// Answer here.
    Reply {
        reply: Reply,
        /// Close the connection after (the request's framing is not trusted, or its body
        /// was not read).
        close: bool,
        /// A `HEAD` request: no body.
        head: bool,
    },
    /// Forward; the rewritten head is in the connection's `out` buffer.
    Forward(Forward),
}

/// A request to forward, with what the codec needs after its head was consumed.
pub(super) struct Forward {
    pub entry: Arc<RouteEntry>,
    pub method: &'static str,
    /// `GET`, `HEAD`, … (the body is always buffered whole): may be resent on a fresh
    /// connection when a pooled one was stale.
    pub idempotent: bool,
    pub head: bool,
    pub client_close: bool,
    /// How the request body is framed.
    pub body: BodyFraming,
    /// The request asks for a protocol upgrade (`Connection: upgrade` + `Upgrade`).
    pub upgrade: bool,
    /// `Expect: 100-continue`: the codec answers `100 Continue` itself before reading the body.
    pub expect_continue: bool,
    /// What a cold request is looked up by again while it is held (its backend had no ready
    /// endpoint when planned); `None` for a warm one.
    pub held: Option<Held>,
    /// Its server span, when it is traced (the head then carries the span's trace headers).
    pub trace: Option<Arc<ServerSpan>>,
    /// It arrived on the TLS listener (so it leaves over TLS unless `appProtocol` says
    /// otherwise).
    pub via_tls: bool,
}

/// An owned copy of what routing looks at, for a request held through a cold start.
pub(super) struct Held {
    pub host: String,
    pub path: String,
    pub headers: HeaderMap,
}

impl Forward {
    /// How the request body is framed.
    pub fn body_framing(&self) -> Framing {
        match self.body {
            BodyFraming::None => Framing::Empty,
            BodyFraming::Length(n) => Framing::Length(n),
            BodyFraming::Chunked => Framing::Chunked(Default::default()),
        }
    }
}

/// A request's header lines as the route table sees them.
struct ParsedHeaders<'a, 'b>(&'a [httparse::Header<'b>]);

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
pub(super) fn plan(
    policy: &Policy,
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
    let head_method = method == "HEAD";
    let head = match inspect_request(method, path, headers) {
        Ok(head) => head,
        Err(Verdict::General) => return Plan::General,
        Err(Verdict::Reject(status, message)) => {
            if policy.config.log_requests {
                tracing::info!(%remote, path, status, reason = message, "request");
            }
            return Plan::Reply {
                reply: Reply::error(
                    StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                    message,
                ),
                close: true,
                head: head_method,
            };
        }
    };
    if let BodyFraming::Length(n) = head.body
        && n > MAX_BUFFERED_BODY as u64
    {
        return Plan::General;
    }
    if head.expect_continue && head.body == BodyFraming::Chunked {
        return Plan::General;
    }
    let host = head.host;
    let route_path = path.split_once('?').map_or(path, |(p, _)| p);
    let entry = match policy.route(remote, host, route_path, &ParsedHeaders(headers)) {
        Route::Forward(entry) => entry,
        Route::Reply(reply) => {
            return Plan::Reply {
                reply,
                // A body the client sent along is not read: close after.
                close: head.close || head.body != BodyFraming::None,
                head: head_method,
            };
        }
    };
    if entry.backend.speaks_http2() || entry.fallback.as_deref().is_some_and(|f| f.speaks_http2()) {
        return Plan::General;
    }
    let held = (!entry.backend.has_ready()).then(|| Held {
        host: host.to_owned(),
        path: route_path.to_owned(),
        headers: header_map(headers),
    });
    let method_label = method_label_bytes(method);
    let trace = policy.trace(&entry, method_label, host, route_path, |name| {
        headers
            .iter()
            .find(|h| is(h.name, name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    });

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
            || (head.expect_continue && is(name, "expect"))
            || (head.connection_names_headers && named_by_connection(headers, name))
            || (trace.is_some() && is_trace_header(name))
        {
            continue;
        }
        push_header(out, name.as_bytes(), h.value);
    }
    if let Some(span) = &trace {
        span.inject(|name, value| push_header(out, name.as_bytes(), value.as_bytes()));
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
        method: method_label,
        idempotent: matches!(
            method,
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        ),
        head: head_method,
        client_close: head.close,
        body: head.body,
        upgrade: head.upgrade.is_some(),
        expect_continue: head.expect_continue,
        held,
        trace,
        via_tls: tls,
    })
}

/// The parsed header lines as a map (only for requests held through a cold start).
fn header_map(headers: &[httparse::Header<'_>]) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(headers.len());
    for h in headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) {
            map.append(name, value);
        }
    }
    map
}

fn method_label_bytes(method: &str) -> &'static str {
    http::Method::from_bytes(method.as_bytes()).map_or("_OTHER", |m| method_label(&m))
}

pub(super) fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes `reply` as a complete HTTP/1.1 response to `out` (replacing what was there): no
/// body for `HEAD`, `x-keda-http-cold-start` when `cold` is given, `connection: close` when
/// `close`.
pub(super) fn write_reply(
    out: &mut Vec<u8>,
    reply: &Reply,
    head: bool,
    cold: Option<bool>,
    close: bool,
) {
    use std::io::Write;
    out.clear();
    let status = reply.status;
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    for (name, value) in reply.headers.iter() {
        if name == http::header::CONTENT_LENGTH
            || name == http::header::TRANSFER_ENCODING
            || name == http::header::CONNECTION
            || (cold.is_some() && name == crate::headers::COLD_START)
        {
            continue;
        }
        push_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    if !bodiless {
        let _ = write!(out, "content-length: {}\r\n", reply.body.len());
    }
    if let Some(cold) = cold {
        out.extend_from_slice(if cold {
            b"x-keda-http-cold-start: true\r\n"
        } else {
            b"x-keda-http-cold-start: false\r\n"
        });
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head && !bodiless {
        out.extend_from_slice(&reply.body);
    }
}
