//! The hyper codec's bodies: [`ProxyBody`] (every response, settling the request's tally as
//! its last bytes are handed over) and [`OutBody`] (every request body sent upstream, with the
//! request body timeout).

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::upstream::H1Body;
use crate::request::Tally;

/// Errors forwarding a body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response of this codec: the backend's streamed body or a reply's, with
/// the request's tally, which settles as the last bytes are handed to hyper.
pub struct ProxyBody {
    inner: Inner,
    tally: Option<(Tally, u16)>,
    _active: Option<crate::idle::Active>,
}

/// Where a response body comes from.
pub(crate) enum Inner {
    /// An HTTP/1.1 backend's body, read from its pooled connection (which it checks back in).
    H1(H1Body),
    /// hyper's client's body (h2c backends, upgrades).
    Upstream(Incoming),
    /// A reply's whole body.
    Full(Option<Bytes>),
}

impl ProxyBody {
    pub(super) fn new(inner: Inner, tally: Option<(Tally, u16)>) -> Self {
        Self {
            inner,
            tally,
            _active: None,
        }
    }

    /// Keeps the connection counted as busy until this body is finished or dropped.
    pub(crate) fn hold(&mut self, active: crate::idle::Active) {
        self._active = Some(active);
    }

    /// The body is complete: the request settles.
    fn complete(&mut self) {
        if let Some((mut tally, status)) = self.tally.take() {
            tally.settle(status);
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = match &mut self.inner {
            Inner::H1(body) => Pin::new(body).poll_frame(cx),
            Inner::Upstream(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Inner::Full(bytes) => Poll::Ready(
                bytes
                    .take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
        };
        match &polled {
            Poll::Ready(None) => self.complete(),
            Poll::Ready(Some(Ok(_))) if self.is_end_stream() => self.complete(),
            // A body cut short is not recorded (the tally drops unsettled); its connection
            // is closed.
            Poll::Ready(Some(Err(_))) => self.tally = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::H1(body) => body.is_end_stream(),
            Inner::Upstream(body) => body.is_end_stream(),
            Inner::Full(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::H1(body) => body.size_hint(),
            Inner::Upstream(body) => body.size_hint(),
            Inner::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // A body hyper never had to poll (HEAD, 204, empty) is complete when dropped.
        if self.is_end_stream() {
            self.complete();
        }
    }
}

/// A request body as a codec received it: from hyper's server (HTTP/1.1 connections left to
/// hyper) or from an HTTP/2 stream of [`super::server`].
pub enum InBody {
    /// hyper's server's body.
    Hyper(Incoming),
    /// An HTTP/2 stream's body; `true` once its DATA frames are done (trailers may follow).
    H2(::h2::RecvStream, bool),
}

impl Body for InBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let (stream, data_done) = match &mut *self {
            InBody::Hyper(body) => return Pin::new(body).poll_frame(cx).map_err(Into::into),
            InBody::H2(stream, data_done) => (stream, data_done),
        };
        if !*data_done {
            match stream.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    // What was handed on may be sent again by the client: open the window.
                    let _ = stream.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error.into()))),
                Poll::Ready(None) => *data_done = true,
                Poll::Pending => return Poll::Pending,
            }
        }
        match stream.poll_trailers(cx) {
            Poll::Ready(Ok(Some(trailers))) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Err(error)) => Poll::Ready(Some(Err(error.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            InBody::Hyper(body) => body.is_end_stream(),
            InBody::H2(stream, _) => stream.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            InBody::Hyper(body) => body.size_hint(),
            InBody::H2(stream, _) if stream.is_end_stream() => SizeHint::with_exact(0),
            InBody::H2(..) => SizeHint::default(),
        }
    }
}

/// The request body sent upstream. If it is dropped before its first poll (the connection
/// could not be made), it hands the inner body back through `reclaim` for a retry. A body that
/// fails (malformed, or no progress within the request body timeout) says so in `failure`, so
/// the client gets a 400 or 408 rather than a 502.
pub struct OutBody {
    pub(super) inner: Option<InBody>,
    pub(super) reclaim: Option<Arc<Mutex<Option<InBody>>>>,
    pub(super) polled: bool,
    pub(super) progress: Option<Duration>,
    /// Armed the first time the inbound body has nothing ready.
    pub(super) timer: Option<Pin<Box<tokio::time::Sleep>>>,
    pub(super) waiting: bool,
    pub(super) failure: Arc<BodyFailure>,
}

/// Why an inbound request body ended early (set once, read after the upstream request failed).
#[derive(Default)]
pub(super) struct BodyFailure(std::sync::atomic::AtomicU8);

impl BodyFailure {
    const MALFORMED: u8 = 1;
    const TIMED_OUT: u8 = 2;

    fn set(&self, why: u8) {
        self.0.store(why, Ordering::Release);
    }

    /// The client's fault, as a status and a message, if the body failed.
    pub(super) fn response(&self) -> Option<(StatusCode, &'static str)> {
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
                Poll::Ready(Some(Err(error)))
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
