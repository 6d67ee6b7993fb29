//! The HTTP/2 codec's connection loop, on the `h2` crate: h2 by ALPN on the TLS listener and
//! h2c with prior knowledge on the plain one. All streams of a connection run in the
//! connection's own task (no task per stream): each stream's request goes through
//! [`Hyper::handle`] (the request policy) and its response is written back with HTTP/2 flow
//! control. A stream the client resets is dropped, whatever it was doing (a cold-start hold,
//! reading the backend's response); its tally then drops unsettled, as on HTTP/1.1.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use ::h2::server::{Builder, SendResponse};
use ::h2::{Reason, RecvStream, SendStream};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use http::{Request, Response};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::body::{InBody, ProxyBody};
use super::{Hyper, ViaTls};
use crate::idle::{Active, Activity};

/// Per-stream receive window (as hyper's server sets it): a client may send this much of a
/// request body before the backend reads it.
const STREAM_WINDOW: u32 = 1024 * 1024;
/// Receive window of the whole connection.
const CONNECTION_WINDOW: u32 = 1024 * 1024;
/// Streams a client may have open at once on one connection.
const MAX_CONCURRENT_STREAMS: u32 = 200;
/// Response bytes buffered per stream beyond the client's window.
const MAX_SEND_BUFFER: usize = 400 * 1024;

/// What the loop knows of one client connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct H2Conn {
    /// The client's address.
    pub remote: SocketAddr,
    /// Received on the TLS listener.
    pub tls: bool,
    /// Shut down gracefully after this long without a stream in flight.
    pub idle: Option<Duration>,
}

/// Serves one HTTP/2 connection until it ends; on `stop`, or when it had no stream in flight
/// for its idle limit, it shuts down gracefully (GOAWAY, open streams finish); on `force` it
/// is dropped.
pub(crate) async fn serve_h2<I>(
    proxy: Arc<Hyper>,
    io: I,
    conn: H2Conn,
    mut stop: watch::Receiver<bool>,
    mut force: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let config = &proxy.policy().config;
    let mut builder = Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX));
    let mut force_wait = pin!(crate::stopped(&mut force));
    let mut connection = tokio::select! {
        handshake = builder.handshake::<_, Bytes>(io) => match handshake {
            Ok(connection) => connection,
            Err(error) => {
                tracing::debug!(remote = %conn.remote, %error, "HTTP/2 handshake failed");
                return;
            }
        },
        _ = force_wait.as_mut() => return,
    };
    let activity = Arc::new(Activity::default());
    let mut stop_wait = pin!(crate::stopped(&mut stop));
    let mut idle_wait = pin!(async {
        match conn.idle {
            Some(limit) => activity.idle_for(limit).await,
            None => std::future::pending().await,
        }
    });
    let mut streams = FuturesUnordered::new();
    let mut closing = false;
    let ended = poll_fn(|cx| {
        if force_wait.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ok(()));
        }
        if !closing {
            let idle = idle_wait.as_mut().poll(cx).is_ready();
            if idle || stop_wait.as_mut().poll(cx).is_ready() {
                if idle {
                    tracing::debug!(remote = %conn.remote, "idle timeout");
                }
                connection.graceful_shutdown();
                closing = true;
            }
        }
        loop {
            while let Poll::Ready(Some(())) = streams.poll_next_unpin(cx) {}
            match connection.poll_accept(cx) {
                Poll::Ready(Some(Ok((req, respond)))) => {
                    let active = activity.start();
                    streams.push(stream(proxy.clone(), conn, active, req, respond));
                }
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(error)),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await;
    if let Err(error) = ended {
        tracing::debug!(remote = %conn.remote, %error, "HTTP/2 connection failed");
    }
}

/// Serves one stream: the request policy's response, then its body.
async fn stream(
    proxy: Arc<Hyper>,
    conn: H2Conn,
    active: Active,
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let (mut parts, body) = req.into_parts();
    if conn.tls {
        parts.extensions.insert(ViaTls);
    }
    let req = Request::from_parts(parts, InBody::H2(body, false));
    let response = {
        let mut handled = pin!(proxy.handle(conn.remote, req));
        // A client that resets the stream gives up on it: stop whatever it waits for.
        let answered = poll_fn(|cx| {
            if let Poll::Ready(response) = handled.as_mut().poll(cx) {
                return Poll::Ready(Some(response));
            }
            respond.poll_reset(cx).map(|_| None)
        })
        .await;
        match answered {
            Some(Ok(response)) => response,
            Some(Err(never)) => match never {},
            None => return,
        }
    };
    let (parts, mut body) = response.into_parts();
    body.hold(active);
    let end = body.is_end_stream();
    let mut send = match respond.send_response(Response::from_parts(parts, ()), end) {
        Ok(send) => send,
        Err(error) => {
            tracing::debug!(remote = %conn.remote, %error, "sending a response head failed");
            return;
        }
    };
    if !end {
        poll_fn(|cx| pipe(&mut body, &mut send, cx)).await;
    }
}

/// Writes `body` on `send` as the client's window allows, pulling the next frame only when
/// there is room for it; ready when the body is written or the stream is gone.
fn pipe(body: &mut ProxyBody, send: &mut SendStream<Bytes>, cx: &mut Context<'_>) -> Poll<()> {
    loop {
        send.reserve_capacity(1);
        if send.capacity() == 0 {
            loop {
                match ready!(send.poll_capacity(cx)) {
                    Some(Ok(0)) => {}
                    Some(Ok(_)) => break,
                    // The stream was reset or the connection closed.
                    Some(Err(_)) | None => return Poll::Ready(()),
                }
            }
        } else if send.poll_reset(cx).is_ready() {
            return Poll::Ready(());
        }
        let frame = match ready!(Pin::new(&mut *body).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(error)) => {
                tracing::debug!(%error, "response body failed");
                send.send_reset(Reason::INTERNAL_ERROR);
                return Poll::Ready(());
            }
            None => {
                let _ = send.send_data(Bytes::new(), true);
                return Poll::Ready(());
            }
        };
        let end = body.is_end_stream();
        match frame.into_data() {
            Ok(data) => {
                if (!data.is_empty() || end) && send.send_data(data, end).is_err() {
                    return Poll::Ready(());
                }
                if end {
                    return Poll::Ready(());
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    let _ = send.send_trailers(trailers);
                }
                return Poll::Ready(());
            }
        }
    }
}
