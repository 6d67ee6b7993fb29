//! One forwarded HTTP/1.1 request: counted, admitted (held while cold), sent on a pooled or
//! new upstream connection of the chosen endpoint, and its response relayed byte for byte.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Buf;
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::conn::{Conn, MAX_PIPELINED, Next, READ_CHUNK, send, wait_deadline};
use super::framing::{Fed, Framing};
use super::request::{Forward, write_reply};
use super::response::{HeadOut, MAX_RESPONSE_HEAD, parse_response, response_head};
use crate::backend_tls::{self, BackendStream, ConnectError, TlsTarget};
use crate::backends::{Backend, Upstream, Wire};
use crate::request::{Admission, Attempts, Deadlines, Policy, Reply, Tally, backend_failed};
use crate::routes::RouteEntry;

/// Why waiting for upstream bytes ended without any.
pub(super) enum Stalled {
    Eof,
    ClientGone,
    TimedOut,
    Failed(io::Error),
}

/// How one exchange with an upstream connection failed.
pub(super) enum Failure {
    /// Nothing reached the client: answer with this.
    Reply(Reply),
    /// The connection was stale before any response byte: resend on a fresh one.
    Stale,
    /// The client went away or the response broke after its head was relayed.
    Aborted,
}

/// What one exchange needs besides the connection.
pub(super) struct Exchange<'a> {
    pub policy: &'a Policy,
    pub request: &'a Forward,
    pub entry: &'a RouteEntry,
    pub deadlines: &'a Deadlines,
    pub cold: bool,
}

