//! The hyper codec's HTTP/1.1 client: requests go out on connections of the endpoint's own
//! pool (the one the HTTP/1.1 codec uses). The request head is written by hand and the
//! response head is read by the HTTP/1.1 codec's own rules ([`inspect_response`]); the
//! response body ([`H1Body`]) reads from the connection and checks it back into the pool the
//! moment the body is complete, with no task per request. Upgrades go through hyper's
//! HTTP/1.1 client, whose connection becomes the tunnel.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::response::Parts;
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::time::Instant;
use tokio_rustls::rustls::pki_types::ServerName;

use super::body::{BoxError, OutBody};
use super::{Sent, source_chain};
use crate::backend_tls::{self, BackendStream, ConnectError, TlsTarget};
use crate::backends::{IdleBudget, Upstream};
use crate::config::Config;
use crate::h1::framing::{Fed, Framing};
use crate::h1::response::{MAX_RESPONSE_HEAD, inspect_response, parse_response};

/// How the request body is framed on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Out {
    /// No body: the head is the whole request.
    None,
    /// The body's bytes as they come (the request carries `Content-Length`).
    Length,
    /// Re-framed as chunks (HTTP/2 bodies of unknown length).
    Chunked,
}

/// How one exchange on a connection failed.
enum Failed {
    /// The connection was closed before any response byte: a pooled one was stale.
    Stale(String),
    /// Anything else, after the request may have reached the backend.
    Other(String),
}

/// A new connection to `upstream`, TLS for `tls`.
async fn connect(
    config: &Config,
    upstream: &Upstream,
    tls: Option<TlsTarget<'_>>,
) -> Result<BackendStream, Sent> {
    backend_tls::connect(upstream.addr(), config.connect_timeout, tls)
        .await
        .map_err(|error| match error {
            ConnectError::Tcp(error) => Sent::Connect(error.to_string()),
            ConnectError::Tls(failure) => Sent::Tls(failure),
        })
}

/// Sends `req` on an HTTP/1.1 connection (TLS for `tls`) of `upstream`'s pool (a new one
/// when none is idle; a stale pooled one is replaced once, when the request had no body to
/// lose) and returns the response, whose body reads the rest from the connection.
pub(super) async fn send(
    config: &Config,
    budget: &Arc<IdleBudget>,
    upstream: &Arc<Upstream>,
    tls: Option<TlsTarget<'_>>,
    req: Request<OutBody>,
) -> Result<Response<H1Body>, Sent> {
    let (parts, body) = req.into_parts();
    let (head, out) = encode_head(&parts, body.is_end_stream());
    let head_request = parts.method == Method::HEAD;
    let mut pooled = upstream.take_idle(Instant::now(), config.idle_conn_timeout, tls.is_some());
    let response = |(parts, conn, buf, framing, reusable): Exchanged| {
        let mut body = H1Body {
            conn: Some(conn),
            buf,
            framing,
            reusable,
            upstream: upstream.clone(),
            budget: budget.clone(),
            max: config.max_idle_conns_per_host,
        };
        if body.framing.is_done() {
            body.finish();
        }
        Response::from_parts(parts, body)
    };
    loop {
        let reused = pooled.is_some();
        let stream = match pooled.take() {
            Some(stream) => stream,
            None => connect(config, upstream, tls).await?,
        };
        if out != Out::None {
            return exchange_with_body(stream, head, out, body, head_request)
                .await
                .map(response)
                .map_err(|(Failed::Stale(why) | Failed::Other(why))| Sent::Failed(why));
        }
        match exchange(stream, &head, head_request).await {
            Ok(exchanged) => return Ok(response(exchanged)),
            Err(Failed::Stale(why)) if reused => {
                tracing::debug!(upstream = %upstream.addr(), why, "pooled connection was stale");
            }
            Err(Failed::Stale(why) | Failed::Other(why)) => return Err(Sent::Failed(why)),
        }
    }
}

