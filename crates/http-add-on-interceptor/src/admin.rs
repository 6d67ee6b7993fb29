//! The admin port (`/queue`, `/queue/stream`, `/livez`, `/readyz`), the metrics port and the
//! debug endpoint (`PROFILING_BIND_ADDRESS`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_add_on_types::queue::{QUEUE_STREAM_PATH, QueueCounts, QueueUpdate};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::wrappers::ReceiverStream;

use crate::counts::Counts;
use crate::metrics::Metrics;

/// Body of admin responses.
pub type AdminBody = BoxBody<Bytes, Infallible>;

/// A heartbeat is sent when nothing else was sent for this long.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Shared state of the admin and metrics listeners.
#[derive(Debug)]
pub struct Admin {
    /// Route counts.
    pub counts: Arc<Counts>,
    /// Metric families.
    pub metrics: Arc<Metrics>,
    /// The route table has synced once.
    pub synced: Arc<AtomicBool>,
    /// Shutdown has begun.
    pub draining: Arc<AtomicBool>,
    /// Coalescing interval of the push stream.
    pub stream_interval: Duration,
    /// Turns true at the end of shutdown (ends push streams).
    pub stop: watch::Receiver<bool>,
}

fn text(status: StatusCode, body: &'static str) -> Response<AdminBody> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json(body: Vec<u8>) -> Response<AdminBody> {
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

impl Admin {
    /// Handles an admin-port request.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<hyper::body::Incoming>,
    ) -> Result<Response<AdminBody>, Infallible> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"));
        }
        Ok(match req.uri().path() {
            "/queue" => json(serde_json::to_vec(&self.counts.snapshot()).unwrap_or_default()),
            QUEUE_STREAM_PATH => self.stream(),
            "/livez" => text(StatusCode::OK, "ok\n"),
            "/readyz" => {
                if self.draining.load(Ordering::Acquire) {
                    text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
                } else if !self.synced.load(Ordering::Acquire) {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "route table not synced yet\n",
                    )
                } else {
                    text(StatusCode::OK, "ok\n")
                }
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        })
    }

    /// Handles a metrics-port request.
    pub async fn handle_metrics(
        self: Arc<Self>,
        req: Request<hyper::body::Incoming>,
    ) -> Result<Response<AdminBody>, Infallible> {
        if req.uri().path() != "/metrics" {
            return Ok(text(StatusCode::NOT_FOUND, "not found\n"));
        }
        let mut response = Response::new(Full::new(Bytes::from(self.metrics.encode())).boxed());
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        );
        Ok(response)
    }

    /// Handles a request to the debug endpoint (`PROFILING_BIND_ADDRESS`): process and runtime
    /// figures as text (see [`http_add_on_types::process::debug_text`]).
    pub async fn handle_debug(
        req: Request<hyper::body::Incoming>,
    ) -> Result<Response<AdminBody>, Infallible> {
        let answer = http_add_on_types::process::debug_text("interceptor", req.uri().path());
        let mut response = Response::new(Full::new(Bytes::from(answer.body)).boxed());
        *response.status_mut() =
            StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Ok(response)
    }

    fn stream(&self) -> Response<AdminBody> {
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(push_counts(
            self.counts.clone(),
            self.stream_interval,
            tx,
            self.stop.clone(),
        ));
        let mut response = Response::new(BodyExt::boxed(StreamBody::new(ReceiverStream::new(rx))));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response
    }
}

type Tx = mpsc::Sender<Result<Frame<Bytes>, Infallible>>;

async fn send_line(tx: &Tx, update: &QueueUpdate) -> bool {
    let mut line = serde_json::to_vec(update).unwrap_or_default();
    line.push(b'\n');
    tx.send(Ok(Frame::data(Bytes::from(line)))).await.is_ok()
}

fn same_routes(a: &QueueCounts, b: &QueueCounts) -> bool {
    a.len() == b.len() && a.keys().eq(b.keys())
}

/// The push stream of one connection: a snapshot, then changes (activations immediately,
/// others every `interval`), heartbeats when idle, a new snapshot when routes come or go.
async fn push_counts(
    counts: Arc<Counts>,
    interval: Duration,
    tx: Tx,
    mut stop: watch::Receiver<bool>,
) {
    let mut activity = counts.subscribe();
    activity.mark_unchanged();
    let mut last = counts.snapshot();
    if !send_line(
        &tx,
        &QueueUpdate {
            snapshot: true,
            counts: last.clone(),
        },
    )
    .await
    {
        return;
    }
    let mut last_sent = Instant::now();
    let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let activation = tokio::select! {
            _ = crate::stopped(&mut stop) => return,
            _ = tx.closed() => return,
            changed = activity.changed() => {
                if changed.is_err() {
                    return;
                }
                true
            }
            _ = ticker.tick() => false,
        };
        let now = counts.snapshot();
        let update = if !same_routes(&now, &last) {
            Some(QueueUpdate {
                snapshot: true,
                counts: now.clone(),
            })
        } else {
            let changed: BTreeMap<_, _> = now
                .iter()
                .filter(|(key, count)| {
                    let before = last.get(*key).copied().unwrap_or_default();
                    if activation {
                        before.concurrency == 0 && count.concurrency > 0
                    } else {
                        before != **count
                    }
                })
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            (!changed.is_empty()).then_some(QueueUpdate {
                snapshot: false,
                counts: changed,
            })
        };
        match update {
            Some(update) => {
                if update.snapshot {
                    last = update.counts.clone();
                } else {
                    for (key, count) in &update.counts {
                        last.insert(key.clone(), *count);
                    }
                }
                if !send_line(&tx, &update).await {
                    return;
                }
                last_sent = Instant::now();
            }
            None if !activation && last_sent.elapsed() >= HEARTBEAT => {
                if tx
                    .send(Ok(Frame::data(Bytes::from_static(b"{}\n"))))
                    .await
                    .is_err()
                {
                    return;
                }
                last_sent = Instant::now();
            }
            None => {}
        }
    }
}