impl<C: AsyncRead + AsyncWrite + Unpin> Conn<C> {
    /// Forwards one request whose upstream head and body are in `out`, and relays the
    /// response.
    pub(super) async fn forward(&mut self, policy: &Arc<Policy>, request: Forward) -> Next {
        let start = Instant::now();
        self.watch_client = self.buf.len() <= MAX_PIPELINED;
        let mut tally = policy.count(&request.entry, request.method, self.remote, start);
        let deadlines = Deadlines::new(&request.entry, start);
        let cold_header = policy.config.enable_cold_start_header;
        let close = request.client_close || policy.draining();
        // A cold request is held here, in the connection's task, while the client is watched.
        let admitted = match &request.held {
            None => None,
            Some(held) => {
                let admission = tokio::select! {
                    admission = policy.admit(request.entry.clone(), &held.host, &held.path, &held.headers, &deadlines) => admission,
                    () = self.client_gone() => return Next::Close,
                };
                tally.cold(true);
                match admission {
                    Admission::Forward {
                        entry,
                        backend,
                        cold,
                    } => Some((entry, backend, cold)),
                    Admission::Reply(reply) => {
                        return self
                            .reply(
                                &reply,
                                &request,
                                &mut tally,
                                cold_header.then_some(true),
                                close,
                            )
                            .await;
                    }
                }
            }
        };
        let (entry, backend, cold): (&RouteEntry, &Backend, bool) = match &admitted {
            Some((entry, backend, cold)) => (entry, backend, *cold),
            None => (&request.entry, &request.entry.backend, false),
        };
        let exchange = Exchange {
            policy,
            request: &request,
            entry,
            deadlines: &deadlines,
            cold,
        };
        // HTTP/2 backends never reach this codec (see `plan`): HTTP/1.1, over TLS or not.
        let tls = (backend.wire(request.via_tls) == Wire::Https).then(|| TlsTarget {
            config: &policy.config.backend_clients().http1,
            name: backend.server_name(),
        });
        let mut attempts = Attempts::new(entry, backend);
        let result = 'endpoints: loop {
            let upstream = match attempts.next(entry, backend) {
                Ok(upstream) => upstream,
                Err(reply) => break Err(Failure::Reply(reply)),
            };
            tally.sent(upstream.begin());
            let mut pooled =
                upstream.take_idle(start, policy.config.idle_conn_timeout, tls.is_some());
            loop {
                let reused = pooled.is_some();
                let stream = match pooled.take() {
                    Some(stream) => stream,
                    None => match backend_tls::connect(
                        upstream.addr(),
                        policy.config.connect_timeout,
                        tls,
                    )
                    .await
                    {
                        Ok(stream) => stream,
                        Err(ConnectError::Tcp(error)) => {
                            attempts.connect_failed(backend, &upstream, &error);
                            continue 'endpoints;
                        }
                        Err(ConnectError::Tls(failure)) => {
                            break 'endpoints Err(Failure::Reply(Reply::backend_tls(&failure)));
                        }
                    },
                };
                let result = self
                    .exchange(&exchange, &upstream, stream, &mut tally)
                    .await;
                match &result {
                    Err(Failure::Stale) if reused && request.idempotent => continue,
                    _ => break 'endpoints result,
                }
            }
        };
        match result {
            Ok(Next::Close) => Next::Close,
            Ok(Next::KeepAlive) if close => Next::Close,
            Ok(Next::KeepAlive) => Next::KeepAlive,
            // The client is gone or saw a truncated response: counted out, not recorded.
            Err(Failure::Aborted) => Next::Close,
            Err(failure) => {
                let reply = match failure {
                    Failure::Reply(reply) => reply,
                    _ => Reply::error(
                        StatusCode::BAD_GATEWAY,
                        "backend closed the connection before responding",
                    ),
                };
                self.reply(
                    &reply,
                    &request,
                    &mut tally,
                    cold_header.then_some(cold),
                    close,
                )
                .await
            }
        }
    }

    /// Answers a counted request with `reply`.
    async fn reply(
        &mut self,
        reply: &Reply,
        request: &Forward,
        tally: &mut Tally,
        cold: Option<bool>,
        close: bool,
    ) -> Next {
        write_reply(&mut self.out, reply, request.head, cold, close);
        tally.settle(reply.status.as_u16());
        match send(&mut self.client, &self.out).await {
            Ok(()) if !close => Next::KeepAlive,
            _ => Next::Close,
        }
    }

    /// Sends the request in `out` on `stream` and relays the response to the client.
    async fn exchange(
        &mut self,
        exchange: &Exchange<'_>,
        upstream: &Upstream,
        mut stream: BackendStream,
        tally: &mut Tally,
    ) -> Result<Next, Failure> {
        let policy = exchange.policy;
        let written = match stream.write_all(&self.out).await {
            // A TLS stream may hold the last record until flushed.
            Ok(()) => stream.flush().await,
            Err(error) => Err(error),
        };
        if let Err(error) = written {
            tracing::debug!(upstream = %upstream.addr(), %error, "writing the request failed");
            return Err(Failure::Stale);
        }
        let header_deadline = exchange
            .deadlines
            .response_head(exchange.entry, Instant::now());

        // The response head (after any informational 1xx heads, which are passed on).
        self.ubuf.clear();
        let (code, mut framing, upstream_reusable, close) = loop {
            let head = parse_response(&self.ubuf, |parsed, response| match parsed {
                Ok(httparse::Status::Complete(len)) => {
                    response_head(&mut self.out, exchange, response, len).map(Some)
                }
                Ok(httparse::Status::Partial) if self.ubuf.len() < MAX_RESPONSE_HEAD => Ok(None),
                Ok(httparse::Status::Partial) => Err(bad_gateway(format!(
                    "backend {} sent a response head over {MAX_RESPONSE_HEAD} bytes",
                    upstream.addr()
                ))),
                Err(error) => Err(bad_gateway(format!(
                    "backend {} sent an invalid response: {error}",
                    upstream.addr()
                ))),
            })?;
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
                    let cold = policy
                        .config
                        .enable_cold_start_header
                        .then_some(exchange.cold);
                    let tunnelled = self.tunnel(upstream, stream, len, cold).await;
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
                    return Err(bad_gateway(format!(
                        "backend {} closed the connection in the middle of the response head",
                        upstream.addr()
                    )));
                }
                Err(Stalled::Failed(error)) if self.ubuf.is_empty() => {
                    tracing::debug!(upstream = %upstream.addr(), %error, "reading the response failed");
                    return Err(Failure::Stale);
                }
                Err(Stalled::Failed(error)) => {
                    return Err(Failure::Reply(backend_failed(upstream, &error)));
                }
                Err(Stalled::ClientGone) => return Err(Failure::Aborted),
                Err(Stalled::TimedOut) => {
                    return Err(Failure::Reply(exchange.deadlines.response_head_timeout()));
                }
            }
        };

        // The body: what is buffered goes out with the head, then relay until it ends. The
        // tally settles and the upstream connection returns to the pool before the last bytes
        // go out, so a client that reads its response and then looks at the counts, or sends
        // its next request, finds both done.
        // Nothing reached the client yet: a malformed start of the body is still a clean 502.
        let mut done = match self.take_body(&mut framing) {
            Ok(done) => done,
            Err(_) => {
                return Err(bad_gateway(format!(
                    "backend {} sent a malformed chunked body",
                    upstream.addr()
                )));
            }
        };
        let mut stream = Some(stream);
        let reusable = upstream_reusable;
        let finish = |this: &mut Self, stream: &mut Option<BackendStream>, framing: &Framing| {
            let Some(stream) = stream.take() else { return };
            if reusable && framing.is_done() && this.ubuf.is_empty() {
                let config = &policy.config;
                upstream.put_idle(
                    stream,
                    Instant::now(),
                    config.max_idle_conns_per_host,
                    &policy.idle,
                );
            } else {
                tracing::debug!(upstream = %upstream.addr(), reusable, done = framing.is_done(), left = this.ubuf.len(), "not pooling");
            }
        };
        if done {
            tally.settle(code);
            finish(self, &mut stream, &framing);
        }
        if send(&mut self.client, &self.out).await.is_err() {
            return Err(Failure::Aborted);
        }
        while let Some(upstream_stream) = stream.as_mut() {
            match self.read_upstream(upstream_stream, None).await {
                Ok(()) => {}
                Err(Stalled::Eof) if matches!(framing, Framing::UntilClose) => break,
                Err(_) => return Err(Failure::Aborted),
            }
            self.out.clear();
            done = self.take_body(&mut framing)?;
            if done {
                tally.settle(code);
                finish(self, &mut stream, &framing);
            }
            if send(&mut self.client, &self.out).await.is_err() {
                return Err(Failure::Aborted);
            }
        }
        tally.settle(code);
        Ok(if close { Next::Close } else { Next::KeepAlive })
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
        stream: &mut BackendStream,
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
                    Ok(_) => *watch_client = buf.len() <= MAX_PIPELINED,
                },
                () = wait_deadline(timer, deadline) => return Err(Stalled::TimedOut),
            }
        }
    }
}

pub(super) fn bad_gateway(message: String) -> Failure {
    Failure::Reply(Reply::error(StatusCode::BAD_GATEWAY, message))
}

/// A TCP connection to `addr` (with `TCP_NODELAY`), within `timeout`.
pub(crate) async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timeout"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}