/// The request head in HTTP/1.1 form (origin-form target, headers as they are), and how
/// its body goes out.
fn encode_head(parts: &http::request::Parts, no_body: bool) -> (Vec<u8>, Out) {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut head = Vec::with_capacity(
        64 + path.len()
            + parts
                .headers
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len() + 4)
                .sum::<usize>(),
    );
    head.extend_from_slice(parts.method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(path.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    let out = if parts.headers.contains_key(header::CONTENT_LENGTH) {
        if no_body { Out::None } else { Out::Length }
    } else if no_body {
        // As hyper's client does: a method that usually has a body says it has none.
        if matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) {
            head.extend_from_slice(b"content-length: 0\r\n");
        }
        Out::None
    } else {
        head.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Out::Chunked
    };
    head.extend_from_slice(b"\r\n");
    (head, out)
}

/// A response head, the connection its body comes on with what was read of it, the body's
/// framing, and whether the connection may be reused after the body.
type Exchanged = (Parts, Conn, BytesMut, Framing, bool);

/// Writes a request without a body on `stream` and reads the final response head.
async fn exchange(
    mut stream: BackendStream,
    head: &[u8],
    head_request: bool,
) -> Result<Exchanged, Failed> {
    let mut buf = BytesMut::with_capacity(4096);
    let written = match stream.write_all(head).await {
        Ok(()) => stream.flush().await,
        Err(error) => Err(error),
    };
    written.map_err(|error| Failed::Stale(format!("writing the request failed: {error}")))?;
    let (parts, framing, reusable) = read_head(&mut stream, &mut buf, head_request).await?;
    Ok((parts, Conn::Whole(stream), buf, framing, reusable))
}

/// Writes a request and its body on `stream` while reading the final response head. A
/// backend that answers before the whole body was sent (an error, or an echo streaming its
/// answer) gets the rest from a task of its own, and the connection is not reused.
async fn exchange_with_body(
    stream: BackendStream,
    head: Vec<u8>,
    out: Out,
    mut body: OutBody,
    head_request: bool,
) -> Result<Exchanged, Failed> {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut buf = BytesMut::with_capacity(4096);
    let mut write = Box::pin(async move {
        let written = write_body(&mut writer, &head, out, &mut body).await;
        (written, writer)
    });
    let (head, writer) = {
        let read = read_head(&mut reader, &mut buf, head_request);
        tokio::pin!(read);
        tokio::select! {
            biased;
            (written, writer) = &mut write => {
                written.map_err(Failed::Other)?;
                (read.await?, Some(writer))
            }
            head = &mut read => (head?, None),
        }
    };
    let (parts, framing, reusable) = head;
    let (conn, reusable) = match writer {
        // The halves of one stream always rejoin.
        Some(writer) => (Conn::Whole(reader.unsplit(writer)), reusable),
        None => {
            tokio::spawn(async move {
                // Dropping the write half leaves the connection open (the read half keeps
                // it): shutting its write side would end the whole exchange for many servers.
                if let (Err(error), mut writer) = write.await {
                    // A body that failed leaves the connection half-sent: shut it.
                    tracing::debug!(error, "sending the rest of the request body failed");
                    let _ = writer.shutdown().await;
                }
            });
            (Conn::Half(reader), false)
        }
    };
    Ok((parts, conn, buf, framing, reusable))
}

/// Writes the head and the body (framed as `out` says), the head together with the first
/// bytes of the body.
async fn write_body(
    writer: &mut WriteHalf<BackendStream>,
    head: &[u8],
    out: Out,
    body: &mut OutBody,
) -> Result<(), String> {
    let write_failed = |error: io::Error| format!("writing the request failed: {error}");
    let mut pending = head.to_vec();
    loop {
        if body.is_end_stream() {
            break;
        }
        match body.frame().await {
            None => break,
            Some(Err(error)) => return Err(format!("reading the request body failed: {error}")),
            Some(Ok(frame)) => {
                // Trailers have no place in an HTTP/1.1 request without `TE: trailers`.
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if data.is_empty() {
                    continue;
                }
                if out == Out::Chunked {
                    pending.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                    pending.extend_from_slice(&data);
                    pending.extend_from_slice(b"\r\n");
                } else {
                    pending.extend_from_slice(&data);
                }
                if !body.is_end_stream() {
                    // Flushed: a TLS stream may hold the record, and a streaming backend
                    // waits for it.
                    writer.write_all(&pending).await.map_err(write_failed)?;
                    writer.flush().await.map_err(write_failed)?;
                    pending.clear();
                }
            }
        }
    }
    if out == Out::Chunked {
        pending.extend_from_slice(b"0\r\n\r\n");
    }
    writer.write_all(&pending).await.map_err(write_failed)?;
    writer.flush().await.map_err(write_failed)
}

