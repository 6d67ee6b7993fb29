//! Synthetic responses: the one type every locally made answer takes, whatever the protocol.

use bytes::Bytes;
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderValue};

use crate::routes::StaticReply;

/// `Retry-After` of a request rejected beyond a route's pending limit, in seconds.
const RETRY_AFTER_SECS: &str = "1";

/// A response the interceptor makes itself: an error (plain text naming the cause), a static
/// route's reply or a placeholder. The codecs write it in their wire format.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The headers (without framing: the codecs add it); boxed to keep results small.
    pub headers: Box<HeaderMap>,
    /// The body.
    pub body: Bytes,
}

impl Reply {
    /// An error answer: `message` and a newline as UTF-8 plain text.
    pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Self {
        let mut body = message.into();
        body.push('\n');
        let mut headers = HeaderMap::with_capacity(1);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Self {
            status,
            headers: Box::new(headers),
            body: Bytes::from(body),
        }
    }

    /// The 503 for a request beyond a route's `limit` of requests held for a cold start; it
    /// may be retried after a second.
    pub(crate) fn overloaded(limit: u32) -> Self {
        let mut reply = Self::error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the route already holds {limit} requests waiting for a ready endpoint; retry later"
            ),
        );
        reply.headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECS),
        );
        reply
    }

    /// The 502 for a backend whose TLS handshake failed; `failure` says it was TLS and why.
    pub(crate) fn backend_tls(failure: &impl std::fmt::Display) -> Self {
        Self::error(StatusCode::BAD_GATEWAY, failure.to_string())
    }

    /// A static route's or a placeholder's answer to a request for `path`; a 500 naming the
    /// ConfigMap when its body cannot be found (as upstream).
    pub(crate) fn from_static(reply: &StaticReply, path: &str) -> Self {
        match reply.render(path) {
            Ok((status, headers, body)) => Self {
                status,
                headers: Box::new(headers),
                body,
            },
            Err(message) => Self::error(StatusCode::INTERNAL_SERVER_ERROR, message),
        }
    }
}
