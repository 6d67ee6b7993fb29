//! The hyper codec's HTTP/1.1 client: requests go out on connections of the endpoint's own
//! pool (the one the HTTP/1.1 codec uses), through hyper's low-level HTTP/1.1 client. The
//! connection is driven by the response body that reads from it ([`Pooled`]), so it returns to
//! the pool the moment the body is complete, with no task per request.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use http::{Request, Response, Version, header};
use hyper::body::Incoming;
use hyper::client::conn::http1::Parts;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::body::OutBody;
use super::{Sent, source_chain};
use crate::backends::{IdleBudget, Upstream};
use crate::config::Config;

type Io = TokioIo<TcpStream>;
type Driven = Pin<Box<dyn Future<Output = hyper::Result<Parts<Io>>> + Send>>;

/// An upstream HTTP/1.1 connection in use by one response: polled along with its body, and
/// checked into the pool once both are done (when the response was keep-alive).
pub(crate) struct Pooled {
    conn: Option<Driven>,
    parts: Option<Parts<Io>>,
    /// The response was keep-alive: the connection may serve another request.
    reusable: bool,
    upstream: Arc<Upstream>,
    budget: Arc<IdleBudget>,
    max: usize,
}

impl Pooled {
    /// Makes progress on the connection (reads the response, writes the request body).
    pub(super) fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(conn) = &mut self.conn
            && let Poll::Ready(done) = conn.as_mut().poll(cx)
        {
            self.conn = None;
            match done {
                Ok(parts) => self.parts = Some(parts),
                Err(error) => {
                    tracing::debug!(upstream = %self.upstream.addr(), %error, "upstream connection failed")
                }
            }
        }
    }

    /// The response body is complete: the connection goes back to the pool (finished in a
    /// task if hyper has not wound it up yet, which is rare).
    pub(super) fn check_in(mut self) {
        if !self.reusable {
            return;
        }
        self.drive(&mut Context::from_waker(Waker::noop()));
        match self.conn.take() {
            None => self.put_back(),
            // (No runtime means it is shutting down: the connection just closes.)
            Some(conn) => {
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    return;
                };
                runtime.spawn(async move {
                    match conn.await {
                        Ok(parts) => {
                            self.parts = Some(parts);
                            self.put_back();
                        }
                        Err(error) => tracing::debug!(%error, "upstream connection failed"),
                    }
                });
            }
        }
    }

    fn put_back(&mut self) {
        if let Some(parts) = self.parts.take()
            && parts.read_buf.is_empty()
        {
            self.upstream.put_idle(
                parts.io.into_inner(),
                Instant::now(),
                self.max,
                &self.budget,
            );
        }
    }
}

/// Sends `req` on an HTTP/1.1 connection of `upstream`'s pool (a new one when none is idle;
/// a stale pooled one is replaced once, when hyper hands the unsent request back). With the
/// response comes the connection, which its body must drive (none for an upgrade, whose
/// connection runs in a task of its own).
pub(super) async fn send(
    config: &Config,
    budget: &Arc<IdleBudget>,
    upstream: &Arc<Upstream>,
    mut req: Request<OutBody>,
    upgrade: bool,
) -> Result<(Response<Incoming>, Option<Pooled>), Sent> {
    let mut pooled = upstream.take_idle(Instant::now(), config.idle_conn_timeout);
    loop {
        let reused = pooled.is_some();
        let stream = match pooled.take() {
            Some(stream) => stream,
            None => crate::h1::connect(upstream.addr(), config.connect_timeout)
                .await
                .map_err(|error| Sent::Connect(error.to_string()))?,
        };
        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|error| Sent::Failed(source_chain(&error)))?;
        if upgrade {
            // The connection becomes a tunnel: never pooled.
            tokio::spawn(async move {
                if let Err(error) = conn.with_upgrades().await {
                    tracing::debug!(%error, "upstream connection failed");
                }
            });
            return match sender.send_request(req).await {
                Ok(response) => Ok((response, None)),
                Err(error) => Err(Sent::Failed(source_chain(&error))),
            };
        }
        // The connection is driven here until the response head arrives, then by its body.
        let mut conn: Driven = Box::pin(conn.without_shutdown());
        let mut finished = None;
        let sent = sender.try_send_request(req);
        tokio::pin!(sent);
        let result = loop {
            tokio::select! {
                biased;
                result = &mut sent => break result,
                done = &mut conn, if finished.is_none() => finished = Some(done),
            }
        };
        drop(sender);
        match result {
            Ok(response) => {
                let keep_alive = response.version() == Version::HTTP_11
                    && !response
                        .headers()
                        .get_all(header::CONNECTION)
                        .iter()
                        .flat_map(|v| crate::h1::rules::tokens(v.as_bytes()))
                        .any(|t| t.eq_ignore_ascii_case(b"close"));
                let pooled = Pooled {
                    conn: finished.is_none().then_some(conn),
                    parts: finished.and_then(Result::ok),
                    reusable: keep_alive,
                    upstream: upstream.clone(),
                    budget: budget.clone(),
                    max: config.max_idle_conns_per_host,
                };
                return Ok((response, Some(pooled)));
            }
            Err(mut error) => match error.take_message() {
                Some(unsent) if reused => {
                    tracing::debug!(upstream = %upstream.addr(), "pooled connection was stale");
                    req = unsent;
                }
                _ => return Err(Sent::Failed(source_chain(&error.into_error()))),
            },
        }
    }
}