/// Reads the final response head (skipping informational ones) and says how its body is
/// framed and whether the connection may be reused after it. What follows the head stays
/// in `buf`.
async fn read_head(
    reader: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<(Parts, Framing, bool), Failed> {
    loop {
        if !buf.is_empty() {
            let parsed = parse_response(buf, |status, response| match status {
                Ok(httparse::Status::Complete(len)) => {
                    let code = response.code.unwrap_or(0);
                    if (100..200).contains(&code) {
                        if code == 101 {
                            return Err(Failed::Other(
                                "backend switched protocols without an upgrade request".into(),
                            ));
                        }
                        return Ok(Some((len, None)));
                    }
                    let facts = inspect_response(response, head_request)
                        .map_err(|why| Failed::Other(why.to_owned()))?;
                    Ok(Some((len, Some(facts))))
                }
                Ok(httparse::Status::Partial) if buf.len() < MAX_RESPONSE_HEAD => Ok(None),
                Ok(httparse::Status::Partial) => Err(Failed::Other(format!(
                    "backend sent a response head over {MAX_RESPONSE_HEAD} bytes"
                ))),
                Err(error) => Err(Failed::Other(format!(
                    "backend sent an invalid response: {error}"
                ))),
            })?;
            match parsed {
                Some((len, None)) => {
                    buf.advance(len);
                    continue;
                }
                Some((len, Some(facts))) => {
                    let head = buf.split_to(len).freeze();
                    let mut parts = response_parts(&head)?;
                    if facts.transfer_encoding {
                        parts.headers.remove(header::CONTENT_LENGTH);
                    }
                    return Ok((parts, facts.framing, facts.reusable));
                }
                None => {}
            }
        }
        match reader.read_buf(buf).await {
            Ok(0) if buf.is_empty() => {
                return Err(Failed::Stale(
                    "backend closed the connection before responding".into(),
                ));
            }
            Ok(0) => {
                return Err(Failed::Other(
                    "backend closed the connection in the middle of the response head".into(),
                ));
            }
            Ok(_) => {}
            Err(error) if buf.is_empty() => {
                return Err(Failed::Stale(format!(
                    "reading the response failed: {error}"
                )));
            }
            Err(error) => {
                return Err(Failed::Other(format!(
                    "reading the response failed: {error}"
                )));
            }
        }
    }
}

/// The status and headers of a complete response head; values share `head`'s bytes.
fn response_parts(head: &Bytes) -> Result<Parts, Failed> {
    parse_response(head, |_, response| {
        let mut headers = HeaderMap::with_capacity(response.headers.len());
        for h in response.headers.iter() {
            let name = HeaderName::from_bytes(h.name.as_bytes());
            let value = HeaderValue::from_maybe_shared(head.slice_ref(h.value));
            let (Ok(name), Ok(value)) = (name, value) else {
                return Err(Failed::Other(
                    "backend sent an invalid response header".into(),
                ));
            };
            headers.append(name, value);
        }
        let status = StatusCode::from_u16(response.code.unwrap_or(0))
            .map_err(|_| Failed::Other("backend sent an invalid status".into()))?;
        let mut parts = Response::new(()).into_parts().0;
        parts.status = status;
        parts.version = Version::HTTP_11;
        parts.headers = headers;
        Ok(parts)
    })
}

/// A response body read from a pooled HTTP/1.1 connection (chunked bodies decoded), which
/// goes back to the pool as the body completes when the response allowed it.
pub struct H1Body {
    conn: Option<Conn>,
    buf: BytesMut,
    framing: Framing,
    /// The connection may serve another request once the body is complete.
    reusable: bool,
    upstream: Arc<Upstream>,
    budget: Arc<IdleBudget>,
    max: usize,
}

/// The connection a response body is read from.
enum Conn {
    /// The whole connection, pooled after the body when it may be.
    Whole(BackendStream),
    /// Its read half, while a task still sends the request body: never pooled.
    Half(ReadHalf<BackendStream>),
}

/// The backend's response body was malformed or cut short.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BodyFailed(String);

impl H1Body {
    /// The body is complete: the connection goes back to the pool (unless the response said
    /// otherwise or the backend sent more than the body).
    fn finish(&mut self) {
        let Some(Conn::Whole(stream)) = self.conn.take() else {
            return;
        };
        if self.reusable && self.buf.is_empty() {
            self.upstream
                .put_idle(stream, Instant::now(), self.max, &self.budget);
        }
    }

    /// The next piece of body already buffered, if any; `Err` for a malformed chunk.
    fn take_buffered(&mut self) -> Result<Option<Bytes>, BoxError> {
        let Self { buf, framing, .. } = self;
        match framing {
            Framing::Empty => Ok(None),
            Framing::Length(_) | Framing::UntilClose => {
                let take = match framing {
                    Framing::Length(left) => {
                        usize::try_from(*left).map_or(buf.len(), |l| l.min(buf.len()))
                    }
                    _ => buf.len(),
                };
                framing
                    .feed(&buf[..take])
                    .map_err(|_| BoxError::from(BodyFailed("malformed body".into())))?;
                Ok((take > 0).then(|| buf.split_to(take).freeze()))
            }
            Framing::Chunked(scanner) => {
                let mut first: Option<(usize, usize)> = None;
                let mut joined: Option<BytesMut> = None;
                let fed = scanner.scan_with(buf, |at, len| match (&mut joined, first) {
                    (None, None) => first = Some((at, len)),
                    (None, Some((a, l))) => {
                        let mut j = BytesMut::with_capacity(l + len);
                        j.extend_from_slice(&buf[a..a + l]);
                        j.extend_from_slice(&buf[at..at + len]);
                        joined = Some(j);
                    }
                    (Some(j), _) => j.extend_from_slice(&buf[at..at + len]),
                });
                let consumed = match fed {
                    Ok(Fed::More) => buf.len(),
                    Ok(Fed::End(n)) => n,
                    Err(_) => {
                        return Err(
                            BodyFailed("backend sent a malformed chunked body".into()).into()
                        );
                    }
                };
                let data = match (joined, first) {
                    (Some(joined), _) => joined.freeze(),
                    (None, Some((at, len))) => {
                        buf.advance(at);
                        let data = buf.split_to(len).freeze();
                        buf.advance(consumed - at - len);
                        return Ok((!data.is_empty()).then_some(data));
                    }
                    (None, None) => Bytes::new(),
                };
                buf.advance(consumed);
                Ok((!data.is_empty()).then_some(data))
            }
        }
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.framing.is_done() {
                this.finish();
                return Poll::Ready(None);
            }
            if !this.buf.is_empty() {
                match this.take_buffered() {
                    Err(error) => {
                        this.conn = None;
                        return Poll::Ready(Some(Err(error)));
                    }
                    Ok(Some(data)) => {
                        if this.framing.is_done() {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Ok(None) => continue,
                }
            }
            let Some(conn) = &mut this.conn else {
                return Poll::Ready(None);
            };
            this.buf.reserve(16 * 1024);
            let read = match conn {
                Conn::Whole(stream) => std::pin::pin!(stream.read_buf(&mut this.buf)).poll(cx),
                Conn::Half(half) => std::pin::pin!(half.read_buf(&mut this.buf)).poll(cx),
            };
            match ready!(read) {
                Ok(0) => {
                    this.conn = None;
                    if matches!(this.framing, Framing::UntilClose) {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Err(BodyFailed(
                        "backend closed the connection in the middle of the body".into(),
                    )
                    .into())));
                }
                Ok(_) => {}
                Err(error) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(error.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.framing {
            Framing::Empty => SizeHint::with_exact(0),
            Framing::Length(left) => SizeHint::with_exact(*left),
            _ => SizeHint::default(),
        }
    }
}

/// Sends an upgrade request through hyper's HTTP/1.1 client on a new connection (TLS for
/// `tls`) of `upstream`; the connection runs in a task of its own and becomes the tunnel.
pub(super) async fn send_upgrade(
    config: &Config,
    upstream: &Arc<Upstream>,
    tls: Option<TlsTarget<'_>>,
    req: Request<OutBody>,
) -> Result<Response<Incoming>, Sent> {
    let stream = connect(config, upstream, tls).await?;
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|error| Sent::Failed(source_chain(&error)))?;
    tokio::spawn(async move {
        if let Err(error) = conn.with_upgrades().await {
            tracing::debug!(%error, "upstream connection failed");
        }
    });
    sender
        .send_request(req)
        .await
        .map_err(|error| Sent::Failed(source_chain(&error)))
}

/// HTTP/2-over-TLS connections to backends (`appProtocol: h2`, ALPN `h2`): one per endpoint
/// and server name, shared by its requests as streams, replaced once closed.
#[derive(Default)]
pub(super) struct H2Tls {
    conns: Mutex<HashMap<(SocketAddr, ServerName<'static>), SendRequest<OutBody>>>,
}

impl H2Tls {
    /// Sends `req` (an absolute `https` URI) on `upstream`'s connection, made now when there
    /// is none open.
    pub(super) async fn send(
        &self,
        config: &Config,
        upstream: &Upstream,
        tls: TlsTarget<'_>,
        req: Request<OutBody>,
    ) -> Result<Response<Incoming>, Sent> {
        let key = (upstream.addr(), tls.name.clone());
        let open = {
            let conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
            conns.get(&key).filter(|s| !s.is_closed()).cloned()
        };
        let mut sender = match open {
            Some(sender) => sender,
            None => {
                let stream = connect(config, upstream, Some(tls)).await?;
                let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .handshake(TokioIo::new(stream))
                    .await
                    .map_err(|error| Sent::Failed(source_chain(&error)))?;
                let addr = upstream.addr();
                tokio::spawn(async move {
                    if let Err(error) = conn.await {
                        tracing::debug!(upstream = %addr, %error, "HTTP/2 TLS connection failed");
                    }
                });
                let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
                conns.retain(|_, s| !s.is_closed());
                conns.insert(key, sender.clone());
                sender
            }
        };
        sender
            .ready()
            .await
            .map_err(|error| Sent::Failed(source_chain(&error)))?;
        sender
            .send_request(req)
            .await
            .map_err(|error| Sent::Failed(source_chain(&error)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(req: Request<()>, no_body: bool) -> (String, Out) {
        let (parts, ()) = req.into_parts();
        let (head, out) = encode_head(&parts, no_body);
        (String::from_utf8(head).unwrap(), out)
    }

    #[test]
    fn request_heads_say_how_their_body_is_framed() {
        let get = Request::get("http://a.test/p?q=1")
            .header("host", "a.test")
            .body(())
            .unwrap();
        let (text, out) = head(get, true);
        assert_eq!(text, "GET /p?q=1 HTTP/1.1\r\nhost: a.test\r\n\r\n");
        assert!(out == Out::None);

        let empty_post = Request::post("/").body(()).unwrap();
        let (text, out) = head(empty_post, true);
        assert_eq!(text, "POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
        assert!(out == Out::None);

        let sized = Request::put("/")
            .header("content-length", "3")
            .body(())
            .unwrap();
        let (text, out) = head(sized, false);
        assert_eq!(text, "PUT / HTTP/1.1\r\ncontent-length: 3\r\n\r\n");
        assert!(out == Out::Length);

        let streamed = Request::post("/").body(()).unwrap();
        let (text, out) = head(streamed, false);
        assert_eq!(
            text,
            "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        assert!(out == Out::Chunked);
    }
}
