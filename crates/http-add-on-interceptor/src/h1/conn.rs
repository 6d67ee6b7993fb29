//! The HTTP/1.1 codec's connection loop: reads request heads and bodies within their
//! deadlines, answers or forwards each request, and hands the connection to hyper when a
//! request's shape needs it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use super::framing::Fed;
use super::request::{MAX_BUFFERED_BODY, Plan, parse_request, plan, write_reply};
use super::rules::BodyFraming;
use crate::request::{Policy, Reply};

/// Bytes reserved before each read.
pub(super) const READ_CHUNK: usize = 16 * 1024;
/// Bytes a client may pipeline while its request is served before the codec stops reading.
pub(super) const MAX_PIPELINED: usize = 128 * 1024;

/// How a connection left the codec.
pub(crate) enum Outcome<C> {
    /// The connection is finished.
    Done,
    /// Hyper's HTTP/1.1 server serves the rest of the connection, starting with `buffered`.
    HandOff {
        /// The client connection.
        stream: C,
        /// Bytes read from it and not yet served.
        buffered: Bytes,
    },
}

/// Whether the client connection stays open after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    KeepAlive,
    Close,
}

/// One client connection's state, reused by all its requests.
pub(super) struct Conn<C> {
    pub client: C,
    /// Bytes read from the client and not yet served.
    pub buf: BytesMut,
    /// Bytes read from the upstream.
    pub ubuf: BytesMut,
    /// The next write (request head to the upstream, or response bytes to the client).
    pub out: Vec<u8>,
    /// One timer per connection, re-armed lazily (see [`wait_deadline`]).
    pub timer: Pin<Box<Sleep>>,
    pub remote: SocketAddr,
    /// Watch the client for EOF while waiting on the upstream (off once it pipelined a lot).
    pub watch_client: bool,
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

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Serves `stream` (received over TLS when `tls`) until it closes or is handed to hyper.
pub(crate) async fn serve<C: AsyncRead + AsyncWrite + Unpin>(
    policy: &Arc<Policy>,
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
    let config = &policy.config;
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
                    plan(policy, remote, &client_ip, tls, request, &mut conn.out),
                )),
                Ok(httparse::Status::Partial) if conn.buf.len() < config.max_header_bytes => None,
                // Oversized or malformed: hyper answers 431 / 400.
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
                    return conn
                        .fail(
                            StatusCode::REQUEST_TIMEOUT,
                            "timed out reading the request head",
                        )
                        .await;
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
            Plan::Reply { reply, close, head } => {
                conn.buf.advance(head_len);
                let close = close || policy.draining();
                write_reply(&mut conn.out, &reply, head, None, close);
                match send(&mut conn.client, &conn.out).await {
                    Ok(()) if !close => Next::KeepAlive,
                    _ => Next::Close,
                }
            }
            Plan::Forward(mut request) => {
                if request.expect_continue
                    && request.body != BodyFraming::None
                    && conn.buf.len() == head_len
                    && send(&mut conn.client, CONTINUE).await.is_err()
                {
                    return Outcome::Done;
                }
                // The body is read whole (and checked) before anything is forwarded, so the
                // request and its body go out in one write and can be resent.
                let mut framing = request.body_framing();
                let mut body_len = 0;
                let complete = loop {
                    match framing.feed(&conn.buf[head_len + body_len..]) {
                        Ok(Fed::End(len)) => break Some(body_len + len),
                        Ok(Fed::More) => body_len = conn.buf.len() - head_len,
                        Err(_) => break None,
                    }
                    if body_len >= MAX_BUFFERED_BODY {
                        // Only a chunked body gets here (a long Content-Length is planned
                        // for hyper): nothing is consumed yet, so hyper can take it.
                        return conn.hand_off();
                    }
                    let deadline = config.request_body_timeout.map(|t| Instant::now() + t);
                    match conn.read_more(deadline, stopping.as_mut(), false).await {
                        Read::Data => {}
                        Read::TimedOut => {
                            return conn
                                .fail(
                                    StatusCode::REQUEST_TIMEOUT,
                                    "timed out reading the request body",
                                )
                                .await;
                        }
                        Read::Closed | Read::Stopped => return Outcome::Done,
                    }
                };
                let Some(body_len) = complete else {
                    // Nothing was forwarded; the connection's framing is lost, so it closes.
                    return conn
                        .fail(StatusCode::BAD_REQUEST, "malformed chunked request body")
                        .await;
                };
                conn.buf.advance(head_len);
                conn.out.extend_from_slice(&conn.buf[..body_len]);
                conn.buf.advance(body_len);
                let trace = request.trace.take();
                crate::request::traced(trace, conn.forward(policy, request)).await
            }
        };
        if next == Next::Close || *stop.borrow() {
            let _ = conn.client.shutdown().await;
            return Outcome::Done;
        }
        idle_deadline = config.idle_timeout.map(|t| Instant::now() + t);
    }
}

impl<C: AsyncRead + AsyncWrite + Unpin> Conn<C> {
    fn hand_off(self) -> Outcome<C> {
        Outcome::HandOff {
            stream: self.client,
            buffered: self.buf.freeze(),
        }
    }

    /// Answers a request that cannot be served (before it was counted) and closes.
    async fn fail(mut self, status: StatusCode, message: &'static str) -> Outcome<C> {
        write_reply(
            &mut self.out,
            &Reply::error(status, message),
            false,
            None,
            true,
        );
        let _ = send(&mut self.client, &self.out).await;
        let _ = self.client.shutdown().await;
        Outcome::Done
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

    /// Resolves when the client closes its connection (or it fails); bytes it pipelines
    /// meanwhile are kept, up to [`MAX_PIPELINED`] (then it stops reading).
    pub(super) async fn client_gone(&mut self) {
        loop {
            if !self.watch_client {
                return std::future::pending().await;
            }
            self.buf.reserve(4096);
            match self.client.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => self.watch_client = self.buf.len() <= MAX_PIPELINED,
            }
        }
    }
}

/// Resolves once `deadline` passed (never for `None`). The timer is only moved when it would
/// fire too late, so a connection serving many requests re-arms it rarely: firing early just
/// re-checks the current deadline.
pub(super) async fn wait_deadline(timer: &mut Pin<Box<Sleep>>, deadline: Option<Instant>) {
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
pub(super) async fn send<C: AsyncWrite + Unpin>(client: &mut C, bytes: &[u8]) -> io::Result<()> {
    client.write_all(bytes).await?;
    client.flush().await
}

/// A client connection handed to hyper: the bytes already read come first.
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
